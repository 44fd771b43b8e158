"""Scaling laws (xlt.predict.scaling): planted parameters recovered from noisy points, f(1) = 1, inversions exact,
effective parameters rise with p, the Parallel Scaling Law's metrics, token efficiency, bootstrap, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from xlt.errors import XltError
from xlt.predict.scaling import (LAWS, f_weight, first_parallel_leap, fit_law, monolingual_gap, mti, read_points,
                                 token_efficiency)

N = np.geomspace(1e6, 1e9, 20)


def _noisy(y, rel, seed=0):
    return y * (1 + rel * np.random.default_rng(seed).standard_normal(len(y)))


def test_power_law_recovers_planted_parameters_and_inverts():
    L = 50 * N ** -0.3 + 1.5
    fit = fit_law("power", {"N": N, "L": _noisy(L, 0.001)})
    for k, v in {"beta": 50, "alpha": 0.3, "L_inf": 1.5}.items():
        assert fit.params[k] == pytest.approx(v, rel=0.05), fit.params
    assert fit.r2 > 0.999 and fit.n_points == 20 and fit.residuals.shape == (20,)
    for n in (1e5, 3e7, 2e10):
        assert fit.invert(fit.predict(n)) == pytest.approx(n, rel=1e-9)
    exact = fit_law("power", {"N": N, "L": L})
    assert exact.params["alpha"] == pytest.approx(0.3, rel=1e-6)
    no_offset = fit_law("power", {"N": N, "L": 50 * N ** -0.3}, offset=False)
    assert set(no_offset.params) == {"beta", "alpha"} and no_offset.params["beta"] == pytest.approx(50, rel=1e-6)


@pytest.mark.parametrize("form, c", [("fernandes", [0.5, 1.5, 1.0]), ("power", [0.7])])
def test_joint_law(form, c):
    for cc in ([0.0, 1.0, 1.0], [3.0, 0.2, 4.0], [0.5, 1.5, 1.0]) if form == "fernandes" else ([0.1], [2.0]):
        assert f_weight(1.0, cc, form) == pytest.approx(1.0, abs=1e-15)  # f(1) = 1 for any parameters
    Nj = np.repeat(np.geomspace(1e6, 1e9, 8), 3)
    p = np.tile([0.2, 0.5, 1.0], 8)
    L = 50 * (f_weight(p, c, form) * Nj) ** -0.3 + 1.5
    fit = fit_law("joint", {"N": Nj, "p": p, "L": _noisy(L, 0.0005)}, f_form=form)
    assert fit.params["alpha"] == pytest.approx(0.3, rel=0.05) and fit.params["L_inf"] == pytest.approx(1.5, rel=0.05)
    assert form.split()[0] in fit.to_json()["options"]["f_form"] and fit.to_json()["provisional"]
    n_eff = [fit.effective_params(fit.predict(1e8, q)) for q in (0.2, 0.5, 1.0)]
    assert n_eff[0] < n_eff[1] < n_eff[2] and n_eff[2] == pytest.approx(1e8, rel=1e-9)
    assert fit.invert(fit.predict(3e7, 0.5), 0.5) == pytest.approx(3e7, rel=1e-9)


def test_parallel_law_leap_gap_and_mti():
    n = np.arange(1, 8)
    fit = fit_law("parallel", {"N": n, "y": 40 * n ** 0.2})
    assert fit.params["a"] == pytest.approx(40, rel=1e-9) and fit.params["b"] == pytest.approx(0.2, rel=1e-9)
    assert fit.invert(fit.predict(5.0)) == pytest.approx(5.0, rel=1e-9)
    assert monolingual_gap(40.0, fit) == pytest.approx(0.0, abs=1e-9)  # s(0) on the curve (at N = 1)
    assert monolingual_gap(30.0, fit) == pytest.approx(10.0, rel=1e-9)
    assert first_parallel_leap({0: 30.0, 1: 40.0, 2: 45.0}) == 10.0
    before = {"en": 50.0, "de": 40.0, "sw": 20.0}
    equal = mti(before, {"en": 60.0, "de": 50.0, "sw": 30.0}, ["en"])
    assert equal["mti"] == pytest.approx(1.0) and equal["provisional"]
    assert mti(before, {"en": 60.0, "de": 45.0, "sw": 20.0}, ["en"])["mti"] == pytest.approx(0.25)


def test_data_law_token_efficiency_is_one_on_the_law():
    x = np.array([1 / 8, 1 / 4, 1 / 2, 1.0])
    ppl = 1 / (-0.02 * x ** -0.5 + 0.08)
    fit = fit_law("data", {"x": x, "ppl": ppl})
    assert fit.params == pytest.approx({"a": 0.02, "b": 0.5, "c": 0.08}, rel=1e-6)
    for xi, p in zip(x, ppl):
        assert token_efficiency(p, xi * 1e6, fit, 1e6) == pytest.approx(1.0, abs=1e-6)
    assert fit.predict(0.3) == pytest.approx(1 / (-0.02 * 0.3 ** -0.5 + 0.08), rel=1e-9)
    with pytest.raises(XltError) as err:
        fit.mlte(1 / 0.09)  # below the law's limit 1/c
    assert "limit" in err.value.problem


def test_bootstrap_intervals_contain_the_planted_values_and_are_seeded():
    L = _noisy(50 * N ** -0.3 + 1.5, 0.002, seed=1)
    fit = fit_law("power", {"N": N, "L": L})
    ci = fit.bootstrap(200, seed=0)
    assert ci["alpha"][0] <= 0.3 <= ci["alpha"][1] and ci["L_inf"][0] <= 1.5 <= ci["L_inf"][1]
    assert fit_law("power", {"N": N, "L": L}).bootstrap(200, seed=0) == ci
    assert fit.to_json()["intervals"]["alpha"] == list(ci["alpha"])


def test_prediction_band_covers_the_planted_curve_and_widens_outside_the_points():
    truth = lambda n: 50 * n ** -0.3 + 1.5  # noqa: E731
    fit = fit_law("power", {"N": N, "L": _noisy(truth(N), 0.002, seed=1)})
    with pytest.raises(XltError):
        fit.band(N)
    fit.bootstrap(200, seed=0)
    lo, hi = fit.band(N)
    assert np.all(lo <= fit.predict(N) + 1e-12) and np.all(fit.predict(N) <= hi + 1e-12)
    inside = (lo <= truth(N)) & (truth(N) <= hi)
    assert inside.mean() >= 0.9, inside
    far = np.array([1e12])
    assert (fit.band(far)[1] - fit.band(far)[0])[0] > (hi - lo)[-1]  # beyond the last point: less certain
    # the band is the percentile of the refits' own predictions
    preds = np.stack([fit.spec.model(t, np.atleast_2d(N), fit.options) for t in fit.draws])
    np.testing.assert_allclose(lo, np.percentile(preds, 2.5, axis=0))


def test_bad_input(tmp_path):
    with pytest.raises(XltError, match="3 parameters but only 2"):
        fit_law("power", {"N": [1, 2], "L": [3, 2]})
    with pytest.raises(XltError, match="N must be > 0"):
        fit_law("power", {"N": [0, 1, 2, 3], "L": [4, 3, 2, 1]})
    with pytest.raises(XltError, match="p must lie"):
        fit_law("joint", {"N": [1, 2, 3, 4, 5, 6, 7], "p": [0.5, 1.2, 1, 1, 1, 1, 1], "L": [7, 6, 5, 4, 3, 2, 1]})
    with pytest.raises(XltError, match="NaN"):
        fit_law("power", {"N": [1, 2, 3, 4], "L": [4, np.nan, 2, 1]})
    with pytest.raises(XltError, match="missing: L"):
        fit_law("power", {"N": [1, 2, 3]})
    fit = fit_law("power", {"N": N, "L": 50 * N ** -0.3 + 1.5})
    with pytest.raises(XltError, match="irreducible"):
        fit.invert(1.0)
    with pytest.raises(XltError) as err:
        LAWS.get("powr")
    assert "power" in err.value.fix
    assert sorted(LAWS.names()) == ["data", "joint", "parallel", "power"]
    csv = tmp_path / "p.csv"
    csv.write_text("N,loss\n1,2\n", encoding="utf-8")
    with pytest.raises(XltError, match="lacks the column"):
        read_points(csv, "power")
    csv.write_text("N,L,other\n" + "".join(f"{n},{50 * n ** -0.3 + 1.5},x\n" for n in N), encoding="utf-8")
    assert fit_law("power", read_points(csv, "power")).params["alpha"] == pytest.approx(0.3, rel=1e-6)
