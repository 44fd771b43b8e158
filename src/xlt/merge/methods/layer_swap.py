"""``layer_swap``: layer swapping (Bandarkar et al., ICLR 2025) for cross-lingual composition.

Of L transformer layers, the bottom ``bottom`` and the top ``top`` come from the ``outer`` model (the
language expert), the middle from the other one (the task expert). Optional transition zones of
``transition_bottom`` / ``transition_top`` layers next to the swap boundaries are blends
α·θ_outer + (1−α)·θ_inner (``alpha``). Token embeddings come from ``embeddings_from`` and the final norm
and LM head from ``head_from`` (both default to the outer model), so the output can keep the vocabulary
of a vocabulary-adapted language expert.
"""

from __future__ import annotations

import torch

from xlt.errors import XltError
from xlt.merge.registry import MergeMethod, Param, nonneg_check, register_method, unit_check


def layer_sources(n_layers: int, bottom: int, top: int, transition_bottom: int = 0,
                  transition_top: int = 0) -> list[str]:
    """``"outer"``, ``"inner"`` or ``"blend"`` for each output layer, bottom first."""
    if bottom + transition_bottom + transition_top + top > n_layers:
        raise XltError(f"layer_swap asks for {bottom} + {transition_bottom} + {transition_top} + {top} outer/transition "
                       f"layers, more than the model's {n_layers}",
                       "reduce bottom, top or the transition zones so they fit the model's depth")
    out = []
    for i in range(n_layers):
        if i < bottom or i >= n_layers - top:
            out.append("outer")
        elif i < bottom + transition_bottom or i >= n_layers - top - transition_top:
            out.append("blend")
        else:
            out.append("inner")
    return out


def blend(outer: torch.Tensor, inner: torch.Tensor, alpha: float) -> torch.Tensor:
    return alpha * outer + (1 - alpha) * inner


def merge(base, tensors, p, ctx):
    """The per-tensor rule the planner sets up: one input is copied, two are blended with α."""
    if len(tensors) == 1:
        return tensors[0]
    return blend(tensors[0], tensors[1], p["alpha"])


register_method(MergeMethod(
    name="layer_swap", merge=merge, min_models=2, max_models=2,
    description="outer layers from one model, middle layers from another (optional blended transitions)",
    params=(Param("outer", str, "", doc="model giving the bottom/top layers [default: the first model]"),
            Param("bottom", int, 1, check=nonneg_check, doc="layers from the outer model at the bottom"),
            Param("top", int, 1, check=nonneg_check, doc="layers from the outer model at the top"),
            Param("transition_bottom", int, 0, check=nonneg_check, doc="blended layers above the bottom block"),
            Param("transition_top", int, 0, check=nonneg_check, doc="blended layers below the top block"),
            Param("alpha", float, 0.5, check=unit_check, doc="outer model's weight in transition layers"),
            Param("embeddings_from", str, "", doc="model giving token embeddings [default: outer]"),
            Param("head_from", str, "", doc="model giving final norm and LM head [default: embeddings_from]")),
    paper="https://arxiv.org/abs/2410.01335", reference="no released code; mergekit slices emulate it",
))
