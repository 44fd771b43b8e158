"""``xlt data lmt``: pivot-centric translation pairs from multi-way parallel data, with LMT's Strategic Downsampling
and Parallel Multilingual Prompting (Luo et al. 2025, "Beyond English", arXiv 2511.07003; NiuTrans/LMT).

Multi-way data (the same pivot sentence translated into every language X, e.g. Bible verses) used symmetrically
gives, per pivot sentence, one forward pair pivot→X and one reverse pair X→pivot for every X. The reverse pairs map
many sources onto the same target sentence (many-to-one), which LMT identifies as the cause of *directional
degeneration*: the model learns shortcuts and X→pivot quality drops. Their remedy, **Strategic Downsampling**, keeps
the forward directions and downsamples the reverse ones. Here, per pivot sentence (corpus key):

- every forward pair pivot→X is kept (X in ``--langs`` with a translation of that key);
- at most ``reverse_cap`` reverse pairs X→pivot are kept, the X chosen uniformly without replacement by the
  record's generator ``ctx.rng(key)`` (cap 0: no reverse pairs; cap ≥ number of languages: all of them).
  The paper's retention ratio was not published; the cap is this tool's knob.

:func:`directional_stats` measures what the paper measures: pairs per direction, and for every target sentence the
number of distinct source sentences mapped onto it (many-to-one), and for every source sentence the number of
distinct targets (one-to-many). The builder writes it for the full symmetric set ("before") and for what it kept
("after") into the manifest's ``stats.directional_stats``; after downsampling, a pivot sentence is the target of at
most ``reverse_cap`` sources.

Every record carries LMT's instruction (``NiuTrans/LMT`` ``src/utils.py``)::

    Translate the following text from {src} into {tgt}:
    {src}: {text}
    {tgt}:

**Parallel Multilingual Prompting** (``--pmp``) adds one auxiliary parallel line, ``{aux}: {aux_text}``, after the
source line: the same key's sentence in a typologically related language. ``--pmp LANG`` names that language (it must
be neither the pivot nor in ``--langs``, or its line would give away a target); ``--pmp nearest`` takes, per
direction, the corpus language (other than source and target) closest to the *target* language by URIEL+ distance
(``--pmp-distance``, default ``featural``: the angular distance of URIEL+'s typological feature vectors, union
aggregation over sources, shared known features only, as ``urielplus.URIELPlus().new_distance`` computes it; here
by :mod:`xlt.predict.distances` from the package's bundled arrays without importing it). If that language lacks the
key, the next closest one that has it is used; a record for which no candidate has the key is dropped (filter
``pmp_aux``). The paper's exact PMP template was not published.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping

import numpy as np

from xlt.data.registry import register_builder
from xlt.errors import XltError
from xlt.options import non_negative, option
from xlt.predict.distances import SOURCES

#: LMT's translation instruction (NiuTrans/LMT ``src/utils.py``, ``en_trans_prompt``)
LMT_TEMPLATE = "Translate the following text from {src_lang} into {tgt_lang}:\n{src_lang}: {src_text}\n{tgt_lang}:"
#: URIEL+ distance kinds --pmp-distance offers: kind -> (file, feature-name prefix or None for all), from
#: :data:`xlt.predict.distances.SOURCES`
DISTANCE_KINDS = {k: SOURCES[k] for k in ("featural", "syntactic", "phonological", "inventory", "genetic")}
DistanceKind = Literal["featural", "syntactic", "phonological", "inventory", "genetic"]


# -- languages and corpora (shared with the instruct builder) ---------------------------------------------------
def language_name(code: str) -> str:
    """The English name of a language for prompts: ``swh`` -> ``Swahili``, ``ell`` -> ``Modern Greek``."""
    from xlt.languages import resolve

    return re.sub(r"\s*\([^)]*\)$", "", resolve(code).name)


def open_languages(corpus_spec: str, pivot: str, langs: Iterable[str]) -> tuple[Any, str, list[str]]:
    """``(corpus, pivot code, other codes)``: every language resolved to ISO 639-3 and checked against the corpus
    (one :class:`XltError` otherwise); the pivot, if also listed in ``langs``, and repeats are dropped."""
    from xlt.corpora import open_corpus

    corpus = open_corpus(corpus_spec)
    piv = corpus.language(pivot).code
    codes = list(dict.fromkeys(corpus.language(l).code for l in langs))
    codes = [c for c in codes if c != piv]
    if not codes:
        raise XltError(f"no language besides the pivot {piv} was given",
                       "list the other languages with --langs, e.g. --langs swh,fra")
    return corpus, piv, codes


def record_corpus_input(ctx: Any, corpus: Any) -> None:
    """The corpus file's SHA-256 in the manifest (file corpora; the Bible is a fixed package)."""
    path = getattr(corpus, "path", None)
    if path is not None:
        ctx.add_input("corpus", path)


