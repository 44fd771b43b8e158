"""``layer_swap``: layer swapping (Bandarkar et al., ICLR 2025) for cross-lingual composition.

Of L transformer layers, the bottom ``bottom`` and the top ``top`` come from the ``outer`` model (the
language expert), the middle from the other one (the task expert). Optional transition zones of
``transition_bottom`` / ``transition_top`` layers next to the swap boundaries are blends
α·θ_outer + (1−α)·θ_inner (``alpha``). Token embeddings come from ``embeddings_from`` and the final norm
and LM head from ``head_from`` (both default to the outer model), so the output can keep the vocabulary
of a vocabulary-adapted language expert.

The method plans its own output tensors (:func:`plan`): swapped layers and the embeddings/head are copies,
transition layers are merged by :func:`merge`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xlt.errors import XltError
from xlt.merge.registry import MergeMethod, register_merge
from xlt.options import non_negative, option, unit_interval


@dataclass
class LayerSwapOptions:
    outer: str = option("", "model giving the bottom/top layers [default: the first model]")
    bottom: int = option(1, "layers from the outer model at the bottom", check=non_negative)
    top: int = option(1, "layers from the outer model at the top", check=non_negative)
    transition_bottom: int = option(0, "blended layers above the bottom block", check=non_negative)
    transition_top: int = option(0, "blended layers below the top block", check=non_negative)
    alpha: float = option(0.5, "outer model's weight in transition layers", check=unit_interval)
    embeddings_from: str = option("", "model giving token embeddings [default: outer]")
    head_from: str = option("", "model giving final norm and LM head [default: embeddings_from]")


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
    """The per-tensor rule the plan sets up: one input is copied, two are blended with α."""
    if len(tensors) == 1:
        return tensors[0]
    return blend(tensors[0], tensors[1], p["alpha"])


def plan(pl):
    """The output tensors of a layer swap (``pl``: the :class:`~xlt.merge.planner.Planner`)."""
    from xlt.merge.planner import Input, PlanParts

    cfg = pl.cfg
    if cfg.slices is not None:
        raise XltError("layer_swap takes models:, not slices:", "list the two models under models:")
    pl.check_model_params()
    refs = [e.model for e in cfg.models]
    if len(refs) != 2 or refs[0] == refs[1]:
        raise XltError(f"layer_swap takes exactly two different models, the config lists {len(refs)}",
                       "list the language expert and the task expert under models:")
    p = pl.global_params("layer_swap")
    for k in ("outer", "embeddings_from", "head_from"):
        if p[k] and p[k] not in refs:
            raise XltError(f"layer_swap parameter {k}: {p[k]!r} is not one of the models",
                           f"use one of: {', '.join(refs)}")
    outer = p["outer"] or refs[0]
    inner = refs[1] if outer == refs[0] else refs[0]
    emb = p["embeddings_from"] or outer
    head = p["head_from"] or emb
    depths = {r: pl.depth(r) for r in refs}
    if depths[outer] != depths[inner]:
        raise XltError(f"layer_swap needs models of the same depth ({outer}: {depths[outer]}, {inner}: {depths[inner]})",
                       "swap layers between fine-tunes of the same base model")
    which_layers = layer_sources(depths[outer], p["bottom"], p["top"], p["transition_bottom"], p["transition_top"])
    tensors = []
    for i, which in enumerate(which_layers):
        kinds = pl.layer_tensors(outer, i)
        if kinds != pl.layer_tensors(inner, i):
            raise XltError(f"layer {i} has different tensors in {outer} and {inner}",
                           "swap layers between models of the same architecture")
        for pre, rest in kinds:
            n = f"{pre}{i}.{rest}"
            if which == "blend":
                tensors.append(pl.make_tensor(n, [Input(outer, n), Input(inner, n)], None, [[], []], [cfg.parameters]))
            else:
                tensors.append(pl.copy_tensor(n, Input(outer if which == "outer" else inner, n),
                                              f"layer_swap: {which} layer"))
    vocab = {r: pl.vocab_size(r) for r in refs}
    if vocab[emb] != vocab[head] and not pl.sources[emb].config.get("tie_word_embeddings"):
        if any(pl.is_head(n) for n in pl.sources[head].names()):
            raise XltError(f"embeddings_from {emb} has {vocab[emb]} tokens but head_from {head} has {vocab[head]}",
                           "take the embeddings and the LM head from the same model (the one whose tokenizer you use)")
    pre, post = [], []
    for r, want_pre in ((emb, True), (head, False)):
        other = inner if r == outer else outer
        for n in pl.non_layer(r):
            if pl.is_pre_layer(n) != want_pre or pl.is_dropped(r, n):
                continue
            if n in pl.sources[other] and not pl.is_vocab_tensor(r, n) and \
                    pl.sources[other].info(n).shape != pl.sources[r].info(n).shape:
                raise XltError(f"tensor {n} has different shapes in {r} and {other}",
                               "swap layers between models of the same architecture")
            (pre if want_pre else post).append(
                pl.copy_tensor(n, Input(r, n), f"layer_swap: {'embeddings' if want_pre else 'head'} from {r}"))
            if n in pl.sources[other]:
                pl.dropped.setdefault(other, []).append(n)
    pl.notes.append(f"layer_swap: layers {''.join({'outer': 'O', 'inner': 'I', 'blend': 'B'}[w] for w in which_layers)} "
                    f"(O = {outer}, I = {inner}, B = blend α={p['alpha']}); embeddings from {emb}, head from {head}")
    return PlanParts(pre + tensors + post, None, emb, cfg.tokenizer_source or emb)


def copies(p: dict, n_inputs: int, has_base: bool) -> bool:
    return n_inputs == 1 and not has_base


register_merge(MergeMethod(
    name="layer_swap", merge=merge, options=LayerSwapOptions, plan=plan, copies=copies, min_models=2, max_models=2,
    idempotent=True, example={"bottom": 1, "top": 0, "transition_top": 1},
    description="outer layers from one model, middle layers from another (optional blended transitions)",
    paper="https://arxiv.org/abs/2410.01335", reference="no released code; mergekit slices emulate it",
))
