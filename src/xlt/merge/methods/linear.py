"""``linear``: the weighted average Σ w_i θ_i / Σ w_i (``normalize: true``, the default) or the weighted sum.

Model soups (Wortsman et al., 2022). Equal to mergekit's ``linear``.
"""

from __future__ import annotations

import torch

from xlt.merge.registry import MergeMethod, Param, register_method


def merge(base, tensors: list[torch.Tensor], p: dict, ctx) -> torch.Tensor:
    result = torch.zeros_like(tensors[0])
    for t, w in zip(tensors, p["weight"]):
        result.add_(t, alpha=float(w))
    if p["normalize"]:
        result.div_(float(sum(p["weight"])))
    return result


register_method(MergeMethod(
    name="linear", merge=merge, description="weighted average of the models (model soup)",
    params=(Param("weight", float, 1.0, per_model=True, doc="weight of the model"),
            Param("normalize", bool, True, doc="divide by the sum of weights")),
    paper="https://arxiv.org/abs/2203.05482", reference="mergekit linear",
))
