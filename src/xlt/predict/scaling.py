"""Scaling laws of cross-lingual transfer: fit, predict, invert, bootstrap confidence intervals.

Each law is registered by name in :data:`LAWS` (an :class:`xlt.registry.Registry`: a description, an options
dataclass, the point columns it reads, its parameters and a ``model``); :func:`fit_law` fits any of them by least
squares on the response (``scipy.optimize.least_squares``, trust-region reflective with the law's bounds, from
several starting points, the best kept), so adding a law edits nothing else.

- ``power`` — Fernandes et al. 2023 (seed-papers §8), per language pair: ``L = β·N^(−α) + L∞`` (``offset=False``:
  no ``L∞``). Columns ``N, L``. ``invert(L)`` = the ``N`` that reaches ``L`` (``((L − L∞)/β)^(−1/α)``).
- ``joint`` — the same law with the mixture weight ``p`` of the pair: ``L = β·(f(p)·N)^(−α) + L∞``, ``f(1) = 1``,
  so ``f(p)·N`` is the pair's *effective* number of parameters. Columns ``N, p, L``. The paper's form of ``f`` was not
  retrieved (the notes mark it unconfirmed), so it is an option named in every output: ``fernandes`` (the notes'
  recollection, ``f(p) = p + c1·p^c2·(1−p)^c3``, default) or ``power`` (``f(p) = p^c``).
  ``effective_params(L)`` = ``((L − L∞)/β)^(−1/α)``; ``invert(L, p)`` = the ``N`` at weight ``p``.
- ``parallel`` — the Parallel Scaling Law (Yang et al. 2025, seed-papers §23): ``y = a·N^b`` on ``N ≥ 1`` parallel
  languages (log-log least squares, the notes' plausible form; not retrieved). Columns ``N, y``. With it:
  :func:`first_parallel_leap` ``s(1) − s(0)``, :func:`monolingual_gap` ``law(at) − s(0)`` (``at = 1`` by default:
  the law is undefined at 0; the paper's extrapolation point was not retrieved) and :func:`mti`, **provisional**:
  the mean over non-training languages of ``Δacc_ℓ / Δacc_train`` (the notes' proposal, unverified).
- ``data`` — Schäfer et al. 2024's monolingual data law (seed-papers §1): ``1/ppl = −a·x^(−b) + c``, ``x`` = tokens
  / a reference count. Columns ``x, ppl``. ``mlte(ppl)`` = the ``x`` at which the law reaches ``ppl`` (monolingual
  token equivalent), :func:`token_efficiency` = MLTE / tokens seen.

:meth:`Fit.bootstrap` resamples the points with replacement (``n`` times, seeded), refits, and gives percentile
intervals of every parameter (fits that fail on a resample are counted and left out).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from xlt.errors import XltError
from xlt.options import option
from xlt.registry import Registry

LAWS: Registry = Registry("scaling law", "xlt.scaling_laws")


@dataclass(frozen=True)
class Law:
    name: str
    description: str
    options: type
    columns: tuple[str, ...]  # inputs..., response
    formula: Callable[[Any], str]
    params: Callable[[Any], tuple[str, ...]]
    model: Callable[[np.ndarray, np.ndarray, Any], np.ndarray]  # (theta, X columns, options) -> response
    bounds: Callable[[Any], tuple[list[float], list[float]]]
    starts: Callable[[np.ndarray, np.ndarray, Any], list[np.ndarray]]
    check: Callable[[np.ndarray], str | None] = lambda X: None


# -- the laws ---------------------------------------------------------------------------------------------------------
@dataclass
class PowerOptions:
    offset: bool = option(True, "fit the irreducible loss L∞ (False: L = β·N^(−α))")


def _power_starts(X, y, o):
    out = []
    for frac in ((0.0,) if not o.offset else (0.0, 0.5, 0.9, 0.99)):
        floor = frac * y.min()
        slope, icpt = np.polyfit(np.log(X[0]), np.log(np.maximum(y - floor, 1e-12)), 1)
        out.append(np.array([icpt, max(-slope, 1e-3)] + ([floor] if o.offset else [])))
    return out


LAWS.add("power", Law(
    "power", "L = β·N^(−α) + L∞ (Fernandes et al. 2023, per pair)", PowerOptions, ("N", "L"),
    lambda o: "L = beta * N^(-alpha)" + (" + L_inf" if o.offset else ""),
    lambda o: ("log_beta", "alpha") + (("L_inf",) if o.offset else ()),
    lambda t, X, o: np.exp(t[0]) * X[0] ** (-t[1]) + (t[2] if o.offset else 0.0),
    lambda o: ([-np.inf, 0.0] + ([-np.inf] if o.offset else []), [np.inf, np.inf] + ([np.inf] if o.offset else [])),
    _power_starts,
    lambda X: "N must be > 0" if np.any(X[0] <= 0) else None))


def f_weight(p, c, form: str) -> np.ndarray:
    """The joint law's ``f(p)`` (``f(1) = 1`` for every form and parameters)."""
    p = np.asarray(p, dtype=float)
    if form == "fernandes":
        return p + c[0] * p ** c[1] * (1 - p) ** c[2]
    if form == "power":
        return p ** c[0]
    raise XltError(f"unknown f(p) form {form!r}", "choose fernandes or power")


