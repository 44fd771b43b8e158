"""Benchmark: how long the README's Quick start (`xlt adapt ... --init overlap,mean,random --steps 300`) takes here.

    python bench/quickstart.py [--probe-steps 21] [--json bench/results/quickstart.json]
    python bench/quickstart.py --run DIR      # read a probe run made before with the printed command

Three inits of 300 steps at batch 8 × 256 take hours on a CPU, so this runs one init (``overlap``) for a short
probe with the Quick start's batch, sequence length, evaluation size and learning rates (one third of the probe's
steps embedding-only, as in the Quick start; an evaluation and checkpoint every third of the probe), measures the
seconds of each embedding-only step and each full step (from the run's own per-step tokens/s), and the rest of the
init's training time (evaluations, checkpoints, samples, test), and extrapolates:

    per init  = stage1_steps × s/step(stage 1) + stage2_steps × s/step(stage 2)
                + (evaluations in the Quick start / evaluations in the probe) × the probe's other seconds
    total     = inits × per init + the probe's shared seconds (target tokenizer, no-transfer reference)

Prints the figures and writes them, with the probe's command and the machine, to one JSON.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

QUICK = dict(inits=3, steps=300, batch_size=8, seq_len=256)  # the README's Quick start (xlt adapt's defaults)


def probe_command(steps: int, out: str) -> list[str]:
    stage1 = steps // 3
    return [sys.executable, "-m", "xlt.cli.main", "adapt", "--source", "smollm2", "--target", "sw", "--corpus",
            "bible", "--init", "overlap", "--steps", str(steps), "--stage1-steps", str(stage1),
            "--eval-every", str(max(1, stage1)), "--no-progress", "--out", out, "--overwrite"]


def estimate(run: Path) -> dict:
    """The Quick start's time extrapolated from the probe run in ``run`` (see the module docstring)."""
    whole = json.loads((run / "metrics.json").read_text())
    init = json.loads((run / "overlap" / "metrics.json").read_text())
    s = dict(whole["settings"]["train"], eval_max_bytes=whole["settings"]["eval_max_bytes"])
    tokens = s["batch_size"] * s["seq_len"]
    if (s["batch_size"], s["seq_len"]) != (QUICK["batch_size"], QUICK["seq_len"]):
        raise SystemExit(f"the probe's batch is {s['batch_size']} × {s['seq_len']}, the Quick start's "
                         f"{QUICK['batch_size']} × {QUICK['seq_len']}: run the probe with xlt adapt's defaults")
    train = init["history"]["train"]
    sec = {st: [tokens / h["tokens_per_s"] for h in train if h["stage"] == st] for st in (1, 2)}
    step_seconds = sum(sum(v) for v in sec.values())
    other = init["seconds"]["train"] - step_seconds
    probe_evals = len(init["history"]["eval"])
    q_stage1 = QUICK["steps"] // 3
    q_evals = QUICK["steps"] // max(1, QUICK["steps"] // 10) + 1
    per_init = (q_stage1 * statistics.mean(sec[1]) + (QUICK["steps"] - q_stage1) * statistics.mean(sec[2])
                + q_evals / probe_evals * other + init["seconds"]["total"] - init["seconds"]["train"])
    shared = whole["wall_seconds"] - init["seconds"]["total"]
    return {
        "probe": {"steps": len(train), "stage1_steps": len(sec[1]), "evaluations": probe_evals,
                  "seconds_per_step_stage1": statistics.mean(sec[1]), "seconds_per_step_stage2": statistics.mean(sec[2]),
                  "other_train_seconds": other, "init_seconds": init["seconds"], "shared_seconds": shared,
                  "wall_seconds": whole["wall_seconds"], "batch_size": s["batch_size"], "seq_len": s["seq_len"],
                  "eval_max_bytes": s["eval_max_bytes"]},
        "quick_start": dict(QUICK, stage1_steps=q_stage1, evaluations=q_evals),
        "estimate_seconds_per_init": per_init,
        "estimate_seconds_total": QUICK["inits"] * per_init + shared,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probe-steps", type=int, default=21, help="steps of the probe (one third embedding-only)")
    ap.add_argument("--run", default=None, help="a probe run folder made before: measure nothing, read it")
    ap.add_argument("--json", default=str(HERE / "results" / "quickstart.json"),
                    help="where the results go [default: bench/results/quickstart.json]")
    a = ap.parse_args()
    from xlt.util import machine_info

    if a.run:
        run, cmd = Path(a.run), None
    else:
        run = Path(tempfile.mkdtemp(prefix="xlt-bench-quick-")) / "run"
        cmd = probe_command(a.probe_steps, str(run))
        print("probe: " + shlex.join(cmd[1:]), flush=True)
        t0 = time.time()
        subprocess.run(cmd, check=True)
        print(f"probe took {time.time() - t0:.0f} s", flush=True)
    result = estimate(run)
    # the probe's command with its run folder as RUN (a temporary folder of this machine)
    result.update(benchmark="quickstart", command=shlex.join(["python"] + probe_command(result["probe"]["steps"],
                  "RUN")[1:]), machine=machine_info(), date=time.strftime("%Y-%m-%d"))
    p, tot = result["probe"], result["estimate_seconds_total"]
    print(f"probe: {p['steps']} steps ({p['stage1_steps']} embedding-only) at {p['batch_size']} × {p['seq_len']}: "
          f"{p['seconds_per_step_stage1']:.1f} s/step in stage 1, {p['seconds_per_step_stage2']:.1f} s/step in "
          f"stage 2, {p['other_train_seconds']:.0f} s of {p['evaluations']} evaluations and checkpoints, "
          f"{p['shared_seconds']:.0f} s shared")
    print(f"Quick start estimate: {result['estimate_seconds_per_init'] / 60:.0f} min per init, "
          f"{int(tot // 3600)} h {int(tot % 3600 // 60)} min for {QUICK['inits']} inits")
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
