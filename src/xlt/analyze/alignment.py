"""Layer-wise cross-lingual alignment of pooled hidden states (pure tensor math; no model, no files).

For N parallel sentences and one layer, ``X`` and ``Y`` are (N, d) pooled representations of the same sentences in
two languages (row i of X translates row i of Y).

- **Paired cosine** (1/N) Σᵢ cos(xᵢ, yᵢ) minus its *shuffled baseline*: the mean cosine over all non-matching pairs
  i ≠ j, which is the exact expectation over random pairings (anisotropy makes raw cosines high in every layer).
- **Linear CKA** (Kornblith et al. 2019) on column-centred X, Y: ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F). Invariant to
  orthogonal maps and isotropic scaling, but biased upwards when N is not ≫ d.
- **Debiased CKA**: the same ratio with the unbiased HSIC estimator of Song et al. (2012),
  HSIC₁(K, L) = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1 / ((N−1)(N−2)) − 2/(N−2) · 1ᵀK̃L̃1] / (N(N−3)), K̃ = XXᵀ with a zero
  diagonal. Computed here in feature space (O(N·d²), no N×N matrix); :func:`hsic1_kernel` is the textbook kernel
  form. Its permutation p-value (rows of Y shuffled) says whether the value is above chance.
- **Retrieval** (LASER's xSIM, ratio margin): score(i, j) = cos(xᵢ, yⱼ) / ((a_x(i) + a_y(j)) / 2), a = the mean
  cosine to the k nearest neighbours on the other side; the prediction for i is the best-scoring of its k nearest
  neighbours; accuracy@1 = share of i predicted as i, in both directions.

CKA compares geometries: two languages that share content can score above its baseline in a randomly initialised
model, where retrieval and paired cosine stay at chance. Report both kinds.
"""

from __future__ import annotations

import torch

from xlt.errors import XltError


