"""The unified view of parameter-efficient transfer (He et al., ICLR 2022) as one configuration space.

Every method adds a modification Δh to a hidden representation; a configuration says

- ``function``: ``adapter`` (``ReLU(x W_down) W_up``), ``lora`` (``x W_down W_up`` on the weights) or
  ``prefix`` (attention to ``size`` learned key/value vectors; PEFT prefix tuning);
- ``where``: ``attention`` or ``ffn`` (LoRA on ``q_proj, v_proj`` or on ``up_proj, down_proj``);
- ``form``: ``sequential`` (Δh computed from the sublayer's output and added to it) or ``parallel``
  (Δh computed from the sublayer's input and added to its output); LoRA and prefix are parallel by nature;
- composition: scaled addition ``h + s·Δh`` (``scale``; prefix tuning's gate is its own).

``size`` is the bottleneck width, the LoRA rank or the number of prefix vectors. Prefix vectors start as the
keys and values the model itself computes for the first ``size`` tokens of the training data
(``prefix_init=tokens``, Li & Liang's initialisation from real words: the model starts as the base model
reading those tokens first) rather than PEFT's N(0, 1) draw (``prefix_init=random``), which on SmolLM2 →
Swahili starts far worse than every other point and stays behind in a short budget (docs/peft.md). The presets registered
below are the paper's comparison grid, so ``xlt adapt --method prefix,lora-attn,lora-ffn,seq-adapter-attn,
seq-adapter-ffn,par-adapter-attn,par-adapter-ffn,scaled-par-adapter-ffn`` runs it in one command and the
report's method table gives bits/byte against trainable parameters. Up-projections start at zero, so
adapters and LoRA leave the model unchanged at the start.

``function=lora`` and ``function=prefix`` are saved as standard PEFT adapters carrying the new vocabulary (plain peft
loads them, :func:`~xlt.adapt.methods.base.save_peft_adapter`); bottleneck adapters are xlt's own hooks
(``unified.safetensors`` + ``embeddings.safetensors``), read by :func:`~xlt.adapt.methods.load_adapted`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from xlt import arch
from xlt.adapt.adapters import Bottleneck, output_hook
from xlt.adapt.methods.base import Method, register_adaptation, save_peft_adapter
from xlt.errors import XltError
from xlt.options import option, positive, with_defaults


def _sublayers(model, where: str):
    return [arch.attention(layer, model) if where == "attention" else arch.ffn(layer, model)
            for layer in arch.layers(model)]


def attach_adapters(model, where: str, form: str, size: int, scale: float, seed: int = 0) -> nn.ModuleList:
    """Bottleneck adapters on every layer's ``where`` sublayer, ``form`` sequential or parallel (hooks)."""
    d = model.get_input_embeddings().weight.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mods = nn.ModuleList(Bottleneck(d, size, scale) for _ in _sublayers(model, where))
    model.add_module("xlt_unified", mods)

    def hook(ad):
        return output_hook(lambda h, x: h + ad(h if form == "sequential" else x))

    for sub, ad in zip(_sublayers(model, where), mods):
        sub.register_forward_hook(hook(ad), with_kwargs=True)
    return mods


def init_prefix_from_tokens(peft_model, ids: torch.Tensor) -> None:
    """Set a PEFT prefix-tuning model's prefix to the keys and values its base model computes for ``ids``
    (one sequence of ``num_virtual_tokens`` token ids), so the model reads as the base model given ``ids`` first."""
    cfg = peft_model.active_peft_config
    n, heads = cfg.num_virtual_tokens, cfg.num_attention_heads
    ids = torch.as_tensor(ids).long().reshape(1, -1)
    if ids.shape[1] != n:
        raise XltError(f"{ids.shape[1]} tokens given for {n} prefix vectors", f"give exactly {n} token ids")
    base = peft_model.get_base_model()
    weight = peft_model.prompt_encoder[peft_model.active_adapter].embedding.weight
    with torch.no_grad():
        cache = base(input_ids=ids.to(weight.device), use_cache=True).past_key_values
        layers = [(c.keys, c.values) for c in cache.layers] if hasattr(cache, "layers") else list(cache)
        if len(layers) != cfg.num_layers:
            raise XltError(f"the model returned {len(layers)} layers of keys/values for {cfg.num_layers} prefix layers",
                           "use prefix_init=random for this model")
        kept = min(k.shape[-2] for k, _ in layers)
        if kept < n:
            raise XltError(f"the model keeps keys/values of only {kept} tokens in some layers (a sliding attention "
                           f"window), fewer than the {n} prefix vectors",
                           f"use -M size={kept} or fewer, or prefix_init=random")
        # PEFT's layout: (token, layer, key|value, head, head_dim), flattened per token
        kv = torch.stack([torch.stack([k[0], v[0]]) for k, v in layers])  # layer, 2, head, token, head_dim
        if kv.shape[2] != heads:
            raise XltError(f"the model's cache has {kv.shape[2]} heads, the prefix {heads}", "use prefix_init=random")
        weight.copy_(kv.permute(3, 0, 1, 2, 4).reshape(n, -1).to(weight.dtype))


