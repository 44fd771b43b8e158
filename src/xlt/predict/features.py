"""LangRank's dataset features of a (task language t, transfer language s) pair, from each language's own text.

LangRank (Lin et al., ACL 2019; ``neulab/langrank``, ``langrank.py``: ``prepare_new_dataset`` and
``distance_vec``) describes a candidate transfer language s for a task language t by its URIEL distances (in
:mod:`xlt.predict.distances`) and by these dataset features, computed here from a corpus
(``open_corpus(corpus).documents(lang, split)``):

- ``transfer_size`` = documents of s, ``task_size`` = documents of t, ``size_ratio`` = transfer_size / task_size.
  LangRank's ``dataset_size`` is the number of lines (sentences) of the data set; a corpus document (a Bible verse,
  a line of a text file) is that line here.
- ``transfer_ttr``, ``task_ttr``: type/token ratio of the words of all documents, |V| / N;
  ``ttr_distance`` = (1 − TTR_s / TTR_t)².
- ``word_overlap`` = |V_s ∩ V_t| / (|V_s| + |V_t|): a sum in the denominator, so at most 0.5, exactly 0.5 for two
  identical vocabularies, 0 for disjoint ones.
- ``subword_overlap``: the same formula over subword vocabularies (LangRank: SentencePiece pieces, MT only).
- ``log_n_target`` = ln(1 + n), n = the number of target-language training examples (Muller et al. 2022: few-shot
  performance grows logarithmically with n). Not a LangRank feature; NaN (with its reason) when n is not given.

Choices where LangRank leaves one open or does otherwise:

- Words are :func:`xlt.vocab.dictionary.tokenize_words` (NFC, lower-cased, runs of letters and marks; digits and
  punctuation dropped), the project's word definition, where LangRank splits on whitespace without lower-casing
  (so its vocabularies also count "word," and "Word" apart from "word").
- Languages written without spaces (:data:`xlt.languages.UNSPACED`: cmn, jpn, tha, ...) have no words in that
  sense (a "word" would be a whole clause): their TTR, the TTR distance and the word overlap of any pair with them
  are NaN, with that reason. Their subword features are defined.
- Subwords: one byte-pair-encoding model per language (HF ``tokenizers``: NFC + lower-case, SentencePiece-style
  ``▁`` word-boundary marks via the Metaspace pre-tokenizer, ``subword_vocab_size`` pieces), trained on that
  language's documents alone; its subword vocabulary is the set of pieces seen when its documents are segmented
  with it (LangRank's ``subword_vocab``: the types of the segmented data). A pair's features therefore depend on
  the two languages' texts only, not on which other languages are compared. BPE training has no randomness: the
  same text always gives the same pieces (tested).
- ``log_n_target`` uses ln(1 + n) so that zero-shot (n = 0) is 0, not −∞; for n ≥ 10 it is within 0.1 of ln n.
- ``max_docs`` keeps the first documents of the split, in corpus order. TTR depends on text length, so compare
  languages on texts of similar size (a parallel corpus with the same ``max_docs``).

Per-language statistics are computed once per (corpus, language, split, max_docs, options) and kept in memory
(:func:`clear_cache` empties it). A language with fewer than ``min_documents`` documents (or, where words are
defined, ``min_words`` words) is refused, saying how much it has and how much is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from xlt.errors import XltError
from xlt.options import as_dict, build, option, positive

#: the feature columns of :func:`dataset_features`, in order
FEATURES = ("transfer_size", "task_size", "size_ratio", "transfer_ttr", "task_ttr", "ttr_distance", "word_overlap",
            "subword_overlap", "log_n_target")


@dataclass
class FeatureOptions:
    """Options of the dataset features."""

    subword_vocab_size: int = option(8000, "pieces of the BPE model trained per language for the subword overlap",
                                     check=positive)
    min_documents: int = option(100, "documents a language needs at least", check=positive)
    min_words: int = option(1000, "words a language written with spaces needs at least", check=positive)


@dataclass(frozen=True)
class LanguageStats:
    """What the features need of one language's text."""

    lang: str
    documents: int
    words: int
    word_types: frozenset[str]
    subword_tokens: int
    subword_types: frozenset[str]
    spaced: bool  # False for languages written without spaces: no word features

    @property
    def ttr(self) -> float:
        """Word type/token ratio; NaN for a language written without spaces."""
        return len(self.word_types) / self.words if self.spaced and self.words else math.nan


