"""Pure tensor maths shared by the similarity-based methods: Procrustes, batched top-k cosine, sparsemax.

No Python loops over tokens: similarities are chunked matrix products with ``torch.topk`` (on the GPU
when one is present).
"""

from __future__ import annotations

import numpy as np
import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def procrustes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The orthogonal ``R`` minimising ``‖x R − y‖_F`` (Schönemann): ``R = U Vᵀ`` for ``xᵀy = U Σ Vᵀ``."""
    u, _, vt = np.linalg.svd(x.T.astype(np.float64) @ y.astype(np.float64))
    return u @ vt


def normalise_rows(m: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Rows divided by their L2 norm, so dot products are exact cosines (all-zero rows stay zero)."""
    m = np.asarray(m, dtype=dtype)
    norm = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norm > 0, norm, 1)


# -- top-k search ------------------------------------------------------------------------------------------
#: extra candidates per query taken from the float32 product, so float64 rescoring can certify the top-k
_EXTRA = 8


def unique_rows(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct rows of ``m``: ``(first, members, indptr)``.

    ``m[first[u]]`` is distinct row ``u`` (``first`` ascending: distinct rows in order of first appearance);
    ``members[indptr[u]:indptr[u+1]]`` are the ids of the rows equal to it, ascending. Rows are compared
    by their bytes (so ``-0.0`` and ``0.0`` differ, which only costs a duplicate).
    """
    m = np.ascontiguousarray(m)
    if m.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(1, np.int64)
    v = m.view(np.dtype((np.void, m.dtype.itemsize * m.shape[1]))).ravel()
    _, first, inverse = np.unique(v, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    first, inverse = first[order], rank[inverse.ravel()]
    members = np.argsort(inverse, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=len(first)))])
    return first.astype(np.int64), members.astype(np.int64), indptr.astype(np.int64)


def topk_cosine(queries: np.ndarray, keys: np.ndarray, k: int, chunk: int = 1024,
                device: torch.device | None = None, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the ``k`` keys of highest dot product (cosine for normalised rows).

    Returns ``(similarities, indices)``, both ``(n_queries, k)``, best first, equal scores in key order.
    The result is the top-k under float64 dot products at the cost of a float32 product:
    duplicate key rows (tokens that share a vector) and repeated queries are searched once; a chunked float32 product with
    ``torch.topk`` (on the GPU when present) proposes ``k + 8`` candidates per query, which are rescored
    in float64 and certified with the float32 error bound (:func:`_certified_topk`); a query the bound
    cannot certify (a near-tie straddling its last candidate) is searched again in float64.
    Similarities are returned in ``dtype``.
    """
    queries, keys = np.asarray(queries), np.asarray(keys)
    n_q = len(queries)
    k = min(k, len(keys))
    if n_q == 0 or k == 0:
        return np.zeros((n_q, k), dtype), np.zeros((n_q, k), np.int64)
    first, members, indptr = unique_rows(keys)
    uniq = np.ascontiguousarray(keys[first], dtype=np.float64)
    q_first, q_members, q_indptr = unique_rows(queries)  # repeated queries are searched once too
    rows, cols, vals = _certified_topk(np.ascontiguousarray(queries[q_first], dtype=np.float64), uniq,
                                       min(k, len(uniq)), chunk, device or default_device())
    sims, idx = _expand(rows, cols, vals, first, members, indptr, len(q_first), k, dtype)
    if len(q_first) == n_q:
        return sims, idx
    q_inverse = np.empty(n_q, np.int64)
    q_inverse[q_members] = np.repeat(np.arange(len(q_first)), np.diff(q_indptr))
    return sims[q_inverse], idx[q_inverse]


def float32_error_scale(d: int) -> float:
    """``ε/(‖q‖·‖u‖)`` bounding a float32 dot product of float64 vectors rounded to float32: each input's
    rounding (2u + u²) plus float32 summation of d products in any order (γ_d = d·u/(1−d·u)), u = 2⁻²⁴;
    doubled, as a margin for the library's kernels."""
    u = 2.0 ** -24
    return 2 * (2 * u + u * u + d * u / (1 - d * u) * (1 + u) ** 2)


def _certified_topk(q64: np.ndarray, u64: np.ndarray, k: int, chunk: int, device: torch.device):
    """Per query, the float64 top-``k`` of ``q64 · u64ᵀ`` as COO arrays ``(row, key, score)``.

    A float32 product proposes the ``m = k + _EXTRA`` best keys by their float32 scores ``a₁ ≥ … ≥ a_m``,
    each within ``ε = c·‖q‖·max‖u‖`` of its exact score (:func:`float32_error_scale`). A key outside the
    candidates scores at most ``a_m + ε`` exactly; so where the k-th best float64 score among the
    candidates exceeds ``a_m + ε``, the candidates hold the exact top-k. Other rows are searched in float64.
    """
    n_u, d = u64.shape
    m = min(n_u, k + _EXTRA)
    scale = float32_error_scale(d) * float(np.linalg.norm(u64, axis=1).max())
    kt = torch.from_numpy(u64.astype(np.float32)).to(device)
    rows_out, cols_out, vals_out = [], [], []
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the bound needs true float32 products
    try:
        for s in range(0, len(q64), chunk):
            q = q64[s: s + chunk]
            a, idx = torch.topk(torch.from_numpy(q.astype(np.float32)).to(device) @ kt.T, m, dim=1)
            a, idx = a.cpu().numpy().astype(np.float64), idx.cpu().numpy()
            t = np.einsum("id,ijd->ij", q, u64[idx])  # float64 rescoring of the candidates
            kth = -np.partition(-t, k - 1, axis=1)[:, k - 1]
            ok = kth > a[:, -1] + scale * np.linalg.norm(q, axis=1) if m < n_u else np.ones(len(q), bool)
            r = np.repeat(np.flatnonzero(ok), m)
            c, v = idx[ok].ravel(), t[ok].ravel()
            redo = np.flatnonzero(~ok)
            if len(redo):  # a near-tie around the m-th candidate: exact float64 search for these rows
                full = q[redo] @ u64.T
                top = np.argpartition(-full, k - 1, axis=1)[:, :k]
                r = np.concatenate([r, np.repeat(redo, k)])
                c = np.concatenate([c, top.ravel()])
                v = np.concatenate([v, np.take_along_axis(full, top, 1).ravel()])
            rows_out.append(r + s)
            cols_out.append(c)
            vals_out.append(v)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return np.concatenate(rows_out), np.concatenate(cols_out), np.concatenate(vals_out)


def _expand(rows, cols, vals, first, members, indptr, n_q, k, dtype):
    """Per query, candidates (distinct-row id, score) -> the k best original keys (score desc, index asc)."""
    mult = indptr[cols + 1] - indptr[cols]
    # each distinct row stands for its members, all with its score: expand, then cut each query to k
    er = np.repeat(rows, mult)
    ev = np.repeat(vals, mult)
    start = np.repeat(indptr[cols], mult)
    within = np.arange(len(er)) - np.repeat(np.cumsum(mult) - mult, mult)
    ek = members[start + within]
    o = np.lexsort((ek, -ev, er))  # by query, score descending, then key index
    er, ev, ek = er[o], ev[o], ek[o]
    row_start = np.searchsorted(er, np.arange(n_q))
    rank = np.arange(len(er)) - row_start[er]
    keep = rank < k
    if int(keep.sum()) != n_q * k:
        raise AssertionError("top-k search returned fewer than k keys for some query")
    idx = ek[keep].reshape(n_q, k)
    return ev[keep].reshape(n_q, k).astype(dtype), idx


def softmax_weights(sims: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise ``softmax(sims / temperature)`` (max-shifted, so any temperature is safe)."""
    z = sims.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Sparsemax over the last dimension (Martins & Astudillo, 2016): the Euclidean projection onto the simplex.

    Computed in float64 (returned in the input's dtype) so that near-ties at the support boundary do not
    leave round-off weights on tokens that should get none."""
    dtype = z.dtype
    z = z.double()
    zs, _ = torch.sort(z, dim=-1, descending=True)
    cs = zs.cumsum(-1)
    ks = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    support = 1 + ks * zs > cs
    k = support.sum(-1, keepdim=True)
    tau = (cs.gather(-1, k - 1) - 1) / k.to(z.dtype)
    return torch.clamp(z - tau, min=0).to(dtype)


def sparsemax_rows(queries: np.ndarray, anchors: np.ndarray, chunk: int = 1024,
                   device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparsemax of cosine similarities of each (normalised) query to all (normalised) anchors.

    Returns the non-zero weights as COO arrays ``(row, anchor, weight)``.
    """
    device = device or default_device()
    a = torch.from_numpy(np.ascontiguousarray(anchors, dtype=np.float32)).to(device)
    rows, cols, vals = [], [], []
    for s in range(0, len(queries), chunk):
        q = torch.from_numpy(np.ascontiguousarray(queries[s: s + chunk], dtype=np.float32)).to(device)
        p = sparsemax(q @ a.T)
        r, c = torch.nonzero(p, as_tuple=True)
        rows.append((r + s).cpu().numpy())
        cols.append(c.cpu().numpy())
        vals.append(p[r, c].double().cpu().numpy())
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
