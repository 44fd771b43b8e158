"""Benchmark: span F1 of ``xlt data project`` (T-Projection) per scorer on 100 hand-checked Bible verses, en→sw.

    python bench/project.py [--scorer lm,ibm1|ibm1|lm] [--model smollm2] [--threads N]
                            [--out bench/results/project_names_en_sw.json] [--keep DIR]

**The data file** ``bench/data/project_names_en_sw.jsonl`` holds, one line per verse, only the verse id
(``book:chapter:verse``), the SHA-256 of the English and of the Swahili verse text of the ``bible`` corpus (UTF-8),
and the English (``eng``) and Swahili (``swh``) name spans as ``{start, end, label}`` character offsets: no verse
text, no span text (corpus text is never committed). A corpus whose verse text changed is refused (the offsets would
no longer fit).

**The gold** (made by hand, each verse read in both languages): 100 verses of the corpus's held-out test books with
person or place names. The candidates were the capitalised words of every test verse; the verses are *Joel*: all
19 with a name; *1 John*: all 13; *Colossians*: the 20 that name someone or somewhere other than "Christ" alone (the
17 whose only name is "Christ" are left out); *Esther*: 48 of its 128 verses with a name, evenly spaced (the
``floor(i·128/48)``-th, i = 0..47, in corpus order). English spans: ``PER`` for a person's name, ``LOC`` for a place
or a land/nation named as one (Zion, Israel, Judah, Egypt); not labelled: God, Lord, Yahweh, Father, Son, Spirit,
the title "the Christ" (*Jesus is the Christ*), "Antichrist", peoples and gentilics (Jews, Agagite, Persians,
Greeks, Laodiceans), months (Adar, Nisan) and Purim/Pur. A span is the name alone (*Shushan* the palace, the valley of
*Jehoshaphat*, Mount *Zion*; a possessive's name without its ending), "Jesus Christ"/"Christ Jesus" one span. Swahili
spans: the name corresponding to each English span, marked by reading the Swahili verse (Esther = Esta, Persia =
Uajemi, India = Bara Hindi, Ethiopia = Kushi, Christ Jesus = Yesu Kristo in either order); a name the translation
leaves out has no gold span (*Jesus Christ* of Col 1:2; "Christ" of *Jesus Christ* in 1 John 1:7 and 4:3, where the
gold is *Yesu*); a Swahili name with no English counterpart (*Esta* for "her" in Esther 4:5) is not marked. 205
English spans (PER 153, LOC 52), 204 Swahili gold spans (PER 152, LOC 52).

**The run.** The verses' texts are read from the corpus (``open_corpus("bible").documents(lang, "test")``), their
hashes checked, and the annotated English sentences (``{id, text, spans}``) and the Swahili gold (``{id, spans}``)
written into a temporary folder in the formats ``xlt data project`` reads; then one
``xlt.data.engine.run_builder("project", out, annotated=..., gold=..., corpus="bible", tgt="swh", scorer=...,
model=...)``, timed with ``time.perf_counter()`` around the whole call (corpus reading, IBM-1 training on all 31,102
English-Swahili verse pairs of the corpus, test books included, LM loading and scoring). With several scorers the
manifest's ``stats.span_f1`` has each scorer's span F1 and their ``combined`` mean; the script checks that it names
every scorer asked for and recomputes the span F1 of the written records (the main projection: ``combined``, or the
single scorer) from the gold with :func:`xlt.data.spans.span_f1`, which must equal the manifest's. Span F1 is exact
match of (verse, start, end, label) (seqeval's micro average); an English span whose name the translation lacks is
still projected somewhere and counts as a false positive.

Threads: torch's default unless ``--threads`` (``OMP_NUM_THREADS=1`` in the environment also gives one). The ``lm``
scorer (SmolLM2-135M, every target n-gram up to 4 words scored in both directions) is the slow part: about 9 s per
English span on one thread (1,842 s for the 205 spans; ``--scorer ibm1``: 12 s). Prints a table and writes one
JSON atomically (settings, gold counts, span F1 per scorer overall and per label, wall time, machine; no path of
this machine). ``--keep DIR`` also keeps the projected records there (they hold corpus text: do not commit them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # bench/peft.py would shadow peft

DATA = HERE / "data" / "project_names_en_sw.jsonl"
CORPUS, SRC, TGT, SPLIT = "bible", "eng", "swh", "test"
LABELS = ("PER", "LOC")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_data(path: str | os.PathLike) -> list[dict]:
    """The data file's rows, each checked for its fields (:class:`xlt.errors.XltError` naming the line)."""
    from xlt.data.spans import spans_from_dicts
    from xlt.errors import XltError
    from xlt.util import iter_jsonl

    rows, seen = [], set()
    for n, rec in iter_jsonl(path, "projection gold"):
        where = f"{Path(path).name} line {n}"
        missing = [k for k in ("id", f"{SRC}_sha256", f"{TGT}_sha256", SRC, TGT) if k not in rec]
        if missing:
            raise XltError(f"{where} lacks {', '.join(missing)}",
                           f"give {{id, {SRC}_sha256, {TGT}_sha256, {SRC}: [spans], {TGT}: [spans]}} per line")
        if "text" in rec or any("text" in s for lang in (SRC, TGT) for s in rec[lang]):
            raise XltError(f"{where} holds text", "keep only ids, hashes and offsets in the data file (corpus text "
                                                 "is never committed)")
        if rec["id"] in seen:
            raise XltError(f"{where} repeats verse {rec['id']}", "give each verse once")
        seen.add(rec["id"])
        for lang in (SRC, TGT):
            spans = spans_from_dicts(rec[lang], f"{where} ({lang})")
            bad = sorted({s.label for s in spans} - set(LABELS))
            if bad:
                raise XltError(f"{where} ({lang}) has label(s) {', '.join(bad)}", f"use {' or '.join(LABELS)}")
        rows.append(rec)
    if not rows:
        raise XltError(f"{Path(path).name} holds no verse", "give one JSON line per annotated verse")
    return rows


