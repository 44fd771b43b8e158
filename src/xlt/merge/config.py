"""The merge configuration: a documented subset of mergekit's YAML plus xlt's own keys, as a pydantic model.

Accepted top-level keys (anything else is an error that names the key)::

    merge_method: ties            # required; `xlt merges` lists the methods and their parameters
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

Every mapping forbids unknown keys (``extra="forbid"``). A config that does not validate raises one
:class:`~xlt.errors.XltError` naming the place (``models[1].parameters``), the problem and the fix; which
parameter names a method takes is checked later, against its options declaration, by the planner.
"""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PrivateAttr, StrictInt, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from xlt.errors import XltError
from xlt.options import closest

UNSUPPORTED = {"modules": "per-module configs", "tokenizer": "tokenizer unions/surgery",
               "chat_template": "chat templates", "mergekit_version": "version pinning"}
DTYPES = ("float32", "float64", "bfloat16", "float16")
# the fix shown when a key of this name is missing or of the wrong type
FIXES = {"merge_method": "add e.g. `merge_method: ties` (`xlt merges` lists the methods)",
         "model": "give a local model folder (or BASE+LORA)",
         "models": "write models: [- model: PATH, ...]",
         "slices": "write slices: [- sources: [...], ...]",
         "sources": "give each slice a sources: list of {model, layer_range}",
         "layer_range": "write e.g. layer_range: [0, 8]",
         "random_seed": "give e.g. random_seed: 0",
         "name": "give the merge a name (text), or remove the key"}


def _problem(message: str, fix: str, **values) -> PydanticCustomError:
    """A validation error that carries its fix (``values`` fill ``{placeholders}`` in ``message``)."""
    return PydanticCustomError("xlt", message, {**values, "fix": fix})


def _model_ref(v: Any) -> str:
    if isinstance(v, dict) and "model" in v:  # mergekit's long form {model: {path: ...}} is not supported
        v = v["model"]
    if isinstance(v, os.PathLike):
        v = os.fspath(v)
    if not isinstance(v, str) or not v.strip():
        raise _problem("must be a model path, got {got}", FIXES["model"], got=repr(v))
    return v


def _parameters(v: Any) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _problem("must be a mapping, got {got}", "write parameters as `key: value` pairs", got=type(v).__name__)
    for k, x in v.items():
        if isinstance(x, list):
            if x and all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in x):
                raise _problem("{key} is a gradient list, which xlt does not support",
                               "give one value, or conditionals [{filter: NAME_PART, value: X}, {value: Y}]", key=k)
            for e in x:
                if not isinstance(e, dict) or "value" not in e or set(e) - {"filter", "value"} or \
                        not isinstance(e.get("filter", ""), str):
                    raise _problem("{key} has an entry {entry} that is not {filter, value}",
                                   "write conditionals as [{filter: NAME_PART, value: X}, {value: DEFAULT}]",
                                   key=k, entry=repr(e))
        elif isinstance(x, dict):
            raise _problem("{key} is a mapping", "give a value or a list of {filter, value}", key=k)
    return dict(v)


def _dtype(v: Any) -> str:
    if v not in DTYPES:
        raise _problem("{got} is not a supported dtype", f"use one of: {', '.join(DTYPES)}", got=repr(v))
    return v


def _layer_range(v: Any) -> tuple[int, int]:
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                 for x in v) and 0 <= v[0] < v[1]):
        raise _problem("{got} is not [start, end) with 0 ≤ start < end", FIXES["layer_range"], got=repr(v))
    return v[0], v[1]


def _drop(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str) or not isinstance(v, list) or not all(isinstance(d, str) for d in v):
        raise _problem("must be a list of regular expressions", "write e.g. drop: ['rotary_emb']")
    for d in v:
        try:
            re.compile(d)
        except re.error as e:
            raise _problem("pattern {pattern} is not a regular expression ({why})", "fix the pattern",
                           pattern=repr(d), why=str(e)) from None
    return list(v)


