"""Per-family routing rules of mixture-of-experts models (``ROUTING_FAMILIES``, entry-point group
``xlt.routing_families``).

Routing analysis (:mod:`xlt.analyze.routing`) and router steering (:mod:`xlt.analyze.steer`) know no model family by
name: each reads the :class:`RoutingFamily` of the model's ``config.model_type`` from this registry. A family says
where the router of a decoder layer lives (``router``, a dotted path from the layer: ``mlp.gate``), which decoder
layers have one (``sparse_layers``, from the config: Qwen2/3-MoE's ``mlp_only_layers`` and
``decoder_sparse_step`` leave some layers dense) and how the router turns its logits into the experts a token uses
(``route``): the built-in families all take a softmax over every expert, keep the top-k and renormalise the kept
weights when ``renorm(gate)`` says so (OLMoE and Qwen2/3-MoE follow ``norm_topk_prob``; Mixtral always does).
``route`` reproduces the router's own arithmetic to the bit (the dtypes it computes and returns in), so a steered
router that adds nothing returns exactly what the unsteered one does.

A third-party package adds a family with :func:`register_routing_family` in a module its ``xlt.routing_families``
entry point names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from xlt.errors import XltError
from xlt.options import NoOptions
from xlt.registry import Registry


def softmax_topk(logits: torch.Tensor, top_k: int, renorm: bool, cast_back: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The softmax → top-k [→ renormalise] rule: ``(weights, indices)``, each ``(..., top_k)``.

    Computed as transformers' ``*TopKRouter`` computes it: the softmax in float32, ``torch.topk`` over the
    probabilities, the kept weights divided by their sum when ``renorm``; ``cast_back`` returns the weights in the
    logits' dtype (OLMoE, Qwen2/3-MoE), otherwise in float32 (Mixtral)."""
    probs = torch.nn.functional.softmax(logits, dtype=torch.float, dim=-1)
    top_value, top_index = torch.topk(probs, top_k, dim=-1)
    if renorm:
        top_value /= top_value.sum(dim=-1, keepdim=True)
    if cast_back:
        top_value = top_value.to(logits.dtype)
    return top_value, top_index


def all_layers(config, n_layers: int) -> list[int]:
    """Every decoder layer has a router (OLMoE, Mixtral)."""
    return list(range(n_layers))


def qwen_sparse_layers(config, n_layers: int) -> list[int]:
    """Qwen2/3-MoE: layer ``i`` has a router unless ``i`` is in ``mlp_only_layers``, and only when ``num_experts > 0``
    and ``(i + 1) % decoder_sparse_step == 0``."""
    dense = set(getattr(config, "mlp_only_layers", None) or [])
    step = getattr(config, "decoder_sparse_step", 1) or 1
    if getattr(config, "num_experts", 0) <= 0:
        return []
    return [i for i in range(n_layers) if i not in dense and (i + 1) % step == 0]


@dataclass(frozen=True)
class RoutingFamily:
    """How one model family routes tokens (see the module docstring)."""

    name: str
    description: str
    #: the ``config.model_type`` values this family covers
    model_types: tuple[str, ...]
    #: ``renorm(gate) -> bool``: whether the router renormalises the top-k weights
    renorm: Callable[[Any], bool]
    #: ``sparse_layers(config, n_layers) -> [layer]``: the decoder layers that have a router
    sparse_layers: Callable[[Any, int], list[int]] = all_layers
    #: dotted path of the router module from a decoder layer; its forward returns (logits, weights, indices)
    router: str = "mlp.gate"
    #: whether the router returns its top-k weights in the logits' dtype (else float32)
    cast_back: bool = True
    options: type = NoOptions

    def route(self, logits: torch.Tensor, top_k: int, renorm: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weights, indices)`` the family's router computes from ``logits`` (``(..., E)``)."""
        return softmax_topk(logits, top_k, renorm, self.cast_back)

    def top_k(self, gate, config) -> int:
        k = getattr(gate, "top_k", None) or getattr(config, "num_experts_per_tok", None)
        if not k:
            raise XltError(f"cannot tell how many experts a token uses in this {self.name} model",
                           "give top_k explicitly")
        return int(k)

    def n_experts(self, gate) -> int:
        e = getattr(gate, "num_experts", None)
        if e is None:
            e = gate.weight.shape[0]
        return int(e)


