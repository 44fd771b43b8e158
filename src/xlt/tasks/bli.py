"""Bilingual lexicon induction (BLI): retrieve each word's translation among the other language's words by cosine
nearest neighbour (NN) or CSLS (Conneau et al. 2018), scored by P@1 and MRR in **both directions from one pass**.

Definitions (``X`` source vectors, ``Y`` target vectors, rows L2-normalised, ``S = X Yᵀ`` the cosine matrix):

- NN: the score of source ``i`` for target ``j`` is ``S[i, j]``.
- CSLS: ``2 S[i, j] − r_x[i] − r_y[j]``, where ``r_x[i]`` is the mean cosine of ``x_i``'s ``k`` nearest targets
  (the top-``k`` of row ``i``) and ``r_y[j]`` the mean cosine of ``y_j``'s ``k`` nearest sources (the top-``k`` of
  column ``j``). The matrix is the same read either way, so target → source retrieval is its columns.
- A query's rank is the position of its best-placed gold translation (any gold translation counts) in the list of
  candidates sorted by score, highest first, ties by candidate index (so rank 1 = ``argmax``, first on ties).
  P@1 = share of queries with rank 1; MRR = mean of 1/rank, within [1/N, 1] for N candidates.

:func:`bli` makes **one pass** over ``S``: it computes ``S`` block by block of source rows (one matrix product
each, through NumPy's BLAS into a reused buffer: on the benchmark machine OpenBLAS's sgemm is 15–20 % faster than
``torch.mm`` for this shape, and vecmap's side uses it too; the full matrix is never stored) and, from each block
while it is in memory, keeps (1) the rows of the source queries, (2) the columns of the target queries and, for
CSLS, (3) chunk maxima: each row's maximum over every chunk of ``CHUNK`` targets and each column's over every chunk
of ``CHUNK`` consecutive sources (two vectorised max-reductions instead of a top-``k`` along rows and a strided
one along columns). The top ``k`` of a row or column lie in its ``k`` chunks with the largest maxima
(:func:`_topk_mean`), so ``r_x`` is read back from those chunks of the block at once and ``r_y``, after the pass,
from its chunks' recomputed scores: exact means at a fraction of a full top-``k``. The kept rows and columns are
then ranked in cache-sized slabs with ``2·S − r`` of the candidate side (:func:`_rank_queries`). Memory is
``4·(block·m + Qs·m + Qt·n + (block + n)·m/CHUNK)`` bytes for ``Qs``/``Qt`` source/target queries. Cost: one ``n × m × d``
product plus ``(n + m)·k·CHUNK·d`` for the recomputed chunks, where running each direction alone (vecmap) takes
two products plus the queries'.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from xlt.errors import XltError

__all__ = ["METHODS", "bli", "gold_from_pairs", "scores"]

#: retrieval scores understood by :func:`bli`
METHODS = ("nn", "csls")


def _as_matrix(x, what: str):
    import torch

    t = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x.detach().cpu())
    t = t.to(torch.float32)
    if t.dim() != 2 or t.shape[0] == 0:
        raise XltError(f"{what} must be a non-empty (words, dim) matrix, not shape {tuple(t.shape)}",
                       "pass one row vector per word")
    norms = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    if not torch.isfinite(norms).all():  # a NaN or infinite entry makes its row's norm so (checked on n numbers)
        if not torch.isfinite(t).all():
            raise XltError(f"{what} holds NaN or infinite values", "recompute the word vectors")
        return torch.nn.functional.normalize(t.double(), dim=1).float()  # finite, but the squares overflow
    return t / norms.clamp_min(1e-12)


def gold_from_pairs(pairs: Iterable[tuple[str, str]], src_words: Sequence[str], tgt_words: Sequence[str]
                    ) -> list[tuple[int, int]]:
    """``(source index, target index)`` gold pairs from word pairs, over the two candidate word lists; a pair whose
    word is not among the candidates is left out."""
    si = {w: i for i, w in enumerate(src_words)}
    ti = {w: i for i, w in enumerate(tgt_words)}
    return sorted({(si[s], ti[t]) for s, t in pairs if s in si and t in ti})


def _gold_arrays(gold, n: int, m: int):
    import torch

    g = np.asarray(list(gold), dtype=np.int64).reshape(-1, 2)
    if len(g) == 0:
        raise XltError("the gold lexicon is empty (no pair has both words among the candidates)",
                       "give gold (source index, target index) pairs, or a lexicon that covers the vocabularies")
    if g.min() < 0 or g[:, 0].max() >= n or g[:, 1].max() >= m:
        raise XltError(f"a gold pair indexes outside the vectors ({n} source, {m} target rows)",
                       "give 0-based (source row, target row) pairs")
    return torch.from_numpy(np.unique(g, axis=0))


def _check(x, y, method: str, k: int) -> None:
    if method not in METHODS:
        raise XltError(f"unknown BLI method {method!r}", f"use one of: {', '.join(METHODS)}")
    if x.shape[1] != y.shape[1]:
        raise XltError(f"source vectors are {x.shape[1]}-d but target vectors {y.shape[1]}-d",
                       "embed both languages with the same encoder")
    n, m = x.shape[0], y.shape[0]
    if method == "csls" and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(n, m)):
        raise XltError(f"CSLS k must be a whole number in 1..{min(n, m)} (the smaller vocabulary), not {k!r}",
                       "pass k=10 (or fewer for tiny vocabularies)")


CHUNK = 16  # members per chunk of the chunk maxima (see _pass)
_SLAB = 1 << 21  # scores per cache-sized slab (8 MB) when ranking


def _topk_mean(M, owner, other, k: int, c: int):
    """Mean of each owner's ``k`` largest scores, from chunk maxima.

    ``M[g, p]`` is the largest score of owner ``p`` over the members of chunk ``g``, the rows ``g·c … g·c + c − 1``
    of ``other`` (a score is ``owner[p] · member``). Each chunk maximum is one real score, so the ``k``-th largest chunk
    maximum is at most the ``k``-th largest score: every score of the top ``k`` lies in one of the ``k`` chunks
    with the largest maxima (the chunks above that value all are among them; ties at it add chunks whose maxima
    already supply the equal values). Those chunks' scores are recomputed, grouped by chunk (one small product
    per chunk), and the top ``k`` of them averaged: ``P · k · CHUNK`` dot products instead of a top-``k`` over
    all ``P · G · CHUNK`` scores.
    """
    import torch

    G, P = M.shape
    kk = min(k, G)
    sel = M.topk(kk, dim=0).indices.T.reshape(-1)  # (P·kk,) chunk of each (owner, slot)
    order = torch.argsort(sel, stable=True)  # slots grouped by chunk
    counts = torch.bincount(sel, minlength=G).tolist()
    owners = order // kk
    width = min(c, other.shape[0])
    vals = torch.empty((P * kk, width), dtype=torch.float32)
    # NumPy for the ~G small gathers and products: a fraction of torch's per-call overhead
    v, on, ow, oth = vals.numpy(), owner.numpy(), owners.numpy(), other.numpy()
    obuf = np.empty((max(counts), owner.shape[1]), dtype=np.float32)
    a = 0
    for g, cnt in enumerate(counts):
        if cnt:
            o = np.take(on, ow[a:a + cnt], axis=0, out=obuf[:cnt], mode="clip")  # indices are in range
            ch = oth[g * c:g * c + c]
            if ch.shape[0] == width:
                np.dot(o, ch.T, out=v[a:a + cnt])
            else:  # the short last chunk: the rest of its slots can never be among the top k
                v[a:a + cnt, :ch.shape[0]] = o @ ch.T
                v[a:a + cnt, ch.shape[0]:] = -np.inf
            a += cnt
    out = torch.empty_like(vals).index_copy_(0, order, vals)
    return out.view(P, kk * width).topk(k, dim=1).values.mean(1)


def _pass(x, y, method: str, k: int, block: int, src_q, tgt_q):
    """The one pass over S = x yᵀ (see the module docstring): ``(rows, cols_t, r_x, r_y)`` with ``rows`` (Qs, m)
    the cosines of the source queries ``src_q`` (sorted) over all targets, ``cols_t`` (n, Qt) those of all
    sources for the target queries ``tgt_q`` (a column per query), and the CSLS neighbourhood means (``None`` for
    ``"nn"``)."""
    import torch

    n, m = x.shape[0], y.shape[0]
    csls = method == "csls"
    c = CHUNK
    block = max(c, block // c * c)  # whole source chunks per block
    rows = torch.empty((len(src_q), m), dtype=torch.float32)
    cols_t = torch.empty((n, len(tgt_q)), dtype=torch.float32)
    if csls:
        # target chunk h < G: the strided columns h, h + G, …, h + (c−1)·G (a vectorised max over c slabs);
        # chunk G (when m is not a multiple of c): the last m − c·G columns. Source chunks: c consecutive rows.
        G, rest = m // c, m % c
        ng = G + (rest > 0)
        kk = min(k, ng)
        mx = torch.empty((min(block, n), ng), dtype=torch.float32)  # this block's row chunk maxima
        t = torch.arange(c)
        r_x = torch.empty(n, dtype=torch.float32)
        my = torch.empty((-(-n // c), m), dtype=torch.float32)
    buf = torch.empty((min(block, n), m), dtype=torch.float32)
    xn, ynt, sq = x.numpy(), y.numpy().T, src_q.numpy()
    for a in range(0, n, block):
        b = min(a + block, n)
        blk = buf[:b - a]
        np.dot(xn[a:b], ynt, out=blk.numpy())  # NumPy's BLAS (module docstring)
        if csls:
            # r_x of these rows now, from the block itself: the top k lie in the kk chunks with the largest maxima
            # (see _topk_mean), whose members are read back from the block
            if G:
                torch.amax(blk[:, :c * G].view(b - a, c, G), dim=1, out=mx[:b - a, :G])
            if rest:
                torch.amax(blk[:, c * G:], dim=1, out=mx[:b - a, G])
            sel = mx[:b - a].topk(kk, dim=1).indices[:, :, None]  # (rows, kk, 1)
            members = torch.where(sel < G, sel + G * t, c * G + t)  # (rows, kk, c) column indices
            got = blk.gather(1, members.clamp_max(m - 1).view(b - a, -1))
            if rest:  # the short last chunk's missing members
                got.masked_fill_(((sel == G) & (t >= rest)).view(b - a, -1), float("-inf"))
            r_x[a:b] = got.topk(k, dim=1).values.mean(1)
            full = (b - a) // c
            if full:
                torch.amax(blk[:full * c].view(full, c, m), dim=1, out=my[a // c:a // c + full])
            if (b - a) % c:
                torch.amax(blk[full * c:], dim=0, out=my[a // c + full])
        lo, hi = np.searchsorted(sq, [a, b])
        if hi > lo:
            torch.index_select(blk, 0, src_q[lo:hi] - a, out=rows[lo:hi])
        if len(tgt_q):
            torch.index_select(blk, 1, tgt_q, out=cols_t[a:b])
    if not csls:
        return rows, cols_t, None, None
    return rows, cols_t, r_x, _topk_mean(my, y, x, k, c)


def _best_gold(q, c, v):
    """Per query (``q`` sorted, each of 0..nq−1 present): the highest gold score and, among golds with it, the
    lowest candidate index."""
    starts = np.flatnonzero(np.r_[True, q[1:] != q[:-1]])
    best_v = np.maximum.reduceat(v, starts)
    best_c = np.minimum.reduceat(np.where(v == best_v[q], c, np.iinfo(c.dtype).max), starts)
    return best_v, best_c


def _rank_queries(sc, shift, queries_on_rows: bool, gold_q, gold_c):
    """Top-1 and gold rank of each query, scoring in place.

    ``sc`` holds cosines, one query per row (``queries_on_rows``) or per column; ``shift`` (a vector over the
    candidates, or ``None`` for NN) turns them into the ranking score ``2·cos − shift`` (CSLS without the query's
    own neighbourhood term, which is the same for all its candidates and so changes no order). ``(gold_q,
    gold_c)`` are gold pairs as (query position, candidate index). Rank = 1 + #(score > gold's) + #(score = gold's
    at a lower candidate index), for the best-placed gold; top-1 = the first maximum. Works on cache-sized slabs of
    rows (NumPy's argmax and counts: several times torch's here): a query per row is finished in one visit of its
    slab; a query per column needs two sweeps (scores and maxima, then counts against the gold's score)."""
    import torch

    nq = sc.shape[0] if queries_on_rows else sc.shape[1]
    N = sc.shape[1] if queries_on_rows else sc.shape[0]
    step = max(1, _SLAB // max(1, sc.shape[1]))
    a_sc = sc.numpy()
    order = np.lexsort((gold_c.numpy(), gold_q.numpy()))
    gq, gc = gold_q.numpy()[order], gold_c.numpy()[order]
    top1 = np.zeros(nq, dtype=np.int64)
    gt = np.zeros(nq, dtype=np.int64)
    ge = np.zeros(nq, dtype=np.int64)
    if queries_on_rows:
        bounds = np.searchsorted(gq, np.minimum(np.arange(0, nq + step, step), nq))
        best_v, best_c = np.empty(nq, dtype=np.float32), np.empty(nq, dtype=np.int64)
    else:
        max_v = np.full(nq, -np.inf, dtype=np.float32)
    for i, a in enumerate(range(0, sc.shape[0], step)):
        if shift is not None:
            s = sc[a:a + step]
            torch.add(-(shift[None, :] if queries_on_rows else shift[a:a + step, None]), s, alpha=2, out=s)
        s = a_sc[a:a + step]
        if queries_on_rows:
            top1[a:a + step] = s.argmax(1)
            q, c = gq[bounds[i]:bounds[i + 1]], gc[bounds[i]:bounds[i + 1]]
            bv, bc = _best_gold(q - a, c, s[q - a, c])
            best_v[a:a + step], best_c[a:a + step] = bv, bc
            gt[a:a + step] = np.count_nonzero(s > bv[:, None], axis=1)
            ge[a:a + step] = np.count_nonzero(s >= bv[:, None], axis=1)
        else:
            j = s.argmax(0)
            v = s[j, np.arange(nq)]
            better = v > max_v  # strict: an earlier slab keeps its (lower) index on ties
            max_v[better], top1[better] = v[better], j[better] + a
    if not queries_on_rows:
        best_v, best_c = _best_gold(gq, gc, a_sc[gc, gq])
        for a in range(0, sc.shape[0], step):
            s = a_sc[a:a + step]
            gt += np.count_nonzero(s > best_v[None, :], axis=0)
            ge += np.count_nonzero(s >= best_v[None, :], axis=0)
    ranks = 1 + gt
    for q in np.flatnonzero(ge - gt > 1):  # ties with the gold's score: lower indices first
        line = a_sc[q] if queries_on_rows else a_sc[:, q]
        ranks[q] += int(np.count_nonzero((line == best_v[q]) & (np.arange(N) < best_c[q])))
    return torch.from_numpy(top1), torch.from_numpy(ranks)


def scores(src_vecs, tgt_vecs, method: str = "nn", k: int = 10, block: int = 1024):
    """The full (n, m) float32 score matrix: cosines (``"nn"``) or CSLS with ``k`` neighbours, ``2·S − r_x − r_y``
    (the same pass, keeping every row; for inspection and tests). :func:`bli` ranks by the same order: it leaves
    out the query's own term, constant over its candidates."""
    import torch

    x, y = _as_matrix(src_vecs, "source vectors"), _as_matrix(tgt_vecs, "target vectors")
    _check(x, y, method, k)
    with torch.no_grad():
        rows, _, r_x, r_y = _pass(x, y, method, k, block, torch.arange(x.shape[0]), torch.zeros(0, dtype=torch.long))
        return rows if method == "nn" else rows.mul_(2).sub_(r_x[:, None]).sub_(r_y[None, :])


def bli(src_vecs, tgt_vecs, gold, method: str = "nn", k: int = 10, block: int = 1024,
        return_ranks: bool = False) -> dict:
    """P@1 and MRR of source → target and target → source retrieval, from one pass over the similarity matrix.

    ``src_vecs`` (n, d) and ``tgt_vecs`` (m, d) are arrays or tensors (normalised here); ``gold`` is an iterable of
    ``(source row, target row)`` pairs (a word may have several translations; any one counts). Forward queries are
    the source rows that have a gold pair, backward queries the target rows that have one. ``method``: ``"nn"``
    (cosine) or ``"csls"`` with ``k`` neighbours. Returns ``{"method", "k", "src_to_tgt": {"p_at_1", "mrr",
    "queries", "candidates", "top1"}, "tgt_to_src": {...}}`` where ``top1`` lists each query's best candidate
    (``argmax`` of its scores, first on ties) and, with ``return_ranks``, ``ranks`` each query's gold rank and
    ``query_rows`` the queries (sorted row indices).
    """
    import torch

    x, y = _as_matrix(src_vecs, "source vectors"), _as_matrix(tgt_vecs, "target vectors")
    _check(x, y, method, k)
    n, m = x.shape[0], y.shape[0]
    g = _gold_arrays(gold, n, m)
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise XltError(f"block must be a whole number ≥ 1, not {block!r}", "pass block=1024")
    src_q, tgt_q = torch.unique(g[:, 0]), torch.unique(g[:, 1])
    with torch.no_grad():
        rows, cols_t, r_x, r_y = _pass(x, y, method, k, block, src_q, tgt_q)
        out = {"method": method, "k": k if method == "csls" else None}
        for name, mat, on_rows, shift, queries, gq, gc, size in (
                ("src_to_tgt", rows, True, r_y, src_q, g[:, 0], g[:, 1], m),
                ("tgt_to_src", cols_t, False, r_x, tgt_q, g[:, 1], g[:, 0], n)):
            top1, ranks = _rank_queries(mat, shift, on_rows, torch.searchsorted(queries, gq.contiguous()), gc)
            res = {"p_at_1": float((ranks == 1).double().mean()), "mrr": float((1.0 / ranks.double()).mean()),
                   "queries": int(len(queries)), "candidates": int(size), "top1": top1.numpy()}
            if return_ranks:
                res["ranks"] = ranks.numpy()
                res["query_rows"] = queries.numpy()
            out[name] = res
    return out
