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
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from xlt.adapt.methods import Method, register_method
from xlt.errors import XltError


class Bottleneck(nn.Module):
    def __init__(self, d: int, size: int, scale: float):
        super().__init__()
        self.down, self.up, self.scale = nn.Linear(d, size), nn.Linear(size, d), scale
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x):
        return self.scale * self.up(torch.relu(self.down(x)))


def _sublayers(model, where: str):
    from xlt.adapt.compose import _layers

    out = []
    for layer in _layers(model):
        sub = getattr(layer, "self_attn" if where == "attention" else "mlp", None)
        if sub is None:
            raise XltError(f"cannot find the {where} sublayer of {type(layer).__name__}", "use a Llama-style model")
        out.append(sub)
    return out


def attach_adapters(model, where: str, form: str, size: int, scale: float, seed: int = 0) -> nn.ModuleList:
    """Bottleneck adapters on every layer's ``where`` sublayer, ``form`` sequential or parallel (hooks)."""
    d = model.config.hidden_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mods = nn.ModuleList(Bottleneck(d, size, scale) for _ in _sublayers(model, where))
    model.add_module("xlt_unified", mods)

    def hook(ad):
        def f(module, args, kwargs, out):
            h = out[0] if isinstance(out, tuple) else out
            x = h if form == "sequential" else (args[0] if args else kwargs["hidden_states"])
            h = h + ad(x)
            return (h, *out[1:]) if isinstance(out, tuple) else h
        return f

    for sub, ad in zip(_sublayers(model, where), mods):
        sub.register_forward_hook(hook(ad), with_kwargs=True)
    return mods


LORA_TARGETS = {"attention": ["q_proj", "v_proj"], "ffn": ["up_proj", "down_proj"]}


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
        # PEFT's layout: (token, layer, key|value, head, head_dim), flattened per token
        kv = torch.stack([torch.stack([k[0], v[0]]) for k, v in layers])  # layer, 2, head, token, head_dim
        if kv.shape[2] != heads:
            raise XltError(f"the model's cache has {kv.shape[2]} heads, the prefix {heads}", "use prefix_init=random")
        weight.copy_(kv.permute(3, 0, 1, 2, 4).reshape(n, -1).to(weight.dtype))


@register_method("unified")
class Unified(Method):
    description = "unified view (He et al. 2022): function adapter|lora|prefix, where attention|ffn, form sequential|parallel"

    @classmethod
    def defaults(cls) -> dict:
        return {"function": "adapter", "where": "ffn", "form": "parallel", "size": 16, "scale": 1.0, "seed": 0,
                "prefix_init": "tokens"}

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        if o["function"] not in ("adapter", "lora", "prefix"):
            raise XltError(f"unknown function {o['function']!r}", "choose adapter, lora or prefix")
        if o["where"] not in ("attention", "ffn") or o["form"] not in ("sequential", "parallel"):
            raise XltError(f"where={o['where']!r}, form={o['form']!r}", "where: attention|ffn; form: sequential|parallel")
        if o["function"] in ("lora", "prefix") and o["form"] != "parallel":
            raise XltError(f"{o['function']} is a parallel modification; form=sequential does not exist for it",
                           "use form=parallel, or function=adapter for a sequential one")
        if o["function"] == "prefix" and o["where"] != "attention":
            raise XltError("prefix tuning modifies attention only", "use where=attention")
        if int(o["size"]) < 1:
            raise XltError(f"size {o['size']}", "give a positive bottleneck width, rank or prefix length")
        if o["prefix_init"] not in ("tokens", "random"):
            raise XltError(f"unknown prefix_init {o['prefix_init']!r}",
                           "choose tokens (keys/values of the first training tokens) or random (PEFT's N(0, 1))")

    def prepare(self, model):
        o = self.options
        if o["function"] == "adapter":
            attach_adapters(model, o["where"], o["form"], int(o["size"]), float(o["scale"]), o["seed"])
            return model
        from peft import get_peft_model

        if o["function"] == "lora":
            from xlt.adapt.methods.lora import lora_config

            cfg = lora_config(model, int(o["size"]), float(o["scale"]) * int(o["size"]), 0.0, LORA_TARGETS[o["where"]])
        else:
            from peft import PrefixTuningConfig

            cfg = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=int(o["size"]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(o["seed"])
            return get_peft_model(model, cfg)

    def train(self, model, blocks, cfg, work, evaluate, show_progress, label, interrupt_at):
        o = self.options
        if o["function"] == "prefix" and o["prefix_init"] == "tokens":  # before stage 1 (a resume overwrites it)
            size = int(o["size"])
            ids = blocks.sample(0)
            if len(ids) < size:
                raise XltError(f"{size} prefix vectors need {size} tokens of a training sequence of {len(ids)}",
                               "use a longer --seq-len or a smaller -M size")
            init_prefix_from_tokens(model, ids[:size])
        return super().train(model, blocks, cfg, work, evaluate, show_progress, label, interrupt_at)

    def stage2_parameters(self, model):
        o = self.options
        if o["function"] == "adapter":
            return list(model.xlt_unified.parameters())
        if o["function"] == "lora":
            return [p for n, p in model.named_parameters() if "lora_" in n]
        return list(model.prompt_encoder.parameters())

    def save_weights(self, model, folder: Path) -> None:
        from safetensors.torch import save_file

        if self.options["function"] == "adapter":
            save_file({k: v.detach().contiguous() for k, v in model.xlt_unified.state_dict().items()},
                      str(folder / "unified.safetensors"))
        else:
            model.save_pretrained(str(folder), save_embedding_layers=False)

    @classmethod
    def load_weights(cls, model, folder: Path, meta: dict):
        o = meta["options"]
        if o["function"] == "adapter":
            from safetensors.torch import load_file

            mods = attach_adapters(model, o["where"], o["form"], int(o["size"]), float(o["scale"]), o["seed"])
            mods.load_state_dict(load_file(str(folder / "unified.safetensors")))
            return model
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(folder))


def _preset(name: str, **fixed):
    cls = type(f"Unified_{name.replace('-', '_')}", (Unified,), {
        "description": f"unified view preset: {', '.join(f'{k}={v}' for k, v in fixed.items())}",
        "defaults": classmethod(lambda c: {**Unified.defaults(), **fixed}),
    })
    register_method(name)(cls)


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
