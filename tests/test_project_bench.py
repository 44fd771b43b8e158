"""bench/project.py: the gold data file holds only ids, hashes and offsets; a changed verse is refused; the inputs it
writes are what ``xlt data project`` reads; the records' span F1 is the exact-match count."""

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from xlt.data.builders.project import read_annotated, read_gold
from xlt.errors import XltError

BENCH = Path(__file__).resolve().parents[1] / "bench" / "project.py"

EN = {"1:1:1": "Then Esther spoke to Hathach.", "1:1:2": "Mordecai went his way."}
SW = {"1:1:1": "Ndipo Esta akasema na Hathaki.", "1:1:2": "Basi Mordekai akaenda zake."}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("xlt_bench_project", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sha(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _span(text, word, label="PER"):
    start = text.index(word)
    return {"start": start, "end": start + len(word), "label": label}


def _rows():
    return [{"id": "1:1:1", "eng_sha256": _sha(EN["1:1:1"]), "swh_sha256": _sha(SW["1:1:1"]),
             "eng": [_span(EN["1:1:1"], "Esther"), _span(EN["1:1:1"], "Hathach")],
             "swh": [_span(SW["1:1:1"], "Esta"), _span(SW["1:1:1"], "Hathaki")]},
            {"id": "1:1:2", "eng_sha256": _sha(EN["1:1:2"]), "swh_sha256": _sha(SW["1:1:2"]),
             "eng": [_span(EN["1:1:2"], "Mordecai")], "swh": [_span(SW["1:1:2"], "Mordekai")]}]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_inputs_are_what_xlt_data_project_reads(bench, tmp_path):
    rows = bench.read_data(_write(tmp_path / "g.jsonl", _rows()))
    texts = {"eng": EN, "swh": SW}
    bench.check_texts(rows, texts)
    annotated, gold = bench.write_inputs(rows, texts, tmp_path)
    src = list(read_annotated(annotated))
    assert [s["key"] for s in src] == ["1:1:1", "1:1:2"]
    assert [[s["text"][x.start:x.end] for x in s["spans"]] for s in src] == [["Esther", "Hathach"], ["Mordecai"]]
    g = read_gold(gold, SW)
    assert [SW[k][x.start:x.end] for k in g for x in g[k]] == ["Esta", "Hathaki", "Mordekai"]
    assert "text" not in json.loads(gold.read_text().splitlines()[0])
    c = bench.gold_counts(rows)
    assert c["verses"] == 2 and c["eng_spans"] == {"total": 3, "PER": 3, "LOC": 0}


def test_a_changed_verse_is_refused(bench, tmp_path):
    rows = bench.read_data(_write(tmp_path / "g.jsonl", _rows()))
    with pytest.raises(XltError, match=r"1:1:2 \(swh\).*SHA-256|SHA-256.*1:1:2 \(swh\)"):
        bench.check_texts(rows, {"eng": EN, "swh": {**SW, "1:1:2": SW["1:1:2"] + " "}})
    with pytest.raises(XltError, match="not in the bible corpus"):
        bench.check_texts(rows, {"eng": EN, "swh": {"1:1:1": SW["1:1:1"]}})


def test_text_or_unknown_labels_in_the_data_file_are_refused(bench, tmp_path):
    rows = _rows()
    rows[0]["eng"][0]["text"] = "Esther"
    with pytest.raises(XltError, match="holds text"):
        bench.read_data(_write(tmp_path / "a.jsonl", rows))
    rows = _rows()
    rows[1]["swh"][0]["label"] = "ORG"
    with pytest.raises(XltError, match="label.*ORG"):
        bench.read_data(_write(tmp_path / "b.jsonl", rows))


def test_records_f1_counts_exact_matches(bench, tmp_path):
    rows = _rows()
    # 1:1:1: Esta right, Hathaki one character short; 1:1:2: Mordekai right -> 2 of 3 predicted, 2 of 3 gold
    short = dict(_span(SW["1:1:1"], "Hathaki"))
    short["end"] -= 1
    recs = [{"key": "1:1:1", "spans": [_span(SW["1:1:1"], "Esta"), short]},
            {"key": "1:1:2", "spans": [_span(SW["1:1:2"], "Mordekai")]}]
    _write(tmp_path / "r.jsonl", recs)
    f = bench.records_f1(tmp_path / "r.jsonl", rows)
    assert f["overall"]["f1"] == pytest.approx(2 / 3) and f["overall"]["support"] == 3


@pytest.mark.slow
def test_the_committed_gold_fits_the_bible_corpus(bench):
    rows = bench.read_data(bench.DATA)
    texts = bench.corpus_texts()
    bench.check_texts(rows, texts)
    c = bench.gold_counts(rows)
    assert c["verses"] == 100 and c["verses_per_book"] == {"17": 48, "29": 19, "51": 20, "62": 13}
    assert c["eng_spans"] == {"total": 205, "PER": 153, "LOC": 52}
    assert c["swh_spans"] == {"total": 204, "PER": 152, "LOC": 52}
    not_names = {"God", "Lord", "Yahweh", "Father", "Son", "Spirit", "Mungu", "Bwana", "Baba", "Mwana", "Roho"}
    for r in rows:
        for lang in ("eng", "swh"):
            for s in r[lang]:
                words = texts[lang][r["id"]][s["start"]:s["end"]].split()
                assert all(w[0].isupper() and w.isalpha() and w not in not_names for w in words), (r["id"], words)
