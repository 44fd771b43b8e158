"""Target-language tags (Johnson et al. 2017, Google's multilingual NMT): ``<2xx>`` prepended to the source side of
every record, and, given a model, each tag added to its tokenizer as ONE token whose embedding starts at the mean
of the existing rows (input and, when untied, output embeddings).

Records come from another builder's JSONL (``lmt``, ``backtranslate``, ...): the tag of the record's target
language (``tgt_lang``, else the last of ``langs``) is prepended to ``field`` (default ``src_text``). The tag of a
language is ``<2`` + its ISO 639-1 code where it has one (``<2sw>``), else its ISO 639-3 code, + ``>``
(:func:`tag_of`). With ``model``, OUT/model is that model with the tags added (``xlt generate --target sw`` then
finds ``<2sw>``): give ``langs`` for the tags to add, or they are collected from the records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from xlt.data.registry import register_builder
from xlt.errors import XltError
from xlt.languages import resolve
from xlt.options import option


def tag_of(lang: str) -> str:
    """``<2sw>`` for Swahili (``sw``, ``swa`` or ``swh``); ``<2xxx>`` for a language without an ISO 639-1 code."""
    l = resolve(lang)
    return f"<2{l.alpha2 or l.code}>"


def add_tag_tokens(model, tokenizer, tags: list[str]) -> list[int]:
    """Add ``tags`` as special tokens (each one token, never split) and give their embedding rows the mean of the
    existing rows; returns their ids. Tags already in the vocabulary are kept as they are."""
    import torch

    new = [t for t in tags if t not in tokenizer.get_vocab()]
    if new:
        n_old = model.get_input_embeddings().weight.shape[0]
        tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for emb in {id(e): e for e in (model.get_input_embeddings(), model.get_output_embeddings()) if e is not None}.values():
                w = emb.weight
                w[n_old:] = w[:n_old].mean(0, keepdim=True)
                bias = getattr(emb, "bias", None)
                if bias is not None:
                    bias[n_old:] = bias[:n_old].mean()
    ids = [tokenizer.convert_tokens_to_ids(t) for t in tags]
    for t, i in zip(tags, ids):
        if tokenizer(t, add_special_tokens=False)["input_ids"] != [i]:
            raise XltError(f"tag {t} does not encode as one token", "report this: the tokenizer splits added tokens")
    return ids


def _target(rec: dict, where: str) -> str:
    lang = rec.get("tgt_lang") or (rec.get("langs") or [None])[-1]
    if not lang:
        raise XltError(f"{where} names no target language (tgt_lang or langs)", "tag records written by xlt data builders")
    return lang


@dataclass
class TagOptions:
    input: str = option(help="JSONL records of another builder (its --out, or the data.jsonl inside it)")
    field: str = option("src_text", "the record field the tag is prepended to")
    model: str | None = option(None, "a packaged model name or HF folder: OUT/model gets the tags as new tokens")
    langs: list[str] | None = option(None, "languages whose tags are added to the model (default: the records' targets)")


@register_builder("tag")
class Tag:
    description = "prepend <2xx> target-language tags (Johnson et al.) and add them to a model as one token each"
    options = TagOptions
    seeded = False

    def records(self, ctx, o: TagOptions) -> Iterator[dict]:
        path = Path(o.input)
        if path.is_dir():
            path = path / "data.jsonl"
        if not path.is_file():
            raise XltError(f"input {o.input} does not exist", "give the --out of an `xlt data` command")
        ctx.add_input("input", path)
        targets: list[str] = [tag_of(l) for l in (o.langs or [])]
        with open(path, encoding="utf-8") as fh:
            for chunk in ctx.chunks(l for l in fh if l.strip()):
                for line in chunk:
                    rec = json.loads(line)
                    where = f"record {rec.get('key', '?')} of {o.input}"
                    if o.field not in rec or not isinstance(rec[o.field], str):
                        raise XltError(f"{where} has no text field {o.field!r}",
                                       f"name the field with --field (fields: {', '.join(rec)})")
                    tag = tag_of(_target(rec, where))
                    if tag not in targets and not o.langs:
                        targets.append(tag)
                    rec = {k: v for k, v in rec.items() if k != "builder"}
                    rec[o.field] = f"{tag} {rec[o.field]}"
                    rec["tag"] = tag
                    yield rec
        if o.model:
            self._write_model(ctx, o.model, targets)

    def _write_model(self, ctx, spec: str, tags: list[str]) -> None:
        from xlt.models.loading import load_source

        folder = ctx.side_folder("model")
        model, tok, src = load_source(spec)
        ids = add_tag_tokens(model, tok, tags)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        ctx.extra["tags"] = dict(zip(tags, ids))
        ctx.extra["model"] = {"source": spec, "init": "mean of the existing embedding rows", "folder": "model"}

    def example(self, workdir: Path) -> dict:
        p = workdir / "pairs.jsonl"
        with open(p, "w", encoding="utf-8") as fh:
            for i, (lang, text) in enumerate([("swh", "habari"), ("fra", "bonjour"), ("swh", "asante"), ("deu", "danke")]):
                fh.write(json.dumps({"builder": "lmt", "key": str(i), "langs": ["eng", lang], "origin": "real",
                                     "src_text": f"hello {i}", "tgt_text": text}) + "\n")
        return {"input": str(p)}
