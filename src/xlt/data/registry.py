"""The registry of data builders (``xlt data NAME``).

A builder is an object with ``name``, a one-line ``description``, an ``options`` dataclass (:mod:`xlt.options`;
its fields become the command's flags) and ``records(ctx, options) -> Iterator[dict]`` (see
:mod:`xlt.data.engine` for what the context gives and what a record must hold). Register one with
:func:`register_builder`; third-party packages add entries through the ``xlt.data_builders`` entry-point group.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol

from xlt.registry import Registry


class Builder(Protocol):
    name: str
    description: str
    options: type

    def records(self, ctx: Any, options: Any) -> Iterator[dict]: ...


def _builtin_modules() -> tuple[str, ...]:
    """Every module of :mod:`xlt.data.builders` (each registers one builder): a new builder is a new file."""
    import pkgutil

    import xlt.data.builders as pkg

    return tuple(f"{pkg.__name__}.{m.name}" for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name)
                 if not m.name.startswith("_"))


BUILDERS: Registry[Builder] = Registry(
    "data builder", "xlt.data_builders",
    builtins=_builtin_modules(),
    fix="choose from: {names} (`xlt data --help` lists them)",
)


def register_builder(name: str):
    """Class decorator: register an instance of the class as builder ``name``."""

    def deco(cls):
        inst = cls()
        inst.name = name
        BUILDERS.add(name, inst)
        return cls

    return deco
