"""``xlt data project``: annotation projection by candidate scoring (T-Projection, García-Ferrero et al., Findings of
EMNLP 2023, arXiv 2212.10548; seed-papers §12).

T-Projection projects each labelled source span onto the translated sentence in two steps: *candidate generation*
(an mT5 model fine-tuned on the source task generates 15 candidate target spans by beam search) and *candidate
selection* (the candidates are ranked by the NMT translation probability between the source span and each
candidate, NMTScore's symmetric, length-normalised ``score_direct``). Here:

**Candidates.** Every word n-gram of the target sentence up to ``max_ngram`` tokens (tokens: words and single
punctuation marks, :func:`xlt.data.spans.words_and_punctuation`; an n-gram may not begin or end with punctuation).
We take n-grams only: the paper's generator candidates need a fine-tuned mT5, so a generator's candidates can be
given instead with ``candidates_file`` (JSONL ``{"id", "candidates": [text, ...]}``); each candidate text is matched
at every place of the target sentence where it starts and ends on token boundaries and added to the n-grams (texts
found nowhere are counted by the ``candidate_found`` filter).

**Scorers** (``score_fn(span_texts, candidate_texts) -> (spans × candidates)`` array, higher is better):

- ``ibm1``: IBM Model 1 (:func:`xlt.vocab.align.ibm1_table`, EM with a NULL word) trained in both directions on the
  words (:func:`xlt.vocab.dictionary.tokenize_words`) of the parallel corpus. For span words ``s_1..s_l`` and
  candidate words ``c_1..c_m`` the score is the mean of the two length-normalised log-probabilities of the Viterbi
  alignment, ``1/m Σ_j log(max_i t(c_j|s_i) / (l+1))`` and ``1/l Σ_i log(max_j t'(s_i|c_j) / (m+1))`` (the max
  includes NULL; probabilities floored at 1e-12), for all spans × candidates at once. The Viterbi form, not IBM-1's
  sum over alignments: the sum rewards a candidate that repeats a translated word (for a span whose translation is
  ``X``, ``P(span | "X X") ∝ (2t + t0)/3`` beats ``P(span | "X") ∝ (t + t0)/2``), the max does not.
- ``lm``: NMTScore-style translation probability under a causal LM (``model``). Forward: the prompt
  ``"English: {span}\\nSwahili:"`` (the languages' names) continued by ``" {candidate}\\n"`` (the newline marks the
  end of the translation, so a prefix of the right translation is not rewarded); reverse: the candidate translated
  back into the span. The score is the mean over both directions of the average log-probability per continuation
  token (NMTScore's length normalisation; its optional division by the self-translation probability is not
  applied). All rows of a sentence run in right-padded, length-sorted batches of ``batch_size``.
- With several scorers the records use their mean (both are average log-probabilities); each scorer's own
  projection is still computed for ``gold`` evaluation. Scores are rounded to 6 decimals before selection, so
  floating-point noise of batch shapes cannot change a choice.

**Selection.** The scores of all (source span, candidate) pairs of a sentence are sorted, best first (ties: the
candidate whose relative token position in the target sentence is nearest the span's relative position in the
source sentence, then span order, then candidate order), and assigned greedily: a pair is taken when its span has
no candidate yet and its candidate overlaps no candidate already taken. A span whose best candidate overlaps one
already taken thus gets its best remaining non-overlapping candidate; a span left without one is listed under
``unprojected``.

**Records**: ``key``, ``langs`` [src, tgt], ``origin`` synthetic, ``text`` (the target sentence), ``spans``
(``start``, ``end``, ``label``, ``text``, ``score``, ``scores`` per scorer, and the source span's ``source_start``,
``source_end``, ``source_text``), ``tokens`` and BIO ``tags`` of the target sentence, ``unprojected`` source spans.
With ``gold`` (JSONL ``{"id", "spans"}`` of target spans), :func:`xlt.data.spans.span_f1` of every scorer (and of
their combination, ``combined``) over the projected sentences that have a gold record goes into the manifest's
``stats.span_f1``.

Python: :func:`project_spans` (one sentence, any ``score_fn``, e.g. an oracle), :func:`project` (records, a
mapping of scorers), :class:`IBM1Scorer`, :class:`LMScorer`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from xlt.data.registry import register_builder
from xlt.data.spans import (Span, Tokenizer, bio_from_spans, check_spans, covered_tokens, span_f1,
                            spans_from_dicts, token_offsets, words_and_punctuation)
from xlt.errors import XltError
from xlt.options import REQUIRED, option, positive

__all__ = ["ScoreFn", "Candidates", "candidates", "select_candidates", "project_sentence", "project_spans",
           "project", "IBM1Scorer", "LMScorer", "read_annotated", "read_gold", "read_candidates",
           "toy_projection_data", "SCORERS"]

#: ``score_fn(span_texts, candidate_texts) -> array (len(span_texts), len(candidate_texts))``, higher is better
ScoreFn = Callable[[list[str], list[str]], np.ndarray]

#: the scorers users can name (tests pass other callables, e.g. an oracle, through :func:`project`)
SCORERS = ("lm", "ibm1")
COMBINED = "combined"
#: probability floor of the IBM-1 scorer (log 1e-12 = -27.6 for a word no source word translates)
IBM1_FLOOR = 1e-12
SCORE_DECIMALS = 6


# -- candidates and selection (pure) --------------------------------------------------------------------------------
@dataclass
class Candidates:
    """The candidate target spans of one sentence: character and token ranges (half-open) and their texts."""

    char_start: np.ndarray
    char_end: np.ndarray
    tok_start: np.ndarray
    tok_end: np.ndarray
    texts: list[str]
    n_tokens: int

    def __len__(self) -> int:
        return len(self.texts)


def _is_word(text: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Whether each token holds a letter, mark or digit (not a lone punctuation mark or symbol)."""
    import unicodedata

    return np.fromiter((any(unicodedata.category(ch)[0] in "LMN" for ch in text[a:b])
                        for a, b in zip(starts.tolist(), ends.tolist())), dtype=bool, count=len(starts))


