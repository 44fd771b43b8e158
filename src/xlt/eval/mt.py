"""Machine-translation scores (sacrebleu's BLEU, chrF, chrF++, TER) and paired significance tests between systems.

:func:`mt_scores` is sacrebleu's corpus score with its signature. :func:`paired_test` gives the same p-values as
sacrebleu's ``PairedTest`` (paired bootstrap ``bs`` or approximate randomisation ``ar``) for the same seed, and the
same bootstrap means and 95 % confidence half-widths, but computes them differently:

- sentence statistics are extracted once per metric for every distinct (reference, hypothesis) pair over all
  systems, and kept in a small in-process cache (keyed by content hashes), so a second test on the same systems
  (``bs`` then ``ar``) does not extract them again; :func:`clear_cache` empties it;
- the resamples are sums of those statistics for all resamples at once (a count matrix, or the swap mask, times the
  statistics), and all resample scores are computed at once with numpy (:func:`resample_scores`).

The random draws are sacrebleu's: a fresh ``numpy.random.default_rng(seed)`` per test; ``bs`` draws
``rng.choice(n, size=(n_samples, n))`` and ``ar`` draws ``rng.integers(2, size=(n_samples, n), dtype=bool)``, the
same for every system. sacrebleu takes the seed from ``$SACREBLEU_SEED`` (default 12345) and, for the system
comparisons, treats seed 0 as "unseeded"; here ``seed`` is always used as given.

Each resample score equals sacrebleu's ``_compute_score_from_stats`` on that resample bit for bit: every step is done
in the dtype numpy gives sacrebleu's scalar arithmetic (probed at run time; with numpy 2, float32 in the bootstrap,
where sacrebleu sums float32 statistics), and logarithms and exponentials go through Python's ``math``, as in
sacrebleu (numpy's own can differ in the last bit). Sums sacrebleu would round in float32 (a resample total of
2**24 or more) are summed exactly as sacrebleu does, one resample at a time.

A difference of exactly zero (e.g. two identical systems) gets p = 1 here. sacrebleu counts resamples whose statistic
is strictly greater than the observed difference, so it reports 1/(n_samples + 1) in that case (the smallest p it
can give, as if the systems differed); ``p_sacrebleu`` keeps its value.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Mapping, Sequence

import numpy as np

from xlt.errors import XltError

METRICS = ("bleu", "chrf", "chrf++", "ter")
TESTS = ("bs", "ar")
CORRECTIONS = (None, "bonferroni", "holm")
#: resamples / trials when ``n_samples`` is None (sacrebleu's defaults)
DEFAULT_SAMPLES = {"bs": 1000, "ar": 10000}

_F32_EXACT = 2 ** 24  # integers below this are exact in float32, and so are sums that stay below it
_LOG_FLOOR = -9999999999  # sacrebleu's my_log(0)


# -- sacrebleu ----------------------------------------------------------------------------------------------------
def _sacrebleu():
    try:
        import sacrebleu
    except ImportError:
        raise XltError("MT scores need the 'sacrebleu' package, which is not installed",
                       "pip install 'xlt[eval]'   (or pip install sacrebleu==2.6.0)") from None
    return sacrebleu


def _make_metric(name: str):
    from sacrebleu.metrics import BLEU, CHRF, TER

    return {"bleu": BLEU, "chrf": CHRF, "chrf++": lambda: CHRF(word_order=2), "ter": TER}[name]()


def _check_metrics(metrics) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(metrics)
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise XltError(f"unknown MT metric(s) {bad}" if bad else "no MT metric given",
                       f"choose from {', '.join(METRICS)}")
    if len(set(metrics)) != len(metrics):
        raise XltError(f"a metric is listed twice in {list(metrics)}", "name each metric once")
    return metrics


def _check_lines(lines, what: str) -> list[str]:
    if isinstance(lines, str) or not isinstance(lines, Sequence):
        raise XltError(f"{what} must be a list of strings, one per segment, not {type(lines).__name__}",
                       f"pass {what} as a list of lines")
    bad = next((i for i, x in enumerate(lines) if not isinstance(x, str)), None)
    if bad is not None:
        raise XltError(f"line {bad} of {what} is {type(lines[bad]).__name__}, not a string",
                       f"give every line of {what} as text ('' for an empty output)")
    return list(lines)


@dataclass(frozen=True)
class MTScore:
    """A corpus-level score with sacrebleu's signature; TER is the one where lower is better."""

    metric: str
    score: float
    signature: str
    higher_is_better: bool = True


