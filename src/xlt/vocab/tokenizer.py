"""Train a target-language tokenizer of the same family as the source's, keeping its special tokens.

Reserved placeholders (Gemma's ``<unused0>`` … ``<unused6241>``, BERT's ``[unused0]``, Llama-3's
``<|reserved_special_token_0|>``) are not carried over: they have no meaning, and Gemma's 6,242 of them would take
most of an 8,000-token target vocabulary; nor are added tokens that are not special (Gemma's HTML tags and runs of
newlines and tabs): the target learns what its text needs. A source with SentencePiece-style byte fallback (``<0x00>`` … ``<0xFF>``
pieces, as in Gemma and Llama-2) gives a target with the 256 byte pieces too, counted within ``vocab_size`` as
SentencePiece's ``byte_fallback`` counts them, so characters outside the training text become bytes, not ``<unk>``.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Iterable

from xlt.errors import XltError
from xlt.vocab.canon import backend_json, special_token_ids, tokenizer_kind

#: special tokens that only reserve an id (dropped from trained target tokenizers)
PLACEHOLDER = re.compile(r"<unused\d+>|\[unused\d+\]|<\|reserved_special_token_\d+\|>")
BYTE_PIECES = tuple(f"<0x{b:02X}>" for b in range(256))


def carried_special_tokens(source_tokenizer) -> list[str]:
    """The source's special tokens a trained target tokenizer keeps (all but reserved placeholders), in id order."""
    added = getattr(source_tokenizer, "backend_tokenizer", source_tokenizer).get_added_tokens_decoder()
    return [added[i].content for i in sorted(special_token_ids(source_tokenizer))
            if not PLACEHOLDER.fullmatch(added[i].content)]


def min_vocab_size(source_tokenizer) -> int:
    """The smallest sensible vocabulary: the carried special tokens plus the initial alphabet (256 for byte-level),
    plus the 256 byte pieces of a byte-fallback tokenizer."""
    kind = tokenizer_kind(source_tokenizer)
    return (len(carried_special_tokens(source_tokenizer)) + (256 if kind.byte_level else 1)
            + (256 if kind.byte_fallback else 0))


def train_tokenizer(source_tokenizer, texts: Iterable[str], vocab_size: int, show_progress: bool = False):
    """Train a tokenizer on ``texts`` with the source's model type, normalisation, pre-tokenisation,
    decoder and special tokens (byte-level BPE for SmolLM2, Unigram for SentencePiece sources, SentencePiece BPE
    with byte fallback for Gemma, …)."""
    if not getattr(source_tokenizer, "is_fast", False) or not hasattr(source_tokenizer, "train_new_from_iterator"):
        raise XltError("the source tokenizer is not a fast (tokenizers-library) tokenizer",
                       "convert it with AutoTokenizer.from_pretrained(..., use_fast=True) and save it again")
    n_special = len(carried_special_tokens(source_tokenizer))
    if vocab_size <= n_special:
        raise XltError(f"vocabulary size {vocab_size} is smaller than the {n_special} special tokens carried over from the source",
                       f"use --vocab-size of at least {min_vocab_size(source_tokenizer)}")
    need = min_vocab_size(source_tokenizer)
    kind = tokenizer_kind(source_tokenizer)
    if vocab_size < need:
        alphabet = "initial alphabet and the 256 byte-fallback pieces" if kind.byte_fallback else "initial alphabet"
        raise XltError(f"vocabulary size {vocab_size} cannot hold the {n_special} special tokens and the {alphabet} "
                       f"({need} in all)", f"use --vocab-size of at least {need}")
    texts = list(texts)
    if not any(t.strip() for t in texts):
        raise XltError("no text to train the tokenizer on (empty or whitespace-only corpus)", "give a corpus with text")
    template = _template(source_tokenizer)
    budget = vocab_size - (256 if kind.byte_fallback else 0)
    extra = {}
    if kind.byte_fallback and kind.model == "BPE":  # characters beyond the budget fall back to bytes, as in SentencePiece
        extra["limit_alphabet"] = budget - n_special
    tok = template.train_new_from_iterator(texts, vocab_size=budget, show_progress=show_progress, **extra)
    _finish(tok, backend_json(source_tokenizer)["pre_tokenizer"], kind.byte_fallback)
    return tok