def candidates(text: str, max_ngram: int, extra: Sequence[str] = (),
               tokenize: Tokenizer = words_and_punctuation) -> Candidates:
    """Every token n-gram of ``text`` (n ≤ ``max_ngram``) that begins and ends on a word token, plus every
    token-aligned occurrence of each ``extra`` text; duplicates (same token range) once, ordered by (start, end)."""
    starts, ends = token_offsets(text, tokenize)
    n = len(starts)
    word = _is_word(text, starts, ends)
    i = np.arange(n)
    a = np.repeat(i, max_ngram)
    b = a + np.tile(np.arange(1, max_ngram + 1), n)  # one past the last token
    ok = b <= n
    a, b = a[ok], b[ok]
    ok = word[a] & word[b - 1]
    a, b = a[ok], b[ok]
    if extra:
        ea, eb = _extra_ranges(text, starts, ends, extra)
        a, b = np.concatenate([a, ea]), np.concatenate([b, eb])
    if len(a):
        key = np.unique(a * (n + 1) + b)  # sorted by (start, end), duplicates dropped
        a, b = key // (n + 1), key % (n + 1)
    cs, ce = starts[a], ends[b - 1]
    return Candidates(cs, ce, a, b, [text[x:y] for x, y in zip(cs.tolist(), ce.tolist())], n)


