"""Plan, check, then stream: the merge engine.

:func:`plan` turns a config into a list of output tensors, each with its inputs, base and resolved
parameters, and checks everything that can be checked before any work: every model is readable (no
missing or truncated shard), architectures and shapes agree (models with different vocabularies need
an explicit rule: the vocabulary-sized tensors then come from one model), every source tensor reaches
the output or is dropped on purpose (``drop:``), parameters are valid, layer ranges fit, and the disk
has room. :func:`execute` then runs the statistics passes a method asks for (streaming, see
:mod:`xlt.merge.stats`) and writes the output tensor by tensor, in row chunks for element-wise
methods, into a temporary folder renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from xlt.errors import XltError
from xlt.merge.config import MergeConfig, load_config, resolve_value
from xlt.merge.io import (LoraSource, PlannedTensor, SafetensorsSource, ShardedWriter, copy_tokenizer,
                          iter_chunks)
from xlt.merge.registry import REQUIRED, Context, MergeMethod, get_method
from xlt.merge.stats import RankSelector

LAYER_RE = re.compile(r"^(?P<pre>(?:.*\.)?)(?P<kind>layers|h|blocks|block|layer)\.(?P<idx>\d+)\.(?P<rest>.+)$")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


# -- helpers -----------------------------------------------------------------------------------------------
def split_layer(name: str) -> tuple[str, int, str] | None:
    """``model.layers.3.mlp.up.weight`` -> ``("model.layers.", 3, "mlp.up.weight")`` (None for non-layer tensors)."""
    m = LAYER_RE.match(name)
    if not m:
        return None
    return m["pre"] + m["kind"] + ".", int(m["idx"]), m["rest"]


def is_pre_layer(name: str) -> bool:
    """Embeddings come before the layers; everything else outside the layers (final norm, head) after."""
    return any(k in name for k in ("embed", "wte", "wpe", "word_embeddings"))


def is_embedding(name: str) -> bool:
    return any(k in name for k in ("embed_tokens", "wte", "word_embeddings"))


def n_layers(config: dict) -> int | None:
    for k in LAYER_KEYS:
        if isinstance(config.get(k), int):
            return config[k]
    for sub in ("text_config", "language_config"):
        if isinstance(config.get(sub), dict):
            n = n_layers(config[sub])
            if n is not None:
                return n
    return None


def vocab_size(config: dict) -> int | None:
    v = config.get("vocab_size")
    if v is None and isinstance(config.get("text_config"), dict):
        v = config["text_config"].get("vocab_size")
    return v


def parse_size(s: str | int) -> int:
    """``"5GB"``, ``"500MB"``, ``"1B"`` (mergekit: bytes), ``1000000`` -> bytes."""
    if isinstance(s, int):
        return s
    m = re.fullmatch(r"\s*([\d.]+)\s*([kKmMgGtT]?)(i?)[bB]?\s*", str(s))
    if not m:
        raise XltError(f"cannot read size {s!r}", "write e.g. 5GB, 500MB or a number of bytes")
    mult = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[m[2].lower()]
    if m[3]:
        mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m[2].lower()]
    return int(float(m[1]) * mult)


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return str(n)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- the plan ----------------------------------------------------------------------------------------------
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

    @property
    def merged(self) -> list[OutTensor]:
        return [t for t in self.tensors if not t.copy]

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
        self.method = get_method(cfg.merge_method)
        self.allow_pickle = allow_pickle
        self.drop = [re.compile(d) for d in cfg.drop]
        self.compute = DTYPES[cfg.dtype] if cfg.dtype else torch.float32
        self.out_dtype = DTYPES[cfg.out_dtype or cfg.dtype] if (cfg.out_dtype or cfg.dtype) else None
        self.sources: dict[str, Any] = {}
        self.dropped: dict[str, list[str]] = {}
        self.notes: list[str] = []

    # parameters ---------------------------------------------------------------------------------------
    def check_param_names(self, params: dict, where: str, per_model_ok: bool) -> None:
        for k in params:
            p = self.method.param(k)
            if p is None:
                valid = ", ".join(x.name for x in self.method.params) or "none"
                raise XltError(f"merge config: {self.method.name} has no parameter {k!r} ({where})",
                               f"{self.method.name}'s parameters: {valid}")

    def value(self, name: str, tensor: str, layers: list[dict]) -> Any:
        """The parameter ``name`` for ``tensor``: the most specific of ``layers`` that sets it, else the default."""
        p = self.method.param(name)
        for d in layers:
            if name in d:
                v = resolve_value(d[name], tensor)
                if v is not None:
                    return self.typed(p, v, tensor)
        if p.default is REQUIRED:
            raise XltError(f"merge config: {self.method.name} needs parameter {name!r} (for {tensor})",
                           f"set {name} under parameters:")
        return p.default

    def typed(self, p, v, tensor: str):
        ok = (isinstance(v, bool) if p.kind is bool else
              isinstance(v, (int, float)) and not isinstance(v, bool) if p.kind is float else
              isinstance(v, int) and not isinstance(v, bool) if p.kind is int else isinstance(v, str))
        if not ok:
            raise XltError(f"merge config: parameter {p.name} must be {p.kind.__name__}, got {v!r} (for {tensor})",
                           f"give {p.name} a {p.kind.__name__} value")
        v = p.kind(v)
        if p.check is not None:
            problem = p.check(v)
            if problem:
                raise XltError(f"merge config: {p.name}: {problem} (for {tensor})", f"give {p.name} a valid value")
        return v

    def tensor_params(self, tensor: str, per_input: list[list[dict]], shared: list[dict]) -> dict:
        out = {}
        for p in self.method.params:
            if p.per_model:
                out[p.name] = [self.value(p.name, tensor, layers) for layers in per_input]
            else:
                out[p.name] = self.value(p.name, tensor, shared)
        if self.method.validate is not None:
            bad = self.method.validate(out)
            if bad:
                raise XltError(f"merge config: {bad[0]} (for {tensor})", bad[1])
        w = out.get("weight")
        if w is not None and out.get("normalize") and abs(sum(w)) < 1e-12:
            raise XltError(f"merge config: the weights of {tensor} sum to 0, and normalize divides by their sum",
                           "change the weights, or set normalize: false")
        return out

    # sources ------------------------------------------------------------------------------------------
    def open_all(self) -> None:
        for ref in self.cfg.model_refs() + self.extra_refs():
            if ref not in self.sources:
                self.sources[ref] = open_source(ref, self.allow_pickle)
        archs = {ref: tuple(s.config.get("architectures") or [s.config.get("model_type")])
                 for ref, s in self.sources.items()}
        if len(set(archs.values())) > 1:
            listing = "; ".join(f"{r}: {', '.join(map(str, a))}" for r, a in archs.items())
            raise XltError(f"the models have different architectures ({listing})",
                           "merge only models of one architecture (fine-tunes of the same base)")

    def extra_refs(self) -> list[str]:
        refs = []
        if self.cfg.tokenizer_source:
            refs.append(self.cfg.tokenizer_source)
        return refs

    def is_dropped(self, ref: str, name: str) -> bool:
        if any(d.search(name) for d in self.drop):
            self.dropped.setdefault(ref, []).append(name)
            return True
        return False

    def vocab_rule(self, refs: list[str]) -> str | None:
        """When the models' vocabularies differ: the model whose embeddings, head and tokenizer are kept."""
        sizes = {r: vocab_size(self.sources[r].config) for r in refs}
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
        info = self.sources[ref].info(name)
        v = vocab_size(self.sources[ref].config)
        return bool(info.shape) and info.shape[0] == v and (is_embedding(name) or "lm_head" in name
                                                             or is_pre_layer(name) or name.endswith("head.weight"))

    def depth(self, ref: str) -> int:
        n = n_layers(self.sources[ref].config)
        if n is None:
            idx = [s[1] for s in (split_layer(k) for k in self.sources[ref].names()) if s]
            n = max(idx) + 1 if idx else 0
        return n

    # the plan -----------------------------------------------------------------------------------------
    def build(self) -> Plan:
        self.open_all()
        cfg, m = self.cfg, self.method
        if m.name == "layer_swap":
            tensors, layers_out, config_src, tok_src = self.plan_layer_swap()
        elif cfg.slices is not None:
            tensors, layers_out, config_src, tok_src = self.plan_slices()
        else:
            tensors, layers_out, config_src, tok_src = self.plan_models()
        self.check_coverage(tensors)
        out_cfg = json.loads(json.dumps(self.sources[config_src].config))
        if layers_out is not None:
            for k in LAYER_KEYS:
                if k in out_cfg:
                    out_cfg[k] = layers_out
            if isinstance(out_cfg.get("layer_types"), list) and len(out_cfg["layer_types"]) != layers_out:
                lt = out_cfg["layer_types"]
                out_cfg["layer_types"] = (lt * layers_out)[:layers_out] if len(set(lt)) == 1 else lt[:layers_out]
        dtypes = {t.dtype for t in tensors}
        if len(dtypes) == 1:
            out_cfg["dtype"] = str(next(iter(dtypes))).removeprefix("torch.")
            out_cfg.pop("torch_dtype", None)
        return Plan(cfg, m, self.sources, tensors, out_cfg, config_src, tok_src, self.compute, self.dropped,
                    self.notes)

    def out_dtype_for(self, inp: Input) -> torch.dtype:
        return self.out_dtype or self.sources[inp.model].info(inp.name).dtype

    def model_params(self, ref: str) -> dict:
        for e in self.cfg.models:
            if e.model == ref:
                return e.parameters
        return {}

    def make_tensor(self, out_name: str, inputs: list[Input], base: Input | None, per_input: list[list[dict]],
                    shared: list[dict]) -> OutTensor:
        """One merged output tensor: shapes checked, parameters resolved."""
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
        if m.name == "slerp" and (base is None) != (len(inputs) == 2):
            raise XltError(f"slerp interpolates two models; {out_name} has "
                           f"{len(inputs) + (base is not None)} (base_model counts as one)",
                           "give base_model and one model, or two models without base_model")
        params = self.tensor_params(out_name, per_input, shared)
        shape = next(iter(shapes.values()))
        copy = (m.name == "passthrough" and params["scale"][0] == 1) or \
               (m.name in ("linear", "layer_swap") and len(inputs) == 1 and base is None)
        return OutTensor(out_name, shape, self.out_dtype_for(inputs[0]), inputs, base, params, copy=copy,
                         why="single source" if copy else "")

    def copy_tensor(self, out_name: str, inp: Input, why: str) -> OutTensor:
        return OutTensor(out_name, self.sources[inp.model].info(inp.name).shape, self.out_dtype_for(inp), [inp],
                         None, {}, copy=True, why=why)

    def base_ref(self) -> str | None:
        m, cfg = self.method, self.cfg
        if m.needs_base and not cfg.base_model:
            raise XltError(f"{m.name} needs a base_model (the model the task vectors are taken from)",
                           "add base_model: PATH to the config")
        return cfg.base_model if (m.needs_base or m.uses_base) else None

    def plan_models(self):
        cfg = self.cfg
        for e in cfg.models:
            self.check_param_names(e.parameters, f"models entry {e.model}", True)
        self.check_param_names(cfg.parameters, "top level", False)
        for p in self.method.params:
            if not p.per_model and any(p.name in e.parameters for e in cfg.models):
                raise XltError(f"merge config: {p.name} is a global parameter of {self.method.name}, set per model",
                               f"move {p.name} to the top-level parameters:")
        base = self.base_ref()
        inputs = [e.model for e in cfg.models if e.model != base]
        if not inputs:
            raise XltError("the config lists no model to merge besides the base", "list the models under models:")
        refs = ([base] if base else []) + inputs
        vocab_src = self.vocab_rule(refs + ([cfg.tokenizer_source] if cfg.tokenizer_source else []))
        primary = base or inputs[0]
        names: list[str] = []
        seen = set()
        for r in refs:
            for n in self.sources[r].names():
                if n not in seen:
                    seen.add(n)
                    names.append(n)
        names = sorted(names, key=lambda n: self.order_key(n))
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
        config_src = vocab_src or cfg.tokenizer_source or primary
        return tensors, None, config_src, cfg.tokenizer_source or vocab_src or primary

    def order_key(self, name: str):
        s = split_layer(name)
        if s:
            return (1, s[1], s[0], s[2])
        return (0 if is_pre_layer(name) else 2, 0, name, "")

    def layer_tensors(self, ref: str, layer: int) -> list[tuple[str, str]]:
        """(prefix, rest) of the tensors of ``ref``'s layer ``layer``."""
        out = []
        for n in self.sources[ref].names():
            s = split_layer(n)
            if s and s[1] == layer:
                out.append((s[0], s[2]))
        return sorted(out, key=lambda x: (x[0], x[1]))

    def non_layer(self, ref: str) -> list[str]:
        return [n for n in self.sources[ref].names() if not split_layer(n)]

    def plan_slices(self):
        cfg, m = self.cfg, self.method
        self.check_param_names(cfg.parameters, "top level", False)
        for e in cfg.models:
            self.check_param_names(e.parameters, f"models entry {e.model}", True)
        base = self.base_ref()
        tensors: list[OutTensor] = []
        out_layer = 0
        for si, sl in enumerate(cfg.slices):
            self.check_param_names(sl.parameters, f"slices[{si}]", False)
            for src in sl.sources:
                self.check_param_names(src.parameters, f"slices[{si}] source {src.model}", True)
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
                kinds = self.layer_tensors(ins[0].model, ins[0].layer_range[0] + j)
                for pre, rest in kinds:
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
        # embeddings from the first slice's sources, final norm / head from the last slice's (mergekit's rule)
        refs = list(dict.fromkeys(s.model for sl in cfg.slices for s in sl.sources))
        vocab_src = self.vocab_rule(refs + ([cfg.tokenizer_source] if cfg.tokenizer_source else []))
        pre_t, post_t = [], []
        for sl, want_pre in ((cfg.slices[0], True), (cfg.slices[-1], False)):
            srcs = list(sl.sources)
            base_src = next((s for s in srcs if s.model == base), None) if base else None
            ins = [s for s in srcs if s is not base_src]
            for n in self.non_layer(ins[0].model):
                if is_pre_layer(n) != want_pre:
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
        return pre_t + tensors + post_t, out_layer, primary, primary

    def plan_layer_swap(self):
        cfg = self.cfg
        if cfg.slices is not None:
            raise XltError("layer_swap takes models:, not slices:", "list the two models under models:")
        self.check_param_names(cfg.parameters, "top level", False)
        for e in cfg.models:
            if e.parameters:
                raise XltError(f"layer_swap has no per-model parameters (models entry {e.model})",
                               "put outer, bottom, top, ... under the top-level parameters:")
        refs = [e.model for e in cfg.models]
        if len(refs) != 2 or refs[0] == refs[1]:
            raise XltError(f"layer_swap takes exactly two different models, the config lists {len(refs)}",
                           "list the language expert and the task expert under models:")
        p = {q.name: self.value(q.name, "layer_swap", [cfg.parameters]) for q in self.method.params}
        for k in ("outer", "embeddings_from", "head_from"):
            if p[k] and p[k] not in refs:
                raise XltError(f"layer_swap parameter {k}: {p[k]!r} is not one of the models",
                               f"use one of: {', '.join(refs)}")
        outer = p["outer"] or refs[0]
        inner = refs[1] if outer == refs[0] else refs[0]
        emb = p["embeddings_from"] or outer
        head = p["head_from"] or emb
        depths = {r: self.depth(r) for r in refs}
        if depths[outer] != depths[inner]:
            raise XltError(f"layer_swap needs models of the same depth ({outer}: {depths[outer]}, {inner}: {depths[inner]})",
                           "swap layers between fine-tunes of the same base model")
        L = depths[outer]
        plan = self.method_module().layer_sources(L, p["bottom"], p["top"], p["transition_bottom"], p["transition_top"])
        tensors = []
        for i, which in enumerate(plan):
            kinds = self.layer_tensors(outer, i)
            if [k for k in kinds] != self.layer_tensors(inner, i):
                raise XltError(f"layer {i} has different tensors in {outer} and {inner}",
                               "swap layers between models of the same architecture")
            for pre, rest in kinds:
                n = f"{pre}{i}.{rest}"
                if which == "blend":
                    tensors.append(self.make_tensor(n, [Input(outer, n), Input(inner, n)], None, [[], []],
                                                    [cfg.parameters]))
                else:
                    tensors.append(self.copy_tensor(n, Input(outer if which == "outer" else inner, n),
                                                    f"layer_swap: {which} layer"))
        vocab = {r: vocab_size(self.sources[r].config) for r in refs}
        if vocab[emb] != vocab[head] and not self.sources[emb].config.get("tie_word_embeddings"):
            if any("lm_head" in n for n in self.sources[head].names()):
                raise XltError(f"embeddings_from {emb} has {vocab[emb]} tokens but head_from {head} has {vocab[head]}",
                               "take the embeddings and the LM head from the same model (the one whose tokenizer you use)")
        pre, post = [], []
        for r, want_pre in ((emb, True), (head, False)):
            for n in self.non_layer(r):
                if is_pre_layer(n) != want_pre:
                    continue
                if self.is_dropped(r, n):
                    continue
                other = inner if r == outer else outer
                if n in self.sources[other] and not self.is_vocab_tensor(r, n) and \
                        self.sources[other].info(n).shape != self.sources[r].info(n).shape:
                    raise XltError(f"tensor {n} has different shapes in {r} and {other}",
                                   "swap layers between models of the same architecture")
                (pre if want_pre else post).append(self.copy_tensor(n, Input(r, n), f"layer_swap: {'embeddings' if want_pre else 'head'} from {r}"))
                if n in self.sources[other]:
                    self.dropped.setdefault(other, []).append(n)
        self.notes.append(f"layer_swap: layers {''.join({'outer': 'O', 'inner': 'I', 'blend': 'B'}[w] for w in plan)} "
                          f"(O = {outer}, I = {inner}, B = blend α={p['alpha']}); embeddings from {emb}, head from {head}")
        return pre + tensors + post, None, emb, cfg.tokenizer_source or emb

    def method_module(self):
        from xlt.merge.methods import layer_swap

        return layer_swap

    def check_coverage(self, tensors: list[OutTensor]) -> None:
        """Every kind of source tensor (non-layer name, or layer-relative name) reaches the output or is dropped."""
        def kind(n: str) -> str:
            s = split_layer(n)
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


