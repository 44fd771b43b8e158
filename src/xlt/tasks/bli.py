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

:func:`bli` makes **one pass** over ``S``: it computes ``S`` block by block of source rows (one matmul each, a
reused buffer; the full matrix is never stored) and, from each block while it is in memory, takes (1) the row
top-``k`` (``r_x``), (2) the block's column top-``k``, merged into the running column top-``k`` (``r_y``), (3) the
rows of the source queries and (4) the columns of the target queries. After the pass, the forward scores are the
kept rows and the backward scores the kept columns, turned into CSLS with the final ``r`` vectors; ranks are
counted on them. Both directions use the same ``S`` values; memory is ``4·(block·m + Qs·m + Qt·n)`` bytes for
``Qs``/``Qt`` source/target queries. Cost: one ``n × m × d`` matmul, where running each direction alone (vecmap)
takes two plus the queries'.
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

    t = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x.detach())
    t = t.to(torch.float32)
    if t.dim() != 2 or t.shape[0] == 0:
        raise XltError(f"{what} must be a non-empty (words, dim) matrix, not shape {tuple(t.shape)}",
                       "pass one row vector per word")
    if not torch.isfinite(t).all():
        raise XltError(f"{what} holds NaN or infinite values", "recompute the word vectors")
    return torch.nn.functional.normalize(t, dim=1)


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


def _ranks(scores, gold_q, gold_c):
    """1-based rank of each query's best gold candidate in its row of ``scores`` ((queries, N); every row has at
    least one gold pair ``(gold_q, gold_c)``), ties by candidate index."""
    import torch

    g = scores[gold_q, gold_c]
    # each query's best gold: highest score, then lowest candidate index (np.lexsort: last key is the primary one)
    order = torch.from_numpy(np.lexsort((gold_c.numpy(), -g.numpy(), gold_q.numpy())))
    q_sorted = gold_q[order]
    first = torch.ones(len(order), dtype=torch.bool)
    first[1:] = q_sorted[1:] != q_sorted[:-1]
    best = order[first]  # one per query, in query order
    bc, bg = gold_c[best], g[best]
    out = torch.empty(len(best), dtype=torch.long)
    for a in range(0, len(best), 1024):  # bounded temporaries
        rows, b = scores[a:a + 1024], bg[a:a + 1024, None]
        above = (rows > b).view(torch.uint8).sum(1, dtype=torch.int32)
        ties = ((rows == b) & (torch.arange(rows.shape[1])[None, :] < bc[a:a + 1024, None])).view(torch.uint8)
        out[a:a + 1024] = 1 + above + ties.sum(1, dtype=torch.int32)
    return out


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


def _pass(x, y, method: str, k: int, block: int, src_q, tgt_q):
    """The one pass over S = x yᵀ (see the module docstring): ``(rows, cols, r_x, r_y)`` with ``rows`` the scores
    of the source queries ``src_q`` (sorted) over all targets and ``cols`` those of the target queries ``tgt_q``
    (sorted) over all sources, CSLS already applied for ``"csls"``."""
    import torch

    n, m = x.shape[0], y.shape[0]
    csls = method == "csls"
    block = max(block, k if csls else 1)  # a block has at least k rows for the column top-k
    rows = torch.empty((len(src_q), m), dtype=torch.float32)
    cols = torch.empty((len(tgt_q), n), dtype=torch.float32)
    r_x = torch.empty(n, dtype=torch.float32)
    top = None
    buf = torch.empty((min(block, n), m), dtype=torch.float32)
    yt = y.T
    for a in range(0, n, block):
        b = min(a + block, n)
        blk = torch.mm(x[a:b], yt, out=buf[:b - a])
        if csls:
            r_x[a:b] = blk.topk(k, dim=1).values.mean(1)
            part = blk.topk(min(k, b - a), dim=0).values.T  # this block's best per column, merged below
            top = part if top is None else torch.cat([top, part], 1).topk(k, dim=1).values
        lo, hi = np.searchsorted(src_q.numpy(), [a, b])
        if hi > lo:
            rows[lo:hi] = blk[src_q[lo:hi] - a]
        if len(tgt_q):
            cols[:, a:b] = blk[:, tgt_q].T
    r_y = top.mean(1) if csls else None
    if csls:
        rows.mul_(2).sub_(r_x[src_q, None]).sub_(r_y[None, :])
        cols.mul_(2).sub_(r_y[tgt_q, None]).sub_(r_x[None, :])
    return rows, cols, r_x, r_y


def scores(src_vecs, tgt_vecs, method: str = "nn", k: int = 10, block: int = 1024):
    """The full (n, m) float32 score matrix :func:`bli` ranks by: cosines (``"nn"``) or CSLS with ``k``
    neighbours (the same pass, keeping every row; for inspection and tests)."""
    import torch

    x, y = _as_matrix(src_vecs, "source vectors"), _as_matrix(tgt_vecs, "target vectors")
    _check(x, y, method, k)
    with torch.no_grad():
        return _pass(x, y, method, k, block, torch.arange(x.shape[0]), torch.zeros(0, dtype=torch.long))[0]


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
        rows, cols, _, _ = _pass(x, y, method, k, block, src_q, tgt_q)
        out = {"method": method, "k": k if method == "csls" else None}
        for name, mat, queries, gq, gc, size in (("src_to_tgt", rows, src_q, g[:, 0], g[:, 1], m),
                                                 ("tgt_to_src", cols, tgt_q, g[:, 1], g[:, 0], n)):
            ranks = _ranks(mat, torch.searchsorted(queries, gq.contiguous()), gc)
            res = {"p_at_1": float((ranks == 1).double().mean()), "mrr": float((1.0 / ranks.double()).mean()),
                   "queries": int(len(queries)), "candidates": int(size), "top1": mat.argmax(1).numpy()}
            if return_ranks:
                res["ranks"] = ranks.numpy()
                res["query_rows"] = queries.numpy()
            out[name] = res
    return out