def key_table(corpus: Any, lang: str, split: str | None) -> dict[str, str]:
    """``{key: text}`` of ``lang``'s documents in ``split`` (the first document of a repeated key wins)."""
    out: dict[str, str] = {}
    for d in corpus.documents(lang, split):
        out.setdefault(d.key, d.text)
    return out


# -- directional statistics --------------------------------------------------------------------------------------
def _pair(p: Any) -> tuple[str, str, str, str]:
    if isinstance(p, Mapping):
        src, tgt = p["langs"]
        return src, tgt, p["src_text"], p["tgt_text"]
    src, tgt, s, t = p
    return src, tgt, s, t


def _fan(groups: dict[tuple[str, str], set]) -> dict[str, dict]:
    """Per language: sentences, and the mean/max number of distinct partners per sentence and how many have ≥ 2."""
    by_lang: dict[str, list[int]] = defaultdict(list)
    for (lang, _), partners in groups.items():
        by_lang[lang].append(len(partners))
    out = {}
    for lang in sorted(by_lang):
        n = np.asarray(by_lang[lang])
        out[lang] = {"sentences": int(n.size), "pairs": int(n.sum()), "partners_mean": float(n.mean()),
                     "partners_max": int(n.max()), "with_several": int((n >= 2).sum())}
    return out


def directional_stats(pairs: Iterable[Any], pivot: str | None = None) -> dict:
    """Direction and mapping statistics of translation pairs (LMT's diagnosis of directional degeneration).

    ``pairs``: ``(src_lang, tgt_lang, src_text, tgt_text)`` tuples or records with ``langs`` and
    ``src_text``/``tgt_text`` (this builder's output). Returns

    - ``pairs``: their number; ``directions``: ``{"eng-swh": count, ...}``;
    - ``to_pivot`` / ``from_pivot``: pairs whose target / source language is ``pivot`` (when given);
    - ``many_to_one``: per target language, over its distinct target sentences, ``sentences``, ``pairs`` (distinct
      source-target links), ``partners_mean`` / ``partners_max`` (distinct ``(source language, source text)`` per
      target sentence) and ``with_several`` (target sentences with ≥ 2 distinct sources);
    - ``one_to_many``: the same per source language, counting distinct ``(target language, target text)`` per
      source sentence.
    """
    directions: dict[str, int] = defaultdict(int)
    sources_of: dict[tuple[str, str], set] = defaultdict(set)
    targets_of: dict[tuple[str, str], set] = defaultdict(set)
    total = 0
    for p in pairs:
        src, tgt, s, t = _pair(p)
        total += 1
        directions[f"{src}-{tgt}"] += 1
        sources_of[(tgt, t)].add((src, s))
        targets_of[(src, s)].add((tgt, t))
    out: dict[str, Any] = {"pairs": total, "directions": dict(sorted(directions.items()))}
    if pivot is not None:
        out["to_pivot"] = sum(n for d, n in directions.items() if d.split("-")[1] == pivot)
        out["from_pivot"] = sum(n for d, n in directions.items() if d.split("-")[0] == pivot)
    out["many_to_one"] = _fan(sources_of)
    out["one_to_many"] = _fan(targets_of)
    return out


class _StatsAccumulator:
    """:func:`directional_stats` fed one pair at a time (the builder streams)."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str, str, str]] = []

    def add(self, src: str, tgt: str, s: str, t: str) -> None:
        self.pairs.append((src, tgt, s, t))

    def result(self, pivot: str) -> dict:
        return directional_stats(self.pairs, pivot)


# -- downsampling ---------------------------------------------------------------------------------------------------
def choose_reverse(available: list[str], cap: int, rng: np.random.Generator) -> list[str]:
    """At most ``cap`` of ``available`` (uniform, without replacement), in ``available``'s order."""
    if cap >= len(available):
        return list(available)
    if cap == 0:
        return []
    idx = np.sort(rng.choice(len(available), size=cap, replace=False))
    return [available[i] for i in idx]


