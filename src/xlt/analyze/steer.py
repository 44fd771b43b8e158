"""Router steering: make chosen experts win (or lose) the routing of every token in chosen layers.

:class:`RouterSteer` is a context manager that wraps the forward of each steered layer's router (``layer.mlp.gate``
for the built-in families, see :mod:`xlt.analyze.moe_families`). The wrapper calls the router as it was, changes its
logits, and routes again with the family's own rule (softmax → top-k → renormalise as that router does), so the
experts still receive the weights the model's arithmetic gives them:

- ``hard`` (SteerMoE, Fayyaz et al. 2025): the logits become log-softmax scores and every listed expert's score is
  set to the token's maximum + 0.01, so each wins a top-k slot and the largest weight (at most top-k experts a layer);
- ``bias``: ``epsilon`` is added to the listed experts' logits before the native rule (ε = 0 changes nothing, to the
  bit; a negative ε discourages them);
- ``deactivate``: the listed experts' log-softmax scores become the token's minimum − 0.01, so none is ever chosen
  (at most E − top-k experts a layer).

The router returns the changed logits as its router logits, so a routing capture inside the context sees the steered
routing. Leaving the context restores each router's forward as it was, also when the body raises.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from xlt.analyze.moe_families import find_routers
from xlt.errors import XltError

STEER_MODES = ("hard", "bias", "deactivate")
#: SteerMoE's margin over the token's maximum (hard) or under its minimum (deactivate)
MARGIN = 0.01


class RouterSteer:
    """Steer the routers of ``model``: ``experts`` maps decoder-layer indices to expert ids; ``mode`` is ``hard``,
    ``bias`` (needs ``epsilon``) or ``deactivate`` (see the module docstring). Every bad input is refused with one
    :class:`~xlt.errors.XltError` before any router is touched."""

    def __init__(self, model, experts: Mapping[int, Sequence[int]], mode: str = "hard", epsilon: float | None = None,
                 family: str | None = None):
        if mode not in STEER_MODES:
            raise XltError(f"unknown steering mode {mode!r}", f"choose from: {', '.join(STEER_MODES)}")
        if mode == "bias":
            if epsilon is None or isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) \
                    or not math.isfinite(epsilon):
                raise XltError(f"bias steering needs a finite number epsilon, not {epsilon!r}",
                               "give epsilon=, the amount added to the chosen experts' router logits")
        elif epsilon is not None:
            raise XltError(f"epsilon only applies to bias steering, not to {mode}",
                           "leave epsilon out, or use mode='bias'")
        self.routers = r = find_routers(model, family)
        self.mode, self.epsilon = mode, (float(epsilon) if epsilon is not None else None)
        self.experts: dict[int, list[int]] = {}
        for layer, ids in dict(experts).items():
            if isinstance(layer, bool) or not isinstance(layer, int):
                raise XltError(f"layer {layer!r} is not a decoder-layer index", "give layers as integers")
            if layer not in r.layers:
                where = (f"layer {layer} has no router (a dense layer)" if 0 <= layer < r.n_layers
                         else f"layer {layer} does not exist (the model has {r.n_layers} decoder layers)")
                raise XltError(where, f"steer layers that have a router: {list(r.layers)}")
            ids = list(ids)
            bad = [e for e in ids if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e < r.n_experts]
            if bad:
                raise XltError(f"experts {bad} of layer {layer} do not exist (the layer has {r.n_experts} experts)",
                               f"give expert ids from 0 to {r.n_experts - 1}")
            if len(set(ids)) != len(ids):
                raise XltError(f"experts repeated in layer {layer}: {ids}", "name each expert once")
            if mode == "hard" and len(ids) > r.top_k:
                raise XltError(f"{len(ids)} experts forced on in layer {layer}, but each token uses only "
                               f"{r.top_k}", f"force at most {r.top_k} experts per layer (top-k), or use bias mode")
            if mode == "deactivate" and len(ids) > r.n_experts - r.top_k:
                raise XltError(f"{len(ids)} of {r.n_experts} experts deactivated in layer {layer} leaves fewer than "
                               f"the {r.top_k} each token uses", f"deactivate at most {r.n_experts - r.top_k}")
            if ids:
                self.experts[layer] = ids
        self._saved: list[tuple[torch.nn.Module, bool, object]] = []
        self._active = False

    def steer_logits(self, logits: torch.Tensor, experts: Sequence[int]) -> torch.Tensor:
        """The changed router logits (``(..., E)``) of one steered layer."""
        idx = torch.tensor(experts, dtype=torch.long, device=logits.device)
        if self.mode == "bias":
            out = logits.clone()
            out[..., idx] = out[..., idx] + self.epsilon
            return out
        scores = torch.nn.functional.log_softmax(logits.float(), dim=-1)
        if self.mode == "hard":
            value = scores.max(-1, keepdim=True).values + MARGIN
        else:
            value = scores.min(-1, keepdim=True).values - MARGIN
        scores[..., idx] = value.expand(*scores.shape[:-1], len(experts))
        return scores

    def _wrap(self, gate: torch.nn.Module, experts: list[int]):
        previous = gate.forward
        family, renorm = self.routers.family, self.routers.renorm
        top_k = family.top_k(gate, None)

        def forward(hidden_states, *args, **kwargs):
            out = previous(hidden_states, *args, **kwargs)
            logits = out[0] if isinstance(out, tuple) else out
            steered = self.steer_logits(logits, experts)
            if not isinstance(out, tuple):
                return steered  # a plain-logits router: its block applies the top-k
            weights, indices = family.route(steered, top_k, renorm)
            if family.cast_back:
                weights = weights.to(logits.dtype)
            return (steered, weights, indices) + tuple(out[3:])

        return forward

    def __enter__(self) -> "RouterSteer":
        if self._active:
            raise RuntimeError("this RouterSteer is already active")
        self._active = True
        try:
            for layer, experts in self.experts.items():
                gate = self.routers.gate(layer)
                self._saved.append((gate, "forward" in gate.__dict__, gate.__dict__.get("forward")))
                gate.forward = self._wrap(gate, experts)
        except BaseException:
            self._restore()
            raise
        return self

    def _restore(self) -> None:
        while self._saved:
            gate, had, previous = self._saved.pop()
            if had:
                gate.forward = previous
            else:
                del gate.forward
        self._active = False

    def __exit__(self, *exc) -> bool:
        self._restore()
        return False
