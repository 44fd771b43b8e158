"""``slerp``: spherical interpolation between two models (Shoemake, 1985), per tensor, in torch.

With v0 the base model's tensor (or the first model's) and v1 the other's, both flattened:
dot = ⟨v0/‖v0‖, v1/‖v1‖⟩; if |dot| > 0.9995 the result is the linear interpolation (1−t)v0 + t·v1;
otherwise θ = arccos(dot) and the result is sin((1−t)θ)/sin θ · v0 + sin(tθ)/sin θ · v1 — mergekit's
definition (which runs on numpy; this runs on torch).
"""

from __future__ import annotations

import math

import torch

from xlt.merge.registry import MergeMethod, Param, register_method, unit_check

DOT_THRESHOLD = 0.9995


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    n0, n1 = float(v0.norm()), float(v1.norm())
    dot = float((v0 / n0 * (v1 / n1)).sum()) if n0 > eps and n1 > eps else 1.0
    if abs(dot) > DOT_THRESHOLD:
        return (1 - t) * v0 + t * v1
    theta = math.acos(max(-1.0, min(1.0, dot)))
    s = math.sin(theta)
    return (math.sin(theta - theta * t) / s) * v0 + (math.sin(theta * t) / s) * v1


def merge(base, tensors, p, ctx):
    if base is not None:
        return slerp(p["t"], base, tensors[0])
    return slerp(p["t"], tensors[0], tensors[1])


register_method(MergeMethod(
    name="slerp", merge=merge, elementwise=False, uses_base=True, min_models=1, max_models=2,
    description="spherical interpolation between two models",
    params=(Param("t", float, 0.5, check=unit_check, doc="0 gives the base (first) model, 1 the other"),),
    paper="https://en.wikipedia.org/wiki/Slerp", reference="mergekit slerp",
))