def plan(config, allow_pickle: bool = False) -> Plan:
    """Check a config against its models and return the plan (nothing is written)."""
    cfg = load_config(config)
    return Planner(cfg, allow_pickle=allow_pickle).build()


# -- execution ---------------------------------------------------------------------------------------------
@dataclass
class MergeResult:
    out: Path
    tensors: int
    merged: int
    copied: int
    bytes: int
    seconds: float
    peak_rss: int
    shards: int
    provenance: dict

    def summary(self) -> str:
        return (f"{self.tensors} tensors ({self.merged} merged, {self.copied} copied), {human(self.bytes)} in "
                f"{self.shards} shard(s), {self.seconds:.1f} s, peak memory (RSS) {human(self.peak_rss)} -> {self.out}")


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _progress(total: int, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="tensor", disable=not show, leave=False, dynamic_ncols=True)


class Executor:
    def __init__(self, plan: Plan, chunk_elems: int, show_progress: bool, cache_elems: int | None = None):
        self.plan = plan
        self.chunk = chunk_elems
        self.cache_elems = 6 * chunk_elems if cache_elems is None else cache_elems
        self.show = show_progress
        self.m = plan.method
        self.ctx = Context(seed=plan.config.random_seed)
        self.refine_parallel_elems = 1 << 24  # 16.8 M elements: an argsort needs ~17 bytes per element

    def load(self, inp: Input, a, b, dtype=None) -> torch.Tensor:
        return self.plan.sources[inp.model].rows(inp.name, a, b, dtype or self.plan.compute_dtype)

    def chunks(self, t: OutTensor):
        if self.m.elementwise:
            return list(iter_chunks(t.shape, self.chunk))
        return [(None, None)]

    def chunk_ctx(self, t: OutTensor, a) -> None:
        per_row = 1
        for s in t.shape[1:]:
            per_row *= s
        self.ctx.name = t.name
        self.ctx.shape = t.shape
        self.ctx.offset = (a or 0) * per_row
        self.ctx.is_embedding = is_embedding(t.name)

    def values(self, stage, t: OutTensor, a, b):
        self.chunk_ctx(t, a)
        base = self.load(t.base, a, b) if t.base else None
        ins = [self.load(i, a, b) for i in t.inputs]
        return stage.values(base, ins, t.params, self.ctx)

    def run_stage(self, si: int, stage, tensors: list[OutTensor], bar_desc: str, loaded=None) -> None:
        """Two streaming passes over ``tensors`` for stage ``si``; results into ctx.stats[si].

        For one tensor whose values fit in ``cache_elems`` (all models together), pass 1 keeps the values
        so pass 2 does not read and recompute them.
        """
        n_models = len(tensors[0].inputs)
        sels = [RankSelector(nonneg=stage.nonneg) for _ in range(n_models)]
        numel = sum(_numel(t.shape) for t in tensors)
        cache: list | None = [] if len(tensors) == 1 and numel * n_models <= self.cache_elems else None
        if loaded is not None:  # one tensor, already read whole
            self.chunk_ctx(tensors[0], None)
            cache = [stage.values(loaded[0], loaded[1], tensors[0].params, self.ctx)]
        for pass_no in (1, 2):
            with _progress(len(tensors), f"{bar_desc} pass {pass_no}", self.show and len(tensors) > 1) as bar:
                if cache and (pass_no == 2 or loaded is not None):
                    for vals in cache:
                        for i, v in enumerate(vals):
                            sels[i].add(v)
                else:
                    for t in tensors:
                        for a, b in self.chunks(t):
                            vals = self.values(stage, t, a, b)
                            for i, v in enumerate(vals):
                                sels[i].add(v)
                            if cache is not None:
                                cache.append(vals)
                            del vals
                        if len(tensors) > 1:
                            for i in t.inputs + ([t.base] if t.base else []):
                                self.plan.sources[i.model].release(i.name)
                        bar.update(1)
            if pass_no == 1:
                for i, s in enumerate(sels):
                    s.next_pass(stage.ranks(s.total, i, tensors[0].params))
        while len(self.ctx.stats) <= si:
            self.ctx.stats.append(None)
        self.ctx.stats[si] = [s.result() for s in sels]
        return cache

    def refine_stage(self, si: int, stage, t: OutTensor, cache) -> None:
        """``StatStage.refine`` for the models whose selection asks for it (``whole``), on each such model's
        values over the whole tensor: from ``cache`` (pass 1's values) when it holds them, else one more
        streaming pass per model. Models are refined in parallel (up to torch's thread count, one thread each:
        mergekit's argsort is single-threaded) when their values are cached and the tensor has at most
        ``refine_parallel_elems`` elements, so that the concurrent argsorts stay within a few hundred MB."""
        sels = self.ctx.stats[si]
        out = [None] * len(sels)
        while len(self.ctx.refined) <= si:
            self.ctx.refined.append(None)
        self.ctx.refined[si] = out
        if stage.refine is None or stage.whole is None:
            return
        need = [i for i in range(len(sels)) if stage.whole(sels[i], i, t.params)]
        if not need:
            return
        numel = _numel(t.shape)

        def whole(i: int) -> torch.Tensor:
            if cache:
                parts = [c[i].reshape(-1) for c in cache]
                return parts[0] if len(parts) == 1 else torch.cat(parts)
            buf = None
            pos = 0
            for a, b in self.chunks(t):
                self.chunk_ctx(t, a)
                base = self.load(t.base, a, b) if t.base else None
                v = stage.values(base, [self.load(t.inputs[i], a, b)], t.params, self.ctx)[0].reshape(-1)
                if buf is None:
                    buf = torch.empty(numel, dtype=v.dtype)
                buf[pos:pos + v.numel()] = v
                pos += v.numel()
                del base, v
            return buf

        def job(i: int):
            return stage.refine(whole(i), sels[i], i, t.params)

        workers = min(len(need), max(1, torch.get_num_threads()))
        if cache and workers > 1 and numel <= self.refine_parallel_elems:
            with ThreadPoolExecutor(max_workers=workers) as ex:
                results = list(ex.map(job, need))
        else:
            results = [job(i) for i in need]
        for i, r in zip(need, results):
            out[i] = r

    def execute(self, writer: ShardedWriter) -> dict:
        stages = self.m.stats(self.plan.merged[0].params) if (self.m.stats and self.plan.merged) else []
        global_stats = {}
        scopes = {s.scope for s in stages}
        if "global" in scopes:
            for si, st in enumerate(stages):
                if st.scope != "global":
                    raise RuntimeError("a method mixes tensor and global statistics stages")
                if st.refine is not None:
                    raise RuntimeError(f"{self.m.name}: a global statistics stage cannot refine per tensor")
                self.run_stage(si, st, self.plan.merged, f"statistics {si + 1}/{len(stages)}")
            global_stats = {f"stage{si}": [[{"rank": x.rank, "value": x.value, "equal": x.equal, "total": x.total}
                                            for x in model] for model in self.ctx.stats[si]]
                            for si in range(len(stages))}
        with _progress(len(self.plan.tensors), f"merging ({self.m.name})", self.show) as bar:
            for t in self.plan.tensors:
                writer.begin(t.name)
                if t.copy:
                    for a, b in iter_chunks(t.shape, self.chunk):
                        writer.write(self.plan.sources[t.inputs[0].model].rows(t.inputs[0].name, a, b, t.dtype))
                else:
                    chunks = self.chunks(t)
                    tensor_stats = bool(stages) and "global" not in scopes
                    loaded = None
                    n_in = len(t.inputs) + (t.base is not None)
                    if tensor_stats and _numel(t.shape) * n_in <= self.cache_elems:
                        # small enough: read the inputs once for the statistics and the merge
                        chunks = [(None, None)]
                        loaded = (self.load(t.base, None, None) if t.base else None,
                                  [self.load(i, None, None) for i in t.inputs])
                    if tensor_stats:
                        self.ctx.counters = {}
                        self.ctx.refined = []
                        for si, st in enumerate(stages):
                            cache = self.run_stage(si, st, [t], "", loaded=loaded)
                            self.refine_stage(si, st, t, cache)
                            del cache
                    for a, b in chunks:
                        self.chunk_ctx(t, a)
                        if loaded is not None:
                            (base, ins), loaded = loaded, None
                        else:
                            base = self.load(t.base, a, b) if t.base else None
                            ins = [self.load(i, a, b) for i in t.inputs]
                        out = self.m.merge(base, ins, t.params, self.ctx)
                        del base, ins
                        if tuple(out.shape) != (tuple(t.shape) if a is None else (b - a, *t.shape[1:])):
                            raise RuntimeError(f"{self.m.name} returned shape {tuple(out.shape)} for {t.name}")
                        writer.write(out.to(t.dtype))
                        del out
                writer.end()
                for i in t.inputs + ([t.base] if t.base else []):
                    self.plan.sources[i.model].release(i.name)
                bar.update(1)
        return global_stats


