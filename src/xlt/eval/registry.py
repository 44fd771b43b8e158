"""Evaluation suites (``SUITES``, entry-point group ``xlt.evals``): one name, one description, one options dataclass.

A suite has up to two hooks, and the engine (:mod:`xlt.eval.evaluate`) knows no suite by name:

- ``per_model(ctx, model: EvalModel, options) -> LangScores``: scores one loaded model in ``ctx.langs`` (the engine
  loads each model once and hands it to every suite in turn, so one model is in memory at a time);
- ``combine(ctx, scores: LangScores, options) -> SuiteOutput``: runs after every model was scored, on all scores so
  far (forgetting and parity derive their numbers from other suites'), or alone where it needs no model (MT on
  files).

Each returns :class:`~xlt.eval.scores.LangScores` rows whose ``suite`` is its name; ``SuiteOutput.details`` holds
what does not fit a language × metric cell (significance tables, premium tables) for ``metrics.json`` and the
report. Third-party suites register through the ``xlt.evals`` entry-point group (:func:`register_suite`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from xlt.corpora.base import Corpus
from xlt.errors import XltError
from xlt.eval.scores import LangScores
from xlt.languages import Language
from xlt.options import NoOptions
from xlt.registry import Registry


@dataclass
class EvalModel:
    """One model to evaluate: ``name`` labels it in every table; ``role`` is ``source``, ``adapted`` or ``model``;
    an adapted model names its ``source`` (another EvalModel's name), its ``source_lang`` and ``target`` language."""

    name: str
    path: str
    role: str = "model"
    source: str | None = None
    source_lang: str | None = None
    target: str | None = None
    loader: Callable[[], tuple[Any, Any]] | None = None
    _loaded: tuple[Any, Any] | None = field(default=None, repr=False)

    def load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            if self.loader is None:
                raise XltError(f"model {self.name} has nothing to load it with", "give a model folder or name")
            self._loaded = self.loader()
        return self._loaded

    def release(self) -> None:
        self._loaded = None

    @property
    def model(self):
        return self.load()[0]

    @property
    def tokenizer(self):
        return self.load()[1]

    def describe(self) -> dict:
        return {"name": self.name, "path": self.path, "role": self.role, "source": self.source,
                "source_lang": self.source_lang, "target": self.target}


@dataclass
class EvalContext:
    """What every suite may read: the models, languages, the corpus and its held-out split, limits and settings."""

    models: list[EvalModel]
    langs: list[Language]
    corpus: Corpus | None
    split: str = "test"
    max_bytes: int = 8000
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    work: Path | None = None  # a scratch folder of this evaluation
    inputs: dict = field(default_factory=dict)  # suite inputs given by the user (MT files, task folders)
    show_progress: bool = True
    _texts: dict = field(default_factory=dict, repr=False)

    def texts(self, lang: Language | str) -> list[str]:
        """Held-out documents of ``lang`` (``split``), whole documents up to ``max_bytes`` UTF-8 bytes."""
        from xlt.eval.bpb import truncate_texts

        code = lang.code if isinstance(lang, Language) else lang
        if code not in self._texts:
            if self.corpus is None:
                raise XltError("this evaluation has no corpus", "pass --corpus (e.g. bible)")
            self._texts[code] = truncate_texts(self.corpus.texts(code, self.split), self.max_bytes)
        return self._texts[code]

    def parallel_texts(self, langs: list[Language]) -> dict[str, list[str]]:
        """Documents every language in ``langs`` has, parallel by key: the keys of the first language's held-out
        documents (``split``, up to ``max_bytes`` of it) that every other language has, in any split (a corpus
        split by text hash puts a key's translations in different splits)."""
        if self.corpus is None:
            raise XltError("this evaluation has no corpus", "pass --corpus (e.g. bible)")
        key = ("parallel",) + tuple(lang.code for lang in langs)
        if key in self._texts:  # every model of the evaluation reads the same documents
            return self._texts[key]
        first = self.corpus.documents(langs[0], self.split)
        others = {lang.code: {d.key: d.text for d in self.corpus.documents(lang)} for lang in langs[1:]}
        total, kept = 0, []
        for d in first:
            if not all(d.key in o for o in others.values()):
                continue
            total += len(d.text.encode("utf-8")) + 1
            if kept and total > self.max_bytes:
                break
            kept.append(d)
        if not kept:
            raise XltError(f"the {self.corpus.name} corpus has no {self.split} document that "
                           f"{', '.join(lang.code for lang in langs)} all have (parallel by key)",
                           "give a parallel corpus (records sharing an id across languages), or leave out the "
                           "tokenizer suite")
        out = {langs[0].code: [d.text for d in kept]}
        out.update({code: [o[d.key] for d in kept] for code, o in others.items()})
        self._texts[key] = out
        return out


@dataclass
class SuiteOutput:
    scores: LangScores = field(default_factory=LangScores)
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EvalSuite:
    name: str
    description: str
    options: type = NoOptions
    per_model: Callable[[EvalContext, EvalModel, Any], LangScores] | None = None
    combine: Callable[[EvalContext, LangScores, Any], SuiteOutput] | None = None
    needs_corpus: bool = True
    #: whether the suite can run with no model at all (on inputs the user gave)
    model_free: bool = False
    #: ``prepare(ctx, options)`` refuses bad input, or completes the context (a language it needs), before any
    #: model loads
    prepare: Callable[[EvalContext, Any], None] | None = None
    #: ``languages(ctx, options) -> [codes]``: languages the suite needs besides ``--langs``; the engine adds them
    #: before any suite prepares, so every suite scores them
    languages: Callable[[EvalContext, Any], list[str]] | None = None
    #: options (and ``inputs``) for a small run in the contract tests: ``{"options": {...}, "inputs": {...}}``
    example: dict = field(default_factory=dict)


SUITES: Registry[EvalSuite] = Registry(
    "evaluation suite", "xlt.evals",
    builtins=("xlt.eval.suites.bpb", "xlt.eval.suites.tokenizer", "xlt.eval.suites.forgetting",
              "xlt.eval.suites.parity", "xlt.eval.suites.tasks", "xlt.eval.suites.offtarget",
              "xlt.eval.suites.mt", "xlt.eval.suites.qa"),
    fix="choose from: {names} (`xlt evals` lists them with their options)")


def register_suite(name: str, description: str, options: type = NoOptions, **hooks) -> EvalSuite:
    """Register an evaluation suite under ``name`` (see the module docstring for the hooks)."""
    if hooks.get("per_model") is None and hooks.get("combine") is None:
        raise TypeError(f"suite {name!r} has neither per_model nor combine")
    return SUITES.add(name, EvalSuite(name, description, options, **hooks))
