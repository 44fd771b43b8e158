"""Minimum-Bayes-risk selection from a pool of samples (MBR), and its cross-lingual variant (X-MBR).

MBR picks the candidate with the highest expected utility against an evidence set of pseudo-references:

    index = argmax_c  Σ_{e ∈ E} u(c, e) / |E|

- **Evidence.** By default E is the candidate pool itself, each candidate included (standard sampling-based MBR:
  the pool is a sample of the model's output distribution, so a candidate's own copy is one draw like any other;
  with a utility that gives u(c, c) the same value for every c, as chrF and cosine do, this shifts all scores by the
  same amount and does not change the choice). Repeated candidates count once per copy, so a frequent output weighs
  more. Every evidence text weighs the same.
- **Ties** (scores within 1e-12 of the best) go to the greedy output (``greedy_index``, the hedged pool's τ = 0
  sample) when it is among them, else to the lowest index.
- **Utilities** (:data:`UTILITIES`): ``chrf`` (sentence chrF2, vectorised in :mod:`xlt.infer.chrf`; the candidate
  is the hypothesis, the evidence the reference), ``chrf++``, ``e5`` (cosine between sentence embeddings from an
  ``embedder(texts) -> array`` callable, e.g. multilingual-e5-small; this module loads no model), ``identity``
  (1 for equal strings, else 0: MBR then picks the most frequent candidate), or any callable
  ``u(candidates, evidence) -> matrix`` (an LLM judge, a reward model's pairwise score).
- **X-MBR** (Khairi et al. 2025, "When Life Gives You Samples"): the evidence adds pools generated for the same
  prompt in other languages, so the utility must compare across languages (``e5`` or a judge); the character-based
  utilities are refused there.

:func:`mbr_select_many` selects from many pools; with chrF it reads each pool's strings once and scores all of the
pool's pairs with sparse matrix products.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from xlt.errors import XltError
from xlt.infer.chrf import ChrfConfig, chrf_matrix

#: a pairwise utility: (candidates, evidence) -> matrix of shape (len(candidates), len(evidence))
UtilityFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]
#: an embedding model: texts -> array of shape (len(texts), dim)
Embedder = Callable[[Sequence[str]], np.ndarray]

TIE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class Utility:
    """A named utility; ``monolingual`` names why it cannot compare texts in different languages (None: it can)."""

    name: str
    fn: UtilityFn
    monolingual: str | None = None


@dataclass(frozen=True)
class MBRResult:
    """The selected candidate, every candidate's expected utility, and the utility's name."""

    index: int
    text: str
    scores: np.ndarray
    utility: str
    n_evidence: int


# -- utilities --------------------------------------------------------------------------------------------------------
def identity_utility(candidates: Sequence[str], evidence: Sequence[str]) -> np.ndarray:
    """1.0 where the candidate equals the evidence text, else 0.0."""
    return (np.asarray(candidates, object)[:, None] == np.asarray(evidence, object)[None, :]).astype(np.float64)


def cosine_utility(embedder: Embedder) -> UtilityFn:
    """Cosine similarity of ``embedder``'s vectors; each distinct text is embedded once, in one call."""

    def utility(candidates: Sequence[str], evidence: Sequence[str]) -> np.ndarray:
        ids: dict[str, int] = {}
        rows_c = [ids.setdefault(t, len(ids)) for t in candidates]
        rows_e = [ids.setdefault(t, len(ids)) for t in evidence]
        vectors = _check_embeddings(embedder(list(ids)), len(ids))
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit = vectors / np.where(norms > 0, norms, 1.0)
        return unit[rows_c] @ unit[rows_e].T

    return utility


def _defect(array: np.ndarray, shape_ok: bool) -> str | None:
    """What is wrong with an array a callable returned (its shape, or non-finite values), or None."""
    if not shape_ok:
        return f"shape {array.shape}"
    return None if np.isfinite(array).all() else "non-finite values"


def _check_embeddings(vectors, n: int) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    defect = _defect(vectors, vectors.ndim == 2 and vectors.shape[0] == n)
    if defect:
        raise XltError(f"the embedder returned {defect} for {n} texts",
                       "the embedder must return one finite vector per text: shape (len(texts), dim)")
    return vectors


_CHARS = "{name} compares characters, so it cannot score candidates against evidence in another language"
UTILITIES: dict[str, Callable[[Embedder | None], Utility]] = {
    "chrf": lambda _: Utility("chrf", lambda c, e: chrf_matrix(c, e), _CHARS.format(name="chrF")),
    "chrf++": lambda _: Utility("chrf++", lambda c, e: chrf_matrix(c, e, ChrfConfig(word_order=2)),
                                _CHARS.format(name="chrF++")),
    "identity": lambda _: Utility("identity", identity_utility,
                                  "the identity utility compares strings, so it cannot score candidates against "
                                  "evidence in another language"),
    "e5": lambda embedder: Utility("e5", cosine_utility(_need_embedder(embedder))),
}


def _need_embedder(embedder: Embedder | None) -> Embedder:
    if embedder is None:
        raise XltError("the 'e5' utility needs sentence embeddings, and no embedder was given",
                       "pass embedder=<callable texts -> array (n, dim)>, e.g. a multilingual-e5-small encoder")
    return embedder