ROUTING_FAMILIES: Registry[RoutingFamily] = Registry(
    "routing family", "xlt.routing_families", builtins=(),
    fix="choose from: {names}, or register one with xlt.analyze.moe_families.register_routing_family")


def register_routing_family(name: str, description: str, model_types: tuple[str, ...], renorm: Callable[[Any], bool],
                            **fields) -> RoutingFamily:
    """Register the routing rule of a model family under ``name`` (fields as in :class:`RoutingFamily`)."""
    return ROUTING_FAMILIES.add(name, RoutingFamily(name, description, tuple(model_types), renorm, **fields))


def _norm_topk(gate) -> bool:
    return bool(getattr(gate, "norm_topk_prob", False))


register_routing_family("olmoe", "OLMoE: softmax over all experts, top-k, renormalised iff norm_topk_prob",
                        ("olmoe",), _norm_topk)
register_routing_family("mixtral", "Mixtral: softmax over all experts, top-k, always renormalised (float32 weights)",
                        ("mixtral",), lambda gate: True, cast_back=False)
register_routing_family("qwen2_moe", "Qwen2-MoE: softmax, top-k, renormalised iff norm_topk_prob; dense layers from "
                        "mlp_only_layers and decoder_sparse_step (the shared expert is not routed)",
                        ("qwen2_moe",), _norm_topk, sparse_layers=qwen_sparse_layers)
register_routing_family("qwen3_moe", "Qwen3-MoE: softmax, top-k, renormalised iff norm_topk_prob; dense layers from "
                        "mlp_only_layers and decoder_sparse_step",
                        ("qwen3_moe",), _norm_topk, sparse_layers=qwen_sparse_layers)


def family_of(model, family: str | None = None) -> RoutingFamily:
    """The routing family named ``family``, or the one whose ``model_types`` has the model's ``config.model_type``."""
    if family is not None:
        return ROUTING_FAMILIES.get(family)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for fam in ROUTING_FAMILIES.all().values():
        if model_type in fam.model_types:
            return fam
    names = ", ".join(ROUTING_FAMILIES.names())
    raise XltError(f"no routing rule for model type {model_type!r} ({type(model).__name__}): routing analysis and "
                   f"steering need a mixture-of-experts model of a known family ({names})",
                   "for a dense model, make a mixture of experts first (`xlt upcycle`); for another MoE family, "
                   "register its rule with xlt.analyze.moe_families.register_routing_family (entry-point group "
                   "xlt.routing_families) or pass family=")


def _get_path(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _is_router(module) -> bool:
    w = getattr(module, "weight", None)
    return isinstance(module, torch.nn.Module) and isinstance(w, torch.Tensor) and w.dim() == 2


@dataclass(frozen=True)
class Routers:
    """The routers of one model: ``gates[i]`` is the router of decoder layer ``layers[i]``."""

    family: RoutingFamily
    layers: tuple[int, ...]
    gates: tuple[torch.nn.Module, ...]
    n_layers: int
    n_experts: int
    top_k: int
    renorm: bool

    def gate(self, layer: int) -> torch.nn.Module:
        return self.gates[self.layers.index(layer)]


def find_routers(model, family: str | None = None) -> Routers:
    """The model's routers by decoder layer, checked against what its config says (one :class:`XltError` when the
    model has none, or when the modules and the config disagree on which layers are sparse)."""
    from xlt.analyze.capture import decoder_layers

    fam = family_of(model, family)
    layers = decoder_layers(model)
    found = [(i, g) for i, layer in enumerate(layers) if _is_router(g := _get_path(layer, fam.router))]
    if not found:
        raise XltError(f"this {type(model).__name__} has no router at layer.{fam.router} in any of its "
                       f"{len(layers)} decoder layers: it is not a mixture of experts",
                       "make a mixture of experts first (`xlt upcycle`), or analyse a MoE model")
    config = getattr(model, "config", None)
    expected = fam.sparse_layers(config, len(layers))
    if [i for i, _ in found] != expected:
        raise XltError(f"the {fam.name} config says layers {expected} have routers, but the modules have them at "
                       f"{[i for i, _ in found]}",
                       f"check the model's config (mlp_only_layers, decoder_sparse_step), or register a routing "
                       f"family whose router path and sparse_layers fit this model")
    gate0 = found[0][1]
    return Routers(fam, tuple(i for i, _ in found), tuple(g for _, g in found), len(layers),
                   fam.n_experts(gate0), fam.top_k(gate0, config), fam.renorm(gate0))
