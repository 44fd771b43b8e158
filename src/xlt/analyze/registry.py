"""Analyses (``ANALYSES``, entry-point group ``xlt.analyses``): one name, one description, one options dataclass.

The engine (:mod:`xlt.analyze.engine`) knows no analysis by name. For each model it asks every selected analysis
whether it applies (``applies``: None, or why not — a dense model has no routers), collects the
:class:`~xlt.analyze.capture.Probe` objects they want (``probes``), runs ONE capture pass over the analysis texts
with all of them, and hands each analysis its probes, filled (``finish``), which returns a JSON-serialisable dict.
An analysis that needs other inputs (the latent-language prompts, steering arms, an ablation matrix) runs its own
passes inside ``finish``. ``section`` renders its part of analysis.html; ``write`` saves side files (neurons/*.json,
routing/*.npz).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from xlt.options import NoOptions
from xlt.registry import Registry


@dataclass
class AnalysisContext:
    """What every analysis may read: the aligned texts per language (row i of every language translates row i of
    the reference), the reference language, the corpus, settings and the output folder."""

    texts: dict[str, list[str]]
    ref: str
    corpus: Any = None
    seed: int = 0
    batch_size: int = 16
    max_length: int = 128
    show_progress: bool = True
    out: Any = None
    extra: dict = field(default_factory=dict)

    @property
    def langs(self) -> list[str]:
        return list(self.texts)


@dataclass
class Analysis:
    name: str
    description: str
    options: type = NoOptions
    probes: Callable | None = None  # (ctx, model, tokenizer, opts) -> list[Probe]
    finish: Callable | None = None  # (ctx, model, tokenizer, opts, probes: the Probe objects, filled) -> dict
    applies: Callable | None = None  # (model, opts) -> None | str (why it does not apply)
    section: Callable | None = None  # (results: {model name: dict}, settings) -> list[str] of HTML
    write: Callable | None = None  # (out: Path, model name, dict) -> None
    default: bool = True  # run when no analysis is named


ANALYSES: Registry[Analysis] = Registry(
    "analysis", "xlt.analyses",
    builtins=("xlt.analyze.analyses.alignment", "xlt.analyze.analyses.neurons", "xlt.analyze.analyses.lens",
              "xlt.analyze.analyses.routing"),
    fix="choose from: {names} (xlt analyses lists them)")


def register_analysis(name: str, description: str, options: type = NoOptions, **hooks) -> Analysis:
    """Register an analysis under ``name`` (see the module docstring for the hooks)."""
    if hooks.get("finish") is None:
        raise TypeError(f"analysis {name!r} has no finish hook")
    return ANALYSES.add(name, Analysis(name, description, options, **hooks))
