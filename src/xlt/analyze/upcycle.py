"""Upcycle a dense model into a mixture of language-family experts (Apollo-MoE, Zheng et al. 2024).

:func:`upcycle` turns a dense Llama-family causal LM (Llama, SmolLM2, Mistral without a sliding window, dense
Qwen2) into a native ``Qwen2MoeForCausalLM``: every expert of an MoE layer is a copy of that layer's dense MLP, the
router is random (seeded, small), the other layers stay dense (``mlp_only_layers``), there is no shared expert
(``shared_expert_intermediate_size=0``) and no auxiliary routing loss (``router_aux_loss_coef=0``, as in the paper).
With the top-k weights renormalised (``norm_topk_prob=True``, the default here) the MoE model computes the dense
model's function at init; with them not renormalised (the paper's repository's default) an MoE MLP computes
(sum of the picked routing weights) x the dense MLP. The folder it is saved to reloads with
``AutoModelForCausalLM.from_pretrained`` and no xlt code; the plan (which expert serves which languages) is in its
``config.json`` (``xlt_upcycle``) and in ``upcycle.json``.

Experts (``experts=``): ``"family"`` one per Glottolog top-level family of the languages (:mod:`xlt.analyze.langfamilies`;
English, French and German are all Indo-European, so they share one expert: the paper's language-family experts),
``"language"`` one per language (the paper's first design), or an integer N: the family experts plus N - families
free experts that only the router picks.

MoE layers (``moe_layers=``): ``"last:2"`` (Post-MoE, the paper's choice), ``"last:N"``, ``"first:N"``, ``"all"``
(every layer, the "Spread Out in the End" comparison) or layer indices (``[10, 11]``, ``"-2,-1"``).

Hybrid routing (:class:`HybridRouting`, training only): the router picks its top-k experts; when the token's
language expert is not among them it replaces the lowest-weighted pick, and the picks' weights are the router's
softmax probabilities at the picked experts (renormalised when ``norm_topk_prob``). This is the rule of the paper's
code (``language_gate`` in ``FreedomIntelligence/ApolloMoE``, applied only when ``self.training``). In eval mode the
router routes alone.

Other source families (Gemma-3, GPT-2, models with biased MLPs or sliding windows, ...) are refused with one error: no
mixture-of-experts class in transformers computes their layers (GPT-2's biased GELU MLP; Gemma-3's sandwich norms:
Gemma-4's MoE option keeps a dense MLP beside the experts in every layer, with extra norms and another attention),
so an upcycled model would need xlt code to reload.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch

from xlt.analyze.langfamilies import language_families
from xlt.errors import XltError
from xlt.languages import resolve

#: source ``model_type``s that map exactly onto ``Qwen2MoeForCausalLM`` (q/k/v bias: off for Llama and Mistral,
#: on for Qwen2)
SOURCES = {"llama": False, "mistral": False, "qwen2": True}

#: the key of the plan in the upcycled model's config.json, and the side file beside it
CONFIG_KEY = "xlt_upcycle"
PLAN_FILE = "upcycle.json"

HYBRID_RULE = ("hybrid-k (training only): the router's top-k experts; if the token's language expert is not among "
               "them it replaces the lowest-weighted pick; weights are the router's softmax probabilities at the "
               "picks (renormalised when norm_topk_prob). Eval: the router alone.")

_LAYERS_FIX = ("use last:N (Post-MoE: last:2), first:N, all, or layer indices such as 10,11 or -2,-1 "
               "(0 .. layers-1; negative counts from the end)")


# -- the plan --------------------------------------------------------------------------------------------------------
@dataclass
class UpcyclePlan:
    """Which expert serves which languages, and how the MoE model is shaped."""

    languages: list[str]  # ISO 639-3 codes, in the order given
    families: dict[str, str]  # language -> family (Glottolog top-level family or the user's map)
    family_source: dict[str, str]  # language -> "glottolog" | "family-map"
    grouping: str  # "family", "language" or "family+free" (an integer number of experts)
    experts: list[str | None]  # expert i -> the group it serves (a family or a language); None: a free expert
    language_expert: dict[str, int]  # language -> its expert
    top_k: int
    moe_layers: list[int]  # layer indices with a mixture of experts; the others stay dense
    num_layers: int
    norm_topk_prob: bool
    router_std: float
    seed: int
    source_model_type: str
    source: str = ""
    routing: str = HYBRID_RULE

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def as_dict(self) -> dict:
        return {**asdict(self), "num_experts": self.num_experts}

    @classmethod
    def from_dict(cls, d: Mapping) -> "UpcyclePlan":
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})

    def expert_of(self, lang: str) -> int:
        code = resolve(lang).code
        if code not in self.language_expert:
            raise XltError(f"language {code} is not in this model's upcycling plan ({', '.join(self.languages)})",
                           "give text in the plan's languages, or upcycle again with this language in --langs")
        return self.language_expert[code]


def plan_of(model) -> UpcyclePlan:
    """The :class:`UpcyclePlan` stored in an upcycled model's config (``xlt_upcycle``)."""
    d = getattr(model.config, CONFIG_KEY, None)
    if not isinstance(d, Mapping):
        raise XltError("this model has no upcycling plan in its config (xlt_upcycle)",
                       "upcycle it first: xlt.analyze.upcycle.upcycle(model, langs) or `xlt upcycle SOURCE OUT`")
    return UpcyclePlan.from_dict(d)


