"""xlt.predict.regression: OLS on standardised pair features with HC3 errors, per-pair contributions and the 0/1
features' Mann-Whitney comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from xlt.errors import XltError

sm = pytest.importorskip("statsmodels.api")

from xlt.predict.regression import fit_regression  # noqa: E402

FEATURES = ["syntax", "geo", "same_script"]
BETA = {"syntax": -12.0, "geo": 0.8, "same_script": 5.0}  # per raw unit of each feature
ALPHA = 40.0


def synthetic(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Score = ALPHA + sum(BETA * x) + noise whose spread grows with ``geo`` (heteroskedastic)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"source": [f"s{i % 20}" for i in range(n)], "target": [f"t{i // 20}" for i in range(n)],
                          "syntax": rng.uniform(0.1, 0.9, n), "geo": rng.uniform(0, 10, n),
                          "same_script": (rng.uniform(size=n) < 0.4).astype(int)})
    noise = rng.normal(0, 1 + 0.3 * frame["geo"].to_numpy())
    frame["score"] = ALPHA + sum(BETA[f] * frame[f] for f in FEATURES) + noise
    return frame


def design(frame: pd.DataFrame) -> np.ndarray:
    x = frame[FEATURES].to_numpy(float)
    return np.column_stack([np.ones(len(x)), (x - x.mean(0)) / x.std(0, ddof=1)])


def test_planted_coefficients_lie_in_their_intervals():
    frame = synthetic()
    res = fit_regression(frame, FEATURES)
    coef = res.coefficients
    assert list(coef.index) == ["intercept", *FEATURES]
    assert list(coef.columns) == ["coef", "se", "t", "p", "ci_low", "ci_high"]
    sd = frame[FEATURES].std(ddof=1)
    truth = {f: BETA[f] * sd[f] for f in FEATURES}  # per standard deviation
    truth["intercept"] = ALPHA + sum(BETA[f] * frame[f].mean() for f in FEATURES)
    for term, value in truth.items():
        assert coef.loc[term, "ci_low"] < value < coef.loc[term, "ci_high"], term
        assert np.sign(coef.loc[term, "coef"]) == np.sign(value)
    assert (coef["p"] < 1e-3).all()
    assert res.n == 240 and res.n_dropped == 0 and res.df_resid == 240 - 4 and res.cov_type == "HC3"
    np.testing.assert_allclose(res.sds.to_numpy(), sd.to_numpy())


def test_hc3_errors_equal_the_formula_and_statsmodels():
    frame = synthetic(60, seed=1)
    res = fit_regression(frame, FEATURES, alpha=0.1)
    z, y = design(frame), frame["score"].to_numpy()
    beta = np.linalg.lstsq(z, y, rcond=None)[0]
    e = y - z @ beta
    bread = np.linalg.inv(z.T @ z)
    h = np.einsum("ij,jk,ik->i", z, bread, z)
    hc3 = bread @ z.T @ np.diag(e ** 2 / (1 - h) ** 2) @ z @ bread
    np.testing.assert_allclose(res.coefficients["coef"].to_numpy(), beta, rtol=1e-10)
    np.testing.assert_allclose(res.coefficients["se"].to_numpy(), np.sqrt(np.diag(hc3)), rtol=1e-10)
    robust = sm.OLS(y, z).fit().get_robustcov_results("HC3")
    np.testing.assert_allclose(res.coefficients["se"].to_numpy(), robust.bse, rtol=1e-12)
    ref = sm.OLS(y, z).fit(cov_type="HC3", use_t=True)
    np.testing.assert_allclose(res.coefficients[["ci_low", "ci_high"]].to_numpy(), ref.conf_int(alpha=0.1),
                               rtol=1e-12)
    np.testing.assert_allclose(res.coefficients["p"].to_numpy(), ref.pvalues, rtol=1e-10)
    r2 = 1 - (e ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert res.r2 == pytest.approx(r2, abs=1e-12)
    assert res.r2_adj == pytest.approx(1 - (1 - r2) * (60 - 1) / (60 - 4), abs=1e-12)


def test_contributions_are_coef_times_z_and_sum_to_the_fit():
    frame = synthetic(50, seed=2)
    res = fit_regression(frame, FEATURES)
    c = res.contributions
    assert list(c.columns) == ["source", "target", "score", "fitted", *FEATURES]
    x = frame[FEATURES]
    want = (x - x.mean()) / x.std(ddof=1) * res.coefficients.loc[FEATURES, "coef"]
    np.testing.assert_allclose(c[FEATURES].to_numpy(), want.to_numpy(), rtol=1e-10, atol=1e-12)
    total = c[FEATURES].sum(axis=1) + res.coefficients.loc["intercept", "coef"]
    np.testing.assert_allclose(total.to_numpy(), c["fitted"].to_numpy(), rtol=1e-10)
    assert c["source"].tolist() == frame["source"].tolist()


def test_binary_feature_mean_difference_and_mann_whitney():
    frame = synthetic(80, seed=3)
    res = fit_regression(frame, FEATURES)
    assert res.binary["feature"].tolist() == ["same_script"]  # the continuous features are not 0/1
    row = res.binary.iloc[0]
    y1 = frame.loc[frame["same_script"] == 1, "score"].to_numpy()
    y0 = frame.loc[frame["same_script"] == 0, "score"].to_numpy()
    assert (row["n_1"], row["n_0"]) == (len(y1), len(y0))
    assert row["diff"] == pytest.approx(y1.mean() - y0.mean(), abs=1e-12)
    ref = mannwhitneyu(y1, y0, alternative="two-sided")
    assert row["u"] == ref.statistic and row["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert row["diff"] > 0  # the planted +5 for a shared script


def test_missing_values_are_dropped_and_counted_or_refused():
    frame = synthetic(40, seed=4)
    frame.loc[[3, 7, 8], "geo"] = np.nan
    frame.loc[11, "score"] = np.nan
    res = fit_regression(frame, FEATURES)
    assert (res.n, res.n_dropped) == (36, 4)
    ref = fit_regression(frame.drop(index=[3, 7, 8, 11]), FEATURES)
    np.testing.assert_allclose(res.coefficients.to_numpy(), ref.coefficients.to_numpy())
    with pytest.raises(XltError, match=r"4 row\(s\) have a missing value \(in score, geo\)"):
        fit_regression(frame, FEATURES, missing="refuse")


def test_refuses_too_few_rows_constant_and_degenerate_features():
    frame = synthetic(40, seed=5)
    with pytest.raises(XltError, match="4 parameters"):
        fit_regression(frame.iloc[:4], FEATURES)  # n = parameters: needs parameters + 1
    five = pd.DataFrame({"syntax": [0.1, 0.5, 0.3, 0.9, 0.7], "geo": [6.0, 4.0, 2.0, 8.0, 1.0],
                         "same_script": [0, 1, 1, 0, 1], "score": [3.0, 1.0, 4.0, 1.0, 5.0]})
    assert fit_regression(five, FEATURES).df_resid == 1  # parameters + 1 rows: accepted
    with pytest.raises(XltError, match="after dropping 2"):
        f = frame.iloc[:6].copy()
        f.loc[[0, 1], "syntax"] = np.nan
        fit_regression(f, FEATURES)
    const = frame.assign(geo=3.0)
    with pytest.raises(XltError, match="'geo'"):
        fit_regression(const, FEATURES)
    with pytest.raises(XltError, match="linearly dependent"):
        fit_regression(frame.assign(twice=2 * frame["syntax"] + 1), [*FEATURES, "twice"])
    single = frame.assign(only=0)
    single.loc[5, "only"] = 1
    with pytest.raises(XltError, match="leverage 1"):
        fit_regression(single, [*FEATURES, "only"])
    with pytest.raises(XltError, match="no column"):
        fit_regression(frame, ["syntax", "nope"])
    with pytest.raises(XltError, match="not numeric"):
        fit_regression(frame.assign(word=["a"] * 40), ["syntax", "word"])
    with pytest.raises(XltError, match="missing-value rule"):
        fit_regression(frame, FEATURES, missing="impute")
