"""``xlt predict`` end to end: a transfer table whose scores follow URIEL+'s genetic distance is learnt (LOTO NDCG
above random, the distance's sign found), ``rank`` a new target with reasons that sum to the score, the distance
table, the CLI, bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("lightgbm")
pytest.importorskip("statsmodels")

from typer.testing import CliRunner  # noqa: E402

from xlt.cli.main import app  # noqa: E402
from xlt.errors import XltError  # noqa: E402
from xlt.predict.distances import distances  # noqa: E402
from xlt.predict.pipeline import distance_table, fit, parse_groups, rank  # noqa: E402

LANGS = ["eng", "deu", "fra", "spa", "ita", "por", "rus", "pol", "ukr", "hin", "ben", "pes", "tur", "ind"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """Score = 10 − 8·genetic distance + noise: related sources transfer better."""
    d = distances(LANGS, ("genetic",))
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("t") / "table.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["source", "target", "task", "metric", "score", "direction", "n_target", "provenance"])
        for t in LANGS:
            for s in LANGS:
                if s != t:
                    score = 10 - 8 * d.get("genetic", s, t) + 0.3 * rng.standard_normal()
                    w.writerow([s, t, "pos", "accuracy", f"{score:.6f}", "higher", 1000, "synthetic"])
    return path


def test_fit_learns_the_planted_distance_and_ranks_a_new_target(tmp_path, table):
    m = fit([table], tmp_path / "pred", features="uriel")
    assert m["task"] == "pos" and len(m["targets"]) == len(LANGS)
    assert m["loto_ndcg"]["langrank"] >= m["loto_ndcg"]["random"] + 0.2, m["loto_ndcg"]
    assert m["loto_ndcg"]["feature:uriel_genetic"] >= m["loto_ndcg"]["random"] + 0.2
    coef = {c["term"]: c["coef"] for c in m["regression"]["coefficients"]}
    assert coef["uriel_genetic"] < 0
    saved = json.loads((tmp_path / "pred" / "metrics.json").read_text())
    assert saved["table_sha256"] == m["table_sha256"] and "<img" in (tmp_path / "pred" / "report.html").read_text()
    why = rank("ron", tmp_path / "pred")  # Romanian: not in the table; Romance sources should lead
    assert list(why["rank"]) == list(range(1, len(LANGS) + 1))
    feats = [c for c in why.columns if c.startswith("uriel_")]
    assert np.allclose(why[feats].sum(axis=1) + why["bias"], why["score"], atol=1e-6)
    romance = {"fra", "spa", "ita", "por"}
    top = list(why["source"].head(3))
    assert top[0] in romance and sum(s in romance for s in top) >= 2, why[["source", "score"]]


def test_distance_table_and_cli(tmp_path, table):
    res = distance_table("eng,deu,nya", tmp_path / "d")
    data = json.loads((tmp_path / "d" / "distances.json").read_text())
    assert res["langs"] == ["eng", "deu", "nya"] and data["distances"]["genetic"][0][0] == 0.0
    assert data["distances"]["phonological"][2][0] is None  # urielplus: -1 for nya
    assert (tmp_path / "d" / "report.html").read_text().count("<img") == 7
    runner = CliRunner()
    r = runner.invoke(app, ["predict", "fit", str(table), "--out", str(tmp_path / "p"), "--features", "uriel"])
    assert r.exit_code == 0, r.output
    assert "langrank" in r.output
    r = runner.invoke(app, ["predict", "rank", "--target", "ron", "--predictor", str(tmp_path / "p")])
    assert r.exit_code == 0 and "uriel_" in r.output, r.output


def test_bad_input(tmp_path, table):
    with pytest.raises(XltError, match="unknown feature group"):
        parse_groups("uriel,lexical")
    with pytest.raises(XltError, match="not in the tables"):
        fit([table], tmp_path / "x", task="ner")
    (tmp_path / "exists").mkdir()
    with pytest.raises(XltError, match="already exists"):
        fit([table], tmp_path / "exists")
    one = tmp_path / "one.csv"
    one.write_text("source,target,task,metric,score,direction,n_target,provenance\n"
                   "eng,deu,pos,accuracy,1,higher,,x\nfra,deu,pos,accuracy,2,higher,,x\n", encoding="utf-8")
    with pytest.raises(XltError, match="target"):
        fit([one], tmp_path / "y")
    with pytest.raises(XltError):
        rank("xx", tmp_path / "nowhere")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_scaling_cli_writes_the_fit_and_a_plot(tmp_path):
    n = np.geomspace(1e6, 1e9, 10)
    pts = tmp_path / "p.csv"
    pts.write_text("N,p,L\n" + "".join(f"{x},{p},{50 * (p * x) ** -0.3 + 1.5}\n" for x in n for p in (0.25, 1.0)),
                   encoding="utf-8")
    r = CliRunner().invoke(app, ["predict", "scaling", str(pts), "--law", "joint", "--f-form", "power",
                                 "--bootstrap", "20", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    fit = json.loads((tmp_path / "s" / "fit.json").read_text())
    assert fit["params"]["alpha"] == pytest.approx(0.3, rel=1e-4) and fit["options"]["f_form"] == "power"
    assert fit["provisional"] and "<img" in (tmp_path / "s" / "report.html").read_text()
