"""Benchmark: training speed of `xlt adapt`'s trainer against a plain transformers loop and the transformers `Trainer`.

    python bench/train.py [--steps 60 --stage1-steps 20 --batch-size 4 --seq-len 128] [--json bench/results/train.json]

The model: SmolLM2 (``--source``) transferred to an 8k-token Swahili tokenizer with the ``overlap`` init, as in
``make demo``; built once into a temporary folder, then every runner starts from the same weights in its own
process (so each has its own peak memory) and trains ``--steps`` steps, the first ``--stage1-steps`` on the
embeddings only, on the same packed Bible sequences:

- ``xlt`` : :class:`xlt.adapt.train.Trainer` with ``--precision auto`` (bf16 autocast where the hardware has it),
  the same with ``--compile yes`` (``torch.compile``; the first step of each stage compiles, which the median
  step time leaves out and the wall time shows) and with ``fp32`` (no evaluation or checkpoint during the steps);
- ``plain-fp32``: ``model(input_ids, labels=...).loss.backward(); AdamW.step()`` in fp32, the same batches,
  learning rates and schedule;
- ``hf-trainer-fp32`` / ``hf-trainer-bf16``: ``transformers.Trainer`` (one per stage) with its defaults but for the
  job's batch, steps, learning rate, warmup and cosine schedule, fp32 and ``bf16=True``.

Per stage: tokens/s is the median over that stage's steps of (batch × sequence length) / step seconds. Peak RSS is
the process's VmHWM. Final dev bits/byte is computed in fp32 for every runner on the same 8,000 bytes. Evaluation
speed: bits/byte of the transferred model at fp32 and under bf16 autocast (tokens/s, and the difference).
Prints a table and writes one JSON (settings, machine, every figure).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# bench/peft.py would shadow the peft package (transformers' Trainer imports it): keep this folder off the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
from xlt.util import peak_rss_mib  # noqa: E402
RUNNERS = ("xlt-auto", "xlt-auto-compile", "xlt-fp32", "plain-fp32", "hf-trainer-fp32", "hf-trainer-bf16")




# -- the shared starting point ---------------------------------------------------------------------------------
def prepare(a, work: Path) -> None:
    """The transferred model, its tokenizer, the packed training stream and the dev texts, into ``work``."""
    import numpy as np

    from xlt.adapt.data import pack_stream
    from xlt.corpora import open_corpus
    from xlt.eval import boundary_token_id, truncate_texts
    from xlt.languages import resolve
    from xlt.models import load_model, load_tokenizer, resolve_source
    from xlt.vocab import TransferContext, build_mapping, train_tokenizer, transfer_model

    tgt = resolve(a.target)
    corp = open_corpus(a.corpus, tgt.code)
    train = corp.texts(tgt, "train")
    src = resolve_source(a.source)
    src_tok = load_tokenizer(src)
    tok = train_tokenizer(src_tok, train, a.vocab_size)
    model = load_model(src)
    mapping = build_mapping("overlap", TransferContext(src_tok, tok, seed=0, corpus=corp, source_lang="eng",
                                                       target_lang=tgt.code))
    transfer_model(model, tok, mapping, seed=0)
    model.save_pretrained(work / "model")
    tok.save_pretrained(work / "model")
    np.save(work / "train_ids.npy", pack_stream(tok, train, boundary_token_id(tok)))
    (work / "dev.json").write_text(json.dumps(truncate_texts(corp.texts(tgt, "dev"), a.eval_max_bytes)))


def _load(work: Path, a):
    import numpy as np

    from xlt.adapt.data import PackedBlocks
    from xlt.eval import start_token_ids
    from xlt.models import load_model, load_tokenizer

    tok = load_tokenizer(work / "model")
    model = load_model(work / "model")
    blocks = PackedBlocks(np.load(work / "train_ids.npy"), a.seq_len, 0, start_token_ids(tok))
    return model, tok, blocks


def _stage_schedule(a, stage: int):
    """Linear warmup (10 %) and cosine decay within each stage, as xlt's trainer does."""
    from xlt.adapt.train import _schedule

    return _schedule(a.stage1_steps if stage == 1 else a.steps - a.stage1_steps, 0.1)


# -- runners (each in its own process) -------------------------------------------------------------------------
def run_xlt(a, model, blocks, precision: str, compile: str = "no") -> list[dict]:
    from xlt.precision import resolve_precision
    from xlt.adapt.train import TrainConfig, Trainer

    cfg = TrainConfig(steps=a.steps, stage1_steps=a.stage1_steps, batch_size=a.batch_size, seq_len=a.seq_len,
                      eval_every=a.steps, save_every=a.steps, precision=resolve_precision(precision).used,
                      compile=compile)
    with tempfile.TemporaryDirectory() as ckpt:
        hist = Trainer(model, blocks, cfg, ckpt, show_progress=False).train()
    return [{"stage": h["stage"], "seconds": a.batch_size * a.seq_len / h["tokens_per_s"], "loss": h["loss"]}
            for h in hist["train"]]


