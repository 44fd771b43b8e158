"""``passthrough``: each output tensor is one input tensor, optionally multiplied by ``scale``.

With ``slices`` this builds frankenmerges (layers stacked from several models); a tensor whose scale is
1 is copied byte for byte.
"""

from __future__ import annotations

from xlt.merge.registry import MergeMethod, Param, register_method


def merge(base, tensors, p, ctx):
    s = p["scale"][0]
    return tensors[0] if s == 1 else tensors[0] * s


register_method(MergeMethod(
    name="passthrough", merge=merge, max_models=1,
    description="copy one model's tensors (layer slices, frankenmerges)",
    params=(Param("scale", float, 1.0, per_model=True, doc="multiply the tensor by this"),),
    reference="mergekit passthrough",
))