def lmt_prompt(src_lang: str, tgt_lang: str, text: str, aux: tuple[str, str] | None = None) -> str:
    """LMT's instruction for ``text`` (language codes are written as English names); ``aux = (lang, text)`` adds
    PMP's auxiliary parallel line after the source line."""
    src, tgt = language_name(src_lang), language_name(tgt_lang)
    prompt = LMT_TEMPLATE.format(src_lang=src, tgt_lang=tgt, src_text=text)
    if aux is None:
        return prompt
    head, last = prompt.rsplit("\n", 1)
    return f"{head}\n{language_name(aux[0])}: {aux[1]}\n{last}"


# -- typological distance (URIEL+) -------------------------------------------------------------------------------
def uriel_arrays_dir() -> Path:
    """The folder of urielplus' bundled feature arrays (``original_uriel``), found without importing urielplus."""
    from xlt.predict.distances import uriel_data_dir

    try:
        return uriel_data_dir()
    except XltError:
        raise XltError("--pmp nearest needs URIEL+ typological data: the urielplus package is not installed",
                       "install it (pip install --no-deps urielplus==1.3.2), "
                       "or name the auxiliary language: --pmp LANG") from None


def typological_distances(target: str, candidates: Iterable[str], kind: str = "featural",
                          folder: str | Path | None = None) -> dict[str, float]:
    """URIEL+ distance from ``target`` to each candidate with data (others are left out), rounded to 4 places as
    urielplus does: :func:`xlt.predict.distances.distances` (urielplus' ``new_distance`` in its default
    configuration: union aggregation over sources, the features both languages know, ``2·arccos(cos)/π``)."""
    from xlt.predict.distances import distances, uriel_code, uriel_languages

    if kind not in DISTANCE_KINDS:
        raise XltError(f"unknown URIEL+ distance {kind!r}", f"choose one of {', '.join(DISTANCE_KINDS)}")
    if target not in uriel_languages(folder):
        raise XltError(f"URIEL+ has no {kind} data for {target} ({language_name(target)})",
                       "name the auxiliary language yourself: --pmp LANG")
    codes = {}
    for c in dict.fromkeys(candidates):
        try:
            codes[c] = uriel_code(c, folder)
        except XltError:
            continue  # not in URIEL+: left out
    t = uriel_code(target, folder)
    codes = {c: u for c, u in codes.items() if c != target and u != t}
    d = distances([t, *codes.values()], kind, cache=False, folder=folder)
    out = {c: d.get(kind, t, u) for c, u in codes.items()}
    return {c: round(v, 4) for c, v in out.items() if v == v}


def rank_auxiliaries(target: str, candidates: Iterable[str], kind: str = "featural",
                     folder: str | Path | None = None) -> list[str]:
    """``candidates`` with URIEL+ data, closest to ``target`` first (ties by code)."""
    d = typological_distances(target, candidates, kind, folder)
    return sorted(d, key=lambda c: (d[c], c))


# -- the builder ------------------------------------------------------------------------------------------------------
def _check_pmp(v: str | None) -> str | None:
    return None if v is None or v.strip() else "must be 'nearest' or a language code"


@dataclass
class LmtOptions:
    corpus: str = option("bible", "multi-way parallel corpus: bible, jsonl:PATH, ...")
    pivot: str = option("eng", "the pivot language: forward pairs pivot→X, reverse pairs X→pivot")
    langs: list[str] = option(["swh", "fra", "deu"], "the other languages X (comma-separated)")
    split: Literal["train", "dev", "test"] = option("train", "corpus split")
    reverse_cap: int = option(1, "at most this many reverse pairs X→pivot per pivot sentence", check=non_negative)
    pmp: str | None = option(None, "Parallel Multilingual Prompting: 'nearest' (URIEL+) or an auxiliary language code",
                             check=_check_pmp)
    pmp_distance: DistanceKind = option("featural", "URIEL+ distance for --pmp nearest")


class _Auxiliaries:
    """Per direction, the auxiliary languages to try in order, and their texts (loaded on first use)."""

    def __init__(self, corpus: Any, split: str, ranked: dict[tuple[str, str], list[str]]):
        self.corpus, self.split, self.ranked = corpus, split, ranked
        self.tables: dict[str, dict[str, str]] = {}

    def find(self, src: str, tgt: str, key: str) -> tuple[str, str] | None:
        for lang in self.ranked[(src, tgt)]:
            if lang not in self.tables:
                self.tables[lang] = key_table(self.corpus, lang, self.split)
            text = self.tables[lang].get(key)
            if text is not None:
                return lang, text
        return None