def run_plain(a, model, blocks) -> list[dict]:
    import torch

    from xlt.arch import embedding_parameters

    torch.manual_seed(0)
    steps, emb = [], {id(p) for p in embedding_parameters(model)}
    model.train()
    for stage in (1, 2):
        for p in model.parameters():
            p.requires_grad_(stage == 2 or id(p) in emb)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3 if stage == 1 else 2e-4, betas=(0.9, 0.95), weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _stage_schedule(a, stage))
        for step in (range(a.stage1_steps) if stage == 1 else range(a.stage1_steps, a.steps)):
            t0 = time.perf_counter()
            batch = blocks.batch(step, 0, 1, a.batch_size)
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            steps.append({"stage": stage, "seconds": time.perf_counter() - t0, "loss": loss.item()})
    return steps


def run_hf_trainer(a, model, blocks, bf16: bool) -> list[dict]:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from xlt.arch import embedding_parameters

    steps: list[dict] = []

    class Timer(TrainerCallback):
        def __init__(self, stage):
            self.stage, self.t0 = stage, 0.0

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            steps.append({"stage": self.stage, "seconds": time.perf_counter() - self.t0})

    class Blocks(torch.utils.data.Dataset):
        def __init__(self, first, n):
            self.first, self.n = first, n

        def __len__(self):
            return self.n * a.batch_size

        def __getitem__(self, i):
            x = blocks.sample(self.first * a.batch_size + i)
            return {"input_ids": x, "labels": x}

    emb = {id(p) for p in embedding_parameters(model)}
    with tempfile.TemporaryDirectory() as out:
        for stage, first, n in ((1, 0, a.stage1_steps), (2, a.stage1_steps, a.steps - a.stage1_steps)):
            for p in model.parameters():
                p.requires_grad_(stage == 2 or id(p) in emb)
            args = TrainingArguments(output_dir=out, per_device_train_batch_size=a.batch_size, max_steps=n,
                                     learning_rate=1e-3 if stage == 1 else 2e-4, warmup_steps=max(1, n // 10),
                                     lr_scheduler_type="cosine", bf16=bf16, use_cpu=True, report_to=[],
                                     save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0)
            Trainer(model=model, args=args, train_dataset=Blocks(first, n), callbacks=[Timer(stage)]).train()
    return steps


def child(a) -> None:
    import torch

    from xlt.eval import bits_per_byte

    torch.manual_seed(0)
    work = Path(a.work)
    model, tok, blocks = _load(work, a)
    dev = json.loads((work / "dev.json").read_text())
    t0 = time.time()
    if a.runner == "xlt-auto-compile":
        steps = run_xlt(a, model, blocks, "auto", compile="yes")
    elif a.runner.startswith("xlt-"):
        steps = run_xlt(a, model, blocks, a.runner.split("-", 1)[1])
    elif a.runner == "plain-fp32":
        steps = run_plain(a, model, blocks)
    else:
        steps = run_hf_trainer(a, model, blocks, bf16=a.runner.endswith("bf16"))
    wall = time.time() - t0
    model.eval()
    bpb = bits_per_byte(model, tok, dev, 512, split="dev").bits_per_byte
    tokens = a.batch_size * a.seq_len
    row = {"runner": a.runner, "train_seconds": wall, "peak_rss_mib": peak_rss_mib(), "dev_bpb_final": bpb,
           "steps": len(steps)}
    for st in (1, 2):
        secs = [s["seconds"] for s in steps if s["stage"] == st]
        row[f"tokens_per_s_stage{st}"] = tokens / statistics.median(secs) if secs else None
    if a.runner == "xlt-auto":  # evaluation speed, on the trained model
        row["eval"] = eval_speed(model, tok, dev)
    print("RESULT " + json.dumps(row), flush=True)


def eval_speed(model, tok, dev) -> dict:
    from xlt.eval import bits_per_byte

    out = {}
    for precision in ("fp32", "bf16"):
        bits_per_byte(model, tok, dev[:2], 512, precision=precision)  # warm-up
        t0 = time.perf_counter()
        r = bits_per_byte(model, tok, dev, 512, split="dev", precision=precision)
        dt = time.perf_counter() - t0
        out[precision] = {"bits_per_byte": r.bits_per_byte, "tokens": r.tokens, "seconds": dt,
                          "tokens_per_s": r.tokens / dt, "signature": r.signature}
    out["bf16_minus_fp32"] = out["bf16"]["bits_per_byte"] - out["fp32"]["bits_per_byte"]
    return out


# -- the parent ------------------------------------------------------------------------------------------------
def render(res: dict) -> str:
    s = res["settings"]
    rows = {r["runner"]: r for r in res["rows"]}
    base = rows.get("plain-fp32")
    best_hf = max((r for k, r in rows.items() if k.startswith("hf-trainer") and "error" not in r),
                  key=lambda r: r["tokens_per_s_stage2"], default=None)
    lines = ["| runner | tokens/s stage 1 | tokens/s stage 2 | × plain fp32 (stage 2) | × best Trainer (stage 2) | "
             "train s (wall) | peak RSS MiB | dev bpb end |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['runner']} | error: {r['error'][:80]} | | | | | | |")
            continue
        x = lambda ref: f"{r['tokens_per_s_stage2'] / ref['tokens_per_s_stage2']:.2f}" if ref else "—"
        lines.append(f"| {r['runner']} | {r['tokens_per_s_stage1']:.0f} | {r['tokens_per_s_stage2']:.0f} | {x(base)} | "
                     f"{x(best_hf)} | {r['train_seconds']:.0f} | {r['peak_rss_mib']:.0f} | {r['dev_bpb_final']:.4f} |")
    text = (f"# xlt bench/train.py\n\n{s['source']} → {s['target']} ({s['corpus']}, {s['vocab_size']:,}-token overlap "
            f"transfer), {s['steps']} steps ({s['stage1_steps']} embedding-only), batch {s['batch_size']} × "
            f"{s['seq_len']}. Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores; xlt precision auto "
            f"= {res['precision']['used']} ({res['precision']['reason']}).\n\n" + "\n".join(lines) + "\n")
    ev = rows.get("xlt-auto", {}).get("eval")
    if ev:
        text += (f"\nbits/byte evaluation ({ev['fp32']['tokens']:,} tokens): fp32 {ev['fp32']['tokens_per_s']:.0f} "
                 f"tokens/s, bf16 {ev['bf16']['tokens_per_s']:.0f} tokens/s; bf16 − fp32 = "
                 f"{ev['bf16_minus_fp32']:+.5f} bits/byte.\n")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="smollm2")
    ap.add_argument("--target", default="sw")
    ap.add_argument("--corpus", default="bible")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--stage1-steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--eval-max-bytes", type=int, default=8000)
    ap.add_argument("--runners", default=",".join(RUNNERS), help=f"comma-separated, of {', '.join(RUNNERS)}")
    ap.add_argument("--json", default=str(HERE / "results" / "train.json"),
                    help="where the results go [default: bench/results/train.json]")
    ap.add_argument("--work", default=None, help="folder for the shared model [default: a temporary folder]")
    ap.add_argument("--render-only", action="store_true", help="print the table of --json again, measure nothing")
    ap.add_argument("--runner", help=argparse.SUPPRESS)  # child mode
    a = ap.parse_args()
    if a.runner:
        return child(a)
    if a.render_only:
        return print(render(json.loads(Path(a.json).read_text())))
    from xlt.precision import resolve_precision
    from xlt.util import machine_info

    runners = [r for r in a.runners.split(",") if r]
    bad = [r for r in runners if r not in RUNNERS]
    if bad:
        raise SystemExit(f"unknown runner(s) {bad}; choose from {', '.join(RUNNERS)}")
    work = Path(a.work or tempfile.mkdtemp(prefix="xlt-bench-train-"))
    if not (work / "dev.json").is_file():
        t0 = time.time()
        prepare(a, work)
        print(f"prepared the transferred model in {time.time() - t0:.0f} s", flush=True)
    rows = []
    for r in runners:
        cmd = [sys.executable, __file__, "--runner", r, "--work", str(work)] + [
            f"--{k.replace('_', '-')}={getattr(a, k)}" for k in ("steps", "stage1_steps", "batch_size", "seq_len")]
        t0 = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
        row = json.loads(line[7:]) if line else {"runner": r, "error": (p.stderr or p.stdout).strip()[-400:]}
        row["wall_seconds"] = time.time() - t0
        rows.append(row)
        print(f"{r}: {row.get('tokens_per_s_stage2', float('nan')) or math.nan:.0f} tokens/s in stage 2, "
              f"{row['wall_seconds']:.0f} s", flush=True)
    settings = {k: getattr(a, k) for k in ("source", "target", "corpus", "vocab_size", "steps", "stage1_steps",
                                           "batch_size", "seq_len", "eval_max_bytes")}
    argv, skip = [], False  # the command as run, without this machine's paths (--work, --json)
    for x in sys.argv[1:]:
        if skip or x.startswith(("--work=", "--json=")):
            skip = False
            continue
        skip = x in ("--work", "--json")
        if not skip:
            argv.append(x)
    res = {"benchmark": "train", "command": " ".join(["python bench/train.py"] + argv), "settings": settings,
           "precision": resolve_precision("auto").as_dict(), "machine": machine_info(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "rows": rows}
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(render(res))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