def parse_moe_layers(spec, num_layers: int | None) -> list[int]:
    """Layer indices from ``last:N``, ``first:N``, ``all``, ``"10,11"``/``"-2,-1"`` or a list of ints, sorted.

    ``num_layers=None`` checks only the syntax (and returns ``[]``)."""
    bad = XltError(f"--moe-layers {spec!r} is not a layer spec", _LAYERS_FIX)
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s == "all":
            return list(range(num_layers)) if num_layers is not None else []
        if s.startswith(("last:", "first:")):
            which, _, n = s.partition(":")
            if not n.strip().isdigit() or int(n) < 1:
                raise bad
            n = int(n)
            if num_layers is None:
                return []
            if n > num_layers:
                raise XltError(f"--moe-layers {spec} asks for {n} layers, the model has {num_layers}",
                               f"pick at most {num_layers}, or all")
            return list(range(num_layers - n, num_layers)) if which == "last" else list(range(n))
        try:
            items = [int(x) for x in s.split(",") if x.strip()]
        except ValueError:
            raise bad from None
    elif isinstance(spec, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) for x in spec):
        items = list(spec)
    else:
        raise bad
    if not items:
        raise bad
    if num_layers is None:
        return []
    out = []
    for i in items:
        if not -num_layers <= i < num_layers:
            raise XltError(f"--moe-layers {spec!r}: layer {i} does not exist, the model has {num_layers} layers",
                           _LAYERS_FIX)
        out.append(i % num_layers)
    if len(set(out)) != len(out):
        raise XltError(f"--moe-layers {spec!r} names a layer twice", "name each layer once")
    return sorted(out)


def _parse_experts(experts) -> str | int:
    if isinstance(experts, str) and experts.strip().isdigit():
        experts = int(experts)
    if isinstance(experts, bool) or not (experts in ("family", "language") or isinstance(experts, int)):
        raise XltError(f"--experts {experts!r} is not family, language or a number of experts",
                       "use family (one expert per language family), language (one per language) or an integer")
    if isinstance(experts, int) and experts < 1:
        raise XltError(f"--experts {experts} must be at least 1", "use family, language or a positive integer")
    return experts


