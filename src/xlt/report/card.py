"""Model cards: the ``README.md`` of every model folder xlt writes (``xlt adapt``, ``xlt merge``, ``xlt export``).

A card is the Hugging Face hub's format: YAML front matter (``language``, ``base_model``, ``library_name``,
``pipeline_tag``, ``tags``, ``datasets`` where known, ``license`` where the source's licence is known) and a Markdown
body saying what was done, the results with their signatures, the tokenizer premium and how to load the folder.

Text generation is pure: :func:`render_card` turns a :class:`CardInfo` into a string, and :func:`adapt_card_info` /
:func:`merge_card_info` build a :class:`CardInfo` from what a run or a merge recorded (dicts in, no file read).
Reading a folder (:func:`folder_format`, :func:`source_license`, :func:`read_front_matter`) and writing the file
(:func:`write_model_card`, through a temporary file and a rename) are separate.

``library_name`` says which library loads the folder: ``transformers`` for a whole model, ``peft`` for a PEFT adapter
that carries the new vocabulary (its embeddings and head in the adapter, its tokenizer beside it), ``xlt`` for the
formats only :func:`xlt.adapt.methods.load_adapted` reads (``xlt export`` turns them into whole models).
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

#: the hub's licence ids of the licences the prepared models name (:data:`xlt.models.prepare.PREPARERS`)
HUB_LICENSES = {"apache-2.0": "apache-2.0", "mit": "mit", "gemma": "gemma", "llama3": "llama3",
                "llama3.1": "llama3.1", "llama3.2": "llama3.2", "cc-by-4.0": "cc-by-4.0", "openrail": "openrail"}

FORMATS = ("transformers", "peft", "xlt")


@dataclass
class CardInfo:
    """Everything a card says. ``results`` rows: ``{"model", "split", "bits_per_byte", "signature"}`` (and an
    optional ``"note"``); ``details``: (what, value) rows of the "What was done" table."""

    title: str
    summary: str
    format: str = "transformers"  # transformers | peft | xlt (see the module docstring)
    base_model: str | list[str] | None = None  # a portable name (never a path)
    base_model_relation: str | None = None  # the hub's: adapter, finetune, merge, quantized
    languages: list[str] = field(default_factory=list)  # ISO 639-1 where one exists, else ISO 639-3
    license: str | None = None  # a hub licence id; None: unknown (the body says so)
    license_note: str = ""  # where the licence comes from, or why it is unknown
    tags: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    details: list[tuple[str, str]] = field(default_factory=list)
    command: str | None = None
    done_text: str = ""  # more Markdown under "What was done"
    results: list[dict] = field(default_factory=list)
    results_note: str = ""
    premium: list[tuple[str, float]] = field(default_factory=list)  # (tokenizer, premium) rows
    premium_note: str = ""
    sections: list[tuple[str, str]] = field(default_factory=list)  # extra (heading, markdown) sections
    folder: str = "."  # how the load snippet names this folder
    base_folder: str | None = None  # how the load snippet names the base model (peft and xlt formats)
    base_hint: str = ""  # where the base model's folder comes from


def language_code(code: str) -> str:
    """The code a card's ``language`` field takes: ISO 639-1 where the language has one, else ISO 639-3."""
    from xlt.languages import resolve

    lang = resolve(code)
    return lang.alpha2 or lang.code


def hub_license(licence: str | None) -> str | None:
    """The hub's licence id for a licence as xlt records it (``Apache-2.0``, ``Gemma Terms of Use (...)``), or
    None when it is not one the hub knows."""
    if not licence:
        return None
    low = str(licence).strip().lower()
    if low.startswith("gemma"):
        return "gemma"
    first = low.split()[0].rstrip(",;")
    return HUB_LICENSES.get(first)


