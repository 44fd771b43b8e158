"""``xlt evaluate``: score models in many languages with registered suites; one metrics.json and one report.

Models are prepared names (``smollm2``, ``gemma3``), HF model folders, ``xlt adapt`` run folders (each of the run's
models, and its source model) or in-memory ``(model, tokenizer)`` pairs. Each model is loaded once; every suite with
a ``per_model`` hook scores it, then it is released, so one model is in memory at a time. Suites with a ``combine``
hook run last, on all scores. The engine knows no suite by name (:mod:`xlt.eval.registry`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlt.errors import XltError
from xlt.eval.registry import SUITES, EvalContext, EvalModel
from xlt.eval.scores import LangScores
from xlt.languages import Language, resolve

log = logging.getLogger("xlt")

DEFAULT_SUITES = ("bpb", "tokenizer")


@dataclass
class EvalResult:
    scores: LangScores
    details: dict = field(default_factory=dict)
    out: Path | None = None
    metrics: dict = field(default_factory=dict)


# -- models -----------------------------------------------------------------------------------------------------
def _hf_model(name: str, folder: Path, allow_pickle: bool = False, **kw) -> EvalModel:
    from xlt.models import load_model, load_tokenizer
    from xlt.models.loading import check_model_folder

    check_model_folder(folder, allow_pickle=allow_pickle)
    return EvalModel(name, str(folder), loader=lambda: (load_model(folder, allow_pickle=allow_pickle),
                                                        load_tokenizer(folder)), **kw)


def _run_models(folder: Path, allow_pickle: bool) -> list[EvalModel]:
    """The models of an ``xlt adapt`` run folder, after its source model."""
    from xlt.adapt.methods import load_adapted
    from xlt.models import load_tokenizer
    from xlt.models.loading import KNOWN_SOURCES, resolve_source

    run = json.loads((folder / "run.json").read_text())
    if not (folder / "metrics.json").is_file() or not run.get("finished"):
        raise XltError(f"run folder {folder} has no metrics.json: the run did not finish",
                       "finish it first (run the same `xlt adapt` command again to resume)")
    settings = run["settings"]
    src = str(settings["source"])
    try:  # run.json names a folder relative to the run folder (older runs: as given on the command line)
        src_folder = resolve_source(folder / src if (folder / src).is_dir() and src not in KNOWN_SOURCES else src)
    except XltError as e:
        raise XltError(f"the source model of run {folder} ({src}) is not here: {e.problem}",
                       "prepare it (`xlt models prepare NAME`) or put its folder where run.json's source names it "
                       "(relative to the run folder)") from None
    src_name = src if src in KNOWN_SOURCES else Path(src).name
    models = [_hf_model(src_name, src_folder, allow_pickle, role="source")]
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and ((p / "config.json").is_file() or (p / "xlt_method.json").is_file()))
    if not subs:
        raise XltError(f"run folder {folder} holds no model", "give a finished `xlt adapt` run folder")
    for p in subs:
        models.append(EvalModel(f"{folder.name}/{p.name}", str(p), role="adapted", source=src_name,
                                source_lang=settings.get("source_lang", "eng"), target=settings["target"],
                                loader=lambda p=p: (load_adapted(p), load_tokenizer(p))))
    return models


def resolve_models(specs: list, allow_pickle: bool = False) -> list[EvalModel]:
    """EvalModels for ``specs`` (names, folders, run folders, ``(model, tokenizer)`` or ``(name, model, tokenizer)``);
    a model given twice (a run's source also given by name) is evaluated once."""
    from xlt.models.loading import KNOWN_SOURCES, resolve_source

    if not specs:
        raise XltError("no model to evaluate", f"give model names ({', '.join(KNOWN_SOURCES)}), HF folders or "
                                               "`xlt adapt` run folders")
    out: list[EvalModel] = []
    for i, spec in enumerate(specs):
        if isinstance(spec, EvalModel):
            out.append(spec)
        elif isinstance(spec, tuple):
            name, model, tok = spec if len(spec) == 3 else (f"model{i}", *spec)
            out.append(EvalModel(str(name), "(in memory)", loader=lambda m=model, t=tok: (m, t)))
        elif str(spec) in KNOWN_SOURCES:
            out.append(_hf_model(str(spec), resolve_source(str(spec)), allow_pickle))
        else:
            p = Path(spec)
            if not p.exists():
                raise XltError(f"model {spec} is neither a known name nor a folder",
                               f"give one of {', '.join(KNOWN_SOURCES)}, an HF model folder or an `xlt adapt` "
                               "run folder")
            if (p / "run.json").is_file():
                out.extend(_run_models(p, allow_pickle))
            elif (p / "xlt_method.json").is_file():
                from xlt.adapt.methods import load_adapted
                from xlt.models import load_tokenizer

                out.append(EvalModel(p.name, str(p), loader=lambda p=p: (load_adapted(p), load_tokenizer(p))))
            else:
                out.append(_hf_model(p.name, p, allow_pickle))
    orig = {id(m): m.name for m in out}
    seen: dict[str, EvalModel] = {}
    final: dict[int, str] = {}  # id(model) -> the name it is scored under (a duplicate: its survivor's)
    for m in out:
        key = os.path.realpath(m.path) if m.path != "(in memory)" else id(m)
        if key in seen:
            final[id(m)] = seen[key].name
            continue
        if any(o.name == m.name for o in seen.values()):
            m.name = f"{m.name}#{len(seen)}"
        seen[key] = m
        final[id(m)] = m.name
    for i, m in enumerate(out):  # an adapted model names its run's source by the name that source is scored under
        if m.source is not None and any(m is v for v in seen.values()):
            src = next((o for o in reversed(out[:i]) if o.role == "source" and orig[id(o)] == m.source), None)
            if src is not None:
                m.source = final[id(src)]
    return list(seen.values())


def resolve_langs(langs, corpus) -> list[Language]:
    """``"bible"`` or ``"all"``: every language of the corpus; else codes (a list or ``"eng,swh"``), each checked
    against the corpus."""
    if isinstance(langs, str) and langs.strip() in ("bible", "all"):
        if corpus is None:
            raise XltError(f"--langs {langs} needs a corpus", "pass --corpus bible")
        return list(corpus.languages())
    codes = [c.strip() for c in (langs.split(",") if isinstance(langs, str) else langs) if str(c).strip()]
    if not codes:
        raise XltError("no language given", "pass --langs eng,swh (or bible for all of the Bible's)")
    out = []
    for c in codes:
        lang = corpus.language(c) if corpus is not None else (c if isinstance(c, Language) else resolve(c))
        if lang not in out:
            out.append(lang)
    return out


# -- the run ----------------------------------------------------------------------------------------------------
def evaluate(models: list | None = None, langs: Any = "bible", suites: str | list[str] | None = None,
             out: str | Path | None = None, *, corpus: Any = "bible", split: str = "test", max_bytes: int = 8000,
             options: dict | None = None, inputs: dict | None = None, seed: int = 0, precision: str = "fp32",
             device: str | None = None, allow_pickle: bool = False, overwrite: bool = False,
             show_progress: bool = True) -> EvalResult:
    """Score ``models`` in ``langs`` with ``suites`` (default: bpb and tokenizer, plus forgetting when a run folder
    is given) and, with ``out``, write ``out/metrics.json`` and ``out/report.html``.

    ``options`` are the suites' options (``xlt evals`` lists them), given flat (``{"bpb_mode": "documents"}``);
    ``inputs`` hold what model-free suites read (MT files). Held-out text: the corpus's ``split``, whole documents up
    to ``max_bytes`` UTF-8 bytes per language."""
    from tqdm.auto import tqdm

    from xlt.corpora import open_corpus

    t0 = time.time()
    out = Path(out) if out is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise XltError(f"--out {out} is a file", "give a new or empty folder")
    if out is not None and out.is_dir() and any(out.iterdir()) and not overwrite:
        raise XltError(f"--out {out} is not empty", "give a new folder, or pass --overwrite")
    ms = resolve_models(list(models or []), allow_pickle) if models else []
    if not suites:
        suites = ([n for n, k in (("mt", "hyps"), ("qa", "qa")) if (inputs or {}).get(k)] if not ms else []) or (
            list(DEFAULT_SUITES) + (["forgetting"] if any(m.role == "adapted" for m in ms) else []))
    names = SUITES.parse(suites, "suites")
    chosen = [SUITES.get(n) for n in names]
    opts = SUITES.options_for(names, options or {}, "-O")
    if not ms and not all(s.model_free for s in chosen):
        raise XltError("no model to evaluate", "give model names, folders or run folders (or only model-free "
                                               "suites such as mt with --refs/--hyps)")
    need_corpus = any(s.needs_corpus for s in chosen) or bool(ms)
    one_lang = None  # an untagged text corpus (text:PATH) is in the one language --langs names
    if isinstance(langs, str) and langs.strip() not in ("bible", "all") and len(langs.split(",")) == 1:
        one_lang = langs.strip()
    elif isinstance(langs, (list, tuple)) and len(langs) == 1:
        one_lang = str(langs[0])
    corp = open_corpus(corpus, one_lang) if need_corpus and corpus is not None else None
    lang_list = resolve_langs(langs, corp) if (need_corpus or langs not in ("bible", "all")) else []
    import torch

    ctx = EvalContext(ms, lang_list, corp, split=split, max_bytes=max_bytes, seed=seed,
                      device=device or ("cuda" if torch.cuda.is_available() else "cpu"), precision=precision,
                      inputs=dict(inputs or {}), show_progress=show_progress)
    for s in chosen:  # first every language some suite needs, so that every suite prepares for all of them
        for code in (s.languages(ctx, opts[s.name]) if s.languages is not None else []):
            lang = corp.language(code) if corp is not None else resolve(code)
            if lang not in ctx.langs:
                ctx.langs.append(lang)
    for s in chosen:
        if s.prepare is not None:
            s.prepare(ctx, opts[s.name])
    for lang in ctx.langs if corp is not None else []:
        if not ctx.texts(lang):
            raise XltError(f"the {corp.name} corpus has no {split} text for {lang.code}",
                           "choose another split (--split) or language")

    scores = LangScores()
    per_model = [s for s in chosen if s.per_model is not None]
    bar = tqdm(total=len(ms) * len(per_model), desc="evaluate", disable=not show_progress or not per_model)
    timings: dict[str, float] = {}
    for m in ms:
        if not per_model:
            break
        log.info("loading %s", m.name)
        home = _place(m.load()[0], ctx.device)  # every suite scores the model on ctx.device
        for s in per_model:
            bar.set_postfix(model=m.name, suite=s.name)
            t = time.time()
            scores.extend(_checked(s.name, s.per_model(ctx, m, opts[s.name])))
            timings[f"{m.name}:{s.name}"] = time.time() - t
            bar.update(1)
        _place(m.load()[0], home)  # an in-memory model goes back where the caller had it
        m.release()
    bar.close()
    details = {}
    for s in chosen:
        if s.combine is not None:
            res = s.combine(ctx, scores, opts[s.name])
            scores.extend(_checked(s.name, res.scores))
            if res.details:
                details[s.name] = res.details

    from xlt import __version__
    from xlt.options import as_dict

    metrics = {
        "kind": "xlt-evaluate", "xlt": __version__,
        "settings": {"suites": names, "langs": [lang.code for lang in ctx.langs], "split": split,
                     "max_bytes": max_bytes, "corpus": getattr(corp, "name", None), "seed": seed,
                     "precision": precision, "options": {n: as_dict(o) for n, o in opts.items()}},
        "models": [m.describe() for m in ms],
        "scores": scores.as_list(), "details": details,
        "seconds": {"total": time.time() - t0, **timings},
        "definitions": {n: SUITES.get(n).description for n in names},
    }
    result = EvalResult(scores, details, out, metrics)
    if out is not None:
        _write(out, metrics)
        for spec in models or []:
            if not isinstance(spec, (tuple, EvalModel)) and (Path(spec) / "run.json").is_file():
                link_into_run(Path(spec), out, metrics)
    return result


def _place(model, device):
    """Move ``model`` to ``device`` (where it is not already) and return the device it was on."""
    import torch

    try:
        was = next(model.parameters()).device
    except (StopIteration, AttributeError):
        return device
    if torch.device(device) != was:
        model.to(device)
    return was


def link_into_run(run: Path, out: Path, metrics: dict) -> None:
    """Record this evaluation in the run's metrics.json (``evaluations``: where its report is, and the scores of the
    run's models) and write the run's report.html again, which then has an Evaluations section."""
    from xlt.report import write_report
    from xlt.util import write_json_atomic

    run_metrics = json.loads((run / "metrics.json").read_text())
    own = {m["name"] for m in metrics["models"]}
    entry = {"report": os.path.relpath(out / "report.html", run), "suites": metrics["settings"]["suites"],
             "langs": metrics["settings"]["langs"], "split": metrics["settings"]["split"],
             "scores": [s for s in metrics["scores"] if s["model"] in own]}
    evals = [e for e in run_metrics.get("evaluations", []) if e["report"] != entry["report"]] + [entry]
    run_metrics["evaluations"] = evals
    write_json_atomic(run / "metrics.json", run_metrics)
    write_report(run, run_metrics)


def _checked(name: str, scores: LangScores) -> LangScores:
    for s in scores:
        if s.suite != name:
            raise RuntimeError(f"suite {name} returned a score labelled {s.suite!r}")
    return scores


def _write(out: Path, metrics: dict) -> None:
    """metrics.json and report.html, written in a temporary folder renamed into place."""
    from xlt.report.evaluation import render_evaluation
    from xlt.util import atomic_dir, portable

    metrics = portable(metrics, out)  # no path of this machine: models by name, folders relative to out
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False, default=float,
                                                     allow_nan=False))
        (tmp / "report.html").write_text(render_evaluation(metrics), encoding="utf-8")
