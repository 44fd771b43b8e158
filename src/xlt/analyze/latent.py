"""Which language does the model "think" in? The latent-language analysis of Wendler et al. (2024), "Do Llamas
Work in English?", for any tokenizer and any causal LM the lens supports.

Prompts (Wendler's format): four demonstrations, then the query, e.g. for French → Chinese

    Français: "orge" - 中文: "大麦"
    …
    Français: "ivoire" - 中文: "

and the *repetition* task, the same with the target language on both sides (``中文: "象牙" - 中文: "``). At the last
token of each prompt, every layer is decoded with the logit lens (or a tuned lens) and we measure, per layer:

- ``P_target`` and ``P_latent``: the probability of the tokens that can start the target word and the latent
  (English) word, :func:`start_tokens`; for the translation task also ``P_source``, that of the query's own
  (source-language) word — not in Wendler et al., but a French word and its English translation often share
  first tokens (``soufre``/``sulfur``), so a layer that copies the source word also raises ``P_latent``;
- the entropy of the next-token distribution, in bits;
- token energy (how much of the normalised state lies in the span of the unembedding; :meth:`LogitLens.energy`);
- the top-5 tokens of the distribution averaged over prompts.

Pairs are filtered as Wendler does: a pair is dropped when the latent word is a substring of the target word, or
when the target and latent token sets intersect, or when either set is empty (the first two only when the target
language is not the latent one). Means come with seeded percentile-bootstrap confidence intervals.

Word triples (source, target, latent) come from any list, or from the verse-aligned Bible with
:func:`word_triples`, which induces latent→source and latent→target dictionaries
(:func:`xlt.vocab.dictionary.induce_from_parallel`) and joins them on the latent word.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from xlt.analyze.capture import run_probes, tokenize
from xlt.analyze.lens import LensProbe, LensResult, _pad_id, _top_tokens
from xlt.errors import XltError

__all__ = [
    "ELIDING", "NATIVE_NAMES", "TASKS", "WordTriple", "LatentPrompt", "LatentTask", "LatentCurve", "LatentResult",
    "start_tokens", "word_triples", "latent_language", "latent_report", "bootstrap_ci",
]

#: how the prompts name each language (Wendler's prompts use the languages' own names)
NATIVE_NAMES = {
    "eng": "English", "fra": "Français", "deu": "Deutsch", "rus": "Русский", "cmn": "中文", "spa": "Español",
    "ita": "Italiano", "por": "Português", "nld": "Nederlands", "pol": "Polski", "ron": "Română", "tur": "Türkçe",
    "ukr": "Українська", "jpn": "日本語", "kor": "한국어", "arb": "العربية", "hin": "हिन्दी", "ben": "বাংলা",
    "pes": "فارسی", "vie": "Tiếng Việt", "ind": "Bahasa Indonesia", "swh": "Kiswahili", "tgl": "Tagalog",
    "nya": "Chichewa", "fin": "Suomi", "swe": "Svenska", "ces": "Čeština", "ell": "Ελληνικά", "heb": "עברית",
}
TASKS = ("translation", "repetition")
#: languages whose induced words may carry an elided article or pronoun (``l'``, ``d'``, ``qu'``, ``dell'``)
ELIDING = frozenset({"fra", "ita", "cat"})
_ELISION = re.compile(r"^[^\W\d_]{1,6}['’](?=\w\w)")


# ---------------------------------------------------------------------------------------------------------
# tokens that can start a word
# ---------------------------------------------------------------------------------------------------------
def _start_index(tokenizer) -> dict[bytes, list[int]]:
    """Every non-special token's UTF-8 bytes without one leading space → the token ids with that surface."""
    from xlt.vocab.canon import canonical_vocab

    index: dict[bytes, list[int]] = {}
    for i, b in enumerate(canonical_vocab(tokenizer)):
        if not b:
            continue
        body = b[1:] if b.startswith(b" ") else b
        if body:
            index.setdefault(body, []).append(i)
    return index


