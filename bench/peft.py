"""Benchmark of the stage-2 adaptation methods on SmolLM2 → Swahili after vocabulary transfer.

Each method runs ``xlt adapt`` (same init, tokenizer, data, steps, batch and sequence length: the same token
budget) in its own subprocess, so its peak resident memory (VmHWM) is its own. Reported per method:
trainable parameters in stage 2, distinct model parameters, peak memory, training tokens/s (median over
the stage-2 steps), dev and test bits/byte at the end. Writes ``--json`` (default ``bench/results/peft.json``:
settings, machine, versions and every row; committed, so docs/peft.md's table can be re-checked) and prints the
Markdown table; the run folders go to ``--work`` (a temporary folder unless given).

    .venv/bin/python bench/peft.py --steps 40 --stage1-steps 10           # CPU (needs `make data`)
    .venv/bin/python bench/peft.py --methods full,lora --device-note "H100, bf16"
    .venv/bin/python bench/peft.py --render-only                           # the table again from the JSON

Notes: ``sft`` spends half of stage 2 on its full phase and half on the sparse phase (same total steps);
its tokens/s mixes both. On CPU training runs in fp32; on a GPU the Trainer uses bf16 autocast.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# this file is named peft.py: keep its folder off the import path so `import peft` finds the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
from xlt.util import peak_rss_mib  # noqa: E402




def vs_lora(n: int, lora_n: int | None) -> str:
    """How many times fewer (or more) trainable parameters than LoRA's ``lora_n``: "8.0x fewer", "45.4x more"; "—" for
    LoRA itself or when there is no LoRA row, "same" for an equal count."""
    if not lora_n or not n:
        return "—"
    if n == lora_n:
        return "same"
    return f"{lora_n / n:.1f}x fewer" if n < lora_n else f"{n / lora_n:.1f}x more"


def child(a) -> None:
    from xlt.adapt import run

    t0 = time.time()
    res = run(source=a.source, target=a.target, corpus=a.corpus, init=a.init, out=Path(a.work) / a.method, steps=a.steps,
              stage1_steps=a.stage1_steps, vocab_size=a.vocab_size, batch_size=a.batch_size, seq_len=a.seq_len,
              eval_every=a.steps, eval_max_bytes=a.eval_max_bytes, samples=1, loo_tokens=0, method=a.method,
              method_options=json.loads(a.options or "{}"), overwrite=True, show_progress=False)
    key = a.init if a.method == "full" else f"{a.init}+{a.method}"
    r = res.metrics["inits"][key]
    stage2 = [h["tokens_per_s"] for h in r["history"]["train"] if h["stage"] == 2]
    print("RESULT " + json.dumps({
        "method": a.method, "trainable_parameters_stage2": r["trainable_parameters"]["stage2"],
        "trainable_parameters_stage1": r["trainable_parameters"]["stage1"], "model_parameters": r["model_parameters"],
        "peak_rss_mib": peak_rss_mib(), "tokens_per_s_stage2": statistics.median(stage2) if stage2 else None,
        "dev_bpb_step0": r["bpb_step0"], "dev_bpb_final": r["bpb_final"], "test_bpb_final": r["test"]["bits_per_byte"],
        "train_seconds": r["seconds"]["train"], "wall_seconds": time.time() - t0,
        "source_test_bpb": res.metrics["reference"]["test"]["bits_per_byte"], "options": r.get("method_options", {}),
        "signatures": {"dev_end": r["history"]["eval"][-1].get("signature"), "test_end": r["test"].get("signature")},
    }))


def render(settings: dict, device: str, rows: list[dict]) -> str:
    """The Markdown table of ``peft.json``'s rows (``--render-only`` rewrites it without measuring again)."""
    a = argparse.Namespace(**settings)
    order = ["full", "lora", "mos", "sft", "recursive"]
    rows = sorted(rows, key=lambda r: (order.index(r["method"]) if r["method"] in order else len(order),
                                       r.get("trainable_parameters_stage2") or 0))
    ok = [r for r in rows if "error" not in r]
    lora = next((r for r in ok if r["method"] == "lora"), None)
    unified = ok and all("function" in (r.get("options") or {}) for r in ok)  # the unified-view grid: show its axes
    header = ["method"] + (["function, where, form, size, scale"] if unified else []) + [
              "trainable (stage 2)", "vs LoRA", "model params", "peak RSS MiB", "tokens/s (stage 2)",
              "dev bpb step 0", "dev bpb end", "test bpb end"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in ok:
        ratio = "—" if r is lora else vs_lora(r["trainable_parameters_stage2"], lora and lora["trainable_parameters_stage2"])
        axes = ""
        if unified:
            o = r["options"]
            axes = f" {o['function']}, {o['where']}, {o['form']}, {o['size']}, {o['scale']:g} |"
        lines.append(f"| {r['method']} |{axes} {r['trainable_parameters_stage2']:,} | {ratio} | {r['model_parameters']:,} | "
                     f"{r['peak_rss_mib']:.0f} | {r['tokens_per_s_stage2']:.0f} | {r['dev_bpb_step0']:.3f} | "
                     f"{r['dev_bpb_final']:.3f} | {r['test_bpb_final']:.3f} |")
    return (f"# xlt bench/peft.py\n\n{a.source} → {a.target} ({a.corpus}), init {a.init}, {a.steps} steps "
            f"({a.stage1_steps} embedding-only), batch {a.batch_size} × {a.seq_len} tokens: "
            f"{a.steps * a.batch_size * a.seq_len:,} training tokens per method. Device: {device}.\n\n"
            + "\n".join(lines) + "\n\n"
            + (f"Source model, no transfer, own tokenizer: test bpb {ok[0]['source_test_bpb']:.3f}.\n" if ok else "")
            + ("GPU throughput: not measured (no GPU in this run).\n" if device.startswith("CPU") else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="smollm2")
    ap.add_argument("--target", default="sw")
    ap.add_argument("--corpus", default="bible")
    ap.add_argument("--init", default="overlap")
    ap.add_argument("--methods", default="full,lora,mos,sft,recursive")
    ap.add_argument("--options", default=None, help="JSON method options for every method, e.g. '{\"r\": 8}'")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--stage1-steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--eval-max-bytes", type=int, default=8000)
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "peft.json"),
                    help="where the results go [default: bench/results/peft.json]")
    ap.add_argument("--work", default=None, help="folder for the run folders [default: a temporary folder]")
    ap.add_argument("--device-note", default=None, help="where it ran, for the table (default: CPU, threads)")
    ap.add_argument("--render-only", action="store_true", help="print the table of --json again, measure nothing")
    ap.add_argument("--method", help=argparse.SUPPRESS)  # child mode
    a = ap.parse_args()
    if a.method:
        return child(a)
    if a.render_only:
        data = json.loads(Path(a.json).read_text())
        return print(render(data["settings"], data["device"], data["rows"]))
    import tempfile

    import torch

    from xlt.util import machine_info

    a.work = a.work or tempfile.mkdtemp(prefix="xlt-bench-peft-")
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    device = a.device_note or (f"GPU {torch.cuda.get_device_name()} (bf16 autocast)" if cuda
                               else f"CPU, {torch.get_num_threads()} threads, fp32")
    rows = []
    settings = {k: v for k, v in vars(a).items() if k not in ("method", "methods", "render_only", "json", "work")}
    prev = out
    if prev.is_file():  # keep rows of methods not rerun, when they were measured with the same settings
        old = json.loads(prev.read_text())
        if {k: v for k, v in old["settings"].items() if k != "methods"} == settings:
            rows = [r for r in old["rows"] if r["method"] not in a.methods.split(",") and "error" not in r]
    for m in a.methods.split(","):
        cmd = [sys.executable, __file__, "--method", m] + [x for k, v in vars(a).items() if k not in ("method", "methods", "device_note",
                                                           "render_only", "json") and v is not None for x in (f"--{k.replace('_', '-')}", str(v))]
        t = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
        if p.returncode or not line:
            print(f"{m}: failed ({p.returncode})\n{p.stderr[-2000:]}", file=sys.stderr)
            rows.append({"method": m, "error": p.stderr[-500:]})
            continue
        rows.append(json.loads(line[0][7:]))
        print(f"{m}: done in {time.time() - t:.0f}s", file=sys.stderr)
    out.write_text(json.dumps({"benchmark": "bench/peft.py", "command": " ".join(sys.argv), "settings": settings,
                               "device": device, "machine": machine_info(),
                               "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "rows": rows}, indent=2) + "\n")
    print(render(settings, device, rows))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
