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


def topk_cosine(queries: np.ndarray, keys: np.ndarray, k: int, chunk: int = 2048,
                device: torch.device | None = None, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the ``k`` keys of highest dot product (cosine for normalised rows).

    Returns ``(similarities, indices)``, both ``(n_queries, k)``, best first. ``dtype=np.float64`` orders
    near-ties exactly as a float64 reference would (twice the time on CPU).
    """
    device = device or default_device()
    kt = torch.from_numpy(np.ascontiguousarray(keys, dtype=dtype)).to(device)
    k = min(k, kt.shape[0])
    vals, idx = [], []
    for s in range(0, len(queries), chunk):
        q = torch.from_numpy(np.ascontiguousarray(queries[s: s + chunk], dtype=dtype)).to(device)
        v, i = torch.topk(q @ kt.T, k, dim=1)
        vals.append(v.cpu())
        idx.append(i.cpu())
    if not vals:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return torch.cat(vals).numpy(), torch.cat(idx).numpy()


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
