"""Cloned languages (Schäfer, Ravfogel, Hofmann, Pimentel, Schlag 2024, "The Role of Language Imbalance in
Cross-lingual Generalisation", arXiv 2404.07982): one corpus rendered in K languages that differ only in their token
ids, so that how much a model transfers between them can be measured with the content held fixed.

The vocabulary map (:func:`clone_map`) is a ``K × V`` id table: row 0 is the identity (the original language);
row ``c`` (``1 ≤ c < K``) gives each *cloned* id its own new id ``V + (c−1)·n + r`` (``r`` = the id's rank among
the ``n`` cloned ids) and leaves every other id shared ("anchor" tokens). Special tokens (padding, BOS/EOS, every
added special token) are never cloned. Of the remaining ids, ``n = ⌊frac_clone·(V − specials)⌋`` are cloned: the
``n`` whose 64-bit SplitMix64 hash of ``(seed, id)`` is smallest, which depends on nothing but the seed (the same
on every machine and NumPy version). The cloned vocabulary has ``V + (K−1)·n`` ids; the paper's code instead offsets
copy ``c`` by ``c·V`` (``K·V`` ids, some unused when ``frac_clone < 1``) — the copies are disjoint either way.
:func:`clone_ids` renders ids in a copy, :func:`unclone` maps any copy back to the original ids.

Per-sequence sampling, as the paper's ``ClonedLanguageDataset``: a sequence is rendered in a clone with probability
``p_clone`` (the clone uniform among the ``K−1``), so the expected shares are ``1−p`` for the original and
``p/(K−1)`` for each clone. The draw comes from the record's generator ``ctx.rng(key)`` (two uniforms: clone or not,
which clone). ``schedule="0.1_0.9"`` is the paper's ``LanguageScheduler``: the data is split into equal stages
(here by position in the token budget, or by document index without one) and stage ``s`` uses the ``s``-th value as
``p_clone``.

Sequences: each document of ``lang``/``split`` is tokenized without special tokens; without ``seq_len`` a document
is one sequence (key = the document key); with ``seq_len`` the documents, each followed by EOS (when the tokenizer
has one), are packed into one stream cut every ``seq_len`` tokens (key = ``FIRSTKEY@OFFSET``, the first document of
the sequence and where in it the sequence starts; the last sequence may be shorter). With ``token_budget`` the output
stops at exactly that many tokens (the last sequence is cut), so runs with different ``p_clone`` see the same tokens.

Records: ``key``, ``langs`` ``[lang]``, ``origin`` ``synthetic``, ``clone`` (0 = original, ``1..K−1``) and
``input_ids``. The manifest's ``stats`` hold the map's parameters (``vocab_size``, ``n_cloned``,
``vocab_size_cloned``, ``special_ids``, ``seed``) and its SHA-256, so ``clone_map`` recomputes it exactly, and the
tokens and sequences written per language.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence

import numpy as np

from xlt.data.registry import register_builder
from xlt.errors import XltError
from xlt.options import density, option, positive, unit_interval

__all__ = ["CloneOptions", "cloned_ids", "clone_map", "clone_ids", "unclone", "special_ids", "tokenizer_clone_map",
           "parse_schedule", "schedule_p", "sample_copies"]

Split = Literal["train", "dev", "test", "all"]


def _at_least_two(v: int) -> str | None:
    return None if v >= 2 else f"must be ≥ 2 (the original plus at least one clone), got {v}"


@dataclass
class CloneOptions:
    corpus: str = option("bible", "corpus spec: bible, jsonl:PATH, text:PATH, hf:PATH")
    lang: str = option("eng", "language of the documents to clone")
    split: Split = option("train", "corpus split to read (all = every document)")
    tokenizer: str = option("smollm2", "packaged model name (smollm2, gemma3) or a local HF tokenizer folder")
    k: int = option(2, "number of languages, the original included", check=_at_least_two)
    frac_clone: float = option(1.0, "fraction of the non-special vocabulary that is cloned (the rest is shared)",
                               check=density)
    p_clone: float = option(0.5, "probability that a sequence is rendered in a clone (uniform among the K-1)",
                            check=unit_interval)
    schedule: str | None = option(None, "p_clone per equal stage of the data, e.g. 0.1_0.9 (overrides p_clone)")
    token_budget: int | None = option(None, "stop after exactly this many tokens", check=positive)
    seq_len: int | None = option(None, "pack documents (EOS-separated) into sequences of this many tokens",
                                 check=positive)


# -- the vocabulary map --------------------------------------------------------------------------------------
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 values (wrapping arithmetic): a fixed, well-mixed 64-bit hash."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return z ^ (z >> np.uint64(31))


def cloned_ids(vocab_size: int, frac_clone: float, seed: int, special_ids: Iterable[int] = ()) -> np.ndarray:
    """The ids that get a copy per clone language, ascending: ``⌊frac_clone·(non-special ids)⌋`` of them, those
    with the smallest SplitMix64 hash of ``(seed, id)``."""
    if not 0 <= frac_clone <= 1:
        raise ValueError(f"frac_clone must be in [0, 1], got {frac_clone}")
    special = np.asarray(sorted(set(int(i) for i in special_ids)), dtype=np.int64)
    if len(special) and (special.min() < 0 or special.max() >= vocab_size):
        raise ValueError(f"special ids must lie in [0, {vocab_size}), got {special.tolist()}")
    candidates = np.setdiff1d(np.arange(vocab_size, dtype=np.int64), special)
    n = int(np.floor(frac_clone * len(candidates) + 1e-9))
    salt = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    rank = np.argsort(_splitmix64(candidates.astype(np.uint64) ^ salt), kind="stable")
    return np.sort(candidates[rank[:n]])


def clone_map(vocab_size: int, k: int, frac_clone: float, seed: int, special_ids: Iterable[int] = ()) -> np.ndarray:
    """The ``k × vocab_size`` id table: ``table[c, i]`` is id ``i`` in language ``c`` (row 0 = the original).

    Cloned ids get ``vocab_size + (c−1)·n + rank`` in clone ``c``; special and non-cloned ids map to themselves."""
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    ids = cloned_ids(vocab_size, frac_clone, seed, special_ids)
    n = len(ids)
    table = np.tile(np.arange(vocab_size, dtype=np.int64), (k, 1))
    table[1:, ids] = vocab_size + np.arange(k - 1, dtype=np.int64)[:, None] * n + np.arange(n, dtype=np.int64)
    return table


def clone_ids(ids: Sequence[int] | np.ndarray, copy: int | np.ndarray, table: np.ndarray) -> np.ndarray:
    """``ids`` (original ids) rendered in language ``copy`` (an int, or one per id / per row of a 2-D array)."""
    return table[np.asarray(copy), np.asarray(ids, dtype=np.int64)]


def unclone(ids: Sequence[int] | np.ndarray, table: np.ndarray) -> np.ndarray:
    """Ids of any language mapped back to the original ids."""
    inverse = np.empty(int(table.max()) + 1, dtype=np.int64)
    inverse[table] = np.arange(table.shape[1], dtype=np.int64)[None, :]
    return inverse[np.asarray(ids, dtype=np.int64)]


def special_ids(tokenizer: Any) -> list[int]:
    """Ids that are never cloned: the tokenizer's special tokens (padding included) and added special tokens."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    if getattr(tokenizer, "pad_token_id", None) is not None:
        ids.add(tokenizer.pad_token_id)
    for i, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(tok, "special", False):
            ids.add(int(i))
    return sorted(i for i in ids if i is not None and 0 <= i < len(tokenizer))


