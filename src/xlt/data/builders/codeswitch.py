"""Code-switched text (xCoT's xICL, Chai et al., AAAI 2025, arXiv 2401.07037): aligned fragments of a source
sentence replaced by their translation.

For every parallel ``(src, tgt)`` document pair of the corpus (``corpus.parallel``), the source words (runs of
letters and combining marks, as :func:`xlt.vocab.dictionary.tokenize_words` finds them; digits and punctuation are
never words, so never switched) are aligned to words of the target document, then each aligned *fragment* is
replaced by its target-side text with probability ``ratio``, drawn from the record's own generator
``ctx.rng(key)`` (one uniform per fragment, so the output does not depend on chunking or order).

Alignment (``align``):

- ``ibm1``: IBM Model 1 (:func:`xlt.vocab.align.ibm1_table`) trained on the lower-cased word-id sequences of the
  chosen split, with the *source* words as the generated side, i.e. ``t(source word | target word)`` with a NULL
  target word. A source word is aligned to its Viterbi target word: the word type of the pair with the highest
  ``t`` (first occurrence on ties), kept only when it beats NULL and its posterior
  ``n_w·t(s|w) / (Σ_j t(s|t_j) + t(s|NULL))`` (``n_w`` = occurrences of the type in the target document) is at least
  ``min_posterior`` (default 0.5: the link holds most of the source word's probability mass; a rare or untranslated
  source word spreads its mass over the sentence and stays unaligned). With ``symmetric`` (default) the link must
  also be the reverse model's choice: a second IBM-1, ``t(target word | source word)``, whose Viterbi source word
  for that target word is this source word (the intersection of the two directions, as in phrase-based MT's
  symmetrisation; on the en–sw Bible it drops garbage links of rare target words, e.g. "In" → "aliziumba").
- ``dictionary``: a source word is aligned to the first of its dictionary translations (in dictionary order) that
  occurs as a word of the target document. ``dictionary`` is ``freedict:eng-swh`` (one FreeDict file),
  ``freedict`` (both directions, :func:`~xlt.vocab.dictionary.freedict_dictionary`), ``induced``
  (:func:`~xlt.vocab.dictionary.induce_from_parallel` on the split) or a TSV file (``source<TAB>target``). Only
  single-word entries can match.

When the chosen target word occurs several times (:func:`place`): if the c source words of the document that chose
it meet exactly c occurrences, the r-th takes the r-th (order-preserving, one-to-one); otherwise each takes the
occurrence nearest in relative position (``|(i+½)/n − (j+½)/m|``). Alignment runs on whole chunks at once
(segmented NumPy reductions over every source × target word pair of the chunk; no per-word Python loop for IBM-1).

Units (``unit``): ``word`` — each aligned source word is a fragment, replaced by its target word; ``span`` — maximal
runs of consecutive aligned source words whose target positions form a contiguous, fully covered run of target
words, replaced as a whole by the target text from the first to the last of those words. Runs never cross
punctuation: two words belong to one span only when the text between them is whitespace on both sides.

Records: ``key``, ``langs`` ``[src, tgt]``, ``origin`` ``synthetic``, ``text`` (the switched sentence), ``source``
(the original), ``switched`` (one ``{start, end, src_start, src_end, translation}`` per replaced fragment: character
offsets in ``text`` and in ``source``; ``text[start:end] == translation``) and ``fragments`` (aligned fragments
that could have been switched: ``len(switched)`` ~ Binomial(``fragments``, ``ratio``)).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence

import numpy as np

from xlt.data.registry import register_builder
from xlt.errors import XltError
from xlt.options import option, positive, unit_interval

__all__ = ["CodeSwitchOptions", "Words", "words", "IBM1Aligner", "DictionaryAligner", "place", "fragments", "switch"]

Split = Literal["train", "dev", "test", "all"]


@dataclass
class CodeSwitchOptions:
    corpus: str = option("bible", "corpus spec: bible, jsonl:PATH, text:PATH, hf:PATH (parallel by document key)")
    src: str = option("eng", "source language (the text that gets switched)")
    tgt: str = option("swh", "target language (where the translations come from)")
    split: Split = option("train", "corpus split to read (all = every document)")
    ratio: float = option(0.3, "probability that each aligned fragment is replaced by its translation",
                          check=unit_interval)
    unit: Literal["word", "span"] = option("word", "fragment: one aligned word, or a maximal contiguous aligned span")
    align: Literal["ibm1", "dictionary"] = option("ibm1", "word alignment: IBM Model 1 on the split, or a dictionary")
    dictionary: str | None = option(None, "with align=dictionary: freedict[:eng-swh], induced, or a TSV file")
    iterations: int = option(10, "IBM-1 EM iterations", check=positive)
    min_posterior: float = option(0.5, "IBM-1: least posterior mass of a source word's link to keep it",
                                  check=unit_interval)
    symmetric: bool = option(True, "IBM-1: keep only links that both directions choose (intersection)")
    max_docs: int | None = option(None, "write at most this many document pairs", check=positive)


# -- words ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Words:
    """The words of one text: normalised keys (NFC, lower case, ``’`` as ``'``) and ``(start, end)`` offsets."""

    keys: list[str]
    offsets: np.ndarray  # (n, 2) int64 character offsets into the text

    def __len__(self) -> int:
        return len(self.keys)


def _normalise(word: str) -> str:
    return unicodedata.normalize("NFC", word.lower()).replace("’", "'")


def words(text: str) -> Words:
    """The words of ``text`` with their character offsets (the same words :func:`tokenize_words` finds)."""
    from xlt.vocab.dictionary import _word_pattern  # one definition of "word" across xlt

    matches = list(_word_pattern().finditer(text))
    offsets = np.array([m.span() for m in matches], dtype=np.int64).reshape(-1, 2)
    return Words([_normalise(m.group()) for m in matches], offsets)


def _offsets(lens: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=out[1:])
    return out


def _group_rank(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per element: its rank among the elements with the same key (in array order) and how many share its key."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    new = np.ones(len(k), dtype=bool)
    new[1:] = k[1:] != k[:-1]
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(k)))
    group = np.cumsum(new) - 1
    rank = np.empty(len(k), dtype=np.int64)
    rank[order] = np.arange(len(k)) - starts[group]
    size = np.empty(len(k), dtype=np.int64)
    size[order] = counts[group]
    return rank, size