def _hash_inputs(sources: dict) -> dict:
    from xlt.util import sha256_file

    out = {}
    for ref, src in sources.items():
        out[ref] = {str(p.name if p.parent == src.path else p): sha256_file(p) for p in src.files()}
    return out


def run(config, out: str | os.PathLike, overwrite: bool = False, allow_pickle: bool = False,
        shard_size: str | int = "5GB", chunk_elems: int = 1 << 23, threads: int | None = None,
        copy_tokenizer_files: bool = True, hash_inputs: bool = True, show_progress: bool = True,
        log: Callable[[str], None] | None = None) -> MergeResult:
    """Merge the models a config describes into the folder ``out``.

    ``config``: a YAML path or string, a dict or a :class:`~xlt.merge.config.MergeConfig` (see
    :mod:`xlt.merge.config`). ``out`` must not exist unless ``overwrite``. Everything is checked before
    anything is written; the output is built in a temporary folder beside ``out`` and renamed when
    complete. ``shard_size``: the largest output shard (``"5GB"``, bytes). ``chunk_elems``: rows of
    element-wise methods are processed in chunks of about this many elements (memory ≈ a few chunks per
    input). ``threads``: torch CPU threads. ``hash_inputs``: record the SHA-256 of every input weight file
    in the provenance (``xlt_merge.json``), computed in a background thread.
    """
    from xlt.util import atomic_dir

    log = log or (lambda m: None)
    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not overwrite:
        raise XltError(f"output folder {out} already exists", "choose another OUT, or pass --overwrite to replace it")
    if threads:
        torch.set_num_threads(threads)
    max_shard = parse_size(shard_size)
    if max_shard <= 0:
        raise XltError(f"shard size {shard_size!r} is not positive", "give e.g. 5GB")
    p = plan(config, allow_pickle=allow_pickle)
    if not p.tensors:
        raise XltError("the merge would write no tensor", "check models/slices and drop: in the config")
    metadata = {"merge_method": p.method.name}
    writer_probe = ShardedWriter(out, p.planned(), max_shard, metadata)
    need = writer_probe.total_bytes() + (1 << 20)
    anchor = out.parent if out.parent.exists() else Path(os.path.abspath(out)).anchor
    probe = anchor
    while not Path(probe).exists():
        probe = Path(probe).parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise XltError(f"not enough disk for the merge: it writes {human(need)} and {probe} has {human(free)} free",
                       "free some space, or give an OUT on a disk with room")
    for n in p.notes:
        log(n)
    pool = ThreadPoolExecutor(max_workers=1) if hash_inputs else None
    hashes = pool.submit(_hash_inputs, p.sources) if pool else None
    try:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            writer = ShardedWriter(tmp, p.planned(), max_shard, metadata)
            try:
                stats = Executor(p, chunk_elems, show_progress).execute(writer)
                writer.close()
            except BaseException:
                writer.abort()
                raise
            (tmp / "config.json").write_text(json.dumps(p.out_config, indent=2) + "\n", encoding="utf-8")
            copied = copy_tokenizer(p.sources[p.tokenizer_source].path, tmp) if copy_tokenizer_files else []
            provenance = {
                "tool": "xlt merge",
                "merge_method": p.method.name,
                "method": {"description": p.method.description, "paper": p.method.paper,
                           "reference": p.method.reference, "deviations": p.method.deviations},
                "config": p.config.raw,
                "config_file": p.config.source,
                "inputs": {ref: {"path": str(getattr(s, "path", "")), "label": s.label,
                                 "lora": str(s.adapter) if isinstance(s, LoraSource) else None}
                           for ref, s in p.sources.items()},
                "input_sha256": hashes.result() if hashes else None,
                "config_from": p.config_source, "tokenizer_from": p.tokenizer_source, "tokenizer_files": copied,
                "dropped": {r: sorted(v) for r, v in p.dropped.items()},
                "copied": {t.name: f"{t.inputs[0].model}: {t.why}" for t in p.tensors if t.copy},
                "notes": p.notes,
                "statistics": stats,
                "tensors": len(p.tensors), "bytes": writer.bytes_written, "shards": len(writer.names),
                "compute_dtype": str(p.compute_dtype).removeprefix("torch."),
            }
            (tmp / "xlt_merge.json").write_text(json.dumps(provenance, indent=2, ensure_ascii=False, default=str) + "\n",
                                                encoding="utf-8")
    except FileExistsError:
        raise XltError(f"output folder {out} already exists", "choose another OUT, or pass --overwrite") from None
    finally:
        if pool:
            pool.shutdown(wait=True)
        for s in p.sources.values():
            s.close()
    res = MergeResult(out, len(p.tensors), len(p.merged), len(p.tensors) - len(p.merged), writer.bytes_written,
                      time.perf_counter() - t0, peak_rss_bytes(), len(writer.names), provenance)
    log(res.summary())
    return res