def mt_scores(hyps: list[str], refs: list[str], metrics: Sequence[str] = METRICS) -> dict[str, MTScore]:
    """sacrebleu corpus scores of ``hyps`` against one reference per line (``BLEU()``, ``CHRF()``,
    ``CHRF(word_order=2)``, ``TER()``, sacrebleu's defaults)."""
    metrics = _check_metrics(metrics)
    hyps, refs = _check_lines(hyps, "the hypotheses"), _check_lines(refs, "the references")
    if not refs:
        raise XltError("no lines to score: the references are empty", "give at least one hypothesis and reference")
    if len(hyps) != len(refs):
        raise XltError(f"{len(hyps)} hypotheses but {len(refs)} references",
                       "give exactly one hypothesis per reference line, in the same order")
    _sacrebleu()
    out = {}
    for name in metrics:
        m = _make_metric(name)
        s = m.corpus_score(hyps, [refs])
        out[name] = MTScore(name, float(s.score), m.get_signature().format(), name != "ter")
    return out


# -- vectorised score-from-statistics -----------------------------------------------------------------------------
def _t(f: Callable, *args) -> type:
    """The type of ``f(*args)`` for scalars like ``args``: how numpy (or Python) promotes that operation."""
    return type(f(*args))


def _dt(t: type) -> np.dtype:
    return np.dtype(np.float64) if t is float else np.dtype(t)


def _v(t: type, x) -> np.ndarray:
    """``x`` as an array of the dtype of scalar type ``t``."""
    return np.asarray(x, dtype=_dt(t))


def _one(t: type):
    return t(3)


def _mul(a, b):
    return a * b


def _div(a, b):
    return a / b


def _add(a, b):
    return a + b


def _math(f: Callable[[float], float], x: np.ndarray) -> np.ndarray:
    """``f`` (``math.log`` / ``math.exp``, the libm sacrebleu calls) on every element of float64 ``x``."""
    return np.fromiter(map(f, x.tolist()), dtype=np.float64, count=x.size).reshape(x.shape)


def _array_dtype(types: set) -> np.dtype:
    """The dtype ``np.array([...])`` gives a list of scalars of these types (sacrebleu's ``np.array(scores)``)."""
    return np.array([_one(t) for t in types]).dtype if types else np.dtype(np.float64)


def _rows_sum(logs: np.ndarray) -> np.ndarray:
    """Python's ``sum`` of each row (the BLEU log-precisions, floor entries as sacrebleu's int)."""
    if sys.version_info < (3, 12):  # plain left-to-right double additions
        s = logs[:, 0].copy()
        for j in range(1, logs.shape[1]):
            s += logs[:, j]
        return s
    # 3.12+ sums floats with compensation: let Python do it
    return np.array([sum(_LOG_FLOOR if v == _LOG_FLOOR else v for v in row) for row in logs.tolist()],
                    dtype=np.float64)