#: training pieces of SentencePiece BPE (split_by_whitespace, split_by_unicode_script, split_digits, roughly): a
#: word of letters (joiners included), one ASCII digit, or a run of other characters, each with the "▁" before it;
#: other "▁" alone. Gemma-3's vocabulary has no token that mixes letters with punctuation or ASCII digits.
_PIECES = (r"▁?[0-9]|▁?(?:(?![0-9])[\p{L}\p{M}\p{N}\x{200C}\x{200D}])+|▁?[^\p{L}\p{M}\p{N}\x{200C}\x{200D}▁]+"
           r"|▁+(?=▁)|▁+")
_WORD_SPLIT = {"type": "Split", "pattern": {"Regex": _PIECES}, "behavior": "Isolated", "invert": False}


def _splits_words(backend) -> bool:
    if backend.pre_tokenizer is None:
        return False
    text = backend.normalizer.normalize_str("a b") if backend.normalizer is not None else "a b"
    return len(backend.pre_tokenizer.pre_tokenize_str(text)) > 1


def _template(tokenizer):
    """A shallow copy of ``tokenizer`` to train from: its special tokens without the reserved placeholders, and no
    other added tokens (Gemma's HTML tags and whitespace runs; transformers would make them special tokens of a
    Unigram target) nor the source's ``added_tokens_decoder`` in ``init_kwargs`` (the wrapper would append all of
    them after the trained vocabulary). A SentencePiece BPE pipeline that does not split words (Gemma's and
    Llama-2's: the whole text is one BPE sequence) trains on SentencePiece's pieces (:data:`_PIECES`), so merges stay
    within words and scripts as in SentencePiece; :func:`_finish` puts the source's pre-tokenizer back (encoding
    gives the same tokens either way: no merge joins two pieces)."""
    from tokenizers import Tokenizer

    data = backend_json(tokenizer)
    kind = tokenizer_kind(tokenizer)
    keep = [a for a in data["added_tokens"] if a["special"] and not PLACEHOLDER.fullmatch(a["content"])]
    split = kind.metaspace and kind.model == "BPE" and not _splits_words(tokenizer.backend_tokenizer)
    template = copy.copy(tokenizer)
    if len(keep) < len(data["added_tokens"]) or split:
        template._tokenizer = Tokenizer.from_str(json.dumps(
            {**data, "added_tokens": keep, **({"pre_tokenizer": _WORD_SPLIT} if split else {})}))
    kwargs = {k: v for k, v in tokenizer.init_kwargs.items() if k != "added_tokens_decoder"}
    if isinstance(kwargs.get("extra_special_tokens"), list):
        kwargs["extra_special_tokens"] = [t for t in kwargs["extra_special_tokens"] if not PLACEHOLDER.fullmatch(str(t))]
    template.init_kwargs = kwargs
    extra = getattr(tokenizer, "extra_special_tokens", None)
    if extra:  # train_new_from_iterator adds these back otherwise
        template.extra_special_tokens = [t for t in extra if not PLACEHOLDER.fullmatch(str(t))]
    return template


def _finish(tokenizer, pre_tokenizer: dict | None, byte_fallback: bool) -> None:
    """Give the trained tokenizer the source's pre-tokenizer and, for byte fallback, the 256 ``<0xNN>`` pieces in
    its model vocabulary after its own tokens (the trainers do not make them; without them byte fallback has
    nothing to fall back to)."""
    from tokenizers import Tokenizer

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    changed = data["pre_tokenizer"] != pre_tokenizer
    data["pre_tokenizer"] = pre_tokenizer
    model = data["model"]
    if byte_fallback and model["type"] == "BPE":
        vocab = model["vocab"]
        n = max([*vocab.values(), *(a["id"] for a in data["added_tokens"])], default=-1) + 1
        for piece in BYTE_PIECES:
            if piece not in vocab:
                vocab[piece], n, changed = n, n + 1, True
    elif byte_fallback and model["type"] == "Unigram":  # pieces used only for fallback: the lowest score
        have = {p for p, _ in model["vocab"]}
        low = min((score for _, score in model["vocab"]), default=0.0)
        new = [[piece, low] for piece in BYTE_PIECES if piece not in have]
        model["vocab"] += new
        changed = changed or bool(new)
    if changed:
        tokenizer._tokenizer = Tokenizer.from_str(json.dumps(data))


def fertility(tokenizer, texts: list[str]) -> dict:
    """Tokens per whitespace word and per UTF-8 byte over ``texts`` (no special tokens added)."""
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
    tokens = sum(len(x) for x in enc)
    words = sum(len(t.split()) for t in texts)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    return {"tokens": tokens, "words": words, "bytes": nbytes,
            "tokens_per_word": tokens / max(words, 1), "tokens_per_byte": tokens / max(nbytes, 1)}
