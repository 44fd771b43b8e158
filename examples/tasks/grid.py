"""JiraiBench-style language grid on SmolLM2-135M-Instruct (issue 18, item 9): Bible verses in en/sw/fr (content)
× instructions in en/sw/fr (prompt), label = the book group whose name is most likely after the prompt.

    python examples/tasks/grid.py [--per-group 3] [--out runs/tasks-grid]

Prints the macro-F1 grid (n per cell) and the prompt-language effects against the native prompt with
paired-bootstrap 95% CIs; writes metrics.json and report.html.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from xlt.tasks.grid import evaluate_grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--content", default="en,sw,fr")
    ap.add_argument("--prompt", default="en,sw,fr")
    ap.add_argument("--per-group", type=int, default=3)
    ap.add_argument("--max-chars", type=int, default=120)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibrate", action="store_true", help="contextual calibration (content-free prompt N/A)")
    ap.add_argument("--out", type=Path, default=Path("runs/tasks-grid"))
    a = ap.parse_args()
    t0 = time.time()
    m = evaluate_grid(a.model, a.out, "bible-genre", a.content.split(","), a.prompt.split(","),
                      per_group=a.per_group, max_chars=a.max_chars, samples=a.bootstrap, seed=a.seed, calibrate=a.calibrate,
                      overwrite=True)
    prompts = m["prompt"]
    print("content \\ prompt  " + "  ".join(f"{p:>14}" for p in prompts))
    for c, row in m["grid"].items():
        print(f"{c:<17} " + "  ".join(f"{row[p]['macro_f1']:.3f} (n={row[p]['n']})" for p in prompts))
    for e in m["effects"]:
        print(f"content {e['content']}: prompt {e['prompt']} vs {e['baseline']}: ΔF1 {e['delta']:+.3f} "
              f"[{e['ci_low']:+.3f}, {e['ci_high']:+.3f}]")
    print(f"{m['signature']}\ntotal {time.time() - t0:.0f} s -> {a.out}/report.html")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
