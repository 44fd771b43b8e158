"""Model cards (README.md) of the folders xlt writes: valid front matter with the hub's keys, the results table equal
to metrics.json, a load snippet that runs, and merge cards that list their inputs."""

import json
import re

import pytest
import yaml

from xlt.report.card import (CardInfo, adapt_card_info, folder_format, front_matter, hub_license, language_code,
                             parse_card, render_card)


def card(folder):
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    meta, body = parse_card(text)
    assert meta == yaml.safe_load(text.split("---\n")[1])  # plain YAML between the two fences
    return meta, body


def table_rows(body: str, head: str) -> list[list[str]]:
    """The rows of the Markdown table whose header starts with ``head``."""
    lines = body.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {head}"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def snippet(body: str) -> str:
    return re.search(r"## How to load it\n.*?```python\n(.*?)```", body, re.S).group(1)


def test_codes_and_licences():
    assert language_code("swh") == language_code("sw") == "sw"
    assert language_code("nya") == "ny" and language_code("gaz") == "om"
    assert language_code("haw") == "haw"  # no ISO 639-1 code: ISO 639-3
    from xlt.models.prepare import PREPARERS

    assert hub_license(PREPARERS["smollm2"]["licence"]) == "apache-2.0"
    assert hub_license(PREPARERS["gemma3"]["licence"]) == "gemma"
    assert hub_license("some custom terms") is None and hub_license(None) is None


def test_render_is_valid_yaml_and_leaves_unknown_licence_out():
    info = CardInfo(title="t", summary="s: with a colon", format="peft", base_model="smollm2", languages=["sw"],
                    tags=["init:overlap"], datasets=["bible"], results=[
                        {"model": "m", "split": "dev", "bits_per_byte": 1.5, "signature": "bpb|split:dev|xlt:0"}])
    meta, body = parse_card(render_card(info))
    assert meta == front_matter(info)
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-generation" and "license" not in meta
    assert meta["tags"][0] == "xlt" and meta["datasets"] == ["bible"]
    assert "not known to xlt" in body
    assert table_rows(body, "model") == [["m", "dev", "1.5000", "`bpb\\|split:dev\\|xlt:0`"]]
    with pytest.raises(ValueError):
        render_card(CardInfo(title="t", summary="s", format="gguf"))


def test_adapt_cards_front_matter(tiny_adapt_run, tiny_source_dir):
    out = tiny_adapt_run
    run = json.loads((out / "metrics.json").read_text())
    for key, fmt in (("overlap", "transformers"), ("overlap+lora", folder_format(out / "overlap+lora"))):
        meta, body = card(out / key)
        assert meta["language"] == ["sw"]
        assert meta["base_model"] == tiny_source_dir.name  # a name, never a path
        assert meta["library_name"] == fmt
        assert meta["pipeline_tag"] == "text-generation"
        assert {"xlt", "cross-lingual-transfer", "init:overlap", f"method:{run['inits'][key]['method']}"} <= set(meta["tags"])
        assert "license" not in meta and "not known to xlt" in body  # the tiny source names no licence
        assert "xlt adapt" in body and "--method full,lora" in body and "--init overlap" in body
    assert card(out / "overlap")[0]["library_name"] == "transformers"
    assert card(out / "overlap+lora")[0]["library_name"] in ("peft", "xlt")  # peft once the adapter carries the vocabulary


def test_adapt_card_results_equal_metrics(tiny_adapt_run):
    out = tiny_adapt_run
    run = json.loads((out / "metrics.json").read_text())
    for key in ("overlap", "overlap+lora"):
        m = json.loads((out / key / "metrics.json").read_text())
        assert m == run["inits"][key]
        rows = table_rows(card(out / key)[1], "model")
        want = [(m["history"]["eval"][0], "dev"), (m["history"]["eval"][-1], "dev"), (m["test"], "test"),
                (run["reference"]["dev"], "dev"), (run["reference"]["test"], "test")]
        assert len(rows) == len(want)
        for row, (rec, split) in zip(rows, want):
            assert row[1] == split
            assert float(row[2]) == pytest.approx(rec["bits_per_byte"], abs=5e-5)
            assert row[3] == "`" + rec["signature"].replace("|", "\\|") + "`"
        assert "no transfer" in rows[-1][0]
        premium = dict((r[0], float(r[1])) for r in table_rows(card(out / key)[1], "tokenizer"))
        table = run["tokenization"]["table"]
        assert premium["target"] == pytest.approx(table["target"]["premium"], abs=5e-5)
        assert premium["source"] == pytest.approx(table["source"]["premium"], abs=5e-5)


def test_card_snippet_loads_the_model(tiny_adapt_run, tiny_source_dir):
    """The card's own load code, run on the folder, gives the logits of xlt's loader."""
    import torch

    from xlt.adapt.methods import load_adapted

    out = tiny_adapt_run
    for key in ("overlap", "overlap+lora"):
        code = snippet(card(out / key)[1])
        code = re.sub(r'^folder = .*$', f"folder = {str(out / key)!r}", code, flags=re.M)
        code = re.sub(r'^base = .*$', f"base = {str(tiny_source_dir)!r}", code, flags=re.M)
        scope = {}
        exec(compile(code, f"{key}/README.md", "exec"), scope)
        model, tok = scope["model"].eval(), scope["tokenizer"]
        ids = tok("Kali muna to", return_tensors="pt").input_ids
        ref = load_adapted(out / key, base=tiny_source_dir).eval()
        with torch.no_grad():
            assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-6), key


