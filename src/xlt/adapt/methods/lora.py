"""``lora``: PEFT LoRA on the transformer body in stage 2; the new embeddings are trained in stage 1 as always.

Saved as a standard PEFT adapter folder (``adapter_config.json``, ``adapter_model.safetensors``) that carries the
new input embeddings (and an untied head) itself (:func:`~xlt.adapt.methods.base.save_peft_adapter`), with
``adapter_config.json`` naming the base portably (``smollm2``, or the source folder as given) and
``xlt_method.json`` (base model name and fingerprint). With the target tokenizer beside it (``xlt adapt`` saves it),
plain peft loads it: ``base.resize_token_embeddings(len(tok)); PeftModel.from_pretrained(base, folder)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from xlt.adapt.methods.base import Method, adapter_dir, fingerprint, register_adaptation, save_peft_adapter
from xlt.errors import XltError
from xlt.options import non_negative, option, positive


def linear_modules(model) -> dict[str, torch.nn.Module]:
    """Linear layers of the body (the output head excluded), by full name."""
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return {n: m for n, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, Conv1D)) and m is not head and "lora_" not in n}


def _dims(m) -> tuple[int, int]:
    w = m.weight
    return (m.in_features, m.out_features) if isinstance(m, torch.nn.Linear) else (w.shape[0], w.shape[1])


def resolve_targets(model, target_modules, r: int | None = None) -> list[str]:
    """Full names of the linear layers ``target_modules`` selects (``"all-linear"`` or a list of name suffixes),
    checked: a suffix that matches nothing, or a rank above a layer's dimensions, raises with what exists."""
    lin = linear_modules(model)
    suffixes = sorted({n.rsplit(".", 1)[-1] for n in lin})
    if target_modules in ("all-linear", None):
        chosen = list(lin)
    else:
        wanted = [target_modules] if isinstance(target_modules, str) else list(target_modules)
        missing = [t for t in wanted if not any(n == t or n.endswith("." + t) for n in lin)]
        if missing:
            raise XltError(f"target modules {missing} match no linear layer of the model",
                           f"choose among the linear layers that exist: {', '.join(suffixes)} (or 'all-linear')")
        chosen = [n for n in lin if any(n == t or n.endswith("." + t) for t in wanted)]
    if r is not None:
        for n in chosen:
            d_in, d_out = _dims(lin[n])
            if r > min(d_in, d_out):
                raise XltError(f"rank {r} is larger than layer {n}'s dimensions ({d_in} in, {d_out} out)",
                               f"use a rank of at most {min(min(_dims(lin[c])) for c in chosen)} for these targets")
    return chosen


def lora_config(model, r: int, alpha: float, dropout: float, target_modules, **kw):
    from peft import LoraConfig

    chosen = resolve_targets(model, target_modules, r)
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=chosen, bias="none",
                      init_lora_weights=True, **kw)


@dataclass
class LoraOptions:
    r: int = option(8, "LoRA rank", check=positive)
    alpha: float = option(16, "LoRA alpha (the update is scaled by alpha/r)", check=positive)
    dropout: float = option(0.0, "dropout on the LoRA input", check=non_negative)
    target_modules: str | list[str] = option("all-linear", "linear layers to adapt: all-linear or name suffixes")
    adapter_name: str = option("default", "PEFT adapter name")
    seed: int = option(0, "seed of A's random initialisation")


@register_adaptation("lora", options=LoraOptions)
class Lora(Method):
    description = "PEFT LoRA on the transformer's linear layers in stage 2 (embeddings trained in stage 1)"

    def prepare(self, model):
        from peft import get_peft_model

        o = self.config
        cfg = lora_config(model, o.r, o.alpha, o.dropout, o.target_modules)
        with torch.random.fork_rng(devices=[]):  # A's random init depends on the seed only, not on the caller's RNG
            torch.manual_seed(o.seed)
            return get_peft_model(model, cfg, adapter_name=o.adapter_name)

    def stage2_parameters(self, model):
        return [p for n, p in model.named_parameters() if "lora_" in n]

    def save_weights(self, model, folder: Path) -> dict:
        return save_peft_adapter(model, folder, self.config.adapter_name)

    @classmethod
    def load_weights(cls, model, folder: Path, meta: dict):
        from peft import PeftModel

        name = cls.config_from(meta["options"]).adapter_name
        sub = adapter_dir(folder, name)
        return PeftModel.from_pretrained(model, str(sub), adapter_name=name)


__all__ = ["Lora", "LoraOptions", "fingerprint", "linear_modules", "lora_config", "resolve_targets"]