def _method(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise _problem("must be a method name, got {got}", FIXES["merge_method"], got=repr(v))
    return v


ModelRef = Annotated[str, BeforeValidator(_model_ref)]
Parameters = Annotated[dict, BeforeValidator(_parameters)]
DType = Annotated[str, BeforeValidator(_dtype)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelEntry(_Strict):
    model: ModelRef
    parameters: Parameters = {}

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, v: Any) -> Any:
        return {"model": v} if isinstance(v, (str, os.PathLike)) else v


class SliceSource(_Strict):
    model: ModelRef
    layer_range: Annotated[tuple[int, int], BeforeValidator(_layer_range)]
    parameters: Parameters = {}


class Slice(_Strict):
    sources: list[SliceSource]
    parameters: Parameters = {}

    @model_validator(mode="after")
    def _same_length(self) -> "Slice":
        if not self.sources:
            raise _problem("the slice has no sources", "list at least one source")
        if len({b - a for a, b in (s.layer_range for s in self.sources)}) != 1:
            raise _problem("the slice's sources cover different numbers of layers",
                           "give every source of a slice a layer range of the same length")
        return self


class MergeConfig(_Strict):
    merge_method: Annotated[str, BeforeValidator(_method)]
    models: list[ModelEntry] = []
    slices: list[Slice] | None = None
    base_model: ModelRef | None = None
    parameters: Parameters = {}
    dtype: DType | None = None
    out_dtype: DType | None = None
    tokenizer_source: ModelRef | None = None
    drop: Annotated[list[str], BeforeValidator(_drop)] = []
    random_seed: StrictInt = 0
    name: str | None = None
    _source: str = PrivateAttr("<dict>")
    _raw: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _models_or_slices(self) -> "MergeConfig":
        if bool(self.models) == bool(self.slices):
            raise _problem("give exactly one of `models` and `slices`",
                           "list the inputs under models:, or the layer ranges under slices:")
        return self

    @property
    def source(self) -> str:
        """Where the config came from (a file path, ``<string>`` or ``<dict>``)."""
        return self._source

    @property
    def raw(self) -> dict:
        """The config as written (recorded in the provenance)."""
        return self._raw

    def model_refs(self) -> list[str]:
        """Every model the config names, in first-mention order (base first)."""
        refs: list[str] = []
        for r in [self.base_model] + [m.model for m in self.models] + \
                 [s.model for sl in (self.slices or []) for s in sl.sources]:
            if r and r not in refs:
                refs.append(r)
        return refs


# -- errors ----------------------------------------------------------------------------------------------
def _where(loc: tuple) -> str:
    """``("models", 1, "parameters")`` -> ``models[1].parameters``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _keys_at(loc: tuple) -> list[str]:
    """The keys the mapping at ``loc`` accepts."""
    cls: Any = MergeConfig
    for part in loc:
        if isinstance(part, int):
            continue
        cls = _model_in(cls.model_fields[part].annotation)
        if cls is None:
            return []
    return list(cls.model_fields)


def _model_in(tp: Any):
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for a in typing.get_args(tp):
        m = _model_in(a)
        if m is not None:
            return m
    return None


def _to_xlt(e: ValidationError, source: str) -> XltError:
    """One error: the first problem (unknown keys first), where it is, and its fix."""
    errors = sorted(e.errors(), key=lambda x: x["type"] != "extra_forbidden")
    err = errors[0]
    loc, where = tuple(err["loc"]), _where(tuple(err["loc"]))
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    key = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if err["type"] == "extra_forbidden":
        parent = _where(loc[:-1])
        if key in UNSUPPORTED and not parent:
            problem = f"key {key!r} ({UNSUPPORTED[key]}) is part of mergekit's format that xlt does not support"
            fix = "remove it; docs/merge.md lists the supported subset"
        else:
            valid = _keys_at(loc[:-1])
            near = closest(key, valid)
            problem = f"unknown key {key!r}" + (f" in {parent}" if parent else "")
            fix = (f"did you mean {near}? " if near else "") + f"use only: {', '.join(sorted(valid))}"
    elif err["type"] == "missing":
        problem, fix = f"{where} is missing", FIXES.get(key, f"add {key}: (see docs/merge.md)")
    elif err["type"] == "xlt":
        problem, fix = (f"{where}: " if where else "") + err["msg"], err["ctx"]["fix"]
    elif err["type"] in ("model_type", "dict_type", "list_type"):
        what = "a list" if err["type"] == "list_type" else "a mapping"
        problem, fix = f"{where} must be {what}, got {err['input']!r}", FIXES.get(key, "see docs/merge.md for the format")
    else:
        problem = f"{where}: {err['msg'][0].lower()}{err['msg'][1:]}, got {err['input']!r}"
        fix = FIXES.get(key, "see docs/merge.md for the format")
    return XltError(f"merge config {source}: {problem}{more}", fix)


def parse_config(data: Any, source: str = "<dict>") -> MergeConfig:
    """A :class:`MergeConfig` from a parsed YAML mapping (one :class:`XltError` when it is not valid)."""
    if not isinstance(data, dict):
        raise XltError(f"merge config {source}: the top level must be a mapping", "see docs/merge.md for the format")
    try:
        cfg = MergeConfig.model_validate(data)
    except ValidationError as e:
        raise _to_xlt(e, source) from None
    cfg._source, cfg._raw = source, data
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
