"""Sentence chrF (and chrF++) for every (hypothesis, reference) pair at once, equal to sacrebleu's ``sentence_chrf``.

:func:`chrf_matrix` returns ``M[i, j] = sacrebleu.sentence_chrf(hyps[i], [refs[j]], ...).score`` for all pairs; the
tests check it against sacrebleu 2.6.0 to 1e-9 (in practice the values are bit-identical, since every floating-point
step is sacrebleu's, in sacrebleu's order). It is computed as follows:

- **n-grams once per string.** :class:`ChrfStats` reads each distinct string once. Characters (whitespace removed,
  as sacrebleu does by default) and, for chrF++, words (sacrebleu's punctuation splitting) become integer symbols;
  the id of the n-gram at a position is the (n-1)-gram's id × |alphabet| + the next symbol, for all strings of the
  pool at once (numpy over all positions, no Python loop over characters).
- **matches as a matrix product.** The clipped match count of a pair is Σ_g min(c_h(g), c_r(g)). Writing the k-th
  occurrence of n-gram g in a string as the feature (g, k), a string's features form a set, and
  min(c_h(g), c_r(g)) = |{k: both strings have (g, k)}|; so the match counts of all pairs are ``B_h @ B_rᵀ`` for the
  0/1 occurrence matrices ``B``, one product per order: dense float32 (BLAS, on one thread) for pools up to
  :data:`DENSE_LIMIT` texts × features, sparse (scipy) above.
- **scores vectorised.** Per order sacrebleu takes hyp = (hypothesis n-grams, or 0 when the reference has none),
  ref = reference n-grams and the matches; precision and recall are averaged over the *effective* orders (both
  counts > 0) and combined into F_β (β = 2); no effective order gives 0. ``eps_smoothing=True`` gives sacrebleu's
  chrF++.py-style variant instead (mean of per-order F_β with ε = 1e-16 for missing orders).

Lower-casing is not offered (``sentence_chrf`` has no such option); lower-case the strings first if wanted.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from xlt.errors import XltError

_EPS = 1e-16  # sacrebleu's smoothing constant for a missing precision/recall
_PUNCTS = frozenset('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~')  # sacrebleu's CHRF._PUNCTS


@dataclass(frozen=True)
class ChrfConfig:
    """sacrebleu's CHRF options; the defaults are chrF2 (``sentence_chrf``'s); ``word_order=2`` is chrF++."""

    char_order: int = 6
    word_order: int = 0
    beta: int = 2
    eps_smoothing: bool = False
    whitespace: bool = False  # True keeps whitespace in the character n-grams (sentence_chrf(remove_whitespace=False))

    def __post_init__(self):
        if self.char_order < 0 or self.word_order < 0 or self.char_order + self.word_order == 0:
            raise XltError(f"chrF needs at least one n-gram order (got char_order={self.char_order}, "
                           f"word_order={self.word_order})", "use char_order=6 (chrF) and word_order=0 or 2 (chrF++)")

    @property
    def n_orders(self) -> int:
        return self.char_order + self.word_order


# -- n-gram extraction ----------------------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    """sacrebleu's CHRF._remove_punctuation: one leading or trailing punctuation mark becomes its own word."""
    out: list[str] = []
    for w in text.split():
        if len(w) == 1:
            out.append(w)
        elif w[-1] in _PUNCTS:
            out += [w[:-1], w[-1]]
        elif w[0] in _PUNCTS:
            out += [w[0], w[1:]]
        else:
            out.append(w)
    return out


def _char_symbols(texts: Sequence[str], whitespace: bool) -> tuple[np.ndarray, np.ndarray]:
    """Code points of all texts concatenated (whitespace removed unless kept), and each text's length."""
    stripped = list(texts) if whitespace else ["".join(t.split()) for t in texts]
    joined = "".join(stripped).encode("utf-32-le", "surrogatepass")
    lengths = np.fromiter(map(len, stripped), np.int64, len(stripped))
    return np.frombuffer(joined, dtype=np.uint32).astype(np.int64), lengths


