"""``LangScores``: model × language × metric → value, with its sample size, uncertainty, direction and signature.

Every evaluation suite fills one; reports, parity and forgetting read it. A score says how it was computed
(``signature``) and which way is better (``higher_is_better``), so tables from different suites combine without
guessing.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from xlt.errors import XltError


@dataclass(frozen=True)
class Score:
    model: str
    lang: str
    metric: str
    value: float
    n: int = 0  # items, tokens or bytes the value averages over (what ``n_unit`` says)
    stderr: float | None = None
    ci: tuple[float, float] | None = None  # a confidence interval (``ci_level``), where the metric has one
    higher_is_better: bool = True
    suite: str = ""
    signature: str = ""
    n_unit: str = "items"
    ci_level: float | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = list(self.ci) if self.ci is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Score":
        d = dict(d)
        if d.get("ci") is not None:
            d["ci"] = tuple(d["ci"])
        return cls(**d)


@dataclass
class LangScores:
    """A table of :class:`Score` rows; at most one row per (model, language, metric)."""

    rows: list[Score] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index: dict[tuple[str, str, str], int] = {}
        rows, self.rows = self.rows, []
        for r in rows:
            self.add(r)

    # -- building ---------------------------------------------------------------------------------
    def add(self, score: Score | None = None, **kw) -> Score:
        """Add ``score`` (or build one from keywords); a second value for the same (model, lang, metric) is an
        error, because two suites that disagree on one number must not silently overwrite each other."""
        s = score if score is not None else Score(**kw)
        if not isinstance(s.value, (int, float)) or isinstance(s.value, bool):
            raise TypeError(f"score value must be a number, got {type(s.value).__name__}")
        if not math.isfinite(s.value):  # a suite leaves out what it cannot define; NaN would poison tables and JSON
            raise ValueError(f"{s.suite or 'a suite'} gave {s.value} for {s.model} / {s.lang} / {s.metric}")
        key = (s.model, s.lang, s.metric)
        if key in self._index:
            raise ValueError(f"two values for {key}: {self.rows[self._index[key]].value} and {s.value}")
        self._index[key] = len(self.rows)
        self.rows.append(s)
        return s

    def extend(self, other: "LangScores | Iterable[Score]") -> "LangScores":
        for r in (other.rows if isinstance(other, LangScores) else other):
            self.add(r)
        return self

    # -- reading ----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Score]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, model: str, lang: str, metric: str) -> Score | None:
        i = self._index.get((model, lang, metric))
        return None if i is None else self.rows[i]

    def value(self, model: str, lang: str, metric: str) -> float:
        s = self.get(model, lang, metric)
        if s is None:
            raise KeyError((model, lang, metric))
        return s.value

    def _ordered(self, attr: str) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.rows:
            seen.setdefault(getattr(r, attr), None)
        return list(seen)

    def models(self) -> list[str]:
        return self._ordered("model")

    def langs(self) -> list[str]:
        return self._ordered("lang")

    def metrics(self) -> list[str]:
        return self._ordered("metric")

    def select(self, model: str | None = None, lang: str | None = None, metric: str | None = None,
               suite: str | None = None) -> "LangScores":
        keep = [r for r in self.rows if (model is None or r.model == model) and (lang is None or r.lang == lang)
                and (metric is None or r.metric == metric) and (suite is None or r.suite == suite)]
        return LangScores(keep)

    def table(self, metric: str) -> dict[str, dict[str, float]]:
        """``{model: {lang: value}}`` for one metric (NaN-free: missing cells are absent)."""
        out: dict[str, dict[str, float]] = {}
        for r in self.rows:
            if r.metric == metric:
                out.setdefault(r.model, {})[r.lang] = r.value
        return out

    def direction(self, metric: str) -> bool:
        """Whether higher is better for ``metric`` (every row of one metric must agree)."""
        dirs = {r.higher_is_better for r in self.rows if r.metric == metric}
        if not dirs:
            raise KeyError(metric)
        if len(dirs) > 1:
            raise ValueError(f"metric {metric!r} has rows with both directions")
        return dirs.pop()

    # -- files ------------------------------------------------------------------------------------
    def as_list(self) -> list[dict]:
        return [r.as_dict() for r in self.rows]

    @classmethod
    def from_list(cls, rows: list[dict]) -> "LangScores":
        return cls([Score.from_dict(r) for r in rows])

    @classmethod
    def load(cls, path: str | Path) -> "LangScores":
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise XltError(f"cannot read scores from {p}: {e}", "give a metrics.json written by xlt evaluate") from None
        rows = data.get("scores") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise XltError(f"{p} holds no 'scores' list", "give a metrics.json written by xlt evaluate")
        return cls.from_list(rows)


def mean_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / √n; 0 for one value)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    m = math.fsum(values) / n
    if n == 1:
        return m, 0.0
    var = math.fsum((v - m) ** 2 for v in values) / (n - 1)
    return m, math.sqrt(var / n)
