"""``xlt adapt`` end to end on a tiny locally trained model and a synthetic parallel corpus."""

import json
import sys

import pytest

from xlt.adapt import TrainingInterrupted, run
from xlt.errors import XltError

ARGS = dict(target="sw", init="overlap,mean,random", steps=6, stage1_steps=3, vocab_size=350, batch_size=4,
            seq_len=32, eval_every=2, eval_max_bytes=3000, samples=2, show_progress=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_source_dir, parallel_jsonl):
    out = tmp_path_factory.mktemp("runs") / "sw"
    res = run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=out, **ARGS)
    return out, res


def test_outputs_load_with_plain_transformers(finished_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, res = finished_run
    for name in ("overlap", "mean", "random"):
        model = AutoModelForCausalLM.from_pretrained(out / name)
        tok = AutoTokenizer.from_pretrained(out / name)
        assert model.config.vocab_size == len(tok) == 350
        ids = tok("Kali muna", return_tensors="pt").input_ids
        assert model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False).shape[1] == ids.shape[1] + 3
        assert (out / name / "transfer_mapping.npz").is_file() and (out / name / "metrics.json").is_file()
    assert (out / "report.html").is_file() and json.loads((out / "run.json").read_text())["finished"]
    assert not (out / ".work").exists()


def test_metrics_are_complete_and_consistent(finished_run):
    out, res = finished_run
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["summary"]) == {"overlap", "mean", "random"}
    for name, r in m["inits"].items():
        steps = [e["step"] for e in r["history"]["eval"]]
        assert steps == [0, 2, 4, 6]
        assert len(r["history"]["train"]) == 6
        assert m["summary"][name]["bpb_step0"] == r["history"]["eval"][0]["bits_per_byte"]
    assert m["summary"]["random"]["steps_saved_ratio"] == pytest.approx(1.0)
    for row in m["summary"].values():
        assert row["reached_at_step0"] == (row["steps_to_random_final"] == 0)
    c = m["comparisons"]["overlap_vs_random_step0"]
    assert c["bits_per_byte_lower_by"] == pytest.approx(m["summary"]["random"]["bpb_step0"] - m["summary"]["overlap"]["bpb_step0"])
    assert m["tokenization"]["parallel_with"] == "eng" and "premium" in m["tokenization"]["table"]["target"]
    assert m["reference"]["dev"]["bits_per_byte"] > 0
    from xlt.precision import bf16_support

    ok, why = bf16_support()
    assert m["precision"] == {"requested": "auto", "train": "bf16" if ok else "fp32", "eval": "fp32", "device": "cpu",
                              "bf16_supported": ok, "reason": why, "note": m["precision"]["note"]}
    assert m["settings"]["train"]["precision"] == m["precision"]["train"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "steps-saved ratio" in html and "http" not in html.split("<body>")[1]


def test_overlap_beats_random_at_step0(finished_run):
    """The source model was trained on a language sharing the syllable inventory: copying shared rows helps."""
    m = finished_run[1].metrics
    assert m["summary"]["overlap"]["bpb_step0"] < m["summary"]["random"]["bpb_step0"]


def test_finished_run_is_refused_unless_overwrite(finished_run, tiny_source_dir, parallel_jsonl):
    out, _ = finished_run
    with pytest.raises(XltError, match="already holds a finished run") as e:
        run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=out, **ARGS)
    assert "--overwrite" in e.value.fix


def test_overwrite_starts_an_unfinished_run_over(tmp_path, tiny_source_dir, parallel_jsonl):
    """--overwrite on an interrupted run with the same settings starts over instead of resuming."""
    out = tmp_path / "sw"
    args = {**ARGS, "init": "mean"}
    with pytest.raises(TrainingInterrupted):
        run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=out, interrupt_at=2, **args)
    marker = out / ".work" / "stale.txt"
    marker.write_text("from an older run")
    with pytest.raises(TrainingInterrupted):
        run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=out, interrupt_at=1, overwrite=True, **args)
    assert not marker.exists()