def tokenizer_clone_map(tokenizer: Any, k: int, frac_clone: float, seed: int) -> np.ndarray:
    """:func:`clone_map` for a tokenizer: ``V = len(tokenizer)``, its special ids never cloned."""
    return clone_map(len(tokenizer), k, frac_clone, seed, special_ids(tokenizer))


# -- the schedule ----------------------------------------------------------------------------------------------
def parse_schedule(text: str) -> list[float]:
    """``"0.1_0.9"`` -> ``[0.1, 0.9]`` (each value a probability)."""
    try:
        values = [float(x) for x in text.split("_")]
    except ValueError:
        values = []
    if not values or not all(0 <= v <= 1 for v in values):
        raise XltError(f"schedule {text!r} is not probabilities joined by '_'",
                       "write e.g. --schedule 0.1_0.9 (p_clone 0.1 in the first half of the data, 0.9 in the second)")
    return values


def sample_copies(u, v, p, k: int) -> np.ndarray:
    """The paper's per-sequence draw from two uniforms: the original (0) when ``u ≥ p``, else clone
    ``1 + ⌊v·(k−1)⌋`` (uniform among the ``k − 1``); element-wise over arrays."""
    u, v, p = np.asarray(u, dtype=float), np.asarray(v, dtype=float), np.asarray(p, dtype=float)
    clone = 1 + np.minimum((v * (k - 1)).astype(np.int64), k - 2)
    return np.where(u < p, clone, 0)


def schedule_p(values: Sequence[float], progress: float) -> float:
    """``p_clone`` at ``progress`` ∈ [0, 1) of the data: the value of the stage it falls in (equal stages)."""
    return float(values[min(int(progress * len(values)), len(values) - 1)])


# -- the builder -------------------------------------------------------------------------------------------------
def _load_tokenizer(spec: str):
    from xlt.models.loading import load_tokenizer, resolve_source

    folder = resolve_source(spec)
    return load_tokenizer(folder), folder


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                    "merges.txt", "tokenizer.model", "added_tokens.json")