def _parse_langs(langs) -> list[str]:
    if isinstance(langs, str):
        langs = [x for x in langs.replace(" ", ",").split(",") if x]
    codes = [resolve(c).code for c in langs]
    if not codes:
        raise XltError("no languages given", "pass the languages to build experts for, e.g. --langs en,fr,sw")
    dup = sorted({c for c in codes if codes.count(c) > 1})
    if dup:
        raise XltError(f"--langs names {', '.join(dup)} more than once (codes are resolved to ISO 639-3)",
                       "name each language once")
    return codes


def make_plan(langs, num_layers: int, *, experts="family", moe_layers="last:2", top_k: int | None = None,
              family_map=None, norm_topk_prob: bool = True, router_std: float = 0.02, seed: int = 0,
              source_model_type: str = "llama", source: str = "", csv_dir=None) -> UpcyclePlan:
    """The expert plan for ``langs`` on a model of ``num_layers`` layers (see the module docstring); experts are
    numbered in the order their first language appears in ``langs``."""
    codes = _parse_langs(langs)
    experts = _parse_experts(experts)
    layers = parse_moe_layers(moe_layers, num_layers)
    families, source_of = language_families(codes, family_map, csv_dir=csv_dir, with_source=True)
    group_of = {c: (c if experts == "language" else families[c]) for c in codes}
    groups: list[str | None] = list(dict.fromkeys(group_of[c] for c in codes))
    if isinstance(experts, int):
        if experts < len(groups):
            raise XltError(f"--experts {experts} is fewer than the {len(groups)} language families of --langs "
                           f"({', '.join(g for g in groups if g)})",
                           f"pass --experts family, or at least {len(groups)} (extra experts are routed freely)")
        groups += [None] * (experts - len(groups))
    k = min(2, len(groups)) if top_k is None else top_k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(groups):
        raise XltError(f"--top-k {top_k} is not between 1 and the {len(groups)} experts",
                       f"pick 1 .. {len(groups)} experts per token (the paper uses 2)")
    if not router_std > 0:
        raise XltError(f"router_std {router_std} must be positive", "use a small value such as 0.02")
    return UpcyclePlan(
        languages=codes, families=families, family_source=source_of,
        grouping=experts if isinstance(experts, str) else "family+free",
        experts=groups, language_expert={c: groups.index(group_of[c]) for c in codes}, top_k=k, moe_layers=layers,
        num_layers=num_layers, norm_topk_prob=bool(norm_topk_prob), router_std=float(router_std), seed=int(seed),
        source_model_type=source_model_type, source=source)


# -- conversion ------------------------------------------------------------------------------------------------------
def _check_source(model) -> str:
    cfg = model.config
    mt = getattr(cfg, "model_type", None)
    if mt not in SOURCES:
        raise XltError(f"cannot upcycle a {mt!r} model into a mixture of experts that transformers reloads by itself",
                       "give a Llama-family model (llama, e.g. SmolLM2; mistral without a sliding window; dense qwen2): "
                       "those map exactly onto Qwen2MoeForCausalLM. Gemma-3 and GPT-2 layers have no MoE class in "
                       "transformers")
    problems = []
    if getattr(cfg, "attention_bias", False):
        problems.append("attention_bias=True (Qwen2-MoE has biases on q/k/v only, never on o_proj)")
    if getattr(cfg, "mlp_bias", False):
        problems.append("mlp_bias=True (Qwen2-MoE experts have no biases)")
    if mt == "mistral" and getattr(cfg, "sliding_window", None) is not None:
        problems.append(f"a sliding window of {cfg.sliding_window} tokens")
    if mt == "qwen2" and (getattr(cfg, "use_sliding_window", False)
                          or any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or []))):
        problems.append("sliding-window attention layers")
    if problems:
        raise XltError(f"this {mt} model has {'; '.join(problems)}, which the upcycled Qwen2-MoE model cannot "
                       "compute", "upcycle a model with full attention and bias-free MLPs (e.g. SmolLM2)")
    return mt


