"""``xlt data instruct``: language shares follow p_l ∝ n_l^(1/T) (chi-square), modes put the right language on each
side, online CoT restates the same key in a third language, code-switched demonstrations, template YAML errors,
chat-template rendering."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xlt.corpora import open_corpus
from xlt.data.builders.instruct import (BLANK, BUILTIN_TEMPLATES, language_probabilities, load_templates,
                                        parse_templates, render_plain)
from xlt.data.engine import read_records, run_builder
from xlt.data.toy import toy_dictionary, toy_sentences
from xlt.errors import XltError

SIZES = {"swh": 240, "fra": 80, "deu": 20}


@pytest.fixture(scope="module")
def unequal(tmp_path_factory):
    """A parallel corpus whose languages have different numbers of documents (English has them all)."""
    path = tmp_path_factory.mktemp("instruct") / "unequal.jsonl"
    dicts = {l: toy_dictionary(l) for l in ("eng", *SIZES)}
    with open(path, "w", encoding="utf-8") as fh:
        for i, sent in enumerate(toy_sentences(max(SIZES.values()), seed=3)):
            for l in ("eng", *SIZES):
                if l == "eng" or i < SIZES[l]:
                    text = " ".join(dicts[l][w] for w in sent.split()) + f" {i}"  # unique texts
                    fh.write(json.dumps({"id": f"k{i}", "lang": l, "text": text}, ensure_ascii=False) + "\n")
    return f"jsonl:{path}"


def _texts(spec, langs=("eng", *SIZES), split="train"):
    corpus = open_corpus(spec)
    return {l: {d.key: d.text for d in corpus.documents(l, split)} for l in langs}


def _build(spec, tmp_path, name="o", seed=0, **kw):
    opts = {"corpus": spec, "pivot": "eng", "langs": list(SIZES), **kw}
    man = run_builder("instruct", tmp_path / f"{name}.jsonl", seed=seed, **opts)
    return read_records(tmp_path / f"{name}.jsonl"), man


def _x(rec):
    return next(l for l in rec["langs"] if l != "eng")


def test_probabilities_formula():
    counts = {"a": 100, "b": 25, "c": 1}
    assert language_probabilities(counts, 1.0) == pytest.approx({"a": 100 / 126, "b": 25 / 126, "c": 1 / 126})
    assert language_probabilities(counts, 2.0) == pytest.approx({"a": 10 / 16, "b": 5 / 16, "c": 1 / 16})
    assert language_probabilities(counts, 1e6) == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, abs=1e-4)
    assert language_probabilities({"a": 5, "b": 0}, 1.0) == {"a": 1.0}
    with pytest.raises(XltError, match="not positive"):
        language_probabilities(counts, 0)


@pytest.mark.parametrize("temp", [1.0, 2.5, 1000.0])
def test_language_shares_match_temperature_sampling(unequal, tmp_path, temp):
    from scipy.stats import chisquare

    t = _texts(unequal)
    n = {x: sum(k in t["eng"] for k in t[x]) for x in SIZES}  # usable documents: with a pivot translation
    assert n["swh"] > 2 * n["fra"] > 4 * n["deu"]  # clearly unequal sizes, so the temperature matters
    recs, man = _build(unequal, tmp_path, balance_temp=temp, n_records=2000, modes=["x2pivot"],
                       templates=["translation"])
    assert len(recs) == 2000
    observed = np.array([sum(_x(r) == x for r in recs) for x in SIZES])
    w = np.array([n[x] for x in SIZES], dtype=float) ** (1 / temp)
    expected = w / w.sum() * 2000
    assert chisquare(observed, expected).pvalue > 0.01
    if temp == 1.0:  # the test has power: a uniform split is rejected
        assert chisquare(observed, np.full(3, 2000 / 3)).pvalue < 1e-6
    if temp == 1000.0:
        assert chisquare(observed, np.full(3, 2000 / 3)).pvalue > 0.01
    stats = man["stats"]["languages"]
    assert {x: s["documents"] for x, s in stats.items()} == n
    assert {x: s["records"] for x, s in stats.items()} == dict(zip(SIZES, observed.tolist()))
    # every record is a usable document of its language
    for r in recs[:200]:
        assert r["key"] in t[_x(r)] and r["key"] in t["eng"]


def test_default_record_count_is_the_usable_documents(unequal, tmp_path):
    t = _texts(unequal)
    recs, _ = _build(unequal, tmp_path)
    assert len(recs) == sum(k in t["eng"] for x in SIZES for k in t[x])


@pytest.mark.parametrize("mode", ["x2pivot", "pivot2x", "translate"])
def test_modes_put_the_right_language_on_each_side(unequal, tmp_path, mode):
    t = _texts(unequal)
    recs, _ = _build(unequal, tmp_path, modes=[mode], n_records=150, templates=["cloze", "continuation"])
    for r in recs:
        x = _x(r)
        p, a = (x, "eng") if mode != "pivot2x" else ("eng", x)
        assert r["langs"] == [p, a] and r["mode"] == mode
        user, assistant = r["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert assistant["content"] == t[a][r["key"]]  # x2pivot: the answer is the pivot text
        words = t[p][r["key"]].split()
        if mode == "translate":  # always the translation task, whatever the templates
            assert r["template"] == "translation" and user["content"].endswith(t[p][r["key"]])
        elif r["template"] == "continuation":
            assert " ".join(words[: max(1, len(words) // 2)]) + " ..." in user["content"]
        else:
            masked = user["content"].rsplit("\n", 1)[1].split()
            assert len(masked) == len(words) and masked.count(BLANK) == 1
            assert [w for w, m in zip(words, masked) if m != BLANK] == [m for m in masked if m != BLANK]
    if mode != "translate":
        assert {r["template"] for r in recs} == {"cloze", "continuation"}


def test_online_cot_restates_the_same_key_in_a_third_language(unequal, tmp_path):
    t = _texts(unequal)
    recs, _ = _build(unequal, tmp_path, online_cot=True, n_records=300, modes=["x2pivot", "pivot2x"])
    names = {"eng": "English", "swh": "Swahili", "fra": "French", "deu": "German"}
    used = set()
    for r in recs:
        p, a = r["langs"]
        c = r["cot_lang"]
        third = [l for l in ("eng", *SIZES) if l not in (p, a) and r["key"] in t[l]]
        assert (c in third) if third else c == a
        restated, answer = r["messages"][-1]["content"].split("\n")
        assert restated == f"{names[c]}: {t[c][r['key']]}"
        assert answer == f"{names[a]}: {t[a][r['key']]}"
        used.add(c)
    assert used >= {"fra", "deu", "swh"}  # drawn at random, not always the same language


def test_online_cot_with_two_languages_restates_in_the_answer_language(unequal, tmp_path):
    recs, _ = _build(unequal, tmp_path, langs=["deu"], online_cot=True, n_records=20, modes=["x2pivot"])
    assert all(r["cot_lang"] == "eng" for r in recs)


def test_code_switched_demonstrations(unequal, tmp_path):
    t = _texts(unequal)
    eng_words = {w for s in t["eng"].values() for w in s.split()}
    for ratio in (0.0, 1.0):
        recs, _ = _build(unequal, tmp_path, name=f"d{ratio}", langs=["swh"], demos=2, demo_ratio=ratio,
                         n_records=40, modes=["x2pivot"], templates=["translation"])
        switched = 0
        for r in recs:
            assert len(r["messages"]) == 6 and [m["role"] for m in r["messages"]] == ["user", "assistant"] * 3
            assert len(set(r["demo_keys"])) == 2 and r["key"] not in r["demo_keys"]
            for dk, (q, ans) in zip(r["demo_keys"], zip(r["messages"][0:4:2], r["messages"][1:4:2])):
                assert ans["content"] == t["eng"][dk]
                shown = q["content"].split("\n")[1].removeprefix("Swahili: ").split()
                source = t["swh"][dk].split()
                assert len(shown) == len(source)  # the toy is word for word
                switched += sum(s != w for s, w in zip(shown, source))
                assert all(s == w or s in eng_words for s, w in zip(shown, source))
        if ratio == 0.0:
            assert switched == 0
        else:  # IBM-1 aligns nearly every cipher word to its English word on this corpus
            total = sum(len(t["swh"][dk].split()) for r in recs for dk in r["demo_keys"])
            assert switched > 0.8 * total


YAML_OK = """
question:
  prompt: "Q ({src_lang} to {tgt_lang}): {src_text}"
  answer: "A: {tgt_text}"
