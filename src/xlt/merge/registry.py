"""Registry of merge methods: one name, one description, one pure per-tensor function.

A method is a :class:`MergeMethod`: ``merge(base, tensors, params, ctx) -> Tensor`` computes one output
tensor (or one chunk of rows of it, for ``elementwise`` methods) from the base tensor (or None) and the
input tensors, all in the compute dtype. Methods that need statistics over a whole tensor or the whole
model (thresholds, quantiles) declare :class:`StatStage` s; the engine computes them with streaming
passes (:mod:`xlt.merge.stats`) and hands them over in ``ctx.stats``.

Built-in methods register themselves in :mod:`xlt.merge.methods`; third-party packages add methods
through the ``xlt.merges`` entry-point group (the entry point's module calls :func:`register_method`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xlt.registry import Registry
from typing import Any, Callable

import torch

from xlt.errors import XltError

REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """A method parameter: ``per_model`` ones are given per input model (``models[*].parameters``)."""

    name: str
    kind: type
    default: Any = REQUIRED
    per_model: bool = False
    check: Callable[[Any], str | None] | None = None  # returns a problem text, or None when valid
    doc: str = ""


@dataclass(frozen=True)
class StatStage:
    """Order statistics a method needs before it can merge.

    ``values(base, tensors, params, ctx)`` gives one tensor per input model (same shape as the chunk)
    whose ``ranks(total, model_index, params)`` ascending order statistics are wanted, over each tensor
    (``scope="tensor"``) or over all tensors the method merges (``scope="global"``). Results arrive in
    ``ctx.stats[stage_index][model_index]`` as a list of :class:`~xlt.merge.stats.Selection`.
    """

    values: Callable
    ranks: Callable[[int, int, dict], list[int]]
    scope: str = "tensor"
    nonneg: bool = False  # the values are magnitudes (≥ 0, never -0.0): a faster selection path
    # Optional, tensor scope only: when ``whole(selections, model_index, params)`` is true for a model, the
    # engine hands that model's values over the whole tensor (flat, stream order) to
    # ``refine(values, selections, model_index, params)`` and puts the result in
    # ``ctx.refined[stage_index][model_index]`` (None for the other models). Such a stage's ``values`` must
    # also work per model: ``values(base, [tensor_i], ...)[0]`` equals ``values(base, tensors, ...)[i]``.
    whole: Callable[[list, int, dict], bool] | None = None
    refine: Callable[[torch.Tensor, list, int, dict], Any] | None = None


@dataclass
class Context:
    """What a method may read besides its tensors (filled by the engine)."""

    name: str = ""
    shape: tuple = ()
    offset: int = 0  # flat index of the chunk's first element within the tensor
    seed: int = 0
    stats: list = field(default_factory=list)
    refined: list = field(default_factory=list)  # per stage, per model: what StatStage.refine returned (or None)
    counters: dict = field(default_factory=dict)  # state carried across chunks (tie counts)
    is_embedding: bool = False


@dataclass(frozen=True)
class MergeMethod:
    name: str
    merge: Callable[..., torch.Tensor]
    description: str
    params: tuple[Param, ...] = ()
    needs_base: bool = False
    uses_base: bool = False  # takes base_model as the base when one is given (implied by needs_base)
    min_models: int = 1
    max_models: int | None = None
    elementwise: bool = True
    stats: Callable[[dict], list[StatStage]] | None = None  # (global params) -> stages
    # resolved params -> None, or (problem, fix) when their combination is invalid
    validate: Callable[[dict], tuple[str, str] | None] | None = None
    paper: str = ""
    reference: str = ""
    deviations: str = ""
    options: type | None = None

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


_REGISTRY: Registry[MergeMethod] = Registry("merge method", "xlt.merges", builtins=("xlt.merge.methods",),
                                           fix="choose merge_method from: {names}")
METHODS: dict[str, MergeMethod] = _REGISTRY.entries
MERGES = _REGISTRY


def register_method(method: MergeMethod) -> MergeMethod:
    return _REGISTRY.add(method.name, method)


def available_methods() -> dict[str, MergeMethod]:
    return _REGISTRY.all()


def get_method(name: str) -> MergeMethod:
    return _REGISTRY.get(name)


# -- shared parameter checks -------------------------------------------------------------------------------
def density_check(v) -> str | None:
    return None if 0 < v <= 1 else f"density must be in (0, 1], got {v}"


def nonneg_check(v) -> str | None:
    return None if v >= 0 else f"must be ≥ 0, got {v}"


def unit_check(v) -> str | None:
    return None if 0 <= v <= 1 else f"must be in [0, 1], got {v}"
