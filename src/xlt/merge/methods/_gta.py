"""The combine step shared by task arithmetic, TIES and DARE (mergekit's "generalized task arithmetic").

Given the (already sparsified) deltas δ_t = θ_t − θ₀ and weights w_t:
with ``consensus`` (TIES sign election), the majority sign per element is sign(Σ_t w_t δ_t) (≥ 0 → +1),
mask_t = [sign(w_t δ_t) = majority], mixed = Σ_t w_t δ_t mask_t and divisor = Σ_t w_t mask_t (0 → 1);
without it, mixed = Σ_t w_t δ_t and divisor = Σ_t w_t (|·| < 1e-8 → 1).
``normalize`` divides by the divisor; the result is θ₀ + λ·mixed.

The deltas are consumed (modified in place): the engine hands over fresh tensors, and reusing them keeps
the working set at one tensor per model.
"""

from __future__ import annotations

import torch


def combine(base: torch.Tensor, deltas: list[torch.Tensor], weights: list[float], consensus: bool,
            normalize: bool, lam: float) -> torch.Tensor:
    weights = [float(w) for w in weights]
    wd = [d if w == 1.0 else d.mul_(w) for d, w in zip(deltas, weights)]
    if consensus:
        total = wd[0].clone()
        for x in wd[1:]:
            total.add_(x)
        majority = total.ge_(0).mul_(2).sub_(1)  # +1 where Σ w δ ≥ 0, else -1
        unit = all(w == 1.0 for w in weights)  # then the divisor is a count of agreeing models (exact)
        mixed = divisor = None
        for x, w in zip(wd, weights):
            agree = torch.sign(x) == majority  # sign(w δ) equals the elected sign (0 never does)
            x.mul_(agree)
            mixed = x if mixed is None else mixed.add_(x)
            if normalize:
                if unit:
                    divisor = agree.to(torch.uint8) if divisor is None else divisor.add_(agree)
                else:
                    contrib = agree.to(x.dtype).mul_(w)
                    divisor = contrib if divisor is None else divisor.add_(contrib)
            del agree
        del majority
        if normalize:
            divisor = divisor.to(mixed.dtype) if unit else divisor
            divisor[divisor == 0] = 1
            mixed.div_(divisor)
    else:
        mixed = wd[0]
        for x in wd[1:]:
            mixed.add_(x)
        if normalize:
            div = sum(weights)
            if abs(div) >= 1e-8:
                mixed.div_(torch.tensor(div, dtype=mixed.dtype))
    if lam != 1:
        mixed.mul_(lam)
    return base + mixed