def _extra_ranges(text: str, starts: np.ndarray, ends: np.ndarray,
                  extra: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ranges of the occurrences of ``extra`` texts that start and end on token boundaries."""
    import re

    tok_at_start = {s: k for k, s in enumerate(starts.tolist())}
    tok_at_end = {e: k for k, e in enumerate(ends.tolist())}
    a, b = [], []
    for cand in extra:
        cand = cand.strip()
        if not cand:
            continue
        for m in re.finditer(f"(?={re.escape(cand)})", text):
            s, e = m.start(), m.start() + len(cand)
            if s in tok_at_start and e in tok_at_end:
                a.append(tok_at_start[s])
                b.append(tok_at_end[e] + 1)
    return np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)


def _centres(tok_start: np.ndarray, tok_end: np.ndarray, n_tokens: int) -> np.ndarray:
    return (tok_start + tok_end) / (2.0 * max(n_tokens, 1))


def select_candidates(scores: np.ndarray, cand: Candidates, distance: np.ndarray) -> np.ndarray:
    """Greedy non-overlapping assignment (module docstring): the chosen candidate index per span, -1 for none.

    ``scores`` and ``distance`` are (spans × candidates); only finite scores are eligible."""
    n_spans = scores.shape[0]
    chosen = np.full(n_spans, -1, dtype=np.int64)
    if n_spans == 0 or len(cand) == 0:
        return chosen
    si, ci = np.nonzero(np.isfinite(scores))
    order = np.lexsort((ci, si, distance[si, ci], -scores[si, ci]))
    taken = np.zeros(cand.n_tokens, dtype=bool)
    left = n_spans
    for s, c in zip(si[order].tolist(), ci[order].tolist()):
        if chosen[s] >= 0:
            continue
        a, b = int(cand.tok_start[c]), int(cand.tok_end[c])
        if taken[a:b].any():
            continue
        taken[a:b] = True
        chosen[s] = c
        left -= 1
        if left == 0:
            break
    return chosen


def _score_matrix(name: str, fn: ScoreFn, spans: list[str], cands: list[str]) -> np.ndarray:
    out = np.asarray(fn(spans, cands), dtype=np.float64)
    if out.shape != (len(spans), len(cands)):
        raise XltError(f"scorer {name} returned an array of shape {out.shape} for {len(spans)} spans × "
                       f"{len(cands)} candidates", "a score_fn returns one row per span, one column per candidate")
    return np.round(out, SCORE_DECIMALS)


def project_sentence(src_text: str, src_spans: Sequence[Span], tgt_text: str, scorers: Mapping[str, ScoreFn],
                     max_ngram: int = 4, extra: Sequence[str] = (), tokenize: Tokenizer = words_and_punctuation,
                     where: str = "sentence") -> tuple[dict[str, list[Span | None]], dict[str, np.ndarray], Candidates]:
    """Project ``src_spans`` onto ``tgt_text`` with each scorer (and, with several, their mean under
    :data:`COMBINED`). Returns ``(projections, scores, candidates)``: per name a list aligned with ``src_spans``
    (the projected :class:`Span` with its score, or None) and the (spans × candidates) score matrix."""
    if not scorers:
        raise XltError("no scorer given", f"name one or more of: {', '.join(SCORERS)}")
    if max_ngram < 1:
        raise XltError(f"max_ngram {max_ngram} is not positive", "give max_ngram 1 or more")
    check_spans(src_text, src_spans, where)
    cand = candidates(tgt_text, max_ngram, extra, tokenize)
    texts = [src_text[s.start:s.end] for s in src_spans]
    scores = {name: _score_matrix(name, fn, texts, cand.texts) if len(cand) and texts
              else np.zeros((len(texts), len(cand))) for name, fn in scorers.items()}
    if len(scores) > 1:
        scores[COMBINED] = np.round(np.mean(np.stack(list(scores.values())), axis=0), SCORE_DECIMALS)
    s_starts, s_ends = token_offsets(src_text, tokenize)
    sa, sb = covered_tokens(s_starts, s_ends, src_spans)
    distance = np.abs(_centres(sa, sb, len(s_starts))[:, None] - _centres(cand.tok_start, cand.tok_end,
                                                                           cand.n_tokens)[None, :])
    out: dict[str, list[Span | None]] = {}
    for name, sc in scores.items():
        chosen = select_candidates(sc, cand, distance)
        out[name] = [Span(int(cand.char_start[c]), int(cand.char_end[c]), sp.label, float(sc[k, c])) if c >= 0
                     else None for k, (sp, c) in enumerate(zip(src_spans, chosen.tolist()))]
    return out, scores, cand


def project_spans(src_text: str, src_spans: Sequence[Span], tgt_text: str, score_fn: ScoreFn,
                  max_ngram: int = 4, extra: Sequence[str] = ()) -> list[Span]:
    """The projections of ``src_spans`` onto ``tgt_text`` under ``score_fn`` (each with its ``score``), sorted by
    position; source spans that found no non-overlapping candidate are left out."""
    proj, _, _ = project_sentence(src_text, src_spans, tgt_text, {"score": score_fn}, max_ngram, extra)
    return sorted((s for s in proj["score"] if s is not None), key=lambda s: (s.start, s.end))


# -- scorers ----------------------------------------------------------------------------------------------------------
def _incidence(word_lists: list[list[str]], index: dict[str, int]) -> np.ndarray:
    """Counts of each word (columns, by ``index``) in each list (rows)."""
    rows = np.repeat(np.arange(len(word_lists)), [len(w) for w in word_lists])
    cols = np.fromiter((index[w] for ws in word_lists for w in ws), dtype=np.int64, count=len(rows))
    out = np.zeros((len(word_lists), len(index)))
    np.add.at(out, (rows, cols), 1.0)
    return out


def _lookup(mat, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Dense ``mat[rows][:, cols]`` where -1 (an unknown word) gives zeros."""
    out = np.zeros((len(rows), len(cols)))
    r, c = rows >= 0, cols >= 0
    if r.any() and c.any():
        out[np.ix_(r, c)] = mat[rows[r]][:, cols[c]].toarray()
    return out


class IBM1Scorer:
    """The ``ibm1`` scorer (module docstring): IBM Model 1 tables in both directions over corpus words."""

    def __init__(self, src_vocab: dict[str, int], tgt_vocab: dict[str, int], forward, reverse):
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.forward = forward.tocsr()  # t(target | source): n_tgt × (n_src + 1), last column NULL
        self.reverse = reverse.tocsr()  # t(source | target): n_src × (n_tgt + 1)

    @classmethod
    def train(cls, pairs: Iterable[tuple[str, str]], iterations: int = 10) -> "IBM1Scorer":
        """Train on ``(source text, target text)`` pairs."""
        from xlt.vocab.align import ibm1_table
        from xlt.vocab.dictionary import tokenize_words

        src_vocab: dict[str, int] = {}
        tgt_vocab: dict[str, int] = {}
        src_seqs, tgt_seqs = [], []
        for s, t in pairs:
            sw, tw = tokenize_words(s), tokenize_words(t)
            if sw and tw:
                src_seqs.append([src_vocab.setdefault(w, len(src_vocab)) for w in sw])
                tgt_seqs.append([tgt_vocab.setdefault(w, len(tgt_vocab)) for w in tw])
        if not src_seqs:
            raise XltError("no sentence pair with words on both sides to train IBM Model 1 on",
                           "give a parallel corpus holding both languages (shared keys), or use --scorer lm")
        n_s, n_t = len(src_vocab), len(tgt_vocab)
        fwd = ibm1_table(src_seqs, tgt_seqs, n_s, n_t, iterations).as_matrix(include_null=True)
        rev = ibm1_table(tgt_seqs, src_seqs, n_t, n_s, iterations).as_matrix(include_null=True)
        return cls(src_vocab, tgt_vocab, fwd, rev)

    def __call__(self, spans: list[str], cands: list[str]) -> np.ndarray:
        from xlt.vocab.dictionary import tokenize_words

        sw = [tokenize_words(s) for s in spans]
        cw = [tokenize_words(c) for c in cands]
        s_index = {w: k for k, w in enumerate(dict.fromkeys(w for ws in sw for w in ws))}
        c_index = {w: k for k, w in enumerate(dict.fromkeys(w for ws in cw for w in ws))}
        s_ids = np.fromiter((self.src_vocab.get(w, -1) for w in s_index), dtype=np.int64, count=len(s_index))
        c_ids = np.fromiter((self.tgt_vocab.get(w, -1) for w in c_index), dtype=np.int64, count=len(c_index))
        n_s, n_t = len(self.src_vocab), len(self.tgt_vocab)
        pf = _lookup(self.forward, c_ids, np.append(s_ids, n_s))  # t(c | s), last column NULL
        pr = _lookup(self.reverse, s_ids, np.append(c_ids, n_t))  # t(s | c), last column NULL
        cnt_s, cnt_c = _incidence(sw, s_index), _incidence(cw, c_index)  # word counts per span / candidate
        A, B = cnt_s > 0, cnt_c > 0
        ls, lc = cnt_s.sum(1), cnt_c.sum(1)
        # Viterbi links: each candidate word to its best span word or NULL (spans × c-words), and back
        # (candidates × s-words)
        best_f = np.maximum(np.where(A[:, None, :], pf[None, :, :-1], 0).max(2, initial=0), pf[None, :, -1])
        best_r = np.maximum(np.where(B[:, None, :], pr[None, :, :-1], 0).max(2, initial=0), pr[None, :, -1])
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.log(np.maximum(best_f / (ls[:, None] + 1), IBM1_FLOOR))
            h = np.log(np.maximum(best_r / (lc[:, None] + 1), IBM1_FLOOR))
            fwd = (g @ cnt_c.T) / lc[None, :]
            rev = (cnt_s @ h.T) / ls[:, None]
        out = (fwd + rev) / 2
        out[(ls[:, None] == 0) | (lc[None, :] == 0)] = -np.inf
        return out


class LMScorer:
    """The ``lm`` scorer (module docstring): average continuation-token log-probability of the translation, both
    directions, under a causal LM."""

    def __init__(self, model, tokenizer, src_name: str = "English", tgt_name: str = "Swahili",
                 batch_size: int = 16):
        if batch_size < 1:
            raise XltError(f"batch size {batch_size} is not positive", "give --batch-size 1 or more")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.src_name, self.tgt_name, self.batch_size = src_name, tgt_name, batch_size

    @staticmethod
    def prompt(text: str, from_name: str, to_name: str) -> str:
        return f"{from_name}: {text}\n{to_name}:"

    @staticmethod
    def continuation(text: str) -> str:
        return f" {text}\n"

    def avg_logprobs(self, prompts: list[str], conts: list[str]) -> np.ndarray:
        """Mean log p(continuation tokens | prompt) per (prompt, continuation) row; identical rows scored once."""
        import torch

        from xlt.eval.logprobs import target_logprobs

        rows = list(dict.fromkeys(zip(prompts, conts)))
        where = {r: k for k, r in enumerate(rows)}
        uniq_p = list(dict.fromkeys(prompts))
        uniq_c = list(dict.fromkeys(conts))
        tok = self.tokenizer
        p_ids = dict(zip(uniq_p, tok(uniq_p)["input_ids"])) if uniq_p else {}
        c_ids = dict(zip(uniq_c, tok(uniq_c, add_special_tokens=False)["input_ids"])) if uniq_c else {}
        seqs = [(list(p_ids[p]), list(c_ids[c])) for p, c in rows]
        order = sorted(range(len(seqs)), key=lambda k: (-(len(seqs[k][0]) + len(seqs[k][1])), k))
        device = next(self.model.parameters()).device
        result = np.zeros(len(rows))
        for i in range(0, len(order), self.batch_size):
            batch = order[i:i + self.batch_size]
            width = max(len(seqs[k][0]) + len(seqs[k][1]) for k in batch) - 1
            inp = torch.zeros((len(batch), width), dtype=torch.long)
            att = torch.zeros((len(batch), width), dtype=torch.long)
            tgt = torch.full((len(batch), width), -100, dtype=torch.long)
            for r, k in enumerate(batch):
                p, c = seqs[k]
                full = p + c
                inp[r, :len(full) - 1] = torch.tensor(full[:-1])
                att[r, :len(full) - 1] = 1
                tgt[r, len(p) - 1:len(full) - 1] = torch.tensor(c)
            lp = target_logprobs(self.model, inp.to(device), att.to(device), tgt.to(device)).double().cpu()
            sums = lp.sum(1).numpy()
            counts = (tgt != -100).sum(1).numpy()
            result[batch] = sums / counts
        return result[[where[r] for r in zip(prompts, conts)]] if rows else np.zeros(0)

    def __call__(self, spans: list[str], cands: list[str]) -> np.ndarray:
        s = [x for x in spans for _ in cands]  # row-major: span k, candidate j at k * len(cands) + j
        c = [y for _ in spans for y in cands]
        fwd = self.avg_logprobs([self.prompt(x, self.src_name, self.tgt_name) for x in s],
                                [self.continuation(y) for y in c])
        rev = self.avg_logprobs([self.prompt(y, self.tgt_name, self.src_name) for y in c],
                                [self.continuation(x) for x in s])
        return ((fwd + rev) / 2).reshape(len(spans), len(cands))


# -- input files ------------------------------------------------------------------------------------------------------
def _jsonl(path: str | Path, what: str) -> Iterator[tuple[int, dict]]:
    from xlt.util import iter_jsonl

    for n, rec in iter_jsonl(path, what):
        if "id" not in rec:
            raise XltError(f"{Path(path).name} line {n} has no 'id'", f"each line of the {what} file is an object "
                           "with the sentence's corpus key under 'id'")
        yield n, rec


def read_annotated(path: str | Path) -> Iterator[dict]:
    """The annotated source sentences, one by one: ``{"key", "text", "spans": [Span]}``, each checked (an offset
    outside its sentence raises :class:`XltError` naming the record)."""
    name = Path(path).name
    for n, rec in _jsonl(path, "annotated sentences"):
        where = f"record {rec['id']} ({name} line {n})"
        if not isinstance(rec.get("text"), str):
            raise XltError(f"{where} has no 'text'", 'give {"id", "text", "spans": [{"start", "end", "label"}]}')
        spans = spans_from_dicts(rec.get("spans", []), where)
        check_spans(rec["text"], spans, where)
        yield {"key": str(rec["id"]), "text": rec["text"], "spans": spans, "where": where}


def read_gold(path: str | Path, targets: Mapping[str, str]) -> dict[str, list[Span]]:
    """Gold target spans per key, each checked against its target sentence."""
    name = Path(path).name
    out: dict[str, list[Span]] = {}
    for n, rec in _jsonl(path, "gold target spans"):
        key, where = str(rec["id"]), f"gold record {rec['id']} ({name} line {n})"
        if key not in targets:
            raise XltError(f"{where} has no target sentence in the corpus", "give gold spans for corpus keys only")
        spans = spans_from_dicts(rec.get("spans", []), where)
        check_spans(targets[key], spans, where)
        out[key] = spans
    if not out:
        raise XltError(f"gold file {name} holds no record", "give one JSONL line per gold sentence")
    return out


def read_candidates(path: str | Path) -> dict[str, list[str]]:
    """Extra candidate texts per key (``{"id", "candidates": [text, ...]}``)."""
    out: dict[str, list[str]] = {}
    for n, rec in _jsonl(path, "candidates"):
        c = rec.get("candidates")
        if not isinstance(c, list) or not all(isinstance(x, str) for x in c):
            raise XltError(f"record {rec['id']} ({Path(path).name} line {n}) has no 'candidates' list of texts",
                           'give {"id": KEY, "candidates": ["text", ...]}')
        out.setdefault(str(rec["id"]), []).extend(c)
    return out


# -- the pipeline -----------------------------------------------------------------------------------------------------
def _record(key: str, langs: list[str], src: dict, tgt_text: str, proj: dict[str, list[Span | None]],
            scores: dict[str, np.ndarray], cand: Candidates, main: str) -> dict:
    spans_out, kept = [], []
    index = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(cand.char_start.tolist(), cand.char_end.tolist()))}
    for k, (sp, p) in enumerate(zip(src["spans"], proj[main])):
        if p is None:
            continue
        c = index[(p.start, p.end)]
        kept.append(p)
        spans_out.append({
            "start": p.start, "end": p.end, "label": p.label, "text": tgt_text[p.start:p.end], "score": p.score,
            "scores": {n: float(s[k, c]) for n, s in scores.items() if n != COMBINED},
            "source_start": sp.start, "source_end": sp.end, "source_text": src["text"][sp.start:sp.end],
        })
    order = sorted(range(len(kept)), key=lambda k: (kept[k].start, kept[k].end))
    tokens, tags = bio_from_spans(tgt_text, [kept[k] for k in order], words_and_punctuation, where=src["where"])
    unprojected = [{"start": sp.start, "end": sp.end, "label": sp.label, "text": src["text"][sp.start:sp.end]}
                   for sp, p in zip(src["spans"], proj[main]) if p is None]
    return {"key": key, "langs": langs, "origin": "synthetic", "text": tgt_text,
            "spans": [spans_out[k] for k in order], "tokens": tokens, "tags": tags, "unprojected": unprojected}


