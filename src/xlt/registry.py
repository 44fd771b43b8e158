"""One registry shape for every pluggable family (embedding inits, adaptation methods, merge methods).

Each family has one :class:`Registry`. Its built-ins are the modules named in ``builtins`` (imported on the first
lookup, and they register themselves with the family's decorator: ``register_init``, ``register_adaptation``,
``register_merge``); third-party packages add entries through the family's Python entry-point group, loaded once
on first lookup. Every entry has a ``name``, a one-line ``description`` and an ``options`` dataclass
(:mod:`xlt.options`), so the registry checks what a user types the same way for every family: unknown names and
unknown options raise one :class:`~xlt.errors.XltError` that lists the valid ones and the closest match.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Generic, Mapping, TypeVar

from xlt import options as opts
from xlt.errors import XltError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` names them in errors), extended through entry-point ``group``."""

    def __init__(self, kind: str, group: str, builtins: tuple[str, ...] = (), fix: str = "choose from: {names}"):
        self.kind, self.group, self.builtins, self.fix = kind, group, tuple(builtins), fix
        self.entries: dict[str, T] = {}
        self._loaded = False

    def add(self, name: str, entry: T) -> T:
        if name in self.entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        for attr in ("description", "options"):
            if not hasattr(entry, attr):
                raise TypeError(f"{self.kind} {name!r} has no {attr!r}: every entry declares a description and its "
                                "options dataclass (xlt.options)")
        self.entries[name] = entry
        return entry

    def all(self) -> dict[str, T]:
        if not self._loaded:
            self._loaded = True
            for module in self.builtins:
                import_module(module)  # built-ins register on import
            for ep in entry_points(group=self.group):
                ep.load()  # the module registers itself
        return self.entries

    def names(self) -> list[str]:
        return sorted(self.all())

    def get(self, name: str) -> T:
        entries = self.all()
        if name not in entries:
            near = opts.closest(name, list(entries))
            fix = self.fix.format(names=", ".join(sorted(entries)))
            raise XltError(f"unknown {self.kind} {name!r}", (f"did you mean {near}? " if near else "") + fix)
        return entries[name]

    def parse(self, spec: str | list[str], what: str = "") -> list[str]:
        """``"a,b"`` -> ``["a", "b"]``: at least one name, every name known, none repeated."""
        names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
        if not names:
            raise XltError(f"no {self.kind} given", f"choose from: {', '.join(self.names())}")
        for n in names:
            self.get(n)
        if len(set(names)) != len(names):
            raise XltError(f"{what or self.kind + 's'} repeated in {spec!r}", "name each one once")
        return names

    def options(self, name: str, values: Mapping[str, Any] | None = None):
        """The options dataclass of ``name`` built from ``values`` (unknown keys and wrong types refused)."""
        return opts.build(self.get(name).options, values, f"{self.kind} {name}")

    def options_for(self, names: list[str], values: Mapping[str, Any] | None, flag: str = "") -> dict[str, Any]:
        """One flat set of options (``-O k=v`` for several inits at once) split among ``names``: each takes the keys
        it declares; a key that none of them declares is refused, naming the closest key and, when it belongs to
        a registered entry that is not selected, that entry."""
        values = dict(values or {})
        declared = {n: opts.names(self.get(n).options) for n in names}
        valid = sorted({k for ks in declared.values() for k in ks})
        for k in values:
            if k not in valid:
                elsewhere = {key: name for name, e in self.all().items() if name not in names
                             for key in opts.names(e.options)}
                err = opts.unknown_key_error(k, valid, f"the {self.kind}s {', '.join(names)}", elsewhere)
                raise XltError(err.problem + (f" ({flag})" if flag else ""), err.fix)
        return {n: self.options(n, {k: v for k, v in values.items() if k in declared[n]}) for n in names}

    def describe(self) -> list[dict]:
        """Every entry with its description and options (name, type, default, help), sorted by name."""
        return [{"name": n, "description": e.description, "options": opts.describe(e.options)}
                for n, e in sorted(self.all().items())]