def _sequences(ctx, docs: Iterable, tok, seq_len: int | None) -> Iterator[tuple[str, list[int], int]]:
    """``(key, token ids, index of its first document)`` per sequence, reading documents through ``ctx.chunks``."""
    eos = getattr(tok, "eos_token_id", None)
    buf: list[int] = []
    start: tuple[str, int, int] | None = None  # (key, offset in it, document index) where ``buf`` starts
    n_doc = 0
    for chunk in ctx.chunks(docs):
        encoded = tok([d.text for d in chunk], add_special_tokens=False)["input_ids"]
        for doc, ids in zip(chunk, encoded):
            index, n_doc = n_doc, n_doc + 1
            if not ctx.keep("has_tokens", len(ids) > 0):
                continue
            if seq_len is None:
                yield doc.key, list(ids), index
                continue
            ids = list(ids) + ([eos] if eos is not None else [])
            pos = 0
            while pos < len(ids):
                if start is None:
                    start = (doc.key, pos, index)
                take = min(seq_len - len(buf), len(ids) - pos)
                buf.extend(ids[pos:pos + take])
                pos += take
                if len(buf) == seq_len:
                    yield f"{start[0]}@{start[1]}", buf, start[2]
                    buf, start = [], None
    if buf and start is not None:
        yield f"{start[0]}@{start[1]}", buf, start[2]


@register_builder("clone")
class Clone:
    description = "cloned languages: token ids offset into K disjoint vocabulary copies, sampled per sequence"
    options = CloneOptions
    seeded = True

    def example(self, workdir: Path) -> dict:
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        from xlt.data.toy import WORDS, toy_parallel

        workdir = Path(workdir)
        corpus = workdir / "clone_toy.jsonl"
        toy_parallel(corpus, langs=("eng",), n=40)
        folder = workdir / "clone_tokenizer"
        vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<eos>", *WORDS])}
        core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                eos_token="<eos>").save_pretrained(folder)
        return {"corpus": f"jsonl:{corpus}", "lang": "eng", "split": "all", "tokenizer": str(folder), "k": 3,
                "frac_clone": 0.5, "p_clone": 0.5, "seq_len": 4}

    def records(self, ctx, o: CloneOptions) -> Iterator[dict]:
        from xlt.corpora import open_corpus

        corpus = open_corpus(o.corpus)
        lang = corpus.language(o.lang)
        split = None if o.split == "all" else o.split
        stages = parse_schedule(o.schedule) if o.schedule else None
        tok, folder = _load_tokenizer(o.tokenizer)
        for name in _TOKENIZER_FILES:
            if (Path(folder) / name).is_file():
                ctx.add_input(f"tokenizer/{name}", Path(folder) / name)
        table = tokenizer_clone_map(tok, o.k, o.frac_clone, ctx.seed)
        specials = special_ids(tok)
        n_cloned = int((table[1] != table[0]).sum()) if o.k > 1 else 0
        if n_cloned == 0:
            raise XltError(f"frac_clone {o.frac_clone} clones none of the {len(tok) - len(specials)} non-special ids",
                           "raise --frac-clone")
        # without a token budget the stages are fractions of the documents: count them first
        n_docs = sum(1 for _ in corpus.iter_documents(lang, split)) if stages and not o.token_budget else None
        tokens = np.zeros(o.k, dtype=np.int64)
        seqs = np.zeros(o.k, dtype=np.int64)
        written = 0
        for key, ids, doc_index in _sequences(ctx, corpus.iter_documents(lang, split), tok, o.seq_len):
            if o.token_budget is not None:
                ids = ids[:o.token_budget - written]
            p = o.p_clone
            if stages:
                progress = written / o.token_budget if o.token_budget else doc_index / max(n_docs, 1)
                p = schedule_p(stages, progress)
            u, v = ctx.rng(key).random(2)
            copy = int(sample_copies(u, v, p, o.k))
            written += len(ids)
            tokens[copy] += len(ids)
            seqs[copy] += 1
            yield {"key": key, "langs": [lang.code], "origin": "synthetic", "clone": copy,
                   "input_ids": clone_ids(ids, copy, table).tolist()}
            if o.token_budget is not None and written >= o.token_budget:
                break
        ctx.extra.update({
            "vocab_size": len(tok), "k": o.k, "frac_clone": o.frac_clone, "seed": ctx.seed, "n_cloned": n_cloned,
            "vocab_size_cloned": int(table.max()) + 1, "special_ids": specials,
            "map": "xlt.data.builders.clone.clone_map(vocab_size, k, frac_clone, seed, special_ids)",
            "map_sha256": hashlib.sha256(np.ascontiguousarray(table, dtype="<i8").tobytes()).hexdigest(),
            "tokens": int(written), "tokens_per_clone": tokens.tolist(), "sequences_per_clone": seqs.tolist(),
            "budget_met": None if o.token_budget is None else bool(written >= o.token_budget),
        })
