"""Language codes: ISO 639-1 and ISO 639-3, with macrolanguages resolved.

``resolve("sw")``, ``resolve("swa")`` and ``resolve("swh")`` all give the same
:class:`Language` (Swahili, ``swh``). Codes are validated against ISO 639-3 (via
``pycountry``), so a typo gets a clear error with suggestions.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache

from xlt.errors import XltError

# Macrolanguage (what ISO 639-1 codes point to) -> the individual language most texts are in.
MACRO_TO_INDIVIDUAL = {
    "swa": "swh",  # Swahili
    "ara": "arb",  # Arabic -> Standard Arabic
    "fas": "pes",  # Persian -> Iranian Persian
    "zho": "cmn",  # Chinese -> Mandarin
    "msa": "zsm",  # Malay
    "est": "ekk",  # Estonian
    "lav": "lvs",  # Latvian
    "nor": "nob",  # Norwegian -> Bokmål
    "uzb": "uzn",  # Uzbek
    "aze": "azj",  # Azerbaijani
    "kur": "kmr",  # Kurdish -> Kurmanji
    "mon": "khk",  # Mongolian
    "orm": "gaz",  # Oromo
    "sqi": "als",  # Albanian
    "yid": "ydd",  # Yiddish
    "fil": "tgl",  # Filipino is Tagalog in most corpora
}


#: languages written without spaces between words (ISO 639-3): "words" and per-word measures mean nothing there
UNSPACED = frozenset({"cmn", "jpn", "yue", "wuu", "tha", "lao", "khm", "mya", "bod"})


@dataclass(frozen=True)
class Language:
    code: str  # canonical ISO 639-3 code (individual language where one is standard)
    name: str
    alpha2: str | None = None

    def __str__(self) -> str:
        return self.code


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, tuple[str, str, str | None]], dict[str, str]]:
    import pycountry

    by3: dict[str, tuple[str, str, str | None]] = {}
    two_to_three: dict[str, str] = {}
    for lang in pycountry.languages:
        a3 = lang.alpha_3
        a2 = getattr(lang, "alpha_2", None)
        by3[a3] = (a3, lang.name, a2)
        if a2:
            two_to_three[a2] = a3
    return by3, two_to_three


def resolve(code: str) -> Language:
    """Turn an ISO 639-1/639-3 code (any case, ``sw``, ``swa``, ``swh``, ``sw-KE``) into a :class:`Language`."""
    if not isinstance(code, str) or not code.strip():
        raise XltError("empty language code", "pass an ISO 639-1 or 639-3 code such as 'sw' or 'swh'")
    raw = code.strip()
    key = raw.lower().replace("_", "-").split("-")[0]
    by3, two_to_three = _tables()
    a3 = two_to_three.get(key) if len(key) == 2 else (key if key in by3 else None)
    if a3 is None:
        hint = difflib.get_close_matches(key, list(two_to_three) + list(by3), n=4)
        raise XltError(
            f"unknown language code {raw!r}",
            "use an ISO 639-1 (e.g. 'sw') or ISO 639-3 (e.g. 'swh') code"
            + (f"; close matches: {', '.join(hint)}" if hint else ""),
        )
    a3 = MACRO_TO_INDIVIDUAL.get(a3, a3)
    _, name, _ = by3[a3]
    # the 639-1 code of the individual language, or of its macrolanguage
    a2 = by3[a3][2]
    if a2 is None:
        for macro, ind in MACRO_TO_INDIVIDUAL.items():
            if ind == a3:
                a2 = by3[macro][2]
                name = by3[macro][1]
                break
    name = re.sub(r"\s*\((macrolanguage|individual language)\)$", "", name)
    return Language(code=a3, name=name, alpha2=a2)
