"""Plan and check: a merge config becomes a list of output tensors, before any work.

:func:`plan` turns a config into a list of output tensors, each with its inputs, base and resolved
parameters, and checks everything that can be checked before any work: every model is readable (no
missing or truncated shard), architectures and shapes agree (models with different vocabularies need
an explicit rule: the vocabulary-sized tensors then come from one model), every source tensor reaches
the output or is dropped on purpose (``drop:``), parameters are valid, and layer ranges fit.

Parameters come from the method's options declaration (:class:`~xlt.merge.registry.MergeMethod`'s
``options``): for each output tensor, each option takes the value of the most specific place that sets it
(slice source > slice > model > global), conditionals resolved by the tensor's name, then its declared default;
per-model options become one value per input. Layer and embedding names come from :mod:`xlt.arch`. A method
with a ``plan`` hook lays out its own output tensors with this module's :class:`Planner` helpers
(``layer_swap``); the others get the ``models:`` plan (every tensor merged across the models) or the
``slices:`` plan (output layers stacked from layer ranges).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xlt import arch
from xlt.errors import XltError
from xlt.merge.config import MergeConfig, load_config, resolve_value
from xlt.merge.io import LoraSource, PlannedTensor, SafetensorsSource
from xlt.merge.registry import MERGES, MergeMethod, unknown_parameter
from xlt.options import coerce

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Input:
    model: str  # model reference (key into Plan.sources)
    name: str  # tensor name in that model


@dataclass
class OutTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype  # output dtype
    inputs: list[Input]
    base: Input | None = None
    params: dict = field(default_factory=dict)
    copy: bool = False  # one input copied (converted to the output dtype if it differs)
    why: str = ""  # for copies: which rule chose the source


@dataclass
class PlanParts:
    """What a layout (``models:``, ``slices:`` or a method's ``plan`` hook) decides."""

    tensors: list[OutTensor]
    layers: int | None  # the output's layer count when it differs from the config source's, else None
    config_from: str  # model whose config.json the output takes
    tokenizer_from: str  # model whose tokenizer files the output takes


@dataclass
class Plan:
    config: MergeConfig
    method: MergeMethod
    sources: dict[str, Any]
    tensors: list[OutTensor]
    out_config: dict
    config_source: str
    tokenizer_source: str
    compute_dtype: torch.dtype
    dropped: dict[str, list[str]]
    notes: list[str] = field(default_factory=list)
    arch: arch.Architecture | None = None  # the models' family (None: unknown, generic tensor names)
    options: dict = field(default_factory=dict)  # each option from the top-level parameters, else its default

    @property
    def merged(self) -> list[OutTensor]:
        return [t for t in self.tensors if not t.copy]

    def resolved_options(self) -> dict:
        """Each option as the merged tensors got it: its one value (one per input for per-model options), or
        ``"varies by tensor"`` when conditionals or per-slice values give several; ``options`` when none is merged."""
        out = {}
        for name, top in self.options.items():
            seen = {json.dumps(t.params[name]): t.params[name] for t in self.merged if name in t.params}
            out[name] = top if not seen else next(iter(seen.values())) if len(seen) == 1 else "varies by tensor"
        return out

    def planned(self) -> list[PlannedTensor]:
        return [PlannedTensor(t.name, t.shape, t.dtype) for t in self.tensors]


def open_source(ref: str, allow_pickle: bool):
    """A model reference -> a source: a folder, a known source name (``smollm2``) or ``BASE+LORA_FOLDER``."""
    from xlt.models.loading import KNOWN_SOURCES, resolve_source

    def folder(s: str) -> Path:
        p = Path(s).expanduser()
        if s in KNOWN_SOURCES and not p.exists():
            return resolve_source(s)
        if not p.exists():
            raise XltError(f"model {s} does not exist", "give a local HF model folder (config.json + *.safetensors)")
        return p

    if "+" in ref and not Path(ref).expanduser().exists():
        base, lora = ref.split("+", 1)
        return LoraSource(SafetensorsSource(folder(base), allow_pickle, label=base), folder(lora), allow_pickle)
    return SafetensorsSource(folder(ref), allow_pickle, label=ref)


class Planner:
    def __init__(self, cfg: MergeConfig, allow_pickle: bool = False):
        self.cfg = cfg
        self.method = MERGES.get(cfg.merge_method)
        self.specs = {s.name: s for s in self.method.specs()}
        self.allow_pickle = allow_pickle
        self.drop = [re.compile(d) for d in cfg.drop]
        self.compute = DTYPES[cfg.dtype] if cfg.dtype else torch.float32
        self.out_dtype = DTYPES[cfg.out_dtype or cfg.dtype] if (cfg.out_dtype or cfg.dtype) else None
        self.sources: dict[str, Any] = {}
        self.dropped: dict[str, list[str]] = {}
        self.notes: list[str] = []
        self.arch: arch.Architecture | None = None

    # parameters ---------------------------------------------------------------------------------------
    def check_param_names(self, params: dict, where: str) -> None:
        for k in params:
            if k not in self.specs:
                raise unknown_parameter(self.method, k, where)

    def check_model_params(self) -> None:
        """Every ``models[*].parameters`` key is an option of the method, and a per-model one."""
        m = self.method
        self.check_param_names(self.cfg.parameters, "top level")
        for e in self.cfg.models:
            self.check_param_names(e.parameters, f"models entry {e.model}")
            for k in e.parameters:
                if not self.specs[k].per_model:
                    raise XltError(f"merge config: {k} is a global parameter of {m.name}, set per model "
                                   f"(models entry {e.model})", f"move {k} to the top-level parameters:")

    def value(self, name: str, tensor: str, layers: list[dict]) -> Any:
        """The parameter ``name`` for ``tensor``: the most specific of ``layers`` that sets it, else the default."""
        s = self.specs[name]
        for d in layers:
            if name in d:
                v = resolve_value(d[name], tensor)
                if v is not None:
                    return coerce(s, v, f"merge method {self.method.name} (tensor {tensor})")
        if s.required:
            raise XltError(f"merge config: {self.method.name} needs parameter {name!r} (for {tensor})",
                           f"set {name} under parameters: ({s.help})")
        return s.default

    def global_params(self, where: str) -> dict:
        """The method's options that are not per model, from the top-level ``parameters:`` (no tensor filter)."""
        return {n: self.value(n, where, [self.cfg.parameters]) for n, s in self.specs.items() if not s.per_model}

    def tensor_params(self, tensor: str, per_input: list[list[dict]], shared: list[dict]) -> dict:
        out = {}
        for name, s in self.specs.items():
            if s.per_model:
                out[name] = [self.value(name, tensor, layers) for layers in per_input]
            else:
                out[name] = self.value(name, tensor, shared)
        if self.method.validate is not None:
            bad = self.method.validate(out)
            if bad:
                raise XltError(f"merge config: {bad[0]} (for {tensor})", bad[1])
        return out

    # sources ------------------------------------------------------------------------------------------
    def open_all(self) -> None:
        for ref in self.cfg.model_refs() + ([self.cfg.tokenizer_source] if self.cfg.tokenizer_source else []):
            if ref not in self.sources:
                self.sources[ref] = open_source(ref, self.allow_pickle)
        archs = {ref: tuple(s.config.get("architectures") or [s.config.get("model_type")])
                 for ref, s in self.sources.items()}
        if len(set(archs.values())) > 1:
            listing = "; ".join(f"{r}: {', '.join(map(str, a))}" for r, a in archs.items())
            raise XltError(f"the models have different architectures ({listing})",
                           "merge only models of one architecture (fine-tunes of the same base)")
        first = next(iter(self.sources.values()))
        a = arch.for_config(first.config)
        # a known family whose layer names the checkpoint does not use (e.g. a multimodal wrapper): generic names
        if a is not None and any(n.startswith(a.layer_prefix) for n in first.names()):
            self.arch = a

    def is_dropped(self, ref: str, name: str) -> bool:
        if any(d.search(name) for d in self.drop):
            self.dropped.setdefault(ref, []).append(name)
            return True
        return False

    def split_layer(self, name: str) -> tuple[str, int, str] | None:
        return arch.split_layer(name, self.arch)

    def is_pre_layer(self, name: str) -> bool:
        return arch.is_pre_layer(name, self.arch)

    def is_head(self, name: str) -> bool:
        return arch.is_head(name, self.arch)

    def vocab_size(self, ref: str) -> int | None:
        return arch.vocab_size(self.sources[ref].config)

    def vocab_rule(self, refs: list[str]) -> str | None:
        """When the models' vocabularies differ: the model whose embeddings, head and tokenizer are kept."""
        sizes = {r: self.vocab_size(r) for r in refs}
        if len(set(sizes.values())) <= 1:
            return None
        src = self.cfg.tokenizer_source
        if src is None:
            listing = ", ".join(f"{r}: {v}" for r, v in sizes.items())
            raise XltError(f"the models have different vocabulary sizes ({listing}), so their embeddings and LM heads "
                           "cannot be merged row by row",
                           "set tokenizer_source: MODEL to take the embeddings, LM head and tokenizer from that model "
                           "(the other tensors are merged as usual)")
        return src

    def is_vocab_tensor(self, ref: str, name: str) -> bool:
        """A tensor with one row per token: the embeddings, the head (and its bias)."""
        info = self.sources[ref].info(name)
        return bool(info.shape) and info.shape[0] == self.vocab_size(ref) and (
            arch.is_embedding(name, self.arch) or self.is_head(name) or self.is_pre_layer(name))

    def depth(self, ref: str) -> int:
        n = arch.n_layers(self.sources[ref].config)
        if n is None:
            idx = [s[1] for s in (self.split_layer(k) for k in self.sources[ref].names()) if s]
            n = max(idx) + 1 if idx else 0
        return n

    def order_key(self, name: str):
        s = self.split_layer(name)
        if s:
            return (1, s[1], s[0], s[2])
        return (0 if self.is_pre_layer(name) else 2, 0, name, "")

    def layer_tensors(self, ref: str, layer: int) -> list[tuple[str, str]]:
        """(prefix, rest) of the tensors of ``ref``'s layer ``layer``."""
        out = []
        for n in self.sources[ref].names():
            s = self.split_layer(n)
            if s and s[1] == layer:
                out.append((s[0], s[2]))
        return sorted(out, key=lambda x: (x[0], x[1]))

    def non_layer(self, ref: str) -> list[str]:
        return [n for n in self.sources[ref].names() if not self.split_layer(n)]

    # output tensors -----------------------------------------------------------------------------------
    def out_dtype_for(self, inp: Input) -> torch.dtype:
        return self.out_dtype or self.sources[inp.model].info(inp.name).dtype

    def model_params(self, ref: str) -> dict:
        for e in self.cfg.models:
            if e.model == ref:
                return e.parameters
        return {}

    def make_tensor(self, out_name: str, inputs: list[Input], base: Input | None, per_input: list[list[dict]],
                    shared: list[dict]) -> OutTensor:
        """One merged output tensor: shapes checked, input count checked, parameters resolved."""
        m = self.method
        shapes = {(i.model, i.name): self.sources[i.model].info(i.name).shape for i in inputs + ([base] if base else [])}
        if len(set(shapes.values())) > 1:
            listing = "; ".join(f"{r} {n}: {list(s)}" for (r, n), s in shapes.items())
            raise XltError(f"tensor {out_name} has different shapes in the inputs ({listing})",
                           "merge only models of the same architecture and size")
        if len(inputs) < m.min_models or (m.max_models is not None and len(inputs) > m.max_models):
            want = f"{m.min_models}" + (f" to {m.max_models}" if m.max_models != m.min_models else "") \
                if m.max_models is not None else f"at least {m.min_models}"
            raise XltError(f"{m.name} merges {want} model(s) besides the base; {out_name} has {len(inputs)}",
                           "change the models listed (the base_model does not count)")
        if m.check_inputs is not None:
            bad = m.check_inputs(len(inputs), base is not None)
            if bad:
                raise XltError(f"{bad[0]} (tensor {out_name})", bad[1])
        params = self.tensor_params(out_name, per_input, shared)
        copy = m.copies is not None and m.copies(params, len(inputs), base is not None)
        return OutTensor(out_name, next(iter(shapes.values())), self.out_dtype_for(inputs[0]), inputs, base, params,
                         copy=copy, why="single source" if copy else "")

    def copy_tensor(self, out_name: str, inp: Input, why: str) -> OutTensor:
        return OutTensor(out_name, self.sources[inp.model].info(inp.name).shape, self.out_dtype_for(inp), [inp],
                         None, {}, copy=True, why=why)

    def base_ref(self) -> str | None:
        m, cfg = self.method, self.cfg
        if m.needs_base and not cfg.base_model:
            raise XltError(f"{m.name} needs a base_model (the model the task vectors are taken from)",
                           "add base_model: PATH to the config")
        return cfg.base_model if (m.needs_base or m.uses_base) else None

    # layouts ------------------------------------------------------------------------------------------
    def plan_models(self) -> PlanParts:
        """``models:``: every tensor of the models merged across them (vocabulary rule applied)."""
        cfg = self.cfg
        self.check_model_params()
        base = self.base_ref()
        inputs = [e.model for e in cfg.models if e.model != base]
        if not inputs:
            raise XltError("the config lists no model to merge besides the base", "list the models under models:")
        refs = ([base] if base else []) + inputs
        vocab_src = self.vocab_rule(refs + ([cfg.tokenizer_source] if cfg.tokenizer_source else []))
        primary = base or inputs[0]
        names = sorted(dict.fromkeys(n for r in refs for n in self.sources[r].names()), key=self.order_key)
        tensors = []
        for n in names:
            have = [r for r in refs if n in self.sources[r]]
            if vocab_src and (n in self.sources[vocab_src]) and self.is_vocab_tensor(vocab_src, n):
                tensors.append(self.copy_tensor(n, Input(vocab_src, n), f"vocabulary rule: from {vocab_src}"))
                for r in refs:
                    if r != vocab_src and n in self.sources[r]:
                        self.dropped.setdefault(r, []).append(n)
                continue
            dropped = [self.is_dropped(r, n) for r in have]  # a list: every model's drop is recorded
            if len(have) != len(refs):
                if all(dropped):
                    continue
                missing = [r for r in refs if r not in have]
                raise XltError(f"tensor {n} is in {', '.join(have)} but not in {', '.join(missing)}",
                               f"merge models with the same tensors, or leave it out on purpose with drop: ['{re.escape(n)}']")
            if any(dropped):
                continue
            per_input = [[self.model_params(r), cfg.parameters] for r in inputs]
            tensors.append(self.make_tensor(n, [Input(r, n) for r in inputs], Input(base, n) if base else None,
                                            per_input, [cfg.parameters]))
        return PlanParts(tensors, None, vocab_src or cfg.tokenizer_source or primary,
                         cfg.tokenizer_source or vocab_src or primary)

    def plan_slices(self) -> PlanParts:
        """``slices:``: output layers stacked from layer ranges; embeddings from the first slice's sources, final
        norm and head from the last slice's (mergekit's rule)."""
        cfg, m = self.cfg, self.method
        self.check_model_params()
        base = self.base_ref()
        tensors: list[OutTensor] = []
        out_layer = 0
        for si, sl in enumerate(cfg.slices):
            self.check_param_names(sl.parameters, f"slices[{si}]")
            for src in sl.sources:
                self.check_param_names(src.parameters, f"slices[{si}] source {src.model}")
                depth = self.depth(src.model)
                if src.layer_range[1] > depth:
                    raise XltError(f"slices[{si}]: layer_range {list(src.layer_range)} of {src.model} goes beyond its "
                                   f"{depth} layers", f"use layer ranges within [0, {depth}]")
            n = sl.sources[0].layer_range[1] - sl.sources[0].layer_range[0]
            srcs = list(sl.sources)
            base_src = next((s for s in srcs if s.model == base), None) if base else None
            if base and base_src is None and m.needs_base:
                raise XltError(f"slices[{si}] has no source from base_model {base}",
                               "add the base model with the same layer range to every slice's sources")
            ins = [s for s in srcs if s is not base_src]
            for j in range(n):
                for pre, rest in self.layer_tensors(ins[0].model, ins[0].layer_range[0] + j):
                    out_name = f"{pre}{out_layer + j}.{rest}"
                    inputs = []
                    for s in ins:
                        nm = f"{pre}{s.layer_range[0] + j}.{rest}"
                        if nm not in self.sources[s.model]:
                            raise XltError(f"tensor {nm} is missing from {s.model}",
                                           "slice sources must have the same layer structure")
                        inputs.append(Input(s.model, nm))
                    b = Input(base, f"{pre}{base_src.layer_range[0] + j}.{rest}") if base_src else None
                    per_input = [[s.parameters, sl.parameters, self.model_params(s.model), cfg.parameters] for s in ins]
                    tensors.append(self.make_tensor(out_name, inputs, b, per_input, [sl.parameters, cfg.parameters]))
            out_layer += n
        refs = list(dict.fromkeys(s.model for sl in cfg.slices for s in sl.sources))
        vocab_src = self.vocab_rule(refs + ([cfg.tokenizer_source] if cfg.tokenizer_source else []))
        pre_t, post_t = [], []
        for sl, want_pre in ((cfg.slices[0], True), (cfg.slices[-1], False)):
            srcs = list(sl.sources)
            base_src = next((s for s in srcs if s.model == base), None) if base else None
            ins = [s for s in srcs if s is not base_src]
            for n in self.non_layer(ins[0].model):
                if self.is_pre_layer(n) != want_pre:
                    continue
                if vocab_src and n in self.sources[vocab_src] and self.is_vocab_tensor(vocab_src, n):
                    (pre_t if want_pre else post_t).append(
                        self.copy_tensor(n, Input(vocab_src, n), f"vocabulary rule: from {vocab_src}"))
                    continue
                if any([self.is_dropped(s.model, n) for s in srcs]):
                    continue
                per_input = [[s.parameters, sl.parameters, self.model_params(s.model), cfg.parameters] for s in ins]
                t = self.make_tensor(n, [Input(s.model, n) for s in ins], Input(base, n) if base_src else None,
                                     per_input, [sl.parameters, cfg.parameters])
                (pre_t if want_pre else post_t).append(t)
        primary = cfg.tokenizer_source or vocab_src or cfg.slices[0].sources[0].model
        return PlanParts(pre_t + tensors + post_t, out_layer, primary, primary)

    def check_coverage(self, tensors: list[OutTensor]) -> None:
        """Every kind of source tensor (non-layer name, or layer-relative name) reaches the output or is dropped."""
        def kind(n: str) -> str:
            s = self.split_layer(n)
            return f"{s[0]}*.{s[2]}" if s else n

        out_kinds = {kind(t.name) for t in tensors}
        used = {(i.model, i.name) for t in tensors for i in t.inputs + ([t.base] if t.base else [])}
        for ref, src in self.sources.items():
            if ref == self.cfg.tokenizer_source and not any(i[0] == ref for i in used):
                continue
            dropped = set(self.dropped.get(ref, []))
            missing = sorted({kind(n) for n in src.names() if n not in dropped and kind(n) not in out_kinds})
            if missing:
                raise XltError(f"source tensors of {ref} would be silently left out of the output: {', '.join(missing[:6])}",
                               "check the config, or leave them out on purpose with drop: [REGEX, ...]")

    def build(self) -> Plan:
        self.open_all()
        cfg, m = self.cfg, self.method
        if m.plan is not None:
            parts = m.plan(self)
        elif cfg.slices is not None:
            parts = self.plan_slices()
        else:
            parts = self.plan_models()
        self.check_coverage(parts.tensors)
        out_cfg = json.loads(json.dumps(self.sources[parts.config_from].config))
        if parts.layers is not None:
            arch.set_config_layers(out_cfg, parts.layers)
        dtypes = {t.dtype for t in parts.tensors}
        if len(dtypes) == 1:
            out_cfg["dtype"] = str(next(iter(dtypes))).removeprefix("torch.")
            out_cfg.pop("torch_dtype", None)
        top = {n: self.value(n, "", [cfg.parameters]) for n in self.specs}
        return Plan(cfg, m, self.sources, parts.tensors, out_cfg, parts.config_from, parts.tokenizer_from,
                    self.compute, self.dropped, self.notes, self.arch, top)


def plan(config, allow_pickle: bool = False) -> Plan:
    """Check a config against its models and return the plan (nothing is written)."""
    return Planner(load_config(config), allow_pickle=allow_pickle).build()
