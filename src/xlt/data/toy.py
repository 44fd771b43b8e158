"""A toy verse-aligned corpus for tests and examples: every language is a word-for-word cipher of the same
English sentences, so the true alignment and dictionary are known.

``toy_parallel(path, langs, n)`` writes a JSONL corpus (``{"id", "lang", "text"}``, ids shared across languages,
open it with ``jsonl:PATH``) and returns the per-language dictionaries ``{lang: {english_word: word}}``.
The sentences are drawn from a small vocabulary with a fixed seed; word order is the same in every language.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WORDS = ("the", "king", "went", "to", "city", "and", "he", "saw", "a", "great", "house", "of", "god", "people",
         "said", "unto", "them", "land", "water", "day", "night", "son", "father", "word", "light")
#: per language, a syllable inventory the cipher words are made from (so scripts differ where it matters)
_SYLLABLES = {
    "swh": ("ka", "mu", "ta", "si", "na", "wa", "ji", "ku", "li", "mba"),
    "fra": ("le", "ron", "mai", "su", "par", "ville", "de", "nu", "ter", "eau"),
    "deu": ("der", "kö", "stadt", "ging", "und", "haus", "gro", "ße", "tag", "licht"),
    "rus": ("ко", "ро", "ль", "гор", "од", "и", "он", "ви", "дел", "дом"),
    "hin": ("रा", "जा", "न", "गर", "औ", "र", "वह", "दे", "खा", "घर"),
}


def cipher_word(word: str, lang: str, index: int) -> str:
    """The toy translation of ``word`` (the ``index``-th vocabulary word) in ``lang``: two syllables, unique."""
    syl = _SYLLABLES[lang]
    return syl[index % len(syl)] + syl[(index // len(syl) + 3 * index + 1) % len(syl)] + str(index // 50 or "")


def toy_dictionary(lang: str) -> dict[str, str]:
    if lang == "eng":
        return {w: w for w in WORDS}
    d = {w: cipher_word(w, lang, i) for i, w in enumerate(WORDS)}
    assert len(set(d.values())) == len(d), "cipher words must be unique"
    return d


def toy_sentences(n: int, seed: int = 0, min_len: int = 4, max_len: int = 12) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(min_len, max_len + 1)))) for _ in range(n)]


def toy_parallel(path: str | Path, langs: tuple[str, ...] = ("eng", "swh", "fra"), n: int = 60,
                 seed: int = 0) -> dict[str, dict[str, str]]:
    """Write the toy corpus to ``path`` (JSONL) and return its dictionaries (English word -> word, per language)."""
    dicts = {l: toy_dictionary(l) for l in langs}
    with open(path, "w", encoding="utf-8") as fh:
        for i, sent in enumerate(toy_sentences(n, seed)):
            for l in langs:
                text = " ".join(dicts[l][w] for w in sent.split())
                fh.write(json.dumps({"id": f"1:{i // 20 + 1}:{i % 20 + 1}", "lang": l, "text": text},
                                    ensure_ascii=False) + "\n")
    return dicts