@dataclass
class UnifiedOptions:
    function: Literal["adapter", "lora", "prefix"] = option("adapter", "the modification: a bottleneck adapter, "
                                                                      "LoRA on the weights, or prefix tuning")
    where: Literal["attention", "ffn"] = option("ffn", "the sublayer it modifies")
    form: Literal["sequential", "parallel"] = option("parallel", "Δh from the sublayer's output (sequential) or "
                                                                 "input (parallel); LoRA and prefix are parallel")
    size: int = option(16, "bottleneck width, LoRA rank or number of prefix vectors", check=positive)
    scale: float = option(1.0, "s in h + s·Δh (for LoRA: alpha = s·size)")
    seed: int = option(0, "seed of the new modules' initialisation")
    prefix_init: Literal["tokens", "random"] = option("tokens", "prefix vectors start as the keys/values of the first "
                                                                "training tokens (tokens) or PEFT's N(0, 1) (random)")

    def __post_init__(self):
        if self.function in ("lora", "prefix") and self.form != "parallel":
            raise XltError(f"{self.function} is a parallel modification; form=sequential does not exist for it",
                           "use form=parallel, or function=adapter for a sequential one")
        if self.function == "prefix" and self.where != "attention":
            raise XltError("prefix tuning modifies attention only", "use where=attention")


@register_adaptation("unified", options=UnifiedOptions)
class Unified(Method):
    description = "unified view (He et al. 2022): function adapter|lora|prefix, where attention|ffn, form sequential|parallel"

    def preserves_outputs(self) -> bool:
        return self.config.function != "prefix"  # a prefix is read before the text: the logits change

    def prepare(self, model):
        o = self.config
        if o.function == "adapter":
            attach_adapters(model, o.where, o.form, o.size, o.scale, o.seed)
            return model
        from peft import get_peft_model

        if o.function == "lora":
            from xlt.adapt.methods.lora import lora_config

            cfg = lora_config(model, o.size, o.scale * o.size, 0.0, arch.lora_targets(model, o.where))
        else:
            from peft import PrefixTuningConfig

            cfg = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=o.size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(o.seed)
            return get_peft_model(model, cfg)

    def train(self, model, blocks, cfg, work, evaluate, show_progress, label, interrupt_at):
        o = self.config
        if o.function == "prefix" and o.prefix_init == "tokens":  # before stage 1 (a resume overwrites it)
            ids = blocks.sample(0)
            if len(ids) < o.size:
                raise XltError(f"{o.size} prefix vectors need {o.size} tokens of a training sequence of {len(ids)}",
                               "use a longer --seq-len or a smaller -M size")
            init_prefix_from_tokens(model, ids[:o.size])
        return super().train(model, blocks, cfg, work, evaluate, show_progress, label, interrupt_at)

    def stage2_parameters(self, model):
        o = self.config
        if o.function == "adapter":
            return list(model.xlt_unified.parameters())
        if o.function == "lora":
            return [p for n, p in model.named_parameters() if "lora_" in n]
        return list(model.prompt_encoder.parameters())

    @classmethod
    def export_model(cls, model):
        """LoRA (``function=lora``) is merged into the weights; bottleneck adapters and prefix tuning have no place in
        a standard architecture, so they raise (see :meth:`Method.export_model`)."""
        if hasattr(model, "xlt_unified"):
            raise XltError(f"{cls.name} cannot be exported as a plain transformers model: its bottleneck adapters "
                           "compute up(ReLU(down(h))), which is not linear, so no weight of the standard architecture "
                           "can hold them",
                           "use the folder with xlt (xlt.adapt.methods.load_adapted), or adapt with a method that "
                           "merges into the weights (lora, lora-attn, lora-ffn, mos, sft, full) and export that")
        if getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
            raise XltError(f"{cls.name} cannot be exported as a plain transformers model: prefix tuning prepends "
                           "learned keys and values to every attention layer, for which the standard architecture "
                           "has no weights",
                           "use the folder with xlt (xlt.adapt.methods.load_adapted), or adapt with a method that "
                           "merges into the weights (lora, lora-attn, lora-ffn, mos, sft, full) and export that")
        return super().export_model(model)

    def save_weights(self, model, folder: Path) -> dict | None:
        from safetensors.torch import save_file

        if self.config.function == "adapter":
            save_file({k: v.detach().contiguous() for k, v in model.xlt_unified.state_dict().items()},
                      str(folder / "unified.safetensors"))
            return None
        return save_peft_adapter(model, folder)  # LoRA or prefix tuning: a standard PEFT adapter with the vocabulary

    @classmethod
    def load_weights(cls, model, folder: Path, meta: dict):
        o = cls.config_from(meta["options"])
        if o.function == "adapter":
            from safetensors.torch import load_file

            mods = attach_adapters(model, o.where, o.form, o.size, o.scale, o.seed)
            mods.load_state_dict(load_file(str(folder / "unified.safetensors")))
            return model
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(folder))


def _preset(name: str, **fixed):
    cls = type(f"Unified_{name.replace('-', '_')}", (Unified,), {
        "description": f"unified view preset: {', '.join(f'{k}={v}' for k, v in fixed.items())}"})
    register_adaptation(name, options=with_defaults(UnifiedOptions, f"UnifiedOptions_{name.replace('-', '_')}",
                                                    **fixed))(cls)


# the comparison grid of He et al. (Table/Figure of the design dimensions), at one size each
_preset("prefix", function="prefix", where="attention", form="parallel", size=16)
_preset("lora-attn", function="lora", where="attention", form="parallel", size=8, scale=2.0)
_preset("lora-ffn", function="lora", where="ffn", form="parallel", size=8, scale=2.0)
_preset("seq-adapter-attn", function="adapter", where="attention", form="sequential", size=16)
_preset("seq-adapter-ffn", function="adapter", where="ffn", form="sequential", size=16)
_preset("par-adapter-attn", function="adapter", where="attention", form="parallel", size=16)
_preset("par-adapter-ffn", function="adapter", where="ffn", form="parallel", size=16)
_preset("scaled-par-adapter-ffn", function="adapter", where="ffn", form="parallel", size=16, scale=4.0)

GRID = ["prefix", "lora-attn", "lora-ffn", "seq-adapter-attn", "seq-adapter-ffn", "par-adapter-attn", "par-adapter-ffn",
        "scaled-par-adapter-ffn"]
