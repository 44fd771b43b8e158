"""xlt evaluate: LangScores, the suites' definitions (premium, forgetting, parity), every registered suite's contract,
and the engine and CLI on tiny models."""

import json

import pytest
from typer.testing import CliRunner

from xlt.errors import XltError
from xlt.eval.evaluate import evaluate
from xlt.eval.parity import best_score, exact_match, normalize_answer, parity, token_f1
from xlt.eval.registry import SUITES, EvalContext, EvalModel
from xlt.eval.scores import LangScores, Score
from xlt.eval.suites.forgetting import forget_percent
from xlt.eval.tokenization import corpus_tokens, token_premium


# -- LangScores ---------------------------------------------------------------------------------------------------
def test_lang_scores_table_roundtrip_and_no_silent_overwrite():
    t = LangScores()
    t.add(model="a", lang="eng", metric="bpb", value=1.0, higher_is_better=False, suite="bpb")
    t.add(Score("a", "swh", "bpb", 2.0, higher_is_better=False, suite="bpb", ci=(1.5, 2.5)))
    with pytest.raises(ValueError, match="two values"):
        t.add(model="a", lang="eng", metric="bpb", value=1.5)
    with pytest.raises(ValueError, match="nan"):
        t.add(model="a", lang="fra", metric="bpb", value=float("nan"))
    back = LangScores.from_list(json.loads(json.dumps(t.as_list())))
    assert back.rows == t.rows and back.table("bpb") == {"a": {"eng": 1.0, "swh": 2.0}}
    assert back.direction("bpb") is False and back.get("a", "swh", "bpb").ci == (1.5, 2.5)