def test_interrupted_run_resumes_to_the_same_result(tmp_path, tiny_source_dir, parallel_jsonl, finished_run):
    out = tmp_path / "sw"
    args = {**ARGS, "init": "overlap,random"}
    with pytest.raises(TrainingInterrupted):
        run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=out, interrupt_at=3, **args)
    assert not (out / "overlap").exists() and not (out / "report.html").exists()  # nothing half-written
    res = run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=out, **args)
    ref = finished_run[1].metrics
    for name in ("overlap", "random"):
        assert [h["loss"] for h in res.metrics["inits"][name]["history"]["train"]] == \
               [h["loss"] for h in ref["inits"][name]["history"]["train"]]
        assert [e["bits_per_byte"] for e in res.metrics["inits"][name]["history"]["eval"]] == \
               [e["bits_per_byte"] for e in ref["inits"][name]["history"]["eval"]]


def test_unfinished_run_with_other_settings_is_refused(tmp_path, tiny_source_dir, parallel_jsonl):
    out = tmp_path / "sw"
    with pytest.raises(TrainingInterrupted):
        run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=out, interrupt_at=1, **{**ARGS, "init": "mean"})
    with pytest.raises(XltError, match="unfinished run with other settings"):
        run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=out, **{**ARGS, "init": "mean", "steps": 8})


