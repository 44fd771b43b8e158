"""URIEL+ distances (xlt.predict.distances) against urielplus 1.3.2: the reference's fixture values, its own
``new_distance`` on 6 languages, the zero-vector and no-shared-feature rules on hand-made vectors, NaN + reason where
urielplus gives -1, codes, the on-disk cache, and the typology overlaps."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

from xlt.errors import XltError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("urielplus") is None,
                                reason="urielplus (URIEL+ data) not installed")

BIBLE = ["eng", "spa", "fra", "ita", "por", "deu", "tgl", "arb", "cmn", "jpn", "rus", "pol", "ron", "hin", "ben",
         "tur", "swh", "kor", "pes", "ind", "vie", "ukr", "nya"]
# anchors-analysis-eval.md §4.2: urielplus 1.3.2, URIELPlus().new_distance(kind, a, b), default configuration
FIXTURE = {"syntactic": (0.3582, 0.5739), "phonological": (0.3695, 0.3498), "inventory": (0.4364, 0.6205),
           "genetic": (0.6336, 0.9687), "geographic": (0.0437, 0.0446), "featural": (0.4033, 0.5839),
           "script": (0.1864, 0.1864)}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XLT_CACHE", str(tmp_path / "cache"))


def test_fixture_values_eng_deu_eus():
    from xlt.predict.distances import ALL_KINDS, distances

    d = distances(["eng", "deu", "eus"])
    assert d.kinds == ALL_KINDS and set(ALL_KINDS) == set(FIXTURE)
    for kind, (deu, eus) in FIXTURE.items():
        assert round(d.get(kind, "eng", "deu"), 4) == deu, kind
        assert round(d.get(kind, "eng", "eus"), 4) == eus, kind


def test_symmetric_zero_diagonal_nan_exactly_where_a_reason_is():
    from xlt.predict.distances import distances

    langs = BIBLE + ["eus", "lvs", "nob", "ekk"]  # lvs: no typological data; nob, ekk: all-zero family vectors
    d = distances(langs, cache=False)
    assert d.langs == tuple(langs)
    for kind in d.kinds:
        m = d.matrix(kind)
        assert m.shape == (len(langs), len(langs)) and not m.flags.writeable
        assert np.array_equal(m, m.T, equal_nan=True), kind
        assert np.all(np.diag(m) == 0.0), kind
        ok = ~np.isnan(m)
        assert np.all((m[ok] >= 0) & (m[ok] <= 1)), kind  # never -1
        for i, a in enumerate(langs):
            for j, b in enumerate(langs):
                assert (d.reason(kind, a, b) is None) == bool(ok[i, j]), (kind, a, b)
    # urielplus' quirk, kept: two languages with no family feature both get the uniform vector -> genetic 0
    assert d.get("genetic", "nob", "ekk") == 0.0 and d.get("genetic", "nob", "eng") > 0.9


def test_nan_with_reason_where_urielplus_gives_minus_one():
    from xlt.predict.distances import distances

    d = distances(BIBLE, cache=False)
    lacking = {"phonological": {"ita", "por", "arb", "ukr", "nya"}, "inventory": {"arb", "nya"},
               "script": {"cmn", "pes"}}
    for kind in d.kinds:
        m = d.matrix(kind)
        nan = np.isnan(m)
        no_data = {a for i, a in enumerate(d.langs) if nan[i].sum() == len(d.langs) - 1}
        assert no_data == lacking.get(kind, set()), kind
        # and every NaN is a pair with one of them
        assert all(d.langs[i] in no_data or d.langs[j] in no_data for i, j in zip(*np.nonzero(nan))), kind
    assert math.isnan(d.get("phonological", "arb", "eng"))
    assert d.reason("phonological", "eng", "arb") == d.reason("phonological", "arb", "eng")
    assert d.reason("phonological", "eng", "arb").startswith("URIEL+ has no phonological data for arb")
    assert "ara" in d.reason("phonological", "eng", "arb")  # points at the macrolanguage that has data
    assert d.reason("phonological", "ita", "arb").startswith("URIEL+ has no phonological data for arb")
    assert "or ita" in d.reason("phonological", "ita", "arb")
    assert d.reason("script", "eng", "deu") is None


def test_macro_fallback_uses_the_macrolanguage_row():
    from xlt.predict.distances import distances

    d = distances(["cmn", "pes", "eng"], "script", macro_fallback=True)
    assert d.substitutions == {("script", "cmn"): "zho", ("script", "pes"): "fas"} and not d.reasons
    # urielplus 1.3.2: new_distance("script", "zho", "eng") = 0.5126, ("fas", "eng") = 0.5574
    assert round(d.get("script", "cmn", "eng"), 4) == 0.5126 and round(d.get("script", "pes", "eng"), 4) == 0.5574
    assert math.isnan(distances(["cmn", "eng"], "script").get("script", "cmn", "eng"))


def test_angular_rule_on_hand_made_vectors():
    from xlt.predict.distances import pairwise_angular

    vals = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                     [1.0, 0.0, 0.0]])
    has = np.array([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0], [0, 0, 1], [1, 1, 0]], bool)
    d, shared = pairwise_angular(vals, has)
    assert d[0, 3] == pytest.approx(0.5)          # (1,0) vs (1,1): 45 degrees, 2(pi/4)/pi
    assert d[0, 1] == pytest.approx(0.5)          # a zero vector is the uniform (1,1)/sqrt 2
    assert d[1, 2] == 0.0                         # two zero vectors: cos 1
    assert d[0, 5] == 0.0                         # identical vectors: exactly 0
    assert np.isnan(d[0, 4]) and shared[0, 4] == 0  # no feature both have
    assert np.all(np.diag(d) == 0.0) and shared[0, 3] == 2


def test_equal_to_urielplus_new_distance():
    pytest.importorskip("urielplus")
    import logging

    from urielplus.urielplus import URIELPlus

    from xlt.predict.distances import ALL_KINDS, WORD_ORDER, distances, typology_overlaps

    langs = ["eng", "deu", "fra", "swh", "hin", "cmn"]
    d = distances(langs, cache=False)
    logging.disable(logging.INFO)
    try:
        u = URIELPlus()  # copies the released arrays into its package folder if they are missing (tests only)
        for kind in ALL_KINDS:
            for i, a in enumerate(langs):
                for b in langs[i + 1:]:
                    try:
                        ref = u.new_distance(kind, a, b)
                    except ValueError as e:  # "No shared ... features": NaN here, with a reason
                        assert "No shared" in str(e) and math.isnan(d.get(kind, a, b)), (kind, a, b)
                        assert d.reason(kind, a, b)
                        continue
                    assert abs(round(d.get(kind, a, b), 4) - float(ref)) <= 1.0001e-4, (kind, a, b)
                    assert abs(d.get(kind, a, b) - float(ref)) <= 5.01e-5, (kind, a, b)
        # the word-order overlap from urielplus' own union-aggregated syntax vectors
        names = [f for f in u.feats[1] if str(f).startswith("S_")]
        vecs = u.get_vector("syntactic", "eng", "deu", "hin")
        for a, b in (("eng", "deu"), ("eng", "hin")):
            pairs = [(x, y) for f, x, y in zip(names, vecs[a], vecs[b]) if WORD_ORDER.search(str(f))
                     and x != -1 and y != -1]
            got = typology_overlaps(a, b)
            assert got["word_order_features"] == len(pairs)
            assert got["word_order_overlap"] == pytest.approx(sum(x == y for x, y in pairs) / len(pairs))
    finally:
        logging.disable(logging.NOTSET)


def test_codes_are_resolved_and_unknown_languages_refused():
    from xlt.predict.distances import distances, uriel_code

    d = distances(["en", "sw", "swh", "swa"], "syntactic")
    assert d.langs == ("eng", "swh")
    assert d.get("syntactic", "en", "sw") == d.get("syntactic", "eng", "swh")
    assert uriel_code("zh") == "cmn" and uriel_code("ajp") == "ajp"  # retired ISO code URIEL+ still has
    with pytest.raises(XltError, match=r"URIEL\+ has no data for cnr \(Montenegrin\)") as e:
        distances(["eng", "cnr"])
    assert "srp" in e.value.fix
    with pytest.raises(XltError, match="no data for cls"):
        uriel_code("cls")
    with pytest.raises(XltError, match="morphological"):
        distances(["eng", "deu"], "morphological")
    with pytest.raises(XltError, match="did you mean syntactic"):
        distances(["eng", "deu"], "syntax")
    with pytest.raises(XltError, match="not one of"):
        d.get("syntactic", "eng", "deu")


def test_cache_hit_is_identical_and_a_corrupt_file_is_recomputed(tmp_path, monkeypatch):
    import xlt.predict.distances as D

    first = D.distances(["eng", "arb", "deu"], ["phonological", "genetic"])
    files = sorted((tmp_path / "cache" / "predict").glob("*.json"))
    assert len(files) == 2 and not list((tmp_path / "cache" / "predict").glob(".*"))  # no temporary file left
    assert all(json.loads(f.read_text())["langs"] == ["arb", "deu", "eng"] for f in files)

    def boom(*a, **k):
        raise AssertionError("computed instead of read from the cache")

    with monkeypatch.context() as m:
        m.setattr(D, "_compute", boom)
        again = D.distances(["deu", "eng", "arb"], ["genetic", "phonological"])  # same set, other order
    for kind in ("phonological", "genetic"):
        for a in first.langs:
            for b in first.langs:
                x, y = first.get(kind, a, b), again.get(kind, a, b)
                assert x == y or (math.isnan(x) and math.isnan(y))
    assert again.reasons == first.reasons
    for f in files:
        f.write_text('{"format": 1, "langs": [', encoding="utf-8")
    fixed = D.distances(["eng", "arb", "deu"], ["phonological", "genetic"])
    for kind in ("phonological", "genetic"):
        assert np.array_equal(fixed.matrix(kind), first.matrix(kind), equal_nan=True)
    assert all(json.loads(f.read_text())["kinds"] for f in files)  # rewritten whole


def test_frame_and_json():
    from xlt.predict.distances import Distances, distances

    d = distances(["eng", "arb", "deu"], ["phonological", "script"], cache=False)
    df = d.to_frame()
    assert list(df.columns) == ["kind", "a", "b", "distance"] and len(df) == 2 * 9
    row = df[(df.kind == "script") & (df.a == "eng") & (df.b == "deu")]
    assert float(row.distance.iloc[0]) == d.get("script", "eng", "deu")
    back = Distances.from_json(d.to_json())
    assert back.langs == d.langs and back.reasons == d.reasons and back.urielplus_version == "1.3.2"
    for kind in d.kinds:
        assert np.array_equal(back.matrix(kind), d.matrix(kind), equal_nan=True)
    assert "NaN" not in d.to_json()  # strict JSON: NaN is null


def test_typology_overlaps():
    from xlt.predict.distances import typology_overlaps

    for lang in ("eus", "eng", "lvs", "cmn"):
        o = typology_overlaps(lang, lang)
        assert (o["same_script"], o["word_order_overlap"], o["morphology_overlap"]) == (1, 1.0, 1.0)
    o = typology_overlaps("eus", "eng")
    # URIEL+ 1.3.2: eus and eng both have 44 of the 55 word-order features and agree on 29
    assert o["same_script"] == 1 and o["word_order_features"] == 44 and o["word_order_overlap"] == 29 / 44
    assert math.isnan(o["morphology_overlap"]) and "Grambank" in o["reasons"]["morphology_overlap"]
    assert typology_overlaps("eng", "eus")["word_order_overlap"] == o["word_order_overlap"]
    assert typology_overlaps("eng", "rus")["same_script"] == 0 and typology_overlaps("rus", "ukr")["same_script"] == 1
    none = typology_overlaps("eng", "lvs")
    assert math.isnan(none["word_order_overlap"]) and "for lvs" in none["reasons"]["word_order_overlap"]
