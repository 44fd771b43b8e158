"""One canonical form for token strings across tokenizer families.

Every non-special token maps to the UTF-8 *bytes* it stands for, with a leading space byte where the
token starts a word: byte-level BPE ``Ġhaus`` (GPT-2 byte alphabet), SentencePiece ``▁haus``, and
WordPiece word-initial ``haus`` all become ``b" haus"``; WordPiece ``##haus`` becomes ``b"haus"``;
byte-fallback ``<0x41>`` becomes ``b"A"``. Special tokens have no surface form (``None``) and are
matched by string or role instead.

:func:`to_model_form` goes back: canonical bytes -> the string the tokenizer *model* (below
pre-tokenisation) expects, so one tokenizer's tokens can be decomposed by another.
"""

from __future__ import annotations

import json
import re
import weakref
from dataclasses import dataclass
from functools import lru_cache

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 byte -> printable character table used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


@lru_cache(maxsize=1)
def _byte_translation() -> dict[int, int]:
    """``str.translate`` table: GPT-2 byte-alphabet character -> the code point of the byte it stands for."""
    return {ord(c): b for c, b in unicode_to_bytes().items()}


_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def tokenizer_memo(tokenizer, key: str, compute):
    """Per-tokenizer memo (invalidated when the vocabulary grows), so the tokenizer JSON is parsed once."""
    try:
        slot = _CACHE.setdefault(tokenizer, {})
    except TypeError:  # not weak-referenceable: no caching
        return compute()
    stamp = (key, len(tokenizer) if hasattr(tokenizer, "__len__") else None)
    if stamp not in slot:
        slot[stamp] = compute()
    return slot[stamp]


@dataclass(frozen=True)
class TokenizerKind:
    model: str  # BPE | Unigram | WordPiece | WordLevel
    byte_level: bool
    metaspace: bool
    byte_fallback: bool
    continuing_prefix: str | None  # "##" for WordPiece

    @property
    def family(self) -> str:
        if self.byte_level:
            return "byte-level BPE" if self.model == "BPE" else f"byte-level {self.model}"
        if self.metaspace:
            return f"SentencePiece {self.model}"
        return self.model


def _walk(node) -> list[dict]:
    """Flatten nested Sequence pre-tokenizers/decoders/normalizers into a list of components."""
    if not node:
        return []
    if node.get("type") == "Sequence":
        items = node.get("pretokenizers") or node.get("decoders") or node.get("normalizers") or []
        return [x for item in items for x in _walk(item)]
    return [node]


def backend_json(tokenizer) -> dict:
    """The tokenizer's ``tokenizers`` JSON (parsed once per tokenizer)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    return tokenizer_memo(tokenizer, "json", lambda: json.loads(backend.to_str()))


def _component(obj) -> dict | None:
    """One pipeline component (pre-tokenizer, decoder, normalizer) as its JSON, without serialising the vocabulary."""
    return None if obj is None else json.loads(obj.__getstate__())


def tokenizer_kind(tokenizer) -> TokenizerKind:
    return tokenizer_memo(tokenizer, "kind", lambda: _tokenizer_kind(tokenizer))


def _tokenizer_kind(tokenizer) -> TokenizerKind:
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    model_obj = backend.model
    model_type = type(model_obj).__name__
    if model_type in ("BPE", "WordPiece", "WordLevel") or hasattr(model_obj, "byte_fallback"):
        byte_fallback = bool(getattr(model_obj, "byte_fallback", False))
        prefix = getattr(model_obj, "continuing_subword_prefix", None)
    else:  # a model whose options are not attributes (Unigram): its own JSON, not the whole tokenizer's
        model = json.loads(model_obj.__getstate__())
        model_type, byte_fallback, prefix = model["type"], bool(model.get("byte_fallback")), model.get("continuing_subword_prefix")
    parts = (_walk(_component(backend.pre_tokenizer)) + _walk(_component(backend.decoder))
             + _walk(_component(backend.normalizer)))
    types = {p.get("type") for p in parts}
    metaspace = "Metaspace" in types or any(
        p.get("type") == "Replace" and p.get("content") == "▁" for p in parts
    )
    return TokenizerKind(
        model=model_type,
        byte_level="ByteLevel" in types,
        metaspace=metaspace,
        byte_fallback=byte_fallback,
        continuing_prefix=prefix if model_type == "WordPiece" else None,
    )


def special_token_ids(tokenizer) -> set[int]:
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    return {i for i, a in backend.get_added_tokens_decoder().items() if a.special}


def canonical_token(token: str, kind: TokenizerKind) -> bytes:
    """The canonical byte form of one (non-special) token string."""
    if kind.byte_level:
        try:
            return token.translate(_byte_translation()).encode("latin-1")
        except UnicodeEncodeError:  # a character outside the byte alphabet (an added token)
            return token.encode("utf-8")
    if kind.byte_fallback and (m := _BYTE_TOKEN.match(token)):
        return bytes([int(m.group(1), 16)])
    if kind.metaspace:
        return token.replace("▁", " ").encode("utf-8")
    if kind.continuing_prefix is not None:
        p = kind.continuing_prefix
        return token[len(p):].encode("utf-8") if token.startswith(p) else b" " + token.encode("utf-8")
    return token.encode("utf-8")


def canonical_vocab(tokenizer) -> list[bytes | None]:
    """Canonical byte form of every token id (``None`` for special tokens and id gaps); computed once per tokenizer."""
    return list(tokenizer_memo(tokenizer, "canonical", lambda: _canonical_vocab(tokenizer)))


def _canonical_vocab(tokenizer) -> list[bytes | None]:
    kind = tokenizer_kind(tokenizer)
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    vocab = backend.get_vocab(with_added_tokens=True)
    specials = special_token_ids(tokenizer)
    out: list[bytes | None] = [None] * (max(vocab.values()) + 1 if vocab else 0)
    for tok, i in vocab.items():
        if i not in specials:
            out[i] = canonical_token(tok, kind)
    return out


def to_model_form(data: bytes, kind: TokenizerKind) -> str | None:
    """The string a tokenizer model of ``kind`` expects for canonical ``data`` (None if not expressible)."""
    if kind.byte_level:
        table = bytes_to_unicode()
        return "".join(table[b] for b in data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if kind.byte_fallback:
            return "".join(f"<0x{b:02X}>" for b in data)
        return None
    if kind.metaspace:
        return text.replace(" ", "▁")
    if kind.continuing_prefix is not None:
        return text[1:] if text.startswith(" ") else kind.continuing_prefix + text
    return text
