"""Tokenizer fertility (tokens per word) and premium (tokens relative to parallel English text)."""

from __future__ import annotations

from xlt.vocab.tokenizer import fertility


def premium(tokenizer, texts: list[str], reference_tokenizer, reference_texts: list[str]) -> float:
    """Tokens ``tokenizer`` needs for ``texts`` divided by the tokens ``reference_tokenizer`` needs for the
    parallel ``reference_texts`` (e.g. the source tokenizer on English): >1 means the language pays more."""
    n = sum(len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"])
    r = sum(len(x) for x in reference_tokenizer(reference_texts, add_special_tokens=False)["input_ids"])
    return n / max(r, 1)


def tokenization_table(tokenizers: dict[str, object], texts: list[str], reference_tokenizer=None,
                       reference_texts: list[str] | None = None) -> dict[str, dict]:
    """Fertility for each named tokenizer on ``texts``, plus premium when parallel reference text is given."""
    out = {}
    for name, tok in tokenizers.items():
        row = fertility(tok, texts)
        if reference_tokenizer is not None and reference_texts:
            row["premium"] = premium(tok, texts, reference_tokenizer, reference_texts)
        out[name] = row
    return out
