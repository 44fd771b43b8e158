"""xlt.predict.ranker: LangRank's relevance labels, NDCG, the LightGBM ranker, its save/load and the
leave-one-target-out study with its baselines."""

from __future__ import annotations

import importlib.util
import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from xlt.errors import XltError
from xlt.predict.ranker import (LinearBaseline, Ranker, RankerOptions, expected_random_ndcg, loto_ndcg, ndcg_at_k,
                                relevance_labels)

FEATURES = ["d1", "d2", "noise"]


def synthetic(n_targets: int = 12, n_sources: int = 11, seed: int = 0) -> pd.DataFrame:
    """Score a decreasing function of two planted distances (d1 weighs twice d2) plus noise; ``noise`` is
    unrelated to the score."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_targets):
        for s in range(n_sources):
            d1, d2, noise = rng.uniform(size=3)
            rows.append({"source": f"s{s:02d}", "target": f"t{t:02d}", "d1": d1, "d2": d2, "noise": noise})
    frame = pd.DataFrame(rows)
    frame["score"] = 100 * np.exp(-(2 * frame["d1"] + frame["d2"])) + rng.normal(0, 2, len(frame))
    return frame


def one_target(scores, target="t") -> pd.DataFrame:
    return pd.DataFrame({"source": [f"s{i}" for i in range(len(scores))], "target": target, "score": scores})


# -- relevance labels -----------------------------------------------------------------------------------------
def test_relevance_labels_top_ten_of_twelve():
    scores = [50, 3, 71, 12, 90, 8, 33, 64, 1, 27, 45, 19]  # ranks: 90 71 64 50 45 33 27 19 12 8 | 3 1
    expected = [7, 0, 9, 2, 10, 1, 5, 8, 0, 4, 6, 3]
    for style in ("dense", "langrank"):  # the two rules agree when there are >= 10 candidates
        assert relevance_labels(one_target(scores), style=style).tolist() == expected


def test_relevance_labels_fewer_than_ten():
    frame = one_target([0.2, 0.9, 0.5, 0.1])
    assert relevance_labels(frame).tolist() == [2, 4, 3, 1]  # dense: n ... 1
    # LangRank's code (level = #langs - rank, cutoff #langs - 10): the best candidate always gets 10
    assert relevance_labels(frame, style="langrank").tolist() == [8, 10, 9, 7]
    assert relevance_labels(frame, top=3).tolist() == [1, 3, 2, 0]


def test_relevance_labels_ties_share_the_better_rank_and_ignore_row_order():
    frame = pd.concat([one_target([5.0, 5.0, 3.0, 1.0], "a"), one_target([2.0, 7.0, 7.0], "b")],
                      ignore_index=True)
    labels = relevance_labels(frame)
    assert labels.tolist() == [4, 4, 2, 1, 1, 3, 3]
    assert relevance_labels(frame, style="langrank").tolist() == [10, 10, 8, 7, 8, 10, 10]
    shuffled = frame.sample(frac=1.0, random_state=3)
    assert relevance_labels(shuffled).sort_index().tolist() == labels.tolist()


def test_relevance_labels_refuse_bad_input():
    with pytest.raises(XltError, match="no 'score' value"):
        relevance_labels(one_target([1.0, np.nan]))
    with pytest.raises(XltError, match="repeat"):
        relevance_labels(pd.DataFrame({"source": ["x", "x"], "target": ["t", "t"], "score": [1.0, 2.0]}))
    with pytest.raises(XltError, match="no column"):
        relevance_labels(pd.DataFrame({"source": ["x"], "score": [1.0]}))
    with pytest.raises(XltError, match="style"):
        relevance_labels(one_target([1.0, 2.0]), style="other")


# -- NDCG -----------------------------------------------------------------------------------------------------
def test_ndcg_known_value():
    # relevance 0, 1, 2 ranked in that order, k=2: DCG = 0 + 1/log2(3); ideal = 2 + 1/log2(3)
    want = (1 / np.log2(3)) / (2 + 1 / np.log2(3))
    assert ndcg_at_k([0, 1, 2], [3.0, 2.0, 1.0], k=2) == pytest.approx(want, abs=1e-12)
    assert ndcg_at_k([0, 1, 2], [1.0, 2.0, 3.0], k=2) == pytest.approx(1.0, abs=1e-12)
    assert ndcg_at_k([0, 0, 0], [1.0, 2.0, 3.0], k=2) == 0.0


def test_ndcg_equals_sklearn_with_and_without_ties():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    for trial in range(40):
        n = int(rng.integers(2, 14))
        rel = rng.integers(0, 11, size=n)
        scores = rng.integers(0, 5, size=n).astype(float) if trial % 2 else rng.normal(size=n)  # ties / none
        for k in (1, 3, 5, n):
            assert ndcg_at_k(rel, scores, k) == pytest.approx(sk.ndcg_score([rel], [scores], k=k), abs=1e-12)
            assert ndcg_at_k(rel, scores, k, gain="exponential") == pytest.approx(
                sk.ndcg_score([2.0 ** rel - 1], [scores], k=k), abs=1e-12)


def test_expected_random_ndcg_equals_average_over_all_permutations():
    rel = np.array([3, 1, 0, 2, 2])
    for k in (1, 2, 3, 5):
        for gain in ("linear", "exponential"):
            brute = np.mean([ndcg_at_k(rel, np.array(perm, dtype=float), k, gain)
                             for perm in itertools.permutations(range(len(rel)))])
            assert expected_random_ndcg(rel, k, gain) == pytest.approx(brute, abs=1e-12)


def test_ndcg_refuses_bad_input():
    with pytest.raises(XltError, match="scores for"):
        ndcg_at_k([1, 2], [1.0])
    with pytest.raises(XltError, match="non-negative"):
        ndcg_at_k([-1, 2], [1.0, 2.0])
    with pytest.raises(XltError, match="cut-off"):
        ndcg_at_k([1, 2], [1.0, 2.0], k=0)
    with pytest.raises(XltError, match="gain"):
        ndcg_at_k([1, 2], [1.0, 2.0], gain="log")


# -- the ranker -----------------------------------------------------------------------------------------------
needs_lightgbm = pytest.mark.skipif(importlib.util.find_spec("lightgbm") is None, reason="needs lightgbm")


@needs_lightgbm
def test_ranker_equals_plain_lgbmranker_with_langrank_settings():
    import lightgbm

    frame = synthetic()
    data = frame.sort_values(["target", "source"])
    labels = np.concatenate([np.maximum(0, 11 - rankdata(-g["score"], method="min"))
                             for _, g in data.groupby("target", sort=True)]).astype(int)
    plain = lightgbm.LGBMRanker(boosting_type="gbdt", num_leaves=16, max_depth=-1, learning_rate=0.1,
                                n_estimators=100, min_child_samples=5, n_jobs=1, verbose=-1)
    plain.fit(data[FEATURES].to_numpy(), labels, group=data.groupby("target", sort=True).size().to_numpy())
    ranker = Ranker().fit(frame.sample(frac=1.0, random_state=7), FEATURES)  # row order must not matter
    np.testing.assert_allclose(ranker.score(data).to_numpy(), plain.predict(data[FEATURES].to_numpy()),
                               rtol=0, atol=1e-10)
    assert ranker.booster.num_trees() == 100


@needs_lightgbm
def test_ranker_handles_nan_and_ranks_best_first():
    frame = synthetic(6, 8, seed=2)
    frame.loc[frame.index[::5], "d2"] = np.nan
    ranker = Ranker(seed=3).fit(frame, FEATURES)
    cands = frame[frame["target"] == "t01"]
    out = ranker.rank("t01", frame)  # other targets' rows are ignored
    assert list(out.columns) == ["target", "source", "score", "rank"]
    assert sorted(out["source"]) == sorted(cands["source"]) and out["rank"].tolist() == list(range(1, 9))
    assert (np.diff(out["score"].to_numpy()) <= 0).all()
    want = ranker.score(cands).set_axis(cands["source"].to_numpy())
    np.testing.assert_array_equal(out["score"].to_numpy(), want.loc[out["source"]].to_numpy())


@needs_lightgbm
def test_reasons_sum_with_bias_to_the_raw_score():
    frame = synthetic(8, 9, seed=4)
    ranker = Ranker().fit(frame, FEATURES)
    reasons = ranker.reasons("t03", frame.drop(columns="score"))
    total = reasons[FEATURES].sum(axis=1) + reasons["bias"]
    np.testing.assert_allclose(total.to_numpy(), reasons["score"].to_numpy(), rtol=0, atol=1e-6)
    ranked = ranker.rank("t03", frame)
    assert reasons["source"].tolist() == ranked["source"].tolist()
    np.testing.assert_allclose(reasons["score"].to_numpy(), ranked["score"].to_numpy(), rtol=0, atol=1e-12)
    assert reasons["bias"].nunique() == 1  # the expected raw score over the training data, one value for all
    assert reasons["d1"].abs().mean() > reasons["noise"].abs().mean()  # the planted distance drives the score


@needs_lightgbm
def test_save_load_round_trip(tmp_path):
    frame = synthetic(6, 8, seed=5)
    ranker = Ranker(num_leaves=8, seed=11).fit(frame, FEATURES)
    folder = ranker.save(tmp_path / "ranker", metadata={"urielplus": "1.3.2", "table_sha256": "ab12"})
    assert sorted(p.name for p in folder.iterdir()) == ["model.txt", "ranker.json"]
    assert (folder / "model.txt").read_text(encoding="utf-8").startswith("tree")  # LightGBM's text model
    info = json.loads((folder / "ranker.json").read_text(encoding="utf-8"))
    assert info["features"] == FEATURES and info["options"]["num_leaves"] == 8
    back = Ranker.load(folder, features=FEATURES, frame=frame)
    np.testing.assert_array_equal(back.score(frame).to_numpy(), ranker.score(frame).to_numpy())
    assert back.options == ranker.options
    assert back.metadata == {"urielplus": "1.3.2", "table_sha256": "ab12"}
    assert back.targets == sorted(frame["target"].unique())
    # saving again replaces the ranker in place (no leftovers beside it)
    Ranker(seed=1).fit(frame, ["d1", "d2"]).save(folder)
    assert Ranker.load(folder).features == ["d1", "d2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranker"]


@needs_lightgbm
def test_load_and_save_refuse_what_is_not_a_ranker(tmp_path):
    frame = synthetic(4, 6, seed=6)
    folder = Ranker().fit(frame, FEATURES).save(tmp_path / "r")
    (tmp_path / "empty").mkdir()
    with pytest.raises(XltError, match="not a saved ranker"):
        Ranker.load(tmp_path / "empty")
    with pytest.raises(XltError, match="other features"):
        Ranker.load(folder, features=["d1", "d2"])
    with pytest.raises(XltError, match="another order"):
        Ranker.load(folder, features=["d2", "d1", "noise"])
    with pytest.raises(XltError, match="lacks feature"):
        Ranker.load(folder, frame=frame.drop(columns="noise"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.txt").write_text("tree\n", encoding="utf-8")
    (bad / "ranker.json").write_text(json.dumps({"format": "something else"}), encoding="utf-8")
    with pytest.raises(XltError, match="not an xlt ranker"):
        Ranker.load(bad)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(XltError, match="not a saved ranker"):
        Ranker.load(folder).save(other)
    assert (other / "notes.txt").read_text(encoding="utf-8") == "keep me"


@needs_lightgbm
def test_ranker_refuses_bad_input():
    frame = synthetic(3, 4, seed=8)
    with pytest.raises(XltError, match="unknown option"):
        Ranker(num_leafs=8)
    with pytest.raises(XltError, match="num_leaves"):
        Ranker(num_leaves=1)
    with pytest.raises(XltError, match="not fitted"):
        Ranker().score(frame)
    with pytest.raises(XltError, match="no column"):
        Ranker().fit(frame, ["d1", "missing"])
    with pytest.raises(XltError, match="reserved"):
        Ranker().fit(frame, ["d1", "score"])
    with pytest.raises(XltError, match="nothing to rank"):
        Ranker().fit(frame.drop_duplicates("target"), FEATURES)
    fitted = Ranker().fit(frame, FEATURES)
    with pytest.raises(XltError, match="no row for target"):
        fitted.rank("zzz", frame)
    assert RankerOptions().labels == "dense"


# -- leave one target out -------------------------------------------------------------------------------------
@needs_lightgbm
def test_loto_ndcg_beats_random_and_ols_recovers_the_planted_signs():
    frame = synthetic()
    table = loto_ndcg(frame, FEATURES, k=3)
    assert list(table.columns) == ["method", "target", "n_sources", "ndcg", "mean_ndcg", "sign"]
    means = table.drop_duplicates("method").set_index("method")["mean_ndcg"]
    assert list(means.index) == ["langrank", "ols", "feature:d1", "feature:d2", "feature:noise", "random"]
    assert (table.groupby("method").size() == 12).all()
    np.testing.assert_allclose(means.to_numpy(), table.groupby("method", sort=False)["ndcg"].mean().to_numpy())
    # random: 11 candidates, labels 10..1 and 0 -> mean gain 5; ideal DCG@3 = 10 + 9/log2(3) + 8/2
    disc = 1 + 1 / np.log2(3) + 0.5
    assert means["random"] == pytest.approx(5 * disc / (10 + 9 / np.log2(3) + 4), abs=1e-12)
    assert means["langrank"] >= means["random"] + 0.2
    assert means["feature:d1"] > means["feature:noise"]
    assert (table.loc[table["method"] == "feature:d1", "sign"] == -1).all()  # smaller distance = better
    assert table.loc[~table["method"].str.startswith("feature:"), "sign"].isna().all()
    ols = LinearBaseline().fit(frame, FEATURES)
    assert ols.coef["d1"] < 0 and ols.coef["d2"] < 0 and ols.coef["d1"] < ols.coef["d2"]


@needs_lightgbm
def test_loto_ndcg_baselines_off_and_errors():
    frame = synthetic(3, 5, seed=9)
    table = loto_ndcg(frame, FEATURES, k=2, baselines=False, options=RankerOptions(n_estimators=10))
    assert set(table["method"]) == {"langrank"} and len(table) == 3
    assert ((table["ndcg"] >= 0) & (table["ndcg"] <= 1)).all()
    with pytest.raises(XltError, match="at least 2 targets"):
        loto_ndcg(frame[frame["target"] == "t00"], FEATURES)
    with pytest.raises(XltError, match="gain"):
        loto_ndcg(frame, FEATURES, gain="square")


def test_linear_baseline_imputes_the_training_mean():
    frame = pd.DataFrame({"source": list("abcd"), "target": "t", "x": [0.0, 1.0, np.nan, 3.0],
                          "score": [1.0, 3.0, 100.0, 7.0]})
    fit = LinearBaseline().fit(frame, ["x"])
    assert fit.means["x"] == pytest.approx(4 / 3)
    a = np.column_stack([np.ones(4), [0.0, 1.0, 4 / 3, 3.0]])
    beta = np.linalg.lstsq(a, frame["score"].to_numpy(), rcond=None)[0]
    assert fit.intercept == pytest.approx(beta[0]) and fit.coef["x"] == pytest.approx(beta[1])
    np.testing.assert_allclose(fit.predict(frame).to_numpy(), a @ beta)