def _bleu_scores(sums: np.ndarray, kind: np.dtype) -> np.ndarray:
    """sacrebleu 2.6.0 ``BLEU()`` (exp smoothing, 4-grams) ``compute_bleu`` for every row."""
    S = kind.type
    R = len(sums)
    sys_len, ref_len, c, t = sums[:, 0], sums[:, 1], sums[:, 2:6], sums[:, 6:10]
    bp = np.ones(R)
    short = sys_len < ref_len
    bp[short] = 0.0
    pos = short & (sys_len > 0)
    bp[pos] = _math(math.exp, 1 - ref_len[pos] / sys_len[pos])
    t_smooth = _t(_mul, 2.0, _one(S))  # smooth_mteval * total
    t_psmooth = _t(_div, 100.0, _one(t_smooth))  # 100. / (...)
    t_num = _t(_mul, 100.0, _one(S))  # 100. * correct
    t_prec = _t(_div, _one(t_num), _one(S))  # (...) / total
    logs = np.full((R, 4), float(_LOG_FLOOR))
    alive = np.ones(R, dtype=bool)  # no order with zero n-grams yet (sacrebleu breaks there)
    smooth = np.ones(R)
    for n in range(4):
        alive &= t[:, n] != 0
        zero = alive & (c[:, n] == 0)
        smooth[zero] *= 2
        p = np.zeros(R)
        if zero.any():
            den = _v(t_smooth, smooth[zero]) * _v(t_smooth, t[zero, n])
            p[zero] = _v(t_psmooth, 100.0) / _v(t_psmooth, den)
        ok = alive & ~zero
        if ok.any():
            num = _v(t_num, 100.0) * _v(t_num, c[ok, n])
            p[ok] = _v(t_prec, num) / _v(t_prec, t[ok, n])
        nz = p != 0
        logs[nz, n] = _math(math.log, p[nz])
    score = bp * _math(math.exp, _rows_sum(logs) / 4)
    score[~(c != 0).any(axis=1)] = 0.0  # no matches at all
    return score  # Python floats in sacrebleu: float64


