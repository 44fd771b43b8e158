"""Train a target-language tokenizer of the same family as the source's, keeping its special tokens."""

from __future__ import annotations

from typing import Iterable

from xlt.errors import XltError
from xlt.vocab.canon import special_token_ids, tokenizer_kind


def min_vocab_size(source_tokenizer) -> int:
    """The smallest sensible vocabulary: the special tokens plus the initial alphabet (256 for byte-level)."""
    kind = tokenizer_kind(source_tokenizer)
    return len(special_token_ids(source_tokenizer)) + (256 if kind.byte_level else 1)


def train_tokenizer(source_tokenizer, texts: Iterable[str], vocab_size: int, show_progress: bool = False):
    """Train a tokenizer on ``texts`` with the source's model type, normalisation, pre-tokenisation,
    decoder and special tokens (byte-level BPE for SmolLM2, Unigram for SentencePiece sources, …)."""
    if not getattr(source_tokenizer, "is_fast", False) or not hasattr(source_tokenizer, "train_new_from_iterator"):
        raise XltError("the source tokenizer is not a fast (tokenizers-library) tokenizer",
                       "convert it with AutoTokenizer.from_pretrained(..., use_fast=True) and save it again")
    n_special = len(special_token_ids(source_tokenizer))
    if vocab_size <= n_special:
        raise XltError(f"vocabulary size {vocab_size} is smaller than the {n_special} special tokens carried over from the source",
                       f"use --vocab-size of at least {min_vocab_size(source_tokenizer)}")
    need = min_vocab_size(source_tokenizer)
    if vocab_size < need:
        raise XltError(f"vocabulary size {vocab_size} cannot hold the {n_special} special tokens and the initial alphabet ({need} in all)",
                       f"use --vocab-size of at least {need}")
    texts = list(texts)
    if not any(t.strip() for t in texts):
        raise XltError("no text to train the tokenizer on (empty or whitespace-only corpus)", "give a corpus with text")
    tok = source_tokenizer.train_new_from_iterator(texts, vocab_size=vocab_size, show_progress=show_progress)
    return tok


def fertility(tokenizer, texts: list[str]) -> dict:
    """Tokens per whitespace word and per UTF-8 byte over ``texts`` (no special tokens added)."""
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
    tokens = sum(len(x) for x in enc)
    words = sum(len(t.split()) for t in texts)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    return {"tokens": tokens, "words": words, "bytes": nbytes,
            "tokens_per_word": tokens / max(words, 1), "tokens_per_byte": tokens / max(nbytes, 1)}
