"""Typed options for every registered method (peft's ``LoraConfig`` is the model).

A method declares its options as a dataclass whose fields are made with :func:`option`: a type, a default
and a one-line help each. :func:`build` turns what a user typed (``-O``/``-M`` pairs, a YAML mapping, keyword
arguments) into an instance of that dataclass, and refuses an unknown key with one :class:`~xlt.errors.XltError`
that names the key, the closest valid one and all the valid ones; a value of the wrong type is refused the same
way. ``xlt inits``, ``xlt methods`` and ``xlt merges`` print the declarations (:func:`describe`).

    @dataclass
    class WechselOptions:
        wechsel_k: int = option(10, "neighbours mixed per target token", check=positive)
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Callable, Literal, Mapping

from xlt.errors import XltError

#: the default of an option that must be given
REQUIRED: Any = MISSING


def option(default: Any = REQUIRED, help: str = "", *, per_model: bool = False,
           check: Callable[[Any], str | None] | None = None, key: str | None = None) -> Any:
    """A dataclass field with its one-line ``help``. ``check(value)`` returns a problem text (or None when the value
    is valid); ``per_model`` marks merge parameters given once per input model; ``key`` is the name users type when
    it cannot be the field's name (a Python keyword such as mergekit's ``lambda``)."""
    meta = {"help": help, "per_model": per_model, "check": check, "key": key}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionSpec:
    """One declared option, as :func:`specs` reads it from the dataclass."""

    name: str
    type: Any
    default: Any
    help: str
    per_model: bool = False
    check: Callable[[Any], str | None] | None = None
    attr: str = ""  # the dataclass field's name, when it differs from ``name`` (``key=``)

    @property
    def field(self) -> str:
        return self.attr or self.name

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def type_name(self) -> str:
        return type_name(self.type)


@dataclass
class NoOptions:
    """The options of a method that takes none."""


def specs(cls: type | None) -> list[OptionSpec]:
    """The declared options of an options dataclass, in declaration order."""
    if cls is None:
        return []
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else REQUIRED)
        key = f.metadata.get("key") or f.name
        out.append(OptionSpec(key, hints.get(f.name, Any), default, f.metadata.get("help", ""),
                              bool(f.metadata.get("per_model")), f.metadata.get("check"),
                              f.name if key != f.name else ""))
    return out


def names(cls: type | None) -> list[str]:
    return [s.name for s in specs(cls)]


def closest(key: str, valid: list[str]) -> str | None:
    m = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return m[0] if m else None


def unknown_key_error(key: str, valid: list[str], owner: str, elsewhere: dict[str, str] | None = None) -> XltError:
    """``unknown option 'wechsel_kk' for init method wechsel`` + the closest match and every valid name."""
    near = closest(key, valid)
    fix = (f"did you mean {near}? " if near else "") + (f"valid: {', '.join(valid)}" if valid else "no options are taken")
    if elsewhere and key in elsewhere:
        fix = f"{key} is an option of {elsewhere[key]}, which is not selected; " + fix
    return XltError(f"unknown option {key!r} for {owner}", fix)


def build(cls: type | None, values: Mapping[str, Any] | None, owner: str) -> Any:
    """An instance of ``cls`` from ``values`` (unknown keys and wrong types refused, see the module docstring).

    ``owner`` names what takes the options in errors, e.g. ``"init method wechsel"``."""
    values = dict(values or {})
    if cls is None:
        cls = NoOptions
    declared = specs(cls)
    valid = [s.name for s in declared]
    for k in values:
        if k not in valid:
            raise unknown_key_error(k, valid, owner)
    kwargs = {}
    for s in declared:
        if s.name in values:
            kwargs[s.field] = coerce(s, values[s.name], owner)
        elif s.required:
            raise XltError(f"{owner} needs option {s.name!r} ({s.help})", f"set {s.name}=VALUE")
    try:
        return cls(**kwargs)
    except XltError:
        raise
    except (TypeError, ValueError) as e:  # a __post_init__ check written with plain exceptions
        raise XltError(f"{owner}: {e}", "give valid option values (see its --help listing)") from None


def coerce(spec: OptionSpec, value: Any, owner: str) -> Any:
    """``value`` converted to the option's type (numbers from text, a number as text for a string option, ...)."""
    ok, out = _convert(spec.type, value)
    if not ok:
        raise XltError(f"{owner}: option {spec.name} must be {spec.type_name}, got {value!r}",
                       f"{spec.name}: {spec.help}" if spec.help else f"give {spec.name} a value of that type")
    if spec.check is not None:
        for v in (out if spec.per_model and isinstance(out, list) else [out]):
            problem = spec.check(v) if v is not None else None
            if problem:
                raise XltError(f"{owner}: option {spec.name} {problem}",
                               f"{spec.name}: {spec.help}" if spec.help else f"give {spec.name} a valid value")
    return out