def resolve_utility(utility: str | UtilityFn | Utility, embedder: Embedder | None = None) -> Utility:
    """A :class:`Utility` from a name in :data:`UTILITIES`, a callable ``u(candidates, evidence)`` or a Utility."""
    if isinstance(utility, Utility):
        return utility
    if callable(utility):
        return Utility(getattr(utility, "__name__", type(utility).__name__), utility)
    if utility not in UTILITIES:
        raise XltError(f"unknown MBR utility {utility!r}",
                       f"choose from {', '.join(UTILITIES)}, or pass a callable u(candidates, evidence) -> matrix")
    return UTILITIES[utility](embedder)


# -- selection --------------------------------------------------------------------------------------------------------
def _check_pool(texts: Sequence[str], what: str) -> list[str]:
    if isinstance(texts, str):
        raise XltError(f"the {what} is a single string, not a list", f"pass the {what} as a list of strings")
    texts = list(texts)
    if not texts:
        raise XltError(f"the {what} is empty: there is nothing to select from or compare against",
                       f"give at least one text in the {what} (generate with n >= 1 samples)")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise XltError(f"item {bad[0]} of the {what} is a {type(texts[bad[0]]).__name__}, not a string",
                       f"pass the {what} as a list of strings")
    return texts


def _utility_matrix(util: Utility, candidates: list[str], evidence: list[str]) -> np.ndarray:
    matrix = np.asarray(util.fn(candidates, evidence), dtype=np.float64)
    defect = _defect(matrix, matrix.shape == (len(candidates), len(evidence)))
    if defect:
        raise XltError(f"the {util.name!r} utility returned {defect} for {len(candidates)} candidates and "
                       f"{len(evidence)} evidence texts",
                       "a utility must return a finite matrix of shape (len(candidates), len(evidence))")
    return matrix


def select_best(scores: np.ndarray, greedy_index: int | None = 0) -> int:
    """argmax of ``scores``; ties (within 1e-12) go to ``greedy_index`` if it is tied, else to the lowest index."""
    tied = np.nonzero(scores >= scores.max() - TIE_TOLERANCE)[0]
    return int(greedy_index) if greedy_index is not None and greedy_index in tied else int(tied[0])


def _check_greedy(greedy_index: int | None, n: int) -> None:
    if greedy_index is not None and not 0 <= greedy_index < n:
        raise XltError(f"greedy_index {greedy_index} is outside the pool of {n} candidates",
                       f"give the greedy output's position (0..{n - 1}), or None if the pool has no greedy output")


def mbr_select(candidates: Sequence[str], evidence: Sequence[str] | None = None,
               utility: str | UtilityFn | Utility = "chrf", greedy_index: int | None = 0,
               embedder: Embedder | None = None) -> MBRResult:
    """The candidate with the highest mean utility against ``evidence`` (default: the candidates themselves)."""
    candidates = _check_pool(candidates, "candidate pool")
    evidence = candidates if evidence is None else _check_pool(evidence, "evidence")
    _check_greedy(greedy_index, len(candidates))
    util = resolve_utility(utility, embedder)
    scores = _utility_matrix(util, candidates, evidence).mean(axis=1)
    index = select_best(scores, greedy_index)
    return MBRResult(index, candidates[index], scores, util.name, len(evidence))


def xmbr_select(candidates: Sequence[str], evidence_by_lang: Mapping[str, Sequence[str]], target: str,
                utility: str | UtilityFn | Utility = "chrf", greedy_index: int | None = 0,
                embedder: Embedder | None = None) -> MBRResult:
    """Cross-lingual MBR: the evidence is the target-language pool plus the pools of the other languages.

    The target-language evidence is ``evidence_by_lang[target]`` when given, else the candidates; every other
    language's pool is appended. With no other language this is :func:`mbr_select`.
    """
    candidates = _check_pool(candidates, "candidate pool")
    evidence = list(evidence_by_lang.get(target, candidates))
    others = [lang for lang in evidence_by_lang if lang != target]
    util = resolve_utility(utility, embedder)
    if others and util.monolingual:
        raise XltError(f"{util.monolingual} (evidence in {', '.join(others)}; target {target})",
                       "use --utility e5 (multilingual-e5 cosine) or an LLM judge for X-MBR, or give only "
                       f"{target} evidence")
    for lang in others:
        evidence += _check_pool(evidence_by_lang[lang], f"{lang} evidence pool")
    return mbr_select(candidates, evidence, util, greedy_index)


def mbr_select_many(pools: Sequence[Sequence[str]], evidence: Sequence[Sequence[str] | None] | None = None,
                    utility: str | UtilityFn | Utility = "chrf", greedy_index: int | None = 0,
                    embedder: Embedder | None = None) -> list[MBRResult]:
    """:func:`mbr_select` for each pool (with ``evidence[i]`` for pool i when given)."""
    if evidence is not None and len(evidence) != len(pools):
        raise XltError(f"{len(pools)} pools but {len(evidence)} evidence sets",
                       "give one evidence set (or None) per pool")
    util = resolve_utility(utility, embedder)
    return [mbr_select(pool, None if evidence is None else evidence[i], util, greedy_index)
            for i, pool in enumerate(pools)]
