"""The ``xlt analyze`` engine: for each model, one capture pass over verse-aligned texts feeds every selected
analysis (:mod:`xlt.analyze.registry`); writes ``analysis.json`` (all numbers and settings), ``analysis.html`` and
the analyses' side files (``<model>/neurons/*.json``, ``<model>/routing/*.npz``), all at once into ``out``."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlt.analyze.registry import ANALYSES, AnalysisContext
from xlt.errors import XltError

log = logging.getLogger("xlt")


@dataclass
class AnalysisResult:
    results: dict  # analysis -> model name -> its dict
    out: Path | None
    data: dict  # what analysis.json holds


def aligned_texts(corpus, langs: list[str], ref: str, n: int, heldout: int = 0,
                  split: str = "test") -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``n`` documents of ``ref``'s ``split`` that every language in ``langs`` has (parallel by key; the
    translations may sit in any split), then ``heldout`` more for measurements that must not reuse them."""
    first = corpus.documents(ref, split)
    others = {lang: {d.key: d.text for d in corpus.documents(lang)} for lang in langs if lang != ref}
    keys, texts = [], []
    for d in first:
        if d.text.strip() and all(d.key in o and o[d.key].strip() for o in others.values()):
            keys.append(d.key)
            texts.append(d.text)
            if len(keys) >= n + heldout:
                break
    if len(keys) < 4:
        raise XltError(f"only {len(keys)} {split} texts of {ref} are translated into every one of "
                       f"{', '.join(langs)} (fewer than 4 pairs)",
                       "choose languages the corpus aligns (xlt corpora lists them) or another --ref")
    if len(keys) < n + heldout:
        log.warning("only %d aligned texts: %d for the analysis, %d held out", len(keys),
                    min(n, len(keys)), max(0, len(keys) - n))
    by_lang = {ref: texts}
    by_lang.update({lang: [o[k] for k in keys] for lang, o in others.items()})
    main = {lang: by_lang[lang][:n] for lang in [ref] + [x for x in langs if x != ref]}
    held = {lang: by_lang[lang][n:] for lang in main if by_lang[lang][n:]}
    return main, held


def _languages(langs: Any, corpus, ref: str) -> tuple[list[str], str]:
    from xlt.languages import resolve

    codes = [c.strip() for c in langs.split(",")] if isinstance(langs, str) else [str(c) for c in langs]
    codes = [c for c in codes if c]
    if codes in (["bible"], ["all"]):
        have = getattr(corpus, "languages", None)
        codes = [getattr(x, "code", x) for x in (have() if callable(have) else have or [])]
    out = []
    for c in codes:
        lang = corpus.language(c).code if corpus is not None else resolve(c).code
        if lang not in out:
            out.append(lang)
    ref_code = corpus.language(ref).code if corpus is not None else resolve(ref).code
    if ref_code not in out:
        out.insert(0, ref_code)
    if len(out) < 2:
        raise XltError(f"analysis needs at least one language besides the reference {ref_code}",
                       "give --langs with two or more languages")
    return out, ref_code


