"""The merge configuration: a documented subset of mergekit's YAML plus xlt's own keys.

Accepted top-level keys (anything else is an error that names the key)::

    merge_method: ties            # required; `xlt merge --help` / docs/merge.md list the methods
    base_model: path              # the base (θ₀) for task-vector methods
    models:                       # the inputs, each with optional per-model parameters
      - model: path               # a local HF folder, a known source name (smollm2), or BASE+LORA_FOLDER
        parameters: {weight: 1.0, density: 0.5}
    slices:                       # instead of models: output layers stacked from layer ranges
      - sources:
          - model: path
            layer_range: [0, 8]   # [start, end) of the source model's layers
            parameters: {...}
        parameters: {...}
    parameters: {...}             # global parameters (method's own keys, e.g. lambda, trim_scope, t)
    dtype: float32                # compute dtype [default float32]
    out_dtype: bfloat16           # output dtype [default: dtype if given, else each input tensor's dtype]
    tokenizer_source: path        # tokenizer and config.json come from this model [default: base, else first]
    drop: [regex, ...]            # xlt: source tensors deliberately left out of the output
    random_seed: 0                # seed for random methods (DARE)

A parameter value is a number/bool/string, or a list of conditionals ``[{filter: self_attn, value: 0.5},
{value: 1.0}]``: the first entry whose ``filter`` is a substring of the tensor name applies (an entry
without ``filter`` is the fallback). mergekit's gradient lists (a list of numbers), ``modules``, the
``tokenizer`` union block and ``chat_template`` are not supported and are refused by name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlt.errors import XltError

TOP_KEYS = {"merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype",
            "tokenizer_source", "drop", "random_seed", "name"}
UNSUPPORTED = {"modules": "per-module configs", "tokenizer": "tokenizer unions/surgery",
               "chat_template": "chat templates", "mergekit_version": "version pinning"}
DTYPES = {"float32", "float64", "bfloat16", "float16"}


@dataclass
class ModelEntry:
    model: str
    parameters: dict = field(default_factory=dict)


@dataclass
class SliceSource:
    model: str
    layer_range: tuple[int, int]
    parameters: dict = field(default_factory=dict)


@dataclass
class Slice:
    sources: list[SliceSource]
    parameters: dict = field(default_factory=dict)


@dataclass
class MergeConfig:
    merge_method: str
    models: list[ModelEntry] = field(default_factory=list)
    slices: list[Slice] | None = None
    base_model: str | None = None
    parameters: dict = field(default_factory=dict)
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    drop: list[str] = field(default_factory=list)
    random_seed: int = 0
    source: str = "<dict>"
    raw: dict = field(default_factory=dict)

    def model_refs(self) -> list[str]:
        """Every model the config names, in first-mention order (base first)."""
        refs: list[str] = []
        for r in [self.base_model] + [m.model for m in self.models] + \
                 [s.model for sl in (self.slices or []) for s in sl.sources]:
            if r and r not in refs:
                refs.append(r)
        return refs


def _err(where: str, problem: str, fix: str) -> XltError:
    return XltError(f"merge config {where}: {problem}", fix)


def _check_params(params: Any, where: str, src: str) -> dict:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise _err(src, f"{where}.parameters must be a mapping, got {type(params).__name__}",
                   "write parameters as `key: value` pairs")
    for k, v in params.items():
        if isinstance(v, list):
            if v and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise _err(src, f"{where}.parameters.{k} is a gradient list, which xlt does not support",
                           "give one value, or conditionals [{filter: NAME_PART, value: X}, {value: Y}]")
            for e in v:
                if not isinstance(e, dict) or "value" not in e or set(e) - {"filter", "value"}:
                    raise _err(src, f"{where}.parameters.{k} has an entry {e!r} that is not {{filter, value}}",
                               "write conditionals as [{filter: NAME_PART, value: X}, {value: DEFAULT}]")
        elif isinstance(v, dict):
            raise _err(src, f"{where}.parameters.{k} is a mapping", "give a value or a list of {filter, value}")
    return dict(params)


def _model_str(v: Any, where: str, src: str) -> str:
    if isinstance(v, dict) and "model" in v:  # mergekit's long form {model: {path: ...}} is not supported
        v = v["model"]
    if not isinstance(v, (str, os.PathLike)) or not str(v).strip():
        raise _err(src, f"{where} must be a model path, got {v!r}", "give a local model folder (or BASE+LORA)")
    return str(v)


def parse_config(data: dict, source: str = "<dict>") -> MergeConfig:
    if not isinstance(data, dict):
        raise _err(source, "the top level must be a mapping", "see docs/merge.md for the format")
    for k in data:
        if k in UNSUPPORTED:
            raise _err(source, f"key {k!r} ({UNSUPPORTED[k]}) is part of mergekit's format that xlt does not support",
                       "remove it; docs/merge.md lists the supported subset")
        if k not in TOP_KEYS:
            raise _err(source, f"unknown key {k!r}", f"use only: {', '.join(sorted(TOP_KEYS))}")
    method = data.get("merge_method")
    if not method or not isinstance(method, str):
        raise _err(source, "merge_method is missing", "add e.g. `merge_method: ties` (see `xlt merge --help`)")
    has_models, has_slices = bool(data.get("models")), bool(data.get("slices"))
    if has_models == has_slices:
        raise _err(source, "give exactly one of `models` and `slices`",
                   "list the inputs under models:, or the layer ranges under slices:")
    cfg = MergeConfig(merge_method=method, source=source, raw=data)
    cfg.parameters = _check_params(data.get("parameters"), "top level", source)
    if data.get("base_model") is not None:
        cfg.base_model = _model_str(data["base_model"], "base_model", source)
    if data.get("tokenizer_source") is not None:
        cfg.tokenizer_source = _model_str(data["tokenizer_source"], "tokenizer_source", source)
    for key in ("dtype", "out_dtype"):
        v = data.get(key)
        if v is not None and v not in DTYPES:
            raise _err(source, f"{key} {v!r} is not a supported dtype", f"use one of: {', '.join(sorted(DTYPES))}")
        setattr(cfg, key, v)
    drop = data.get("drop") or []
    if isinstance(drop, str) or not all(isinstance(d, str) for d in drop):
        raise _err(source, "drop must be a list of regular expressions", "write e.g. drop: ['rotary_emb']")
    for d in drop:
        try:
            re.compile(d)
        except re.error as e:
            raise _err(source, f"drop pattern {d!r} is not a regular expression ({e})", "fix the pattern") from None
    cfg.drop = list(drop)
    seed = data.get("random_seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise _err(source, f"random_seed must be an integer, got {seed!r}", "give e.g. random_seed: 0")
    cfg.random_seed = seed
    if has_models:
        if not isinstance(data["models"], list):
            raise _err(source, "models must be a list", "write models: [- model: PATH, ...]")
        for i, m in enumerate(data["models"]):
            if isinstance(m, str):
                m = {"model": m}
            if not isinstance(m, dict) or "model" not in m or set(m) - {"model", "parameters"}:
                raise _err(source, f"models[{i}] must be {{model: PATH, parameters: {{...}}}}, got {m!r}",
                           "write each entry as `- model: PATH` with optional parameters")
            cfg.models.append(ModelEntry(_model_str(m["model"], f"models[{i}].model", source),
                                         _check_params(m.get("parameters"), f"models[{i}]", source)))
    else:
        if not isinstance(data["slices"], list):
            raise _err(source, "slices must be a list", "write slices: [- sources: [...], ...]")
        cfg.slices = []
        for i, s in enumerate(data["slices"]):
            if not isinstance(s, dict) or "sources" not in s or set(s) - {"sources", "parameters"}:
                raise _err(source, f"slices[{i}] must be {{sources: [...], parameters: {{...}}}}",
                           "give each slice a sources: list")
            srcs = []
            for j, src in enumerate(s["sources"] or []):
                where = f"slices[{i}].sources[{j}]"
                if not isinstance(src, dict) or "model" not in src or "layer_range" not in src or \
                        set(src) - {"model", "layer_range", "parameters"}:
                    raise _err(source, f"{where} must be {{model, layer_range, parameters}}",
                               "write `- model: PATH` and `layer_range: [START, END]`")
                lr = src["layer_range"]
                if not (isinstance(lr, list) and len(lr) == 2 and all(isinstance(x, int) for x in lr)
                        and 0 <= lr[0] < lr[1]):
                    raise _err(source, f"{where}.layer_range {lr!r} is not [start, end) with 0 ≤ start < end",
                               "write e.g. layer_range: [0, 8]")
                srcs.append(SliceSource(_model_str(src["model"], f"{where}.model", source), (lr[0], lr[1]),
                                        _check_params(src.get("parameters"), where, source)))
            if not srcs:
                raise _err(source, f"slices[{i}] has no sources", "list at least one source")
            n = {b - a for a, b in (x.layer_range for x in srcs)}
            if len(n) != 1:
                raise _err(source, f"slices[{i}]'s sources cover different numbers of layers",
                           "give every source of a slice a layer range of the same length")
            cfg.slices.append(Slice(srcs, _check_params(s.get("parameters"), f"slices[{i}]", source)))
    return cfg


def load_config(config: str | os.PathLike | dict | MergeConfig) -> MergeConfig:
    """A :class:`MergeConfig` from a YAML file path, a YAML string, a dict or a config."""
    if isinstance(config, MergeConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config)
    import yaml

    text = str(config)
    path = Path(text)
    if "\n" not in text and (path.suffix in (".yml", ".yaml") or path.exists()):
        if not path.is_file():
            raise XltError(f"merge config {path} does not exist", "give the path of a YAML merge config")
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        source = "<string>"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise XltError(f"merge config {source} is not valid YAML ({str(e).splitlines()[0]})",
                       "fix the YAML syntax") from None
    return parse_config(data, source)


def resolve_value(value: Any, tensor_name: str) -> Any:
    """A parameter's value for one tensor: conditionals are matched by substring of the name."""
    if isinstance(value, list):
        fallback = None
        for e in value:
            if "filter" not in e:
                if fallback is None:
                    fallback = e["value"]
            elif e["filter"] in tensor_name:
                return e["value"]
        return fallback
    return value