def test_merge_card_lists_inputs(tiny_adapt_run, tmp_path):
    from merge_fixtures import finetune, write_config
    from xlt.merge import run as merge

    other = finetune(tiny_adapt_run / "overlap", tmp_path / "overlap-ft", seed=1)
    config = write_config(tmp_path / "m.yml", {"merge_method": "linear", "models": [
        {"model": str(tiny_adapt_run / "overlap"), "parameters": {"weight": 0.5}},
        {"model": str(other), "parameters": {"weight": 0.5}}]})
    merge(config, tmp_path / "merged", show_progress=False)
    meta, body = card(tmp_path / "merged")
    assert meta["library_name"] == "transformers" and meta["base_model"] == ["overlap", "overlap-ft"]
    assert meta["base_model_relation"] == "merge" and meta["language"] == ["sw"]  # from the inputs' cards
    assert {"xlt", "merge", "merge:linear"} <= set(meta["tags"])
    inputs = table_rows(body, "model")
    assert [r[0] for r in inputs] == ["overlap", "overlap-ft"]
    assert inputs[1][1] == "../overlap-ft" and "merge_method: linear" in body
    code = re.sub(r'^folder = .*$', f"folder = {str(tmp_path / 'merged')!r}", snippet(body), flags=re.M)
    exec(compile(code, "merged/README.md", "exec"), scope := {})
    assert scope["model"].config.vocab_size == len(scope["tokenizer"]) == 350


def test_adapt_card_info_before_the_run_ends():
    """The card written with the model (before the run's metrics exist) says where the reference will be."""
    settings = {"source": "smollm2", "target": "swh", "corpus": "bible", "inits": ["mean"], "methods": ["lora"],
                "vocab_size": 8000, "source_lang": "eng", "train": {"steps": 300, "stage1_steps": 100, "batch_size": 8,
                                                                      "grad_accum": 1, "seq_len": 256, "seed": 0}}
    model = {"init": "mean", "method": "lora", "history": {"eval": [{"bits_per_byte": 3.0, "signature": "a"},
                                                                    {"bits_per_byte": 2.0, "signature": "b"}]},
             "test": {"bits_per_byte": 2.1, "signature": "c"}}
    import inspect

    from xlt.adapt import AdaptSettings

    defaults = {k: p.default for k, p in inspect.signature(AdaptSettings.create).parameters.items()}
    info = adapt_card_info({"settings": settings, "target_language": {"code": "swh", "name": "Swahili"}}, "mean+lora",
                           model, "peft", "apache-2.0", "inherited", defaults)
    meta, body = parse_card(render_card(info))
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["bible"] and meta["base_model"] == "smollm2"
    assert meta["base_model_relation"] == "adapter"
    assert "metrics.json once the run has finished" in body and "614,400" in body  # 300 × 8 × 256 tokens
    assert "xlt models prepare smollm2" in body and "PeftModel.from_pretrained" in body
    assert info.command == "xlt adapt --init mean --method lora"
    every = adapt_card_info({"settings": settings}, "mean+lora", model, "peft").command  # no defaults: every option
    assert every.startswith("xlt adapt --source smollm2 --target swh --corpus bible --init mean --method lora --steps 300")


def test_export_card_carries_the_source_card(tiny_adapt_run, tmp_path):
    """An ``xlt export`` output's card keeps its source card's metadata and results, as a transformers model."""
    export = pytest.importorskip("xlt.export").export

    src_meta, src_body = card(tiny_adapt_run / "overlap+lora")
    export(tiny_adapt_run / "overlap+lora", tmp_path / "hf")
    meta, body = card(tmp_path / "hf")
    assert meta["library_name"] == "transformers" and meta["base_model"] == src_meta["base_model"]
    assert meta["language"] == ["sw"] and {"exported", "init:overlap", "method:lora"} <= set(meta["tags"])
    assert table_rows(body, "model") == table_rows(src_body, "model")  # the results carried over
    assert "xlt adapt" in body and "AutoModelForCausalLM.from_pretrained(folder)" in body


def test_export_card_info_is_pure():
    from xlt.report.card import export_card_info

    src = render_card(CardInfo(title="src → Swahili (mean+sft)", summary="What it is.", format="xlt",
                               base_model="smollm2", languages=["sw"], license="apache-2.0", tags=["method:sft"],
                               details=[("init", "mean")], results=[{"model": "mean+sft", "split": "test",
                                                                     "bits_per_byte": 2.0, "signature": "s"}]))
    meta, body = parse_card(render_card(export_card_info(src, "mean+sft", "sft", "bf16")))
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "transformers" and meta["language"] == ["sw"]
    assert meta["base_model"] == "smollm2" and "method:sft" in meta["tags"] and "exported" in meta["tags"]
    assert "What it is." in body and "| init | mean |" in body and "stored in bf16" in body
    assert table_rows(body, "model") == [["mean+sft", "test", "2.0000", "`s`"]]
