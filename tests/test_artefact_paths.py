"""No artefact xlt writes names a path of the machine it was made on: an ``xlt adapt`` run (a whole model and a LoRA
adapter), an ``xlt merge`` of its output, an ``xlt analyze`` of the run and an ``xlt evaluate`` of its models, every file scanned for the temporary folders' absolute paths, the home
and cache folders and the repository's path."""

import os
import tempfile
from pathlib import Path

import pytest

from merge_fixtures import finetune, write_config
from xlt.util import cache_dir, portable, portable_path

ROOT = Path(__file__).resolve().parents[1]


def needles(*roots: Path) -> set[str]:
    """The absolute paths whose appearance in an artefact ties it to this machine."""
    found = {str(Path.home()) + "/", str(cache_dir()), str(cache_dir().resolve()), str(ROOT),
             str(Path(tempfile.gettempdir()).resolve()) + "/"}
    for r in roots:
        found |= {str(r), str(Path(r).resolve())}
    return {n for n in found if len(n.strip("/")) > 1}  # "/" alone says nothing


def offenders(folder: Path, needles: set[str]) -> list[str]:
    """``file: needle`` for every file under ``folder`` (text or binary) holding one of ``needles``."""
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        out += [f"{path.relative_to(folder)}: {n}" for n in sorted(needles) if n.encode() in data]
    return out


def test_needles_are_found(tmp_path):
    """The scan itself can fail: a file holding the temporary path is reported."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.json").write_text(f'{{"path": "{tmp_path}/model"}}')
    assert offenders(tmp_path, needles(tmp_path)) == [f"sub/x.json: {n}" for n in sorted(needles(tmp_path))
                                                      if n in f"{tmp_path}/model"]


def test_portable_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("XLT_CACHE", str(tmp_path / "cache"))
    run, src = tmp_path / "runs" / "sw", tmp_path / "models" / "src"
    src.mkdir(parents=True)
    assert portable_path(src, run) == os.path.join("..", "..", "models", "src")
    from xlt.models import prepared_path
    from xlt.util import write_json_atomic

    write_json_atomic(prepared_path("smollm2") / "xlt_prepared.json", {"name": "smollm2"})  # as prepare writes it
    assert portable_path(prepared_path("smollm2"), run) == "smollm2"
    assert portable_path(prepared_path("smollm2") / "config.json", run) == "smollm2/config.json"
    assert portable_path(tmp_path / "cache" / "other" / "x", run) == "$XLT_CACHE/other/x"
    assert portable_path("relative/as/given") == "relative/as/given"
    text = {"corpus": f"jsonl:{src}/c.jsonl#text", f"{src}": [f"mapping|corpus:{src}|seed:0"],
            "prose": "bits/byte = nats / ln 2 / bytes; https://ai.google.dev/gemma/terms", "n": 3}
    assert portable(text, run) == {"corpus": "jsonl:../../models/src/c.jsonl#text",
                                   "../../models/src": ["mapping|corpus:../../models/src|seed:0"],
                                   "prose": text["prose"], "n": 3}


def test_no_absolute_path_in_adapt_and_merge_artefacts(tiny_adapt_run, tiny_source_dir, parallel_jsonl, tmp_path):
    from xlt.merge import run as merge

    run_dir = tiny_adapt_run
    other = finetune(run_dir / "overlap", tmp_path / "overlap-ft", seed=1)
    config = write_config(tmp_path / "merge.yml", {"merge_method": "linear", "models": [
        {"model": str(run_dir / "overlap"), "parameters": {"weight": 0.5}},
        {"model": str(other), "parameters": {"weight": 0.5}}], "dtype": "float32"})
    merged = tmp_path / "merged"
    merge(config, merged, show_progress=False)
    from xlt.analyze import analyze

    analysis = tmp_path / "analysis"  # xlt analyze of the run (its source and adapted models) by absolute folder
    analyze([str(run_dir)], "en,sw", "alignment", analysis, corpus=str(parallel_jsonl), ref="en", n=20, heldout=0,
            split="train", options={"n_perm": 5}, show_progress=False)
    from xlt.eval.evaluate import evaluate

    evaluation = tmp_path / "evaluation"  # xlt evaluate of the run's models by absolute folder
    evaluate([str(run_dir / "overlap"), str(merged)], "sw", "bpb", evaluation, corpus=str(parallel_jsonl),
             split="train", show_progress=False)
    roots = [run_dir.parent, tiny_source_dir, parallel_jsonl.parent, tmp_path]
    found = offenders(run_dir, needles(*roots)) + [f"merged/{o}" for o in offenders(merged, needles(*roots))]
    found += [f"{d.name}/{o}" for d in (analysis, evaluation) for o in offenders(d, needles(*roots))]
    assert (run_dir / "overlap" / "README.md").is_file() and (merged / "README.md").is_file()
    assert not found, "absolute paths of this machine in artefacts:\n" + "\n".join(found)


def test_run_folder_finds_its_source_from_anywhere(tiny_adapt_run, tiny_source_dir, tmp_path, monkeypatch):
    """run.json names the source relative to the run folder; `xlt evaluate RUN` finds it whatever the working
    folder."""
    import json

    from xlt.eval.evaluate import resolve_models

    settings = json.loads((tiny_adapt_run / "run.json").read_text())["settings"]
    assert settings["source"] == os.path.relpath(tiny_source_dir, tiny_adapt_run)
    monkeypatch.chdir(tmp_path)
    models = resolve_models([str(tiny_adapt_run)])
    assert Path(models[0].path).resolve() == tiny_source_dir.resolve() and models[0].name == tiny_source_dir.name
    assert sorted(m.name.split("/")[-1] for m in models[1:]) == ["overlap", "overlap+lora"]