def moe_config(dense_config, plan: UpcyclePlan):
    """The ``Qwen2MoeConfig`` of the upcycled model: the dense config's shape, ``plan``'s experts and MoE layers."""
    from transformers import Qwen2MoeConfig

    c = dense_config
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return Qwen2MoeConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=heads,
        num_key_value_heads=getattr(c, "num_key_value_heads", None) or heads, head_dim=head_dim,
        hidden_act=c.hidden_act, max_position_embeddings=c.max_position_embeddings,
        initializer_range=getattr(c, "initializer_range", 0.02), rms_norm_eps=c.rms_norm_eps,
        use_cache=getattr(c, "use_cache", True), tie_word_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
        rope_parameters=copy.deepcopy(dict(c.rope_parameters)) if getattr(c, "rope_parameters", None) else None,
        use_sliding_window=False, attention_dropout=getattr(c, "attention_dropout", 0.0) or 0.0,
        decoder_sparse_step=1, moe_intermediate_size=c.intermediate_size, shared_expert_intermediate_size=0,
        num_experts_per_tok=plan.top_k, num_experts=plan.num_experts, norm_topk_prob=plan.norm_topk_prob,
        output_router_logits=False, router_aux_loss_coef=0.0,
        mlp_only_layers=[i for i in range(c.num_hidden_layers) if i not in plan.moe_layers],
        qkv_bias=SOURCES[c.model_type], pad_token_id=getattr(c, "pad_token_id", None),
        bos_token_id=getattr(c, "bos_token_id", None), eos_token_id=getattr(c, "eos_token_id", None),
        **{CONFIG_KEY: plan.as_dict()})


@contextlib.contextmanager
def _quiet_init() -> Iterator[None]:
    # the zero-sized shared expert makes torch warn that initialising an empty tensor does nothing
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        yield