"""


@pytest.mark.parametrize("text,msg", [
    ("a: [1, 2\n", "not valid YAML at line"),
    ("- a\n- b\n", "must be a mapping"),
    ("", "empty file"),
    ("t: just text\n", "not a mapping"),
    ("t: {prompt: '{src_text}'}\n", "lacks answer"),
    ("t: {prompt: '{src_text}', answer: '{tgt_text}', extra: 1}\n", "unknown key"),
    ("t: {prompt: '{source}', answer: '{tgt_text}'}\n", r"unknown placeholder\(s\) \{source\}"),
    ("t: {prompt: 'no text here {tgt_lang}', answer: '{tgt_text}'}\n", "would not carry the document"),
    ("t: {prompt: '{src_text', answer: '{tgt_text}'}\n", "not a valid template string"),
    ("t: {prompt: '{src_text}', answer: ''}\n", "answer must be a non-empty"),
])
def test_template_yaml_errors_are_clear(tmp_path, text, msg):
    f = tmp_path / "t.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(XltError, match=msg):
        load_templates(f)


def test_user_templates_are_used_and_unknown_names_refused(unequal, tmp_path):
    t = _texts(unequal)
    f = tmp_path / "t.yaml"
    f.write_text(YAML_OK, encoding="utf-8")
    recs, man = _build(unequal, tmp_path, templates_file=str(f), modes=["pivot2x"], n_records=30)
    names = {"swh": "Swahili", "fra": "French", "deu": "German"}
    for r in recs:
        x = _x(r)
        assert r["template"] == "question"
        assert r["messages"] == [{"role": "user", "content": f"Q (English to {names[x]}): {t['eng'][r['key']]}"},
                                 {"role": "assistant", "content": f"A: {t[x][r['key']]}"}]
    assert "templates" in man["inputs"]
    both, _ = _build(unequal, tmp_path, name="both", templates_file=str(f), templates=["question", "cloze"],
                     modes=["x2pivot"], n_records=60)
    assert {r["template"] for r in both} == {"question", "cloze"}
    with pytest.raises(XltError, match="unknown template"):
        _build(unequal, tmp_path, name="bad", templates=["summary"])
    with pytest.raises(XltError, match="does not exist"):
        _build(unequal, tmp_path, name="bad", templates_file=str(tmp_path / "nope.yaml"))
    assert not (tmp_path / "bad.jsonl").exists()


def _word_tokenizer(folder, chat_template):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(str(folder))
    return folder


CHAT = "{% for m in messages %}[{{ m['role'] | upper }}]{{ m['content'] }}{{ eos_token }}{% endfor %}"


def test_chat_template_renders_text(unequal, tmp_path):
    from transformers import AutoTokenizer

    folder = _word_tokenizer(tmp_path / "tok", CHAT)
    recs, man = _build(unequal, tmp_path, tokenizer=str(folder), n_records=10, demos=1)
    tok = AutoTokenizer.from_pretrained(str(folder))
    for r in recs:
        assert r["text"] == tok.apply_chat_template(r["messages"], tokenize=False)
        assert r["text"] == "".join(f"[{m['role'].upper()}]{m['content']}</s>" for m in r["messages"])
    assert any(k.startswith("tokenizer/") for k in man["inputs"])
    plain, _ = _build(unequal, tmp_path, name="plain", n_records=10, demos=1)
    assert [r["messages"] for r in plain] == [r["messages"] for r in recs]  # the tokenizer changes only `text`
    assert all(r["text"] == render_plain(r["messages"]) for r in plain)
    assert plain[0]["text"].startswith("<|user|>\n")


def test_tokenizer_without_chat_template_is_refused(unequal, tmp_path):
    folder = _word_tokenizer(tmp_path / "tok", None)
    with pytest.raises(XltError, match="no chat template"):
        _build(unequal, tmp_path, name="bad", tokenizer=str(folder), n_records=5)
    assert not (tmp_path / "bad.jsonl").exists()


def test_bad_options_are_clear(unequal, tmp_path):
    with pytest.raises(XltError, match="modes"):
        _build(unequal, tmp_path, name="bad", modes=["x2y"])
    with pytest.raises(XltError, match="balance_temp"):
        _build(unequal, tmp_path, name="bad", balance_temp=0)
    with pytest.raises(XltError, match="not in the jsonl"):
        _build(unequal, tmp_path, name="bad", langs=["hin"])
    assert not (tmp_path / "bad.jsonl").exists()


def test_builtin_templates_pass_the_user_file_validation():
    for t in BUILTIN_TEMPLATES.values():
        assert parse_templates({t.name: {"prompt": t.prompt, "answer": t.answer}})[t.name] == t
