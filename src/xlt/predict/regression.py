"""Regression studies of transfer results: which pair features go with better transfer (Muller et al. 2022,
"Languages You Know Influence Those You Learn"; Zubillaga et al. 2024, the Basque event-extraction study).

Input: a plain :class:`pandas.DataFrame`, one row per (source, target) pair, with a numeric ``score`` column
(higher is better) and numeric feature columns, plus the list of feature names. Neither paper's exact regression
specification or statistical test could be retrieved (only their abstracts: syntax, morphology and phonology
similarity predict transfer more than lexical similarity; a shared script and shared morphology help token-level
tasks), so the choices below are ours.

**Model** (:func:`fit_regression`). Ordinary least squares of the score on an intercept and the *standardised*
features: ``z_j = (x_j - mean_j) / sd_j`` with the mean and the sample standard deviation (ddof = 1) of the rows
used, so each coefficient is the change of the score (in its own units; the score is not standardised) per one
standard deviation of that feature, the coefficients of different features are comparable, and the intercept is
the mean score. Standard errors are White's heteroskedasticity-robust HC3 (MacKinnon & White 1985):
``cov = (Z'Z)^-1 Z' diag(e_i^2 / (1 - h_ii)^2) Z (Z'Z)^-1`` with residuals e and leverages h, as statsmodels'
``cov_type="HC3"``; t statistics, two-sided p-values and the (1 - alpha) confidence intervals use Student's t with
n - p degrees of freedom (``use_t=True``; statsmodels' default for robust covariances is the normal, which is too
narrow for tables of a few dozen pairs). R² and adjusted R² are the ordinary OLS ones.

**Contributions**: each pair's ``coef_j * z_j``; with the intercept they sum to the pair's fitted score.

**Binary features** (0/1 columns, e.g. same script; detected as: every value used is 0 or 1): the mean score of
the pairs with 1 minus the mean of the pairs with 0, and the two-sided Mann-Whitney U test of the two groups
(``scipy.stats.mannwhitneyu``, its default method: exact for small samples without ties, else the normal
approximation with tie correction). U is the statistic of the group with 1. Computed on the rows the regression
uses.

**Refused**, with an :class:`~xlt.errors.XltError`: a missing or non-numeric column; fewer rows than parameters
(features + intercept) + 1; a constant feature (named); features that are linear combinations of each other; a
pair with leverage 1 (HC3 divides by 1 - h, so it is undefined). **Missing values**: ``missing="drop"`` (default)
drops every row with a NaN in the score or a feature and reports how many (``n_dropped``); ``missing="refuse"``
raises instead, naming the columns with NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from xlt.errors import XltError

INTERCEPT = "intercept"


@dataclass
class RegressionResult:
    """What :func:`fit_regression` returns."""

    #: one row per term (``intercept`` first, then the features): coef, se (HC3), t, p, ci_low, ci_high
    coefficients: pd.DataFrame
    r2: float
    r2_adj: float
    #: rows used, rows dropped for a missing value, residual degrees of freedom
    n: int
    n_dropped: int
    df_resid: int
    #: the mean and sample standard deviation (ddof=1) that standardise each feature
    means: pd.Series
    sds: pd.Series
    #: per pair used: source/target when the table has them, score, fitted, and coef_j * z_j per feature
    contributions: pd.DataFrame
    #: per 0/1 feature: n_1, n_0, mean_1, mean_0, diff (mean_1 - mean_0), u (group 1's U), p (two-sided)
    binary: pd.DataFrame
    alpha: float = 0.05
    cov_type: str = "HC3"


def _statsmodels():
    try:
        import statsmodels.api as sm
    except ImportError:
        raise XltError("the regression study needs the 'statsmodels' package", "pip install statsmodels") from None
    return sm


def _check(frame: pd.DataFrame, features: Sequence[str], score: str) -> list[str]:
    if not isinstance(frame, pd.DataFrame):
        raise XltError(f"expected a pandas DataFrame, got {type(frame).__name__}",
                       "pass the transfer table as a DataFrame with a score column and the feature columns")
    if isinstance(features, str) or not features:
        raise XltError("the feature list is empty or a single string", "pass a list of feature column names")
    features = [str(f) for f in features]
    if len(set(features)) != len(features):
        raise XltError("the feature list names a column twice", "list each feature once")
    if score in features or INTERCEPT in features:
        raise XltError(f"a feature is named {score!r} or {INTERCEPT!r}", "rename that column")
    missing = [c for c in [score, *features] if c not in frame.columns]
    if missing:
        raise XltError(f"the table has no column(s) {', '.join(map(repr, missing))}",
                       f"give a table with a {score!r} column and every feature")
    bad = [c for c in [score, *features] if not (pd.api.types.is_numeric_dtype(frame[c])
                                                  or pd.api.types.is_bool_dtype(frame[c]))]
    if bad:
        raise XltError(f"column(s) {', '.join(map(repr, bad))} are not numeric",
                       "convert them to numbers (NaN for a missing value)")
    return features


def fit_regression(frame: pd.DataFrame, features: Sequence[str], score: str = "score", *,
                   missing: Literal["drop", "refuse"] = "drop", alpha: float = 0.05) -> RegressionResult:
    """OLS of ``score`` on the standardised ``features`` with HC3 errors, per-pair contributions and the 0/1
    features' Mann-Whitney comparisons (module docstring)."""
    sm = _statsmodels()
    from scipy.stats import mannwhitneyu

    features = _check(frame, features, score)
    if missing not in ("drop", "refuse"):
        raise XltError(f"unknown missing-value rule {missing!r}", "use missing='drop' or missing='refuse'")
    if not 0 < alpha < 1:
        raise XltError(f"alpha must be in (0, 1), got {alpha}", "use alpha=0.05 for 95% intervals")
    values = frame[[score, *features]].astype(float)
    complete = values.notna().all(axis=1).to_numpy()
    n_dropped = int((~complete).sum())
    if n_dropped and missing == "refuse":
        cols = [c for c in values.columns if values[c].isna().any()]
        raise XltError(f"{n_dropped} row(s) have a missing value (in {', '.join(cols)})",
                       "fill or drop those rows, or use missing='drop'")
    used = frame.loc[complete]
    x = values.loc[complete, features].to_numpy()
    y = values.loc[complete, score].to_numpy()
    n, p = len(y), len(features) + 1
    if n < p + 1:
        raise XltError(f"{n} row(s)" + (f" (after dropping {n_dropped} with a missing value)" if n_dropped else "")
                       + f" for {p} parameters ({len(features)} features + intercept); OLS with HC3 errors needs "
                       f"at least {p + 1}", "use fewer features or add transfer results")
    means = x.mean(axis=0)
    sds = x.std(axis=0, ddof=1)
    const = [f for f, s, col in zip(features, sds, x.T) if not s > 0 or np.all(col == col[0])]
    if const:
        raise XltError(f"feature(s) {', '.join(map(repr, const))} take a single value over the {n} rows used, so "
                       "their effect cannot be estimated", "leave them out of the feature list")
    z = (x - means) / sds
    design = np.column_stack([np.ones(n), z])
    if np.linalg.matrix_rank(design) < p:
        raise XltError(f"the features {features} are linearly dependent (one is a combination of others)",
                       "leave out a redundant feature")
    q, _ = np.linalg.qr(design)
    leverage = (q ** 2).sum(axis=1)
    if leverage.max() > 1 - 1e-10:
        i = int(np.argmax(leverage))
        who = (f" ({used['source'].iloc[i]} -> {used['target'].iloc[i]})"
               if {"source", "target"} <= set(used.columns) else "")
        raise XltError(f"row {i}{who} alone determines a coefficient (leverage 1), so HC3 errors are undefined",
                       "add pairs that share its feature values, or leave out the feature only it has")
    fit = sm.OLS(y, design).fit(cov_type="HC3", use_t=True)
    terms = [INTERCEPT, *features]
    ci = np.asarray(fit.conf_int(alpha=alpha))
    coefficients = pd.DataFrame({"coef": fit.params, "se": fit.bse, "t": fit.tvalues, "p": fit.pvalues,
                                 "ci_low": ci[:, 0], "ci_high": ci[:, 1]}, index=pd.Index(terms, name="term"))

    contrib = pd.DataFrame(z * fit.params[1:], columns=features)
    front = {c: used[c].to_numpy() for c in ("source", "target") if c in used.columns}
    front.update({"score": y, "fitted": fit.fittedvalues})
    contributions = pd.concat([pd.DataFrame(front), contrib], axis=1)

    binary = []
    for j, f in enumerate(features):
        col = x[:, j]
        if np.isin(col, (0.0, 1.0)).all():
            y1, y0 = y[col == 1], y[col == 0]
            test = mannwhitneyu(y1, y0, alternative="two-sided")
            binary.append({"feature": f, "n_1": len(y1), "n_0": len(y0), "mean_1": float(y1.mean()),
                           "mean_0": float(y0.mean()), "diff": float(y1.mean() - y0.mean()),
                           "u": float(test.statistic), "p": float(test.pvalue)})
    binary = pd.DataFrame(binary, columns=["feature", "n_1", "n_0", "mean_1", "mean_0", "diff", "u", "p"])
    return RegressionResult(coefficients=coefficients, r2=float(fit.rsquared), r2_adj=float(fit.rsquared_adj),
                            n=n, n_dropped=n_dropped, df_resid=int(round(fit.df_resid)),
                            means=pd.Series(means, index=features), sds=pd.Series(sds, index=features),
                            contributions=contributions, binary=binary, alpha=alpha)