def project(annotated: Iterable[dict], targets: Mapping[str, str], scorers: Mapping[str, ScoreFn], *,
            langs: Sequence[str] = ("eng", "swh"), max_ngram: int = 4,
            extra: Mapping[str, Sequence[str]] | None = None, gold: Mapping[str, Sequence[Span]] | None = None,
            ctx: Any = None) -> Iterator[dict]:
    """Project every annotated sentence (``{"key", "text", "spans": [Span]}``, e.g. :func:`read_annotated`)
    onto its target sentence ``targets[key]`` and yield the records (module docstring). Sentences are read through
    ``ctx.chunks``; with ``gold``, ``ctx.extra["span_f1"]`` gets the span F1 of every scorer (and ``combined``)
    once the last record is out (``ctx`` defaults to a fresh :class:`xlt.data.engine.BuildContext`)."""
    from xlt.data.engine import BuildContext

    ctx = ctx if ctx is not None else BuildContext("project")
    names = list(scorers) + ([COMBINED] if len(scorers) > 1 else [])
    main = names[-1]
    extra = extra or {}
    gold_spans: list[list[Span]] = []
    pred: dict[str, list[list[Span]]] = {n: [] for n in names}
    n_spans = n_projected = 0
    for chunk in ctx.chunks(annotated):
        for src in chunk:
            key = src["key"]
            if not ctx.keep("target_found", key in targets):
                continue
            where = src.get("where", f"record {key}")
            ex = extra.get(key, ())
            proj, scores, cand = project_sentence(src["text"], src["spans"], targets[key], scorers, max_ngram, ex,
                                                  where=where)
            if ex:
                found = set(cand.texts)
                for text in ex:
                    ctx.keep("candidate_found", text.strip() in found)
            n_spans += len(src["spans"])
            n_projected += sum(p is not None for p in proj[main])
            if gold is not None and key in gold:
                gold_spans.append(list(gold[key]))
                for n in names:
                    pred[n].append([p for p in proj[n] if p is not None])
            yield _record(key, list(langs), {**src, "where": where}, targets[key], proj, scores, cand, main)
    ctx.extra["source_spans"] = n_spans
    ctx.extra["projected_spans"] = n_projected
    if gold is not None:
        if not gold_spans:
            raise XltError("no gold sentence is among the projected ones", "give gold spans for the annotated keys")
        ctx.extra["gold_sentences"] = len(gold_spans)
        ctx.extra["span_f1"] = {n: span_f1(gold_spans, pred[n]) for n in names}