def _chrf_scores(sums: np.ndarray, kind: np.dtype, order: int) -> np.ndarray:
    """sacrebleu 2.6.0 ``CHRF`` (beta 2, no eps smoothing) ``_compute_f_score`` for every row."""
    S = kind.type
    R = len(sums)
    t_prec = _t(_div, _one(S), _one(S))
    t_acc = _t(_add, 0.0, _one(t_prec))
    if _t(_add, _one(t_acc), _one(t_prec)) is not t_acc:
        return None  # a promotion chain this code does not model: let sacrebleu compute it
    t_avg = _t(_div, _one(t_acc), 3)
    acc_p, acc_r = np.zeros(R, _dt(t_acc)), np.zeros(R, _dt(t_acc))
    eff = np.zeros(R, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(order):
            h, r, m = sums[:, 3 * i], sums[:, 3 * i + 1], sums[:, 3 * i + 2]
            valid = (h > 0) & (r > 0)
            prec = _v(t_prec, m) / _v(t_prec, h)
            rec = _v(t_prec, m) / _v(t_prec, r)
            acc_p = np.where(valid, acc_p + _v(t_acc, prec), acc_p)
            acc_r = np.where(valid, acc_r + _v(t_acc, rec), acc_r)
            eff += valid
    ap = _v(t_avg, acc_p) / _v(t_avg, np.maximum(eff, 1))
    ar = _v(t_avg, acc_r) / _v(t_avg, np.maximum(eff, 1))
    main = (eff > 0) & ((ap != 0) | (ar != 0))  # sacrebleu: `if avg_prec + avg_rec:` (both are >= 0)
    t5 = _t(_mul, 5, _one(t_avg))
    t6 = _t(_mul, _one(t5), _one(t_avg))
    t7 = _t(_mul, 4, _one(t_avg))
    t8 = _t(_add, _one(t7), _one(t_avg))
    t9 = _t(_div, _one(t6), _one(t8))
    t10 = _t(_mul, 100, _one(t9))
    with np.errstate(divide="ignore", invalid="ignore"):
        num = _v(t6, _v(t5, 5) * _v(t5, ap)) * _v(t6, ar)
        den = _v(t8, _v(t7, 4) * _v(t7, ap)) + _v(t8, ar)
        score = _v(t10, 100) * _v(t10, _v(t9, num) / _v(t9, den))
    types = ({t10} if main.any() else set()) | ({float} if not main.all() else set())
    out = np.zeros(R, dtype=_array_dtype(types))
    out[main] = score[main]
    return out


def _ter_scores(sums: np.ndarray, kind: np.dtype) -> np.ndarray:
    """sacrebleu 2.6.0 ``TER()`` ``_compute_score_from_stats`` for every row."""
    S = kind.type
    e, r = sums[:, 0], sums[:, 1]
    t_q = _t(_div, _one(S), _one(S))
    t_s = _t(_mul, 100, _one(t_q))
    main = r > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        score = _v(t_s, 100) * _v(t_s, _v(t_q, e) / _v(t_q, r))
    types = ({t_s} if main.any() else set()) | ({float} if not main.all() else set())
    out = np.where(e > 0, 100.0, 0.0).astype(_array_dtype(types))
    out[main] = score[main]
    return out


def resample_scores(metric: str, sums: np.ndarray, kind: np.dtype | str) -> np.ndarray:
    """sacrebleu's ``_compute_score_from_stats(row).score`` for every row of ``sums``, as ``np.array`` of them.

    ``sums`` holds each resample's summed sentence statistics (any float or int dtype that holds sacrebleu's values
    exactly); ``kind`` is the dtype sacrebleu holds them in: float32 in its bootstrap, the statistics' own dtype
    (int64, float64 for TER) in approximate randomisation. Values and dtype equal sacrebleu's bit for bit.
    """
    kind = np.dtype(kind)
    sums = np.asarray(sums, dtype=np.float64)  # the values; the arithmetic's dtypes come from `kind`
    if sums.ndim != 2:
        raise XltError(f"resample sums must be a 2-d array (resamples × statistics), not {sums.ndim}-d",
                       "stack the per-resample statistic sums into one matrix")
    if metric == "bleu":
        out = _bleu_scores(sums, kind)
    elif metric in ("chrf", "chrf++"):
        out = _chrf_scores(sums, kind, 6 + (2 if metric == "chrf++" else 0))
    elif metric == "ter":
        out = _ter_scores(sums, kind)
    else:
        raise XltError(f"unknown MT metric {metric!r}", f"choose from {', '.join(METRICS)}")
    if out is None:  # not reached with numpy's known promotion rules
        m = _make_metric(metric)
        out = np.array([m._compute_score_from_stats(row).score for row in sums.astype(kind)])
    return out


# -- statistics (extracted once, cached) --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Stats:
    values: np.ndarray  # (lines, k) float64, exact integers
    kind: np.dtype  # np.asarray(sacrebleu's list).dtype
    col_types: tuple  # Python type of each column in sacrebleu's list (int or float)


_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 32


def clear_cache() -> None:
    """Forget the sentence statistics kept from earlier :func:`paired_test` calls."""
    _CACHE.clear()


def _digest(lines: list[str]) -> str:
    h = hashlib.sha256()
    for x in lines:
        b = x.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _statistics(metric: str, refs: list[str], systems: dict[str, list[str]], ref_key: str,
                keys: dict[str, str]) -> dict[str, _Stats]:
    """Sentence statistics of every system for ``metric``, from the cache or extracted once per distinct
    (reference, hypothesis) pair over the systems not cached."""
    out, todo = {}, []
    for name in systems:
        hit = _CACHE.get((metric, ref_key, keys[name]))
        if hit is not None:
            _CACHE.move_to_end((metric, ref_key, keys[name]))
            out[name] = hit
        else:
            todo.append(name)
    if not todo:
        return out
    ref_ids: dict[str, int] = {}
    ref_of_line = [ref_ids.setdefault(r, len(ref_ids)) for r in refs]
    pair_ids: dict[tuple[int, str], int] = {}
    rows = {name: [pair_ids.setdefault((ref_of_line[i], h), len(pair_ids)) for i, h in enumerate(systems[name])]
            for name in todo}
    pairs = list(pair_ids)
    m = _make_metric(metric)
    cache = m._cache_references([list(ref_ids)])
    m._ref_cache = [cache[r] for r, _ in pairs]  # each pair's reference info, shared, never recomputed
    stats = m._extract_corpus_statistics([h for _, h in pairs], None)
    a = np.asarray(stats)
    col_types = tuple(type(v) for v in stats[0])
    values = a.astype(np.float64)
    if not np.array_equal(values, np.floor(values)) or values.min() < 0:
        raise RuntimeError(f"sacrebleu's {metric} statistics are not non-negative integers; xlt's exact "
                           "resampling relies on that (always true for one reference per line)")
    for name in todo:
        st = _Stats(values[rows[name]], a.dtype, col_types)
        out[name] = st
        _CACHE[(metric, ref_key, keys[name])] = st
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return out


def _corpus_score(metric, st: _Stats) -> float:
    """sacrebleu's ``_aggregate_and_compute`` on the sentence statistics (exact integer sums)."""
    total = st.values.sum(axis=0)
    return float(metric._compute_score_from_stats([t(v) for t, v in zip(st.col_types, total.tolist())]).score)


@lru_cache(maxsize=None)
def _base_signature(metric: str):
    m = _make_metric(metric)
    m._cache_references([["x"]])  # sets nrefs:1, which the signature needs
    return m


# -- p-values and corrections -------------------------------------------------------------------------------------
def estimate_ci(scores: np.ndarray) -> tuple[float, float]:
    """sacrebleu's bootstrap estimate: the mean, and half the width of the central 95 % of the sorted scores."""
    scores = np.sort(scores)
    lower = len(scores) // 40
    ci = 0.5 * (scores[len(scores) - lower - 1] - scores[lower])
    return float(scores.mean()), float(ci)


def _p_value(stats: np.ndarray, diff: float) -> float:
    """sacrebleu's (count of statistics strictly above ``diff`` + 1) / (n + 1)."""
    return (int(np.sum(stats > diff)) + 1) / (len(stats) + 1)


def _check_ps(ps) -> list[float]:
    ps = [float(p) for p in ps]
    bad = [p for p in ps if not 0.0 <= p <= 1.0]
    if bad:
        raise XltError(f"p-values must lie in [0, 1]; got {bad}", "pass the uncorrected p-values of the tests")
    return ps


def bonferroni(ps: Sequence[float]) -> list[float]:
    """Bonferroni correction: each p times the number of tests, capped at 1."""
    ps = _check_ps(ps)
    return [min(1.0, p * len(ps)) for p in ps]


def holm(ps: Sequence[float]) -> list[float]:
    """Holm's step-down correction: the i-th smallest p times (m − i + 1), made non-decreasing, capped at 1."""
    ps = _check_ps(ps)
    m = len(ps)
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: ps[j])):
        running = max(running, min(1.0, ps[i] * (m - rank)))
        out[i] = running
    return out


