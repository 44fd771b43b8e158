"""Benchmark: `xlt merge` against `mergekit-yaml` on TinyLlama-1.1B-shaped checkpoints (random weights).

    python bench/merge.py [--mergekit PATH/mergekit-yaml] [--work DIR] [--repeats 2] [--out FILE.json]
    python bench/merge.py --small        # tiny shapes: checks the script itself in a minute

``--mergekit`` defaults to ``mergekit-yaml`` on PATH, else beside this Python (``pip install mergekit``, ideally
in its own environment); without it only xlt runs. ``--work`` (generated checkpoints and outputs, about 12 GB at
full size) defaults to a folder under the system's temporary directory. The full run needs 20+ minutes on two cores
and should run on a quiet machine.

Workload: TIES (density 0.2, weight 1.0 ×3, normalize, λ = 1) of three "fine-tunes" onto a base, LlamaForCausalLM with TinyLlama-1.1B shapes (vocab 32,000, hidden 2,048,
intermediate 5,632, 22 layers, 32 heads, 4 KV heads, untied head; 1.100 B parameters), stored in bf16
(2.2 GB per checkpoint, shards ≤ 1 GB), computed in float32, written in bf16, output shards of 1 GB
for both tools. Generated once, deterministically, streaming: base ~ N(0, 0.02); expert_t = base +
N(0, 1e-3) on a random half of the entries (seeds from tensor name and model index).

Each run is a subprocess with OMP_NUM_THREADS=2 (mergekit ``-j 2``, xlt ``--threads 2``); runs alternate
between the tools (ABAB) after the inputs are read once into the page cache. Sampled every 100 ms from
/proc/<pid>/status: peak RSS (VmHWM) and peak anonymous memory (RssAnon: what the merge really needs;
memory-mapped input pages are file-backed and reclaimable). Outputs are compared tensor by tensor
(max |Δ| in float32, and the number of differing elements). xlt runs TIES twice per repeat: with the default
``tie_break: index`` (task ``ties``) and with ``tie_break: mergekit`` (task ``ties_mk``, mergekit's argsort
order at threshold ties), each compared with mergekit's output (``--tie-break`` picks one). Also timed: a
layer swap (xlt
``layer_swap``, and mergekit's equivalent ``slices`` + ``linear``) and a LoRA-source merge (three
rank-16 LoRAs on the base; xlt reads them as lazy ΔW, mergekit materialises each merged model first,
run only with ``--lora-mergekit``). Prints a table and writes one JSON (``--out``, default
``bench/results/merge.json``; ``merge-small.json`` with ``--small``): the workload and settings, the machine and
package versions (:func:`xlt.util.machine_info`, mergekit's version from its own interpreter), every run's wall time
and memory, the per-task summary and the output comparisons.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SHAPES = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
              num_attention_heads=32, num_key_value_heads=4)


# -- data ----------------------------------------------------------------------------------------------------
def tensor_shapes(c: dict) -> list[tuple[str, tuple[int, ...]]]:
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    out = [("model.embed_tokens.weight", (v, h))]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", (h,)), (p + "self_attn.q_proj.weight", (h, h)),
                (p + "self_attn.k_proj.weight", (kv, h)), (p + "self_attn.v_proj.weight", (kv, h)),
                (p + "self_attn.o_proj.weight", (h, h)), (p + "post_attention_layernorm.weight", (h,)),
                (p + "mlp.gate_proj.weight", (i, h)), (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i))]
    out += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    return out


def generate(folder: Path, index: int, shapes: list, config: dict, shard_bytes: int = 1 << 30) -> None:
    """Model ``index`` (0 = base) into ``folder``: bf16 safetensors shards ≤ 1 GB with an index."""
    import torch
    from safetensors.torch import save_file

    from xlt.util import stable_hash

    if (folder / "model.safetensors.index.json").is_file():
        return
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards, cur, size = [], {}, 0
    for name, shape in shapes:
        g = torch.Generator().manual_seed(stable_hash(f"base|{name}") & ((1 << 63) - 1))
        w = torch.randn(shape, generator=g) * 0.02
        if index:
            g2 = torch.Generator().manual_seed(stable_hash(f"expert{index}|{name}") & ((1 << 63) - 1))
            noise = torch.randn(shape, generator=g2) * 1e-3
            noise *= torch.rand(shape, generator=g2) < 0.5
            w += noise
            del noise
        t = w.to(torch.bfloat16)
        del w
        if cur and size + t.numel() * 2 > shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = t
        size += t.numel() * 2
    shards.append(cur)
    n = len(shards)
    wm = {}
    for k, sd in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        save_file(sd, tmp / fname, metadata={"format": "pt"})
        wm.update({name: fname for name in sd})
    total = sum(t.numel() * 2 for sd in shards for t in sd.values())
    (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": wm}))
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    os.replace(tmp, folder)


def llama_config() -> dict:
    from transformers import LlamaConfig

    c = LlamaConfig(**SHAPES, tie_word_embeddings=False, max_position_embeddings=2048, rms_norm_eps=1e-5,
                    dtype="bfloat16").to_dict()
    c["architectures"] = ["LlamaForCausalLM"]
    return c


def make_loras(work: Path, shapes: list, r: int = 16, n: int = 3) -> list[Path]:
    import torch
    from safetensors.torch import save_file

    out = []
    for k in range(n):
        d = work / f"lora{k + 1}"
        out.append(d)
        if (d / "adapter_config.json").is_file():
            continue
        d.mkdir(parents=True, exist_ok=True)
        g = torch.Generator().manual_seed(100 + k)
        sd = {}
        for name, shape in shapes:
            if len(shape) == 2 and "layers." in name:
                stem = "base_model.model." + name[: -len(".weight")]
                sd[stem + ".lora_A.weight"] = (torch.randn(r, shape[1], generator=g) * 0.01).to(torch.bfloat16)
                sd[stem + ".lora_B.weight"] = (torch.randn(shape[0], r, generator=g) * 0.01).to(torch.bfloat16)
        save_file(sd, d / "adapter_model.safetensors", metadata={"format": "pt"})
        (d / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 32, "lora_dropout": 0.0,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            "fan_in_fan_out": False, "bias": "none", "use_rslora": False, "base_model_name_or_path": str(work / "base")}))
    return out


# -- measurement -------------------------------------------------------------------------------------------
def _status(pid: int) -> dict:
    out = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return pids


def measure(cmd: list[str], env: dict, log: Path) -> dict:
    """Run ``cmd``; wall time, peak RSS (VmHWM) and peak anonymous memory of its process tree, sampled every 100 ms."""
    peak = {"rss": 0, "anon": 0, "hwm": 0}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        p = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample():
            while not done.is_set():
                st = [_status(q) for q in _tree(p.pid)]
                peak["rss"] = max(peak["rss"], sum(s.get("VmRSS", 0) for s in st))
                peak["anon"] = max(peak["anon"], sum(s.get("RssAnon", 0) for s in st))
                peak["hwm"] = max(peak["hwm"], max((s.get("VmHWM", 0) for s in st), default=0))
                done.wait(0.1)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        rc = p.wait()
        done.set()
        th.join()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}); see {log}")
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(max(peak["rss"], peak["hwm"]) / 1e6, 1),
            "peak_anon_mb": round(peak["anon"] / 1e6, 1)}


def compare(a: Path, b: Path) -> dict:
    """max |a − b| over every tensor (float32), the number of differing elements, and missing names."""
    import torch

    from xlt.merge.io import SafetensorsSource

    sa, sb = SafetensorsSource(a), SafetensorsSource(b)
    missing = sorted(set(sa.names()) ^ set(sb.names()))
    worst, differ, total, worst_name = 0.0, 0, 0, ""
    for n in sa.names():
        if n not in sb:
            continue
        x, y = sa.rows(n, dtype=torch.float32), sb.rows(n, dtype=torch.float32)
        d = (x - y).abs()
        m = float(d.max()) if d.numel() else 0.0
        if m > worst:
            worst, worst_name = m, n
        differ += int((d > 0).sum())
        total += d.numel()
    return {"max_abs_diff": worst, "worst_tensor": worst_name, "differing_elements": differ, "elements": total,
            "missing_tensors": missing}


def explain_ties(a: Path, b: Path, base: Path, experts: list[Path], density: float) -> dict:
    """Where the two TIES outputs differ: are those exactly the elements at which some model's |δ| equals
    its per-tensor trim threshold (a tie that each tool breaks its own way)? Max |Δ| elsewhere."""
    import torch

    from xlt.merge.io import SafetensorsSource

    sa, sb, s0 = SafetensorsSource(a), SafetensorsSource(b), SafetensorsSource(base)
    se = [SafetensorsSource(e) for e in experts]
    at_ties, elsewhere, worst_elsewhere = 0, 0, 0.0
    for n in sa.names():
        d = (sa.rows(n, dtype=torch.float32) - sb.rows(n, dtype=torch.float32)).abs()
        if not bool((d > 0).any()):
            continue
        b0 = s0.rows(n, dtype=torch.float32)
        tie = torch.zeros_like(d, dtype=torch.bool)
        for e in se:
            delta = (e.rows(n, dtype=torch.float32) - b0).abs().reshape(-1)
            k = max(1, int(density * delta.numel()))
            thr = torch.kthvalue(delta, delta.numel() - k + 1).values
            tie |= (delta == thr).reshape(d.shape)
            del delta
        diff = d > 0
        at_ties += int((diff & tie).sum())
        elsewhere += int((diff & ~tie).sum())
        if bool((diff & ~tie).any()):
            worst_elsewhere = max(worst_elsewhere, float(d[diff & ~tie].max()))
    return {"differing_at_threshold_ties": at_ties, "differing_elsewhere": elsewhere,
            "max_abs_diff_elsewhere": worst_elsewhere}


def warm(folders: list[Path]) -> None:
    for f in folders:
        for p in sorted(f.glob("*.safetensors")):
            with open(p, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def find_mergekit() -> str | None:
    """``mergekit-yaml`` on PATH, else beside this Python."""
    found = shutil.which("mergekit-yaml")
    beside = Path(sys.executable).with_name("mergekit-yaml")
    return found or (str(beside) if beside.is_file() else None)


def mergekit_version(exe: str) -> str | None:
    """The mergekit version of the interpreter that runs ``exe`` (its shebang), else of this one."""
    python = sys.executable
    try:
        first = Path(exe).read_text(encoding="utf-8", errors="replace").splitlines()[0]
        if first.startswith("#!") and Path(first[2:].strip()).is_file():
            python = first[2:].strip()
    except (OSError, IndexError):
        pass
    v = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('mergekit'))"],
                       capture_output=True, text=True)
    return v.stdout.strip() or None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mergekit", default=None, help="path of mergekit-yaml [default: on PATH, else beside this Python]")
    ap.add_argument("--no-mergekit", action="store_true", help="time xlt only")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "xlt-bench-merge"),
                    help="generated checkpoints and outputs [default: under the system's temporary directory]")
    ap.add_argument("--out", default=None, help="the JSON written [default: bench/results/merge.json, "
                    "merge-small.json with --small]")
    ap.add_argument("--repeats", type=int, default=2, help="TIES runs per tool (alternating)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lora-mergekit", action="store_true", help="also run mergekit's base+lora path (slow: it "
                    "materialises three full merged models)")
    ap.add_argument("--skip-extra", action="store_true", help="only the TIES comparison")
    ap.add_argument("--cleanup", action="store_true", help="delete --work at the end")
    ap.add_argument("--small", action="store_true", help="tiny shapes, to check the script itself in seconds")
    ap.add_argument("--tie-break", choices=("index", "mergekit", "both"), default="both",
                    help="xlt TIES runs: default tie break, mergekit's, or both")
    args = ap.parse_args()
    if args.mergekit and not Path(args.mergekit).is_file():
        sys.exit(f"error: --mergekit {args.mergekit} does not exist\nfix: give the path of mergekit-yaml, or leave "
                 "--mergekit out to use the one on PATH")
    if not args.no_mergekit and not args.mergekit:
        args.mergekit = find_mergekit()
        if not args.mergekit:
            print("mergekit-yaml was found neither on PATH nor beside this Python: timing xlt only "
                  "(install mergekit, e.g. `pip install mergekit` in its own environment, and pass "
                  "--mergekit PATH/mergekit-yaml to compare)", file=sys.stderr)
    if args.no_mergekit:
        args.mergekit = None
    if args.small:
        SHAPES.update(vocab_size=512, hidden_size=128, intermediate_size=352, num_hidden_layers=6,
                      num_attention_heads=4, num_key_value_heads=2)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else HERE / "results" / ("merge-small.json" if args.small else "merge.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    xlt_exe = Path(sys.executable).with_name("xlt")
    xlt = [str(xlt_exe)] if xlt_exe.is_file() else [sys.executable, "-m", "xlt.cli.main"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    free = shutil.disk_usage(work).free
    print(f"disk free under {work}: {free / 1e9:.1f} GB", file=sys.stderr)

    t0 = time.perf_counter()
    cfg = llama_config()
    shapes = tensor_shapes(cfg)
    models = [work / "base"] + [work / f"ft{k}" for k in (1, 2, 3)]
    for k, m in enumerate(models):
        generate(m, k, shapes, cfg)
    gen_s = time.perf_counter() - t0
    n_params = sum(int(__import__("math").prod(s)) for _, s in shapes)
    print(f"inputs ready ({n_params:,} parameters per model, {gen_s:.0f} s)", file=sys.stderr)

    import yaml

    ties = {"merge_method": "ties", "base_model": str(models[0]),
            "models": [{"model": str(m), "parameters": {"weight": 1.0, "density": 0.2}} for m in models[1:]],
            "parameters": {"normalize": True, "lambda": 1.0}, "dtype": "float32", "out_dtype": "bfloat16"}
    (work / "ties.yml").write_text(yaml.safe_dump(ties, sort_keys=False))
    ties_mk = {**ties, "parameters": {**ties["parameters"], "tie_break": "mergekit"}}
    (work / "ties-mk.yml").write_text(yaml.safe_dump(ties_mk, sort_keys=False))
    from xlt.util import machine_info

    result: dict = {"benchmark": "bench/merge.py", "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                    "workload": {"method": "ties", "density": 0.2, "models": 3, "parameters_per_model": n_params,
                                 "shapes": dict(SHAPES), "storage": "bf16", "compute": "float32", "out_shard": "1 GB",
                                 "threads": args.threads, "small": args.small, "seconds_to_generate_inputs": round(gen_s, 1)},
                    "settings": {"repeats": args.repeats, "tie_break": args.tie_break, "skip_extra": args.skip_extra,
                                 "lora_mergekit": args.lora_mergekit, "mergekit": bool(args.mergekit)},
                    "machine": machine_info(),
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                    "mergekit_version": mergekit_version(args.mergekit) if args.mergekit else None,
                    "runs": []}
    warm(models)

    def xlt_cmd(cfg_path: Path, dest: Path) -> list[str]:
        return [*xlt, "merge", str(cfg_path), str(dest), "--overwrite", "--shard-size", "1GB", "--threads",
                str(args.threads), "--no-progress", "--no-copy-tokenizer"]

    def mk_cmd(cfg_path: Path, dest: Path) -> list[str]:
        return [args.mergekit, str(cfg_path), str(dest), "--out-shard-size", "1B", "--no-copy-tokenizer",
                "--no-write-model-card", "--quiet", "-j", str(args.threads), "--allow-crimes"]

    def run(tool: str, task: str, cmd: list[str], dest: Path) -> dict:
        shutil.rmtree(dest, ignore_errors=True)
        r = measure(cmd, env, work / f"{tool}-{task}.log")
        r.update(tool=tool, task=task)
        result["runs"].append(r)
        print(f"{task:10s} {tool:9s} {r['wall_s']:8.1f} s  RSS {r['peak_rss_mb']:8.0f} MB  "
              f"anon {r['peak_anon_mb']:8.0f} MB", file=sys.stderr)
        return r

    # (tool, task, config, output folder)
    ties_runs = []
    if args.tie_break in ("index", "both"):
        ties_runs.append(("xlt", "ties", work / "ties.yml", work / "out-xlt"))
    if args.tie_break in ("mergekit", "both"):
        ties_runs.append(("xlt", "ties_mk", work / "ties-mk.yml", work / "out-xlt-mk"))
    if args.mergekit:
        ties_runs.append(("mergekit", "ties", work / "ties.yml", work / "out-mergekit"))
    for rep in range(args.repeats):
        for tool, task, cfg_path, dest in (ties_runs if rep % 2 == 0 else ties_runs[::-1]):
            run(tool, task, (xlt_cmd if tool == "xlt" else mk_cmd)(cfg_path, dest), dest)
    if args.mergekit:
        for task, dest in (("ties", work / "out-xlt"), ("ties_mk", work / "out-xlt-mk")):
            if not dest.exists():
                continue
            parity = compare(dest, work / "out-mergekit")
            if parity["differing_elements"]:
                parity.update(explain_ties(dest, work / "out-mergekit", models[0], models[1:], 0.2))
            result["ties_parity" if task == "ties" else "ties_mk_parity"] = parity
    shutil.rmtree(work / "out-mergekit", ignore_errors=True)
    shutil.rmtree(work / "out-xlt-mk", ignore_errors=True)

    if not args.skip_extra:
        L = SHAPES["num_hidden_layers"]
        bot, top = (5, 2) if L >= 16 else (1, 1)
        swap = {"merge_method": "layer_swap", "models": [{"model": str(models[1])}, {"model": str(models[2])}],
                "parameters": {"bottom": bot, "top": top, "transition_bottom": 1, "transition_top": 1, "alpha": 0.5}}
        (work / "swap.yml").write_text(yaml.safe_dump(swap, sort_keys=False))
        run("xlt", "layer_swap", xlt_cmd(work / "swap.yml", work / "out-swap-xlt"), work / "out-swap-xlt")
        if args.mergekit:
            a, b = str(models[1]), str(models[2])

            def src(m, lo, hi, w=1.0):
                return {"model": m, "layer_range": [lo, hi], "parameters": {"weight": w}}
            mk_swap = {"merge_method": "linear", "dtype": "bfloat16", "slices": [
                {"sources": [src(a, 0, bot)]},
                {"sources": [src(a, bot, bot + 1, 0.5), src(b, bot, bot + 1, 0.5)]},
                {"sources": [src(b, bot + 1, L - top - 1)]},
                {"sources": [src(a, L - top - 1, L - top, 0.5), src(b, L - top - 1, L - top, 0.5)]},
                {"sources": [src(a, L - top, L)]}]}
            (work / "swap-mk.yml").write_text(yaml.safe_dump(mk_swap, sort_keys=False))
            run("mergekit", "layer_swap", mk_cmd(work / "swap-mk.yml", work / "out-swap-mk"), work / "out-swap-mk")
            result["layer_swap_parity"] = compare(work / "out-swap-xlt", work / "out-swap-mk")
            shutil.rmtree(work / "out-swap-mk", ignore_errors=True)
        shutil.rmtree(work / "out-swap-xlt", ignore_errors=True)

        loras = make_loras(work, shapes)
        lora_cfg = {"merge_method": "task_arithmetic", "base_model": str(models[0]),
                    "models": [{"model": f"{models[0]}+{l}", "parameters": {"weight": 1.0}} for l in loras],
                    "parameters": {"normalize": False}, "dtype": "float32", "out_dtype": "bfloat16"}
        (work / "lora.yml").write_text(yaml.safe_dump(lora_cfg, sort_keys=False))
        run("xlt", "lora_ta", xlt_cmd(work / "lora.yml", work / "out-lora-xlt"), work / "out-lora-xlt")
        if args.mergekit and args.lora_mergekit:
            cache = work / "lora-cache"
            run("mergekit", "lora_ta", mk_cmd(work / "lora.yml", work / "out-lora-mk") + ["--lora-merge-cache", str(cache)],
                work / "out-lora-mk")
            result["lora_parity"] = compare(work / "out-lora-xlt", work / "out-lora-mk")
            shutil.rmtree(work / "out-lora-mk", ignore_errors=True)
            shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(work / "out-lora-xlt", ignore_errors=True)
    shutil.rmtree(work / "out-xlt", ignore_errors=True)

    # summary
    def best(tool, task, key):
        v = [r[key] for r in result["runs"] if r["tool"] == tool and r["task"] == task]
        return min(v) if v else None

    summary = {}
    for task in ("ties", "ties_mk", "layer_swap", "lora_ta"):
        row = {}
        for tool in ("xlt", "mergekit"):
            ref_task = "ties" if (task == "ties_mk" and tool == "mergekit") else task  # one mergekit TIES run
            if best(tool, ref_task, "wall_s") is not None:
                row[tool] = {k: best(tool, ref_task, k) for k in ("wall_s", "peak_rss_mb", "peak_anon_mb")}
        if "xlt" in row and "mergekit" in row:
            row["ratio_xlt_over_mergekit"] = {k: round(row["xlt"][k] / row["mergekit"][k], 3)
                                              for k in ("wall_s", "peak_rss_mb", "peak_anon_mb")}
        if row:
            summary[task] = row
    result["summary"] = summary
    result["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print("\n| task | tool | wall s (best) | peak RSS MB | peak anon MB |")
    print("|---|---|---:|---:|---:|")
    for task, row in summary.items():
        for tool in ("xlt", "mergekit"):
            if tool in row:
                r = row[tool]
                print(f"| {task} | {tool} | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['peak_anon_mb']:.0f} |")
        if "ratio_xlt_over_mergekit" in row:
            q = row["ratio_xlt_over_mergekit"]
            print(f"| {task} | xlt/mergekit | {q['wall_s']:.2f} | {q['peak_rss_mb']:.2f} | {q['peak_anon_mb']:.2f} |")
    for k in ("ties_parity", "ties_mk_parity", "layer_swap_parity", "lora_parity"):
        if k in result:
            p = result[k]
            print(f"{k}: max |Δ| = {p['max_abs_diff']:.3g} ({p['worst_tensor']}), "
                  f"{p['differing_elements']:,} of {p['elements']:,} elements differ, missing {p['missing_tensors']}")
            if "differing_elsewhere" in p:
                print(f"  of which at exact ties with a trim threshold: {p['differing_at_threshold_ties']:,}; "
                      f"elsewhere: {p['differing_elsewhere']:,} (max |Δ| there {p['max_abs_diff_elsewhere']:.3g})")
    print(f"written: {out}")
    if args.cleanup:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
