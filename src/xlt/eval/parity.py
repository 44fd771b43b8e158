"""Parity across languages (MultiLoKo, Hupkes & Bogoychev 2025) and its answer normalisation.

Over one metric's per-language values: ``average``, ``min``, ``max``, ``gap = max − min``, ``2·SE`` of the mean
across languages; against a reference language (English): ``relative gap`` = score_ref − score_x and ``transfer
ratio`` = score_x / score_ref per language. For lower-is-better metrics the same definitions hold (the gap is still
max − min, the worst language is then ``max``).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from xlt.errors import XltError
from xlt.eval.scores import mean_stderr


def parity(values: dict[str, float], ref: str | None = "eng") -> dict:
    """Parity summary of ``{lang: value}`` (see the module docstring); ``ref=None`` skips the reference terms."""
    if len(values) < 2:
        raise XltError(f"parity needs at least two languages, got {len(values)} ({', '.join(values)})",
                       "evaluate more languages (--langs)")
    vals = list(values.values())
    avg, se = mean_stderr(vals)
    lo, hi = min(values, key=values.get), max(values, key=values.get)
    out = {"average": avg, "min": values[lo], "min_lang": lo, "max": values[hi], "max_lang": hi,
           "gap": values[hi] - values[lo], "two_se": 2 * se, "n_langs": len(values)}
    if ref is not None:
        if ref not in values:
            raise XltError(f"the gap to {ref} needs {ref} among the languages ({', '.join(values)})",
                           f"add {ref} to --langs, or set parity_ref to another language or 'none'")
        r = values[ref]
        out["ref"] = ref
        out["relative_gap"] = {k: r - v for k, v in values.items() if k != ref}
        out["transfer_ratio"] = {k: v / r for k, v in values.items() if k != ref} if r else {}  # undefined at 0
    return out


# -- answer normalisation and per-answer scores (MultiLoKo's eval.py rules) -----------------------------------------
ARTICLES = {
    "en": ["a", "an", "the"], "de": ["der", "die", "das", "den", "dem", "des"], "nl": ["de", "het"],
    "fr": ["le", "la", "les", "l'"], "it": ["il", "lo", "la", "i", "gli", "le", "l'"],
    "es": ["el", "la", "los", "las"], "pt": ["o", "a", "os", "as"], "ro": [], "tl": ["ang", "mga"],
}
PREFIX_ARTICLES = {"ar": "ال", "he": "ה"}


def _strip_punct(text: str) -> str:
    return "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)


def normalize_answer(text: str, lang: str = "en") -> str:
    """Lower-case, punctuation removed (every Unicode P category, ASCII and CJK alike), an "answer is" preamble and
    the language's articles dropped, whitespace collapsed: "The Answer." → "answer"."""
    from xlt.languages import resolve

    code = resolve(lang).alpha2 or lang
    t = text.lower()
    t = re.sub(r"^.*?\banswer is\b", " ", t)
    if code == "ja":
        t = re.sub(r"です\s*$", "", t)
    t = _strip_punct(t.replace("'", "' ") if code in ("fr", "it") else t)
    words = t.split()
    arts = set(ARTICLES.get(code, []))
    words = [w for w in words if w not in arts and w.rstrip("'") + "'" not in arts]
    pre = PREFIX_ARTICLES.get(code)
    if pre:
        words = [w[len(pre):] if w.startswith(pre) and len(w) - len(pre) >= 2 else w for w in words]
    return " ".join(words)


def exact_match(prediction: str, target: str, lang: str = "en") -> float:
    return float(normalize_answer(prediction, lang) == normalize_answer(target, lang))


def token_f1(prediction: str, target: str, lang: str = "en") -> float:
    p, t = normalize_answer(prediction, lang).split(), normalize_answer(target, lang).split()
    if not p and not t:
        return 1.0
    common = sum((Counter(p) & Counter(t)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(t)
    return 2 * prec * rec / (prec + rec)


def best_score(fn, predictions: list[str] | str, targets: list[str] | str, lang: str = "en") -> float:
    """The best pairing over all prediction variants × target variants (an empty prediction scores as "")."""
    preds = [predictions] if isinstance(predictions, str) else (list(predictions) or [""])
    tgts = [targets] if isinstance(targets, str) else list(targets)
    return max(fn(p, t, lang) for p in preds for t in tgts)


def paired_effect(a: dict[str, float], b: dict[str, float]) -> dict:
    """Mean over the languages both tables have of ``a[lang] − b[lang]``, with 2·SE across languages and the
    per-language differences: MultiLoKo's mother-tongue effect (a = asked in the local language, b = the same
    questions asked in English) and locality effect (a = locally sourced, b = English-sourced and translated)."""
    langs = [k for k in a if k in b]
    if not langs:
        raise XltError("the two tables share no language", "give scores of the same languages in both settings")
    diffs = {k: a[k] - b[k] for k in langs}
    mean, se = mean_stderr(list(diffs.values()))
    return {"effect": mean, "two_se": 2 * se, "n_langs": len(langs), "per_lang": diffs}
