"""LangRank: learning to rank source (transfer) languages for a target language (Lin et al., ACL 2019).

Input: a transfer table as a plain :class:`pandas.DataFrame`, one row per (source, target) pair, with columns
``source``, ``target``, ``score`` (already oriented: higher is better) and numeric feature columns (NaN allowed),
plus the list of feature names. Each target is one *query*; its rows are the *candidates*.

**Relevance labels** (:func:`relevance_labels`). Within one target, the candidates are ranked by score, best first;
rank r is the competition ("min") rank ``1 + #{candidates with a strictly higher score}``, so tied scores share the
better rank and the same label (the rule of the URIEL+ authors' LangRank evaluator, ``Swithord/langrank``
``evaluator.py``: ``rank(method='min', ascending=False)``); the result does not depend on row order. With ``top=10``:

- LangRank's code (``neulab/langrank`` at ``6982a55``, ``langrank.py``: ``prepare_train_file`` and
  ``lgbm_rel_exp``) sets ``level = #langs - rank`` (the task language itself holds rank 0), cutoff ``#langs - 10``,
  relevance ``level - cutoff + 1`` when ``level >= cutoff`` else 0, i.e. ``max(0, 11 - r)`` for candidate rank r:
  the top 10 get 10 ... 1 and the rest 0, and **with n < 10 candidates the labels are 10 ... 11 - n** (the best
  candidate always gets 10). This is ``style="langrank"``.
- ``style="dense"`` (the default) is the same for n >= 10 but gives **n ... 1** when there are n < 10 candidates:
  label ``max(0, min(n, top) + 1 - r)``. A user's own transfer table often has fewer than 10 sources per target;
  with LangRank's rule their labels would be 10, 9, 8, ... and a linear-gain NDCG would sit near 1 for any ranking,
  which hides the difference between rankers. With the exponential gain both rules give nearly the same NDCG.

**Model** (:class:`Ranker`). LangRank's ``train()``: ``lightgbm.LGBMRanker(boosting_type="gbdt", num_leaves=16,
max_depth=-1, learning_rate=0.1, n_estimators=100, min_child_samples=5)``, LightGBM's LambdaRank objective (its
default label gain ``2**label - 1``), one query group per target. Missing feature values stay NaN and go to
LightGBM's own missing-value handling. Rows are sorted by (target, source) before fitting, so the model does not
depend on the frame's row order; ``seed`` is LightGBM's ``random_state``, ``deterministic=True`` and ``n_jobs=1``
by default. Scores are LightGBM's raw scores; :meth:`Ranker.reasons` splits each into per-feature contributions
(``pred_contrib=True``, TreeSHAP) whose sum plus the bias equals the raw score (checked to 1e-6), as LangRank's
``rank()`` prints its top-3 reasons.

**Evaluation** (:func:`loto_ndcg`): leave one target out: fit on the other targets, rank the held-out target's
sources, NDCG@k against the relevance labels (the paper reports NDCG@3 over leave-one-out folds). NDCG
(:func:`ndcg_at_k`): DCG@k = sum over the first k positions of gain / log2(position + 1); gain is the label itself
(``gain="linear"``, as ``sklearn.metrics.ndcg_score``, which the URIEL+ evaluator uses) or ``2**label - 1``
(``"exponential"``, LightGBM's convention); tied predicted scores share the mean gain of their block (the expected
DCG over random tie-breaking, the same as ``ndcg_score(ignore_ties=False)``); NDCG = DCG / ideal DCG, and 0 when
the ideal DCG is 0. Which gain the paper's NDCG used was not retrieved.

Baselines, in the same table:

- ``random``: the exact expected NDCG@k of a uniformly random ranking. Every position holds each candidate with
  probability 1/n, so E[DCG@k] = mean(gain) * sum of the first min(k, n) discounts.
- ``feature:<name>``: one feature as the ranking. Its sign is chosen per fold on the *training* targets: the sign
  (-1: smaller is better, as for a distance; +1: larger is better) with the higher mean NDCG@k there; a tie picks
  -1. A NaN value ranks last. LangRank's own single-feature baselines fix the sign by hand per feature.
- ``ols``: least squares of score on the features with an intercept, a NaN replaced by the training mean of its
  column (0 when the column has no value in training), ranking by the prediction.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from xlt.errors import XltError
from xlt.options import as_dict, build, option, positive

#: the file names of a saved ranker
MODEL_FILE = "model.txt"
META_FILE = "ranker.json"
FORMAT = "xlt.predict.ranker"
FORMAT_VERSION = 1

#: column names a feature may not take (they are the table's own columns or the outputs' columns)
RESERVED = ("source", "target", "score", "rank", "bias", "relevance")


# -- relevance labels and NDCG --------------------------------------------------------------------------------
def relevance_labels(frame: pd.DataFrame, top: int = 10, style: Literal["dense", "langrank"] = "dense",
                     score: str = "score") -> pd.Series:
    """LangRank's graded relevance of each row within its target (module docstring): integer labels, indexed like
    ``frame``. ``style="dense"``: ``max(0, min(n, top) + 1 - r)``; ``"langrank"``: ``max(0, top + 1 - r)``, with r
    the competition rank of the row's score among its target's n rows (ties share the better rank)."""
    _check_columns(frame, [], score=score)
    if not isinstance(top, (int, np.integer)) or isinstance(top, bool) or top < 1:
        raise XltError(f"relevance_labels: top must be a positive integer, got {top!r}", "use top=10 (LangRank)")
    if style not in ("dense", "langrank"):
        raise XltError(f"relevance_labels: unknown style {style!r}", "use style='dense' or style='langrank'")
    out = pd.Series(0, index=frame.index, name="relevance", dtype=np.int64)
    for _, rows in frame.groupby("target", sort=True):
        r = rows[score].rank(method="min", ascending=False).to_numpy()
        m = top if style == "langrank" else min(len(rows), top)
        out.loc[rows.index] = np.maximum(0, m + 1 - r).astype(np.int64)
    return out


def _gains(relevance: np.ndarray, gain: str) -> np.ndarray:
    if gain == "linear":
        return relevance.astype(float)
    if gain == "exponential":
        return np.exp2(relevance.astype(float)) - 1.0
    raise XltError(f"unknown NDCG gain {gain!r}", "use gain='linear' or gain='exponential'")


def _discounts(n: int, k: int) -> np.ndarray:
    d = 1.0 / np.log2(np.arange(n, dtype=float) + 2.0)
    d[k:] = 0.0
    return d


def _check_ndcg_inputs(relevance, k: int) -> np.ndarray:
    rel = np.asarray(relevance, dtype=float)
    if rel.ndim != 1 or rel.size == 0:
        raise XltError("NDCG needs a non-empty 1-d vector of relevance labels", "pass one target's labels")
    if np.isnan(rel).any() or (rel < 0).any():
        raise XltError("NDCG relevance labels must be non-negative numbers", "use relevance_labels() for labels")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise XltError(f"NDCG cut-off k must be a positive integer, got {k!r}", "use k=3 (LangRank's NDCG@3)")
    return rel


def _tie_averaged_dcg(gains: np.ndarray, scores: np.ndarray, k: int) -> float:
    cum = np.cumsum(_discounts(len(gains), k))
    _, inv, counts = np.unique(-scores, return_inverse=True, return_counts=True)  # blocks of tied scores, best first
    mean_gain = np.bincount(inv.ravel(), weights=gains, minlength=len(counts)) / counts
    block_discount = np.diff(np.concatenate([[0.0], cum[np.cumsum(counts) - 1]]))
    return float((mean_gain * block_discount).sum())


def ideal_dcg(relevance, k: int = 3, gain: Literal["linear", "exponential"] = "linear") -> float:
    """DCG@k of the best ordering of ``relevance``."""
    g = np.sort(_gains(_check_ndcg_inputs(relevance, k), gain))[::-1]
    return float((g * _discounts(len(g), k)).sum())


def ndcg_at_k(relevance, scores, k: int = 3, gain: Literal["linear", "exponential"] = "linear") -> float:
    """NDCG@k of ranking by ``scores`` (higher first) against graded ``relevance`` (module docstring; ties in
    ``scores`` share their block's mean gain; NaN scores rank last)."""
    rel = _check_ndcg_inputs(relevance, k)
    s = np.asarray(scores, dtype=float)
    if s.shape != rel.shape:
        raise XltError(f"NDCG: {s.size} scores for {rel.size} relevance labels", "give one score per candidate")
    s = np.where(np.isnan(s), -np.inf, s)
    g = _gains(rel, gain)
    ideal = ideal_dcg(rel, k, gain)
    return 0.0 if ideal == 0 else _tie_averaged_dcg(g, s, k) / ideal


def expected_random_ndcg(relevance, k: int = 3, gain: Literal["linear", "exponential"] = "linear") -> float:
    """The exact expected NDCG@k of a uniformly random ordering: mean(gain) * (sum of the first min(k, n)
    discounts) / ideal DCG@k."""
    rel = _check_ndcg_inputs(relevance, k)
    ideal = ideal_dcg(rel, k, gain)
    if ideal == 0:
        return 0.0
    return float(_gains(rel, gain).mean() * _discounts(len(rel), k).sum() / ideal)


# -- frame checks ---------------------------------------------------------------------------------------------
def _check_columns(frame: pd.DataFrame, features: Sequence[str], score: str | None = "score",
                   keys: Sequence[str] | None = ("target", "source")) -> None:
    """``frame`` has the key columns (no pair repeated), a numeric ``score`` without NaN and numeric features."""
    if not isinstance(frame, pd.DataFrame):
        raise XltError(f"expected a pandas DataFrame, got {type(frame).__name__}",
                       "pass the transfer table as a DataFrame with columns source, target, score and the features")
    need = list(keys or []) + ([score] if score else [])
    missing = [c for c in need + list(features) if c not in frame.columns]
    if missing:
        raise XltError(f"the table has no column(s) {', '.join(map(repr, missing))}",
                       f"give a table with columns {', '.join(need)} and every feature")
    bad = [f for f in features if not (pd.api.types.is_numeric_dtype(frame[f]) or pd.api.types.is_bool_dtype(frame[f]))]
    if bad:
        raise XltError(f"feature column(s) {', '.join(map(repr, bad))} are not numeric",
                       "convert them to numbers (NaN for a missing value) or leave them out of the feature list")
    if score and not pd.api.types.is_numeric_dtype(frame[score]):
        raise XltError(f"column {score!r} is not numeric", "give the transfer scores as numbers")
    if score and frame[score].isna().any():
        n = int(frame[score].isna().sum())
        raise XltError(f"{n} row(s) of the table have no {score!r} value",
                       "drop the pairs without a result before ranking or fitting")
    dup = frame.duplicated(list(keys), keep=False) if keys else pd.Series(False, index=frame.index)
    if dup.any():
        first = frame.loc[dup, keys].iloc[0].tolist()
        raise XltError(f"{int(dup.sum())} rows repeat a ({', '.join(keys)}) pair, e.g. {first}",
                       "keep one row per pair (average repeated runs first)")


def _check_features(features: Sequence[str]) -> list[str]:
    if isinstance(features, str) or not features:
        raise XltError("the feature list is empty or a single string", "pass a list of feature column names")
    features = [str(f) for f in features]
    if len(set(features)) != len(features):
        raise XltError("the feature list names a column twice", "list each feature once")
    clash = [f for f in features if f in RESERVED]
    if clash:
        raise XltError(f"feature name(s) {', '.join(map(repr, clash))} are reserved",
                       f"rename those columns; reserved: {', '.join(RESERVED)}")
    return features


def _matrix(frame: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    return frame[list(features)].to_numpy(dtype=float, na_value=np.nan)


def _lightgbm():
    try:
        import lightgbm
    except ImportError:
        raise XltError("the LangRank ranker needs the 'lightgbm' package", "pip install lightgbm") from None
    return lightgbm


# -- the ranker -----------------------------------------------------------------------------------------------
def _max_depth(v) -> str | None:
    return None if v == -1 or v >= 1 else f"must be -1 (no limit) or >= 1, got {v}"


def _leaves(v) -> str | None:
    return None if v >= 2 else f"must be >= 2, got {v}"


def _label_top(v) -> str | None:
    return None if 1 <= v <= 30 else f"must be in [1, 30] (LightGBM's default label gain has 31 levels), got {v}"


def _jobs(v) -> str | None:
    return None if v >= 1 or v == -1 else f"must be >= 1 or -1 (all cores), got {v}"


@dataclass
class RankerOptions:
    """LangRank's LightGBM settings (``neulab/langrank`` ``train()``) and the relevance labelling."""

    num_leaves: int = option(16, "leaves per tree (LangRank: 16)", check=_leaves)
    max_depth: int = option(-1, "tree depth limit, -1 for none (LangRank: -1)", check=_max_depth)
    learning_rate: float = option(0.1, "shrinkage per tree (LangRank: 0.1)", check=positive)
    n_estimators: int = option(100, "boosting rounds (LangRank: 100)", check=positive)
    min_child_samples: int = option(5, "fewest rows in a leaf (LangRank: 5)", check=positive)
    seed: int = option(0, "LightGBM's random_state")
    deterministic: bool = option(True, "LightGBM's deterministic mode (same model on every run)")
    n_jobs: int = option(1, "LightGBM threads (-1: all cores)", check=_jobs)
    top: int = option(10, "candidates per target given a non-zero relevance label (LangRank: 10)", check=_label_top)
    labels: Literal["dense", "langrank"] = option(
        "dense", "relevance with n < top candidates: dense gives n..1, langrank 10..11-n (LangRank's code)")


class Ranker:
    """A LambdaRank model over (source, target) pairs: :meth:`fit`, :meth:`score`, :meth:`rank`, :meth:`reasons`,
    :meth:`save` / :meth:`load` (module docstring). ``Ranker(num_leaves=8)`` or ``Ranker(RankerOptions(...))``."""

    def __init__(self, options: RankerOptions | None = None, **values: Any):
        if options is not None and values:
            raise XltError("give the ranker either an options object or option values, not both",
                           "pass Ranker(RankerOptions(...)) or Ranker(name=value, ...)")
        self.options = options if options is not None else build(RankerOptions, values, "the LangRank ranker")
        self.features: list[str] | None = None
        self.booster = None
        self.targets: list[str] = []
        self.metadata: dict = {}

    # - training ---------------------------------------------------------------------------------------------
    def lgbm_params(self) -> dict:
        """The keyword arguments given to ``lightgbm.LGBMRanker``."""
        o = self.options
        return dict(boosting_type="gbdt", objective="lambdarank", num_leaves=o.num_leaves, max_depth=o.max_depth,
                    learning_rate=o.learning_rate, n_estimators=o.n_estimators,
                    min_child_samples=o.min_child_samples, random_state=o.seed, deterministic=o.deterministic,
                    n_jobs=o.n_jobs, verbose=-1)

    def fit(self, frame: pd.DataFrame, features: Sequence[str]) -> Ranker:
        """Fit on every target of ``frame`` (one query group each)."""
        lgb = _lightgbm()
        features = _check_features(features)
        _check_columns(frame, features)
        data = frame.sort_values(["target", "source"], kind="mergesort")
        sizes = data.groupby("target", sort=True).size()
        if len(data) == 0 or sizes.max() < 2:
            raise XltError("no target of the table has two or more sources, so there is nothing to rank",
                           "give at least one target with several source results")
        labels = relevance_labels(data, self.options.top, self.options.labels)
        model = lgb.LGBMRanker(**self.lgbm_params())
        model.fit(_matrix(data, features), labels.to_numpy(), group=sizes.to_numpy())
        self.booster = model.booster_
        self.features = features
        self.targets = [str(t) for t in sizes.index]
        return self

    def _ready(self) -> None:
        if self.booster is None or self.features is None:
            raise XltError("the ranker is not fitted", "call fit(frame, features) or Ranker.load(folder) first")

    def score(self, frame: pd.DataFrame) -> pd.Series:
        """LightGBM's raw score of each row (higher: a better source for that row's target), indexed like
        ``frame``."""
        self._ready()
        _check_columns(frame, self.features, score=None, keys=None)
        raw = self.booster.predict(_matrix(frame, self.features), raw_score=True)
        return pd.Series(np.asarray(raw, dtype=float), index=frame.index, name="score")

    def _candidates(self, target: str, candidates: pd.DataFrame) -> pd.DataFrame:
        self._ready()
        if not isinstance(candidates, pd.DataFrame):
            raise XltError(f"expected a pandas DataFrame of candidates, got {type(candidates).__name__}",
                           "pass one row per candidate source with the feature columns")
        rows = candidates
        if "target" in candidates.columns:
            rows = candidates[candidates["target"].astype(str) == str(target)]
            if rows.empty:
                raise XltError(f"the candidate table has no row for target {target!r}",
                               "give the target's (source, target) rows with their features")
        _check_columns(rows, self.features, score=None, keys=("source",))
        if rows.empty:
            raise XltError("the candidate table is empty", "give one row per candidate source")
        return rows

    def rank(self, target: str, candidates: pd.DataFrame) -> pd.DataFrame:
        """The candidate sources of ``target``, best first: columns ``target, source, score, rank`` (rank 1 is the
        best; equal scores are ordered by source name). ``candidates`` holds one row per source with the feature
        columns; when it has a ``target`` column, only that target's rows are used."""
        rows = self._candidates(target, candidates)
        out = pd.DataFrame({"target": str(target), "source": rows["source"].to_numpy(),
                            "score": self.score(rows).to_numpy()})
        out = out.sort_values(["score", "source"], ascending=[False, True], kind="mergesort").reset_index(drop=True)
        out["rank"] = np.arange(1, len(out) + 1)
        return out

    def reasons(self, target: str, candidates: pd.DataFrame) -> pd.DataFrame:
        """Per-feature contributions to each candidate's score (LightGBM ``pred_contrib=True``), in :meth:`rank`'s
        order: columns ``target, source, score, rank``, one column per feature and ``bias``; each row's features
        plus ``bias`` sum to ``score`` (checked to 1e-6)."""
        rows = self._candidates(target, candidates)
        x = _matrix(rows, self.features)
        contrib = np.asarray(self.booster.predict(x, pred_contrib=True), dtype=float)
        raw = np.asarray(self.booster.predict(x, raw_score=True), dtype=float)
        gap = float(np.max(np.abs(contrib.sum(axis=1) - raw)))
        if not gap <= 1e-6:
            raise XltError(f"LightGBM's feature contributions miss the raw score by {gap:.3g} (> 1e-6)",
                           "report this with the saved ranker; use rank() meanwhile")
        out = pd.DataFrame(contrib[:, :-1], columns=self.features)
        out.insert(0, "source", rows["source"].to_numpy())
        out.insert(0, "target", str(target))
        out.insert(2, "score", raw)
        out["bias"] = contrib[:, -1]
        out = out.sort_values(["score", "source"], ascending=[False, True], kind="mergesort").reset_index(drop=True)
        out.insert(3, "rank", np.arange(1, len(out) + 1))
        return out

    # - persistence ------------------------------------------------------------------------------------------
    def save(self, folder: str | Path, metadata: dict | None = None) -> Path:
        """Write ``model.txt`` (LightGBM's text model) and ``ranker.json`` (format, features, options, training
        targets, LightGBM version and the caller's ``metadata``, e.g. the URIEL+ version or the table's hash) to
        ``folder``, through a temporary folder and a rename. An existing folder is replaced only when it is a
        saved ranker (or empty)."""
        from xlt.util import atomic_dir

        self._ready()
        lgb = _lightgbm()
        meta = dict(self.metadata if metadata is None else metadata)
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as e:
            raise XltError(f"the ranker's metadata is not JSON: {e}", "give metadata as plain str/number/list/dict") \
                from None
        folder = Path(folder)
        if folder.exists() and not (folder.is_dir() and (not any(folder.iterdir()) or (folder / META_FILE).is_file())):
            raise XltError(f"{folder} exists and is not a saved ranker, so it is not replaced",
                           "choose a new folder (or remove that one)")
        info = {"format": FORMAT, "version": FORMAT_VERSION, "features": self.features,
                "options": as_dict(self.options), "targets": self.targets, "lightgbm": lgb.__version__,
                "metadata": meta}
        with atomic_dir(folder, overwrite=True) as tmp:
            (tmp / MODEL_FILE).write_text(self.booster.model_to_string(), encoding="utf-8")
            (tmp / META_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        self.metadata = meta
        return folder

    @classmethod
    def load(cls, folder: str | Path, features: Sequence[str] | None = None,
             frame: pd.DataFrame | None = None) -> Ranker:
        """A ranker written by :meth:`save`. Refused: a folder without ``ranker.json`` and ``model.txt`` of this
        format; ``features`` that differ from the saved list (names and order); a ``frame`` that lacks one of the
        saved features."""
        lgb = _lightgbm()
        folder = Path(folder)
        meta_path, model_path = folder / META_FILE, folder / MODEL_FILE
        if not (meta_path.is_file() and model_path.is_file()):
            raise XltError(f"{folder} is not a saved ranker (it needs {META_FILE} and {MODEL_FILE})",
                           "give a folder written by Ranker.save (xlt predict fit)")
        try:
            info = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise XltError(f"{meta_path} cannot be read as JSON: {e}", "save the ranker again") from None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise XltError(f"{meta_path} is not an xlt ranker description (format {info.get('format')!r})"
                           if isinstance(info, dict) else f"{meta_path} is not an xlt ranker description",
                           "give a folder written by Ranker.save")
        if info.get("version") != FORMAT_VERSION:
            raise XltError(f"{folder} holds ranker format version {info.get('version')!r}; this xlt reads "
                           f"{FORMAT_VERSION}", "save the ranker again with this xlt")
        saved = [str(f) for f in info.get("features") or []]
        if features is not None and list(features) != saved:
            extra = [f for f in features if f not in saved]
            lost = [f for f in saved if f not in features]
            detail = (f"new: {extra}; " if extra else "") + (f"missing: {lost}; " if lost else "") + \
                ("same names in another order; " if not extra and not lost else "")
            raise XltError(f"the ranker in {folder} was trained on other features ({detail}saved: {saved})",
                           "use the feature list it was trained with, or fit a new ranker")
        if frame is not None:
            lost = [f for f in saved if f not in frame.columns]
            if lost:
                raise XltError(f"the table lacks feature(s) {lost} that the ranker in {folder} was trained on",
                               "compute those features for the table, or fit a new ranker")
        ranker = cls(build(RankerOptions, info.get("options") or {}, f"the ranker in {folder}"))
        try:
            ranker.booster = lgb.Booster(model_file=str(model_path))
        except Exception as e:  # lightgbm raises its own LightGBMError
            raise XltError(f"{model_path} is not a LightGBM text model: {e}", "save the ranker again") from None
        if ranker.booster.num_feature() != len(saved):
            raise XltError(f"{model_path} has {ranker.booster.num_feature()} features but {META_FILE} lists "
                           f"{len(saved)}", "save the ranker again")
        ranker.features = saved
        ranker.targets = [str(t) for t in info.get("targets") or []]
        ranker.metadata = dict(info.get("metadata") or {})
        return ranker


# -- baselines and leave-one-target-out evaluation --------------------------------------------------------------
class LinearBaseline:
    """Least squares of ``score`` on the features plus an intercept; a NaN is replaced by its column's training
    mean (0 when the column has no training value). ``coef`` and ``intercept`` after :meth:`fit`."""

    def fit(self, frame: pd.DataFrame, features: Sequence[str], score: str = "score") -> LinearBaseline:
        features = _check_features(features)
        _check_columns(frame, features, score=score)
        x = _matrix(frame, features)
        counts = (~np.isnan(x)).sum(axis=0)
        means = np.where(counts > 0, np.nansum(x, axis=0) / np.maximum(counts, 1), 0.0)
        a = np.column_stack([np.ones(len(x)), np.where(np.isnan(x), means, x)])
        beta, *_ = np.linalg.lstsq(a, frame[score].to_numpy(dtype=float), rcond=None)
        self.features = features
        self.means = pd.Series(means, index=features)
        self.intercept = float(beta[0])
        self.coef = pd.Series(beta[1:], index=features)
        return self

    def predict(self, frame: pd.DataFrame) -> pd.Series:
        x = _matrix(frame, self.features)
        x = np.where(np.isnan(x), self.means.to_numpy(), x)
        return pd.Series(self.intercept + x @ self.coef.to_numpy(), index=frame.index, name="prediction")


def _feature_scores(values: np.ndarray, sign: int) -> np.ndarray:
    return np.where(np.isnan(values), -np.inf, sign * values)


def choose_sign(frame: pd.DataFrame, feature: str, labels: pd.Series, k: int = 3,
                gain: Literal["linear", "exponential"] = "linear") -> int:
    """+1 (larger is better) or -1 (smaller is better, as for a distance): the sign whose ranking by ``feature``
    has the higher mean NDCG@k over the targets of ``frame``; a tie gives -1."""
    means = {}
    for sign in (-1, 1):
        vals = [ndcg_at_k(labels.loc[rows.index].to_numpy(), _feature_scores(rows[feature].to_numpy(float), sign),
                          k, gain) for _, rows in frame.groupby("target", sort=True)]
        means[sign] = float(np.mean(vals))
    return 1 if means[1] > means[-1] else -1


def loto_ndcg(frame: pd.DataFrame, features: Sequence[str], k: int = 3, *, options: RankerOptions | None = None,
              gain: Literal["linear", "exponential"] = "linear", baselines: bool = True) -> pd.DataFrame:
    """Leave-one-target-out NDCG@k of the LangRank ranker and (``baselines=True``) the random, single-feature and
    OLS baselines (module docstring). Returns a tidy table, one row per (method, held-out target): ``method``
    (``langrank``, ``ols``, ``feature:<name>``, ``random``), ``target``, ``n_sources``, ``ndcg``, ``mean_ndcg``
    (the method's mean over targets) and ``sign`` (the chosen sign of a single-feature ranking, else NaN)."""
    features = _check_features(features)
    _check_columns(frame, features)
    options = options if options is not None else RankerOptions()
    _check_ndcg_inputs([1.0], k)
    _gains(np.zeros(1), gain)
    targets = sorted(frame["target"].unique(), key=str)
    if len(targets) < 2:
        raise XltError(f"leave-one-target-out needs at least 2 targets, the table has {len(targets)}",
                       "add transfer results for more target languages")
    labels = relevance_labels(frame, options.top, options.labels)
    rows: list[dict] = []
    for t in targets:
        test = frame[frame["target"] == t]
        train = frame[frame["target"] != t]
        rel = labels.loc[test.index].to_numpy()
        n = len(test)

        def add(method: str, value: float, sign: float = math.nan) -> None:
            rows.append({"method": method, "target": t, "n_sources": n, "ndcg": float(value), "sign": sign})

        if train.groupby("target").size().max() >= 2:
            ranker = Ranker(options).fit(train, features)
            add("langrank", ndcg_at_k(rel, ranker.score(test).to_numpy(), k, gain))
        else:
            raise XltError(f"without target {t!r} no training target has two or more sources",
                           "give more targets with several source results each")
        if not baselines:
            continue
        add("ols", ndcg_at_k(rel, LinearBaseline().fit(train, features).predict(test).to_numpy(), k, gain))
        for f in features:
            sign = choose_sign(train, f, labels, k, gain)
            add(f"feature:{f}", ndcg_at_k(rel, _feature_scores(test[f].to_numpy(float), sign), k, gain), sign)
        add("random", expected_random_ndcg(rel, k, gain))
    out = pd.DataFrame(rows, columns=["method", "target", "n_sources", "ndcg", "sign"])
    out.insert(4, "mean_ndcg", out.groupby("method", sort=False)["ndcg"].transform("mean"))
    order = {m: i for i, m in enumerate(dict.fromkeys(out["method"]))}
    out = out.sort_values(["method", "target"], key=lambda c: c.map(order) if c.name == "method" else c.astype(str),
                          kind="mergesort").reset_index(drop=True)
    return out
