"""The xlt analyze engine: every registered analysis on tiny models, one capture pass, the files, bad input."""

import json

import pytest

from xlt.errors import XltError


@pytest.fixture(scope="module")
def corpus(parallel_jsonl):
    return f"jsonl:{parallel_jsonl}"


@pytest.fixture(scope="module")
def dense(tiny_source_dir):
    from xlt.models import load_model, load_tokenizer

    return load_model(tiny_source_dir), load_tokenizer(tiny_source_dir)


def _run(models, corpus, out=None, analyses=None, langs="en,sw", **kw):
    from xlt.analyze import analyze

    kw.setdefault("n", 40)
    kw.setdefault("heldout", 12)
    kw.setdefault("split", "train")  # the tiny corpus's test split has only 25 aligned sentences
    options = {"n_perm": 20, "neuron_min_tokens": 100, "ablation_texts": 12}
    if analyses:
        from xlt.analyze.registry import ANALYSES

        names = ANALYSES.parse(analyses)
        keys = {f for n in names for f in ANALYSES.get(n).options.__dataclass_fields__}
        options = {k: v for k, v in options.items() if k in keys}
    return analyze(models, langs, analyses, out, corpus=corpus, ref="en", options=options,
                   show_progress=False, **kw)


def test_every_default_analysis_runs_on_a_dense_model_and_writes_its_files(dense, corpus, tmp_path):
    from xlt.analyze.registry import ANALYSES

    out = tmp_path / "an"
    res = _run([("tiny", *dense)], corpus, out)
    data = json.loads((out / "analysis.json").read_text())
    html = (out / "analysis.html").read_text()
    assert data["settings"]["langs"] == ["eng", "swh"] and data["settings"]["n"] == 40
    ran = {name for name, by_model in data["results"].items() if by_model}
    skipped = {r["analysis"] for r in data["skipped"]}
    defaults = {n for n, a in ANALYSES.all().items() if a.default}
    assert ran | skipped == defaults and not ran & skipped
    assert "alignment" in ran and "routing" in skipped  # a dense model has no router
    a = data["results"]["alignment"]["tiny"]
    assert a["layers"] == 3 and set(a["per_lang"]) == {"swh"}
    assert all(0 <= x <= 1 for x in a["per_lang"]["swh"]["retrieval"])
    assert "Alignment with the reference language" in html and "Not applicable" in html
    for name in ran:
        assert not any(k.startswith("_") for k in data["results"][name]["tiny"])  # side data stays out of the json
    if "neurons" in ran:
        assert sorted(p.name for p in (out / "tiny" / "neurons").iterdir()) == ["eng.json", "swh.json"]
    assert res.results["alignment"]["tiny"]["best"]["swh"]["layer"] in range(3)


def test_in_memory_model_equals_its_saved_folder(dense, tiny_source_dir, corpus):
    a = _run([("tiny", *dense)], corpus, analyses="alignment", n=24, heldout=0)
    b = _run([str(tiny_source_dir)], corpus, analyses="alignment", n=24, heldout=0)
    ra, rb = a.results["alignment"]["tiny"], b.results["alignment"][tiny_source_dir.name]
    for k in ("retrieval", "cos_delta", "cka_linear"):
        assert ra["per_lang"]["swh"][k] == pytest.approx(rb["per_lang"]["swh"][k], abs=1e-6)


def test_bad_input_is_one_clear_error_and_writes_nothing(dense, corpus, tmp_path):
    with pytest.raises(XltError, match="mixture-of-experts") as e:  # named explicitly, routing must apply
        _run([("tiny", *dense)], corpus, tmp_path / "r", analyses="routing", n=8, heldout=0)
    assert "upcycle" in str(e.value)
    assert not (tmp_path / "r").exists()
    with pytest.raises(XltError, match="yor"):
        _run([("tiny", *dense)], corpus, analyses="alignment", n=8, langs="en,yor")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(XltError, match="not empty"):
        _run([("tiny", *dense)], corpus, tmp_path / "full", analyses="alignment", n=8)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["x"]
    with pytest.raises(XltError, match="unknown analysis"):
        _run([("tiny", *dense)], corpus, analyses="alignmnet", n=8)


def test_fewer_than_four_pairs_is_refused(dense, corpus):
    from xlt.analyze import aligned_texts
    from xlt.corpora import open_corpus

    corp = open_corpus(corpus)
    with pytest.raises(XltError, match="fewer than 4"):
        aligned_texts(_Truncated(corp, 3), ["eng", "swh"], "eng", n=40)


class _Truncated:
    """A corpus with only the first ``k`` documents of each language."""

    def __init__(self, corp, k):
        self.corp, self.k = corp, k

    def documents(self, lang, split=None):
        return list(self.corp.documents(lang, split))[: self.k]
