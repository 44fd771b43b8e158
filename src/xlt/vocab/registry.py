"""Registry of embedding-initialisation methods: one name, one signature.

A method is a function ``(ctx: TransferContext) -> TransferMapping``, registered with
``@register_init("name")``. Third-party packages can add methods through the ``xlt.inits``
entry-point group. Methods never touch the model: :func:`xlt.vocab.transfer.transfer_model`
applies the mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from xlt.errors import XltError
from xlt.registry import Registry


@dataclass
class TransferContext:
    """What a method may use. Data-driven methods read ``corpus`` in ``source_lang``/``target_lang``."""

    source_tokenizer: Any
    target_tokenizer: Any
    seed: int = 0
    corpus: Any = None
    source_lang: str | None = None
    target_lang: str | None = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class InitMethod:
    name: str
    fn: Callable
    description: str


_REGISTRY: Registry[InitMethod] = Registry("init method", "xlt.inits")
INITS: dict[str, InitMethod] = _REGISTRY.entries


def register_init(name: str, description: str = ""):
    def deco(fn):
        _REGISTRY.add(name, InitMethod(name, fn, description or (fn.__doc__ or "").strip().splitlines()[0]))
        return fn

    return deco


def available_inits() -> dict[str, InitMethod]:
    return _REGISTRY.all()


def get_init(name: str) -> InitMethod:
    return _REGISTRY.get(name)


def parse_inits(spec: str | list[str]) -> list[str]:
    """``"overlap,mean"`` -> ``["overlap", "mean"]``, every name checked."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise XltError("no init method given", f"choose from: {', '.join(sorted(available_inits()))}")
    for n in names:
        get_init(n)
    if len(set(names)) != len(names):
        raise XltError(f"init methods repeated in {spec!r}", "name each method once")
    return names
