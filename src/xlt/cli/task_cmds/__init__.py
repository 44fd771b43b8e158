"""Task commands (``xlt retrieve``, ``xlt bli``, ``xlt eval-tools``, ``xlt eval-grid``, …): every module of this
package defines ``register(app)``, which adds its commands to the ``xlt`` app; a new command is a new file."""

from __future__ import annotations

import pkgutil
from importlib import import_module


def register_all(app) -> None:
    for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not m.name.startswith("_"):
            import_module(f"{__name__}.{m.name}").register(app)
