"""The data engine itself, with a builder defined here (removed from the registry after each test)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from xlt.corpora import open_corpus
from xlt.data.engine import BuildContext, command_line, read_records, run_builder
from xlt.data.registry import BUILDERS
from xlt.errors import XltError
from xlt.options import option


@dataclass
class _Opts:
    path: str = option("", "a text file")
    fail_at: int = option(-1, "raise at this record (-1: never)")
    bad: str = option("", "which common field to break")


class _Lines:
    description = "test builder: one record per line with a random number"
    options = _Opts
    seeded = True

    def records(self, ctx, o):
        corpus = open_corpus(f"text:{o.path}", "eng")
        for chunk in ctx.chunks(corpus.iter_documents("eng")):
            for doc in chunk:
                if int(doc.key) - 1 == o.fail_at:
                    raise RuntimeError("builder failed")
                rec = {"key": doc.key, "langs": ["eng"], "origin": "real", "text": doc.text,
                       "r": float(ctx.rng(doc.key).random())}
                if o.bad:
                    rec[o.bad] = None
                if ctx.keep("short", len(doc.text) < 30):
                    yield rec


@pytest.fixture
def lines(tmp_path):
    BUILDERS.all()
    BUILDERS.add("_lines", _Lines())
    p = tmp_path / "in.txt"
    p.write_text("".join(f"line number {i}\n" for i in range(1, 8)) + "a much longer line that the filter drops\n")
    yield str(p)
    BUILDERS.entries.pop("_lines")


def test_manifest_counts_filters_hashes_and_command(lines, tmp_path):
    man = run_builder("_lines", tmp_path / "o.jsonl", seed=3, path=lines)
    assert man["records"] == 7 and man["filters"] == {"short": {"kept": 7, "dropped": 1}}
    assert json.loads((tmp_path / "o.manifest.json").read_text()) == man
    assert man["command"] == f"xlt data _lines --path {man['options']['path']} --fail-at -1 --bad '' --seed 3 --out {man['command'].split('--out ')[1]}"
    recs = read_records(tmp_path / "o.jsonl")
    assert [r["builder"] for r in recs] == ["_lines"] * 7 and list(recs[0])[:2] == ["builder", "key"]


def test_record_randomness_depends_on_seed_and_key_only(lines, tmp_path):
    a = read_records(run_builder("_lines", tmp_path / "a.jsonl", seed=3, path=lines) and tmp_path / "a.jsonl")
    ctx = BuildContext("_lines", seed=3)
    assert [r["r"] for r in a] == [float(ctx.rng(str(i)).random()) for i in range(1, 8)]
    assert BuildContext("_lines", seed=3).rng(("a", 1)).random() == ctx.rng(("a", 1)).random()
    assert BuildContext("_lines", seed=4).rng("1").random() != ctx.rng("1").random()
    assert BuildContext("other", seed=3).rng("1").random() != ctx.rng("1").random()


def test_failure_leaves_nothing(lines, tmp_path):
    with pytest.raises(RuntimeError):
        run_builder("_lines", tmp_path / "o.jsonl", path=lines, fail_at=4, chunk_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


@pytest.mark.parametrize("field,msg", [("key", "no string 'key'"), ("langs", "no 'langs'"), ("origin", "origin None")])
def test_bad_record_is_one_clear_error(lines, tmp_path, field, msg):
    with pytest.raises(XltError, match=msg):
        run_builder("_lines", tmp_path / "o.jsonl", path=lines, bad=field)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_no_records_and_unknown_builder_and_option(lines, tmp_path):
    empty = tmp_path / "e.txt"
    empty.write_text("a line far too long to pass the short-line filter of this builder\n")
    with pytest.raises(XltError, match="produced no records.*short"):
        run_builder("_lines", tmp_path / "o.jsonl", path=str(empty))
    with pytest.raises(XltError, match="unknown data builder"):
        run_builder("_linez", tmp_path / "o.jsonl")
    with pytest.raises(XltError, match="unknown option 'pth'"):
        run_builder("_lines", tmp_path / "o.jsonl", pth=lines)


def test_text_corpus_streams(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("one\n\ntwo\nthree\n")
    corpus = open_corpus(f"text:{p}", "eng")
    it = corpus.iter_documents("eng")
    assert next(it).text == "one"
    assert corpus._docs is None, "iterating must not load the whole file"
    assert [d.key for d in it] == ["3", "4"]
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(XltError, match="empty or whitespace"):
        list(open_corpus(f"text:{tmp_path / 'empty.txt'}", "eng").iter_documents("eng"))


def test_command_line_quotes():
    assert command_line("b", {"x": "a b", "flag": True, "off": False, "none": None}, "o.jsonl", 0) == \
        "xlt data b --x 'a b' --flag --no-off --seed 0 --out o.jsonl"


def test_cli_command_made_from_the_options(lines, tmp_path):
    import typer
    from typer.testing import CliRunner

    from xlt.cli.data import _make_command

    app = typer.Typer()
    app.command("_lines")(_make_command("_lines", BUILDERS.get("_lines")))
    app.command("other")(lambda: None)
    r = CliRunner().invoke(app, ["_lines", "--help"])
    assert r.exit_code == 0 and "--fail-at" in r.output and "raise at this record" in r.output
    r = CliRunner().invoke(app, ["_lines", "--path", lines, "--seed", "3", "--out", str(tmp_path / "c.jsonl")])
    assert r.exit_code == 0, r.output
    py = run_builder("_lines", tmp_path / "p.jsonl", seed=3, path=lines)
    assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "p.jsonl").read_bytes()
    assert json.loads((tmp_path / "c.manifest.json").read_text())["options"] == py["options"]


def test_command_line_lists_are_comma_separated():
    assert command_line("b", {"langs": ["sw", "fr"]}, "o.jsonl", 1) == "xlt data b --langs sw,fr --seed 1 --out o.jsonl"


def test_folder_output_has_ordinary_permissions(lines, tmp_path):
    import os
    import stat

    run_builder("_lines", tmp_path / "folder", path=lines)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o777 & ~mask


def test_jsonl_corpus_streams_and_splits_pairs_together(tmp_path):
    from xlt.data.toy import toy_parallel

    p = tmp_path / "toy.jsonl"
    toy_parallel(p, ("eng", "swh"), n=200)
    corpus = open_corpus(f"jsonl:{p}")
    it = corpus.iter_documents("swh", "train")
    first = next(it)
    assert corpus._docs is None, "streaming must not load the documents"
    assert corpus.keyed and first.key
    streamed = [first] + list(it)
    loaded = open_corpus(f"jsonl:{p}").documents("swh", "train")
    assert streamed == loaded
    pairs = corpus.parallel("eng", "swh", "train")
    assert len(pairs) == len(loaded), "a verse and its translation are in the same split"
    assert sum(len(corpus.parallel("eng", "swh", s)) for s in ("train", "dev", "test")) == 200
