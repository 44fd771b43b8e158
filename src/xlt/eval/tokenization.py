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


# -- Petrov et al. (2023): the premium and its companions, on parallel text ----------------------------------------
def corpus_tokens(tokenizer, texts: list[str]) -> int:
    """Tokens of the corpus as Petrov et al. count them: the documents joined with single spaces, tokenised once,
    no special tokens."""
    return len(tokenizer(" ".join(texts), add_special_tokens=False)["input_ids"])


def token_premium(counts: dict[str, int], ref: str = "eng") -> dict[str, float]:
    """Premium of each language relative to ``ref``: its corpus token total over ``ref``'s, on parallel text (a ratio
    of totals, not a mean of per-sentence ratios)."""
    from xlt.errors import XltError

    if ref not in counts:
        raise XltError(f"the premium is relative to {ref}, which has no token count here",
                       f"include {ref} in the languages (or choose another reference)")
    return {lang: n / counts[ref] for lang, n in counts.items()}


def single_token_retention(tokenizer, texts: list[str]) -> float:
    """Share of whitespace-word occurrences that the tokenizer encodes, alone and without special tokens, as one
    token."""
    words = [w for t in texts for w in t.split()]
    if not words:
        return float("nan")
    uniq = sorted(set(words))
    lens = dict(zip(uniq, (len(x) for x in tokenizer(uniq, add_special_tokens=False)["input_ids"])))
    return sum(lens[w] == 1 for w in words) / len(words)


def unk_share(tokenizer, texts: list[str]) -> float:
    """Share of characters that fall in UNK tokens (Petrov et al. mark a language with more than 10 % invalid)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    chars = sum(len(t) for t in texts)
    if unk is None or not chars:
        return 0.0
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    lost = sum(e - s for ids, offs in zip(enc["input_ids"], enc["offset_mapping"]) for i, (s, e) in zip(ids, offs)
               if i == unk)
    return lost / chars