# -- toy data (tests, example) ----------------------------------------------------------------------------------------
#: the toy annotation: these English words are entities; "great" before one joins its span (two-word spans)
TOY_LABELS = {"king": "PER", "father": "PER", "son": "PER", "people": "PER", "city": "LOC", "land": "LOC",
              "house": "LOC", "god": "DEI"}


def _toy_spans(text: str) -> list[Span]:
    from xlt.data.spans import whitespace

    offs = whitespace(text)
    words = [text[a:b] for a, b in offs]
    out = []
    for i, w in enumerate(words):
        if w in TOY_LABELS:
            first = i - 1 if i > 0 and words[i - 1] == "great" else i
            out.append((first, i))
    return [Span(offs[a][0], offs[b][1], TOY_LABELS[words[b]]) for a, b in out]


def toy_projection_data(workdir: str | Path, n: int = 60, tgt: str = "swh") -> dict:
    """Write a toy parallel corpus (English and ``tgt`` ciphers, :func:`xlt.data.toy.toy_parallel`), the English
    sentences annotated by :data:`TOY_LABELS` and the gold target spans (the same word positions, word order being
    the same). Returns ``{"corpus", "annotated", "gold", "dicts"}`` (paths as strings)."""
    from xlt.data.spans import whitespace
    from xlt.data.toy import toy_parallel

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = workdir / "toy_corpus.jsonl"
    dicts = toy_parallel(corpus, langs=("eng", tgt), n=n)
    by_lang: dict[str, dict[str, str]] = {"eng": {}, tgt: {}}
    for line in corpus.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        by_lang[r["lang"]][r["id"]] = r["text"]
    annotated, gold = workdir / "annotated.jsonl", workdir / "gold.jsonl"
    with open(annotated, "w", encoding="utf-8") as fa, open(gold, "w", encoding="utf-8") as fg:
        for key, text in by_lang["eng"].items():
            spans = _toy_spans(text)
            src_offs, tgt_offs = whitespace(text), whitespace(by_lang[tgt][key])
            start_tok = {a: k for k, (a, _) in enumerate(src_offs)}
            end_tok = {b: k for k, (_, b) in enumerate(src_offs)}
            g = [{"start": tgt_offs[start_tok[s.start]][0], "end": tgt_offs[end_tok[s.end]][1], "label": s.label}
                 for s in spans]
            fa.write(json.dumps({"id": key, "text": text, "spans": [
                {"start": s.start, "end": s.end, "label": s.label} for s in spans]}) + "\n")
            fg.write(json.dumps({"id": key, "spans": g}) + "\n")
    return {"corpus": f"jsonl:{corpus}", "annotated": str(annotated), "gold": str(gold), "dicts": dicts}