def _word_symbols(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Word ids of all texts concatenated (sacrebleu's word splitting), and each text's number of words."""
    vocab: dict[str, int] = {}
    ids: list[int] = []
    lengths = np.zeros(len(texts), np.int64)
    for i, text in enumerate(texts):
        words = _words(text)
        ids += [vocab.setdefault(w, len(vocab)) for w in words]
        lengths[i] = len(words)
    return np.asarray(ids, np.int64), lengths


@dataclass(frozen=True)
class Occurrences:
    """The n-gram occurrences of one order in a list of texts, as (text, feature) pairs.

    Feature (g, k) stands for "the k-th occurrence of n-gram g", so each text's features form a set and the matches
    of two texts are the size of the intersection of their sets.
    """

    row: np.ndarray  # text of each occurrence
    col: np.ndarray  # feature of each occurrence
    n_features: int

    def dense(self, n_rows: int) -> np.ndarray:
        """0/1 matrix (texts × features), float32 (sums of up to 2**24 ones are exact)."""
        out = np.zeros((n_rows, self.n_features), np.float32)
        out[self.row, self.col] = 1.0
        return out

    def sparse(self, n_rows: int) -> sp.csr_matrix:
        """The same matrix, sparse."""
        data = np.ones(self.row.size, np.float64)
        return sp.csr_matrix((data, (self.row, self.col)), shape=(n_rows, max(self.n_features, 1)))


def _occurrences(row: np.ndarray, gram: np.ndarray) -> Occurrences:
    """Occurrence features from the text and n-gram id of every n-gram, given in text order."""
    if not gram.size:
        return Occurrences(row, gram, 0)
    order = np.argsort(gram, kind="stable")  # by n-gram, then (stable) by text
    gram, row = gram[order], row[order]
    new_gram = np.ones(gram.size, bool)
    new_gram[1:] = gram[1:] != gram[:-1]
    new_run = new_gram.copy()
    new_run[1:] |= row[1:] != row[:-1]
    pos = np.arange(gram.size)
    rank = pos - np.maximum.accumulate(np.where(new_run, pos, 0))  # occurrence number within (text, n-gram)
    width = np.maximum.reduceat(rank, np.flatnonzero(new_gram)) + 1  # features per n-gram: its largest count
    offset = np.cumsum(width) - width
    return Occurrences(row, offset[np.cumsum(new_gram) - 1] + rank, int(width.sum()))


def _ngram_occurrences(symbols: np.ndarray, lengths: np.ndarray, max_order: int) -> list[Occurrences]:
    """Occurrences of the n-grams of orders 1..max_order of texts given as concatenated symbols and lengths.

    The id of the n-gram at position p is (id of the (n-1)-gram at p) × |alphabet| + symbol at p+n-1; the ids are
    renumbered densely (np.unique) only when they would overflow int64.
    """
    row = np.repeat(np.arange(lengths.size), lengths)
    remaining = np.repeat(np.cumsum(lengths), lengths) - np.arange(symbols.size)  # symbols left in the text from here
    _, unigram = np.unique(symbols, return_inverse=True)
    unigram = unigram.ravel().astype(np.int64)
    n_symbols = int(unigram.max()) + 1 if unigram.size else 1
    gram, bound = unigram, n_symbols  # ids < bound
    out = [_occurrences(row, gram)]
    for n in range(2, max_order + 1):
        at = np.nonzero(remaining >= n)[0]  # n-gram start positions
        if bound * n_symbols >= 2 ** 62:
            _, dense = np.unique(gram[at], return_inverse=True)
            gram, bound = np.zeros_like(gram), int(dense.max()) + 1 if dense.size else 1
            gram[at] = dense.ravel()
        longer = np.zeros_like(gram)
        longer[at] = gram[at] * n_symbols + unigram[at + n - 1]
        gram, bound = longer, bound * n_symbols
        out.append(_occurrences(row[at], gram[at]))
    return out


#: largest texts × features for which the match counts use a dense matrix product (else a sparse one)
DENSE_LIMIT = 2 ** 23
#: largest dense product (multiply-adds) run on one BLAS thread
SINGLE_THREAD_LIMIT = 2 ** 27


@lru_cache(maxsize=1)
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def _blas_threads(n_macs: int):
    """One BLAS thread for a small product: more only add start-up costs, and on a busy machine OpenBLAS's waiting
    threads can make a pool's products many times slower. Needs threadpoolctl (no limit without it)."""
    controller = _blas_controller() if n_macs <= SINGLE_THREAD_LIMIT else None
    return nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


class ChrfStats:
    """The n-gram occurrences of a list of texts, extracted once, with features shared by all of them.

    ``orders[o]`` holds the occurrences of order o (character orders first, then word orders) and ``totals[o, i]``
    the number of n-grams of that order in text i. :meth:`scores` gives the chrF of any texts against any texts.
    """

    def __init__(self, texts: Sequence[str], config: ChrfConfig = ChrfConfig()):
        _check_texts(texts)
        self.texts = list(texts)
        self.config = config
        self.orders: list[Occurrences] = []
        if config.char_order:
            self.orders += _ngram_occurrences(*_char_symbols(self.texts, config.whitespace), config.char_order)
        if config.word_order:
            self.orders += _ngram_occurrences(*_word_symbols(self.texts), config.word_order)
        self.totals = np.stack([np.bincount(occ.row, minlength=len(self.texts)) for occ in self.orders])

    def matches(self, hyp_rows: np.ndarray, ref_rows: np.ndarray) -> np.ndarray:
        """Clipped n-gram matches, shape (orders, len(hyp_rows), len(ref_rows)): occurrence matrix products."""
        n = len(self.texts)
        out = np.empty((len(self.orders), len(hyp_rows), len(ref_rows)), np.int64)
        for o, occ in enumerate(self.orders):
            if n * occ.n_features <= DENSE_LIMIT:
                m = occ.dense(n)
                with _blas_threads(len(hyp_rows) * len(ref_rows) * occ.n_features):
                    out[o] = np.rint(m[hyp_rows] @ m[ref_rows].T)
            else:
                m = occ.sparse(n)
                out[o] = np.rint((m[hyp_rows] @ m[ref_rows].T).toarray())
        return out

    def scores(self, hyp_rows: Sequence[int] | None = None, ref_rows: Sequence[int] | None = None) -> np.ndarray:
        """chrF of texts[hyp_rows] (rows) against texts[ref_rows] (columns); all texts when None."""
        every = np.arange(len(self.texts))
        hyp_rows = every if hyp_rows is None else np.asarray(hyp_rows, np.int64)
        ref_rows = every if ref_rows is None else np.asarray(ref_rows, np.int64)
        n_hyp = self.totals[:, hyp_rows][:, :, None]
        n_ref = self.totals[:, ref_rows][:, None, :]
        return f_scores(n_hyp, n_ref, self.matches(hyp_rows, ref_rows), self.config)


# -- scores -----------------------------------------------------------------------------------------------------------
def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, and sacrebleu's ε where den is 0."""
    return np.divide(num, den, out=np.full(np.broadcast_shapes(num.shape, den.shape), _EPS), where=den > 0)


def f_scores(n_hyp: np.ndarray, n_ref: np.ndarray, n_match: np.ndarray, config: ChrfConfig) -> np.ndarray:
    """sacrebleu's ``CHRF._compute_f_score`` for arrays of per-order statistics (leading axis = order).

    ``n_hyp`` and ``n_ref`` are the n-gram totals of the hypotheses and references (broadcast against ``n_match``);
    the hypothesis count is taken as 0 where the reference has no n-gram of that order, as sacrebleu does.
    """
    shape = n_match.shape[1:]
    factor = config.beta ** 2
    score = np.zeros(shape)
    avg_prec, avg_rec = np.zeros(shape), np.zeros(shape)
    effective = np.zeros(shape, np.int64)
    for o in range(config.n_orders):
        hyp = np.where(n_ref[o] > 0, n_hyp[o], 0)
        ref = np.broadcast_to(n_ref[o], shape)
        prec, rec = _ratio(n_match[o], hyp), _ratio(n_match[o], ref)
        if config.eps_smoothing:
            denom = factor * prec + rec
            score += np.where(denom > 0, (1 + factor) * prec * rec / np.where(denom > 0, denom, 1.0), _EPS)
        both = (hyp > 0) & (ref > 0)
        avg_prec += np.where(both, prec, 0.0)
        avg_rec += np.where(both, rec, 0.0)
        effective += both
    if config.eps_smoothing:
        return 100 * score / config.n_orders
    avg_prec = np.divide(avg_prec, effective, out=np.zeros(shape), where=effective > 0)
    avg_rec = np.divide(avg_rec, effective, out=np.zeros(shape), where=effective > 0)
    total = avg_prec + avg_rec
    f = (1 + factor) * avg_prec * avg_rec
    f = np.divide(f, factor * avg_prec + avg_rec, out=np.zeros(shape), where=total != 0)
    return 100 * f


# -- API --------------------------------------------------------------------------------------------------------------
def _check_texts(texts: Sequence[str]) -> None:
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if isinstance(texts, str) or bad:
        raise XltError("chrF needs a list of strings" + (f" (item {bad[0]} is {type(texts[bad[0]]).__name__})"
                                                         if bad else ", not a single string"),
                       "pass the texts as a list of str")


def chrf_matrix(hyps: Sequence[str], refs: Sequence[str], config: ChrfConfig = ChrfConfig()) -> np.ndarray:
    """``M[i, j] = sacrebleu.sentence_chrf(hyps[i], [refs[j]]).score`` (with ``config``'s options), float64.

    Each distinct string is read once; the scores of repeated strings are copied.
    """
    _check_texts(hyps)
    _check_texts(refs)
    if not len(hyps) or not len(refs):
        return np.zeros((len(hyps), len(refs)))
    ids: dict[str, int] = {}
    hyp_ids = np.asarray([ids.setdefault(t, len(ids)) for t in hyps], np.int64)
    ref_ids = np.asarray([ids.setdefault(t, len(ids)) for t in refs], np.int64)
    hyp_rows, hyp_inv = np.unique(hyp_ids, return_inverse=True)
    ref_rows, ref_inv = np.unique(ref_ids, return_inverse=True)
    scores = ChrfStats(list(ids), config).scores(hyp_rows, ref_rows)
    return scores[np.ix_(hyp_inv.ravel(), ref_inv.ravel())]


def sentence_chrf(hyp: str, ref: str, config: ChrfConfig = ChrfConfig()) -> float:
    """``sacrebleu.sentence_chrf(hyp, [ref]).score`` (one reference)."""
    return float(chrf_matrix([hyp], [ref], config)[0, 0])
