"""The transfer table of ``xlt predict``: validation, files, hashing, orientation, and the readers of real
``xlt adapt`` runs and ``xlt evaluate`` outputs (tiny ones, made here from the shared fixtures)."""

from __future__ import annotations

import json
import math
import os
import random
import shutil

import pytest

from xlt.errors import XltError
from xlt.predict.table import TransferRow, TransferTable, known_direction, read_adapt_run, read_evaluation


def rows():
    """Two tasks: POS accuracy (higher) for targets swh and deu, LM bits/byte (lower) for swh and fra."""
    return [
        TransferRow("en", "sw", "pos", "accuracy", 0.71, None, 100, "pos.csv"),
        TransferRow("fr", "sw", "pos", "accuracy", 0.64, None, 100, "pos.csv"),
        TransferRow("en", "de", "pos", "accuracy", 0.1 + 0.2, None, None, "pos.csv"),
        TransferRow("fr", "de", "pos", "accuracy", 0.83, None, None, "pos.csv"),
        TransferRow("en", "sw", "lm", "bits_per_byte", 1.9, None, 5000, "runs/a"),
        TransferRow("de", "sw", "lm", "bits_per_byte", 2.4, None, 5000, "runs/b"),
        TransferRow("en", "fr", "lm", "bits_per_byte", 1.2, None, 0, "runs/c"),
        TransferRow("de", "fr", "lm", "bits_per_byte", 1.5, None, 0, "runs/d"),
    ]


# -- rows ----------------------------------------------------------------------------------------------------------
def test_row_normalises_languages_and_known_directions():
    r = TransferRow("sw", "en-GB", "pos", "Accuracy", "0.5", None, "12", "x.csv")
    assert (r.source, r.target, r.score, r.direction, r.n_target) == ("swh", "eng", 0.5, "higher", 12)
    assert TransferRow("swa", "de", "lm", "PPL", 3.0).direction == "lower"
    assert known_direction("bits_per_byte") == "lower" and known_direction("chrF") == "higher"
    assert known_direction("exact_match,flexible-extract") == "higher"  # lm-eval's metric,filter names
    assert known_direction("my_score") is None
    assert TransferRow("en", "de", "t", "my_score", 1.0, "lower").direction == "lower"
    assert TransferRow("en", "de", "t", "f1", 1.0, n_target=math.nan).n_target is None  # NaN: unknown


@pytest.mark.parametrize("kwargs, needle", [
    (dict(metric="my_score"), "has no direction"),
    (dict(metric="accuracy", direction="lower"), "higher-is-better"),
    (dict(metric="my_score", direction="up"), "is not higher or lower"),
    (dict(source="xx1"), "unknown language code"),
    (dict(target="qqq"), "unknown language code"),
    (dict(score=math.nan), "is nan"),
    (dict(score=math.inf), "is inf"),
    (dict(score="n/a"), "is not a number"),
    (dict(n_target=-3), "not a count"),
    (dict(n_target=2.5), "not a count"),
    (dict(task=" "), "has no task"),
])
def test_row_errors(kwargs, needle):
    base = dict(source="en", target="sw", task="pos", metric="accuracy", score=0.5, direction=None, n_target=None,
                provenance="t.csv")
    with pytest.raises(XltError) as e:
        TransferRow(**{**base, **kwargs})
    assert needle in str(e.value) and e.value.fix


def test_absolute_provenance_is_not_kept(tmp_path):
    r = TransferRow("en", "sw", "pos", "accuracy", 0.5, provenance=str(tmp_path / "results.csv"))
    assert not os.path.isabs(r.provenance) and r.provenance == "results.csv"


# -- the table -----------------------------------------------------------------------------------------------------
def test_queries():
    t = TransferTable(rows())
    assert t.tasks() == ["lm", "pos"]
    assert t.targets("pos") == ["deu", "swh"] and t.targets("lm") == ["fra", "swh"]
    assert t.sources("lm", "sw") == ["deu", "eng"] and t.metric("lm") == ("bits_per_byte", "lower")
    with pytest.raises(XltError, match="no task 'ner'"):
        t.targets("ner")
    with pytest.raises(XltError, match="no result for target jpn"):
        t.sources("pos", "ja")


def test_csv_round_trip(tmp_path):
    t = TransferTable(rows())
    path = t.to_csv(tmp_path / "t.csv")
    back = TransferTable.from_csv(path)
    assert back.to_records() == t.to_records()  # every field, floats exactly (0.1 + 0.2 included), None kept
    assert back.rows[2].score == 0.1 + 0.2 and back.rows[2].n_target is None and back.rows[0].n_target == 100
    assert TransferTable.read(path).sha256() == t.sha256()