def check_texts(rows: list[dict], texts: dict[str, dict[str, str]]) -> None:
    """Every row's verse must be in ``texts[lang]`` with the recorded SHA-256, and its spans inside the text."""
    from xlt.data.spans import check_spans, spans_from_dicts
    from xlt.errors import XltError

    missing = [r["id"] for r in rows if any(r["id"] not in texts[lang] for lang in (SRC, TGT))]
    if missing:
        raise XltError(f"{len(missing)} annotated verse(s) are not in the {CORPUS} corpus's {SPLIT} split "
                       f"(first: {', '.join(missing[:3])})", "use the corpus the data file was made from, or "
                                                             "re-annotate those verses")
    changed = [f"{r['id']} ({lang})" for r in rows for lang in (SRC, TGT)
               if sha256(texts[lang][r["id"]]) != r[f"{lang}_sha256"]]
    if changed:
        raise XltError(f"the text of {len(changed)} annotated verse(s) differs from the one annotated (SHA-256 "
                       f"mismatch; first: {', '.join(changed[:3])}), so their span offsets no longer fit",
                       "use the corpus version the data file was made from, or re-annotate the changed verses and "
                       "record their new hashes")
    for r in rows:
        for lang in (SRC, TGT):
            check_spans(texts[lang][r["id"]], spans_from_dicts(r[lang], f"verse {r['id']} ({lang})"),
                        f"verse {r['id']} ({lang})")


def corpus_texts() -> dict[str, dict[str, str]]:
    from xlt.corpora import open_corpus

    c = open_corpus(CORPUS)
    return {lang: {d.key: d.text for d in c.documents(lang, SPLIT)} for lang in (SRC, TGT)}


