"""Registry of embedding-initialisation methods: one name, one signature, one options dataclass.

A method is a function ``(ctx: TransferContext, options) -> TransferMapping``, registered with
``@register_init("name", options=MyOptions)`` where ``MyOptions`` is a dataclass of :func:`xlt.options.option`
fields (omit it for a method without options). ``xlt adapt -O KEY=VALUE`` and the Python API build the options
through the registry, so an unknown key or a wrong type is refused before any work. Third-party packages add
methods through the ``xlt.inits`` entry-point group. Methods never touch the model:
:func:`xlt.vocab.transfer.transfer_model` applies the mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from xlt.options import NoOptions
from xlt.registry import Registry


@dataclass
class TransferContext:
    """What a method may use. Data-driven methods read ``corpus`` in ``source_lang``/``target_lang``.

    ``options`` are the raw ``KEY=VALUE`` pairs for the method (built into its options dataclass by
    :func:`~xlt.vocab.transfer.build_mapping`); ``holdout`` are target ids a comparison asks the method to
    reconstruct instead of copying (the leave-one-out comparison)."""

    source_tokenizer: Any
    target_tokenizer: Any
    seed: int = 0
    corpus: Any = None
    source_lang: str | None = None
    target_lang: str | None = None
    options: dict = field(default_factory=dict)
    holdout: frozenset = frozenset()


@dataclass(frozen=True)
class InitMethod:
    name: str
    fn: Callable
    description: str
    options: type = NoOptions
    #: does an identical target tokenizer reproduce the source embeddings exactly? (a bool, or a function of the
    #: built options; the contract tests hold every method to it)
    identity: bool | Callable[[Any], bool] = False

    def reproduces_identity(self, options) -> bool:
        return self.identity(options) if callable(self.identity) else bool(self.identity)


INITS: Registry[InitMethod] = Registry("init method", "xlt.inits", builtins=(
    "xlt.vocab.baselines", "xlt.vocab.similarity", "xlt.vocab.transtok"))


def register_init(name: str, description: str = "", options: type | None = None,
                  identity: bool | Callable[[Any], bool] = False):
    """Register ``fn(ctx, options) -> TransferMapping`` as init ``name`` with its options dataclass; ``identity``
    promises that an identical target tokenizer gives back the source embeddings exactly."""
    def deco(fn):
        INITS.add(name, InitMethod(name, fn, description or (fn.__doc__ or "").strip().splitlines()[0],
                                   options or NoOptions, identity))
        return fn

    return deco


def available_inits() -> dict[str, InitMethod]:
    return INITS.all()


def get_init(name: str) -> InitMethod:
    return INITS.get(name)


def parse_inits(spec: str | list[str]) -> list[str]:
    """``"overlap,mean"`` -> ``["overlap", "mean"]``, every name checked."""
    return INITS.parse(spec, "init methods")