# -- the paired test ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedRow:
    """One system × metric: its score, Δ to the baseline and p-values (None for the baseline's own row).

    ``p_sacrebleu`` is the test's p exactly as sacrebleu's ``PairedTest`` reports it; ``p_raw`` is the same but 1
    when Δ = 0; ``p`` is ``p_raw`` after the correction. ``mean`` and ``ci`` (half-width of the 95 % interval) are
    the bootstrap's (``bs`` only).
    """

    system: str
    metric: str
    score: float
    delta: float
    p: float | None = None
    p_raw: float | None = None
    p_sacrebleu: float | None = None
    mean: float | None = None
    ci: float | None = None
    higher_is_better: bool = True


@dataclass(frozen=True)
class PairedResult:
    """A paired test of every system against the baseline, for every metric (rows: systems in the given order)."""

    test: str
    n_samples: int
    seed: int
    baseline: str
    correction: str | None
    metrics: tuple[str, ...]
    rows: tuple[PairedRow, ...]
    signatures: dict[str, str] = field(default_factory=dict)  # per metric: sacrebleu's, as PairedTest gives it
    signature: str = ""

    def get(self, system: str, metric: str) -> PairedRow:
        """The row of ``system`` and ``metric``."""
        for r in self.rows:
            if r.system == system and r.metric == metric:
                return r
        raise XltError(f"no row for system {system!r} and metric {metric!r}",
                       f"systems: {sorted({r.system for r in self.rows})}; metrics: {list(self.metrics)}")

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def _check_systems(refs, systems, baseline) -> tuple[list[str], dict[str, list[str]]]:
    refs = _check_lines(refs, "the references")
    if not refs:
        raise XltError("no lines to test: the references are empty", "give at least one reference line")
    if not isinstance(systems, Mapping) or len(systems) < 2:
        n = len(systems) if isinstance(systems, Mapping) else 0
        raise XltError(f"a paired test needs the baseline and at least one other system; got {n} system(s)",
                       "pass systems={'baseline': lines, 'other': lines, ...}")
    if baseline not in systems:
        raise XltError(f"the baseline {baseline!r} is not one of the systems {list(systems)}",
                       "name the baseline by its key in `systems`")
    out = {}
    for name, lines in systems.items():
        if not isinstance(name, str):
            raise XltError(f"system names must be strings, not {type(name).__name__} ({name!r})",
                           "key `systems` by the systems' names")
        lines = _check_lines(lines, f"system {name!r}")
        if len(lines) != len(refs):
            raise XltError(f"system {name!r} has {len(lines)} lines but there are {len(refs)} references",
                           "give every system exactly one line per reference, in the same order")
        out[name] = lines
    return refs, out


