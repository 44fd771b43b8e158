"""Labelled character spans: checks, BIO conversion both ways, and exact-match span F1.

- :class:`Span` ``(start, end, label)`` is a half-open character range ``text[start:end]`` with a type label
  (an optional ``score`` rides along and takes no part in equality).
- A *tokenizer* here maps a text to the ``(start, end)`` character offsets of its tokens: :func:`whitespace`
  (runs of non-space characters, the default) or :func:`words_and_punctuation` (letter/mark/number runs, inner
  apostrophes and hyphens kept, every other non-space character a token of its own, as CoNLL files split them).
- :func:`bio_from_spans` tags every token a span overlaps (``B-X`` on its first token, ``I-X`` after);
  :func:`spans_from_bio` reads the chunks back with seqeval's default (conlleval) rules: a chunk starts at
  ``B-X``, at ``I-X`` after ``O`` or after a tag of another type, and continues over ``I-X`` that follow
  ``B-X``/``I-X``. Spans that start and end on token boundaries survive the round trip exactly.
- :func:`span_f1` scores predicted against gold spans by exact match of ``(sentence, start, end, label)``:
  precision = matched / predicted, recall = matched / gold, F1 = 2·matched / (predicted + gold) (0 when empty),
  overall (micro) and per label, i.e. the numbers of ``seqeval.metrics.classification_report`` on the BIO
  versions (its "micro avg" and per-type rows). Duplicate spans in one sentence count once, as in seqeval.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from xlt.errors import XltError

__all__ = ["Span", "Tokenizer", "whitespace", "words_and_punctuation", "token_offsets", "covered_tokens", "check_spans",
           "bio_from_spans", "spans_from_bio", "span_f1", "spans_from_dicts", "spans_to_dicts"]

#: a tokenizer: text -> the (start, end) character offsets of its tokens, in order, non-overlapping
Tokenizer = Callable[[str], list[tuple[int, int]]]


@dataclass(frozen=True)
class Span:
    """``text[start:end]`` labelled ``label``; ``score`` (a projection's score) is carried, not compared."""

    start: int
    end: int
    label: str
    score: float | None = field(default=None, compare=False, repr=False)


_WS = re.compile(r"\S+")


def whitespace(text: str) -> list[tuple[int, int]]:
    """Offsets of the whitespace-separated tokens of ``text``."""
    return [m.span() for m in _WS.finditer(text)]


@lru_cache(maxsize=1)
def _word_punct():
    try:
        import regex

        w = r"[\p{L}\p{M}\p{N}]"
        return regex.compile(rf"{w}+(?:['’\-]{w}+)*|\S")
    except ImportError:  # pragma: no cover - regex ships with transformers
        return re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*|\S")


def words_and_punctuation(text: str) -> list[tuple[int, int]]:
    """Offsets of words (letters, marks, digits; inner ``'``/``’``/``-`` kept) and of each other non-space
    character (punctuation, symbols) as a token of its own: ``"Yesu, mwana"`` -> ``Yesu`` ``,`` ``mwana``."""
    return [m.span() for m in _word_punct().finditer(text)]


def token_offsets(text: str, tokenize: Tokenizer = whitespace) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, ends)`` of the tokens of ``text`` as int64 arrays."""
    offs = tokenize(text)
    if not offs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    a = np.asarray(offs, dtype=np.int64)
    return a[:, 0].copy(), a[:, 1].copy()


def check_spans(text: str, spans: Sequence[Span], where: str) -> None:
    """One :class:`XltError` naming ``where`` (the record) for a span outside ``text``, empty, or unlabelled."""
    for s in spans:
        if not (isinstance(s.start, (int, np.integer)) and isinstance(s.end, (int, np.integer))):
            raise XltError(f"{where}: span {s.start!r}-{s.end!r} has non-integer offsets",
                           "give character offsets as integers")
        if not 0 <= s.start < s.end <= len(text):
            raise XltError(
                f"{where}: span {s.start}-{s.end} ({s.label}) is outside its sentence of {len(text)} characters"
                + (" or empty" if s.start >= s.end else ""),
                "give 0 <= start < end <= len(text), in characters of the record's own text",
            )
        if not isinstance(s.label, str) or not s.label or s.label.startswith(("B-", "I-")) or s.label == "O":
            raise XltError(f"{where}: span {s.start}-{s.end} has label {s.label!r}",
                           "give each span a non-empty type label such as PER (without B-/I-)")


def covered_tokens(starts: np.ndarray, ends: np.ndarray, spans: Sequence[Span]) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last token index each span overlaps."""
    s = np.fromiter((x.start for x in spans), dtype=np.int64, count=len(spans))
    e = np.fromiter((x.end for x in spans), dtype=np.int64, count=len(spans))
    return np.searchsorted(ends, s, side="right"), np.searchsorted(starts, e, side="left")