def front_matter(info: CardInfo) -> dict:
    """The card's YAML metadata as a dict (keys in the hub's usual order; unknown values left out)."""
    meta: dict = {}
    if info.languages:
        meta["language"] = list(dict.fromkeys(info.languages))
    if info.license:
        meta["license"] = info.license
    meta["library_name"] = info.format
    meta["pipeline_tag"] = "text-generation"
    if info.base_model:
        meta["base_model"] = info.base_model
        if info.base_model_relation:
            meta["base_model_relation"] = info.base_model_relation
    if info.datasets:
        meta["datasets"] = list(dict.fromkeys(info.datasets))
    meta["tags"] = list(dict.fromkeys(["xlt", *info.tags]))
    return meta


def _cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def load_snippet(info: CardInfo) -> str:
    """Python that loads the folder with the library its ``library_name`` names (the test suite runs it)."""
    folder = json.dumps(info.folder)
    base = json.dumps(info.base_folder or (info.base_model if isinstance(info.base_model, str) else None) or "BASE")
    if info.format == "transformers":
        return (f"from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f"folder = {folder}  # this folder: a local path or its hub id\n"
                "tokenizer = AutoTokenizer.from_pretrained(folder)\n"
                "model = AutoModelForCausalLM.from_pretrained(folder)\n")
    if info.format == "peft":
        return (f"from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f"base = {base}  # the source model's folder (see above)\n"
                f"folder = {folder}  # this folder: a local path or its hub id\n"
                "tokenizer = AutoTokenizer.from_pretrained(folder)  # the target tokenizer\n"
                "model = AutoModelForCausalLM.from_pretrained(base)\n"
                "model.resize_token_embeddings(len(tokenizer))\n"
                "model = PeftModel.from_pretrained(model, folder)  # the new embeddings and head come with the adapter\n")
    return ("from xlt.adapt.methods import load_adapted\nfrom xlt.models import load_tokenizer\n\n"
            f"folder = {folder}  # this folder\n"
            "base = None  # the base model it names; or the source model's folder (see above)\n"
            "tokenizer = load_tokenizer(folder)\n"
            "model = load_adapted(folder, base=base)  # checks the base against the fingerprint it was trained on\n")


def render_card(info: CardInfo) -> str:
    """The card's text: YAML front matter, then the Markdown body."""
    import yaml

    if info.format not in FORMATS:
        raise ValueError(f"unknown card format {info.format!r} ({', '.join(FORMATS)})")
    meta = yaml.safe_dump(front_matter(info), sort_keys=False, allow_unicode=True, default_flow_style=False)
    parts = [f"---\n{meta}---\n", f"# {info.title}\n", info.summary.strip() + "\n"]
    if info.details or info.command or info.done_text:
        parts.append("## What was done\n")
        if info.details:
            parts.append(_table(["", ""], [list(d) for d in info.details]) + "\n")
        if info.command:
            parts.append(f"The command that made it:\n\n```bash\n{info.command}\n```\n")
        if info.done_text:
            parts.append(info.done_text.strip() + "\n")
    parts.append("## Results\n")
    if info.results:
        rows = [[r["model"], r["split"], r.get("bits_per_byte"), f"`{r['signature']}`" if r.get("signature") else "—"]
                for r in info.results]
        parts.append(_table(["model", "split", "bits/byte", "signature"], rows) + "\n")
        parts.append("Bits per byte: the held-out text's negative log-likelihood in bits over its UTF-8 bytes (lower is "
                     "better; it compares models with different tokenizers). The signature says how each number was "
                     "computed (window, joining, bytes, split, tokenizer and model hashes, xlt version).\n")
    if info.results_note:
        parts.append(info.results_note.strip() + "\n")
    elif not info.results:
        parts.append("Not evaluated here: `xlt evaluate FOLDER` scores it (bits/byte and task suites).\n")
    if info.premium or info.premium_note:
        parts.append("## Tokenizer premium\n")
        if info.premium:
            parts.append(_table(["tokenizer", "premium"], [[n, p] for n, p in info.premium]) + "\n")
        if info.premium_note:
            parts.append(info.premium_note.strip() + "\n")
    for heading, text in info.sections:
        parts.append(f"## {heading}\n")
        parts.append(text.strip() + "\n")
    parts.append("## How to load it\n")
    how = {"transformers": "A whole model: plain transformers loads it (no xlt needed).",
           "peft": "A PEFT adapter that carries the new vocabulary (input embeddings and head) with the target tokenizer "
                   "beside it: plain peft loads it on the source model.",
           "xlt": "This folder holds only what the method trained, in a format xlt reads: load it with xlt, or turn it "
                  "into a plain transformers folder with `xlt export FOLDER OUT` where the method can be exported."}
    parts.append(how[info.format] + (" " + info.base_hint if info.format != "transformers" and info.base_hint else "")
                 + "\n")
    parts.append(f"```python\n{load_snippet(info)}```\n")
    parts.append("## Licence\n")
    parts.append((f"`{info.license}`" + (f": {info.license_note}" if info.license_note else ".")) if info.license else
                 (info.license_note or "The source model's licence is not known to xlt: add it (the `license` field "
                                       "above) before you publish this model; the source's licence applies.") + "\n")
    return "\n".join(parts)