def merge_tensors(method: str, base: torch.Tensor | None, tensors: list[torch.Tensor], seed: int = 0,
                  name: str = "tensor", **params) -> torch.Tensor:
    """Merge in-memory tensors with a registered method (statistics over these tensors only).

    ``params``: the method's parameters; per-model ones as lists (one value per tensor) or a scalar for all.
    """
    m = get_method(method)
    p = {}
    for q in m.params:
        v = params.pop(q.name, q.default)
        if v is REQUIRED:
            raise XltError(f"{method} needs parameter {q.name}", f"pass {q.name}=...")
        if q.per_model and not isinstance(v, list):
            v = [v] * len(tensors)
        if q.check is not None:
            for x in (v if q.per_model else [v]):
                problem = q.check(x)
                if problem:
                    raise XltError(f"{q.name}: {problem}", f"give {q.name} a valid value")
        p[q.name] = v
    if params:
        raise XltError(f"{method} has no parameter(s) {', '.join(params)}",
                       f"{method}'s parameters: {', '.join(q.name for q in m.params)}")
    if m.validate is not None:
        bad = m.validate(p)
        if bad:
            raise XltError(bad[0], bad[1])
    ctx = Context(name=name, shape=tuple(tensors[0].shape), seed=seed, is_embedding=is_embedding(name))
    for si, st in enumerate(m.stats(p) if m.stats else []):
        vals = st.values(base, tensors, p, ctx)
        res = []
        for i, v in enumerate(vals):
            s = RankSelector(nonneg=st.nonneg)
            s.add(v)
            s.next_pass(st.ranks(s.total, i, p))
            s.add(v)
            res.append(s.result())
        ctx.stats.append(res)
        ctx.refined.append([st.refine(vals[i].reshape(-1), res[i], i, p)
                            if st.refine is not None and st.whole is not None and st.whole(res[i], i, p) else None
                            for i in range(len(vals))])
    return m.merge(base, tensors, p, ctx)
