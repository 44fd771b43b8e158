"""The combine step shared by task arithmetic, TIES and DARE (mergekit's "generalized task arithmetic").

Given the (already sparsified) deltas δ_t = θ_t − θ₀ and weights w_t:
with ``consensus`` (TIES sign election), the majority sign per element is sign(Σ_t w_t δ_t) (≥ 0 → +1),
mask_t = [sign(w_t δ_t) = majority], mixed = Σ_t w_t δ_t mask_t and divisor = Σ_t w_t mask_t (0 → 1);
without it, mixed = Σ_t w_t δ_t and divisor = Σ_t w_t (|·| < 1e-8 → 1).
``normalize`` divides by the divisor; the result is θ₀ + λ·mixed.
"""

from __future__ import annotations

import torch


def combine(base: torch.Tensor, deltas: list[torch.Tensor], weights: list[float], consensus: bool,
            normalize: bool, lam: float) -> torch.Tensor:
    d = torch.stack(deltas)
    w = torch.tensor(weights, dtype=d.dtype).reshape(-1, *([1] * base.dim()))
    d.mul_(w)
    if consensus:
        majority = (d.sum(dim=0) >= 0).to(d.dtype) * 2 - 1
        mask = d.sign() == majority
        mixed = (d * mask).sum(dim=0)
        divisor = (w * mask).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = d.sum(dim=0)
        divisor = w.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if normalize:
        mixed /= divisor
    if lam != 1:
        mixed *= lam
    return base + mixed
