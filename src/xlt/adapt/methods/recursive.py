"""``recursive``: Relaxed Recursive Transformers (Bae et al., ICLR 2025) converted from a pretrained model.

The L layers become K shared layers looped B = L/K times: depth position ``l`` runs shared layer
``k(l) = l mod K``. The shared block is initialised

- ``average``: ``W'_k = mean{W_l : l mod K = k}`` (with the merge engine's ``linear`` method when
  :mod:`xlt.merge` is installed, else directly),
- ``stepwise``: ``W'_k = W_{k·B}``,
- ``lower``: ``W'_k = W_k``.

Every depth position gets its own LoRA on every linear layer ("relaxation"), initialised from the
truncated SVD of the residual ``R_l = W_l − W'_{k(l)}``: ``B = U_r √Σ_r / √s``, ``A = √Σ_r V_rᵀ / √s`` with
``s = α/r``, so ``s·BA`` is the best rank-r approximation of ``R_l``; at full rank the original model is
reproduced, at rank 0 it is the pure recursive model. The looped positions share the base tensors (one
storage); stage 2 trains the shared block and the LoRAs together (gradients of every position add up in
the shared tensors). Deviation: the norm weights stay per position (2·d values per layer) so that full
rank reproduces the original exactly; the paper does not settle this in the material we have.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from xlt import arch
from xlt.adapt.methods.base import Method, register_adaptation
from xlt.errors import XltError
from xlt.options import non_negative, option, positive


def _layer_list(model) -> nn.ModuleList:
    return arch.layer_list(model)


def _shared_names(layer) -> list[str]:
    """Module names of a layer whose weights are shared across loops: the linear layers (``nn.Linear`` and GPT-2's
    ``Conv1D``; norms and fused MoE expert tensors stay per position)."""
    from transformers.pytorch_utils import Conv1D

    return [n for n, m in layer.named_modules() if isinstance(m, (nn.Linear, Conv1D))]


def _average(tensors: list[torch.Tensor]) -> torch.Tensor:
    try:
        from xlt.merge.engine import merge_tensors

        return merge_tensors("linear", None, tensors).to(tensors[0].dtype)
    except ImportError:
        return torch.stack(tensors).mean(0)


def to_recursive(model, K: int, init: str = "average", r: int = 8, alpha: float | None = None, seed: int = 0):
    """Convert ``model`` (in place) into K shared layers looped L/K times, with a per-position LoRA of rank ``r``
    initialised from the SVD of the residuals (``r = 0``: no LoRA). Returns the model (a PeftModel when r > 0)."""
    layers = _layer_list(model)
    L = len(layers)
    if not 1 <= K <= L or L % K:
        divisors = [k for k in range(1, L + 1) if L % k == 0]
        raise XltError(f"{L} layers cannot be looped as K = {K} shared layers", f"choose K among the divisors of {L}: {divisors}")
    if init not in ("average", "stepwise", "lower"):
        raise XltError(f"unknown recursive init {init!r}", "choose average, stepwise or lower")
    B = L // K
    lin_names = _shared_names(layers[0])
    orig = [{n: layers[l].get_submodule(n).weight.detach().clone() for n in lin_names} for l in range(L)]
    dims = {n: tuple(orig[0][n].shape) for n in lin_names}
    if r > min(min(d) for d in dims.values()):
        n = min(dims, key=lambda x: min(dims[x]))
        raise XltError(f"rank {r} is larger than layer {n}'s dimensions ({dims[n][1]} in, {dims[n][0]} out)",
                       f"use a rank of at most {min(dims[n])}")
    shared = []
    for k in range(K):
        group = [l for l in range(L) if l % K == k]
        src = {"average": None, "stepwise": k * B, "lower": k}[init]
        shared.append({n: nn.Parameter(_average([orig[l][n] for l in group]) if src is None else orig[src][n].clone())
                       for n in lin_names})
    for l in range(L):  # every position keeps its module (and norms); its linear weights become the shared ones
        for n in lin_names:
            lin = layers[l].get_submodule(n)
            lin.weight = shared[l % K][n]
    model.config.xlt_recursive = {"K": K, "B": B, "init": init, "r": r}
    if r == 0:
        return model
    from peft import LoraConfig, get_peft_model

    alpha = alpha or r
    prefix = arch.of(model).layer_prefix
    targets = [f"{prefix}{l}.{n}" for l in range(L) for n in lin_names]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pm = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, bias="none",
                                              fan_in_fan_out=arch.of(model).family == "gpt2"))
    s = alpha / r
    with torch.no_grad():
        for l in range(L):
            for n in lin_names:
                layer = pm.base_model.model.get_submodule(f"{prefix}{l}.{n}")
                R = (orig[l][n].double() - shared[l % K][n].detach().double())
                if getattr(layer, "fan_in_fan_out", False):  # GPT-2's Conv1D stores (in, out): ΔWᵀ = B A
                    R = R.T
                U, S, Vh = torch.linalg.svd(R, full_matrices=False)
                root = S[:r].sqrt()
                dt = orig[l][n].dtype
                layer.lora_B["default"].weight.copy_((U[:, :r] * root / s ** 0.5).to(dt))
                layer.lora_A["default"].weight.copy_((root[:, None] * Vh[:r] / s ** 0.5).to(dt))
    return pm


def shared_parameters(model) -> list[nn.Parameter]:
    """The shared block, the per-position norms and the LoRAs (what stage 2 trains), each once."""
    emb = {id(p) for p in _emb(model)}
    seen, out = set(), []
    for n, p in model.named_parameters():
        if id(p) in emb or id(p) in seen:
            continue
        seen.add(id(p))
        out.append(p)
    return out


def _emb(model):
    return arch.embedding_parameters(model)


def unique_parameters(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@dataclass
class RecursiveOptions:
    K: int | None = option(None, "shared layers (a divisor of the depth) [default: half the layers]", check=positive)
    init: Literal["average", "stepwise", "lower"] = option("average", "how the shared block starts")
    r: int = option(8, "rank of each depth position's LoRA (0: the pure recursive model)", check=non_negative)
    alpha: float | None = option(None, "LoRA alpha [default: r]", check=positive)
    seed: int = option(0, "seed of the LoRA wrapper")


@register_adaptation("recursive", options=RecursiveOptions)
class Recursive(Method):
    description = "relaxed recursive transformer: K shared layers looped L/K times + per-position SVD-initialised LoRA"

    def preserves_outputs(self) -> bool:
        return False  # K < L shared layers and a truncated residual approximate the original model

    def prepare(self, model):
        o = self.config
        o.K = o.K or max(1, len(_layer_list(model)) // 2)
        return to_recursive(model, o.K, o.init, o.r, o.alpha, o.seed)

    def stage2_parameters(self, model):
        return shared_parameters(model)

    @classmethod
    def export_model(cls, model):
        """Unroll the loop: every depth position gets its own copy of the shared block's weights, then its LoRA is
        merged into that copy, which gives the standard architecture with L independent layers (the same logits,
        L/K times the shared block's parameters)."""
        from transformers.pytorch_utils import Conv1D

        base = getattr(model, "get_base_model", lambda: model)()
        seen = set()
        for layer in _layer_list(base):
            for mod in layer.modules():
                w = getattr(mod, "weight", None)
                if not isinstance(mod, (nn.Linear, Conv1D)) or w is None:
                    continue
                if id(w) in seen:  # a later loop of a shared tensor: its own copy, so merging stays per position
                    mod.weight = nn.Parameter(w.detach().clone(), requires_grad=w.requires_grad)
                seen.add(id(mod.weight))
        model = super().export_model(model)
        model.config.__dict__.pop("xlt_recursive", None)
        return model

    def save_weights(self, model, folder: Path) -> dict:
        from safetensors.torch import save_model

        save_model(model, str(folder / "recursive.safetensors"))  # shared tensors stored once
        return {"unique_parameters": unique_parameters(model)}

    @classmethod
    def load_weights(cls, model, folder: Path, meta: dict):
        from safetensors.torch import load_model

        o = cls.config_from(meta["options"])
        model = to_recursive(model, o.K, o.init, o.r, o.alpha, o.seed)
        load_model(model, str(folder / "recursive.safetensors"))
        return model


__all__ = ["Recursive", "shared_parameters", "to_recursive", "unique_parameters"]
