"""``task_arithmetic``: θ₀ + λ·Σ_t w_t (θ_t − θ₀) (divided by Σ w_t with ``normalize: true``).

Ilharco et al., 2023, "Editing models with task arithmetic". Equal to mergekit's ``task_arithmetic``.
"""

from __future__ import annotations

from xlt.merge.methods._gta import combine
from xlt.merge.registry import MergeMethod, Param, register_method


def merge(base, tensors, p, ctx):
    return combine(base, [t - base for t in tensors], p["weight"], consensus=False, normalize=p["normalize"],
                   lam=p["lambda"])


register_method(MergeMethod(
    name="task_arithmetic", merge=merge, needs_base=True,
    description="base + λ·(weighted sum of task vectors)",
    params=(Param("weight", float, 1.0, per_model=True, doc="weight of the model's task vector"),
            Param("normalize", bool, False, doc="divide by the sum of weights"),
            Param("lambda", float, 1.0, doc="scale of the merged task vector")),
    paper="https://arxiv.org/abs/2212.04089", reference="mergekit task_arithmetic",
))
