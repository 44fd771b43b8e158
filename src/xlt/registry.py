"""One registry shape for every pluggable family (embedding inits, adaptation methods, merge methods).

Each family registers its built-ins by name on import and lets third-party packages add more through a
Python entry-point group, loaded once on first lookup. Lookups of unknown names raise one
:class:`~xlt.errors.XltError` that lists the valid names.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from xlt.errors import XltError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` names them in errors), extended through entry-point ``group``."""

    def __init__(self, kind: str, group: str, builtins: str | None = None, fix: str = "choose from: {names}"):
        self.kind, self.group, self.builtins, self.fix = kind, group, builtins, fix
        self.entries: dict[str, T] = {}
        self._loaded = False

    def add(self, name: str, entry: T) -> T:
        if name in self.entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self.entries[name] = entry
        return entry

    def all(self) -> dict[str, T]:
        if self.builtins:
            import_module(self.builtins)  # built-ins register on import
        if not self._loaded:
            self._loaded = True
            for ep in entry_points(group=self.group):
                ep.load()  # the module registers itself
        return self.entries

    def get(self, name: str) -> T:
        entries = self.all()
        if name not in entries:
            raise XltError(f"unknown {self.kind} {name!r}", self.fix.format(names=", ".join(sorted(entries))))
        return entries[name]
