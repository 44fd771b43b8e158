"""``ties``: TIES-merging (Yadav et al., NeurIPS 2023): trim, elect sign, disjoint merge.

1. Trim: keep the k = max(1, ⌊density·n⌋) largest |δ_t| of each task vector δ_t = θ_t − θ₀, zero the rest.
   ``trim_scope: tensor`` (default) ranks within each tensor, like mergekit; ``trim_scope: global`` ranks
   over the whole model (all tensors the method merges), like the TIES paper and its code. The threshold
   is exact (radix select, :mod:`xlt.merge.stats`); elements equal to it are kept in stream order
   (lowest flat index first, tensors in output order) until exactly k are kept. mergekit breaks such ties
   by an unstable argsort, so on inputs with ties at the threshold the two can differ there.
2.–3. Sign election and disjoint mean: see :mod:`xlt.merge.methods._gta` (``normalize`` defaults to true).
"""

from __future__ import annotations

import torch

from xlt.merge.methods._gta import combine
from xlt.merge.registry import MergeMethod, Param, StatStage, density_check, register_method
from xlt.merge.stats import topk_mask


def keep_count(n: int, density: float) -> int:
    """mergekit's and the paper's k: at least one element of a nonempty stream."""
    return n if density >= 1 else max(1, int(density * n))


def _values(base, tensors, p, ctx):
    return [(t - base).abs_() for t in tensors]


def _ranks(total: int, i: int, p: dict) -> list[int]:
    k = keep_count(total, p["density"][i])
    return [] if k >= total else [total - k]


def trim(delta: torch.Tensor, sels: list, key, ctx) -> torch.Tensor:
    """Zero the elements of ``delta`` that the top-k selection ``sels`` drops (``sels`` empty: keep all)."""
    if not sels:
        return delta
    sel = sels[0]
    keep_equal = (sel.total - sel.rank) - sel.greater
    mask, seen = topk_mask(delta.abs(), sel, keep_equal, ctx.counters.get(key, 0))
    ctx.counters[key] = seen
    return delta.mul_(mask)


def merge(base, tensors, p, ctx):
    deltas = [trim(t - base, ctx.stats[0][i], ("ties", i), ctx) for i, t in enumerate(tensors)]
    return combine(base, deltas, p["weight"], consensus=True, normalize=p["normalize"], lam=p["lambda"])


def stats(p: dict) -> list[StatStage]:
    return [StatStage(values=_values, ranks=_ranks, scope=p.get("trim_scope", "tensor"), nonneg=True)]


def scope_check(v) -> str | None:
    return None if v in ("tensor", "global") else f"trim_scope must be 'tensor' or 'global', got {v!r}"


register_method(MergeMethod(
    name="ties", merge=merge, needs_base=True, stats=stats,
    description="TIES: trim to top-density |δ|, elect sign, mean of agreeing task vectors",
    params=(Param("weight", float, 1.0, per_model=True, doc="weight of the model's task vector"),
            Param("density", float, 1.0, per_model=True, check=density_check, doc="fraction of |δ| kept"),
            Param("normalize", bool, True, doc="divide by the sum of agreeing weights"),
            Param("lambda", float, 1.0, doc="scale of the merged task vector"),
            Param("trim_scope", str, "tensor", check=scope_check, doc="tensor (mergekit) or global (paper)"),
            Param("int8_mask", bool, False, doc="accepted for mergekit configs; no effect on the result")),
    paper="https://arxiv.org/abs/2306.01708", reference="mergekit ties; TIES paper code (global trim)",
    deviations="ties at the threshold kept in stream order (mergekit: unstable argsort order)",
))
