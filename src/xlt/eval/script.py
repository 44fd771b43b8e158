"""Script identification: the dominant Unicode script of a text, and a script-based language identifier for the
off-target rate (``--lid script``) where py3langid has no model for the language.

A text's script is the script most of its letters belong to (from the first word of each letter's Unicode name:
``LATIN``, ``CYRILLIC``, ``DEVANAGARI``, ...; CJK ideographs count as ``HAN``; digits, punctuation and spaces are
ignored). It tells languages in different scripts apart (Swahili vs Hindi), never two languages in one script
(Chichewa vs English are both Latin): an off-target rate by script is a lower bound.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Callable

from xlt.errors import XltError
from xlt.languages import resolve

#: the usual script of languages not written in Latin (ISO 639-3); every other language is taken as Latin
SCRIPT_OF = {
    **dict.fromkeys(("rus", "ukr", "bel", "bul", "mkd", "srp", "kaz", "kir", "tgk", "khk", "tat", "bak"), "CYRILLIC"),
    **dict.fromkeys(("arb", "ary", "arz", "pes", "prs", "urd", "pnb", "uig", "ckb", "snd", "pus"), "ARABIC"),
    **dict.fromkeys(("hin", "mar", "npi", "nep", "san", "mai", "bho", "awa"), "DEVANAGARI"),
    **dict.fromkeys(("cmn", "yue", "wuu", "lzh"), "HAN"),
    **dict.fromkeys(("amh", "tir", "gez"), "ETHIOPIC"),
    "jpn": "HAN", "kor": "HANGUL", "ell": "GREEK", "heb": "HEBREW", "ydd": "HEBREW", "tha": "THAI", "kat": "GEORGIAN",
    "hye": "ARMENIAN", "ben": "BENGALI", "asm": "BENGALI", "tam": "TAMIL", "tel": "TELUGU", "guj": "GUJARATI",
    "kan": "KANNADA", "mal": "MALAYALAM", "pan": "GURMUKHI", "khm": "KHMER", "lao": "LAO", "mya": "MYANMAR",
    "sin": "SINHALA", "bod": "TIBETAN", "ori": "ORIYA", "div": "THAANA",
}
_ALIASES = {"CJK": "HAN", "HIRAGANA": "HAN", "KATAKANA": "HAN"}  # Japanese mixes kana and kanji


@lru_cache(maxsize=65536)
def char_script(ch: str) -> str | None:
    """The script of one letter (None for digits, punctuation, spaces, marks and unnamed characters)."""
    if not ch.isalpha():
        return None
    try:
        first = unicodedata.name(ch).split(" ", 1)[0]
    except ValueError:
        return None
    return _ALIASES.get(first, first)


def text_script(text: str) -> str:
    """The dominant script of ``text`` (ties: alphabetical), or ``"NONE"`` when it has no letter."""
    counts = Counter(s for s in map(char_script, text) if s)
    if not counts:
        return "NONE"
    top = max(counts.values())
    return min(s for s, c in counts.items() if c == top)


def language_script(lang: str) -> str:
    return SCRIPT_OF.get(resolve(lang).code, "LATIN")


def script_lid(lang: str) -> Callable[[str], str]:
    """An identifier for :func:`xlt.eval.offtarget.off_target_rate`: a text in ``lang``'s script gets ``lang``'s
    label, any other text ``script:NAME``."""
    target = resolve(lang)
    want = language_script(target.code)
    label = target.alpha2 or target.code

    def lid(text: str) -> str:
        s = text_script(text)
        return label if s == want else f"script:{s}"

    lid.__name__ = f"script({want})"
    return lid


def lid_for(name: str, lang: str) -> Callable[[str], str] | None:
    """``--lid``: ``py3langid`` (None: the default identifier) or ``script``."""
    if name == "py3langid":
        return None
    if name == "script":
        return script_lid(lang)
    raise XltError(f"unknown language identifier {name!r}", "use --lid py3langid or --lid script")