def start_tokens(tokenizer, word: str) -> list[int]:
    """The ids of every token that can start ``word``, tokenizer-agnostic (sorted).

    A token qualifies when its text is a non-empty prefix of ``word`` (whole characters), with or without the
    word-start marker (``Ġ`` in byte-level BPE, ``▁`` in SentencePiece, no ``##`` in WordPiece), or when it is the
    single byte of the word's first UTF-8 byte (byte-fallback ``<0xNN>`` in SentencePiece, the byte's own token in
    byte-level BPE), with or without the marker, for a first character of more than one byte. Case-sensitive, as
    in Wendler et al. Special tokens never qualify.
    """
    from xlt.vocab.canon import tokenizer_memo

    if not isinstance(word, str) or not word.strip():
        raise XltError(f"cannot find the start tokens of an empty word ({word!r})", "give a non-empty word")
    word = word.strip()
    index = tokenizer_memo(tokenizer, "start_index", lambda: _start_index(tokenizer))
    ids: set[int] = set()
    for k in range(1, len(word) + 1):
        ids.update(index.get(word[:k].encode("utf-8"), ()))
    first = word[0].encode("utf-8")
    if len(first) > 1:
        ids.update(index.get(first[:1], ()))
    return sorted(ids)


# ---------------------------------------------------------------------------------------------------------
# word triples
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WordTriple:
    """One word in the source language, its translation in the target language and in the latent language."""

    source: str
    target: str
    latent: str


def _as_triple(t) -> WordTriple:
    if isinstance(t, WordTriple):
        return t
    if isinstance(t, (tuple, list)) and len(t) == 3 and all(isinstance(x, str) for x in t):
        return WordTriple(*t)
    raise XltError(f"a word triple must be (source, target, latent) strings, got {t!r}",
                   "pass WordTriple objects or 3-tuples of words")


def _char_ngrams(text: str, n_max: int) -> str:
    """All character n-grams (1 ≤ n ≤ ``n_max``) of each run of letters, space-separated: candidate "words" for a
    script written without spaces."""
    import regex

    out = []
    for run in regex.findall(r"[\p{L}\p{M}]+", text):
        for n in range(1, n_max + 1):
            out.extend(run[i:i + n] for i in range(len(run) - n + 1))
    return " ".join(out)


def _name_share(texts: Iterable[str]) -> dict[str, float]:
    """Per lower-cased word, the share of its occurrences written with a capital first letter; the parts of a
    hyphenated word that starts with a capital count as capitalised (``Beth-horon``, ``Kiriath-jearim``)."""
    from xlt.vocab.dictionary import tokenize_words

    def names_up(chunk: str) -> str:
        if "-" in chunk and chunk[:1].isupper():
            return "-".join(p[:1].upper() + p[1:] for p in chunk.split("-"))
        return chunk

    caps, total = Counter(), Counter()
    for t in texts:
        t = " ".join(names_up(c) for c in t.split())
        for w in tokenize_words(t, lower=False):
            lw = w.lower()
            total[lw] += 1
            if w[:1].isupper():
                caps[lw] += 1
    return {w: caps[w] / n for w, n in total.items()}


