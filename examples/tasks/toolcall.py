"""TUCAN-style tool calling on SmolLM2-135M-Instruct, before and after a short LoRA (issue 18, item 8).

The tool is ``get_verse(book, chapter, verse)``; queries are templates in English and Swahili naming real verses
(book names from the Bible corpus in each language), plus questions no function answers. The held-out verses and
questions are never trained on. Answers are greedy; scoring is tucan-eval's (xlt.tasks.toolcall).

    python examples/tasks/toolcall.py [--steps 12] [--out runs/tasks-toolcall]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from xlt.models import load_source
from xlt.tasks import toolcall as tc
from xlt.util import atomic_dir, write_json_atomic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--langs", default="en,sw")
    ap.add_argument("--calls", type=int, default=40, help="get_verse queries per language (--test-calls held out)")
    ap.add_argument("--test-calls", type=int, default=10)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the demo budget: 3 min on 2 cores)")
    ap.add_argument("--out", type=Path, default=Path("runs/tasks-toolcall"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    torch.manual_seed(a.seed)
    langs = a.langs.split(",")
    recs = tc.verse_lookup_records(langs, n_calls=a.calls, n_irrelevant=len(tc.IRRELEVANT["en"]), seed=a.seed)
    held = lambda r: (int(r.extra["id"].rsplit("-", 1)[1]) < (a.test_calls if r.scenario_type == "function_call" else 3))
    test = [r for r in recs if held(r)]
    train = [r for r in recs if not held(r)]
    # the unrelated questions are repeated so that about half of the training answers make no call
    calls = sum(r.scenario_type == "function_call" for r in train)
    others = [r for r in train if r.scenario_type != "function_call"]
    train += others * max(0, calls // max(1, len(others)) - 1)
    print(f"{len(train)} training records, {len(test)} held-out records ({', '.join(langs)})")
    model, tok, _ = load_source(a.model)

    def evaluate(m, name):
        t = time.time()
        resp = tc.generate_responses(m, tok, test, max_new_tokens=a.max_new_tokens, batch_size=16)
        summary, details = tc.score_responses(test, resp)
        errs = ", ".join(f"{c} {n}" for c, n in summary["error_distribution"].items() if c != "CORRECT" and n)
        by = ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in summary["by_language_scenario"].items())
        print(f"{name}: accuracy {summary['accuracy']:.3f} ({summary['correct']}/{summary['total']}); {by}; "
              f"errors: {errs or 'none'} ({time.time() - t:.0f} s)")
        return summary, details

    before, _ = evaluate(model, "before")
    t = time.time()
    model, losses = tc.tune_lora(model, tok, train, steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed)
    print(f"LoRA: {a.steps} steps × {a.batch_size}, loss {losses[0]:.3f} -> {losses[-1]:.3f} ({time.time() - t:.0f} s)")
    after, details = evaluate(model, "after")
    metrics = {**after, "signature": f"toolcall-demo|model:{a.model}|steps:{a.steps}|bs:{a.batch_size}|lr:{a.lr:g}"
                                     f"|seed:{a.seed}|test:{len(test)}|train:{len(train)}",
               "before": before, "lora_losses": losses, "seconds": round(time.time() - t0, 1),
               "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}}
    with atomic_dir(a.out, overwrite=True) as tmp:
        write_json_atomic(tmp / "metrics.json", metrics)
        (tmp / "report.html").write_text(tc.render_report(metrics, details, runs={"before": before, "after LoRA": after}),
                                         encoding="utf-8")
        with open(tmp / "responses.jsonl", "w", encoding="utf-8") as fh:
            for d in details:
                fh.write(json.dumps(d, ensure_ascii=False) + "\n")
    print(f"total {time.time() - t0:.0f} s -> {a.out}/report.html")


if __name__ == "__main__":
    main()
