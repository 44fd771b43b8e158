"""Registry of merge methods (``MERGES``): one name, one description, one options dataclass, one per-tensor function.

A method is a :class:`MergeMethod`: ``merge(base, tensors, params, ctx) -> Tensor`` computes one output
tensor (or one chunk of rows of it, for ``elementwise`` methods) from the base tensor (or None) and the
input tensors, all in the compute dtype. Its parameters are declared once, as a dataclass of
:func:`xlt.options.option` fields (type, default, one-line help, ``per_model=True`` for those given per input
model, ``check=`` for their range); the planner resolves them per tensor from the config (conditionals
included) and hands them to ``merge`` as a dict, option name -> value (a list, one value per input, for
per-model options). Methods that need statistics over a whole tensor or the whole model (thresholds,
quantiles) declare :class:`StatStage` s; the engine computes them with streaming passes
(:mod:`xlt.merge.stats`) and hands them over in ``ctx.stats``.

What is special about a method is declared on it, never tested by name in the engine: ``check_inputs`` (how many
inputs it takes beyond ``min_models``/``max_models``), ``copies`` (when an output tensor is a plain copy of its one
input), ``plan`` (a method that lays out its own output tensors, like ``layer_swap``), ``validate`` (combinations
of parameters), ``idempotent`` (merging identical inputs gives them back) and ``example`` (parameters for a small
valid merge). Built-in methods are the modules in ``MERGES``'s ``builtins``; third-party packages add methods
through the ``xlt.merges`` entry-point group (the entry point's module calls :func:`register_merge`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from xlt import options as opts
from xlt.errors import XltError
from xlt.options import NoOptions, OptionSpec
from xlt.registry import Registry

#: parameters some mergekit configs carry that xlt refuses by name (they would do nothing): name -> why
RETIRED = {"int8_mask": "mergekit stores its masks in int8 with it to save memory; it does not change the result, "
                        "and xlt's streaming engine has no such masks"}


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
    options: type = NoOptions  # dataclass of xlt.options.option fields: the method's parameters
    needs_base: bool = False
    uses_base: bool = False  # takes base_model as the base when one is given (implied by needs_base)
    min_models: int = 1  # inputs besides the base
    max_models: int | None = None
    elementwise: bool = True  # may be called on row chunks of a tensor
    stats: Callable[[dict], list[StatStage]] | None = None  # (params) -> stages
    # resolved params -> None, or (problem, fix) when their combination is invalid
    validate: Callable[[dict], tuple[str, str] | None] | None = None
    # (number of inputs, whether a base is given) -> None, or (problem, fix): a rule beyond min/max_models
    check_inputs: Callable[[int, bool], tuple[str, str] | None] | None = None
    # (params, number of inputs, whether a base is given) -> True when the output tensor is its one input, copied
    copies: Callable[[dict, int, bool], bool] | None = None
    # (planner) -> xlt.merge.planner.PlanParts: the method lays out the output tensors itself
    plan: Callable[[Any], Any] | None = None
    idempotent: bool = False  # identical inputs (and base) give the input back bit for bit, with default options
    example: dict = field(default_factory=dict)  # parameters for a small valid merge of 2-layer models (tests, docs)
    paper: str = ""
    reference: str = ""
    deviations: str = ""

    def specs(self) -> list[OptionSpec]:
        return _specs(self.options)

    def option(self, name: str) -> OptionSpec | None:
        return next((s for s in self.specs() if s.name == name), None)


@functools.lru_cache(maxsize=None)
def _specs(cls: type) -> list[OptionSpec]:
    return opts.specs(cls)


MERGES: Registry[MergeMethod] = Registry("merge method", "xlt.merges", builtins=tuple(
    f"xlt.merge.methods.{m}" for m in ("linear", "task_arithmetic", "ties", "dare", "pcb", "widen", "slerp",
                                       "passthrough", "layer_swap")), fix="choose merge_method from: {names}")


def register_merge(method: MergeMethod) -> MergeMethod:
    """Add a merge method to :data:`MERGES` (built-ins on import of their module; others from an entry point)."""
    if not isinstance(method.options, type):
        raise TypeError(f"merge method {method.name!r}: options must be a dataclass of xlt.options.option fields")
    return MERGES.add(method.name, method)


def unknown_parameter(method: MergeMethod, key: str, where: str) -> XltError:
    """The error for a parameter ``method`` does not declare (a retired mergekit one gets its own)."""
    if key in RETIRED:
        return XltError(f"merge config: {key} ({where}) is not an xlt parameter: {RETIRED[key]}",
                        f"remove {key} from the config")
    valid = [s.name for s in method.specs()]
    near = opts.closest(key, valid)
    return XltError(f"merge config: {method.name} has no parameter {key!r} ({where})",
                    (f"did you mean {near}? " if near else "") +
                    (f"{method.name}'s parameters: {', '.join(valid)}" if valid else f"{method.name} takes none") +
                    " (`xlt merges` lists them)")


# -- shared parameter checks -------------------------------------------------------------------------------
def weights_sum(p: dict) -> tuple[str, str] | None:
    """``normalize`` divides by the sum of the weights: refuse weights that sum to 0."""
    w = p.get("weight")
    if w is not None and p.get("normalize") and abs(sum(w)) < 1e-12:
        return ("the weights sum to 0, and normalize divides by their sum", "change the weights, or set normalize: false")
    return None
