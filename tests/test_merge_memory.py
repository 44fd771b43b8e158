"""The merge engine's peak memory follows one tensor, not the model.

In a fresh subprocess: write a base and two "fine-tunes" of a model whose every tensor is 2 MiB (48 tensors, 96 MiB
per model, 288 MiB of inputs), warm the engine up on a tiny merge (imports, thread pools), then for each merge reset
the peak resident set (``/proc/self/clear_refs``) and read how far it grew (``VmHWM`` − ``VmRSS`` before). The
resident set counts the memory-mapped input pages too, so an engine that kept tensors (or their pages) would grow
by a good part of the 288 MiB; the bound is 16 tensors, 32 MiB (TIES, which reads three whole tensors and keeps
their |δ| for its threshold, peaks near 12). glibc's malloc is told to map every block above 64 KiB on its own
(``MALLOC_MMAP_THRESHOLD_``), so freed tensors leave the resident set at once and the figure is the engine's
working set, not the allocator's reuse pattern.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TENSOR_ROWS, TENSOR_COLS, N_TENSORS, K = 512, 1024, 48, 16

SCRIPT = textwrap.dedent("""
    import gc, json, re, sys
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from xlt.merge import run

    torch.set_num_threads(1)
    root, rows, cols, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

    def save(folder, count, seed, base=None):
        g = torch.Generator().manual_seed(seed)
        sd = {f"model.layers.{i}.mlp.w.weight": torch.randn(rows, cols, generator=g) * 0.02 for i in range(count)}
        if base is not None:
            sd = {k: base[k] + v * 0.05 for k, v in sd.items()}
        folder.mkdir(parents=True)
        save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": count}))
        return sd

    base = save(root / "base", n, 0)
    for i in (1, 2):
        save(root / f"ft{i}", n, i, base)
    tiny = save(root / "tiny", 2, 3)
    save(root / "tiny_ft", 2, 4, tiny)
    del base, tiny

    def status(key):
        return int(re.search(key + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]) * 1024

    def config(method, base, models, **parameters):
        return {"merge_method": method, "base_model": str(root / base), "parameters": parameters,
                "models": [{"model": str(root / m)} for m in models]}

    quiet = dict(show_progress=False, hash_inputs=False)
    run(config("ties", "tiny", ["tiny_ft"], density=0.5), root / "warm1", **quiet)
    run(config("ties", "tiny", ["tiny_ft"], density=0.5, trim_scope="global"), root / "warm2", **quiet)
    growth = {}
    for name, cfg in [("linear", {"merge_method": "linear", "models": [{"model": str(root / m)} for m in ("ft1", "ft2")]}),
                      ("ties", config("ties", "base", ["ft1", "ft2"], density=0.3)),
                      ("ties_global", config("ties", "base", ["ft1", "ft2"], density=0.3, trim_scope="global"))]:
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # the peak resident set starts again from the current one
        before = status("VmRSS")
        run(cfg, root / f"out-{name}", **quiet)
        growth[name] = status("VmHWM") - before
    print(json.dumps(growth))
""")


def clear_refs_works() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "VmHWM" in Path("/proc/self/status").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not clear_refs_works(),
                    reason="needs Linux's /proc/self/status and a resettable peak (clear_refs)")
def test_peak_memory_follows_one_tensor_not_the_model(tmp_path):
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(TENSOR_ROWS), str(TENSOR_COLS),
                        str(N_TENSORS)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    assert r.returncode == 0, r.stderr[-3000:]
    growth = json.loads(r.stdout.strip().splitlines()[-1])
    tensor = TENSOR_ROWS * TENSOR_COLS * 4
    inputs = 3 * N_TENSORS * tensor
    assert K * tensor < inputs / 8  # the bound tells an engine that streams from one that holds the model
    for name, grew in growth.items():
        assert 0 <= grew <= K * tensor, f"{name}: peak grew by {grew / 2**20:.1f} MiB (bound {K * tensor / 2**20:.0f} MiB)"