def overlap(a: set | frozenset, b: set | frozenset) -> float:
    """LangRank's overlap |A ∩ B| / (|A| + |B|) (0 when both are empty)."""
    total = len(a) + len(b)
    return len(a & b) / total if total else 0.0


def ttr_distance(ttr_s: float, ttr_t: float) -> float:
    """(1 − TTR_s / TTR_t)²."""
    return (1.0 - ttr_s / ttr_t) ** 2


def subword_types(texts: Sequence[str], vocab_size: int) -> tuple[frozenset[str], int]:
    """(the set of BPE pieces, the number of pieces) of ``texts`` segmented by a BPE model of ``vocab_size`` pieces
    trained on ``texts`` alone (NFC, lower-cased, ``▁`` word-boundary marks; see the module docstring)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[],
                                                       show_progress=False))
    types: set[str] = set()
    n = 0
    for enc in tok.encode_batch(list(texts)):
        types.update(enc.tokens)
        n += len(enc.tokens)
    return frozenset(types), n


def text_stats(lang: str, texts: Sequence[str], options: FeatureOptions | Mapping[str, Any] | None = None,
               what: str = "") -> LanguageStats:
    """:class:`LanguageStats` of ``texts`` in language ``lang`` (ISO code); ``what`` names the text in errors."""
    from xlt.languages import UNSPACED, resolve
    from xlt.vocab.dictionary import tokenize_words

    opts = _options(options)
    code = resolve(lang).code
    spaced = code not in UNSPACED
    texts = [t for t in texts if t and t.strip()]
    words: list[str] = [w for t in texts for w in tokenize_words(t)]
    where = f" in {what}" if what else ""
    if len(texts) < opts.min_documents or (spaced and len(words) < opts.min_words):
        need = f"{opts.min_documents:,} documents" + (f" and {opts.min_words:,} words" if spaced else "")
        raise XltError(f"{code} has {len(texts):,} documents ({len(words):,} words){where}; the dataset features "
                       f"need at least {need}",
                       "give more text in that language (a larger corpus or split, or a larger max_docs), or lower "
                       "min_documents / min_words")
    sub, n_sub = subword_types(texts, opts.subword_vocab_size)
    return LanguageStats(code, len(texts), len(words), frozenset(words), n_sub, sub, spaced)


def pair_features(source: LanguageStats, target: LanguageStats,
                  n_target: int | None = None) -> tuple[dict[str, float], dict[str, str]]:
    """The features of transfer language ``source`` for task language ``target`` (module docstring), and the
    reason of each NaN."""
    reasons: dict[str, str] = {}
    out = {"transfer_size": float(source.documents), "task_size": float(target.documents),
           "size_ratio": source.documents / target.documents,
           "transfer_ttr": source.ttr, "task_ttr": target.ttr}
    unspaced = list(dict.fromkeys(s.lang for s in (source, target) if not s.spaced))
    if unspaced:
        for lang, name in ((source, "transfer_ttr"), (target, "task_ttr")):
            if not lang.spaced:
                reasons[name] = f"{lang.lang} is written without spaces: it has no words to count"
        why = (f"{unspaced[0]} is written without spaces: it has no words to count" if len(unspaced) == 1 else
               f"{' and '.join(unspaced)} are written without spaces: they have no words to count")
        out["ttr_distance"] = out["word_overlap"] = math.nan
        reasons["ttr_distance"] = reasons["word_overlap"] = why
    else:
        out["ttr_distance"] = ttr_distance(source.ttr, target.ttr)
        out["word_overlap"] = overlap(source.word_types, target.word_types)
    out["subword_overlap"] = overlap(source.subword_types, target.subword_types)
    if n_target is None or (isinstance(n_target, float) and math.isnan(n_target)):
        out["log_n_target"] = math.nan
        reasons["log_n_target"] = f"the number of {target.lang} training examples was not given"
    else:
        try:
            count = not isinstance(n_target, bool) and float(n_target).is_integer() and n_target >= 0
        except (TypeError, ValueError):
            count = False
        if not count:
            raise XltError(f"n_target for {target.lang} is {n_target!r}, not a count",
                           "give the number of target-language training examples (0 for zero-shot)")
        out["log_n_target"] = math.log1p(n_target)
    return {k: out[k] for k in FEATURES}, reasons


# -- per-language statistics from a corpus, cached -----------------------------------------------------------------
_CACHE: dict[tuple, tuple[Any, LanguageStats]] = {}


def clear_cache() -> None:
    """Forget every cached per-language statistic."""
    _CACHE.clear()


def language_stats(corpus: Any, lang: str, split: str | None = "train", max_docs: int | None = None,
                   options: FeatureOptions | Mapping[str, Any] | None = None) -> LanguageStats:
    """:class:`LanguageStats` of ``lang``'s documents of ``split`` in ``corpus`` (a spec such as ``"bible"`` or a
    :class:`~xlt.corpora.Corpus`), the first ``max_docs`` of them if given; computed once, then cached."""
    from xlt.corpora import open_corpus

    opts = _options(options)
    if max_docs is not None and (isinstance(max_docs, bool) or int(max_docs) != max_docs or max_docs < 1):
        raise XltError(f"max_docs must be a positive whole number, got {max_docs!r}", "give max_docs ≥ 1, or None")
    corp = open_corpus(corpus) if isinstance(corpus, str) else corpus
    code = corp.language(lang).code
    ident = corpus if isinstance(corpus, str) else ("object", id(corpus))
    key = (ident, code, split, max_docs, tuple(sorted(as_dict(opts).items())))
    hit = _CACHE.get(key)
    if hit is not None:
        return hit[1]
    docs = corp.documents(code, split)
    if max_docs is not None:
        docs = docs[: int(max_docs)]
    name = getattr(corp, "name", "corpus")
    what = (f"the {split} split of the {name} corpus" if split else f"the whole {name} corpus") + (
        f" (first {max_docs:,} documents)" if max_docs is not None else "")
    stats = text_stats(code, [d.text for d in docs], opts, what)
    _CACHE[key] = (corpus, stats)  # the corpus object is kept, so its id cannot be reused while cached
    return stats


def dataset_features(pairs: Iterable[Sequence[str]], corpus: Any = "bible", split: str | None = "train",
                     max_docs: int | None = None, n_target: int | Mapping[str, int | None] | None = None,
                     options: FeatureOptions | Mapping[str, Any] | None = None):
    """LangRank's dataset features of each ``(source, target)`` pair, from ``corpus``'s ``split``.

    Returns ``(frame, reasons)``: a pandas DataFrame with the columns ``source``, ``target`` (ISO 639-3) and
    :data:`FEATURES`, one row per pair in the order given, and ``{(source, target): {feature: why it is NaN}}`` for
    every NaN. ``n_target`` is the number of target-language training examples: one count for every target, or a
    mapping target → count (codes in any ISO form); targets without one get a NaN ``log_n_target``."""
    from xlt.languages import resolve

    try:
        import pandas as pd
    except ImportError:
        raise XltError("dataset features as a data frame need pandas, which is not installed",
                       "pip install pandas (or use language_stats and pair_features)") from None
    opts = _options(options)
    counts: dict[str, int | None] | None = None
    if isinstance(n_target, Mapping):
        counts = {resolve(k).code: v for k, v in n_target.items()}
    rows, reasons = [], {}
    for pair in pairs:
        if isinstance(pair, str) or len(pair) != 2:
            raise XltError(f"{pair!r} is not a (source, target) pair", "give pairs such as ('eng', 'swh')")
        s_stats = language_stats(corpus, pair[0], split, max_docs, opts)
        t_stats = language_stats(corpus, pair[1], split, max_docs, opts)
        n = counts.get(t_stats.lang) if counts is not None else n_target
        feats, why = pair_features(s_stats, t_stats, n)
        rows.append({"source": s_stats.lang, "target": t_stats.lang, **feats})
        if why:
            reasons[(s_stats.lang, t_stats.lang)] = why
    frame = pd.DataFrame(rows, columns=["source", "target", *FEATURES])
    return frame, reasons


def _options(options: FeatureOptions | Mapping[str, Any] | None) -> FeatureOptions:
    values = as_dict(options) if isinstance(options, FeatureOptions) else dict(options or {})
    return build(FeatureOptions, values, "dataset features")


__all__ = ["FEATURES", "FeatureOptions", "LanguageStats", "overlap", "ttr_distance", "subword_types", "text_stats",
           "pair_features", "language_stats", "dataset_features", "clear_cache"]