def _fcount(o) -> int:
    return 3 if o.f_form == "fernandes" else 1


@dataclass
class JointOptions:
    f_form: Literal["fernandes", "power"] = option("fernandes", "form of f(p): fernandes = p + c1·p^c2·(1−p)^c3 "
                                                                "(unconfirmed), power = p^c")


def _joint_starts(X, y, o):
    full = X[1] >= X[1].max()
    base = _power_starts(X[:, full] if full.sum() >= 2 else X, y[full] if full.sum() >= 2 else y, PowerOptions())
    fs = [[0.5, 1.0, 1.0], [0.1, 0.5, 2.0], [2.0, 2.0, 0.5]] if o.f_form == "fernandes" else [[0.5], [1.0], [2.0]]
    return [np.concatenate([b, f]) for b in base for f in fs]


LAWS.add("joint", Law(
    "joint", "L = β·(f(p)·N)^(−α) + L∞ with f(1) = 1: effective parameters per mixture weight (Fernandes et al.)",
    JointOptions, ("N", "p", "L"),
    lambda o: "L = beta * (f(p) * N)^(-alpha) + L_inf, f(p) = " + (
        "p + c1 * p^c2 * (1-p)^c3" if o.f_form == "fernandes" else "p^c1"),
    lambda o: ("log_beta", "alpha", "L_inf") + tuple(f"c{i + 1}" for i in range(_fcount(o))),
    lambda t, X, o: np.exp(t[0]) * (f_weight(X[1], t[3:], o.f_form) * X[0]) ** (-t[1]) + t[2],
    lambda o: ([-np.inf, 0.0, -np.inf] + [0.0] * _fcount(o), [np.inf] * (3 + _fcount(o))),
    _joint_starts,
    lambda X: "N must be > 0" if np.any(X[0] <= 0) else (
        "p must lie in (0, 1]" if np.any((X[1] <= 0) | (X[1] > 1)) else None)))


@dataclass
class ParallelOptions:
    pass


LAWS.add("parallel", Law(
    "parallel", "y = a·N^b on N ≥ 1 parallel languages (Parallel Scaling Law; form unconfirmed)", ParallelOptions,
    ("N", "y"), lambda o: "y = a * N^b", lambda o: ("log_a", "b"),
    lambda t, X, o: np.exp(t[0]) * X[0] ** t[1],
    lambda o: ([-np.inf, -np.inf], [np.inf, np.inf]),
    lambda X, y, o: [np.polyfit(np.log(X[0]), np.log(y), 1)[::-1]] if np.all(y > 0) else [np.zeros(2)],
    lambda X: "N must be ≥ 1 (the law is fitted on N ≥ 1; N = 0 is the monolingual point)" if np.any(X[0] < 1)
    else None))


@dataclass
class DataOptions:
    pass


