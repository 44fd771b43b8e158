"""MT4CrossOIE stage 3 (Wang/Li et al., ESWA 2024; arXiv 2308.06552): a mixture of language LoRAs over a frozen model.

Stages 1–2 (the shared embedding space, then the other components) are ordinary fine-tuning. Stage 3 freezes the
whole model (encoder and task head) and

1. :func:`train_language_loras`: adds one LoRA per language (``lang/<code>``) and trains each **only on its own
   language's task batches**, the others inactive; every language starts from its own seeded RNG state, so a
   language's LoRA does not depend on the other languages' data or order;
2. :func:`train_router`: wraps the adapters in :class:`xlt.adapt.mixture.RoutedLoRA` (soft sentence-level routing,
   ``g = softmax(W_r · mean(input embeddings))``) and trains **only the router** on the shuffled mix of every
   language's batches.

:func:`stage3` runs both. A batch is a dict of tensors the model accepts (with ``attention_mask`` as a keyword, which
RoutedLoRA reads); the loss is ``loss_fn(output, batch)``, by default the model's own ``output.loss``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from xlt.adapt.mixture import RoutedLoRA
from xlt.errors import XltError
from xlt.options import option, positive

PREFIX = "lang/"


@dataclass
class Stage3Options:
    r: int = option(8, "LoRA rank of each language adapter", check=positive)
    lora_alpha: int = option(16, "LoRA alpha (scaling alpha / r)", check=positive)
    target_modules: list = option(["query", "value"], "module names the language LoRAs wrap")
    lora_steps: int = option(100, "optimiser steps per language LoRA (phase 1)", check=positive)
    router_steps: int = option(100, "optimiser steps of the router on the mix (phase 2)", check=positive)
    lr: float = option(1e-3, "learning rate of the language LoRAs", check=positive)
    router_lr: float = option(1e-2, "learning rate of the router", check=positive)
    top_k: int | None = option(None, "route through the top-k adapters only (None: all)")
    seed: int = option(0, "seed of the LoRA initialisations, batch orders and router")


@dataclass
class Stage3Log:
    lora_losses: dict[str, list[float]] = field(default_factory=dict)  # per language, per step
    router_losses: list[float] = field(default_factory=list)


def _default_loss(output, batch):
    if getattr(output, "loss", None) is None:
        raise XltError("the model returned no loss for a stage-3 batch",
                       "put the labels in each batch (e.g. batch['labels']) or pass loss_fn(output, batch)")
    return output.loss


def _check_data(data: Mapping[str, Sequence[dict]]) -> list[str]:
    if not data:
        raise XltError("no language data for MT4CrossOIE stage 3", "give {language: [batch, ...]} for each language")
    empty = sorted(l for l, b in data.items() if not b)
    if empty:
        raise XltError(f"no batches for {empty}", "give at least one task batch for every language")
    return sorted(data)


def _lang_seed(seed: int, lang: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(lang.encode())) % (2 ** 31)


def freeze(model) -> None:
    """requires_grad = False on every parameter of ``model``."""
    for p in model.parameters():
        p.requires_grad_(False)


def train_language_loras(model, data: Mapping[str, Sequence[dict]], options: Stage3Options | None = None,
                         loss_fn: Callable = _default_loss, log: Stage3Log | None = None):
    """Phase 1: a PEFT model over the frozen ``model`` with one LoRA ``lang/<code>`` per language of ``data``, each
    trained on that language's batches alone. Returns the PEFT model."""
    from peft import LoraConfig, get_peft_model

    o = options or Stage3Options()
    langs = _check_data(data)
    log = log if log is not None else Stage3Log()
    freeze(model)
    cfg = LoraConfig(r=o.r, lora_alpha=o.lora_alpha, target_modules=list(o.target_modules), lora_dropout=0.0)
    pm = None
    for lang in langs:  # every adapter is initialised from its own seed before any training
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_lang_seed(o.seed, lang))
            if pm is None:
                pm = get_peft_model(model, cfg, adapter_name=PREFIX + lang)
            else:
                pm.add_adapter(PREFIX + lang, cfg)
    for lang in langs:
        name = PREFIX + lang
        pm.base_model.set_adapter(name)
        for n, p in pm.named_parameters():
            p.requires_grad_("lora_" in n and f".{name}." in n)
        params = [p for p in pm.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=0.0)
        batches = data[lang]
        losses = log.lora_losses.setdefault(lang, [])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_lang_seed(o.seed, lang))
            g = torch.Generator().manual_seed(_lang_seed(o.seed, lang))
            order: list[int] = []
            pm.train()
            for _ in range(o.lora_steps):
                if not order:
                    order = torch.randperm(len(batches), generator=g).tolist()
                batch = batches[order.pop()]
                loss = loss_fn(pm(**batch), batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        opt.zero_grad(set_to_none=True)
    for p in pm.parameters():
        p.requires_grad_(False)
    return pm.eval()


def train_router(pm, data: Mapping[str, Sequence[dict]], options: Stage3Options | None = None,
                 loss_fn: Callable = _default_loss, log: Stage3Log | None = None) -> RoutedLoRA:
    """Phase 2: :class:`RoutedLoRA` over the language adapters of ``pm``, only its router trained on the shuffled
    mix of every language's batches."""
    o = options or Stage3Options()
    langs = _check_data(data)
    log = log if log is not None else Stage3Log()
    names = [PREFIX + l for l in langs]
    routed = RoutedLoRA(pm, names, top_k=o.top_k, seed=o.seed)
    params = routed.trainable(train_loras=False)
    opt = torch.optim.AdamW(params, lr=o.router_lr, weight_decay=0.0)
    mix = [(l, i) for l in langs for i in range(len(data[l]))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(o.seed)
        g = torch.Generator().manual_seed(o.seed)
        order: list[int] = []
        pm.train()
        for _ in range(o.router_steps):
            if not order:
                order = torch.randperm(len(mix), generator=g).tolist()
            lang, i = mix[order.pop()]
            batch = data[lang][i]
            loss = loss_fn(pm(**batch), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log.router_losses.append(float(loss.detach()))
    opt.zero_grad(set_to_none=True)
    routed.router.weight.requires_grad_(False)
    pm.eval()
    return routed


def stage3(model, data: Mapping[str, Sequence[dict]], options: Stage3Options | None = None,
           loss_fn: Callable = _default_loss) -> tuple[RoutedLoRA, Stage3Log]:
    """MT4CrossOIE stage 3 over the (stage-2) ``model``: :func:`train_language_loras`, then :func:`train_router`.
    Returns the routed mixture (``routed.save(folder)`` stores adapters and router) and the per-step losses."""
    o = options or Stage3Options()
    if o.top_k is not None and not 1 <= o.top_k <= len(data):
        raise XltError(f"top_k = {o.top_k} with {len(data)} languages", f"choose 1 ≤ top_k ≤ {len(data)} or None")
    _check_data(data)
    log = Stage3Log()
    pm = train_language_loras(model, data, o, loss_fn, log)
    return train_router(pm, data, o, loss_fn, log), log