def write_inputs(rows: list[dict], texts: dict[str, dict[str, str]], work: Path) -> tuple[Path, Path]:
    """``annotated.jsonl`` ({id, text, spans}, English) and ``gold.jsonl`` ({id, spans}, Swahili) in ``work``."""
    annotated, gold = work / "annotated.jsonl", work / "gold.jsonl"
    with open(annotated, "w", encoding="utf-8") as fa, open(gold, "w", encoding="utf-8") as fg:
        for r in rows:
            fa.write(json.dumps({"id": r["id"], "text": texts[SRC][r["id"]], "spans": r[SRC]},
                                ensure_ascii=False) + "\n")
            fg.write(json.dumps({"id": r["id"], "spans": r[TGT]}) + "\n")
    return annotated, gold


def gold_counts(rows: list[dict]) -> dict:
    books = Counter(r["id"].split(":")[0] for r in rows)
    return {"verses": len(rows), "verses_per_book": dict(sorted(books.items(), key=lambda kv: int(kv[0]))),
            **{f"{lang}_spans": {"total": sum(len(r[lang]) for r in rows),
                                 **{lab: sum(s["label"] == lab for r in rows for s in r[lang]) for lab in LABELS}}
               for lang in (SRC, TGT)}}


def records_f1(records_path: Path, rows: list[dict]) -> dict:
    """Span F1 of the written records' spans (the main projection) against the gold rows."""
    from xlt.data.spans import span_f1, spans_from_dicts

    pred = {}
    with open(records_path, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            pred[rec["key"]] = spans_from_dicts(rec["spans"], rec["key"])
    return span_f1([spans_from_dicts(r[TGT], r["id"]) for r in rows], [pred.get(r["id"], []) for r in rows])


def run(a, rows: list[dict], texts: dict[str, dict[str, str]], work: Path) -> dict:
    from xlt.data.engine import output_paths, run_builder
    from xlt.errors import XltError

    annotated, gold = write_inputs(rows, texts, work)
    out = work / "projected.jsonl"
    opts = dict(annotated=str(annotated), gold=str(gold), corpus=CORPUS, src=SRC, tgt=TGT, scorer=a.scorer,
                model=a.model, max_ngram=a.max_ngram, batch_size=a.batch_size, ibm1_iterations=a.ibm1_iterations)
    t0 = time.perf_counter()
    manifest = run_builder("project", out, overwrite=True, **opts)
    wall = time.perf_counter() - t0
    stats = manifest["stats"]
    names = [x.strip() for x in a.scorer.split(",") if x.strip()]
    expect = names + (["combined"] if len(names) > 1 else [])
    f1 = stats.get("span_f1", {})
    if sorted(f1) != sorted(expect) or stats.get("gold_sentences") != len(rows):
        raise XltError(f"the manifest's span F1 covers {sorted(f1)} over {stats.get('gold_sentences')} gold verses, "
                       f"not {expect} over {len(rows)}", "check xlt data project's gold handling")
    data_path = output_paths(out)[0]
    mine = records_f1(data_path, rows)
    main = expect[-1]
    same = json.dumps(mine, sort_keys=True) == json.dumps(f1[main], sort_keys=True)
    if not same:
        raise XltError(f"the span F1 of the written records ({mine['overall']}) differs from the manifest's "
                       f"{main} ({f1[main]['overall']})", "check xlt data project's records and stats")
    if a.keep:
        import shutil

        keep = Path(a.keep)
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(data_path, keep / data_path.name)
        shutil.copy(output_paths(out)[1], keep / output_paths(out)[1].name)
    return {"wall_s": round(wall, 1), "span_f1": {n: f1[n] for n in expect},
            "check": {"main_projection": main, "records_span_f1_equals_manifest": same},
            "source_spans": stats["source_spans"], "projected_spans": stats["projected_spans"],
            "filters": manifest.get("filters", {}),
            "options": {k: v for k, v in manifest["options"].items() if k not in ("annotated", "gold")}}


def render(res: dict) -> str:
    g = res["gold"]
    lines = [f"xlt data project, {g['verses']} Bible test verses, {g[f'{SRC}_spans']['total']} English spans, "
             f"{g[f'{TGT}_spans']['total']} Swahili gold spans; scorer {res['settings']['scorer']}, "
             f"{res['wall_s']:.0f} s", "",
             f"{'scorer':<10} {'P':>6} {'R':>6} {'F1':>6} {'PER F1':>7} {'LOC F1':>7}"]
    for name, f in res["span_f1"].items():
        o = f["overall"]
        lines.append(f"{name:<10} {o['precision']:>6.3f} {o['recall']:>6.3f} {o['f1']:>6.3f} "
                     + " ".join(f"{f[lab]['f1']:>7.3f}" if lab in f else f"{'-':>7}" for lab in LABELS))
    return "\n".join(lines) + "\n"


def _scrub(text: str) -> str:
    """No path of this machine in what is written (tests/test_no_machine_paths.py)."""
    from xlt.util import scrub_machine_paths

    return scrub_machine_paths(text, ROOT)


def _write_atomic(path: Path, text: str) -> None:
    from xlt.util import write_text_atomic

    write_text_atomic(path, text)


def _command(argv: list[str]) -> str:
    """The command as run, without this machine's paths."""
    out, skip = [], False
    for x in argv:
        if skip:
            skip = False
            continue
        if x in ("--out", "--keep", "--data"):
            skip = True
            continue
        if x.startswith(("--out=", "--keep=", "--data=")):
            continue
        out.append(x)
    return " ".join(["python bench/project.py"] + out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scorer", default="lm,ibm1", help="scorers of xlt data project (lm, ibm1 or both)")
    ap.add_argument("--model", default="smollm2", help="causal LM of the lm scorer")
    ap.add_argument("--max-ngram", type=int, default=4, help="candidate n-grams up to this many words")
    ap.add_argument("--batch-size", type=int, default=16, help="rows per LM forward pass")
    ap.add_argument("--ibm1-iterations", type=int, default=10, help="EM iterations of IBM Model 1")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    ap.add_argument("--data", default=str(DATA), help="the gold data file (ids, hashes, offsets)")
    ap.add_argument("--out", default=str(HERE / "results" / "project_names_en_sw.json"))
    ap.add_argument("--keep", default=None, help="also keep the projected records and manifest in this folder")
    a = ap.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from xlt.util import machine_info

    if a.threads:
        torch.set_num_threads(a.threads)
    rows = read_data(a.data)
    texts = corpus_texts()
    check_texts(rows, texts)
    res: dict = {"benchmark": "project_names_en_sw", "settings": {
        "scorer": a.scorer, "model": a.model if "lm" in a.scorer.split(",") else None, "corpus": CORPUS,
        "src": SRC, "tgt": TGT, "split": SPLIT, "max_ngram": a.max_ngram, "batch_size": a.batch_size,
        "ibm1_iterations": a.ibm1_iterations, "threads": torch.get_num_threads(), "device": "cpu"
        if not torch.cuda.is_available() else "cuda",
        "data": "bench/data/project_names_en_sw.jsonl" if Path(a.data).resolve() == DATA.resolve() else
        Path(a.data).name, "data_sha256": hashlib.sha256(Path(a.data).read_bytes()).hexdigest(),
        "timing": "perf_counter around run_builder: corpus reading, IBM-1 training, model loading and scoring"},
        "gold": gold_counts(rows)}
    with tempfile.TemporaryDirectory(prefix="xlt-bench-project-") as work:
        res.update(run(a, rows, texts, Path(work)))
    res["command"] = _command(sys.argv[1:])
    res["machine"] = machine_info(("torch", "transformers", "tokenizers", "numpy", "scipy"))
    res["date"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    print("\n" + render(res))
    out = Path(a.out)
    _write_atomic(out, _scrub(json.dumps(res, indent=2, ensure_ascii=False, default=str)) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
