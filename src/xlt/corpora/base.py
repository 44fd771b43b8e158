"""The corpus interface: documents per language, deterministic splits, parallel access, counts."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator

from xlt.errors import XltError
from xlt.languages import Language, resolve
from xlt.util import stable_hash

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Document:
    """One unit of text: a verse, a line, a record. ``key`` identifies it across languages."""

    key: str
    text: str


@dataclass(frozen=True)
class TextStats:
    documents: int
    words: int
    characters: int
    bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


def count(texts: Iterable[str]) -> TextStats:
    """Documents, whitespace-separated words, Unicode characters and UTF-8 bytes of ``texts``."""
    docs = words = chars = nbytes = 0
    for t in texts:
        docs += 1
        words += len(t.split())
        chars += len(t)
        nbytes += len(t.encode("utf-8"))
    return TextStats(docs, words, chars, nbytes)


def hash_split(key: str, dev: float = 0.05, test: float = 0.05) -> str:
    """Assign ``key`` to train/dev/test by a stable hash (the same on every machine)."""
    u = (stable_hash(key) % 1_000_000) / 1_000_000
    if u < test:
        return "test"
    if u < test + dev:
        return "dev"
    return "train"


def check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise XltError(f"unknown split {split!r}", f"use one of {', '.join(SPLITS)} (or None for all)")


class Corpus(ABC):
    """A source of text in one or more languages.

    Subclasses provide :meth:`languages` and :meth:`_documents`; splitting, validation,
    parallel access and counting are shared.
    """

    name: str = "corpus"
    #: split rule, shown in reports
    split_rule: str = "stable hash of the document text (5% dev, 5% test)"

    @abstractmethod
    def languages(self) -> list[Language]:
        """Languages this corpus has text for."""

    @abstractmethod
    def _documents(self, lang: Language) -> list[Document]:
        """All documents of ``lang``, in corpus order, empty ones already dropped."""

    def split_of(self, doc: Document) -> str:
        return hash_split(doc.text)

    # -- shared behaviour -------------------------------------------------------------------
    def language(self, code: str | Language) -> Language:
        """Resolve ``code`` and check this corpus has it."""
        lang = code if isinstance(code, Language) else resolve(code)
        have = self.languages()
        if lang not in have:
            names = ", ".join(f"{l.alpha2 + '/' if l.alpha2 else ''}{l.code} ({l.name})" for l in have)
            raise XltError(
                f"language {lang.name} ({lang.code}) is not in the {self.name} corpus",
                f"choose one of: {names}; or give your own text with --corpus text:PATH",
            )
        return lang

    def documents(self, lang: str | Language, split: str | None = None) -> list[Document]:
        check_split(split)
        lang = self.language(lang)
        docs = self._documents(lang)
        if not docs:
            raise XltError(
                f"the {self.name} corpus has no text for {lang.name} ({lang.code}): it is empty or whitespace only",
                "give a corpus with text in that language",
            )
        if split is None:
            return docs
        return [d for d in docs if self.split_of(d) == split]

    def _iter_documents(self, lang: Language) -> Iterator[Document]:
        """``lang``'s documents one by one; corpora that can read lazily override this (files are read line by
        line), the others yield from :meth:`_documents`."""
        yield from self._documents(lang)

    def iter_documents(self, lang: str | Language, split: str | None = None) -> Iterator[Document]:
        """The documents of :meth:`documents`, read lazily: nothing past the last one yielded has been read
        (for files), so builders can write their first record before the rest of a large corpus is read."""
        check_split(split)
        lang = self.language(lang)
        seen = False
        for doc in self._iter_documents(lang):
            seen = True
            if split is None or self.split_of(doc) == split:
                yield doc
        if not seen:
            raise XltError(
                f"the {self.name} corpus has no text for {lang.name} ({lang.code}): it is empty or whitespace only",
                "give a corpus with text in that language",
            )

    def texts(self, lang: str | Language, split: str | None = None) -> list[str]:
        return [d.text for d in self.documents(lang, split)]

    def parallel(
        self, a: str | Language, b: str | Language, split: str | None = None
    ) -> list[tuple[str, str, str]]:
        """``(key, text_a, text_b)`` for every key present in both languages (in ``a``'s order)."""
        docs_b = {d.key: d.text for d in self.documents(b, split)}
        out = [(d.key, d.text, docs_b[d.key]) for d in self.documents(a, split) if d.key in docs_b]
        if not out:
            la, lb = self.language(a), self.language(b)
            raise XltError(
                f"the {self.name} corpus has no aligned documents between {la.code} and {lb.code}",
                "use a parallel corpus (e.g. --corpus bible) or documents that share keys",
            )
        return out

    def stats(self, lang: str | Language, split: str | None = None) -> TextStats:
        return count(self.texts(lang, split))

    def describe(self) -> dict:
        return {"name": self.name, "split_rule": self.split_rule}