def upcycle(model, langs, *, experts="family", moe_layers="last:2", top_k: int | None = None, family_map=None,
            norm_topk_prob: bool = True, router_std: float = 0.02, seed: int = 0, csv_dir=None):
    """``(moe_model, plan)``: ``model`` (a dense Llama/Mistral/Qwen2 causal LM, left unchanged) as a
    ``Qwen2MoeForCausalLM`` whose MoE layers hold ``plan.num_experts`` copies of the dense MLP and a router drawn from
    N(0, ``router_std``) with a generator seeded by ``seed``. ``top_k`` defaults to 2 (1 with a single expert).
    See the module docstring for ``experts`` and ``moe_layers``; ``family_map``/``csv_dir`` go to
    :func:`xlt.analyze.langfamilies.language_families`. The returned model is in eval mode."""
    from transformers import Qwen2MoeForCausalLM

    mt = _check_source(model)
    plan = make_plan(langs, model.config.num_hidden_layers, experts=experts, moe_layers=moe_layers, top_k=top_k,
                     family_map=family_map, norm_topk_prob=norm_topk_prob, router_std=router_std, seed=seed,
                     source_model_type=mt, source=str(getattr(model, "name_or_path", "") or ""), csv_dir=csv_dir)
    cfg = moe_config(model.config, plan)
    param = next(model.parameters())
    # every weight is overwritten below: skip the random init (3 s for SmolLM2 on 2 cores) where transformers offers
    # it, and keep the caller's random generators where they were either way
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # an older or newer layout: initialise, then overwrite
        no_init_weights = contextlib.nullcontext
    with torch.random.fork_rng(devices=[]), _quiet_init(), no_init_weights():
        moe = Qwen2MoeForCausalLM(cfg)
    if cfg.tie_word_embeddings:
        moe.tie_weights()  # skipped with the init
    moe.to(device=param.device, dtype=param.dtype)
    dense = model.state_dict()
    target = moe.state_dict()
    used: set[str] = set()
    new: dict[str, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(int(seed))
    for i in plan.moe_layers:
        p = f"model.layers.{i}.mlp."
        g, u, d = (dense[p + n + ".weight"] for n in ("gate_proj", "up_proj", "down_proj"))
        used.update(p + n + ".weight" for n in ("gate_proj", "up_proj", "down_proj"))
        e = plan.num_experts
        new[p + "experts.gate_up_proj"] = torch.cat([g, u], 0).unsqueeze(0).expand(e, -1, -1).clone()
        new[p + "experts.down_proj"] = d.unsqueeze(0).expand(e, -1, -1).clone()
        router = torch.randn(target[p + "gate.weight"].shape, generator=gen, dtype=torch.float32) * plan.router_std
        new[p + "gate.weight"] = router.to(param.dtype)
        new[p + "shared_expert_gate.weight"] = torch.zeros_like(target[p + "shared_expert_gate.weight"])
        for n in ("gate_proj", "up_proj", "down_proj"):  # the shared expert has no units: empty tensors
            new[p + f"shared_expert.{n}.weight"] = target[p + f"shared_expert.{n}.weight"]
    for name, t in target.items():
        if name in new:
            continue
        if name not in dense or dense[name].shape != t.shape:
            raise XltError(f"internal: the upcycled model's tensor {name} has no counterpart in the dense model",
                           "report this with the model's config.json")
        new[name] = dense[name]
        used.add(name)
    left = [n for n in dense if n not in used and not (n == "lm_head.weight" and cfg.tie_word_embeddings)]
    if left:
        raise XltError(f"the dense model has tensors the upcycled model would drop: {', '.join(left[:5])}",
                       "upcycle a plain Llama-family model (e.g. SmolLM2); this variant has extra parts")
    moe.load_state_dict(new, strict=True)
    if getattr(model, "generation_config", None) is not None:
        moe.generation_config = copy.deepcopy(model.generation_config)
    return moe.eval(), plan


# -- hybrid routing --------------------------------------------------------------------------------------------------
def hybrid_topk(router_logits: torch.Tensor, language_experts: torch.Tensor, top_k: int, norm_topk_prob: bool):
    """``(router_logits, top_k_weights, top_k_indices)`` with the language expert forced into each token's picks.

    ``language_experts`` holds one expert index per token (``-1``: no language expert, the router's picks stand).
    The router's top-k picks (descending) are kept when they include the language expert; otherwise the last
    (lowest-weighted) pick becomes the language expert. Weights are the softmax probabilities at the picks,
    renormalised to sum to 1 when ``norm_topk_prob``."""
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.float)
    _, idx = torch.topk(probs, top_k, dim=-1)
    lang = language_experts.to(device=idx.device, dtype=idx.dtype)
    present = (idx == lang[:, None]).any(dim=-1)
    force = (lang >= 0) & ~present
    idx = torch.cat([idx[:, :-1], torch.where(force, lang, idx[:, -1])[:, None]], dim=-1)
    weights = probs.gather(1, idx)
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return router_logits, weights.to(router_logits.dtype), idx


def _routers(model) -> list:
    from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeTopKRouter

    return [m for m in model.modules() if isinstance(m, Qwen2MoeTopKRouter)]


