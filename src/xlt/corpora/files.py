"""Corpora from local files: plain text (one document per line), JSONL, and local HF ``datasets``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from xlt.corpora.base import Corpus, Document
from xlt.errors import XltError
from xlt.languages import Language, resolve


def read_utf8(path: str | Path) -> str:
    """Read ``path`` as UTF-8, with one clear error for a missing or non-UTF-8 file."""
    path = Path(path)
    if not path.is_file():
        raise XltError(f"corpus file {path} does not exist", "check the path given to --corpus")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise XltError(
            f"corpus file {path} is not UTF-8: byte 0x{data[e.start]:02x} at line {line} (offset {e.start}) cannot be decoded",
            f"convert it, e.g. `iconv -f LATIN1 -t UTF-8 {path} > {path.stem}.utf8{path.suffix}`",
        ) from None


def utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 file, read lazily, with :func:`read_utf8`'s errors (missing file; the byte,
    line and offset that is not UTF-8)."""
    if not Path(path).is_file():
        read_utf8(path)
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh, 1):
            try:
                yield i, raw.decode("utf-8")
            except UnicodeDecodeError:
                read_utf8(path)


class _MonoOrTagged(Corpus):
    """Shared logic: documents carry a language; untagged documents belong to ``lang``."""

    def __init__(self, lang: str | Language | None):
        self.default_lang = None if lang is None else (lang if isinstance(lang, Language) else resolve(lang))
        self._docs: dict[Language, list[Document]] | None = None
        #: True when the records carry their own keys (ids): then a document and its translation, which share the
        #: key, are split together (by a hash of the key); otherwise by a hash of the text
        self.keyed = False

    split_rule = ("stable hash of the record id when records have ids (a text and its translation share the split), "
                  "else of the document text (5% dev, 5% test)")

    def split_of(self, doc: Document) -> str:
        from xlt.corpora.base import hash_split

        return hash_split(f"key:{doc.key}") if self.keyed else hash_split(doc.text)

    def _records(self) -> Iterator[tuple[Language, Document, bool]]:
        """``(language, document, whether the record has its own key)`` for every non-empty record, in order,
        read lazily (JSONL and HF datasets; text files override :meth:`_load` instead)."""
        raise NotImplementedError

    def _empty_error(self) -> XltError:
        return XltError("the corpus has no text", "give a corpus with text")

    def _check_path(self) -> None:
        """Raise the one clear error for a missing input before streaming starts."""

    def _load(self) -> dict[Language, list[Document]]:
        """Read every document, grouped by language."""
        self._check_path()
        out: dict[Language, list[Document]] = {}
        for lang, doc, keyed in self._records():
            self.keyed = self.keyed or keyed
            out.setdefault(lang, []).append(doc)
        if not out:
            raise self._empty_error()
        return out

    def _all(self) -> dict[Language, list[Document]]:
        if self._docs is None:
            self._docs = self._load()
        return self._docs

    def languages(self) -> list[Language]:
        """The languages, in order of first appearance; without loading the documents (one streaming pass that
        also learns whether records carry keys)."""
        if self._docs is not None:
            return list(self._docs)
        if getattr(self, "_langs", None) is None:
            self._check_path()
            langs: dict[Language, None] = {}
            keyed = False
            for lang, _, k in self._records():
                langs[lang] = None
                keyed = keyed or k
            if not langs:
                raise self._empty_error()
            self._langs, self.keyed = list(langs), keyed
        return list(self._langs)

    def _iter_documents(self, lang: Language) -> Iterator[Document]:
        """``lang``'s documents streamed from the file (or from memory once loaded)."""
        if self._docs is not None:
            yield from self._docs.get(lang, [])
            return
        self.languages()  # learns whether records are keyed before the first split is computed
        for l, doc, _ in self._records():
            if l == lang:
                yield doc

    def _documents(self, lang: Language) -> list[Document]:
        return self._all().get(lang, [])

    def _lang_of(self, value: object, where: str) -> Language:
        if value is None or value == "":
            if self.default_lang is None:
                raise XltError(f"{where} has no language", "tag each record with a language field or pass the corpus language")
            return self.default_lang
        return resolve(str(value))