def word_triples(source_lang: str, target_lang: str, latent_lang: str = "eng", corpus: Any = "bible",
                 split: str | None = "train", min_count: int = 5, max_pairs: int | None = None,
                 drop_names: bool = True, max_unspaced_chars: int = 2) -> list[WordTriple]:
    """(source, target, latent) word triples from a parallel corpus, best-associated first.

    Induces latent→source and latent→target dictionaries (mutual best Dice matches,
    :func:`~xlt.vocab.dictionary.induce_from_parallel`, words lower-cased) and joins them on the latent word. For a
    language written without spaces (:data:`xlt.languages.UNSPACED`, e.g. ``cmn``) the corpus's "words" would be
    whole clauses, so its side is induced over the character n-grams (n ≤ ``max_unspaced_chars``) of the text instead.
    Leading elisions (``l'``, ``d'``, ``qu'``) are stripped in French, Italian and Catalan (:data:`ELIDING`).
    With ``drop_names``, latent words written with a capital in at least half of their occurrences in the corpus
    (names: Moses, Jordan, …) are dropped; latent words of one letter always are.
    """
    from xlt.corpora import open_corpus
    from xlt.languages import UNSPACED
    from xlt.vocab.dictionary import induce_from_parallel, induce_from_segments

    corpus = open_corpus(corpus)
    src, tgt, lat = (corpus.language(c) for c in (source_lang, target_lang, latent_lang))
    if src == lat and tgt == lat:
        raise XltError(f"source, target and latent language are all {lat.code}",
                       "choose a source or target language other than the latent one")

    def lexicon(lang) -> dict[str, str] | None:
        if lang == lat:
            return None
        if lang.code in UNSPACED:
            aligned = corpus.parallel(lat, lang, split)
            d = induce_from_segments(((a, _char_ngrams(b, max_unspaced_chars)) for _, a, b in aligned),
                                     min_count=min_count, source=f"induced:{corpus.name} dice (character n-grams)")
        else:
            d = induce_from_parallel(corpus, lat.code, lang.code, split=split, min_count=min_count)
        out: dict[str, str] = {}
        for a, b in d.pairs:
            if lang.code in ELIDING:
                b = _ELISION.sub("", b)
            out.setdefault(a, b)
        return out

    s_lex, t_lex = lexicon(src), lexicon(tgt)
    order = list((t_lex or s_lex or {}).keys())
    share = _name_share(corpus.texts(lat, split)) if drop_names else {}
    triples: list[WordTriple] = []
    seen_t, seen_s = set(), set()
    for w in order:
        if len(w) < 2 or share.get(w, 0.0) >= 0.5:
            continue
        s = w if s_lex is None else s_lex.get(w)
        t = w if t_lex is None else t_lex.get(w)
        if not s or not t or t in seen_t or s in seen_s:
            continue
        seen_t.add(t)
        seen_s.add(s)
        triples.append(WordTriple(s, t, w))
        if max_pairs is not None and len(triples) >= max_pairs:
            break
    if not triples:
        raise XltError(f"no word triples for {src.code}→{tgt.code} via {lat.code} in the {corpus.name} corpus",
                       "lower min_count, or choose languages with more parallel text")
    return triples


# ---------------------------------------------------------------------------------------------------------
# prompts
# ---------------------------------------------------------------------------------------------------------
@dataclass
class LatentPrompt:
    """One prompt: its text (ending right before the answer), the words, and their start-token sets."""

    task: str
    text: str
    source: str
    target: str
    latent: str
    target_ids: list[int]
    latent_ids: list[int]
    demos: list[int] = field(default_factory=list)  # indices into LatentTask.candidates
    source_ids: list[int] = field(default_factory=list)  # the word shown in the query (translation task only)


def _lang_name(code: str, names: dict | None) -> str:
    from xlt.languages import resolve

    if names and code in names:
        return names[code]
    return NATIVE_NAMES.get(code) or resolve(code).name


