"""Task losses by name: ``get("tcm")(*args, **kwargs)``, ``names()``; see :mod:`xlt.tasks.registry`."""

from __future__ import annotations

from xlt.tasks.registry import LOSSES, LossEntry


def get(name: str) -> LossEntry:
    """The registered loss ``name`` (an unknown name: one error listing the registered ones)."""
    return LOSSES.get(name)


def names() -> list[str]:
    return LOSSES.names()