def place(s_lens: np.ndarray, choice: np.ndarray, t_ids: np.ndarray, t_lens: np.ndarray) -> np.ndarray:
    """Target positions of source words given the target word each one chose, for a batch of documents.

    ``choice`` (flat over the batch's source words) is the id of the chosen target word (-1: unaligned); ``t_ids``
    (flat over the target words) the target words' ids. When the r-th of the c source words choosing word w in a
    document meets exactly c occurrences of w, it takes the r-th (order-preserving one-to-one); otherwise it takes
    the occurrence nearest in relative position ``(i+½)/n`` vs ``(j+½)/m`` (the earlier on ties). Returns the
    position within its target document per source word (-1 where unaligned). Vectorised over the whole batch."""
    links = np.full(len(choice), -1, dtype=np.int64)
    rows = np.flatnonzero(choice >= 0)
    if len(rows) == 0:
        return links
    ds = np.repeat(np.arange(len(s_lens)), s_lens)
    dt = np.repeat(np.arange(len(t_lens)), t_lens)
    i = np.arange(len(choice)) - _offsets(s_lens)[:-1][ds]
    j = np.arange(len(t_ids)) - _offsets(t_lens)[:-1][dt]
    width = int(max(t_ids.max(initial=-1), choice.max())) + 2
    t_key = dt * width + t_ids + 1
    order = np.lexsort((j, t_key))  # target positions grouped by (document, word), in position order
    keys, g_start, g_count = np.unique(t_key[order], return_index=True, return_counts=True)
    r_key = ds[rows] * width + choice[rows] + 1
    g = np.searchsorted(keys, r_key)
    if not np.array_equal(keys[g.clip(max=len(keys) - 1)], r_key):
        raise ValueError("a source word chose a target word that its target document does not hold")
    rank, size = _group_rank(r_key)
    by_rank = order[g_start[g] + np.minimum(rank, g_count[g] - 1)]
    # nearest by relative position: a binary search of group + x among group + y (y, x in (0, 1))
    y = np.repeat(np.arange(len(keys)), g_count) + (j[order] + 0.5) / t_lens[dt[order]]
    x = g + (i[rows] + 0.5) / s_lens[ds[rows]]
    first, last = g_start[g], g_start[g] + g_count[g] - 1
    k = np.searchsorted(y, x)
    lo, hi = np.clip(k - 1, first, last), np.clip(k, first, last)
    nearest = order[np.where(np.abs(x - y[lo]) <= np.abs(y[hi] - x), lo, hi)]
    links[rows] = j[np.where(size == g_count[g], by_rank, nearest)]
    return links


