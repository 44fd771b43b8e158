"""Token alignment for trans-tokenization: IBM Model 1 over token-id sequences, pure numpy/scipy.

:func:`ibm1_align` learns t(target | source) by EM (with a NULL source token) over pairs of token-id
sequences, then counts Viterbi links: ``C[t, s]`` = how often target token ``t`` was aligned to source
token ``s``. :func:`rows_from_counts` turns those counts into mixing rows (count / Σcount, pairs below
``min_count`` dropped). :func:`parse_translation_table` reads a ``fast_align``-style table instead.

Layout: the translation table holds only co-occurring (target, source) pairs, sorted by the key
``target * (n_source + 1) + source`` (source id ``n_source`` is NULL). Every sentence pair contributes
one *group* per target position: (that target token, each source token, NULL), NULL last. Sentence
pairs are processed in chunks of at most ``chunk_entries`` entries; a chunk stores a local table of its
distinct pairs (int32 indices into the global table) and one int32 local index per entry, so an EM
iteration is two gathers, a ``reduceat`` normalisation per group and a ``bincount``; no per-token
Python loop anywhere. Memory: about 4 bytes per entry (Σ target length × (source length + 1)) plus
~30 bytes per distinct co-occurring pair: ~0.5 GB peak for 30k pairs of 30 × 30 tokens over 30k-token
vocabularies (9.6M distinct pairs).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

__all__ = ["ibm1_align", "ibm1_table", "IBM1Table", "rows_from_counts", "parse_translation_table", "fast_align_links"]

#: default cap on (target × source) entries processed at once (bounds the temporaries: ~20 bytes each)
CHUNK_ENTRIES = 2_000_000


def _flatten(seqs: Sequence[Sequence[int]], n_vocab: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate id sequences into one int64 array plus per-sequence lengths; check the id range."""
    lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    total = int(lens.sum())
    flat = np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=total)
    if total and (flat.min() < 0 or flat.max() >= n_vocab):
        bad = flat[(flat < 0) | (flat >= n_vocab)][0]
        raise ValueError(f"{side} token id {bad} is outside the vocabulary of size {n_vocab}")
    return flat, lens


def _offsets(lens: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=out[1:])
    return out


