"""``passthrough``: each output tensor is one input tensor, optionally multiplied by ``scale``.

With ``slices`` this builds frankenmerges (layers stacked from several models); a tensor whose scale is
1 is copied byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from xlt.merge.registry import MergeMethod, register_merge
from xlt.options import option


@dataclass
class PassthroughOptions:
    scale: float = option(1.0, "multiply the tensor by this", per_model=True)


def merge(base, tensors, p, ctx):
    s = p["scale"][0]
    return tensors[0] if s == 1 else tensors[0] * s


def copies(p: dict, n_inputs: int, has_base: bool) -> bool:
    return p["scale"][0] == 1


register_merge(MergeMethod(
    name="passthrough", merge=merge, options=PassthroughOptions, max_models=1, copies=copies, idempotent=True,
    description="copy one model's tensors (layer slices, frankenmerges)",
    reference="mergekit passthrough",
))
