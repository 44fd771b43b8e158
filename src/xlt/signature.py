"""Provenance signatures: every number xlt reports says how it was computed (sacrebleu's ``Signature`` is the model).

A signature is one line of ``key:value`` fields joined by ``|``, starting with what was computed and ending with
the xlt version, e.g. for bits per byte::

    bpb|window:512|join:newline|boundary:eos=2|bytes:20011|split:dev|tok:3fa2b1c9d0e4|model:91c0e2aa7b13|xlt:0.1.0

``tok`` and ``model`` are short content hashes (SHA-256 of the tokenizer's JSON, and of the model's tensor names,
shapes, dtypes and bytes), so two figures with the same signature were computed the same way on the same inputs.
Merge outputs (``xlt_merge.json``) and transfer mappings (``transfer_summary.json``) carry one too.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

SHORT = 12


def digest(data: bytes | str, n: int = SHORT) -> str:
    """The first ``n`` hex digits of the SHA-256 of ``data``."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()[:n]


def json_hash(obj: Any) -> str:
    """A hash of a JSON-able object that does not depend on key order."""
    return digest(json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False))


def tokenizer_hash(tokenizer) -> str:
    """Hash of the tokenizer's full ``tokenizers`` JSON (vocabulary, merges, normalisation, specials)."""
    from xlt.vocab.canon import tokenizer_memo

    def compute():
        backend = getattr(tokenizer, "backend_tokenizer", None)
        text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
        return digest(text)

    return tokenizer_memo(tokenizer, "signature", compute)


def model_hash(model) -> str:
    """Hash of every parameter and buffer of ``model``: names, shapes, dtypes and bytes (shared tensors once)."""
    import torch

    h = hashlib.sha256()
    seen = set()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        t = t.detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        if t.numel():
            t = t.cpu().contiguous().reshape(-1)  # 1-d: a 0-d tensor (Gemma's embed_scale) has no byte view
            h.update(t.view(torch.uint8).numpy().data if t.dtype != torch.bool else t.numpy().tobytes())
    return h.hexdigest()[:SHORT]


class Signature:
    """``kind|key:value|...|xlt:VERSION`` (fields in the order given)."""

    def __init__(self, kind: str, **fields: Any):
        import xlt

        self.kind = kind
        self.fields = {k: v for k, v in fields.items() if v is not None}
        self.fields["xlt"] = xlt.__version__

    def __str__(self) -> str:
        return "|".join([self.kind] + [f"{k}:{_fmt(v)}" for k, v in self.fields.items()])

    __repr__ = __str__

    @staticmethod
    def parse(text: str) -> dict:
        """The fields of a signature string (``kind`` included)."""
        kind, *rest = text.split("|")
        return {"kind": kind, **dict(part.split(":", 1) for part in rest)}


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v).replace("|", "/")