def bio_from_spans(text: str, spans: Sequence[Span], tokenize: Tokenizer = whitespace,
                   where: str = "spans") -> tuple[list[str], list[str]]:
    """``(tokens, tags)``: the tokens of ``text`` and their BIO tags; a token is inside a span when it overlaps it.

    Spans outside the text, spans that cover no token and two spans sharing a token raise :class:`XltError`
    naming ``where``."""
    check_spans(text, spans, where)
    starts, ends = token_offsets(text, tokenize)
    tokens = [text[a:b] for a, b in zip(starts.tolist(), ends.tolist())]
    tags = ["O"] * len(tokens)
    if not spans:
        return tokens, tags
    first, stop = covered_tokens(starts, ends, spans)
    owner = np.full(len(tokens), -1, dtype=np.int64)
    for i, (sp, a, b) in enumerate(zip(spans, first.tolist(), stop.tolist())):
        if a >= b:
            raise XltError(f"{where}: span {sp.start}-{sp.end} ({sp.label}) covers no token",
                           "spans must cover at least one non-space character")
        clash = owner[a:b][owner[a:b] >= 0]
        if clash.size:
            o = spans[int(clash[0])]
            raise XltError(f"{where}: spans {o.start}-{o.end} and {sp.start}-{sp.end} share a token",
                           "BIO tags need non-overlapping spans on distinct tokens")
        owner[a:b] = i
        tags[a] = "B-" + sp.label
        tags[a + 1:b] = ["I-" + sp.label] * (b - a - 1)
    return tokens, tags


def _locate(tokens: Sequence[str], text: str) -> list[tuple[int, int]]:
    """Character offsets of ``tokens`` found in order in ``text``."""
    out, pos = [], 0
    for t in tokens:
        i = text.find(t, pos) if t else -1
        if i < 0:
            raise XltError(f"token {t!r} is not in the text after character {pos}",
                           "give the text the tokens were taken from, tokens in order")
        out.append((i, i + len(t)))
        pos = i + len(t)
    return out


def _split_tag(tag: str) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[:2] in ("B-", "I-"):
        return tag[0], tag[2:]
    raise XltError(f"tag {tag!r} is not BIO", "use O, B-TYPE or I-TYPE")


def spans_from_bio(tokens: Sequence[str], tags: Sequence[str], text: str) -> list[Span]:
    """The labelled chunks of ``tags`` as character spans of ``text`` (tokens are found in order in ``text``),
    read with seqeval's default rules (module docstring)."""
    if len(tokens) != len(tags):
        raise XltError(f"{len(tokens)} tokens but {len(tags)} tags", "give one tag per token")
    offs = _locate(tokens, text)
    out: list[Span] = []
    prev_kind, prev_type, begin = "O", "", -1
    for i, tag in enumerate(tags):
        kind, typ = _split_tag(tag)
        continues = kind == "I" and prev_kind != "O" and typ == prev_type
        if begin >= 0 and not continues:
            out.append(Span(offs[begin][0], offs[i - 1][1], prev_type))
            begin = -1
        if kind != "O" and not continues:
            begin = i
        prev_kind, prev_type = kind, typ
    if begin >= 0:
        out.append(Span(offs[begin][0], offs[-1][1], prev_type))
    return out


def _prf(tp: int, n_pred: int, n_gold: int) -> dict:
    return {"precision": tp / n_pred if n_pred else 0.0, "recall": tp / n_gold if n_gold else 0.0,
            "f1": 2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0, "support": n_gold}


def span_f1(gold: Sequence[Sequence[Span]], pred: Sequence[Sequence[Span]]) -> dict:
    """Exact-match span precision/recall/F1: ``{"overall": {precision, recall, f1, support}, LABEL: {...}}``
    (labels sorted; ``support`` = gold spans). ``gold[i]`` and ``pred[i]`` are the spans of sentence ``i``."""
    if len(gold) != len(pred):
        raise XltError(f"{len(gold)} gold sentences but {len(pred)} predicted", "give one span list per sentence")
    g = {(i, s.start, s.end, s.label) for i, ss in enumerate(gold) for s in ss}
    p = {(i, s.start, s.end, s.label) for i, ss in enumerate(pred) for s in ss}
    hit = g & p
    ng, np_, nt = (Counter(x[3] for x in c) for c in (g, p, hit))
    labels = sorted(set(ng) | set(np_))
    if "overall" in labels:
        raise XltError("a span is labelled 'overall', the name of the micro average", "rename that label")
    out = {"overall": _prf(len(hit), len(p), len(g))}
    for lab in labels:
        out[lab] = _prf(nt[lab], np_[lab], ng[lab])
    return out


def spans_from_dicts(items: Sequence[dict], where: str) -> list[Span]:
    """:class:`Span` objects from ``[{"start", "end", "label"}, ...]`` (as JSONL files hold them)."""
    if not isinstance(items, list):
        raise XltError(f"{where}: 'spans' is a {type(items).__name__}, not a list",
                       'give "spans": [{"start": 0, "end": 5, "label": "PER"}, ...]')
    out = []
    for d in items:
        if not isinstance(d, dict) or not {"start", "end", "label"} <= set(d):
            raise XltError(f"{where}: span {d!r} lacks start, end or label",
                           'give each span as {"start": INT, "end": INT, "label": TEXT}')
        start, end = d["start"], d["end"]
        if isinstance(start, bool) or isinstance(end, bool) or not isinstance(start, int) or not isinstance(end, int):
            raise XltError(f"{where}: span {d!r} has non-integer offsets", "give character offsets as integers")
        out.append(Span(start, end, d["label"]))
    return out


def spans_to_dicts(text: str, spans: Sequence[Span]) -> list[dict]:
    return [{"start": s.start, "end": s.end, "label": s.label, "text": text[s.start:s.end]} for s in spans]
