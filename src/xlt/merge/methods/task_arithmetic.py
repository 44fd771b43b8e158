"""``task_arithmetic``: θ₀ + λ·Σ_t w_t (θ_t − θ₀) (divided by Σ w_t with ``normalize: true``).

Ilharco et al., 2023, "Editing models with task arithmetic". Equal to mergekit's ``task_arithmetic``.
"""

from __future__ import annotations

from dataclasses import dataclass

from xlt.merge.methods._gta import combine
from xlt.merge.registry import MergeMethod, register_merge, weights_sum
from xlt.options import option


@dataclass
class TaskArithmeticOptions:
    weight: float = option(1.0, "weight of the model's task vector", per_model=True)
    normalize: bool = option(False, "divide by the sum of weights")
    lambda_: float = option(1.0, "scale of the merged task vector", key="lambda")


def merge(base, tensors, p, ctx):
    return combine(base, [t - base for t in tensors], p["weight"], consensus=False, normalize=p["normalize"],
                   lam=p["lambda"])


register_merge(MergeMethod(
    name="task_arithmetic", merge=merge, options=TaskArithmeticOptions, needs_base=True, validate=weights_sum,
    idempotent=True, description="base + λ·(weighted sum of task vectors)",
    paper="https://arxiv.org/abs/2212.04089", reference="mergekit task_arithmetic",
))
