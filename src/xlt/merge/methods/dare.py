"""``dare_linear`` and ``dare_ties``: DARE (Yu et al., ICML 2024, "Language models are Super Mario").

Each task vector δ_t is dropped element-wise with probability 1 − p (p = ``density``) and the survivors
are rescaled by exactly 1/p (``rescale: true``, the paper's rule; mergekit instead rescales to the
dropped tensor's L1 norm, which equals 1/p only in expectation). Then ``dare_linear`` sums the weighted
deltas like task arithmetic and ``dare_ties`` elects signs like TIES (:mod:`xlt.merge.methods._gta`).

The mask is reproducible and independent of how the engine chunks a tensor: element j of model t of
tensor ``name`` draws from block ⌊j / 2²⁰⌋ of a generator seeded by (seed, name, t, block).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xlt import options as opts
from xlt.merge.methods._gta import combine
from xlt.merge.registry import MergeMethod, register_merge, weights_sum
from xlt.options import option
from xlt.util import stable_hash

BLOCK = 1 << 20


def uniform(seed: int, name: str, model: int, start: int, stop: int) -> torch.Tensor:
    """U[0,1) draws for flat elements ``start:stop`` of (``name``, ``model``), the same however they are chunked."""
    out = []
    b = start // BLOCK
    while b * BLOCK < stop:
        g = torch.Generator().manual_seed(stable_hash(f"{seed}|{name}|{model}|{b}") & ((1 << 63) - 1))
        block = torch.rand(BLOCK, generator=g)
        lo, hi = max(start, b * BLOCK) - b * BLOCK, min(stop, (b + 1) * BLOCK) - b * BLOCK
        out.append(block[lo:hi])
        b += 1
    return torch.cat(out) if out else torch.empty(0)


def drop(delta: torch.Tensor, density: float, rescale: bool, seed: int, name: str, model: int,
         offset: int) -> torch.Tensor:
    if density >= 1:
        return delta
    keep = uniform(seed, name, model, offset, offset + delta.numel()).reshape(delta.shape) < density
    out = delta * keep
    return out / density if rescale else out


def _merge(consensus: bool):
    def merge(base, tensors, p, ctx):
        deltas = [drop(t - base, p["density"][i], p["rescale"], ctx.seed, ctx.name, i, ctx.offset)
                  for i, t in enumerate(tensors)]
        return combine(base, deltas, p["weight"], consensus=consensus, normalize=p["normalize"], lam=p["lambda"])
    return merge


@dataclass
class DareOptions:
    weight: float = option(1.0, "weight of the model's task vector", per_model=True)
    density: float = option(1.0, "probability of keeping each delta element", per_model=True, check=opts.density)
    rescale: bool = option(True, "divide the kept elements by density (exact 1/p)")
    normalize: bool = option(False, "divide by the sum of (agreeing) weights")
    lambda_: float = option(1.0, "scale of the merged task vector", key="lambda")


register_merge(MergeMethod(
    name="dare_linear", merge=_merge(False), options=DareOptions, needs_base=True, validate=weights_sum,
    idempotent=True, example={"density": 0.5},
    description="DARE: random drop with exact 1/p rescale, then task arithmetic",
    paper="https://arxiv.org/abs/2311.03099", reference="DARE paper; mergekit dare_linear",
    deviations="rescale is exactly 1/density (mergekit: L1-norm ratio)",
))
register_merge(MergeMethod(
    name="dare_ties", merge=_merge(True), options=DareOptions, needs_base=True, validate=weights_sum,
    idempotent=True, example={"density": 0.5},
    description="DARE: random drop with exact 1/p rescale, then TIES sign election",
    paper="https://arxiv.org/abs/2311.03099", reference="DARE paper; mergekit dare_ties",
    deviations="rescale is exactly 1/density (mergekit: L1-norm ratio)",
))
