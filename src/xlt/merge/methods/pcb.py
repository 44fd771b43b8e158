"""``pcb``: Parameter Competition Balancing (Du et al., NeurIPS 2024), over the whole model.

τ_i = θ_i − θ₀ for the n input models, flattened over every tensor the method merges (d elements).
This is the computation of the authors' released kernel (``pcb_merging`` in duguodong7/pcb-merging),
which produced the published numbers; the paper writes the same steps with Softmax/Norm:

1. clamp: a_i = clamp(|τ_i|, lo_i, hi_i) with lo_i, hi_i the values at ascending ranks ⌊d·q⌋ and
   ⌊d·(1−q) − 1⌋ of |τ_i| (``clamp_ratio`` q, 1e-4 as in the kernel); c_i = sign(τ_i)·a_i.
2. intra-balancing: exp(n · ((a_i − lo_i)/(hi_i − lo_i))²)  (the paper's Softmax(N·Norm(τ_i⊙τ_i)) up to a
   per-model constant, which step 4's min-max normalisation removes).
3. inter-balancing: tanh(τ_i ⊙ Σ_j τ_j).
4. drop and rescale: s_i = intra ⊙ inter; with m_i the value at ascending rank ⌊d·(1−r)⌋ of s_i
   (``density`` r: the kept fraction) and M_i = max s_i, β_i = (max(s_i, m_i) − m_i)/(M_i − m_i), so the
   dropped 1−r fraction gets exactly 0 and the largest score 1.
5. τ_m = Σ_i c_i β_i / max(Σ_i β_i, 1e-12); θ = θ₀ + λ·τ_m.

Every quantile is over the whole model: the engine streams the model twice per quantile stage
(:mod:`xlt.merge.stats`) instead of holding the n×d matrix. A zero range (hi = lo or M = m, e.g. a model
merged with itself) gives 0 instead of the kernel's NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xlt import options as opts
from xlt.merge.registry import MergeMethod, StatStage, register_merge
from xlt.options import option


def _quantile(v) -> str | None:
    return None if 0 <= v < 0.5 else f"must be in [0, 0.5), got {v}"


@dataclass
class PcbOptions:
    density: float = option(0.1, "fraction of balanced scores kept (pcb_ratio)", check=opts.density)
    clamp_ratio: float = option(1e-4, "outlier clamp quantile of |τ| (kernel: 1e-4)", check=_quantile)
    lambda_: float = option(1.0, "scale of the merged task vector", key="lambda")


def _safe_norm(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    if hi > lo:
        return (x - lo) / (hi - lo)
    return torch.zeros_like(x)


def clamped(tensors, base, bounds):
    """(τ_i, a_i) per model: the task vector and its clamped magnitude."""
    out = []
    for t, (lo, hi) in zip(tensors, bounds):
        tau = t - base
        out.append((tau, tau.abs().clamp(lo, hi)))
    return out


def scores(tensors, base, bounds):
    taus = clamped(tensors, base, bounds)
    n = len(tensors)
    total = torch.zeros_like(base)
    for tau, _ in taus:
        total += tau
    out = []
    for (tau, a), (lo, hi) in zip(taus, bounds):
        out.append(torch.exp(n * _safe_norm(a, lo, hi) ** 2) * torch.tanh(tau * total))
    return taus, out


def _bounds(ctx):
    return [(sels[0].value, sels[1].value) for sels in ctx.stats[0]]


def _abs_values(base, tensors, p, ctx):
    return [(t - base).abs() for t in tensors]


def _abs_ranks(d: int, i: int, p: dict) -> list[int]:
    q = p["clamp_ratio"]
    return [int(d * q), int(d * (1 - q) - 1)]


def _score_values(base, tensors, p, ctx):
    return scores(tensors, base, _bounds(ctx))[1]


def _score_ranks(d: int, i: int, p: dict) -> list[int]:
    return [min(d - 1, int(d * (1 - p["density"]))), d - 1]


def merge(base, tensors, p, ctx):
    taus, s = scores(tensors, base, _bounds(ctx))
    num = torch.zeros_like(base)
    den = torch.zeros_like(base)
    for (tau, a), si, sels in zip(taus, s, ctx.stats[1]):
        m, big = sels[0].value, sels[1].value
        beta = _safe_norm(si.clamp(min=m), m, big)
        num += torch.sign(tau) * a * beta
        den += beta
    return base + p["lambda"] * (num / den.clamp(min=1e-12))


def stats(p: dict) -> list[StatStage]:
    return [StatStage(_abs_values, _abs_ranks, "global", nonneg=True), StatStage(_score_values, _score_ranks, "global")]


register_merge(MergeMethod(
    name="pcb", merge=merge, options=PcbOptions, needs_base=True, stats=stats, min_models=1, idempotent=True,
    description="PCB: intra/inter parameter-competition balancing, drop, rescale (whole-model statistics)",
    paper="https://arxiv.org/abs/2410.02396", reference="duguodong7/pcb-merging pcb_merging kernel",
    deviations="zero ranges give 0 instead of NaN; no evolutionary search of λ",
))
