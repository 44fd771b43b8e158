"""``linear``: the weighted average Σ w_i θ_i / Σ w_i (``normalize: true``, the default) or the weighted sum.

Model soups (Wortsman et al., 2022). Equal to mergekit's ``linear``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xlt.merge.registry import MergeMethod, register_merge, weights_sum
from xlt.options import option


@dataclass
class LinearOptions:
    weight: float = option(1.0, "weight of the model", per_model=True)
    normalize: bool = option(True, "divide by the sum of weights")


def merge(base, tensors: list[torch.Tensor], p: dict, ctx) -> torch.Tensor:
    result = torch.zeros_like(tensors[0])
    for t, w in zip(tensors, p["weight"]):
        result.add_(t, alpha=float(w))
    if p["normalize"]:
        result.div_(float(sum(p["weight"])))
    return result


def copies(p: dict, n_inputs: int, has_base: bool) -> bool:
    """One input is its own average (or its own sum, at weight 1): copied byte for byte."""
    return n_inputs == 1 and not has_base and (p["normalize"] or p["weight"][0] == 1)


register_merge(MergeMethod(
    name="linear", merge=merge, options=LinearOptions, validate=weights_sum, copies=copies, idempotent=True,
    description="weighted average of the models (model soup)",
    paper="https://arxiv.org/abs/2203.05482", reference="mergekit linear",
))