def _data_starts(X, y, o):
    inv = 1 / y
    out = []
    for c in (inv.max() * 1.05, inv.max() * 1.5, inv.max() * 3):
        slope, icpt = np.polyfit(np.log(X[0]), np.log(np.maximum(c - inv, 1e-12)), 1)
        out.append(np.array([icpt, max(-slope, 1e-3), c]))
    return out


LAWS.add("data", Law(
    "data", "1/ppl = −a·x^(−b) + c (Schäfer et al. 2024's monolingual data law; x = tokens / reference)",
    DataOptions, ("x", "ppl"), lambda o: "1/ppl = -a * x^(-b) + c", lambda o: ("log_a", "b", "c"),
    lambda t, X, o: 1.0 / (-np.exp(t[0]) * X[0] ** (-t[1]) + t[2]),
    lambda o: ([-np.inf, 0.0, 0.0], [np.inf, np.inf, np.inf]), _data_starts,
    lambda X: "x must be > 0" if np.any(X[0] <= 0) else None))


# -- fitting -----------------------------------------------------------------------------------------------------
@dataclass
class Fit:
    law: str
    options: Any
    theta: np.ndarray
    X: np.ndarray
    y: np.ndarray
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    bootstrap_info: dict = field(default_factory=dict)
    draws: np.ndarray | None = None  # (n refits, parameters): the bootstrap's refitted theta, for bands

    @property
    def spec(self) -> Law:
        return LAWS.get(self.law)

    @property
    def params(self) -> dict[str, float]:
        """The fitted parameters (``log_`` ones also given exponentiated)."""
        out = {}
        for name, v in zip(self.spec.params(self.options), self.theta):
            if name.startswith("log_"):
                out[name[4:]] = float(math.exp(v))
            else:
                out[name] = float(v)
        return out

    @property
    def formula(self) -> str:
        return self.spec.formula(self.options)

    def predict(self, *inputs) -> np.ndarray | float:
        cols = np.broadcast_arrays(*[np.atleast_1d(np.asarray(i, dtype=float)) for i in inputs])
        out = self.spec.model(self.theta, np.vstack(cols), self.options)
        return float(out[0]) if all(np.ndim(i) == 0 for i in inputs) else out

    @property
    def residuals(self) -> np.ndarray:
        return self.y - self.spec.model(self.theta, self.X, self.options)

    @property
    def r2(self) -> float:
        ss = float(((self.y - self.y.mean()) ** 2).sum())
        return 1.0 - float((self.residuals ** 2).sum()) / ss if ss > 0 else float("nan")

    @property
    def n_points(self) -> int:
        return len(self.y)

    # -- inversions --------------------------------------------------------------------------------------------
    def invert(self, y: float, p: float = 1.0) -> float:
        """The input that gives ``y``: ``N`` (power, parallel; joint at weight ``p``) or ``x`` (data)."""
        P = self.params
        if self.law in ("power", "joint"):
            floor = P.get("L_inf", 0.0)
            if y <= floor:
                raise XltError(f"L = {y:g} is at or below the fitted irreducible loss L∞ = {floor:g}: no N reaches it",
                               "invert a loss above L∞")
            n_eff = ((y - floor) / P["beta"]) ** (-1 / P["alpha"])
            if self.law == "joint":
                return float(n_eff / f_weight(p, self.theta[3:], self.options.f_form))
            return float(n_eff)
        if self.law == "parallel":
            if y <= 0 or P["b"] == 0:
                raise XltError(f"y = {y:g} cannot be inverted by y = a·N^b (a = {P['a']:g}, b = {P['b']:g})",
                               "invert a positive score of a law with b ≠ 0")
            return float((y / P["a"]) ** (1 / P["b"]))
        return self.mlte(y)

    def effective_params(self, loss: float) -> float:
        """Joint law: ``N_eff = f(p)·N`` of a model reaching ``loss`` (the bilingual law inverted)."""
        if self.law != "joint":
            raise XltError("effective parameters come from the joint law", "fit with law='joint'")
        return self.invert(loss, 1.0)

    def mlte(self, ppl: float) -> float:
        """Data law: the ``x`` (tokens / reference) at which the monolingual law reaches ``ppl``."""
        if self.law != "data":
            raise XltError("the monolingual token equivalent comes from the data law", "fit with law='data'")
        P = self.params
        gap = P["c"] - 1.0 / ppl
        if gap <= 0:
            raise XltError(f"ppl {ppl:g} is at or below the law's limit 1/c = {1 / P['c']:g}: no amount of "
                           "monolingual data reaches it", "compare perplexities above the law's limit")
        return float((gap / P["a"]) ** (-1 / P["b"]))

    # -- uncertainty and output ----------------------------------------------------------------------------
    def bootstrap(self, n: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """Percentile intervals of the parameters from ``n`` refits on resampled points (seeded)."""
        rng = np.random.default_rng(seed)
        draws, failed = [], 0
        for _ in range(n):
            idx = rng.integers(0, self.n_points, self.n_points)
            try:
                f = _fit(self.law, self.options, self.X[:, idx], self.y[idx])
            except XltError:
                failed += 1
                continue
            draws.append((list(f.params.values()), f.theta))
        if not draws:
            raise XltError(f"no bootstrap resample of the {self.n_points} points could be fitted", "give more points")
        arr = np.asarray([d[0] for d in draws])
        self.draws = np.asarray([d[1] for d in draws])
        lo, hi = np.percentile(arr, [50 * (1 - level), 50 * (1 + level)], axis=0)
        self.intervals = {k: (float(a), float(b)) for k, a, b in zip(self.params, lo, hi)}
        self.bootstrap_info = {"n": n, "seed": seed, "level": level, "failed": failed,
                               "method": "percentile, points resampled with replacement"}
        return self.intervals

    def band(self, *inputs, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise percentile band of the fitted curve at ``inputs`` (as :meth:`predict` takes them): the
        ``level`` (default: the bootstrap's) interval of the predictions of every bootstrap refit. Needs
        :meth:`bootstrap` first."""
        if self.draws is None:
            raise XltError("no bootstrap refits to make a band from", "call bootstrap() first (--bootstrap N > 0)")
        level = self.bootstrap_info["level"] if level is None else level
        cols = np.vstack(np.broadcast_arrays(*[np.atleast_1d(np.asarray(i, dtype=float)) for i in inputs]))
        preds = np.stack([self.spec.model(theta, cols, self.options) for theta in self.draws])
        lo, hi = np.percentile(preds, [50 * (1 - level), 50 * (1 + level)], axis=0)
        return lo, hi

    def to_json(self) -> dict:
        return {"law": self.law, "formula": self.formula, "options": asdict(self.options), "params": self.params,
                "intervals": {k: list(v) for k, v in self.intervals.items()}, "bootstrap": self.bootstrap_info,
                "r2": self.r2, "n_points": self.n_points,
                "points": {c: col.tolist() for c, col in zip(self.spec.columns, [*self.X, self.y])},
                "provisional": self.law in ("joint", "parallel"),
                "note": {"joint": "the form of f(p) is not confirmed by the paper; the form used is named",
                         "parallel": "the power-law form is the notes' plausible form, not the paper's"}.get(self.law)}


def _fit(law: str, options, X: np.ndarray, y: np.ndarray) -> Fit:
    from scipy.optimize import least_squares

    spec = LAWS.get(law)
    n_par = len(spec.params(options))
    if len(y) < n_par:
        raise XltError(f"the {law} law has {n_par} parameters but only {len(y)} points were given",
                       f"give at least {n_par} points")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise XltError(f"the {law} law's points contain NaN or infinite values", "remove or fix those points")
    if (why := spec.check(X)) is not None:
        raise XltError(f"cannot fit the {law} law: {why}", "fix the points' values")
    lo, hi = spec.bounds(options)
    scale = max(float(np.abs(y).mean()), 1e-12)
    best = None
    with warnings.catch_warnings():  # a poorly conditioned starting-point fit only gives a worse start
        warnings.simplefilter("ignore")
        starts = spec.starts(X, y, options)
    for start in starts:
        x0 = np.clip(np.asarray(start, dtype=float), np.asarray(lo) + 1e-9, np.asarray(hi) - 1e-9)
        with np.errstate(all="ignore"):
            try:
                res = least_squares(lambda t: (spec.model(t, X, options) - y) / scale, x0, bounds=(lo, hi),
                                    method="trf", x_scale="jac", max_nfev=5000, xtol=1e-14, ftol=1e-14, gtol=1e-14)
            except ValueError:
                continue
        if np.all(np.isfinite(res.fun)) and (best is None or res.cost < best.cost):
            best = res
    if best is None:
        raise XltError(f"the {law} law did not converge on these {len(y)} points",
                       "give more points, over a wider range of the input")
    return Fit(law, options, best.x, X, y)


def fit_law(law: str, points: Mapping[str, Sequence[float]], **options) -> Fit:
    """Fit ``law`` (a name in :data:`LAWS`) to ``points`` (a mapping of its columns to values)."""
    spec = LAWS.get(law)
    missing = [c for c in spec.columns if c not in points]
    if missing:
        raise XltError(f"the {law} law needs columns {', '.join(spec.columns)}; missing: {', '.join(missing)}",
                       f"give columns {', '.join(spec.columns)}")
    o = LAWS.options(law, options)
    try:
        cols = [np.asarray(points[c], dtype=float) for c in spec.columns]
    except (TypeError, ValueError):
        raise XltError(f"the {law} law's points are not all numbers", "give numeric columns") from None
    return _fit(law, o, np.vstack(cols[:-1]), cols[-1])


def read_points(path, law: str) -> dict[str, list[float]]:
    """The law's columns from a CSV file (header row; other columns ignored)."""
    import csv

    spec = LAWS.get(law)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise XltError(f"points file {path} does not exist", "give a CSV with a header row") from None
    have = set(rows[0]) if rows else set()
    missing = [c for c in spec.columns if c not in have]
    if missing:
        raise XltError(f"{path} lacks the column(s) {', '.join(missing)} of the {law} law",
                       f"give a header with {', '.join(spec.columns)}")
    try:
        return {c: [float(r[c]) for r in rows] for c in spec.columns}
    except ValueError as e:
        raise XltError(f"{path} has a value that is not a number ({e})", "fix that row") from None


# -- the Parallel Scaling Law's metrics and token efficiency --------------------------------------------------------
def first_parallel_leap(scores: Mapping[int, float]) -> float:
    """``s(1) − s(0)``: the score gained by the first parallel language."""
    if 0 not in scores or 1 not in scores:
        raise XltError("the first-parallel leap needs scores at N = 0 and N = 1", "give both")
    return float(scores[1] - scores[0])


def monolingual_gap(s0: float, fit: Fit, at: float = 1.0) -> float:
    """``law(at) − s(0)``: how far the monolingual score falls below the parallel law's extrapolation."""
    return float(fit.predict(at) - s0)


def mti(before: Mapping[str, float], after: Mapping[str, float], train_langs: Sequence[str]) -> dict:
    """**Provisional** Multilingual Transferability Index: the mean over non-training languages ℓ of
    ``(after_ℓ − before_ℓ) / Δ_train`` with ``Δ_train`` the mean gain of the training languages."""
    train = [l for l in train_langs if l in before and l in after]
    others = [l for l in before if l in after and l not in train_langs]
    if not train or not others:
        raise XltError("MTI needs scores before and after for a training language and another language",
                       "give both languages' scores")
    d_train = float(np.mean([after[l] - before[l] for l in train]))
    if d_train == 0:
        raise XltError("the training languages did not change: MTI is undefined", "check the scores")
    per = {l: (after[l] - before[l]) / d_train for l in others}
    return {"mti": float(np.mean(list(per.values()))), "per_language": per, "provisional": True,
            "formula": "mean over non-training l of (after_l - before_l) / mean training-language gain"}


def token_efficiency(ppl: float, tokens_seen: float, fit: Fit, reference_tokens: float) -> float:
    """TEff = MLTE / tokens seen, MLTE = ``fit.mlte(ppl) · reference_tokens``."""
    if tokens_seen <= 0:
        raise XltError("token efficiency needs a positive number of tokens seen", "give tokens_seen > 0")
    return fit.mlte(ppl) * reference_tokens / tokens_seen