# -- the builder ------------------------------------------------------------------------------------------------------
def _check_scorer(value: str) -> str | None:
    names = [x.strip() for x in value.split(",") if x.strip()]
    if not names:
        return f"names no scorer; choose from {', '.join(SCORERS)}"
    bad = [x for x in names if x not in SCORERS]
    if bad:
        extra = " (oracle is a test scorer: pass a callable to xlt.data.builders.project.project)" \
            if "oracle" in bad else ""
        return f"has unknown scorer(s) {', '.join(bad)}{extra}; choose from {', '.join(SCORERS)}"
    if len(set(names)) != len(names):
        return "names a scorer twice"
    return None


@dataclass
class ProjectOptions:
    annotated: str = option(REQUIRED, "JSONL of annotated source sentences: {id (corpus key), text, spans} "
                                      "with spans a list of {start, end, label} (character offsets)")
    tgt: str = option(REQUIRED, "target language (its sentences are the corpus documents with the same keys)")
    corpus: str = option("bible", "parallel corpus holding the target sentences and the IBM-1 training pairs")
    src: str = option("eng", "language of the annotated sentences")
    scorer: str = option("lm,ibm1", "comma list of candidate scorers: lm (LM translation probability, both ways), "
                                    "ibm1 (IBM Model 1 probabilities); several are averaged", check=_check_scorer)
    model: str = option("smollm2", "causal LM of the lm scorer: a packaged model name or a local HF folder")
    max_ngram: int = option(4, "candidates are the target word n-grams up to this length", check=positive)
    candidates_file: str | None = option(None, "JSONL {id, candidates} (a list of texts) of extra candidates "
                                               "(e.g. a generator's), added to the n-grams where they occur")
    gold: str | None = option(None, "JSONL {id, spans} of gold target spans: span F1 per scorer goes into the "
                                    "manifest")
    batch_size: int = option(16, "rows per LM forward pass (lm scorer)", check=positive)
    ibm1_iterations: int = option(10, "EM iterations of IBM Model 1 (ibm1 scorer)", check=positive)