def analyze(models: list, langs: Any = "eng,swh", analyses: str | list[str] | None = None,
            out: str | Path | None = None, *, corpus: Any = "bible", ref: str = "eng", n: int = 300,
            heldout: int = 40, split: str = "test", options: dict | None = None, seed: int = 0,
            batch_size: int = 16, max_length: int = 128, device: str | None = None, allow_pickle: bool = False,
            overwrite: bool = False, show_progress: bool = True) -> AnalysisResult:
    """Analyse ``models`` (prepared names, HF folders, ``xlt adapt`` run folders — each model and its source —,
    or in-memory ``(model, tokenizer)``) on ``n`` verse-aligned held-out texts per language of ``langs``, each
    compared with ``ref``. ``analyses``: names from ``xlt analyses`` (default: every default analysis that applies
    to the model); ``options``: their options, flat (``{"pool": "last"}``)."""
    import torch

    from xlt.analyze.capture import run_probes, tokenize
    from xlt.corpora import open_corpus
    from xlt.eval.evaluate import _place, resolve_models

    t0 = time.time()
    out = Path(out) if out is not None else None
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise XltError(f"--out {out} exists and is not empty", "give a new folder, or pass --overwrite")
    explicit = analyses is not None and analyses != [] and analyses != ""
    names = (ANALYSES.parse(analyses, "analyses") if explicit
             else [n_ for n_, a in ANALYSES.all().items() if a.default])
    opts = ANALYSES.options_for(names, options or {}, "-O")
    ms = resolve_models(list(models or []), allow_pickle)
    corp = open_corpus(corpus) if isinstance(corpus, str) else corpus
    codes, ref_code = _languages(langs, corp, ref)
    texts, held = aligned_texts(corp, codes, ref_code, n, heldout, split)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    ctx = AnalysisContext(texts, ref_code, corp, seed=seed, batch_size=batch_size, max_length=max_length,
                          show_progress=show_progress, out=out, extra={"heldout": held})
    results: dict[str, dict[str, dict]] = {name: {} for name in names}
    skipped: list[dict] = []
    timings: dict[str, float] = {}
    for m in ms:
        tm = time.time()
        model, tok = m.load()
        if not callable(getattr(model, "can_generate", None)) or not model.can_generate():
            raise XltError(f"{m.name} is a {type(model).__name__}, not a decoder-only causal LM",
                           "xlt analyze reads causal LMs (Llama, Gemma, Qwen, GPT-2, Mixtral, OLMoE families); "
                           "for an encoder, compare its hidden states with xlt.analyze.alignment directly")
        home = _place(model, device)
        chosen, probes = [], {}
        for name in names:
            a = ANALYSES.get(name)
            why = a.applies(model, opts[name]) if a.applies is not None else None
            if why:
                if explicit:
                    raise XltError(f"analysis {name} does not apply to {m.name}: {why}",
                                   getattr(a, "fix_hint", None) or f"leave {name} out for this model")
                skipped.append({"model": m.name, "analysis": name, "why": why})
                continue
            chosen.append(name)
            probes[name] = list(a.probes(ctx, model, tok, opts[name])) if a.probes is not None else []
        every = [p for name in chosen for p in probes[name]]
        if every:
            pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
            run_probes(model, tokenize(tok, texts, max_length), every, batch_size=batch_size, pad_id=pad,
                       show_progress=show_progress, desc=f"capture {m.name}")
        for name in chosen:
            ta = time.time()
            results[name][m.name] = ANALYSES.get(name).finish(ctx, model, tok, opts[name], probes[name])
            timings[f"{m.name}:{name}"] = time.time() - ta
        timings[m.name] = time.time() - tm
        _place(model, home)
        m.release()

    from xlt import __version__
    from xlt.options import as_dict

    data = {"kind": "xlt-analyze", "xlt": __version__,
            "settings": {"analyses": names, "langs": codes, "ref": ref_code, "n": len(texts[ref_code]),
                         "heldout": len(next(iter(held.values()), [])), "split": split,
                         "corpus": getattr(corp, "name", str(corpus)), "seed": seed, "batch_size": batch_size,
                         "max_length": max_length, "options": {k: as_dict(o) for k, o in opts.items()}},
            "models": [m.describe() for m in ms], "skipped": skipped, "results": results,
            "definitions": {name: ANALYSES.get(name).description for name in names}}
    data["seconds"] = {"total": time.time() - t0, **timings}
    if out is not None:
        _write(out, data, names)
        for spec in models or []:
            if isinstance(spec, (str, Path)) and (Path(spec) / "run.json").is_file():
                link_into_run(Path(spec), out, data)
    for name in names:  # side data (neuron sets, routing arrays) never reaches analysis.json
        for r in results[name].values():
            for k in [k for k in r if k.startswith("_")]:
                r.pop(k)
    return AnalysisResult(results, out, data)


def link_into_run(run: Path, out: Path, data: dict) -> None:
    """Record this analysis in the run's metrics.json (``analyses``: where its report is, what ran, and per model
    the best-layer retrieval@1 where alignment ran) and write the run's report.html again with an Analyses
    section."""
    import os

    from xlt.report import write_report
    from xlt.util import write_json_atomic

    run_metrics = json.loads((run / "metrics.json").read_text())
    best = {m: {lang: b for lang, b in r["best"].items()}
            for m, r in data["results"].get("alignment", {}).items()}
    entry = {"report": os.path.relpath(out / "analysis.html", run), "analyses": data["settings"]["analyses"],
             "langs": data["settings"]["langs"], "ref": data["settings"]["ref"], "n": data["settings"]["n"],
             "best_retrieval": best}
    run_metrics["analyses"] = [e for e in run_metrics.get("analyses", []) if e["report"] != entry["report"]] + [entry]
    write_json_atomic(run / "metrics.json", run_metrics)
    write_report(run, run_metrics)


def _write(out: Path, data: dict, names: list[str]) -> None:
    from xlt.report.analysis import render_analysis
    from xlt.util import atomic_dir, portable

    with atomic_dir(out, overwrite=True) as tmp:
        for name in names:
            a = ANALYSES.get(name)
            for model, r in data["results"][name].items():
                if a.write is not None:
                    a.write(tmp, _safe(model), r)
                for k in [k for k in r if k.startswith("_")]:
                    r.pop(k)
        data = portable(data, out)  # no path of this machine: models by name, folders relative to out
        (tmp / "analysis.json").write_text(json.dumps(data, indent=1, ensure_ascii=False, default=float,
                                                      allow_nan=False))
        (tmp / "analysis.html").write_text(render_analysis(data), encoding="utf-8")


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"