# ---- bad input through the CLI: one clear error, exit code 2, no traceback, nothing written --------------
def cli(monkeypatch, capsys, *args):
    from xlt.cli.main import main

    monkeypatch.setattr(sys, "argv", ["xlt", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    cap = capsys.readouterr()
    return e.value.code, cap.out + cap.err


def _adapt(src, corpus, out, *extra):
    return ["adapt", "--source", src, "--corpus", corpus, "--out", out, "--steps", "2", "--vocab-size", "350",
            "--batch-size", "2", "--seq-len", "16", "--no-progress", *extra]


def _corrupt_copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    f = dst / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return dst


@pytest.mark.parametrize("case", ["unknown language", "language not in corpus", "empty corpus", "non-utf8 corpus",
                                  "missing source", "corrupt safetensors", "vocab too small", "unknown init"])
def test_bad_input_one_clear_error(case, tmp_path, monkeypatch, capsys, tiny_source_dir, parallel_jsonl):
    src, corpus, extra = str(tiny_source_dir), str(parallel_jsonl), []
    target = "sw"
    expect = {"unknown language": "unknown language code 'xq'", "language not in corpus": "Hindi (hin) is not in",
              "empty corpus": "empty or whitespace only", "non-utf8 corpus": "is not UTF-8",
              "missing source": "does not exist", "corrupt safetensors": "corrupt or truncated",
              "vocab too small": "smaller than the 3 special tokens", "unknown init": "unknown init method 'wechsle'"}[case]
    if case == "unknown language":
        target = "xq"
    elif case == "language not in corpus":
        target = "hi"
    elif case == "empty corpus":
        (tmp_path / "e.txt").write_text("  \n\n", encoding="utf-8")
        corpus = str(tmp_path / "e.txt")
    elif case == "non-utf8 corpus":
        (tmp_path / "l.txt").write_bytes("caf\xe9\n".encode("latin-1"))
        corpus = str(tmp_path / "l.txt")
    elif case == "missing source":
        src = str(tmp_path / "nowhere")
    elif case == "corrupt safetensors":
        src = str(_corrupt_copy(tiny_source_dir, tmp_path / "corrupt"))
    elif case == "vocab too small":
        extra = ["--vocab-size", "2"]
    elif case == "unknown init":
        extra = ["--init", "overlap,wechsle"]
    out = tmp_path / "out"
    code, text = cli(monkeypatch, capsys, *_adapt(src, corpus, out, "--target", target, *extra))
    assert code == 2, text
    assert "error:" in text and expect in text and "fix:" in text
    assert "Traceback" not in text
    assert not out.exists()


def test_cli_refuses_finished_run(finished_run, monkeypatch, capsys, tiny_source_dir, parallel_jsonl):
    out, _ = finished_run
    code, text = cli(monkeypatch, capsys, *_adapt(str(tiny_source_dir), str(parallel_jsonl), out))
    assert code == 2 and "already holds a finished run" in text and "--overwrite" in text


def test_every_command_has_help(monkeypatch, capsys):
    for cmd in (["--help"], ["adapt", "--help"], ["inits", "--help"], ["models", "--help"], ["models", "prepare", "--help"],
                ["models", "list", "--help"], ["corpus", "stats", "--help"]):
        code, text = cli(monkeypatch, capsys, *cmd)
        assert code == 0 and "Usage" in text


def test_python_api_and_cli_share_defaults():
    import inspect

    from xlt.adapt import run as api
    from xlt.cli.main import adapt as cmd

    api_defaults = {k: v.default for k, v in inspect.signature(api).parameters.items()}
    for name, p in inspect.signature(cmd).parameters.items():
        key = {"progress": "show_progress"}.get(name, name)
        default = p.default.default
        if key in api_defaults and key not in ("out",):
            assert default == api_defaults[key], name


def test_published_methods_end_to_end(tmp_path, tiny_source_dir, parallel_jsonl, monkeypatch):
    """wechsel and focus through `xlt adapt` on the tiny parallel corpus: vectors trained, dictionary induced."""
    pytest.importorskip("fasttext")
    monkeypatch.setenv("XLT_CACHE", str(tmp_path / "cache"))
    opts = {"fasttext_min_count": 2, "fasttext_epochs": 2, "focus_min_count": 2}
    res = run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=tmp_path / "sw",
              **{**ARGS, "init": "wechsel,focus", "steps": 2, "stage1_steps": 1, "eval_every": 1}, init_options=opts, loo_tokens=30,
              multihead=True)
    m = res.metrics
    for name in ("wechsel", "focus"):
        r = m["inits"][name]
        assert r["transfer"]["rows_by_evidence"].get("neighbours", 0) > 0
        assert r["leave_one_out"]["tokens"] == 30 and -1 <= r["leave_one_out"]["mean_cosine"] <= 1
        assert m["summary"][name]["loo_cosine"] == r["leave_one_out"]["mean_cosine"]
    assert m["inits"]["wechsel"]["transfer"]["dictionary"].startswith("induced:")
    assert "Comparison without training" in (tmp_path / "sw" / "report.html").read_text()
    from xlt.vocab.multihead import load_multihead

    mh = load_multihead(tmp_path / "sw" / "focus").use_head("eng")  # the source head kept beside the new one
    assert len(mh.tokenizer) == mh.model.get_output_embeddings().weight.shape[0] != len(load_multihead(tmp_path / "sw" / "focus").tokenizer)


def test_init_options_parse():
    from xlt.cli.main import parse_options

    assert parse_options(["k=3", "flag=true", "path=x.bin", "t=0.5"], "d.tsv") == {
        "k": 3, "flag": True, "path": "x.bin", "t": 0.5, "dictionary": "d.tsv"}
    with pytest.raises(XltError, match="KEY=VALUE"):
        parse_options(["novalue"])


def test_romanized_run(tmp_path, tiny_source_dir, source_texts, target_texts, monkeypatch):
    """--romanize: a Cyrillic-script target is adapted on its uroman romanisation; the reference is given in both scripts."""
    pytest.importorskip("uroman")
    monkeypatch.setenv("XLT_CACHE", str(tmp_path / "cache"))
    cyr = str.maketrans("aeiouklmnprstdzhbw", "аеиоуклмнпрстдзхбв")
    path = tmp_path / "ru.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for i, (s, t) in enumerate(zip(source_texts, target_texts)):
            fh.write(json.dumps({"id": i, "lang": "en", "text": s}) + "\n")
            fh.write(json.dumps({"id": i, "lang": "ru", "text": t.lower().translate(cyr)}) + "\n")
    res = run(source=str(tiny_source_dir), corpus=str(path), out=tmp_path / "ru",
              **{**ARGS, "target": "ru", "init": "overlap", "steps": 2, "stage1_steps": 1, "eval_every": 1}, romanize=True,
              loo_tokens=10)
    ref = res.metrics["reference"]
    assert "native_script_dev" in ref and ref["native_script_dev"]["bytes"] > ref["dev"]["bytes"]  # Cyrillic: 2 bytes/letter
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "ru" / "overlap")
    assert tok.decode(tok("kali muna").input_ids) == "kali muna"
    html = (tmp_path / "ru" / "report.html").read_text()
    assert "romanised" in html and "per native byte" in html
    # both scripts' units: the same NLL per native-script byte of the same documents
    o = res.metrics["summary"]["overlap"]
    f = ref["dev"]["bytes"] / ref["native_script_dev"]["bytes"]
    assert o["bpb_final_per_native_byte"] == pytest.approx(o["bpb_final"] * f) and f < 1
    assert o["test_bpb_final_per_native_byte"] == pytest.approx(
        o["test_bpb_final"] * ref["test"]["bytes"] / ref["native_script_test"]["bytes"])
    from xlt.adapt.pipeline import _eval_texts
    from xlt.corpora import open_corpus
    from xlt.data import RomanizedCorpus, romanize_texts
    from xlt.languages import resolve

    native = open_corpus(str(path))
    roman, nat = _eval_texts(RomanizedCorpus(native, resolve("ru")), native, resolve("ru"), "dev", 400)
    assert len(roman) == len(nat) >= 1 and sum(len(t.encode()) + 1 for t in nat) <= 400 + len(nat[0].encode()) + 1
    assert roman == [" ".join(r.split()) for r in romanize_texts(nat, "rus")]  # the same documents, in order


