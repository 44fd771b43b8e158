"""``ties``: TIES-merging (Yadav et al., NeurIPS 2023): trim, elect sign, disjoint merge.

1. Trim: keep the k = max(1, ⌊density·n⌋) largest |δ_t| of each task vector δ_t = θ_t − θ₀, zero the rest.
   ``trim_scope: tensor`` (default) ranks within each tensor, like mergekit; ``trim_scope: global`` ranks
   over the whole model (all tensors the method merges), like the TIES paper and its code. The threshold
   is exact (radix select, :mod:`xlt.merge.stats`). When more elements equal the threshold than the k
   still has room for (a tie straddling the threshold; common with bf16 inputs), ``tie_break`` says which
   of them are kept:

   - ``index`` (default): in stream order, lowest flat index first (tensors in output order for
     ``global``), until exactly k are kept. Cheap (no sort) and deterministic.
   - ``mergekit``: the ones mergekit 0.1.5 keeps (``mergekit/sparsify.py: magnitude``:
     ``torch.argsort(|δ|.float().reshape(-1), descending=True)[:k]``, an unstable sort), found by running
     that same argsort on the tensor's |δ| — only for tensors with a straddling tie; every other tensor
     takes the threshold path, whose result is then the same set. The output equals mergekit's exactly
     when both compute δ in the same dtype (mergekit: ``dtype``, else the inputs' promoted dtype; xlt:
     ``dtype``, default float32, so set ``dtype`` for bf16 inputs) with the same torch build, on CPU.
     Tensor scope only (mergekit trims per tensor); costs one argsort of n elements per straddling
     tensor and model, like mergekit.
2.–3. Sign election and disjoint mean: see :mod:`xlt.merge.methods._gta` (``normalize`` defaults to true).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from xlt import options as opts
from xlt.merge.methods._gta import combine
from xlt.merge.registry import MergeMethod, StatStage, register_merge, weights_sum
from xlt.merge.stats import argsort_tie_bits, tie_bits_mask, topk_mask
from xlt.options import option


@dataclass
class TiesOptions:
    weight: float = option(1.0, "weight of the model's task vector", per_model=True)
    density: float = option(1.0, "fraction of |δ| kept", per_model=True, check=opts.density)
    normalize: bool = option(True, "divide by the sum of agreeing weights")
    lambda_: float = option(1.0, "scale of the merged task vector", key="lambda")
    trim_scope: Literal["tensor", "global"] = option("tensor", "tensor (mergekit) or global (the TIES paper)")
    tie_break: Literal["index", "mergekit"] = option(
        "index", "which |δ| equal to the trim threshold are kept: index (lowest flat index first) or mergekit "
                 "(mergekit's unstable argsort order; trim_scope: tensor only)")


def keep_count(n: int, density: float) -> int:
    """mergekit's and the paper's k: at least one element of a nonempty stream."""
    return n if density >= 1 else max(1, int(density * n))


def _values(base, tensors, p, ctx):
    return [(t - base).abs_() for t in tensors]


def _ranks(total: int, i: int, p: dict) -> list[int]:
    k = keep_count(total, p["density"][i])
    return [] if k >= total else [total - k]


def straddles(sels: list, i: int = 0, p: dict | None = None) -> bool:
    """Does the top-k of this selection cut through the elements equal to its threshold (some kept, some not)?"""
    if not sels:
        return False
    sel = sels[0]
    k = sel.total - sel.rank
    return sel.greater < k < sel.greater + sel.equal


def _mergekit_bits(values: torch.Tensor, sels: list, i: int, p: dict) -> torch.Tensor:
    sel = sels[0]
    return argsort_tie_bits(values, sel, sel.total - sel.rank)


def trim(delta: torch.Tensor, sels: list, key, ctx, bits: torch.Tensor | None = None) -> torch.Tensor:
    """Zero the elements of ``delta`` that the top-k selection ``sels`` drops (``sels`` empty: keep all).
    ``bits``: which of the elements equal to the threshold are kept (``tie_break: mergekit``), else the
    first ones in stream order."""
    if not sels:
        return delta
    sel = sels[0]
    seen = ctx.counters.get(key, 0)
    if bits is None:
        mask, seen = topk_mask(delta.abs(), sel, (sel.total - sel.rank) - sel.greater, seen)
    else:
        a = delta.abs()
        mask, seen = tie_bits_mask(a if a.dtype == torch.float32 else a.float(), sel, bits, seen)
    ctx.counters[key] = seen
    return delta.mul_(mask)


def merge(base, tensors, p, ctx):
    bits = ctx.refined[0] if ctx.refined and ctx.refined[0] else [None] * len(tensors)
    deltas = [trim(t - base, ctx.stats[0][i], ("ties", i), ctx, bits[i]) for i, t in enumerate(tensors)]
    return combine(base, deltas, p["weight"], consensus=True, normalize=p["normalize"], lam=p["lambda"])


def stats(p: dict) -> list[StatStage]:
    mk = p.get("tie_break", "index") == "mergekit"
    return [StatStage(values=_values, ranks=_ranks, scope=p.get("trim_scope", "tensor"), nonneg=True,
                      whole=straddles if mk else None, refine=_mergekit_bits if mk else None)]


def validate(p: dict) -> tuple[str, str] | None:
    if p.get("tie_break") == "mergekit" and p.get("trim_scope") == "global":
        return ("ties: tie_break: mergekit reproduces mergekit's per-tensor trim, so it cannot be combined with "
                "trim_scope: global (mergekit has no global trim)",
                "set trim_scope: tensor to match mergekit, or tie_break: index to keep the global trim")
    return weights_sum(p)


register_merge(MergeMethod(
    name="ties", merge=merge, options=TiesOptions, needs_base=True, stats=stats, validate=validate, idempotent=True,
    example={"density": 0.5},
    description="TIES: trim to top-density |δ|, elect sign, mean of agreeing task vectors",
    paper="https://arxiv.org/abs/2306.01708", reference="mergekit ties; TIES paper code (global trim)",
    deviations="with tie_break: index (default), elements equal to the trim threshold are kept in stream order "
               "(mergekit: unstable argsort order; tie_break: mergekit reproduces that order)",
))