@dataclass
class LatentTask:
    """The prompts of one latent-language analysis, ready for the shared capture pass.

    ``texts()`` gives the prompt texts per group (one group per task), ``probe(model)`` the :class:`LensProbe`
    that reads them (it ignores every other group of the pass), ``result(lens_result)`` the curves."""

    source_lang: str
    target_lang: str
    latent_lang: str
    prompts: dict[str, list[LatentPrompt]]
    candidates: list[WordTriple]
    dropped: dict[str, int]
    settings: dict

    @classmethod
    def build(cls, tokenizer, triples: Sequence[WordTriple | tuple], source_lang: str, target_lang: str,
              latent_lang: str = "eng", *, tasks: Sequence[str] = TASKS, n_demos: int = 4, min_pairs: int = 4,
              max_prompts: int | None = None, seed: int = 0, names: dict | None = None,
              max_length: int = 256, drop_source_overlap: bool = False) -> "LatentTask":
        """Filter the triples (Wendler's rules), then build one prompt per usable pair (the first ``max_prompts``)
        and task, its ``n_demos`` demonstrations drawn (seeded) from the other pairs that passed the substring
        filter. Languages are ISO 639 codes; ``names`` overrides how the prompts name them (``{"fra": "French"}``,
        keyed by ISO 639-3 code; default :data:`NATIVE_NAMES`, else the English name). ``drop_source_overlap``
        (not in Wendler et al.) also drops pairs whose source and latent words share a start token, so that a layer
        copying the source word cannot pass for one "thinking" in the latent language."""
        from xlt.languages import resolve

        tasks = tuple(tasks)
        if not tasks or any(t not in TASKS for t in tasks) or len(set(tasks)) != len(tasks):
            raise XltError(f"unknown or repeated latent-language tasks {list(tasks)!r}",
                           f"choose among: {', '.join(TASKS)}")
        for name, v, lo in (("n_demos", n_demos, 0), ("min_pairs", min_pairs, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise XltError(f"{name} must be a whole number ≥ {lo}, got {v!r}", f"pass e.g. {name}=4")
        if max_prompts is not None and (isinstance(max_prompts, bool) or not isinstance(max_prompts, int)
                                        or max_prompts < min_pairs):
            raise XltError(f"max_prompts must be a whole number ≥ min_pairs ({min_pairs}) or None, got {max_prompts!r}",
                           "pass e.g. max_prompts=100, or None for every usable pair")
        src, tgt, lat = (resolve(c).code for c in (source_lang, target_lang, latent_lang))
        triples = [_as_triple(t) for t in triples]
        latent_is_target = tgt == lat
        dropped = Counter()
        candidates: list[WordTriple] = []
        for t in triples:
            if not latent_is_target and t.latent.lower() in t.target.lower():
                dropped["latent_in_target"] += 1
                continue
            candidates.append(t)
        usable = []
        for i, t in enumerate(candidates):
            tids, lids = start_tokens(tokenizer, t.target), start_tokens(tokenizer, t.latent)
            if not tids or not lids:
                dropped["no_tokens"] += 1
            elif not latent_is_target and set(tids) & set(lids):
                dropped["overlapping_tokens"] += 1
            elif drop_source_overlap and src != lat and set(start_tokens(tokenizer, t.source)) & set(lids):
                dropped["source_overlapping_tokens"] += 1
            else:
                usable.append((i, tids, lids))
        n_usable = len(usable)
        if max_prompts is not None:
            usable = usable[:max_prompts]
        if len(usable) < min_pairs or len(candidates) < n_demos + 1:
            why = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sorted(dropped.items())) or "none dropped"
            raise XltError(
                f"only {len(usable)} usable word pairs for {src}→{tgt} with latent {lat} (of {len(triples)} given; "
                f"{why}); the analysis needs at least {min_pairs} usable pairs and {n_demos + 1} pairs for the "
                f"demonstrations",
                "give more word triples (word_triples with a larger max_pairs or lower min_count), or another "
                "language pair")
        a_src, a_tgt = _lang_name(src, names), _lang_name(tgt, names)
        rng = np.random.default_rng(seed)
        prompts: dict[str, list[LatentPrompt]] = {task: [] for task in tasks}
        for i, tids, lids in usable:
            others = [j for j in range(len(candidates)) if j != i]
            demos = [int(j) for j in rng.choice(others, size=n_demos, replace=False)] if n_demos else []
            q = candidates[i]
            for task in tasks:
                left, word = (a_src, (lambda t: t.source)) if task == "translation" else (a_tgt, (lambda t: t.target))
                lines = [f'{left}: "{word(candidates[j])}" - {a_tgt}: "{candidates[j].target}"' for j in demos]
                lines.append(f'{left}: "{word(q)}" - {a_tgt}: "')
                text = "\n".join(lines)
                n_tok = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
                if n_tok > max_length:
                    raise XltError(f"a latent-language prompt has {n_tok} tokens, more than max_length={max_length}",
                                   "raise max_length or use fewer demonstrations (n_demos)")
                sids = start_tokens(tokenizer, q.source) if task == "translation" else []
                prompts[task].append(LatentPrompt(task, text, q.source, q.target, q.latent, tids, lids, demos, sids))
        settings = {"tasks": list(tasks), "n_demos": n_demos, "min_pairs": min_pairs, "max_prompts": max_prompts,
                    "drop_source_overlap": drop_source_overlap,
                    "seed": seed, "max_length": max_length, "names": {src: a_src, tgt: a_tgt},
                    "pairs_given": len(triples), "pairs_usable": n_usable, "prompts_per_task": len(usable)}
        return cls(src, tgt, lat, prompts, candidates, dict(dropped), settings)

    def group(self, task: str) -> str:
        """The text-group name of ``task``'s prompts in the capture pass."""
        src = self.target_lang if task == "repetition" else self.source_lang
        return f"latent:{task}:{src}>{self.target_lang}"

    def texts(self) -> dict[str, list[str]]:
        return {self.group(t): [p.text for p in ps] for t, ps in self.prompts.items()}

    def token_sets(self) -> dict[str, list[dict[str, list[int]]]]:
        return {self.group(t): [{"target": p.target_ids, "latent": p.latent_ids,
                                 **({"source": p.source_ids} if t == "translation" else {})} for p in ps]
                for t, ps in self.prompts.items()}

    def probe(self, model, lens=None) -> LensProbe:
        """The lens probe for these prompts (last token, token sets, energy, mean distribution)."""
        return LensProbe(model, "last", lens=lens, groups=list(self.texts()), token_sets=self.token_sets(),
                         top_k=5, mean_probs=True, energy=True)

    def result(self, lens_result: LensResult, n_resamples: int = 1000, confidence: float = 0.95,
               seed: int = 0) -> "LatentResult":
        """The per-layer curves of every task, with bootstrap confidence intervals."""
        curves = {}
        for task, ps in self.prompts.items():
            g = self.group(task)
            rows = lens_result.groups.get(g)
            if rows is None or rows.n != len(ps) or not np.array_equal(rows.index, np.arange(len(ps))):
                raise XltError(f"the capture pass did not decode every prompt of {g}",
                               "run the LatentTask's probe over the LatentTask's texts (latent_language does both)")
            metrics = {"p_target": np.exp(rows.set_logprobs["target"]), "p_latent": np.exp(rows.set_logprobs["latent"]),
                       "entropy": rows.entropy, "energy": rows.energy}
            if "source" in rows.set_logprobs:  # translation: how much the layer still copies the query's word
                metrics["p_source"] = np.exp(rows.set_logprobs["source"])
            metrics = {k: np.asarray(v, dtype=np.float64) for k, v in metrics.items()}
            ci = {k: bootstrap_ci(v, n_resamples, confidence, seed) for k, v in metrics.items()}
            curves[task] = LatentCurve(task, g, len(ps), **metrics, ci=ci, top_ids=rows.top_ids,
                                       top_probs=rows.top_probs, mean_probs=rows.mean_probs)
        settings = dict(self.settings, n_resamples=n_resamples, confidence=confidence, bootstrap_seed=seed,
                        lens=lens_result.lens)
        return LatentResult(self.source_lang, self.target_lang, self.latent_lang, lens_result.num_layers, curves,
                            self, dict(self.dropped), settings, lens_result.final_check)


# ---------------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------------
def bootstrap_ci(values: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap confidence interval of the mean over the last axis (Wendler's ``scipy.stats.bootstrap``
    with ``method="percentile"``), seeded: ``(low, high)``, each of ``values.shape[:-1]``."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=np.float64)
    if values.shape[-1] < 2:
        raise XltError("a bootstrap interval needs at least two values", "give at least two prompts")
    if np.all(values == values[..., :1]):  # constant rows: the interval is the value itself
        return values[..., 0].copy(), values[..., 0].copy()
    res = bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                    axis=-1, vectorized=True, rng=np.random.default_rng(seed))
    return np.asarray(res.confidence_interval.low), np.asarray(res.confidence_interval.high)


@dataclass
class LatentCurve:
    """One task's per-prompt values (L+1, n) and their intervals ``ci[metric] = (low, high)`` per layer."""

    task: str
    group: str
    n: int
    p_target: np.ndarray
    p_latent: np.ndarray
    entropy: np.ndarray
    energy: np.ndarray
    ci: dict[str, tuple[np.ndarray, np.ndarray]]
    top_ids: np.ndarray  # (L+1, n, 5) each prompt's top-5 tokens per layer
    top_probs: np.ndarray
    mean_probs: np.ndarray  # (L+1, V) the distribution averaged over prompts
    p_source: np.ndarray | None = None  # translation only: P of the tokens that start the query's source word

    def mean(self, metric: str) -> np.ndarray:
        return getattr(self, metric).mean(axis=1)


@dataclass
class LatentResult:
    """The curves of every task of one (source, target, latent) analysis."""

    source_lang: str
    target_lang: str
    latent_lang: str
    num_layers: int
    tasks: dict[str, LatentCurve]
    task: LatentTask
    dropped: dict[str, int]
    settings: dict
    final_check: float | None = None

    @property
    def layers(self) -> list[int]:
        return list(range(self.num_layers + 1))


def latent_language(model, tokenizer, triples: Sequence[WordTriple | tuple], source_lang: str, target_lang: str,
                    latent_lang: str = "eng", *, tasks: Sequence[str] = TASKS, lens=None, n_demos: int = 4,
                    min_pairs: int = 4, max_prompts: int | None = None, seed: int = 0, n_resamples: int = 1000,
                    confidence: float = 0.95, batch_size: int = 8, names: dict | None = None, max_length: int = 256,
                    drop_source_overlap: bool = False, show_progress: bool = False) -> LatentResult:
    """Build the prompts (:meth:`LatentTask.build`), run the lens over them in one capture pass and return the
    curves (:meth:`LatentTask.result`). ``lens``: ``None`` for the logit lens, or a :class:`TunedLens`."""
    task = LatentTask.build(tokenizer, triples, source_lang, target_lang, latent_lang, tasks=tasks, n_demos=n_demos,
                            min_pairs=min_pairs, max_prompts=max_prompts, seed=seed, names=names,
                            max_length=max_length, drop_source_overlap=drop_source_overlap)
    probe = task.probe(model, lens=lens)
    (res,) = run_probes(model, tokenize(tokenizer, task.texts(), max_length=max_length), [probe],
                        batch_size=batch_size, pad_id=_pad_id(tokenizer), show_progress=show_progress,
                        desc="latent language")
    return task.result(res, n_resamples=n_resamples, confidence=confidence, seed=seed)


def _series(curve: LatentCurve, metric: str) -> dict:
    lo, hi = curve.ci[metric]
    return {"mean": [float(x) for x in curve.mean(metric)], "low": [float(x) for x in lo],
            "high": [float(x) for x in hi]}


def latent_report(result: LatentResult, tokenizer=None) -> dict:
    """A JSON-serialisable summary: per task and per layer the mean P_target, P_latent, entropy (bits) and energy
    (and P_source for translation) with their bootstrap intervals, the layer where P_latent peaks (and its value),
    the layer where P_target peaks, the layers where P_latent exceeds P_target, the top-5 tokens of the mean
    distribution (strings when ``tokenizer`` is given), the word pairs used, what was dropped and the settings."""
    tasks = {}
    for name, c in result.tasks.items():
        pl, pt = c.mean("p_latent"), c.mean("p_target")
        above = [int(i) for i in np.flatnonzero(pl > pt)]
        tasks[name] = {
            "group": c.group, "n": c.n,
            "p_target": _series(c, "p_target"), "p_latent": _series(c, "p_latent"),
            "entropy_bits": _series(c, "entropy"), "energy": _series(c, "energy"),
            **({"p_source": _series(c, "p_source")} if c.p_source is not None else {}),
            "latent_peak_layer": int(np.argmax(pl)), "latent_peak": float(pl.max()),
            "target_peak_layer": int(np.argmax(pt)), "target_peak": float(pt.max()),
            "latent_above_target_layers": above,
            "top_tokens": _top_tokens(c.mean_probs, 5, tokenizer),
            "pairs": [{"source": p.source, "target": p.target, "latent": p.latent,
                       "target_tokens": len(p.target_ids), "latent_tokens": len(p.latent_ids)}
                      for p in result.task.prompts[name]],
        }
    return {
        "kind": "latent_language", "source_lang": result.source_lang, "target_lang": result.target_lang,
        "latent_lang": result.latent_lang, "num_layers": result.num_layers, "layers": result.layers,
        "layer_convention": "0 = input of the first decoder block (embeddings); l = output of block l",
        "final_check": result.final_check, "dropped": dict(result.dropped), "settings": result.settings,
        "example_prompt": next((ps[0].text for ps in result.task.prompts.values() if ps), None),
        "tasks": tasks,
    }