def test_csv_optional_columns_and_missing_ones(tmp_path):
    p = tmp_path / "few.csv"
    p.write_text("source,target,task,metric,score,notes\nen,sw,lm,bpb,1.5,first\nde,sw,lm,bpb,1.7,\n")
    t = TransferTable.from_csv(p)
    assert [r.provenance for r in t] == ["few.csv:2", "few.csv:3"] and {r.direction for r in t} == {"lower"}
    bad = tmp_path / "bad.csv"
    bad.write_text("source,target,metric\nen,sw,bpb\n")
    with pytest.raises(XltError) as e:
        TransferTable.from_csv(bad)
    assert "lacks the column(s) task, score" in str(e.value)
    nan = tmp_path / "nan.csv"
    nan.write_text("source,target,task,metric,score\nen,sw,lm,bpb,nan\n")
    with pytest.raises(XltError, match="is nan"):
        TransferTable.from_csv(nan)


def test_json_round_trip(tmp_path):
    t = TransferTable(rows())
    back = TransferTable.read(t.to_json(tmp_path / "t.json"))
    assert back.to_records() == t.to_records()
    assert json.loads((tmp_path / "t.json").read_text())["sha256"] == t.sha256()
    with pytest.raises(XltError, match="not an xlt transfer table"):
        TransferTable.from_dict({"rows": []})


def test_sha256_is_order_and_provenance_independent():
    base = TransferTable(rows())
    shuffled = rows()
    random.Random(0).shuffle(shuffled)
    assert TransferTable(shuffled).sha256() == base.sha256()
    moved = [TransferRow(**{**r.as_dict(), "provenance": "elsewhere.csv"}) for r in rows()]
    assert TransferTable(moved).sha256() == base.sha256()
    changed = rows()
    changed[0] = TransferRow(**{**changed[0].as_dict(), "score": 0.7100000000000001})
    assert TransferTable(changed).sha256() != base.sha256()
    assert TransferTable(rows()[:-1]).sha256() != base.sha256()
    assert len(base.sha256()) == 64


def test_validation_errors():
    r = rows()
    with pytest.raises(XltError, match="task pos mixes accuracy"):
        TransferTable(r + [TransferRow("de", "sw", "pos", "f1", 0.5)])
    with pytest.raises(XltError, match=r"mixes my_score \(higher is better\).*\(lower is better\)"):
        TransferTable([TransferRow("en", "sw", "x", "my_score", 1, "higher"),
                       TransferRow("de", "sw", "x", "my_score", 2, "lower")])
    with pytest.raises(XltError, match="two results for eng→swh on task pos disagree"):
        TransferTable(r + [TransferRow("en", "sw", "pos", "accuracy", 0.5, None, 100, "other.csv")])
    with pytest.raises(XltError, match="disagree"):  # same score, other amount of target data: another experiment
        TransferTable(r + [TransferRow("en", "sw", "pos", "accuracy", 0.71, None, 10, "other.csv")])
    again = TransferTable(r + [TransferRow("en", "swa", "pos", "accuracy", 0.71, None, 100, "copy.csv")])
    assert len(again) == len(r) and again.rows[0].provenance == "pos.csv"  # identical repeat kept once
    with pytest.raises(XltError, match="unknown field"):
        TransferTable([{"source": "en", "target": "sw", "task": "t", "metric": "f1", "score": 1, "lang": "x"}])


def test_check_rankable():
    t = TransferTable(rows())
    t.check_rankable("pos")
    t.check_rankable("lm")
    one_target = TransferTable([r for r in rows() if r.task == "pos" and r.target == "swh"])
    with pytest.raises(XltError, match=r"1 target language\(s\) \(swh\); ranking needs at least 2"):
        one_target.check_rankable("pos")
    one_source = TransferTable(rows()[:3])
    with pytest.raises(XltError, match="fewer than 2 source languages \\(deu: eng\\)"):
        one_source.check_rankable("pos")


def test_oriented_flips_lower_is_better():
    pytest.importorskip("pandas")
    t = TransferTable(rows())
    lm = t.oriented("lm")
    assert list(lm["score"]) == [-1.5, -1.2, -2.4, -1.9] and list(lm["raw_score"]) == [1.5, 1.2, 2.4, 1.9]
    best = lm[lm.target == "swh"].sort_values("score", ascending=False).source.iloc[0]
    assert best == "eng"  # the lowest bits/byte ranks first
    pos = t.oriented("pos")
    assert (pos["score"] == pos["raw_score"]).all() and list(pos["score"]) == [0.1 + 0.2, 0.83, 0.71, 0.64]
    frame = t.to_frame()
    assert list(frame.columns) == ["source", "target", "task", "metric", "score", "direction", "n_target",
                                   "provenance"]
    assert frame["n_target"].isna().sum() == 2 and frame["n_target"].iloc[0] == 100


def test_merge():
    a, b = TransferTable(rows()[:4]), TransferTable(rows()[4:])
    merged = a.merge(b)
    assert merged.sha256() == TransferTable(rows()).sha256() and len(a) == 4
    with pytest.raises(XltError, match="disagree"):
        merged.merge([TransferRow("en", "fr", "lm", "bits_per_byte", 1.3)])