def _check(X: torch.Tensor, Y: torch.Tensor, need: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise XltError(f"alignment needs two (N, d) matrices with the same N, got {tuple(X.shape)} and "
                       f"{tuple(Y.shape)}", "pass pooled representations of the same parallel sentences")
    if X.shape[0] < need:
        raise XltError(f"alignment needs at least {need} parallel sentences, got {X.shape[0]}",
                       "give more parallel sentences (--n)")
    return X.double(), Y.double()


def _unit(X: torch.Tensor) -> torch.Tensor:
    return X / X.norm(dim=1, keepdim=True).clamp_min(1e-12)


def paired_cosine(X: torch.Tensor, Y: torch.Tensor) -> dict[str, float]:
    """``paired`` mean cos(xᵢ, yᵢ), ``shuffled`` mean cos(xᵢ, yⱼ) over i ≠ j, ``delta`` = paired − shuffled."""
    X, Y = _check(X, Y)
    S = _unit(X) @ _unit(Y).T
    n = S.shape[0]
    paired = S.diagonal().mean()
    shuffled = (S.sum() - S.diagonal().sum()) / (n * (n - 1))
    return {"paired": float(paired), "shuffled": float(shuffled), "delta": float(paired - shuffled)}


def linear_cka(X: torch.Tensor, Y: torch.Tensor) -> float:
    """Kornblith's linear CKA on column-centred X and Y (biased upwards for small N)."""
    X, Y = _check(X, Y)
    X, Y = X - X.mean(0), Y - Y.mean(0)
    num = (Y.T @ X).pow(2).sum()
    den = (X.T @ X).norm() * (Y.T @ Y).norm()
    return float(num / den) if den > 0 else 0.0


def _hsic1_features(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """HSIC₁ of the linear kernels XXᵀ and YYᵀ without forming them."""
    n = X.shape[0]
    kx, ky = X.pow(2).sum(1), Y.pow(2).sum(1)  # diagonals of K and L
    tr = (X.T @ Y).pow(2).sum() - (kx * ky).sum()  # Σ_{i≠j} K_ij L_ij
    k1 = X @ X.sum(0) - kx  # K̃1
    l1 = Y @ Y.sum(0) - ky  # L̃1
    return (tr + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (k1 @ l1)) / (n * (n - 3))


def hsic1_kernel(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """The unbiased HSIC estimator of Song et al. (2012) on two (N, N) kernel matrices (textbook O(N²) form)."""
    n = K.shape[0]
    K = K - torch.diag(torch.diagonal(K))
    L = L - torch.diag(torch.diagonal(L))
    one = torch.ones(n, dtype=K.dtype)
    return (torch.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ K @ L @ one)) / (n * (n - 3))


def debiased_cka(X: torch.Tensor, Y: torch.Tensor) -> float:
    """Linear CKA with the unbiased HSIC estimator (≈ 0 for independent representations; can be slightly < 0)."""
    X, Y = _check(X, Y, need=4)
    X, Y = X - X.mean(0), Y - Y.mean(0)  # HSIC₁ is translation-invariant; centring only helps rounding
    xy, xx, yy = _hsic1_features(X, Y), _hsic1_features(X, X), _hsic1_features(Y, Y)
    den = (xx * yy).clamp_min(0).sqrt()
    return float(xy / den) if den > 0 else 0.0


def cka_permutation(X: torch.Tensor, Y: torch.Tensor, n_perm: int = 200, seed: int = 0,
                    debiased: bool = True) -> dict[str, float]:
    """CKA, the mean CKA over ``n_perm`` shuffles of Y's rows (its chance level) and the permutation p-value
    (1 + #{shuffled ≥ observed}) / (1 + n_perm). Uses the (N, N) Gram matrices: each shuffle costs O(N²)."""
    X, Y = _check(X, Y, need=4)
    X, Y = X - X.mean(0), Y - Y.mean(0)
    n = X.shape[0]
    K, L = X @ X.T, Y @ Y.T
    if debiased:
        K = K - torch.diag(torch.diagonal(K))
        L = L - torch.diag(torch.diagonal(L))

    def hsic(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:  # up to the constant 1/(N(N-3)), which cancels
        if not debiased:
            return (A * B).sum()
        a1, b1 = A.sum(1), B.sum(1)
        return (A * B).sum() + a1.sum() * b1.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (a1 @ b1)

    def stat(Lp: torch.Tensor) -> torch.Tensor:  # Lp = L permuted on both axes
        return hsic(K, Lp)

    norm = (hsic(K, K).clamp_min(0) * hsic(L, L).clamp_min(0)).sqrt()
    if norm <= 0:
        return {"value": 0.0, "baseline": 0.0, "p": 1.0, "n_perm": n_perm}
    obs = float(stat(L) / norm)
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(n_perm):
        p = torch.randperm(n, generator=g)
        vals.append(float(stat(L[p][:, p]) / norm))
    vals_t = torch.tensor(vals)
    return {"value": obs, "baseline": float(vals_t.mean()) if vals else 0.0,
            "p": float((1 + (vals_t >= obs).sum()) / (1 + n_perm)), "n_perm": n_perm}


def retrieval(X: torch.Tensor, Y: torch.Tensor, k: int = 4, margin: str = "ratio") -> dict[str, float]:
    """xSIM-style bitext retrieval accuracy@1 in both directions (``x2y``: each x finds its y; ``y2x``)."""
    X, Y = _check(X, Y)
    S = _unit(X) @ _unit(Y).T
    n = S.shape[0]
    k = max(1, min(k, n))
    if margin not in ("ratio", "distance", "absolute"):
        raise XltError(f"unknown retrieval margin {margin!r}", "choose ratio, distance or absolute")
    ax = S.topk(k, dim=1).values.mean(1)  # x's mean similarity to its k nearest y
    ay = S.topk(k, dim=0).values.mean(0)  # y's mean similarity to its k nearest x

    def acc(S: torch.Tensor, a_src: torch.Tensor, a_tgt: torch.Tensor) -> float:
        cand = S.topk(k, dim=1).indices  # (n, k) nearest neighbours by cosine
        cos = S.gather(1, cand)
        avg = (a_src.unsqueeze(1) + a_tgt[cand]) / 2
        score = cos / avg if margin == "ratio" else (cos - avg if margin == "distance" else cos)
        pred = cand.gather(1, score.argmax(1, keepdim=True)).squeeze(1)
        return float((pred == torch.arange(n)).double().mean())

    return {"x2y": acc(S, ax, ay), "y2x": acc(S.T, ay, ax), "k": k, "margin": margin}


def layer_alignment(X: torch.Tensor, Y: torch.Tensor, n_perm: int = 100, seed: int = 0, k: int = 4) -> dict:
    """Every alignment metric for one layer: cosine (paired, shuffled, delta), CKA (linear; debiased with its
    permutation baseline and p) and retrieval@1 both ways."""
    cos = paired_cosine(X, Y)
    perm = cka_permutation(X, Y, n_perm=n_perm, seed=seed, debiased=True)
    r = retrieval(X, Y, k=k)
    return {"cos_paired": cos["paired"], "cos_shuffled": cos["shuffled"], "cos_delta": cos["delta"],
            "cka_linear": linear_cka(X, Y), "cka_debiased": perm["value"], "cka_debiased_baseline": perm["baseline"],
            "cka_debiased_p": perm["p"], "retrieval_x2y": r["x2y"], "retrieval_y2x": r["y2x"]}
