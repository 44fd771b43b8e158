"""Benchmark: lm-eval's bits/byte (documents) by xlt against lm-eval's own ``loglikelihood_rolling`` path.

    python bench/evaluate.py [--max-bytes 8000] [--json bench/results/evaluate_bpb.json]

For SmolLM2 on 8 Bible languages and Gemma-3-270M on 4 (test books, the first ``--max-bytes`` UTF-8 bytes of whole
verses per language; every verse is one document), each runner scores every language in its own process (so each has
its own peak memory, model load included):

- ``xlt``: :func:`xlt.eval.bpb.document_bits_per_byte` (windows batched by length, logits of the scored positions
  only, a chunk at a time);
- ``lm-eval bs=N``: ``lm_eval.simple_evaluate`` on ``HFLM(pretrained=model, tokenizer=tok, batch_size=N)`` with a
  local ``loglikelihood_rolling`` task over the same verses (its ``bits_per_byte`` metric), N = 1 (its default),
  8 and 32.

Wall time is the scoring alone (model loaded, task built); peak RSS is the process's VmHWM. Prints a table and
writes one JSON (settings, machine, every figure, |Δ bits/byte| per language against lm-eval at batch 1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # bench/peft.py would shadow peft
from xlt.util import peak_rss_mib  # noqa: E402

MODELS = {"smollm2": ["eng", "fra", "deu", "rus", "hin", "swh", "cmn", "arb"],
          "gemma3": ["eng", "swh", "hin", "nya"]}
RUNNERS = ("xlt", "lm-eval-bs1", "lm-eval-bs8", "lm-eval-bs32")




def texts(lang: str, max_bytes: int) -> list[str]:
    from xlt.corpora import open_corpus
    from xlt.eval import truncate_texts

    return truncate_texts(open_corpus("bible").texts(lang, "test"), max_bytes)


def child(a) -> None:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from xlt.models import load_source

    model, tok, _ = load_source(a.model)
    model.eval()
    data = {lang: texts(lang, a.max_bytes) for lang in a.langs.split(",")}
    out = {}
    if a.runner == "xlt":
        from xlt.eval.bpb import document_bits_per_byte
        from xlt.signature import model_hash

        t0 = time.perf_counter()
        mh = model_hash(model)  # as `xlt evaluate` does: the signature's weight hash once per model
        for lang, t in data.items():
            out[lang] = document_bits_per_byte(model, tok, t, model_hash=mh).bits_per_byte
        seconds = time.perf_counter() - t0
    else:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        work = Path(tempfile.mkdtemp(prefix="xlt-bench-eval-"))
        for lang, t in data.items():
            (work / f"{lang}.jsonl").write_text("".join(json.dumps({"text": x}, ensure_ascii=False) + "\n" for x in t))
            (work / f"{lang}.yaml").write_text(
                f"task: bench_bpb_{lang}\ndataset_path: json\n"
                f"dataset_kwargs:\n  data_files:\n    test: {work / (lang + '.jsonl')}\n"
                "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
                "metric_list:\n  - metric: bits_per_byte\n    aggregation: bits_per_byte\n    higher_is_better: false\n")
        bs = int(a.runner.rsplit("bs", 1)[1])
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=bs, device="cpu")
        tm = TaskManager(include_path=str(work))
        t0 = time.perf_counter()
        res = simple_evaluate(model=lm, tasks=[f"bench_bpb_{lang}" for lang in data], task_manager=tm,
                              log_samples=False, bootstrap_iters=0)
        seconds = time.perf_counter() - t0
        out = {lang: res["results"][f"bench_bpb_{lang}"]["bits_per_byte,none"] for lang in data}
    print("RESULT " + json.dumps({"bpb": out, "seconds": seconds, "peak_rss_mib": peak_rss_mib(),
                                  "bytes": {k: sum(len(x.encode()) for x in v) for k, v in data.items()}}), flush=True)


def render(res: dict) -> str:
    lines = []
    for model, rows in res["results"].items():
        base = rows["lm-eval-bs1"]
        lines.append(f"\n{model} ({', '.join(res['langs'][model])})")
        lines.append("| runner | seconds | × faster than lm-eval bs=1 | peak RSS MiB | max |Δ bpb| vs lm-eval bs=1 |")
        lines.append("|---|---:|---:|---:|---:|")
        for r in RUNNERS:
            row = rows[r]
            d = max(abs(row["bpb"][k] - base["bpb"][k]) for k in base["bpb"])
            lines.append(f"| {r} | {row['seconds']:.1f} | {base['seconds'] / row['seconds']:.2f} | "
                         f"{row['peak_rss_mib']:.0f} | {d:.2e} |")
        lines.append("| lang | " + " | ".join(res["langs"][model]) + " |")
        lines.append("|---|" + "---:|" * len(res["langs"][model]))
        lines.append("| bits/byte (xlt) | " + " | ".join(f"{rows['xlt']['bpb'][k]:.4f}" for k in res["langs"][model])
                     + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-bytes", type=int, default=8000)
    p.add_argument("--models", default="smollm2,gemma3")
    p.add_argument("--json", type=Path, default=HERE / "results" / "evaluate_bpb.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--runner", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--langs", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a)
    from xlt.util import machine_info

    res = {"settings": {"max_bytes": a.max_bytes, "split": "test", "documents": "verses"}, "langs": {},
           "results": {}}
    for model in a.models.split(","):
        langs = MODELS[model]
        res["langs"][model] = langs
        res["results"][model] = {}
        for r in RUNNERS:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--runner", r, "--model", model,
                   "--langs", ",".join(langs), "--max-bytes", str(a.max_bytes)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{model} {r} failed:\n{proc.stderr[-3000:]}")
            res["results"][model][r] = json.loads(line[7:])
            print(f"{model} {r}: {res['results'][model][r]['seconds']:.1f} s", flush=True)
    import lm_eval

    res["machine"] = machine_info(("torch", "transformers", "tokenizers", "lm_eval", "numpy"))
    res["machine"]["lm_eval"] = lm_eval.__version__
    print(render(res))
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