def _auxiliaries(corpus: Any, pivot: str, langs: list[str], o: LmtOptions) -> _Auxiliaries | None:
    if o.pmp is None:
        return None
    directions = [(pivot, x) for x in langs] + [(x, pivot) for x in langs]
    if o.pmp.strip().lower() != "nearest":
        aux = corpus.language(o.pmp.strip()).code
        if aux == pivot or aux in langs:
            raise XltError(f"the auxiliary language {aux} is also a translation language here: its line would "
                           f"give away the target of the {aux} pairs",
                           "choose a language outside --pivot and --langs, or --pmp nearest")
        return _Auxiliaries(corpus, o.split, {d: [aux] for d in directions})
    folder = uriel_arrays_dir()
    everyone = [l.code for l in corpus.languages()]
    ranked = {}
    for src, tgt in directions:
        order = rank_auxiliaries(tgt, [c for c in everyone if c not in (src, tgt)], o.pmp_distance, folder)
        if not order:
            raise XltError(f"no corpus language besides {src} and {tgt} has URIEL+ {o.pmp_distance} data",
                           "name the auxiliary language: --pmp LANG, or use a corpus with more languages")
        ranked[(src, tgt)] = order
    return _Auxiliaries(corpus, o.split, ranked)


def _record(key: str, src: str, tgt: str, s: str, t: str, aux: tuple[str, str] | None) -> dict:
    rec = {"key": key, "langs": [src, tgt], "origin": "real", "direction": f"{src}-{tgt}",
           "src_text": s, "tgt_text": t, "prompt": lmt_prompt(src, tgt, s, aux)}
    if aux is not None:
        rec["aux_lang"], rec["aux_text"] = aux
    return rec


def lmt_records(ctx: Any, o: LmtOptions) -> Iterator[dict]:
    """The records of ``xlt data lmt`` (see the module docstring), streamed pivot sentence by pivot sentence."""
    corpus, pivot, langs = open_languages(o.corpus, o.pivot, o.langs)
    record_corpus_input(ctx, corpus)
    pivot_docs = corpus.documents(pivot, o.split)
    tables = {x: key_table(corpus, x, o.split) for x in langs}
    pivot_keys = {d.key for d in pivot_docs}
    lonely = [x for x in langs if not pivot_keys.intersection(tables[x])]
    if lonely:
        raise XltError(f"the {corpus.name} corpus has no {o.split} documents aligned between {pivot} and "
                       f"{', '.join(lonely)}",
                       "use a multi-way parallel corpus whose documents share keys across languages")
    aux = _auxiliaries(corpus, pivot, langs, o)
    before, after = _StatsAccumulator(), _StatsAccumulator()
    used: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    seen: set[str] = set()
    for chunk in ctx.chunks(pivot_docs):
        for doc in chunk:
            if doc.key in seen:
                continue
            seen.add(doc.key)
            available = [x for x in langs if doc.key in tables[x]]
            if not ctx.keep("multiway", bool(available)):
                continue
            forward = [(pivot, x, doc.text, tables[x][doc.key]) for x in available]
            reverse = [(x, pivot, tables[x][doc.key], doc.text) for x in available]
            for p in forward + reverse:
                before.add(*p)
            kept = set(choose_reverse(available, o.reverse_cap, ctx.rng(doc.key)))
            for src, tgt, s, t in forward + [r for r in reverse if r[0] in kept]:
                line = aux.find(src, tgt, doc.key) if aux is not None else None
                if aux is not None and not ctx.keep("pmp_aux", line is not None):
                    continue
                after.add(src, tgt, s, t)
                if line is not None:
                    used[f"{src}-{tgt}"][line[0]] += 1
                yield _record(doc.key, src, tgt, s, t, line)
    ctx.extra["directional_stats"] = {"before": before.result(pivot), "after": after.result(pivot)}
    if aux is not None:
        ctx.extra["pmp_aux_languages"] = {d: dict(sorted(c.items())) for d, c in sorted(used.items())}


@register_builder("lmt")
class LmtBuilder:
    description = ("pivot-centric translation pairs from multi-way data: reverse pairs capped per pivot sentence "
                   "(LMT Strategic Downsampling), optional parallel multilingual prompts")
    options = LmtOptions
    seeded = True

    def records(self, ctx: Any, o: LmtOptions) -> Iterator[dict]:
        return lmt_records(ctx, o)

    def example(self, workdir: Path) -> dict:
        from xlt.data.toy import toy_parallel

        path = Path(workdir) / "lmt_toy.jsonl"
        toy_parallel(path, langs=("eng", "swh", "fra", "deu"), n=40)
        return {"corpus": f"jsonl:{path}", "pivot": "eng", "langs": ["swh", "fra"], "reverse_cap": 1, "pmp": "deu"}