class TextCorpus(_MonoOrTagged):
    """A UTF-8 text file in one language; each non-empty line is a document."""

    name = "text"

    def __init__(self, path: str | Path, lang: str | Language | None = None):
        super().__init__(lang)
        self.path = Path(path)
        self.name = f"text:{self.path.name}"

    def _load(self) -> dict[Language, list[Document]]:
        text = read_utf8(self.path)
        lines = [" ".join(l.split()) for l in text.splitlines()]
        docs = [Document(f"{i + 1}", l) for i, l in enumerate(lines) if l]
        if not docs:
            raise XltError(f"corpus file {self.path} is empty or whitespace only", "give a file with text, one document per line")
        lang = self._lang_of(None, f"text file {self.path}")
        return {lang: docs}

    def languages(self) -> list[Language]:
        if self._docs is None:  # known without reading the file
            return [self._lang_of(None, f"text file {self.path}")]
        return super().languages()

    def _iter_documents(self, lang: Language) -> Iterator[Document]:
        """Line by line from the file: a document is yielded before the next line is read."""
        if self._docs is not None:
            yield from self._documents(lang)
            return
        for i, line in utf8_lines(self.path):
            text = " ".join(line.split())
            if text:
                yield Document(f"{i}", text)


class JsonlCorpus(_MonoOrTagged):
    """JSON lines: ``{"text": ..., "lang": ..., "id": ...}``; field names configurable.

    Records sharing an ``id`` in two languages are parallel.
    """

    def __init__(self, path: str | Path, lang: str | Language | None = None, text_field: str = "text",
                 lang_field: str = "lang", key_field: str = "id"):
        super().__init__(lang)
        self.path = Path(path)
        self.name = f"jsonl:{self.path.name}"
        self.text_field, self.lang_field, self.key_field = text_field, lang_field, key_field

    def _records(self) -> Iterator[tuple[Language, Document, bool]]:
        """``(language, document, has its own key)`` per non-empty record, line by line."""
        for i, line in utf8_lines(self.path):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise XltError(f"{self.path} line {i} is not valid JSON ({e.msg})", "fix or remove that line") from None
            if not isinstance(rec, dict) or self.text_field not in rec:
                raise XltError(
                    f"{self.path} line {i} has no field {self.text_field!r}",
                    f"name the text field with jsonl:{self.path}#FIELD (fields here: {sorted(rec) if isinstance(rec, dict) else 'none'})",
                )
            text = " ".join(str(rec[self.text_field]).split())
            if text:
                lang = self._lang_of(rec.get(self.lang_field), f"{self.path} line {i}")
                yield lang, Document(str(rec.get(self.key_field, i)), text), self.key_field in rec

    def _check_path(self) -> None:
        if not self.path.is_file():
            read_utf8(self.path)  # the one clear error for a missing file

    def _empty_error(self) -> XltError:
        return XltError(f"corpus file {self.path} has no non-empty {self.text_field!r} values", "give a file with text")


class HFDatasetCorpus(_MonoOrTagged):
    """A local HF ``datasets`` folder (``save_to_disk``) or local data files; never the hub."""

    def __init__(self, path: str | Path, lang: str | Language | None = None, text_field: str = "text",
                 lang_field: str = "lang", key_field: str = "id", split: str = "train"):
        super().__init__(lang)
        self.path = Path(path)
        self.name = f"hf:{self.path.name}"
        self.text_field, self.lang_field, self.key_field, self.hf_split = text_field, lang_field, key_field, split

    def _records(self) -> Iterator[tuple[Language, Document, bool]]:
        ds = self._dataset()
        has_lang = self.lang_field in ds.column_names
        has_key = self.key_field in ds.column_names
        for i, rec in enumerate(ds):
            text = " ".join(str(rec[self.text_field] or "").split())
            if text:
                lang = self._lang_of(rec[self.lang_field] if has_lang else None, f"{self.path} row {i}")
                yield lang, Document(str(rec[self.key_field]) if has_key else str(i), text), has_key

    def _check_path(self) -> None:
        if not self.path.exists():
            raise XltError(f"dataset folder {self.path} does not exist", "check the path given to --corpus hf:PATH")

    def _empty_error(self) -> XltError:
        return XltError(f"dataset {self.path} has no non-empty {self.text_field!r} values", "give a dataset with text")

    def _dataset(self):
        try:
            import datasets
        except ImportError:
            raise XltError("HF dataset corpora need the 'datasets' package", "pip install 'xlt[hf]'") from None
        self._check_path()
        try:
            ds = datasets.load_from_disk(str(self.path))
        except Exception as e:  # datasets raises many types for a wrong folder
            raise XltError(f"{self.path} is not a dataset saved with save_to_disk ({type(e).__name__})",
                           "save it with Dataset.save_to_disk(PATH), or use text:/jsonl: corpora") from None
        if isinstance(ds, datasets.DatasetDict):
            if self.hf_split not in ds:
                raise XltError(f"dataset {self.path} has no split {self.hf_split!r}", f"choose one of {list(ds)}")
            ds = ds[self.hf_split]
        if self.text_field not in ds.column_names:
            raise XltError(f"dataset {self.path} has no column {self.text_field!r}",
                           f"name the text column with hf:{self.path}#COLUMN (columns: {ds.column_names})")
        return ds
