"""Romanisation with ``uroman``: train and evaluate on Latin-script text so a non-Latin language can reuse a
Latin-script vocabulary. Results are cached by content hash (uroman is pure Python, ~20k characters/s)."""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from concurrent.futures import ProcessPoolExecutor

from xlt.corpora.base import Corpus, Document
from xlt.errors import XltError
from xlt.languages import Language
from xlt.util import cache_dir

_UROMAN = None


def _uroman():
    global _UROMAN
    if _UROMAN is None:
        try:
            import uroman
        except ImportError:
            raise XltError("--romanize needs the 'uroman' package", "pip install uroman") from None
        _UROMAN = uroman.Uroman()
    return _UROMAN


def _romanize_chunk(args: tuple[list[str], str | None]) -> list[str]:
    texts, lcode = args
    u = _uroman()
    return [u.romanize_string(t, lcode=lcode) for t in texts]


def non_latin_letters(text: str) -> tuple[int, int, str | None]:
    """(letters, letters not in Latin script, name of the first such letter's script)."""
    n = bad = 0
    first = None
    for ch in text:
        if unicodedata.category(ch).startswith("L"):
            n += 1
            name = unicodedata.name(ch, "")
            if not name.startswith("LATIN"):
                bad += 1
                first = first or (name.split(" ")[0] if name else f"U+{ord(ch):04X}")
    return n, bad, first


def romanize_texts(texts: list[str], lang: str | None = None, cache: bool = True, processes: int | None = None) -> list[str]:
    """Romanise ``texts`` (uroman, language-specific rules for ISO 639-3 ``lang``); one error if the script is unknown."""
    h = hashlib.sha256(f"uroman|{lang}".encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\n")
    path = cache_dir() / "romanized" / f"{h.hexdigest()[:24]}.json"
    if cache and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    processes = processes or (min(os.cpu_count() or 1, 4) if len(texts) > 4000 else 1)
    if processes > 1:
        size = (len(texts) + processes - 1) // processes
        chunks = [(texts[i: i + size], lang) for i in range(0, len(texts), size)]
        with ProcessPoolExecutor(processes) as pool:
            out = [t for part in pool.map(_romanize_chunk, chunks) for t in part]
    else:
        out = _romanize_chunk((texts, lang))
    letters, bad, script = non_latin_letters("".join(out[:2000]))
    if letters and bad / letters > 0.5:
        raise XltError(f"uroman does not know the {script or 'input'} script: {bad / letters:.0%} of the letters stay non-Latin "
                       "after romanisation", "train on the native script (drop --romanize)")
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
    return out


class RomanizedCorpus(Corpus):
    """A view of ``base`` whose ``lang`` documents are romanised (other languages untouched, same keys and splits)."""

    def __init__(self, base: Corpus, lang: Language):
        self.base, self.lang = base, lang
        self.name = f"{base.name} (romanised {lang.code})"
        self.split_rule = base.split_rule
        self._docs: list[Document] | None = None
        self._native_split: dict[str, str] = {}

    def languages(self) -> list[Language]:
        return self.base.languages()

    def _documents(self, lang: Language) -> list[Document]:
        docs = self.base._documents(lang)
        if lang != self.lang:
            return docs
        if self._docs is None:
            roman = romanize_texts([d.text for d in docs], lang.code)
            self._docs = [Document(d.key, " ".join(r.split())) for d, r in zip(docs, roman)]
            # a document keeps the split of its native-script text (hash splits would otherwise move it)
            self._native_split = {d.key: self.base.split_of(d) for d in docs}
        return [d for d in self._docs if d.text]

    def split_of(self, doc: Document) -> str:
        return self._native_split.get(doc.key) or self.base.split_of(doc)

    def describe(self) -> dict:
        return {**self.base.describe(), "name": self.name, "romanized": self.lang.code}