def _split(flat: np.ndarray, lens: np.ndarray) -> list[np.ndarray]:
    return np.split(flat, _offsets(lens)[1:-1])


# -- aligners: source words -> target word position (or -1) ---------------------------------------------------
@dataclass
class _Grid:
    """Every (row word, column word) pair of a batch of documents, row-major per document: one group of entries per
    row word (``starts``/``lens``); ``row``/``col`` index the flattened words of each side."""

    row: np.ndarray
    col: np.ndarray
    starts: np.ndarray
    lens: np.ndarray

    @classmethod
    def build(cls, row_lens: np.ndarray, col_lens: np.ndarray) -> "_Grid":
        entries = row_lens * col_lens
        doc = np.repeat(np.arange(len(row_lens)), entries)
        k = np.arange(int(entries.sum()), dtype=np.int64) - np.repeat(_offsets(entries)[:-1], entries)
        i, j = np.divmod(k, col_lens[doc]) if len(k) else (k, k)
        lens = np.repeat(col_lens, row_lens)
        return cls(_offsets(row_lens)[:-1][doc] + i, _offsets(col_lens)[:-1][doc] + j, _offsets(lens)[:-1], lens)

    def first_max(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per group: the entry holding the first maximum of ``values``, and that maximum."""
        top = np.maximum.reduceat(values, self.starts)
        hit = np.flatnonzero(values == np.repeat(top, self.lens))
        group = np.repeat(np.arange(len(self.starts)), self.lens)[hit]
        first = np.ones(len(hit), dtype=bool)
        first[1:] = group[1:] != group[:-1]
        return hit[first], top

    def sum(self, values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, self.starts)


class _Table:
    """An IBM-1 table t(generated | conditioning) with lookups by id arrays (0 for pairs never seen together or
    unknown ids, -1)."""

    def __init__(self, generated: Sequence[Sequence[int]], conditioning: Sequence[Sequence[int]], n_generated: int,
                 n_conditioning: int, iterations: int):
        from xlt.vocab.align import ibm1_table

        table = ibm1_table(conditioning, generated, max(n_conditioning, 1), max(n_generated, 1), iterations)
        self.null = table.n_source
        self.keys = table.target.astype(np.int64) * (self.null + 1) + table.source.astype(np.int64)
        self.prob = table.prob

    def __call__(self, generated: np.ndarray, conditioning: np.ndarray | int) -> np.ndarray:
        keys = generated * (self.null + 1) + conditioning
        if len(self.keys) == 0 or keys.size == 0:
            return np.zeros(keys.shape)
        order = np.argsort(keys)  # sorted queries search the large table several times faster
        pos = np.empty(len(keys), dtype=np.int64)
        pos[order] = np.searchsorted(self.keys, keys[order])
        pos = pos.clip(max=len(self.keys) - 1)
        valid = (generated >= 0) & (np.asarray(conditioning) >= 0) & (self.keys[pos] == keys)
        return np.where(valid, self.prob[pos], 0.0)


def _ids(docs: Iterable[Words], vocab: dict[str, int], grow: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Flat word ids (-1 = not in ``vocab``; added instead with ``grow``) and per-document lengths."""
    get = (lambda w: vocab.setdefault(w, len(vocab))) if grow else (lambda w: vocab.get(w, -1))
    lens: list[int] = []
    flat: list[int] = []
    for d in docs:
        lens.append(len(d))
        flat.extend(map(get, d.keys))
    return np.array(flat, dtype=np.int64), np.array(lens, dtype=np.int64)


class IBM1Aligner:
    """IBM Model 1 on word ids (see the module docstring): ``t(source | target)`` picks each source word's target
    word; with ``symmetric`` the reverse model ``t(target | source)`` must pick the same pair (intersection).
    :meth:`align_batch` aligns many documents at once, with segmented NumPy reductions and no per-word loop."""

    def __init__(self, pairs: Sequence[tuple[Words, Words]], iterations: int = 10, min_posterior: float = 0.5,
                 symmetric: bool = True):
        self.src_vocab: dict[str, int] = {}
        self.tgt_vocab: dict[str, int] = {}
        src = [[self.src_vocab.setdefault(w, len(self.src_vocab)) for w in s.keys] for s, _ in pairs]
        tgt = [[self.tgt_vocab.setdefault(w, len(self.tgt_vocab)) for w in t.keys] for _, t in pairs]
        ns, nt = len(self.src_vocab), len(self.tgt_vocab)
        self.forward = _Table(src, tgt, ns, nt, iterations)  # t(source word | target word)
        self.reverse = _Table(tgt, src, nt, ns, iterations) if symmetric else None
        self.min_posterior = min_posterior

    def align_batch(self, pairs: Sequence[tuple[Words, Words]]) -> list[np.ndarray]:
        """Per pair, the target word position of each source word (-1 = unaligned)."""
        s, s_lens = _ids((a for a, _ in pairs), self.src_vocab)
        t, t_lens = _ids((b for _, b in pairs), self.tgt_vocab)
        choice = np.full(len(s), -1, dtype=np.int64)
        sel = np.flatnonzero(np.repeat(t_lens > 0, s_lens))  # source words with a target document to align to
        if len(sel):
            g = _Grid.build(np.where(t_lens > 0, s_lens, 0), np.where(s_lens > 0, t_lens, 0))
            fwd = self.forward
            p = fwd(s[g.row], t[g.col])
            p_null = fwd(s[sel], fwd.null)
            best, top = g.first_max(p)
            best_type = t[g.col[best]]
            same = t[g.col] == np.repeat(best_type, g.lens)
            total = g.sum(p) + p_null
            posterior = np.divide(g.sum(np.where(same, p, 0.0)), total, out=np.zeros(len(total)), where=total > 0)
            ok = (top > p_null) & (posterior >= self.min_posterior) & (best_type >= 0)
            if self.reverse is not None:
                ok &= self._reverse_choice(s, s_lens, t, t_lens)[g.col[best]] == s[sel]
            choice[sel] = np.where(ok, best_type, -1)
        return _split(place(s_lens, choice, t, t_lens), s_lens)

    def _reverse_choice(self, s, s_lens, t, t_lens) -> np.ndarray:
        """Per target word: the source word id the reverse model's Viterbi picks (-1: NULL or no source)."""
        rev = self.reverse
        out = np.full(len(t), -1, dtype=np.int64)
        sel = np.flatnonzero(np.repeat(s_lens > 0, t_lens))
        if len(sel):
            h = _Grid.build(np.where(s_lens > 0, t_lens, 0), np.where(t_lens > 0, s_lens, 0))
            back, top = h.first_max(rev(t[h.row], s[h.col]))
            out[sel] = np.where(top > rev(t[sel], rev.null), s[h.col[back]], -1)
        return out

    def align(self, src: Words, tgt: Words) -> np.ndarray:
        return self.align_batch([(src, tgt)])[0]


class DictionaryAligner:
    """A source word aligns to the first of its dictionary translations found among the target document's words."""

    def __init__(self, pairs: Iterable[tuple[str, str]]):
        from xlt.vocab.dictionary import _word_pattern

        pattern = _word_pattern()
        self.lookup: dict[str, list[str]] = {}
        for s, t in pairs:
            s, t = _normalise(s.strip()), _normalise(t.strip())
            if pattern.fullmatch(s) and pattern.fullmatch(t) and t not in self.lookup.get(s, ()):
                self.lookup.setdefault(s, []).append(t)

    def __len__(self) -> int:
        return sum(map(len, self.lookup.values()))

    def align_batch(self, pairs: Sequence[tuple[Words, Words]]) -> list[np.ndarray]:
        vocab: dict[str, int] = {}  # this batch's target words
        t, t_lens = _ids((b for _, b in pairs), vocab, grow=True)
        choice: list[int] = []
        for src, tgt in pairs:
            present = set(tgt.keys)
            choice.extend(next((vocab[x] for x in self.lookup.get(w, ()) if x in present), -1) for w in src.keys)
        s_lens = np.array([len(a) for a, _ in pairs], dtype=np.int64)
        return _split(place(s_lens, np.array(choice, dtype=np.int64), t, t_lens), s_lens)

    def align(self, src: Words, tgt: Words) -> np.ndarray:
        return self.align_batch([(src, tgt)])[0]


# -- fragments and switching ---------------------------------------------------------------------------------
def _blank_gaps(text: str, offsets: np.ndarray) -> np.ndarray:
    """Whether the text between word i and word i+1 is whitespace only (length n-1)."""
    return np.array([text[a:b].isspace() or a == b for a, b in zip(offsets[:-1, 1], offsets[1:, 0])], dtype=bool)


def fragments(links: np.ndarray, unit: str, src: Words, src_text: str, tgt: Words,
              tgt_text: str) -> list[tuple[int, int, int, int]]:
    """Aligned fragments as ``(first source word, last source word, first target word, last target word)``."""
    aligned = np.flatnonzero(links >= 0)
    if unit == "word":
        return [(int(i), int(i), int(links[i]), int(links[i])) for i in aligned]
    src_gap, tgt_gap = _blank_gaps(src_text, src.offsets), _blank_gaps(tgt_text, tgt.offsets)
    out: list[tuple[int, int, int, int]] = []
    run: list[int] = []

    def close() -> None:
        if run:
            js = links[run]
            out.append((run[0], run[-1], int(js.min()), int(js.max())))

    for i in aligned.tolist():
        if run and i == run[-1] + 1 and src_gap[run[-1]]:
            js = np.unique(np.append(links[run], links[i]))
            lo, hi = int(js[0]), int(js[-1])
            if len(js) == hi - lo + 1 and tgt_gap[lo:hi].all():  # contiguous, covered, no punctuation inside
                run.append(i)
                continue
        close()
        run = [i]
    close()
    return out


def switch(source: str, frags: Sequence[tuple[int, int, int, int]], replace: np.ndarray, src: Words,
           target: str, tgt: Words) -> tuple[str, list[dict]]:
    """The source text with fragments ``frags[k]`` replaced where ``replace[k]``; the switched spans' offsets."""
    pieces: list[str] = []
    switched: list[dict] = []
    cursor = length = 0
    for (a, b, lo, hi), do in zip(frags, replace):
        if not do:
            continue
        s0, s1 = int(src.offsets[a, 0]), int(src.offsets[b, 1])
        translation = target[int(tgt.offsets[lo, 0]):int(tgt.offsets[hi, 1])]
        pieces.append(source[cursor:s0])
        length += s0 - cursor
        pieces.append(translation)
        switched.append({"start": length, "end": length + len(translation), "src_start": s0, "src_end": s1,
                         "translation": translation})
        length += len(translation)
        cursor = s1
    pieces.append(source[cursor:])
    return "".join(pieces), switched


# -- the builder ---------------------------------------------------------------------------------------------
def _blocks(items: Iterator, size: int) -> Iterator[list]:
    """Lists of up to ``size`` consecutive items of ``items`` (consumed lazily)."""
    while block := list(islice(items, size)):
        yield block


def _load_dictionary(spec: str, corpus, src: str, tgt: str, split: str | None):
    from xlt.vocab import dictionary as D

    if spec == "induced":
        return D.induce_from_parallel(corpus, src, tgt, split)
    if spec == "freedict":
        return D.freedict_dictionary(src, tgt)
    if spec.startswith("freedict:"):
        return D.read_freedict(spec.split(":", 1)[1])
    if not Path(spec).expanduser().is_file():
        raise XltError(f"dictionary {spec!r} is not a file, 'induced' or 'freedict[:SRC-TGT]'",
                       "give a TSV file of source<TAB>target lines, --dictionary induced, or --dictionary "
                       f"freedict:{src}-{tgt} (apt-get install dict-freedict-{src}-{tgt})")
    return D.Dictionary.load_tsv(Path(spec).expanduser(), source_lang=src, target_lang=tgt)


@register_builder("codeswitch")
class CodeSwitch:
    description = "code-switched text: aligned words/spans of the source replaced by their translation (xCoT)"
    options = CodeSwitchOptions
    seeded = True

    def example(self, workdir: Path) -> dict:
        from xlt.data.toy import toy_parallel

        path = Path(workdir) / "codeswitch_toy.jsonl"
        toy_parallel(path, langs=("eng", "swh"), n=80)
        return {"corpus": f"jsonl:{path}", "src": "eng", "tgt": "swh", "ratio": 0.5, "unit": "word"}

    def records(self, ctx, o: CodeSwitchOptions) -> Iterator[dict]:
        from xlt.corpora import open_corpus

        corpus = open_corpus(o.corpus)
        src, tgt = corpus.language(o.src), corpus.language(o.tgt)
        if src == tgt:
            raise XltError(f"source and target language are both {src.code}", "give two different languages")
        if o.align == "dictionary" and not o.dictionary:
            raise XltError("align=dictionary needs a dictionary",
                           f"pass --dictionary freedict:{src.code}-{tgt.code}, induced, or a TSV file")
        if o.align == "ibm1" and o.dictionary:
            raise XltError(f"a dictionary ({o.dictionary}) was given but align=ibm1 does not use one",
                           "pass --align dictionary to align with it, or drop --dictionary")
        split = None if o.split == "all" else o.split
        pairs = corpus.parallel(src, tgt, split)  # one clear error when the languages share no document key
        cached: list[tuple[Words, Words]] | None = None
        if o.align == "ibm1":
            cached = [(words(a), words(b)) for _, a, b in pairs]
            aligner = IBM1Aligner(cached, o.iterations, o.min_posterior, o.symmetric)
            ctx.extra["alignment"] = {"method": "ibm1", "iterations": o.iterations, "min_posterior": o.min_posterior,
                                      "symmetric": o.symmetric, "trained_pairs": len(pairs)}
        else:
            d = _load_dictionary(o.dictionary, corpus, src.code, tgt.code, split)
            if d.source_lang and d.source_lang != src.code:
                raise XltError(f"dictionary {d.source} translates from {d.source_lang}, not {src.code}",
                               f"give a {src.code}-{tgt.code} dictionary")
            aligner = DictionaryAligner(d.pairs)
            ctx.extra["alignment"] = {"method": "dictionary", "dictionary": d.source, "single_word_pairs": len(aligner)}
            if o.dictionary != "induced" and not o.dictionary.startswith("freedict"):
                ctx.add_input("dictionary", Path(o.dictionary).expanduser())
        if o.max_docs is not None:
            pairs = pairs[:o.max_docs]
        items = zip(pairs, cached) if cached is not None else ((p, None) for p in pairs)
        first: list = []
        for block in _blocks(items, 256):  # refuse before writing when nothing aligns (usually decided at once)
            first.extend(block)
            if any((x >= 0).any() for x in self._align(aligner, block)):
                break
        else:
            raise XltError(f"no word of the {len(pairs)} {src.code}-{tgt.code} document pairs could be aligned",
                           "check the languages and the dictionary (does it translate these words?), "
                           "or use --align ibm1")
        stats = {"documents": 0, "source_words": 0, "aligned_words": 0, "fragments": 0, "switched": 0}
        for chunk in ctx.chunks(chain(first, items)):
            for ((key, a, b), _), ((sw, tw), links) in zip(chunk, self._align(aligner, chunk, words_too=True)):
                frags = fragments(links, o.unit, sw, a, tw, b)
                replace = ctx.rng(key).random(len(frags)) < o.ratio
                text, switched = switch(a, frags, replace, sw, b, tw)
                stats["documents"] += 1
                stats["source_words"] += len(sw)
                stats["aligned_words"] += int((links >= 0).sum())
                stats["fragments"] += len(frags)
                stats["switched"] += len(switched)
                yield {"key": key, "langs": [src.code, tgt.code], "origin": "synthetic", "text": text, "source": a,
                       "switched": switched, "fragments": len(frags)}
        ctx.extra["counts"] = stats

    @staticmethod
    def _align(aligner, block: list, words_too: bool = False):
        """Links of a block of ``((key, src, tgt), words or None)`` items (words computed where not cached)."""
        ws = [w if w is not None else (words(a), words(b)) for (_, a, b), w in block]
        links = aligner.align_batch(ws)
        return list(zip(ws, links)) if words_too else links
