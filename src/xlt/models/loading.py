"""Load a source model and tokenizer from a local HF folder, with clear errors and safetensors only."""

from __future__ import annotations

import json
import os
from pathlib import Path

from xlt.errors import XltError
from xlt.models.hf import quiet_transformers
from xlt.models.prepare import PREPARERS, prepare

#: the source models (causal LMs) among the packaged models of :data:`PREPARERS`: the names ``xlt adapt``, evaluation
#: and merging accept besides folders (a ``kind`` "encoder" model, such as ``e5``, is no source model)
KNOWN_SOURCES = tuple(name for name, info in PREPARERS.items() if info.get("kind", "causal") == "causal")


def resolve_source(source: str | os.PathLike) -> Path:
    """A packaged model's name from :data:`PREPARERS` (prepared into the cache on first use) or a local folder."""
    s = str(source)
    if s in PREPARERS:
        return prepare(s)
    path = Path(s).expanduser()
    if not path.exists():
        raise XltError(
            f"source model folder {path} does not exist",
            f"give a local HF model folder (with config.json and *.safetensors) or one of: {', '.join(KNOWN_SOURCES)}",
        )
    return path


def check_model_folder(path: str | os.PathLike, allow_pickle: bool = False) -> Path:
    """Check ``path`` is a loadable HF causal-LM folder: config.json present, weight files readable."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_dir():
        raise XltError(f"{path} is not a folder", "give the folder that save_pretrained wrote")
    cfg = path / "config.json"
    if not cfg.is_file():
        raise XltError(f"model folder {path} has no config.json", "give the folder that save_pretrained wrote")
    try:
        json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise XltError(f"{cfg} is not valid JSON ({e})", "restore the file from the original model") from None
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        if any(path.glob("*.bin")) and not allow_pickle:
            raise XltError(
                f"model folder {path} has only pickle (*.bin) weights, which can run code when loaded",
                "convert it to safetensors, or pass --allow-pickle if you trust the file",
            )
        if not any(path.glob("*.bin")):
            raise XltError(f"model folder {path} has no weights (*.safetensors)", "give a complete model folder")
    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt") as fh:
                keys = list(fh.keys())
                if keys:  # read one tensor: catches truncated files whose header is intact
                    fh.get_slice(keys[-1])[...]
        except Exception as e:  # safetensors raises SafetensorError / OSError with library text
            raise XltError(
                f"weights file {shard} is corrupt or truncated ({str(e).splitlines()[0][:120]})",
                "re-download or re-save the model (save_pretrained), or run `xlt models prepare` again",
            ) from None
    return path


def load_tokenizer(path: str | os.PathLike):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as e:
        raise XltError(f"cannot load a tokenizer from {path} ({type(e).__name__}: {str(e)[:160]})",
                       "the folder needs tokenizer.json / tokenizer_config.json as written by save_pretrained") from None


def load_model(path: str | os.PathLike, dtype=None, allow_pickle: bool = False):
    """Load a causal LM from a local folder (safetensors; pickle only with ``allow_pickle``)."""
    import torch
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    path = check_model_folder(path, allow_pickle=allow_pickle)
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype or torch.float32, use_safetensors=not allow_pickle or None
        )
    except Exception as e:
        raise XltError(f"cannot load a causal LM from {path} ({type(e).__name__}: {str(e)[:200]})",
                       "check that the folder holds a causal language model saved with save_pretrained") from None


def load_source(source: str | os.PathLike, allow_pickle: bool = False):
    """``(model, tokenizer, folder)`` for a source given by name or folder."""
    folder = resolve_source(source)
    model = load_model(folder, allow_pickle=allow_pickle)
    tok = load_tokenizer(folder)
    return model, tok, folder
