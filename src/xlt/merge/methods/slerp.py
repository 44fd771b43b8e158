"""``slerp``: spherical interpolation between two models (Shoemake, 1985), per tensor, in torch.

With v0 the base model's tensor (or the first model's) and v1 the other's, both flattened:
dot = ⟨v0/‖v0‖, v1/‖v1‖⟩; if |dot| > 0.9995 the result is the linear interpolation (1−t)v0 + t·v1;
otherwise θ = arccos(dot) and the result is sin((1−t)θ)/sin θ · v0 + sin(tθ)/sin θ · v1 — mergekit's
definition (which runs on numpy; this runs on torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from xlt.merge.registry import MergeMethod, register_merge
from xlt.options import option, unit_interval

DOT_THRESHOLD = 0.9995


@dataclass
class SlerpOptions:
    t: float = option(0.5, "0 gives the base (first) model, 1 the other", check=unit_interval)


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


def check_inputs(n_inputs: int, has_base: bool) -> tuple[str, str] | None:
    """Two ends: base_model and one model, or two models without a base."""
    if has_base != (n_inputs == 1):
        return (f"slerp interpolates two models; the config gives {n_inputs + has_base} (base_model counts as one)",
                "give base_model and one model, or two models without base_model")
    return None


register_merge(MergeMethod(
    name="slerp", merge=merge, options=SlerpOptions, elementwise=False, uses_base=True, min_models=1, max_models=2,
    check_inputs=check_inputs, idempotent=True, description="spherical interpolation between two models",
    paper="https://en.wikipedia.org/wiki/Slerp", reference="mergekit slerp",
))