def _convert(tp: Any, v: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, v
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if v is None:
            return type(None) in args, None
        # exact type matches first (so str | list[str] keeps a list, int | None keeps an int)
        for a in args:
            if a is not type(None) and _matches(a, v):
                return True, v
        for a in args:
            if a is type(None):
                continue
            ok, out = _convert(a, v)
            if ok:
                return True, out
        return False, None
    if origin is Literal:
        choices = typing.get_args(tp)
        if v in choices:
            return True, v
        if isinstance(v, str):  # a CLI value that JSON read as text
            for c in choices:
                if str(c) == v:
                    return True, c
        return False, None
    if origin in (list, tuple):
        (inner,) = typing.get_args(tp)[:1] or (Any,)
        if isinstance(v, str):
            v = [x.strip() for x in v.split(",") if x.strip()]
        if not isinstance(v, (list, tuple)):
            return False, None
        out = []
        for x in v:
            ok, y = _convert(inner, x)
            if not ok:
                return False, None
            out.append(y)
        return True, out
    if origin is dict or tp is dict:
        return isinstance(v, dict), v
    if tp is bool:
        if isinstance(v, bool):
            return True, v
        if isinstance(v, str) and v.lower() in ("true", "false", "yes", "no", "1", "0"):
            return True, v.lower() in ("true", "yes", "1")
        if isinstance(v, int) and v in (0, 1):
            return True, bool(v)
        return False, None
    if tp is int:
        if isinstance(v, bool):
            return False, None
        if isinstance(v, int):
            return True, v
        if isinstance(v, float) and v.is_integer():
            return True, int(v)
        if isinstance(v, str):
            try:
                return True, int(v)
            except ValueError:
                return False, None
        return False, None
    if tp is float:
        if isinstance(v, bool):
            return False, None
        if isinstance(v, (int, float)):
            return True, float(v)
        if isinstance(v, str):
            try:
                return True, float(v)
            except ValueError:
                return False, None
        return False, None
    if tp is str:
        if isinstance(v, str):
            return True, v
        if isinstance(v, (int, float)) and not isinstance(v, bool):  # -O name=123 is read as JSON first
            return True, str(v)
        if hasattr(v, "__fspath__"):
            return True, str(v)
        return False, None
    return isinstance(v, tp) if isinstance(tp, type) else True, v


def _matches(tp: Any, v: Any) -> bool:
    if tp is bool:
        return isinstance(v, bool)
    if tp in (int, float):
        return isinstance(v, tp) and not isinstance(v, bool)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return isinstance(v, (list, tuple))
    return isinstance(tp, type) and isinstance(v, tp)


def type_name(tp: Any, article: bool = True) -> str:
    """``an integer``, ``a number or null``, ``one of ibm1, fast_align``, ... (``article=False``: ``int``, ...)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        s = " or ".join(type_name(a, article) for a in args)
        return s + (" or null" if len(args) < len(typing.get_args(tp)) else "")
    if origin is Literal:
        return "one of " + ", ".join(str(c) for c in typing.get_args(tp))
    if origin in (list, tuple):
        inner = typing.get_args(tp)
        return ("a list of " if article else "list of ") + (type_name(inner[0], False) if inner else "values")
    names = ({bool: "true or false", int: "an integer", float: "a number", str: "a text"} if article else
             {bool: "bool", int: "int", float: "float", str: "text"})
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def with_defaults(cls: type, name: str | None = None, **defaults) -> type:
    """A subclass of options dataclass ``cls`` whose listed options have other defaults (presets)."""
    unknown = set(defaults) - set(names(cls))
    if unknown:
        raise TypeError(f"{cls.__name__} has no option(s) {sorted(unknown)}")
    hints = typing.get_type_hints(cls)  # resolved types: the new class lives in no module of its own
    fields = []
    for f in dataclasses.fields(cls):
        key = f.metadata.get("key") or f.name
        if key in defaults:
            fields.append((f.name, hints[f.name], dataclasses.field(default=defaults[key], metadata=f.metadata)))
    out = dataclasses.make_dataclass(name or cls.__name__ + "Preset", fields, bases=(cls,))
    out.__module__ = cls.__module__
    return out


def as_dict(options: Any) -> dict:
    """The options as a plain dict (JSON-ready), in declaration order."""
    if options is None:
        return {}
    if isinstance(options, dict):
        return dict(options)
    return {s.name: getattr(options, s.field) for s in specs(type(options))}


def describe(cls: type | None) -> list[tuple[str, str, str, str]]:
    """``(name, type, default, help)`` per option, for listings."""
    out = []
    for s in specs(cls):
        default = "required" if s.required else repr(s.default)
        out.append((s.name + (" (per model)" if s.per_model else ""), type_name(s.type, article=False), default, s.help))
    return out


# -- checks shared by many methods ---------------------------------------------------------------------------
def positive(v) -> str | None:
    return None if v > 0 else f"must be > 0, got {v}"


def non_negative(v) -> str | None:
    return None if v >= 0 else f"must be ≥ 0, got {v}"


def unit_interval(v) -> str | None:
    return None if 0 <= v <= 1 else f"must be in [0, 1], got {v}"


def density(v) -> str | None:
    return None if 0 < v <= 1 else f"must be in (0, 1], got {v}"
