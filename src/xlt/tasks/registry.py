"""The registries of task parts (issue-level: ``xlt.tasks``): training losses and task modules.

A **loss** is a function registered with :func:`register_loss` under a name, with a one-line ``description``, an
``options`` dataclass (:mod:`xlt.options`; its fields are the loss's keyword hyper-parameters, e.g. a temperature)
and an ``example(generator)`` that returns ``(args, kwargs)`` of small tensors the loss accepts: the shared contract
test (``tests/test_contract_task_losses.py``) calls every registered loss on its example, so a new loss is tested
for being a finite scalar with finite gradients, deterministic, without new test code. Call one as
``xlt.tasks.losses.get("tcm")(*args, **kwargs)``.

A **module** is an ``nn.Module`` class registered with :func:`register_module` (``description``, ``options``), so
``xlt tasks`` can list what a user can build.

Built-ins are the modules of the :mod:`xlt.tasks` package (every file registers its own parts: a new part is a new
file); third-party packages add entries through the ``xlt.task_losses`` / ``xlt.task_modules`` entry-point groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from xlt.registry import Registry

#: files of the xlt.tasks package that hold no registered part
_NOT_PARTS = {"registry", "losses"}


def _builtin_modules() -> tuple[str, ...]:
    """Every module of :mod:`xlt.tasks` but this one and :mod:`xlt.tasks.losses` (each registers its own parts)."""
    import pkgutil
    from pathlib import Path

    package = __name__.rpartition(".")[0]  # xlt.tasks, found beside this file (importing it here would be a cycle)
    found = pkgutil.iter_modules([str(Path(__file__).resolve().parent)])
    return tuple(f"{package}.{m.name}" for m in sorted(found, key=lambda m: m.name)
                 if not m.name.startswith("_") and m.name not in _NOT_PARTS)


@dataclass
class LossEntry:
    """A registered loss: call it like the function it wraps."""

    name: str
    description: str
    options: type
    fn: Callable[..., Any]
    example: Callable[[Any], tuple[tuple, dict]]
    paper: str = ""

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


@dataclass
class ModuleEntry:
    """A registered task module class."""

    name: str
    description: str
    options: type
    cls: type
    paper: str = ""
    extra: dict = field(default_factory=dict)


LOSSES: Registry[LossEntry] = Registry("task loss", "xlt.task_losses", builtins=_builtin_modules(),
                                       fix="choose from: {names} (`xlt losses` lists them)")
MODULES: Registry[ModuleEntry] = Registry("task module", "xlt.task_modules", builtins=_builtin_modules(),
                                          fix="choose from: {names} (`xlt losses` lists them)")


def register_loss(name: str, *, description: str, options: type, example: Callable[[Any], tuple[tuple, dict]],
                  paper: str = ""):
    """Function decorator: register ``fn`` as loss ``name`` (the function itself is returned unchanged).
    ``example(generator)`` returns ``(args, kwargs)`` of small tensors (floats that should get gradients with
    ``requires_grad=True``) for the contract test."""

    def deco(fn):
        LOSSES.add(name, LossEntry(name, description, options, fn, example, paper))
        return fn

    return deco


def register_module(name: str, *, description: str, options: type, paper: str = "", **extra):
    """Class decorator: register an ``nn.Module`` class as task module ``name``."""

    def deco(cls):
        MODULES.add(name, ModuleEntry(name, description, options, cls, paper, dict(extra)))
        return cls

    return deco