def parse_card(text: str) -> tuple[dict, str]:
    """``(front matter, body)`` of a card (an empty dict when it has no front matter)."""
    import yaml

    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end >= 0:
            return yaml.safe_load(text[4:end + 1]) or {}, text[end + 5:]
    return {}, text


# -- what a run or a merge recorded -> CardInfo (pure) -----------------------------------------------------------
def _adapt_command(settings: dict, defaults: dict | None = None) -> str:
    """An ``xlt adapt`` command line that gives the run's settings; options equal to ``defaults`` (the keyword
    defaults of :meth:`xlt.adapt.AdaptSettings.create`) are left out."""
    defaults = defaults or {}
    train = settings.get("train", {})
    given = {"source": settings.get("source"), "target": settings.get("target"), "corpus": settings.get("corpus"),
             "init": ",".join(settings.get("inits", [])), "method": ",".join(settings.get("methods", [])),
             "steps": train.get("steps"), "stage1_steps": train.get("stage1_steps"),
             "vocab_size": settings.get("vocab_size"), "batch_size": train.get("batch_size"),
             "grad_accum": train.get("grad_accum"), "seq_len": train.get("seq_len"), "lr": train.get("lr"),
             "embedding_lr": train.get("embedding_lr"), "eval_every": train.get("eval_every"),
             "eval_max_bytes": settings.get("eval_max_bytes"), "save_every": train.get("save_every"),
             "seed": train.get("seed"), "source_lang": settings.get("source_lang"), "samples": settings.get("samples"),
             "loo_tokens": settings.get("loo_tokens"), "romanize": settings.get("romanize"),
             "multihead": settings.get("multihead"), "precision": settings.get("precision"),
             "eval_precision": settings.get("eval_precision"), "compile": train.get("compile")}
    steps = given["steps"] or 0
    implied = {"stage1_steps": steps // 3, "eval_every": max(1, steps // 10)} if defaults else {}
    if defaults:
        implied["save_every"] = given["eval_every"]
    same_code = {"target", "source_lang"}  # stored as ISO 639-3: the default "sw"/"en" is the same language
    words = ["xlt", "adapt"]
    for key, value in given.items():
        if value is None or value == implied.get(key, object()):
            continue
        default = defaults.get(key)
        if key in same_code and default is not None and language_code(str(default)) == language_code(str(value)):
            continue
        if value == default or (key == "init" and value == str(default).replace(" ", "")):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{key.replace('_', '-')}")
        else:
            words += [flag, str(value)]
    for k, v in sorted((settings.get("init_options") or {}).items()):
        words += ["-O", f"{k}={v}"]
    for k, v in sorted((settings.get("method_options") or {}).items()):
        words += ["-M", f"{k}={v}"]
    return " ".join(shlex.quote(w) for w in words)


def _name(source: str) -> str:
    """A model's portable name: a packaged model's name as it is, a folder by its last part."""
    s = str(source).rstrip("/")
    return s.rsplit("/", 1)[-1] or s


def adapt_card_info(run: dict, key: str, model: dict, fmt: str, license: str | None = None,
                    license_note: str = "", defaults: dict | None = None) -> CardInfo:
    """The card of model ``key`` of an ``xlt adapt`` run.

    ``run``: the run's ``metrics.json`` (or, before the run has finished, the part of it known so far: at least
    ``settings`` and ``target_language``); ``model``: the model's own ``metrics.json``; ``fmt``: what
    :func:`folder_format` says of the folder; ``defaults``: the keyword defaults of
    :meth:`xlt.adapt.AdaptSettings.create`, left out of the command line shown. Paths in them are expected portable
    already (names, or relative to the run folder)."""
    s = run["settings"]
    train = s.get("train", {})
    tgt = run.get("target_language") or {"code": s["target"], "name": s["target"]}
    source = str(s["source"])
    base = _name(source)
    init, method = model.get("init", key), model.get("method", "full")
    corpus = run.get("corpus") or {"name": s.get("corpus")}
    corpus_name = corpus.get("name") or str(s.get("corpus"))
    steps = train.get("steps")
    tokens = None
    if steps is not None and train.get("batch_size"):
        tokens = steps * train["batch_size"] * train.get("grad_accum", 1) * train["seq_len"]
    desc = (run.get("source_model") or {}).get("description")
    summary = (f"**{base}** adapted to **{tgt['name']}** (`{tgt['code']}`) by xlt's cross-lingual "
               f"transfer: a new {s.get('vocab_size'):,}-token target tokenizer trained on the {corpus_name} corpus, "
               f"its embeddings initialised with **{init}**, then trained for {steps} steps "
               f"({train.get('stage1_steps')} on the embeddings alone, then {method} adaptation).")
    if desc:
        summary += f"\n\nSource model: {desc}."
    stage2 = (model.get("trainable_parameters") or {}).get("stage2")
    opts = model.get("method_options") or {}
    details = [("source model", base), ("source language", s.get("source_lang")),
               ("target language", f"{tgt['name']} ({tgt['code']})"),
               ("corpus", corpus_name + (f" ({corpus['split_rule']})" if corpus.get("split_rule") else "")),
               ("target tokenizer", f"{s.get('vocab_size'):,} tokens" if s.get("vocab_size") else None),
               ("vocabulary init", init),
               ("adaptation method", method + (f" ({', '.join(f'{k}={v}' for k, v in opts.items())})" if opts else "")),
               ("steps", f"{steps} ({train.get('stage1_steps')} embeddings only, then stage 2)"),
               ("training tokens seen", f"{tokens:,} (steps × batch × accumulation × sequence length, per process)"
                if tokens else None),
               ("trainable parameters in stage 2", f"{stage2:,}" if stage2 is not None else None),
               ("training precision", train.get("precision")), ("seed", train.get("seed"))]
    details = [(k, str(v)) for k, v in details if v is not None]
    hist = (model.get("history") or {}).get("eval") or []
    results = []
    if hist:
        results.append({"model": f"{key} (after init, before training)", "split": "dev",
                        "bits_per_byte": hist[0].get("bits_per_byte"), "signature": hist[0].get("signature")})
        results.append({"model": key, "split": "dev", "bits_per_byte": hist[-1].get("bits_per_byte"),
                        "signature": hist[-1].get("signature")})
    test = model.get("test") or {}
    if test:
        results.append({"model": key, "split": "test", "bits_per_byte": test.get("bits_per_byte"),
                        "signature": test.get("signature")})
    ref = run.get("reference") or {}
    for split in ("dev", "test"):
        if split in ref:
            results.append({"model": f"{base}, own tokenizer (no transfer)", "split": split,
                            "bits_per_byte": ref[split].get("bits_per_byte"), "signature": ref[split].get("signature")})
    note = ""
    if not ref:
        note = ("The no-transfer reference (the source model with its own tokenizer) is in the run's metrics.json once "
                "the run has finished.")
    premium, premium_note = [], ""
    tok = run.get("tokenization")
    if tok:
        table = tok.get("table") or {}
        premium = [(name, row["premium"]) for name, row in table.items() if isinstance(row, dict) and "premium" in row]
        if premium:
            premium_note = (f"Tokens a tokenizer needs for the {tok.get('split', 'dev')} {tgt['code']} text over the tokens "
                            f"the source tokenizer needs for the parallel {tok.get('parallel_with')} text "
                            f"({tok.get('documents')} documents; Petrov et al., 2023). `target` is this model's "
                            "tokenizer, `source` the source model's.")
        else:
            premium_note = "Not measured: the corpus has no parallel source-language text."
    tags = ["cross-lingual-transfer", "vocabulary-transfer", f"init:{init}", f"method:{method}"]
    datasets = [corpus_name] if corpus_name and ":" not in corpus_name else []
    return CardInfo(
        title=f"{base} → {tgt['name']} ({key})", summary=summary, format=fmt, base_model=base,
        base_model_relation="adapter" if fmt == "peft" else "finetune" if fmt == "transformers" else None,
        languages=[language_code(tgt["code"])], license=license, license_note=license_note, tags=tags,
        datasets=datasets, details=details, command=_adapt_command(s, defaults), results=results, results_note=note,
        done_text="Options at their defaults are left out of the command; a path in it is relative to the run folder, "
                  "as in the run's `run.json`.",
        premium=premium, premium_note=premium_note, folder=key, base_folder=base,
        base_hint=_base_hint(source))


def _base_hint(source: str) -> str:
    from xlt.models.loading import KNOWN_SOURCES

    if source in KNOWN_SOURCES:
        return (f"`base` is the source model's folder: `xlt models prepare {source}` writes it (its path: "
                f"`xlt.models.prepared_path({source!r})`); its weights must be the ones the adapter was trained on.")
    return (f"`base` is the source model's folder (`{source}` when the run was made, relative to the run folder); its "
            "weights must be the ones the adapter was trained on.")


def merge_card_info(provenance: dict, inputs: dict[str, dict] | None = None, config_yaml: str | None = None,
                    folder: str = ".") -> CardInfo:
    """The card of an ``xlt merge`` output from its ``xlt_merge.json`` (``provenance``), with what the inputs' own
    cards say (``inputs``: reference -> front matter) and the config as YAML."""
    inputs = inputs or {}
    method = provenance.get("merge_method", "?")
    m = provenance.get("method") or {}
    refs = provenance.get("inputs") or {}
    labels = {r: _name((v or {}).get("label") or r) for r, v in refs.items()}
    rows = [[labels[r], (v or {}).get("path") or "—", (v or {}).get("lora") or "—"] for r, v in refs.items()]
    langs = [c for meta in inputs.values() for c in (meta.get("language") or [])]
    lics = {meta.get("license") for meta in inputs.values()}
    lic = lics.pop() if len(lics) == 1 else None
    summary = (f"A merge of {len(refs)} model{'s' if len(refs) != 1 else ''} with **{method}**"
               + (f" ({m['description']})" if m.get("description") else "") + ", written by `xlt merge`.")
    if m.get("paper"):
        summary += f" Method: {m['paper']}."
    details = [("merge method", method), ("tokenizer and config from", labels.get(provenance.get("tokenizer_from"),
                                                                                    provenance.get("tokenizer_from"))),
               ("tensors", provenance.get("tensors")), ("compute dtype", provenance.get("compute_dtype")),
               ("signature", f"`{provenance['signature']}`" if provenance.get("signature") else None)]
    details = [(k, str(v)) for k, v in details if v is not None]
    sections = [("Inputs", _table(["model", "path (relative to this folder)", "LoRA adapter"], rows))]
    if m.get("deviations"):
        sections.append(("Deviations from the reference implementation", str(m["deviations"])))
    if config_yaml:
        sections.append(("Merge config", f"As given, with paths relative to this folder:\n\n```yaml\n"
                                         f"{config_yaml.rstrip()}\n```"))
    lic_note = ("inherited from the inputs' cards." if lic else
                "The inputs' licences are not known to xlt (or differ): the licences of every input apply; add the "
                "`license` field before you publish this model.")
    return CardInfo(title=f"{method} merge of {', '.join(labels.values())}", summary=summary, format="transformers",
                    base_model=list(labels.values()) or None, base_model_relation="merge" if labels else None,
                    languages=langs, license=lic, license_note=lic_note, tags=["merge", f"merge:{method}"],
                    details=details, results_note="Not evaluated here: `xlt evaluate FOLDER` scores it.",
                    sections=sections, folder=folder)


def card_sections(body: str) -> tuple[str, dict[str, str]]:
    """``(title, {heading: text})`` of a card's Markdown body (``# title``, then ``## heading`` sections)."""
    title, sections, current = "", {}, None
    for line in body.splitlines():
        if line.startswith("# ") and not title and current is None:
            title = line[2:].strip()
        elif line.startswith("## "):
            current = line[3:].strip()
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return title, {k: v.strip() for k, v in sections.items()}


def export_card_info(source_card: str | None, source_name: str, method: str, dtype: str, folder: str = ".",
                     base_model: str | None = None) -> CardInfo:
    """The card of an ``xlt export`` output: a whole transformers model made from the method folder ``source_name``
    (whose card, if it has one, is ``source_card``: its metadata, what was done, results and premium carry over)."""
    meta, body = parse_card(source_card) if source_card else ({}, "")
    title, sec = card_sections(body)
    summary = (f"A plain transformers model exported by `xlt export` from `{source_name}` (method {method}, "
               f"{dtype}): what the method trained is folded into the weights, so no xlt and no adapter library is "
               "needed to load it.")
    head = ("\n" + body).split("\n## ", 1)[0]
    intro = "\n".join(line for line in head.splitlines() if not line.startswith("# ")).strip()
    if intro:
        summary += "\n\n" + intro
    note = ("Measured on the model before export; the exported weights give the same logits in fp32"
            + ("" if dtype == "fp32" else f" (here stored in {dtype}, so the numbers can differ in the last digits)")
            + ".")
    results = sec.get("Results", "")
    base = meta.get("base_model") or base_model
    tags = [t for t in (meta.get("tags") or []) if t != "xlt"] + ["exported"]
    lic_text = sec.get("Licence", "")
    return CardInfo(
        title=(title or source_name) + " (exported)", summary=summary, format="transformers",
        base_model=base, base_model_relation="finetune" if base else None,
        languages=list(meta.get("language") or []), license=meta.get("license"),
        license_note="inherited from the source folder's card." if meta.get("license") else lic_text,
        tags=tags, datasets=list(meta.get("datasets") or []),
        details=[("exported from", source_name), ("method", method), ("dtype", dtype)],
        done_text=sec.get("What was done", ""), results_note=(results + "\n\n" + note) if results else "",
        premium_note=sec.get("Tokenizer premium", ""), folder=folder)


# -- reading folders and writing cards (I/O) ---------------------------------------------------------------------
def folder_format(folder: str | os.PathLike) -> str:
    """Which library loads ``folder``: ``transformers`` (a whole model: ``config.json`` and weights), ``peft`` (a PEFT
    adapter that carries the new embeddings and head, with a tokenizer beside it) or ``xlt`` (the rest)."""
    folder = Path(folder)
    cfg = folder / "adapter_config.json"
    if cfg.is_file():
        try:
            c = json.loads(cfg.read_text(encoding="utf-8"))
            meta = json.loads((folder / "xlt_method.json").read_text(encoding="utf-8")) \
                if (folder / "xlt_method.json").is_file() else {}
        except (OSError, json.JSONDecodeError):
            return "xlt"
        # the embeddings inside the adapter: as modules PEFT saves whole, as trainable tokens, or saved by PEFT's
        # save_embedding_layers (xlt_method.json then names the adapter's file as the one holding them)
        carries = bool(c.get("modules_to_save") or c.get("trainable_token_indices")
                       or meta.get("embeddings") == "adapter_model.safetensors")
        has_tok = (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()
        return "peft" if carries and has_tok else "xlt"
    if (folder / "xlt_method.json").is_file():
        return "xlt"
    return "transformers"


def source_license(source: str, folder: str | os.PathLike | None = None) -> tuple[str | None, str]:
    """``(hub licence id or None, note)`` of a source model: a packaged model's licence, else what its folder says
    (``xlt_prepared.json``, or its own model card's ``license``)."""
    from xlt.models.prepare import PREPARERS

    text = None
    if source in PREPARERS:
        text = PREPARERS[source].get("licence")
    elif folder is not None:
        folder = Path(folder)
        try:
            if (folder / "xlt_prepared.json").is_file():
                text = json.loads((folder / "xlt_prepared.json").read_text(encoding="utf-8")).get("licence")
            elif (folder / "README.md").is_file():
                text = read_front_matter(folder).get("license")
        except (OSError, json.JSONDecodeError, ValueError):
            text = None
    lic = hub_license(text)
    if lic:
        return lic, f"inherited from the source model ({text})."
    if text:
        return None, (f"The source model's licence applies: {text}. Add the matching `license` field before you "
                      "publish this model.")
    return None, ""


def read_front_matter(folder: str | os.PathLike) -> dict:
    """The front matter of ``folder/README.md`` ({} when there is none or it is not YAML)."""
    path = Path(folder) / "README.md"
    if not path.is_file():
        return {}
    try:
        meta, _ = parse_card(path.read_text(encoding="utf-8"))
    except Exception:  # a hand-written card with broken YAML says nothing we can use
        return {}
    return meta if isinstance(meta, dict) else {}


def write_card_text(folder: str | os.PathLike, text: str) -> Path:
    """Write ``folder/README.md`` through a temporary file and a rename (replacing any card there)."""
    folder = Path(folder)
    path = folder / "README.md"
    fd, tmp = tempfile.mkstemp(prefix=".README.", suffix=".md", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path


def write_export_card(folder: str | os.PathLike, source: str | os.PathLike, name: str = ".") -> Path:
    """Write the card of the exported ``folder`` (with its ``xlt_export.json``) from the method folder ``source``;
    ``name``: how the load snippet names the exported folder."""
    folder, source = Path(folder), Path(source)
    record = {}
    if (folder / "xlt_export.json").is_file():
        record = json.loads((folder / "xlt_export.json").read_text(encoding="utf-8"))
    src_card = (source / "README.md").read_text(encoding="utf-8") if (source / "README.md").is_file() else None
    if src_card is not None and "xlt" not in (read_front_matter(source).get("tags") or []):
        src_card = None  # not a card xlt wrote (e.g. PEFT's template)
    info = export_card_info(src_card, source.name, record.get("method", "full"), record.get("dtype", "fp32"),
                            name, record.get("base_model"))
    return write_card_text(folder, render_card(info))


def write_model_card(folder: str | os.PathLike, **info) -> Path:
    """Render a :class:`CardInfo` from ``info`` (its fields as keyword arguments) into ``folder/README.md``.
    ``format`` defaults to what :func:`folder_format` says of the folder."""
    info.setdefault("format", folder_format(folder))
    return write_card_text(folder, render_card(CardInfo(**info)))


__all__ = ["CardInfo", "adapt_card_info", "card_sections", "export_card_info", "folder_format", "front_matter", "hub_license", "language_code",
           "load_snippet", "merge_card_info", "parse_card", "read_front_matter", "render_card", "source_license",
           "write_card_text", "write_export_card", "write_model_card"]