def test_steps_to_reach_interpolates_between_evaluations():
    from xlt.adapt import steps_to_reach

    ev = [{"step": 0, "bits_per_byte": 5.0}, {"step": 10, "bits_per_byte": 3.0}, {"step": 20, "bits_per_byte": 2.0}]
    assert steps_to_reach(ev, 4.0) == 5.0 and steps_to_reach(ev, 2.5) == 15.0
    assert steps_to_reach(ev, 6.0) == 0.0 and steps_to_reach(ev, 1.0) is None


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path, tiny_source_dir, parallel_jsonl):
    f = tmp_path / "taken.txt"
    f.write_text("not a run folder")
    with pytest.raises(XltError, match="is a file, not a folder") as e:
        run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=f, **ARGS)
    assert "folder" in e.value.fix and f.read_text() == "not a run folder"
    with pytest.raises(XltError, match="is a file"):
        run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=f / "sub", **ARGS)


def test_settings_object_and_keywords_give_the_same_run_settings(tiny_source_dir, parallel_jsonl):
    from xlt.adapt import AdaptSettings

    s = AdaptSettings.create(source=str(tiny_source_dir), corpus=str(parallel_jsonl), target="swa", init="overlap",
                             steps=9)
    assert s.target == "swh" and s.train.stage1_steps == 3 and s.train.eval_every == 1
    with pytest.raises(TypeError, match="either settings or keyword"):
        run(s, "x", steps=3)
    with pytest.raises(XltError, match=r"unknown option 'wechsel_kk'") as e:
        AdaptSettings.create(init="overlap,wechsel", init_options={"wechsel_kk": 5})
    assert "did you mean wechsel_k?" in e.value.fix


def test_auto_precision_is_fp32_without_bf16_hardware_and_says_why(monkeypatch):
    from xlt import precision
    from xlt.adapt import AdaptSettings
    from xlt.adapt.pipeline import precision_record

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(precision, "device_type", lambda: "cpu")
    s = AdaptSettings.create(init="overlap")
    rec = precision_record(s)
    assert s.train.precision == "fp32" and rec["train"] == "fp32" and rec["bf16_supported"] is False
    assert "none of avx512_bf16, amx_bf16" in rec["reason"]
    with pytest.raises(XltError, match="--precision bf16 was asked for"):
        AdaptSettings.create(init="overlap", precision="bf16")


def test_analyze_at_the_end_of_a_run_is_linked_from_its_report(tmp_path, tiny_source_dir, parallel_jsonl):
    out = tmp_path / "sw"
    args = {**ARGS, "init": "overlap"}
    run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=out,
        analyze={"n": 40, "heldout": 8, "split": "train", "analyses": "alignment,lens",
                 "options": {"n_perm": 10}}, **args)
    data = json.loads((out / "analysis" / "analysis.json").read_text())
    assert [m["role"] for m in data["models"]] == ["source", "adapted"]  # the source and the adapted model
    assert data["settings"]["langs"] == ["eng", "swh"] and data["settings"]["ref"] == "eng"
    metrics = json.loads((out / "metrics.json").read_text())
    (entry,) = metrics["analyses"]
    assert entry["report"] == "analysis/analysis.html" and set(entry["best_retrieval"]) == {m["name"] for m in
                                                                                            data["models"]}
    assert "Analyses (xlt analyze)" in (out / "report.html").read_text()
    # a corpus that is not parallel is refused before any training
    mono = tmp_path / "mono.txt"
    mono.write_text("\n".join(f"sentensi ya {i} hapa" for i in range(200)), encoding="utf-8")
    with pytest.raises(XltError, match="--analyze needs eng and swh texts aligned"):
        run(source=str(tiny_source_dir), corpus=f"text:{mono}", out=tmp_path / "mono", analyze=True, **args)
    assert not (tmp_path / "mono").exists()