# -- premium (Petrov et al.) ----------------------------------------------------------------------------------------
def _byte_tokenizer():
    """A UTF-8 byte tokenizer: byte-level alphabet, no merges (one token per byte)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_premium_of_a_byte_tokenizer_is_the_byte_ratio_and_survives_duplication():
    tok = _byte_tokenizer()
    texts = {"eng": ["In the beginning.", "And it was so."], "rus": ["В начале.", "И стало так."],
             "cmn": ["起初。", "事就这样成了。"]}
    counts = {k: corpus_tokens(tok, v) for k, v in texts.items()}
    for k, v in texts.items():
        assert counts[k] == len(" ".join(v).encode("utf-8"))
    prem = token_premium(counts, "eng")
    assert prem["eng"] == 1.0
    assert prem["rus"] == len(" ".join(texts["rus"]).encode()) / len(" ".join(texts["eng"]).encode())
    doubled = {k: corpus_tokens(tok, v + v) for k, v in texts.items()}
    # joined with spaces: twice the text plus one space, in every language
    assert token_premium(doubled, "eng")["rus"] == pytest.approx(
        (2 * counts["rus"] + 1) / (2 * counts["eng"] + 1))
    with pytest.raises(XltError, match="relative to eng"):
        token_premium({"rus": 3}, "eng")


# -- forgetting -------------------------------------------------------------------------------------------------
def test_forget_percent_fixtures_and_direction():
    assert forget_percent(0.7884, 0.7645) == pytest.approx(3.03, abs=5e-3)
    assert forget_percent(0.8498, 0.8061) == pytest.approx(5.14, abs=5e-3)
    assert forget_percent(1.0, 1.2, higher_is_better=False) == pytest.approx(20.0)  # bits/byte up: lost
    assert forget_percent(1.0, 0.9, higher_is_better=False) == pytest.approx(-10.0)
    from xlt.eval.suites.forgetting import combine
    from xlt.languages import resolve

    ctx = EvalContext([EvalModel("s", "-", role="source"),
                       EvalModel("a", "-", role="adapted", source="s", source_lang="en", target="sw")],
                      [resolve("en"), resolve("sw")], None)
    scores = LangScores([Score("s", "eng", "bpb", 1.0, higher_is_better=False, suite="bpb"),
                         Score("a", "eng", "bpb", 1.5, higher_is_better=False, suite="bpb"),
                         Score("s", "swh", "bpb", 3.0, higher_is_better=False, suite="bpb"),
                         Score("a", "swh", "bpb", 2.0, higher_is_better=False, suite="bpb"),
                         Score("s", "eng", "off_target", 0.0, higher_is_better=False, suite="off-target"),
                         Score("a", "eng", "off_target", 1.0, higher_is_better=False, suite="off-target")])
    res = combine(ctx, scores, None)
    assert res.scores.value("a", "eng", "forget%:bpb") == pytest.approx(50.0)
    assert res.scores.get("a", "eng", "forget%:off_target") is None  # 0 before: undefined, listed as such
    assert res.details["undefined"] == [{"model": "a", "metric": "off_target", "before": 0.0, "after": 1.0}]
    row = res.details["table"][0]
    assert (row["target_zero_shot"], row["target_adapted"]) == (3.0, 2.0)


# -- parity and MultiLoKo answers ----------------------------------------------------------------------------------
def test_parity_gap_fixtures_and_reference_terms():
    p = parity({"eng": 50.00, "fra": 31.2, "swh": 16.40})
    assert p["gap"] == pytest.approx(33.60) and p["max_lang"] == "eng" and p["min_lang"] == "swh"
    assert parity({"eng": 55.20, "deu": 40.0, "yor": 12.00})["gap"] == pytest.approx(43.20)
    assert p["transfer_ratio"]["swh"] == pytest.approx(16.40 / 50.00)
    assert p["relative_gap"]["fra"] == pytest.approx(50.00 - 31.2)
    assert p["two_se"] == pytest.approx(2 * (sum((v - p["average"]) ** 2 for v in (50, 31.2, 16.4)) / 2 / 3) ** 0.5)
    with pytest.raises(XltError, match="two languages"):
        parity({"eng": 1.0})
    with pytest.raises(XltError, match="needs eng"):
        parity({"fra": 1.0, "deu": 2.0})


def test_answer_normalisation_and_em_below_f1():
    assert normalize_answer("The Answer.") == "answer"
    assert normalize_answer("the answer is: Paris!") == "paris"
    assert normalize_answer("L'Italie", "fr") == "italie"
    pairs = [("The cat sat", "a cat"), ("Paris", "paris."), ("blue whale", "whale"), ("", "x")]
    for p, t in pairs:
        assert exact_match(p, t) <= token_f1(p, t)
    assert token_f1("blue whale", "whale") == pytest.approx(2 / 3)
    assert best_score(exact_match, ["London", "Paris"], ["paris", "Lyon"]) == 1.0


# -- every registered suite (contract) -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_pair(tiny_source_dir):
    from xlt.models import load_model, load_tokenizer

    src = EvalModel("src", str(tiny_source_dir), role="source",
                    loader=lambda: (load_model(tiny_source_dir), load_tokenizer(tiny_source_dir)))
    import torch

    def adapted():
        m = load_model(tiny_source_dir)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
        return m, load_tokenizer(tiny_source_dir)

    ad = EvalModel("run/ad", "(test)", role="adapted", source="src", source_lang="en", target="sw", loader=adapted)
    return [src, ad]


def _ctx(models, parallel_jsonl):
    from xlt.corpora import open_corpus
    from xlt.languages import resolve

    corp = open_corpus(f"jsonl:{parallel_jsonl}")
    return EvalContext(models, [resolve("en"), resolve("sw")], corp, max_bytes=1500)


@pytest.mark.parametrize("name", SUITES.names())
def test_every_suite_labels_its_scores_declares_directions_and_is_deterministic(name, tiny_pair, parallel_jsonl):
    suite = SUITES.get(name)
    assert suite.description and (suite.per_model or suite.combine)
    runs = []
    for _ in range(2):
        ctx = _ctx(tiny_pair, parallel_jsonl)
        ctx.inputs.update(suite.example.get("inputs", {}))
        opts = SUITES.options(name, suite.example.get("options", {}))
        if suite.prepare:
            suite.prepare(ctx, opts)
        scores = LangScores()
        if suite.per_model:
            for m in ctx.models:
                scores.extend(suite.per_model(ctx, m, opts))
        else:  # a combining suite reads other suites' scores
            for m in ctx.models:
                scores.extend(SUITES.get("bpb").per_model(ctx, m, SUITES.options("bpb", {})))
        if suite.combine:
            res = suite.combine(ctx, scores, opts)
            scores.extend(res.scores)
        own = [s for s in scores if s.suite == name]
        assert own or (suite.combine and res.details), name
        for s in own:
            assert s.signature and isinstance(s.higher_is_better, bool) and s.lang in ("eng", "swh")
        runs.append([s.as_dict() for s in scores])
    assert runs[0] == runs[1]


# -- the engine and the CLI ------------------------------------------------------------------------------------------
def test_evaluate_writes_metrics_and_report_and_the_cli_agrees(tiny_source_dir, parallel_jsonl, tmp_path):
    from xlt.cli.main import app

    res = evaluate([str(tiny_source_dir)], "en,sw", "bpb,tokenizer,parity", tmp_path / "ev",
                   corpus=f"jsonl:{parallel_jsonl}", max_bytes=1500, show_progress=False)
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    html = (tmp_path / "ev" / "report.html").read_text()
    assert {s["metric"] for s in m["scores"]} >= {"bpb", "premium", "fertility"}
    assert "Parity across languages" in html and "Tokenizer premium" in html and "<img" in html
    name = tiny_source_dir.name
    assert res.scores.value(name, "eng", "premium") == 1.0
    r = CliRunner().invoke(app, ["evaluate", str(tiny_source_dir), "--langs", "en,sw", "--suite", "bpb",
                                 "--corpus", f"jsonl:{parallel_jsonl}", "--max-bytes", "1500", "--out",
                                 str(tmp_path / "cli"), "--no-progress"])
    assert r.exit_code == 0, r.output
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert [s for s in cli["scores"]] == [s for s in m["scores"] if s["suite"] == "bpb"]


def test_bad_input_is_one_clear_error_and_nothing_is_written(tiny_source_dir, parallel_jsonl, tmp_path, monkeypatch,
                                                            capsys):
    import sys

    from xlt.cli.main import main

    corpus = f"jsonl:{parallel_jsonl}"
    cases = [
        (dict(models=[str(tiny_source_dir)], langs="en,de", corpus=corpus), "not in the"),
        (dict(models=[str(tmp_path / "nope")], langs="en", corpus=corpus), "neither a known name"),
        (dict(models=[str(tiny_source_dir)], langs="en", suites="bpb,parity", corpus=corpus), "at least two"),
        (dict(models=[str(tiny_source_dir)], langs="en,sw", suites="parity", corpus=corpus,
              options={"parity_ref": "fr"}), "needs fra"),
        (dict(models=[str(tiny_source_dir)], langs="en,sw", suites="forgetting", corpus=corpus), "adapted model"),
        (dict(models=[str(tiny_source_dir)], langs="en", suites="bpx", corpus=corpus), "unknown evaluation suite"),
        (dict(models=[str(tiny_source_dir)], langs="en", corpus=corpus, options={"bpb_mod": "x"}), "bpb_mode"),
    ]
    for kw, msg in cases:
        with pytest.raises(XltError, match=msg):
            evaluate(out=tmp_path / "out", show_progress=False, **kw)
        assert not (tmp_path / "out").exists()
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"finished": False, "settings": {"source": "smollm2"}}))
    with pytest.raises(XltError, match="no metrics.json"):
        evaluate([str(run)], "en", corpus=corpus, out=tmp_path / "out", show_progress=False)
    monkeypatch.setattr(sys, "argv", ["xlt", "evaluate", str(tiny_source_dir), "--langs", "en,sw", "--corpus", corpus,
                                      "--suite", "bpb,parity", "-O", "parity_ref=xx", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as e:
        main()
    text = "".join(capsys.readouterr())
    assert e.value.code == 2 and "unknown language code 'xx'" in text and "fix:" in text.lower()
    assert "Traceback" not in text and not (tmp_path / "out").exists()


def test_mt_on_files_scores_every_system_and_tests_them_against_the_first(tmp_path, monkeypatch, capsys):
    import sys

    from xlt.cli.main import main

    refs = ["the cat sat on the mat", "a dog ran in the park", "we went home late", "it rained all day"] * 5
    worse = ["the cat mat", "dog park", "home", "rain"] * 5
    (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n")
    (tmp_path / "same.txt").write_text("\n".join(refs) + "\n")
    (tmp_path / "worse.txt").write_text("\n".join(worse) + "\n")
    (tmp_path / "short.txt").write_text("\n".join(refs[:3]) + "\n")
    res = evaluate(inputs={"refs": tmp_path / "ref.txt", "hyps": {"base": tmp_path / "same.txt",
                                                                   "worse": tmp_path / "worse.txt",
                                                                   "copy": tmp_path / "same.txt"}},
                   options={"mt_bs": 200, "mt_ar": 200, "mt_lang": "en"}, out=tmp_path / "mt", show_progress=False)
    assert res.metrics["settings"]["suites"] == ["mt"]
    assert res.scores.value("base", "eng", "bleu") == pytest.approx(100.0)
    assert res.scores.value("base", "eng", "ter") == 0.0 and res.scores.direction("ter") is False
    assert "nrefs:1" in res.scores.get("base", "eng", "bleu").signature
    for test in ("bs", "ar"):
        rows = {(r["system"], r["metric"]): r for r in res.details["mt"]["tests"][test]["rows"]}
        assert rows["copy", "bleu"]["p"] == 1.0 and rows["worse", "chrf"]["p"] < 0.01
    assert "mt" in (tmp_path / "mt" / "report.html").read_text()
    for hyps, msg in (("base=" + str(tmp_path / "short.txt") + ",b=" + str(tmp_path / "same.txt"), "has 3 lines"),
                      ("base=" + str(tmp_path / "same.txt"), "at least two systems")):
        monkeypatch.setattr(sys, "argv", ["xlt", "evaluate", "--refs", str(tmp_path / "ref.txt"), "--hyps", hyps,
                                          "--out", str(tmp_path / "bad")])
        with pytest.raises(SystemExit) as e:
            main()
        text = "".join(capsys.readouterr())
        assert e.value.code == 2 and msg in text and "Traceback" not in text and not (tmp_path / "bad").exists()


def test_qa_predictions_em_f1_and_multiloko_effects(tmp_path):
    from xlt.eval.parity import paired_effect

    eff = paired_effect({"swh": 40.0, "yor": 20.0, "eng": 60.0}, {"swh": 30.0, "yor": 25.0})
    assert eff["effect"] == pytest.approx(2.5) and eff["n_langs"] == 2 and eff["per_lang"]["yor"] == -5.0
    assert eff["two_se"] == pytest.approx(2 * 7.5)  # sd of (10, -5) = 10.607 / sqrt(2)
    recs = [{"lang": "sw", "prediction": "Nairobi", "answers": ["Nairobi"]},
            {"lang": "sw", "prediction": "Mombasa", "answers": ["Dodoma"]},
            {"lang": "sw", "asked_in": "en", "prediction": "nairobi", "answers": ["Nairobi"]},
            {"lang": "sw", "asked_in": "en", "prediction": "Arusha", "answers": ["Dodoma"]},
            {"lang": "sw", "source": "translated", "prediction": "x", "answers": ["y"]},
            {"lang": "sw", "source": "translated", "prediction": "y", "answers": ["y", "z"]},
            {"lang": "en", "prediction": "The Thames.", "answers": ["thames"]},
            {"lang": "en", "prediction": "blue whale", "answers": ["whale"]}]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = evaluate(inputs={"qa": path}, out=tmp_path / "qa", show_progress=False)
    assert res.metrics["settings"]["suites"] == ["qa"]
    assert res.scores.value("predictions", "swh", "em") == 50.0
    assert res.scores.value("predictions", "eng", "em") == 50.0
    assert res.scores.value("predictions", "eng", "f1") == pytest.approx((100 + 200 / 3) / 2)
    d = res.details["qa"]["predictions"]
    assert d["mother_tongue_effect"]["per_lang"] == {"swh": 0.0}
    assert d["locality_effect"]["per_lang"] == {"swh": 0.0}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"lang": "sw", "prediction": "x"}\n')
    with pytest.raises(XltError, match="lacks answers"):
        evaluate(inputs={"qa": bad}, out=tmp_path / "bad", show_progress=False)


def test_review_fixes_edges_of_the_suites(tiny_pair, parallel_jsonl, tmp_path):
    from xlt.corpora import open_corpus
    from xlt.eval.harness import _load
    from xlt.eval.suites.forgetting import combine
    from xlt.eval.suites.mt import _examples
    from xlt.eval.suites.offtarget import OffTargetOptions, _prompts
    from xlt.eval.suites.qa import _records
    from xlt.eval.suites.tasks import metric_name
    from xlt.languages import resolve

    # forgetting with nothing defined lists it instead of failing
    ctx = EvalContext(tiny_pair, [resolve("en")], None)
    only = LangScores([Score("src", "eng", "off_target", 0.0, higher_is_better=False, suite="off-target"),
                       Score("run/ad", "eng", "off_target", 1.0, higher_is_better=False, suite="off-target")])
    assert combine(ctx, only, None).details["undefined"][0]["metric"] == "off_target"
    # parity against a reference scored 0: no ratio (never NaN)
    assert parity({"eng": 0.0, "swh": 0.2})["transfer_ratio"] == {}
    # zero-shot translation prompts have no examples
    ctx = _ctx(tiny_pair, parallel_jsonl)
    assert _examples(ctx, "eng", "swh", 0) == []
    # languages written without spaces get character prompts
    ctx.corpus, ctx._texts["cmn"] = None, ["起初神创造天地。地是空虚混沌，渊面黑暗。"] * 3
    assert _prompts(ctx, resolve("zh"), OffTargetOptions(off_target_n=3))[0][0] == "起初神创造天地。地是空虚"  # 2 × 6 characters
    # a script tag does not split a task's metric by language
    assert metric_name("belebele_swh_Latn", "swh", "acc") == "belebele/acc"
    assert metric_name("xlt_bible_next_swh", "swh", "acc") == "bible_next/acc"
    # bad QA records are one clear error each
    for rec, msg in (({"lang": "sw", "prediction": "x", "answers": []}, "non-empty list"),
                     ({"lang": "sw", "prediction": 5, "answers": ["x"]}, "string or a list"),
                     ({"lang": "sw", "prediction": "x", "answers": ["x"], "source": "Local"}, "not local")):
        with pytest.raises(XltError, match=msg):
            _records([rec])
    # a corpus that is not parallel is refused before the premium divides by nothing
    lone = tmp_path / "lone.jsonl"
    lone.write_text("".join(json.dumps({"id": f"{lang}{i}", "lang": lang, "text": f"word{i} {lang} text here"})
                            + "\n" for lang in ("en", "sw") for i in range(200)))
    ctx2 = EvalContext(tiny_pair, [resolve("en"), resolve("sw")], open_corpus(f"jsonl:{lone}"))
    with pytest.raises(XltError, match="parallel"):
        ctx2.parallel_texts(ctx2.langs)
    # a PEFT model goes to lm-eval through its base model (which carries the adapters)
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_pair[0].load()
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert _load(wrapped, tok)[0] is wrapped.get_base_model()


def test_languages_a_suite_needs_are_scored_by_every_suite(tiny_pair, parallel_jsonl, tmp_path):
    """forgetting needs the source language; bpb and tasks prepared afterwards score it too."""
    res = evaluate(list(tiny_pair), "sw", "bpb,tasks,forgetting", tmp_path / "o", corpus=f"jsonl:{parallel_jsonl}",
                   max_bytes=1500, options={"task_n": 4}, show_progress=False)
    pairs = {(s.suite, s.lang) for s in res.scores}
    assert {("bpb", "eng"), ("tasks", "eng"), ("bpb", "swh"), ("tasks", "swh")} <= pairs
    metrics = set(res.scores.metrics())
    undefined = {u["metric"] for u in res.details["forgetting"]["undefined"]}
    assert "forget%:bpb" in metrics
    for m in (m for m in metrics if m.startswith("bible_")):  # each task metric: a Forget %, or listed as undefined
        assert f"forget%:{m}" in metrics or m in undefined, m