def _chunk_bounds(entries: np.ndarray, cap: int) -> list[tuple[int, int]]:
    """Split pair indices [0, n) into runs whose entry totals stay under ``cap`` (a single pair may exceed it)."""
    n = len(entries)
    cum = _offsets(entries)
    bounds = []
    a = 0
    while a < n:
        b = int(np.searchsorted(cum, cum[a] + cap, side="right")) - 1
        b = min(max(b, a + 1), n)
        bounds.append((a, b))
        a = b
    return bounds


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values of ``x`` (sorted in place; numpy's hash-based ``unique`` is much slower here)."""
    x.sort()
    keep = np.ones(len(x), dtype=bool)
    keep[1:] = x[1:] != x[:-1]
    return x[keep]


def _unique_inverse(keys: np.ndarray, key_bound: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct keys, int32 index of each key among them).

    The permutation comes from sorting ``key << b | position`` when that fits in 63 bits (a plain
    vectorised sort, several times faster than ``argsort``), else from ``argsort``. Distinct keys
    come back as uint32 when every key fits, to halve the memory they hold until the table is built.
    """
    n = len(keys)
    pos_bits = max(int(n - 1).bit_length(), 1)
    if int(key_bound - 1).bit_length() + pos_bits <= 63:
        keys <<= pos_bits
        keys |= np.arange(n, dtype=np.int64)
        keys.sort()
        sk, order = keys >> pos_bits, keys & ((1 << pos_bits) - 1)
    else:
        order = np.argsort(keys)
        sk = keys[order]
    new = np.ones(n, dtype=bool)
    new[1:] = sk[1:] != sk[:-1]
    inv = np.empty(n, dtype=np.int32)
    inv[order] = np.cumsum(new, dtype=np.int32) - 1
    return sk[new].astype(np.uint32 if key_bound <= 2**32 else np.int64), inv


@dataclass
class _Chunk:
    """A run of sentence pairs: entries index a chunk-local table ``pos`` (int32 indices into the global one)."""

    pos: np.ndarray  # global table index of each distinct pair in this chunk
    inv: np.ndarray  # local index per entry; groups (one per target position) back to back
    starts: np.ndarray  # first entry of each group
    lens: np.ndarray  # entries per group (source length + 1)


@dataclass
class IBM1Table:
    """The learned translation table t(target | source) over co-occurring pairs (source ``n_source`` = NULL)."""

    target: np.ndarray  # target id per entry
    source: np.ndarray  # source id per entry (n_source for NULL)
    prob: np.ndarray  # t(target | source) per entry
    n_source: int
    n_target: int
    links: sp.csr_matrix  # Viterbi link counts, n_target × n_source (NULL links dropped)
    sentence_pairs: int  # pairs with at least one token on each side

    def as_matrix(self, include_null: bool = False) -> sp.csr_matrix:
        """t as a sparse (n_target × n_source[+1]) matrix."""
        keep = slice(None) if include_null else self.source < self.n_source
        shape = (self.n_target, self.n_source + (1 if include_null else 0))
        return sp.csr_matrix((self.prob[keep], (self.target[keep], self.source[keep])), shape=shape)


class _Corpus:
    """Sentence pairs flattened once; builds per-chunk entry keys without per-token Python loops."""

    def __init__(self, src_seqs, tgt_seqs, n_src: int, n_tgt: int):
        if len(src_seqs) != len(tgt_seqs):
            raise ValueError(f"{len(src_seqs)} source sequences but {len(tgt_seqs)} target sequences")
        src, slen = _flatten(src_seqs, n_src, "source")
        tgt, tlen = _flatten(tgt_seqs, n_tgt, "target")
        keep = (slen > 0) & (tlen > 0)  # a pair with an empty side carries no alignment evidence
        if not keep.all():
            src = src[np.repeat(keep, slen)]
            tgt = tgt[np.repeat(keep, tlen)]
            slen, tlen = slen[keep], tlen[keep]
        self.null = n_src
        self.n_pairs = len(slen)
        self.s1 = slen + 1  # source positions incl. NULL
        self.tlen = tlen
        # source tokens with a NULL appended after each sentence
        src_null = np.full(int(self.s1.sum()), n_src, dtype=np.int64)
        src_null[np.arange(len(src)) + np.repeat(np.arange(self.n_pairs), slen)] = src
        self.src = src_null
        self.tgt = tgt
        self.soff = _offsets(self.s1)
        self.toff = _offsets(tlen)
        self.entries = self.s1 * tlen

    def keys(self, a: int, b: int) -> np.ndarray:
        """Table keys of every entry of pairs [a, b): groups of (target position; each source position, NULL)."""
        s1, n = self.s1[a:b], self.entries[a:b]
        total = int(n.sum())
        pair = np.repeat(np.arange(b - a), n)
        k = np.arange(total, dtype=np.int64) - np.repeat(_offsets(n)[:-1], n)
        width = s1[pair]
        j, i = np.divmod(k, width)
        del k, width
        keys = self.tgt[self.toff[a:b][pair] + j] * (self.null + 1)
        keys += self.src[self.soff[a:b][pair] + i]
        return keys


def ibm1_table(src_seqs: Sequence[Sequence[int]], tgt_seqs: Sequence[Sequence[int]], n_src: int, n_tgt: int,
               iterations: int = 5, chunk_entries: int = CHUNK_ENTRIES) -> IBM1Table:
    """Train IBM Model 1 (EM, uniform start, NULL source token) and return the table and Viterbi links.

    Each target token is aligned to the source token (or NULL) with the highest t(target | source) in
    its sentence pair; ties go to the earliest source position, NULL last.
    """
    if iterations < 0:
        raise ValueError("iterations must be >= 0")
    corpus = _Corpus(src_seqs, tgt_seqs, n_src, n_tgt)
    bounds = _chunk_bounds(corpus.entries, chunk_entries)
    key_bound = n_tgt * (n_src + 1)
    # per chunk: its distinct (target, source) keys and each entry's index among them
    local = [_unique_inverse(corpus.keys(a, b), key_bound) for a, b in bounds]
    # the table: every co-occurring pair once, sorted by key (so by target id, then source id)
    table_keys = _sorted_unique(np.concatenate([u for u, _ in local])) if local else np.zeros(0, dtype=np.int64)
    nnz = len(table_keys)
    if nnz >= 2**31:
        raise ValueError(f"{nnz} co-occurring token pairs: too many for int32 indices; align fewer sentence pairs")
    chunks = []
    for n, (a, b) in enumerate(bounds):
        (u, inv), local[n] = local[n], None
        lens = np.repeat(corpus.s1[a:b], corpus.tlen[a:b])
        chunks.append(_Chunk(np.searchsorted(table_keys, u).astype(np.int32), inv, _offsets(lens)[:-1], lens))
    n_pairs = corpus.n_pairs
    del local, corpus
    tab_tgt, tab_src = (x.astype(np.int32) for x in np.divmod(table_keys.astype(np.int64), n_src + 1))
    del table_keys

    t = np.ones(nnz)  # uniform start: every co-occurring pair equally likely
    counts = np.empty(nnz)
    for _ in range(iterations):
        counts[:] = 0
        for c in chunks:  # E-step: posterior over the source positions (and NULL) of each target position
            p = t[c.pos][c.inv]
            denom = np.add.reduceat(p, c.starts)
            denom[denom == 0] = 1.0
            p /= np.repeat(denom, c.lens)
            counts[c.pos] += np.bincount(c.inv, weights=p, minlength=len(c.pos))
        total = np.bincount(tab_src, weights=counts, minlength=n_src + 1)  # M-step: normalise per source id
        total[total == 0] = 1.0
        np.divide(counts, total[tab_src], out=t)
    del counts

    rows, cols = [], []
    for c in chunks:  # Viterbi: first maximum per group (NULL is last, so it loses ties)
        p = t[c.pos][c.inv]
        is_max = p == np.repeat(np.maximum.reduceat(p, c.starts), c.lens)
        hit = np.flatnonzero(is_max)
        group = np.repeat(np.arange(len(c.starts)), c.lens)[hit]
        first = np.ones(len(hit), dtype=bool)
        first[1:] = group[1:] != group[:-1]
        best = c.pos[c.inv[hit[first]]]
        real = tab_src[best] < n_src
        rows.append(tab_tgt[best[real]])
        cols.append(tab_src[best[real]])
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int32)
    s = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int32)
    links = sp.csr_matrix((np.ones(len(r)), (r, s)), shape=(n_tgt, n_src))
    links.sum_duplicates()
    return IBM1Table(tab_tgt, tab_src, t, n_src, n_tgt, links, n_pairs)


def ibm1_align(src_seqs: Sequence[Sequence[int]], tgt_seqs: Sequence[Sequence[int]], n_src: int, n_tgt: int,
               iterations: int = 5, chunk_entries: int = CHUNK_ENTRIES) -> sp.csr_matrix:
    """Viterbi link counts ``C`` (n_tgt × n_src) of IBM Model 1 trained on the sequence pairs.

    ``C[t, s]`` = how many target tokens with id ``t`` were aligned to a source token with id ``s``
    (links to NULL are not counted). Pairs with an empty side are skipped.
    """
    return ibm1_table(src_seqs, tgt_seqs, n_src, n_tgt, iterations, chunk_entries).links


def fast_align_links(src_seqs: Sequence[Sequence[int]], tgt_seqs: Sequence[Sequence[int]], n_src: int, n_tgt: int,
                     binary: str = "fast_align", args: Sequence[str] = ("-d", "-o", "-v")) -> tuple[sp.csr_matrix, int]:
    """Link counts ``C`` (n_tgt × n_src) from an external ``fast_align`` binary (Dyer et al., 2013).

    Each pair is written as ``s<id> … ||| t<id> …`` (source on the left, so fast_align's ``i-j`` is source
    position i, target position j), ``binary -i FILE`` + ``args`` is run, and every link counts once.
    Pairs with an empty side are not written. Returns (counts, sentence pairs aligned). Raises
    ``FileNotFoundError`` when the binary is missing and ``RuntimeError`` when it fails.
    """
    import os
    import shutil
    import subprocess
    import tempfile

    exe = shutil.which(binary) or (binary if os.path.isfile(binary) and os.access(binary, os.X_OK) else None)
    if exe is None:
        raise FileNotFoundError(binary)
    if len(src_seqs) != len(tgt_seqs):
        raise ValueError(f"{len(src_seqs)} source sequences but {len(tgt_seqs)} target sequences")
    kept = [(s, t) for s, t in zip(src_seqs, tgt_seqs) if len(s) and len(t)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pairs.txt")
        with open(path, "w", encoding="utf-8") as fh:
            for s, t in kept:
                fh.write(" ".join(f"s{i}" for i in s) + " ||| " + " ".join(f"t{i}" for i in t) + "\n")
        proc = subprocess.run([exe, "-i", path, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{binary} exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
    lines = proc.stdout.splitlines()
    if len(lines) != len(kept):
        raise RuntimeError(f"{binary} printed {len(lines)} alignment lines for {len(kept)} sentence pairs")
    rows, cols = [], []
    for (s, t), line in zip(kept, lines):
        for link in line.split():
            i, _, j = link.partition("-")
            i, j = int(i), int(j)
            if not (0 <= i < len(s) and 0 <= j < len(t)):
                raise RuntimeError(f"{binary} printed link {link} outside a pair of {len(s)} and {len(t)} tokens")
            rows.append(t[j])
            cols.append(s[i])
    counts = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_tgt, n_src))
    counts.sum_duplicates()
    return counts, len(kept)


def rows_from_counts(counts: sp.spmatrix, min_count: float = 10) -> tuple[sp.csr_matrix, np.ndarray]:
    """Mixing rows from link counts: entries below ``min_count`` dropped, each row = count / Σcount.

    Returns the row-normalised matrix and a boolean mask of the rows that kept any entry (the other
    rows are empty). Counts {a: 30, b: 10} give the row 0.75·a + 0.25·b.
    """
    c = sp.csr_matrix(counts, dtype=np.float64, copy=True)
    if c.nnz and c.data.min() < 0:
        raise ValueError("alignment counts must be non-negative")
    c.data[c.data < min_count] = 0
    c.eliminate_zeros()
    sums = np.asarray(c.sum(axis=1)).ravel()
    has = sums > 0
    inv = np.zeros_like(sums)
    inv[has] = 1.0 / sums[has]
    return sp.csr_matrix(sp.diags(inv) @ c), has


def parse_translation_table(lines: Iterable[str], source_vocab: dict[str, int], target_vocab: dict[str, int],
                            n_src: int | None = None, n_tgt: int | None = None) -> tuple[sp.csr_matrix, int]:
    """Counts from a ``fast_align``-style table: ``src_token<TAB>tgt_token[<TAB>...]<TAB>count`` per line.

    Tokens are looked up as vocabulary strings (e.g. ``Ġhaus``); ``<eps>`` (NULL) rows and tokens
    missing from either vocabulary are skipped. Returns (counts n_tgt × n_src, rows skipped).
    Raises ``ValueError`` naming the line for a row without a numeric count.
    """
    n_src = max(source_vocab.values()) + 1 if n_src is None else n_src
    n_tgt = max(target_vocab.values()) + 1 if n_tgt is None else n_tgt
    rows, cols, vals = [], [], []
    skipped = 0
    for no, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        f = line.split("\t")
        try:
            if len(f) < 3:
                raise ValueError
            n = float(f[-1])
        except ValueError:
            raise ValueError(f"translation table line {no} is not 'source<TAB>target<TAB>...<TAB>count': "
                             f"{line[:80]!r}") from None
        s, t = source_vocab.get(f[0]), target_vocab.get(f[1])
        if s is None or t is None or s >= n_src or t >= n_tgt or n <= 0:
            skipped += 1
            continue
        rows.append(t), cols.append(s), vals.append(n)
    m = sp.csr_matrix((vals, (rows, cols)), shape=(n_tgt, n_src), dtype=np.float64)
    m.sum_duplicates()
    return m, skipped