def _corpus_file(spec: str) -> str | None:
    scheme, sep, arg = spec.partition(":")
    if sep and scheme in ("jsonl", "text", "hf"):
        return arg.partition("#")[0]
    return spec if Path(spec).exists() else None


@register_builder("project")
class ProjectBuilder:
    description = ("Project labelled source spans onto target sentences (T-Projection: n-gram candidates, "
                   "LM/IBM-1 scores)")
    options = ProjectOptions
    seeded = False

    def records(self, ctx, o: ProjectOptions) -> Iterator[dict]:
        from xlt.corpora import open_corpus

        names = [x.strip() for x in o.scorer.split(",") if x.strip()]
        corpus = open_corpus(o.corpus)
        src, tgt = corpus.language(o.src), corpus.language(o.tgt)
        if src == tgt:
            raise XltError(f"source and target language are both {src.code}", "give --tgt another language")
        if not Path(o.annotated).is_file():
            raise XltError(f"annotated file {o.annotated} does not exist", "give --annotated a JSONL file")
        ctx.add_input("annotated", o.annotated)
        if (f := _corpus_file(o.corpus)) is not None:
            ctx.add_input("corpus", f)
        targets = {d.key: d.text for d in corpus.iter_documents(tgt)}
        gold = None
        if o.gold:
            gold = read_gold(o.gold, targets)
            ctx.add_input("gold", o.gold)
        extra = None
        if o.candidates_file:
            extra = read_candidates(o.candidates_file)
            ctx.add_input("candidates", o.candidates_file)
        scorers: dict[str, ScoreFn] = {}
        for name in names:
            if name == "ibm1":
                pairs = ((a, b) for _, a, b in corpus.parallel(src, tgt))
                scorers[name] = IBM1Scorer.train(pairs, o.ibm1_iterations)
            elif name == "lm":
                scorers[name] = self._lm(ctx, o, src.name, tgt.name)
        yield from project(read_annotated(o.annotated), targets, scorers, langs=[src.code, tgt.code],
                           max_ngram=o.max_ngram, extra=extra, gold=gold, ctx=ctx)

    @staticmethod
    def _lm(ctx, o: ProjectOptions, src_name: str, tgt_name: str) -> LMScorer:
        from xlt.models.loading import load_source
        from xlt.precision import device_type

        model, tok, folder = load_source(o.model)
        ctx.add_input("model", folder)
        return LMScorer(model.to(device_type()), tok, src_name, tgt_name, o.batch_size)

    def example(self, workdir: Path) -> dict:
        data = toy_projection_data(workdir, n=30)
        return {"annotated": data["annotated"], "corpus": data["corpus"], "tgt": "swh", "scorer": "ibm1",
                "gold": data["gold"]}