def paired_test(refs: list[str], systems: Mapping[str, list[str]], baseline: str, test: str = "bs",
                n_samples: int | None = None, seed: int = 12345, metrics: Sequence[str] = METRICS,
                correction: str | None = None) -> PairedResult:
    """Paired bootstrap (``bs``) or approximate randomisation (``ar``) test of every system against ``baseline``.

    p-values, bootstrap means and CIs equal sacrebleu ``PairedTest``'s with ``SACREBLEU_SEED=seed`` (but p = 1
    when Δ = 0, see the module docstring). ``correction`` (``bonferroni`` or ``holm``) adjusts, per metric, the
    p-values of the systems compared with the baseline (m = number of systems − 1).
    """
    if test not in TESTS:
        raise XltError(f"unknown paired test {test!r}",
                       "use 'bs' (paired bootstrap) or 'ar' (approximate randomisation)")
    if correction not in CORRECTIONS:
        raise XltError(f"unknown correction {correction!r}", "use None, 'bonferroni' or 'holm'")
    n_samples = DEFAULT_SAMPLES[test] if n_samples is None else n_samples
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise XltError(f"n_samples must be a positive integer, not {n_samples!r}",
                       f"pass e.g. {DEFAULT_SAMPLES[test]} (or None for sacrebleu's default)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise XltError(f"seed must be a non-negative integer, not {seed!r}", "pass e.g. seed=12345 (sacrebleu's)")
    n_samples, seed = int(n_samples), int(seed)
    metrics = _check_metrics(metrics)
    refs, systems = _check_systems(refs, systems, baseline)
    _sacrebleu()

    ref_key = _digest(refs)
    keys = {name: _digest(lines) for name, lines in systems.items()}
    stats = {m: _statistics(m, refs, systems, ref_key, keys) for m in metrics}
    others = [s for s in systems if s != baseline]
    order = [baseline] + others
    n = len(refs)

    scores = {}  # (system, metric) -> actual corpus score
    for m in metrics:
        metric = _base_signature(m)
        for s in order:
            scores[s, m] = _corpus_score(metric, stats[m][s])

    rng = np.random.default_rng(seed)
    resampled: dict[tuple[str, str], np.ndarray] = {}
    pvals: dict[tuple[str, str], float] = {}
    if test == "bs":
        idx = rng.choice(n, size=(n_samples, n), replace=True)
        cols = [(s, m) for m in metrics for s in order]
        sums = _bootstrap_sums(idx, [stats[m][s].values for s, m in cols])
        for (s, m), total in zip(cols, sums):
            if total.max(initial=0) < _F32_EXACT:  # sacrebleu's float32 sums are exact: same values
                resampled[s, m] = resample_scores(m, total, np.float32)
            else:  # sacrebleu's float32 sums round: do exactly what it does
                st32 = stats[m][s].values.astype(np.float32)
                resampled[s, m] = resample_scores(m, np.stack([st32[i].sum(0) for i in idx]), np.float32)
        for m in metrics:
            for s in others:
                sample_diffs = np.abs(resampled[s, m] - resampled[baseline, m])
                centred = sample_diffs - sample_diffs.mean()
                pvals[s, m] = _p_value(centred, abs(scores[baseline, m] - scores[s, m]))
    else:
        pos = rng.integers(2, size=(n_samples, n), dtype=bool)
        cols = [(s, m) for m in metrics for s in others]
        diffs = _swap_sums(pos, [stats[m][baseline].values - stats[m][s].values for s, m in cols])
        for (s, m), d in zip(cols, diffs):
            bl, sy = stats[m][baseline], stats[m][s]
            kind = np.result_type(np.bool_, bl.kind, sy.kind)  # bool mask @ sacrebleu's statistics
            a = resample_scores(m, sy.values.sum(0) + d, kind)  # pos @ baseline + ~pos @ system
            b = resample_scores(m, bl.values.sum(0) - d, kind)  # ~pos @ baseline + pos @ system
            pvals[s, m] = _p_value(np.abs(a - b), abs(scores[baseline, m] - scores[s, m]))

    rows = []
    adjusted = {}
    for m in metrics:
        raw = [1.0 if scores[s, m] == scores[baseline, m] else pvals[s, m] for s in others]
        adj = raw if correction is None else bonferroni(raw) if correction == "bonferroni" else holm(raw)
        adjusted.update({(s, m): (r, a) for s, r, a in zip(others, raw, adj)})
    for s in order:
        for m in metrics:
            mean = ci = None
            if test == "bs":
                mean, ci = estimate_ci(resampled[s, m])
            p_raw, p = adjusted.get((s, m), (None, None))
            rows.append(PairedRow(s, m, scores[s, m], scores[s, m] - scores[baseline, m], p, p_raw,
                                  pvals.get((s, m)), mean, ci, m != "ter"))

    sigs = {}
    for m in metrics:
        sig = _base_signature(m).get_signature()
        sig.update("seed", str(seed))
        sig.update(test, n_samples)
        sigs[m] = sig.format()
    from xlt.signature import Signature

    signature = str(Signature("paired", test=test, n=n_samples, seed=seed, correction=correction or "none",
                              baseline=baseline, systems=len(systems), lines=n, refs=ref_key[:12],
                              sacrebleu=_sacrebleu().__version__))
    return PairedResult(test, n_samples, seed, baseline, correction, metrics, tuple(rows), sigs, signature)


def _chunk_rows(n_cols: int) -> int:
    return max(1, (1 << 23) // max(1, n_cols))  # ~64 MiB of float64 per block


def _bootstrap_sums(idx: np.ndarray, stats: list[np.ndarray]) -> list[np.ndarray]:
    """Summed statistics of every resample (rows of ``idx``) for each matrix in ``stats``: counts @ statistics."""
    n_samples, n = idx.shape
    z = np.concatenate(stats, axis=1)
    out = np.empty((n_samples, z.shape[1]))
    step = _chunk_rows(n)
    for lo in range(0, n_samples, step):
        block = idx[lo:lo + step]
        rows = len(block)
        counts = np.bincount((block + (np.arange(rows) * n)[:, None]).ravel(), minlength=rows * n)
        out[lo:lo + rows] = counts.reshape(rows, n).astype(np.float64) @ z  # integers: exact
    return np.split(out, np.cumsum([s.shape[1] for s in stats])[:-1], axis=1)


def _swap_sums(pos: np.ndarray, diffs: list[np.ndarray]) -> list[np.ndarray]:
    """``pos @ d`` for each (baseline − system) statistics matrix ``d``, exact, in float32 where that is exact."""
    n_samples, n = pos.shape
    z = np.concatenate(diffs, axis=1)
    dtype = np.float32 if np.abs(z).sum(axis=0).max(initial=0) < _F32_EXACT else np.float64
    zt = z.astype(dtype)
    out = np.empty((n_samples, z.shape[1]))
    step = _chunk_rows(n)
    for lo in range(0, n_samples, step):
        out[lo:lo + step] = pos[lo:lo + step].astype(dtype) @ zt
    return np.split(out, np.cumsum([d.shape[1] for d in diffs])[:-1], axis=1)
