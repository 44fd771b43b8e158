"""``xlt data lmt``: reverse pairs capped per pivot sentence, forward pairs untouched, PMP's one auxiliary line,
``directional_stats`` by hand, URIEL+ distances against urielplus' own values, bad input."""

from __future__ import annotations

from collections import defaultdict

import pytest

from xlt.corpora import open_corpus
from xlt.data.builders.lmt import (LMT_TEMPLATE, directional_stats, lmt_prompt, rank_auxiliaries,
                                   typological_distances)
from xlt.data.engine import read_records, run_builder
from xlt.data.toy import toy_parallel
from xlt.errors import XltError

LANGS = ["swh", "fra", "deu"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = tmp_path_factory.mktemp("lmt") / "toy.jsonl"
    toy_parallel(path, langs=("eng", "swh", "fra", "deu", "rus"), n=80)
    return f"jsonl:{path}"


def _build(toy, tmp_path, name="o", seed=0, **kw):
    opts = {"corpus": toy, "pivot": "eng", "langs": LANGS, **kw}
    man = run_builder("lmt", tmp_path / f"{name}.jsonl", seed=seed, **opts)
    return read_records(tmp_path / f"{name}.jsonl"), man


def _tables(toy, langs, split="train"):
    corpus = open_corpus(toy)
    return {l: {d.key: d.text for d in corpus.documents(l, split)} for l in langs}


@pytest.mark.parametrize("cap", [0, 1, 2, 3, 7])
def test_reverse_pairs_capped_per_pivot_sentence(toy, tmp_path, cap):
    recs, man = _build(toy, tmp_path, reverse_cap=cap)
    t = _tables(toy, ["eng", *LANGS])
    reverse, available = defaultdict(list), {}
    for r in recs:
        src, tgt = r["langs"]
        assert r["direction"] == f"{src}-{tgt}" and r["origin"] == "real"
        if tgt == "eng":
            reverse[r["key"]].append(src)
            assert r["tgt_text"] == t["eng"][r["key"]] and r["src_text"] == t[src][r["key"]]
    for key in t["eng"]:
        available[key] = [x for x in LANGS if key in t[x]]
    for key, xs in available.items():
        got = reverse.get(key, [])
        assert len(got) == min(cap, len(xs)) <= cap, key  # ≤ cap, and the cap is used when there is enough
        assert len(set(got)) == len(got) and set(got) <= set(xs)
    if cap == 1:  # the kept language is drawn, not always the first available one
        assert len({xs[0] for xs in reverse.values()}) == 3
    stats = man["stats"]["directional_stats"]
    assert stats["after"]["to_pivot"] == sum(map(len, reverse.values()))
    assert stats["before"]["to_pivot"] == sum(map(len, available.values())) == stats["before"]["from_pivot"]
    if cap:
        assert stats["after"]["many_to_one"]["eng"]["partners_max"] == min(cap, 3)
    assert stats["before"]["many_to_one"]["eng"]["partners_max"] == 3


def test_forward_pairs_identical_to_the_full_forward_set(toy, tmp_path):
    corpus = open_corpus(toy)
    full = {(k, "eng", x, a, b) for x in LANGS for k, a, b in corpus.parallel("eng", x, "train")}
    for cap in (0, 1, 5):
        recs, _ = _build(toy, tmp_path, name=f"c{cap}", reverse_cap=cap)
        forward = [(r["key"], *r["langs"], r["src_text"], r["tgt_text"]) for r in recs if r["langs"][0] == "eng"]
        assert len(forward) == len(set(forward)) and set(forward) == full


def test_seed_changes_only_the_reverse_choice(toy, tmp_path):
    a, _ = _build(toy, tmp_path, name="a", seed=0)
    b, _ = _build(toy, tmp_path, name="b", seed=5)
    fwd = lambda rs: [r for r in rs if r["langs"][0] == "eng"]
    rev = lambda rs: [(r["key"], r["langs"][0]) for r in rs if r["langs"][1] == "eng"]
    assert fwd(a) == fwd(b) and rev(a) != rev(b) and len(rev(a)) == len(rev(b))


def test_prompt_is_lmt_template(toy, tmp_path):
    recs, _ = _build(toy, tmp_path)
    r = next(r for r in recs if r["langs"] == ["eng", "swh"])
    assert r["prompt"] == f"Translate the following text from English into Swahili:\nEnglish: {r['src_text']}\nSwahili:"
    assert r["prompt"] == LMT_TEMPLATE.format(src_lang="English", tgt_lang="Swahili", src_text=r["src_text"])
    assert "aux_lang" not in r


def _check_one_aux_line(r, aux_texts, name):
    lines = r["prompt"].split("\n")
    src, tgt = (lmt_prompt(r["langs"][0], r["langs"][1], r["src_text"]).split("\n")[i] for i in (1, 2))
    assert len(lines) == 4 and lines[1] == src and lines[3] == tgt
    assert lines[2] == f"{name}: {aux_texts[r['key']]}" == f"{name}: {r['aux_text']}"
    assert sum(l.startswith(f"{name}: ") for l in lines) == 1


def test_pmp_explicit_language_one_auxiliary_line(toy, tmp_path):
    recs, man = _build(toy, tmp_path, pmp="rus", reverse_cap=3)
    rus = _tables(toy, ["rus"])["rus"]
    assert recs and all(r["aux_lang"] == "rus" for r in recs)
    for r in recs:
        _check_one_aux_line(r, rus, "Russian")
    # records whose key has no Russian sentence are dropped, and counted
    plain, _ = _build(toy, tmp_path, name="plain", reverse_cap=3)
    missing = sum(r["key"] not in rus for r in plain)
    assert man["filters"]["pmp_aux"] == {"kept": len(recs), "dropped": missing} and len(recs) + missing == len(plain)
    assert man["stats"]["pmp_aux_languages"]["eng-swh"] == {"rus": sum(r["langs"] == ["eng", "swh"] for r in recs)}


def test_uriel_distances_match_urielplus():
    pytest.importorskip("urielplus")
    # values urielplus 1.3.2's URIELPlus().new_distance(kind, a, b) gives (default config, angular)
    expected = {"syntactic": (0.3582, 0.5739), "featural": (0.4033, 0.5839), "genetic": (0.6336, 0.9687),
                "phonological": (0.3695, 0.3498), "inventory": (0.4364, 0.6205)}
    for kind, (deu, eus) in expected.items():
        assert typological_distances("eng", ["deu", "eus"], kind) == {"deu": deu, "eus": eus}, kind
    assert rank_auxiliaries("eng", ["swh", "fra", "deu", "rus"]) == ["deu", "fra", "rus", "swh"]


def test_pmp_nearest_takes_the_closest_language_that_has_the_key(toy, tmp_path):
    pytest.importorskip("urielplus")
    recs, man = _build(toy, tmp_path, pmp="nearest", langs=["swh", "fra"], reverse_cap=2)
    t = _tables(toy, ["eng", "swh", "fra", "deu", "rus"])
    # featural distances: to swh: fra .5353 < eng .5467 < rus .5468 < deu .5785; to fra: deu .3904 < eng .4542 <
    # rus .4827 < swh .5353; to eng: deu .4033 < fra .4542 < rus .4975 < swh .5467
    ranked = {("eng", "swh"): ["fra", "rus", "deu"], ("eng", "fra"): ["deu", "rus", "swh"],
              ("swh", "eng"): ["deu", "fra", "rus"], ("fra", "eng"): ["deu", "rus", "swh"]}
    names = {"fra": "French", "deu": "German", "rus": "Russian", "swh": "Swahili"}
    for r in recs:
        want = next(l for l in ranked[tuple(r["langs"])] if r["key"] in t[l])
        assert r["aux_lang"] == want
        _check_one_aux_line(r, t[want], names[want])
    assert {r["aux_lang"] for r in recs if r["langs"] == ["eng", "swh"]} >= {"fra"}
    assert man["stats"]["pmp_aux_languages"]["swh-eng"]["deu"] >= 1


def test_directional_stats_by_hand():
    pairs = [("eng", "swh", "a", "A1"), ("eng", "fra", "a", "A2"), ("swh", "eng", "A1", "a"),
             ("fra", "eng", "A2", "a"), ("eng", "swh", "b", "B1"), ("swh", "eng", "B1", "b"),
             ("deu", "eng", "C", "a")]
    s = directional_stats(pairs, pivot="eng")
    assert s["pairs"] == 7
    assert s["directions"] == {"deu-eng": 1, "eng-fra": 1, "eng-swh": 2, "fra-eng": 1, "swh-eng": 2}
    assert s["to_pivot"] == 4 and s["from_pivot"] == 3
    # "a" in English is the target of A1 (swh), A2 (fra) and C (deu); "b" of B1 only
    assert s["many_to_one"]["eng"] == {"sentences": 2, "pairs": 4, "partners_mean": 2.0, "partners_max": 3,
                                       "with_several": 1}
    assert s["many_to_one"]["swh"] == {"sentences": 2, "pairs": 2, "partners_mean": 1.0, "partners_max": 1,
                                       "with_several": 0}
    # "a" in English is the source of A1 and A2; "b" of B1
    assert s["one_to_many"]["eng"] == {"sentences": 2, "pairs": 3, "partners_mean": 1.5, "partners_max": 2,
                                       "with_several": 1}
    assert set(s["one_to_many"]) == {"eng", "swh", "fra", "deu"}
    # a repeated pair counts in the directions but not as a new partner; records work as input too
    recs = [{"langs": ["swh", "eng"], "src_text": "x", "tgt_text": "y"}] * 2
    r = directional_stats(recs)
    assert r["directions"] == {"swh-eng": 2} and r["many_to_one"]["eng"]["partners_max"] == 1 and "to_pivot" not in r


def test_bad_input_is_one_clear_error_and_no_output(toy, tmp_path):
    cases = [({"pivot": "hin"}, "not in the jsonl"), ({"langs": ["swh", "hin"]}, "not in the jsonl"),
             ({"langs": ["eng"]}, "no language besides the pivot"),
             ({"pmp": "fra"}, "also a translation language"), ({"pmp": "hin"}, "not in the jsonl")]
    for kw, msg in cases:
        with pytest.raises(XltError, match=msg):
            _build(toy, tmp_path, name="bad", **kw)
        assert not (tmp_path / "bad.jsonl").exists()
    with pytest.raises(XltError, match="reverse_cap"):
        _build(toy, tmp_path, name="bad", reverse_cap=-1)


def test_nearest_without_urielplus_says_how_to_fix(toy, tmp_path, monkeypatch):
    import xlt.analyze.langfamilies as lf

    monkeypatch.setattr(lf, "urielplus_csv_dir", lambda: None)
    with pytest.raises(XltError, match="urielplus") as e:
        _build(toy, tmp_path, name="bad", pmp="nearest")
    assert "--pmp LANG" in str(e.value)
    assert not (tmp_path / "bad.jsonl").exists()