class HybridRouting:
    """Hybrid-k routing while ``model`` trains (a context manager): inside it, every Qwen2-MoE router of ``model`` in
    training mode forces each token's language expert into its picks (:func:`hybrid_topk`); in eval mode, and outside
    the context, routers route alone. Tell it the languages of the coming batch with :meth:`set_languages` before each
    training forward pass."""

    def __init__(self, model, plan: UpcyclePlan | None = None):
        self.plan = plan if plan is not None else plan_of(model)
        self.routers = _routers(model)
        if not self.routers:
            raise XltError("this model has no Qwen2-MoE routers to steer",
                           "upcycle it first (xlt.analyze.upcycle.upcycle) or give the upcycled model")
        self._handles: list = []
        self._labels: torch.Tensor | None = None

    def set_languages(self, langs) -> None:
        """The language of the coming batch: one code or expert index for all its tokens, one per sequence
        (a list or a (B,) tensor) or one per token (a (B, T) tensor of expert indices; -1 for no language)."""
        if isinstance(langs, torch.Tensor):
            t = langs.to(torch.long)
        elif isinstance(langs, (str, int)):
            t = torch.tensor(self._expert(langs))
        else:
            t = torch.tensor([self._expert(x) for x in langs], dtype=torch.long)
        if ((t < -1) | (t >= self.plan.num_experts)).any():
            raise XltError(f"expert index out of range in {t.tolist()}",
                           f"use 0 .. {self.plan.num_experts - 1}, or -1 for no language expert")
        self._labels = t

    def _expert(self, x) -> int:
        if isinstance(x, str):
            return self.plan.expert_of(x)
        if isinstance(x, bool) or not isinstance(x, int):
            raise XltError(f"cannot read a language from {x!r}", "give language codes or expert indices")
        return x

    def clear(self) -> None:
        self._labels = None

    def _per_token(self, n: int) -> torch.Tensor:
        t = self._labels
        if t.dim() == 0:
            return t.expand(n)
        flat = t.reshape(-1)
        if flat.numel() == n:
            return flat
        if t.dim() == 1 and n % flat.numel() == 0:
            return flat.repeat_interleave(n // flat.numel())
        raise XltError(f"the batch's language labels have shape {tuple(t.shape)}, which does not fit {n} tokens",
                       "give one label per batch, per sequence or per token")

    def _hook(self, module, args, output):
        if not module.training:
            return None
        if self._labels is None:
            raise XltError("hybrid routing is on but the batch's languages were not given",
                           "call set_languages(...) before each training forward pass")
        logits = output[0]
        return hybrid_topk(logits, self._per_token(logits.shape[0]), module.top_k, module.norm_topk_prob)

    def __enter__(self) -> "HybridRouting":
        self._handles = [r.register_forward_hook(self._hook) for r in self.routers]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._labels = None


def hybrid_routing(model, plan: UpcyclePlan | None = None) -> HybridRouting:
    """``with hybrid_routing(model) as routing: routing.set_languages("sw"); model.train(); ...``"""
    return HybridRouting(model, plan)


# -- training --------------------------------------------------------------------------------------------------------
class LanguageBatches:
    """Per-language batches for :class:`xlt.adapt.train.Trainer`, each announced to the hybrid router.

    Global micro-batch ``k = (step * micro_batches + micro) * world + rank`` is in language ``langs[k % n]`` and holds
    that language's blocks ``c*B .. c*B+B-1`` (``c = k // n``) in its own seeded order: a pure function of the step,
    so a resumed run sees the same batches. The Trainer draws a micro-batch right before its forward pass, which is
    when :meth:`batch` tells ``routing`` the batch's language: the per-batch hook, without changes to the Trainer."""

    def __init__(self, blocks: Mapping, routing: HybridRouting):
        """``blocks``: language code -> :class:`xlt.adapt.data.PackedBlocks` (anything with ``sample(k)``)."""
        self.blocks = dict(blocks)
        self.langs = list(self.blocks)
        self.routing = routing

    def language_of(self, step: int, micro: int = 0, micro_batches: int = 1, rank: int = 0, world: int = 1) -> str:
        k = (step * micro_batches + micro) * world + rank
        return self.langs[k % len(self.langs)]

    def batch(self, step: int, micro: int, micro_batches: int, batch_size: int, rank: int = 0,
              world: int = 1) -> torch.Tensor:
        k = (step * micro_batches + micro) * world + rank
        lang = self.langs[k % len(self.langs)]
        first = (k // len(self.langs)) * batch_size
        blocks = self.blocks[lang]
        out = torch.stack([blocks.sample(first + j) for j in range(batch_size)])
        self.routing.set_languages(lang)
        return out


def _check_out(out, overwrite: bool) -> Path:
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise XltError(f"output folder {out} already exists", "choose another folder, or pass --overwrite to replace it")
    return out


def train_upcycled(model, tokenizer, texts_by_lang: Mapping[str, Sequence[str]], steps: int = 200, *,
                   batch_size: int = 8, seq_len: int = 128, lr: float = 2e-4, warmup: float = 0.1,
                   weight_decay: float = 0.01, max_grad_norm: float = 1.0, precision: str = "fp32", seed: int = 0,
                   out: str | os.PathLike | None = None, overwrite: bool = False, show_progress: bool = True) -> dict:
    """Train an upcycled model (all its weights) with hybrid routing on per-language batches, in place.

    Runs :class:`xlt.adapt.train.Trainer` (AdamW, warmup and cosine decay, no embeddings-only stage) on
    :class:`LanguageBatches` cut from ``texts_by_lang`` (each language's texts packed into ``seq_len`` blocks), inside
    :class:`HybridRouting` with the plan in the model's config. Returns what was done: settings, per-language token
    counts and experts, the per-step loss history (each step's language included). ``precision``: fp32, bf16 or auto
    (:func:`xlt.precision.resolve_precision`). With ``out`` the model, the tokenizer and ``upcycle.json`` are written
    there atomically (:func:`save_upcycled`). The model ends in eval mode.

    The Trainer has no per-batch hook; :class:`LanguageBatches` is one without changing it: the Trainer draws each
    micro-batch right before its forward pass, and drawing it sets the router's language labels."""
    from xlt.adapt.data import PackedBlocks, pack_stream
    from xlt.adapt.train import TrainConfig, Trainer
    from xlt.eval.bpb import boundary_token_id, start_token_ids
    from xlt.precision import resolve_precision

    plan = plan_of(model)
    if out is not None:
        out = _check_out(out, overwrite)
    prec = resolve_precision(precision)
    if not texts_by_lang:
        raise XltError("no training text given", "pass texts_by_lang={lang: [texts, ...]}")
    blocks, info = {}, {}
    start = start_token_ids(tokenizer)
    for lang, texts in texts_by_lang.items():
        expert = plan.expert_of(lang)
        code = resolve(lang).code
        texts = [t for t in texts if t and t.strip()]
        if not texts:
            raise XltError(f"no training text for {code}", "give some non-empty text in every language")
        stream = pack_stream(tokenizer, texts, boundary_token_id(tokenizer))
        blocks[code] = PackedBlocks(stream, seq_len, seed, start)
        info[code] = {"expert": expert, "family": plan.families.get(code), "documents": len(texts),
                      "tokens": int(len(stream)), "blocks": len(blocks[code])}
    cfg = TrainConfig(steps=steps, stage1_steps=0, batch_size=batch_size, grad_accum=1, seq_len=seq_len, lr=lr,
                      warmup=warmup, weight_decay=weight_decay, max_grad_norm=max_grad_norm, eval_every=steps,
                      save_every=steps, seed=seed, precision=prec.used, compile="no")
    with tempfile.TemporaryDirectory(prefix="xlt-upcycle-ckpt-") as ckpt, HybridRouting(model, plan) as routing:
        data = LanguageBatches(blocks, routing)
        trainer = Trainer(model, data, cfg, ckpt, show_progress=show_progress, label="upcycle")
        history = trainer.train()
        trained = trainer.accelerator.unwrap_model(trainer.model)
    trained.eval()
    steps_log = [{**h, "language": data.language_of(h["step"] - 1)} for h in history["train"]]
    result = {"steps": steps, "batch_size": batch_size, "seq_len": seq_len, "lr": lr, "warmup": warmup,
              "weight_decay": weight_decay, "max_grad_norm": max_grad_norm, "precision": prec.as_dict(), "seed": seed,
              "schedule": "per-language micro-batches in turn: " + ", ".join(blocks), "languages": info,
              "routing": plan.routing, "first_loss": steps_log[0]["loss"] if steps_log else None,
              "last_loss": steps_log[-1]["loss"] if steps_log else None, "history": steps_log}
    if out is not None:
        save_upcycled(trained, tokenizer, out, overwrite=overwrite, training=result)
    return result


def save_upcycled(model, tokenizer, out: str | os.PathLike, *, overwrite: bool = False,
                  training: dict | None = None) -> Path:
    """Write ``model`` (safetensors + config.json with the plan), ``tokenizer`` and ``upcycle.json`` (plan, training
    record, versions) to ``out`` through a temporary folder renamed into place (:func:`xlt.util.atomic_dir`)."""
    import transformers

    import xlt
    from xlt.models.hf import quiet_transformers
    from xlt.util import atomic_dir, write_json_atomic

    plan = plan_of(model)
    out = _check_out(out, overwrite)
    quiet_transformers()
    try:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            write_json_atomic(tmp / PLAN_FILE, {
                "plan": plan.as_dict(), "training": training, "architecture": type(model).__name__,
                "reload": "transformers.AutoModelForCausalLM.from_pretrained(folder): no xlt code needed",
                "versions": {"xlt": xlt.__version__, "transformers": transformers.__version__,
                             "torch": torch.__version__}})
            mask = os.umask(0)
            os.umask(mask)
            for f in tmp.iterdir():  # temporary files are written private (0600); the result is an ordinary folder
                if f.is_file():
                    os.chmod(f, 0o666 & ~mask)
    except FileExistsError:
        raise XltError(f"output folder {out} already exists",
                       "choose another folder, or pass --overwrite to replace it") from None
    return out


# -- the CLI's entry point -------------------------------------------------------------------------------------------
def upcycle_run(source, out, langs, experts="family", moe_layers="last:2", train_steps: int = 200, family_map=None,
                seed: int = 0, show_progress: bool = True, *, top_k: int | None = None, corpus="bible",
                batch_size: int = 8, seq_len: int = 128, lr: float = 2e-4, precision: str = "fp32",
                overwrite: bool = False) -> dict:
    """``xlt upcycle SOURCE OUT``: load ``source`` (a prepared model name such as ``smollm2`` or a folder), upcycle it
    for ``langs`` (:func:`upcycle`), train ``train_steps`` steps with hybrid routing on the train split of ``corpus``
    (:func:`train_upcycled`; 0: no training) and write the HF folder ``out``. Bad inputs (a language without a
    family, a bad ``experts`` or ``moe_layers`` spec, an existing ``out`` without ``overwrite``, a language missing from the
    corpus) fail before the model is loaded; a ``moe_layers`` index or ``top_k`` the model cannot take fails after.
    Returns ``{"out", "plan", "training"}``."""
    from xlt.corpora import open_corpus
    from xlt.models.loading import load_source
    from xlt.precision import resolve_precision

    out = _check_out(out, overwrite)
    resolve_precision(precision)
    codes = _parse_langs(langs)
    _parse_experts(experts)
    parse_moe_layers(moe_layers, None)
    language_families(codes, family_map)
    if isinstance(train_steps, bool) or not isinstance(train_steps, int) or train_steps < 0:
        raise XltError(f"--train-steps {train_steps!r} is not a number of steps", "pass 0 (no training) or more")
    texts = {}
    if train_steps:
        c = open_corpus(corpus)
        texts = {code: c.texts(code, "train") for code in codes}
    model, tok, _ = load_source(source)
    moe, plan = upcycle(model, codes, experts=experts, moe_layers=moe_layers, top_k=top_k, family_map=family_map,
                        seed=seed)
    del model
    plan.source = str(source)
    moe.config.xlt_upcycle = plan.as_dict()
    training = None
    if train_steps:
        training = train_upcycled(moe, tok, texts, train_steps, batch_size=batch_size, seq_len=seq_len, lr=lr,
                                  precision=precision, seed=seed, out=out, overwrite=overwrite,
                                  show_progress=show_progress)
    else:
        save_upcycled(moe, tok, out, overwrite=overwrite)
    return {"out": str(out), "plan": plan.as_dict(), "training": training}