# -- readers of real xlt outputs ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_source_dir, parallel_jsonl):
    """Two finished tiny `xlt adapt` runs into sw, from en and (a label on the same source model) fr, with two
    inits each, and an `xlt evaluate` of the first run's models in en and sw."""
    from xlt.adapt import run
    from xlt.eval.evaluate import evaluate

    root = tmp_path_factory.mktemp("predict") / "runs"
    for lang in ("en", "fr"):
        run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=root / f"{lang}-sw", target="sw",
            source_lang=lang, init="overlap,random", steps=2, stage1_steps=1, vocab_size=350, batch_size=2,
            seq_len=32, eval_every=1, eval_max_bytes=1000, samples=1, loo_tokens=0, show_progress=False)
    evaluate([str(root / "en-sw")], "en,sw", "bpb", root / "eval-en-sw", corpus=str(parallel_jsonl), split="train",
             max_bytes=1000, show_progress=False)
    return root


def test_adapt_run_reader(runs):
    t = TransferTable.read(runs / "en-sw")
    summary = json.loads((runs / "en-sw" / "metrics.json").read_text())
    assert t.tasks() == ["lm:overlap", "lm:random"]
    for r in t:
        key = r.task.split(":")[1]
        assert (r.source, r.target, r.metric, r.direction) == ("eng", "swh", "bits_per_byte", "lower")
        assert r.score == summary["summary"][key]["bpb_final"]  # the final dev bits/byte of that init
        assert r.n_target == summary["train_tokens"] > 0
        assert r.provenance == f"en-sw/{key}/metrics.json"
    fr = read_adapt_run(runs / "fr-sw")
    assert {r.source for r in fr} == {"fra"}


def test_adapt_run_reader_unfinished(runs, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(runs / "en-sw", part)
    (part / "metrics.json").unlink()
    (part / "random" / "metrics.json").unlink()
    t = read_adapt_run(part)
    assert [(r.task, r.n_target) for r in t] == [("lm:overlap", None)]
    (part / "overlap" / "metrics.json").unlink()
    with pytest.raises(XltError, match="run part has no finished model"):
        read_adapt_run(part)


def test_evaluate_reader(runs):
    data = json.loads((runs / "eval-en-sw" / "metrics.json").read_text())
    t = TransferTable.read(runs / "eval-en-sw")
    assert t.tasks() == ["bpb:overlap", "bpb:random"]
    want = {(s["model"].split("/")[-1], s["value"]) for s in data["scores"]
            if s["lang"] == "swh" and s["model"].startswith("en-sw/")}
    assert {(r.task.split(":")[1], r.score) for r in t} == want and len(want) == 2
    assert {(r.source, r.target, r.direction) for r in t} == {("eng", "swh", "lower")}
    assert all(r.provenance.startswith("eval-en-sw/metrics.json#en-sw/") for r in t)


def test_evaluate_reader_source_from_run_json_or_given(runs, tiny_source_dir, parallel_jsonl, tmp_path):
    from xlt.eval.evaluate import evaluate

    evaluate([str(runs / "fr-sw" / "overlap")], "en,sw", "bpb", tmp_path / "one", corpus=str(parallel_jsonl),
             split="train", max_bytes=1000, show_progress=False)
    t = read_evaluation(tmp_path / "one")  # a model folder evaluated alone: its run's run.json names the source
    assert [(r.source, r.target, r.task) for r in t] == [("fra", "swh", "bpb:overlap")]
    evaluate([str(tiny_source_dir)], "en,sw", "bpb", tmp_path / "plain", corpus=str(parallel_jsonl),
             split="train", max_bytes=1000, show_progress=False)
    with pytest.raises(XltError) as e:
        read_evaluation(tmp_path / "plain")
    assert "source language of" in str(e.value) and "source=" in e.value.fix
    given = TransferTable.read(tmp_path / "plain" / "metrics.json", source="en")
    assert [(r.source, r.target, r.task) for r in given] == [("eng", "swh", "bpb")]  # eng itself is no target
    with pytest.raises(XltError, match="was adapted from fra, but source=deu"):
        read_evaluation(tmp_path / "one", source="de")


def test_folder_reader_merges_everything(runs, tmp_path):
    t = TransferTable.read(runs)
    assert t.tasks() == ["bpb:overlap", "bpb:random", "lm:overlap", "lm:random"]
    assert t.sources("lm:overlap", "sw") == ["eng", "fra"]
    assert all(r.provenance.startswith("runs/") and not os.path.isabs(r.provenance) for r in t)
    parts = TransferTable.read(runs / "en-sw").merge(TransferTable.read(runs / "fr-sw"))
    assert parts.merge(TransferTable.read(runs / "eval-en-sw")).sha256() == t.sha256()
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(XltError, match="folder empty holds no transfer result"):
        TransferTable.read(tmp_path / "empty")
