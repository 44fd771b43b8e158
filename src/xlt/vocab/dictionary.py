"""Bilingual word dictionaries for embedding transfer: FreeDict (dictd) files and induction from parallel text.

- :class:`Dictionary` — ``(source_word, target_word)`` pairs plus where they came from; filter to two
  vocabularies (WECHSEL-style casing), save/load as UTF-8 TSV, score against a reference dictionary.
- :func:`read_freedict` — one Debian FreeDict dictionary (``/usr/share/dictd/freedict-<pair>.index`` +
  ``.dict.dz``); :func:`freedict_dictionary` reads both directions (``eng-swh`` and ``swh-eng``) and merges.
- :func:`induce_from_parallel` — word translation pairs from aligned segments (Bible verses, ...) by
  co-occurrence association (Dice or PMI over binary segment × word matrices), mutual best matches only.

Induction is vectorised: the co-occurrence counts are one sparse product ``Xs.T @ Xt`` and the best match per
row and per column comes from one ``lexsort`` each; there is no Python loop over word pairs.
"""

from __future__ import annotations

import gzip
import re
import time
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Collection, Iterable, Iterator, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from xlt.errors import XltError

__all__ = [
    "Dictionary", "Associations", "DICTD_ROOT", "SCORES", "association_scores", "freedict_dictionary",
    "freedict_pairs", "induce_from_parallel", "induce_from_segments", "merge_dictionaries", "parse_dictd",
    "read_freedict", "tokenize_words",
]

#: where Debian's ``dict-freedict-*`` packages put their files
DICTD_ROOT = "/usr/share/dictd"
#: association scores understood by :func:`induce_from_parallel`
SCORES = ("dice", "pmi")


# ---------------------------------------------------------------------------------------------------------
# the Dictionary
# ---------------------------------------------------------------------------------------------------------
def _casings(word: str) -> list[str]:
    """``word`` as-is, lower-cased and title-cased (WECHSEL's order), without repeats."""
    out: list[str] = []
    for w in (word, word.lower(), word.title()):
        if w not in out:
            out.append(w)
    return out


def _as_lookup(vocab: Any) -> Collection[str]:
    """Something with fast ``in``: sets and mappings (a tokenizer's ``get_vocab()``) as they are, else a set."""
    if isinstance(vocab, (set, frozenset, Mapping)):
        return vocab
    if hasattr(vocab, "get_vocab"):  # a tokenizer
        return vocab.get_vocab()
    if isinstance(vocab, str):
        raise XltError("a vocabulary was given as a single string", "pass a set, list or dict of words (or a tokenizer)")
    return set(vocab)


@dataclass
class Dictionary:
    """Word translation pairs ``(source_word, target_word)`` in order, plus provenance.

    ``source`` says where the pairs came from (``"freedict:eng-swh"``, ``"induced:bible dice"``, ``"tsv:PATH"``);
    ``scores`` (optional, one per pair) holds association scores of induced pairs; ``meta`` holds the rest
    (counts, settings) and is JSON-serialisable.
    """

    pairs: list[tuple[str, str]]
    source: str = ""
    source_lang: str | None = None
    target_lang: str | None = None
    scores: list[float] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.pairs = [(str(s), str(t)) for s, t in self.pairs]
        if self.scores is not None:
            self.scores = [float(x) for x in self.scores]
            if len(self.scores) != len(self.pairs):
                raise ValueError(f"{len(self.scores)} scores for {len(self.pairs)} pairs")

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.pairs)

    def __contains__(self, pair: object) -> bool:
        return pair in set(self.pairs)

    def __repr__(self) -> str:
        head = ", ".join(f"{s}→{t}" for s, t in self.pairs[:3])
        more = ", …" if len(self.pairs) > 3 else ""
        return f"Dictionary({self.source or 'unnamed'}, {len(self)} pairs: {head}{more})"

    # -- views ----------------------------------------------------------------------------------------------
    def to_mapping(self) -> dict[str, list[str]]:
        """``{source_word: [target_word, ...]}`` in pair order."""
        out: dict[str, list[str]] = {}
        for s, t in self.pairs:
            out.setdefault(s, []).append(t)
        return out

    def _subset(self, keep: Sequence[int], **meta) -> "Dictionary":
        return Dictionary(
            [self.pairs[i] for i in keep], self.source, self.source_lang, self.target_lang,
            None if self.scores is None else [self.scores[i] for i in keep], {**self.meta, **meta},
        )

    def reversed(self) -> "Dictionary":
        """The same pairs read the other way: ``(target_word, source_word)``."""
        return Dictionary([(t, s) for s, t in self.pairs], f"{self.source} reversed" if self.source else "reversed",
                          self.target_lang, self.source_lang,
                          None if self.scores is None else list(self.scores), dict(self.meta))

    def head(self, n: int) -> "Dictionary":
        """The first ``n`` pairs (induced dictionaries are sorted best first)."""
        return self._subset(range(min(n, len(self))))

    # -- filtering ------------------------------------------------------------------------------------------
    def filter(self, source_vocab: Any, target_vocab: Any) -> "Dictionary":
        """Keep pairs whose words are in both vocabularies, trying each word as-is, lower-cased and title-cased
        (as WECHSEL does); the kept pair holds the first casing found in each vocabulary. Duplicates created by
        case folding are dropped. Vocabularies are sets, lists, dicts (``tokenizer.get_vocab()``) or tokenizers.
        An empty result is returned as an empty dictionary (check ``len``)."""
        sv, tv = _as_lookup(source_vocab), _as_lookup(target_vocab)
        pairs: list[tuple[str, str]] = []
        scores: list[float] = []
        seen: set[tuple[str, str]] = set()
        for i, (s, t) in enumerate(self.pairs):
            s2 = next((w for w in _casings(s) if w in sv), None)
            if s2 is None:
                continue
            t2 = next((w for w in _casings(t) if w in tv), None)
            if t2 is None or (s2, t2) in seen:
                continue
            seen.add((s2, t2))
            pairs.append((s2, t2))
            if self.scores is not None:
                scores.append(self.scores[i])
        return Dictionary(pairs, self.source, self.source_lang, self.target_lang,
                          scores if self.scores is not None else None,
                          {**self.meta, "filtered_from": len(self)})

    # -- files ----------------------------------------------------------------------------------------------
    def save_tsv(self, path: str | Path, with_scores: bool = False) -> Path:
        """Write ``source<TAB>target`` lines (UTF-8, ``\\n``); ``with_scores`` adds a third column."""
        if with_scores and self.scores is None:
            raise XltError("this dictionary has no scores to write", "call save_tsv(path) without with_scores=True")
        path = Path(path)
        lines = []
        for i, (s, t) in enumerate(self.pairs):
            for w in (s, t):
                if not w or any(c in w for c in "\t\n\r"):
                    raise XltError(f"pair {i + 1} ({s!r}, {t!r}) has an empty word or one with a tab or line break",
                                   "clean the words before saving (TSV cannot hold them)")
            lines.append(f"{s}\t{t}\t{self.scores[i]:.6g}" if with_scores else f"{s}\t{t}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path

    @classmethod
    def load_tsv(cls, path: str | Path, source: str | None = None, source_lang: str | None = None,
                 target_lang: str | None = None) -> "Dictionary":
        """Read ``source<TAB>target[<TAB>score]`` lines (UTF-8). Blank lines and ``#`` comments are skipped;
        lines without a tab may separate the two words by whitespace (MUSE style)."""
        path = Path(path)
        if not path.is_file():
            raise XltError(f"dictionary file {path} does not exist", "give the path of a TSV file with source<TAB>target lines")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise XltError(f"dictionary file {path} is not UTF-8 ({e.reason} at byte {e.start})",
                           "re-encode it as UTF-8") from None
        pairs: list[tuple[str, str]] = []
        scores: list[float] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t") if "\t" in line else line.split()
            parts = [p.strip() for p in parts]
            if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
                raise XltError(f"{path} line {n} is not 'source<TAB>target': {line[:80]!r}",
                               "write one pair per line, the two words separated by a tab")
            if len(parts) == 3:
                try:
                    scores.append(float(parts[2]))
                except ValueError:
                    raise XltError(f"{path} line {n}: third column {parts[2]!r} is not a number",
                                   "keep two columns (source, target) or add a numeric score as the third") from None
            pairs.append((parts[0], parts[1]))
        if scores and len(scores) != len(pairs):
            raise XltError(f"{path} has a score column on some lines only", "give every line a score, or none")
        return cls(pairs, source or f"tsv:{path}", source_lang, target_lang, scores or None, {"path": str(path)})

    # -- evaluation -----------------------------------------------------------------------------------------
    def precision_against(self, reference: "Dictionary") -> dict:
        """Precision of these pairs against ``reference`` (same direction), case-insensitive.

        Only pairs whose source word the reference covers are judged; a pair is correct when the reference
        lists that target word for that source word. Returns ``precision`` (correct / judged pairs; ``None``
        when nothing is judged), ``word_precision`` (judged source words with at least one correct target),
        the counts behind them, ``coverage`` (share of this dictionary's source words the reference covers) and
        ``reference_recall`` (share of the reference's source words translated correctly here).
        """
        ref: dict[str, set[str]] = {}
        for s, t in reference.pairs:
            ref.setdefault(s.lower(), set()).add(t.lower())
        judged = correct = 0
        words: dict[str, bool] = {}
        sources = set()
        for s, t in self.pairs:
            s, t = s.lower(), t.lower()
            sources.add(s)
            if s in ref:
                judged += 1
                ok = t in ref[s]
                correct += ok
                words[s] = words.get(s, False) or ok
        good_words = sum(words.values())
        return {
            "pairs": len(self.pairs),
            "judged_pairs": judged,
            "correct_pairs": correct,
            "precision": correct / judged if judged else None,
            "source_words": len(sources),
            "judged_source_words": len(words),
            "correct_source_words": good_words,
            "word_precision": good_words / len(words) if words else None,
            "coverage": len(words) / len(sources) if sources else 0.0,
            "reference_pairs": len(reference.pairs),
            "reference_source_words": len(ref),
            "reference_recall": good_words / len(ref) if ref else 0.0,
        }


def merge_dictionaries(*dicts: Dictionary, source: str | None = None) -> Dictionary:
    """Concatenate dictionaries (same direction), dropping repeated pairs; the first occurrence wins."""
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for d in dicts:
        for p in d.pairs:
            if p not in seen:
                seen.add(p)
                pairs.append(p)
    first = dicts[0] if dicts else Dictionary([])
    return Dictionary(pairs, source or "+".join(d.source for d in dicts), first.source_lang, first.target_lang,
                      None, {"merged": [d.source for d in dicts], "merged_sizes": [len(d) for d in dicts]})


# ---------------------------------------------------------------------------------------------------------
# FreeDict (dictd format)
# ---------------------------------------------------------------------------------------------------------
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
#: translation lines starting with these are notes, not translations
_SKIP_PREFIXES = ("Note", "Synonym", "See also", "Antonym", "Example", "\"", "<", "[", "{")
_PAIR_RE = re.compile(r"^[a-z]{2,3}-[a-z]{2,3}$")


def _b64(s: str) -> int:
    n = 0
    for ch in s:
        n = n * 64 + _B64[ch]
    return n


def _install_hint(pair: str) -> str:
    return (f"install the Debian package: apt-get install dict-freedict-{pair}  "
            f"(FreeDict is GPL: install it at run time, do not vendor it); or pass root= a folder with "
            f"freedict-{pair}.index and freedict-{pair}.dict.dz")


def parse_dictd(index_path: str | Path, dict_path: str | Path) -> list[tuple[str, str]]:
    """``(headword, entry text)`` for every index line of a dictd dictionary, in index order.

    ``dict_path`` may be gzip/dictzip (``.dict.dz``) or plain. ``00database*`` metadata entries are skipped;
    a headword listed twice gives two entries.
    """
    index_path, dict_path = Path(index_path), Path(dict_path)
    try:
        with open(dict_path, "rb") as fh:
            magic = fh.read(2)
        data = gzip.open(dict_path).read() if magic == b"\x1f\x8b" else dict_path.read_bytes()
    except (OSError, EOFError) as e:
        raise XltError(f"cannot read dictd data file {dict_path} ({e})", "reinstall the dictionary package") from None
    out = []
    for n, line in enumerate(index_path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            hw, off, ln = parts[0], _b64(parts[1]), _b64(parts[2])
        except (IndexError, KeyError):
            raise XltError(f"{index_path} line {n} is not 'headword<TAB>offset<TAB>length' in dictd base64: {line[:80]!r}",
                           "reinstall the dictionary package (the index is damaged)") from None
        if hw.startswith(("00database", "00-database")):
            continue
        if off + ln > len(data):
            raise XltError(f"{index_path} line {n} points past the end of {dict_path}",
                           "reinstall the dictionary package (index and data do not match)")
        out.append((hw, data[off:off + ln].decode("utf-8", "replace")))
    return out


_PLURAL_OF = re.compile(r"^[^{}:]*\{[^}]*\}[^:]*:\s*")  # "Plural of {kioo}: mirror" -> "mirror"
_BRACKETS = re.compile(r"\([^)]*\)|<[^>]*>|\[[^\]]*\]|\{[^}]*\}")
_SENSE_SPLIT = re.compile(r"[,;/]|(?:^|\s)\d+\.(?=\s|$)")
_EDGE_PUNCT = " \t.!?¡¿:\"'“”‘’«»…*"


def _translations(line: str, max_words: int) -> list[str]:
    """Clean one translation line of a FreeDict entry into terms (heuristic; see resources.md Appendix A)."""
    line = line.strip()
    if not line or line.startswith(_SKIP_PREFIXES):
        return []
    line = _PLURAL_OF.sub("", line)
    line = _BRACKETS.sub(" ", line)
    out = []
    for term in _SENSE_SPLIT.split(line):
        term = " ".join(term.split()).strip(_EDGE_PUNCT)
        if term and len(term.split()) <= max_words and any(c.isalpha() for c in term):
            out.append(term)
    return out


def freedict_pairs(entries: Iterable[tuple[str, str]], single_words: bool = True, max_words: int = 3) -> list[tuple[str, str]]:
    """Translation pairs from dictd entries: lines after the headword line are translations, cleaned
    heuristically (numbering, ``Plural of {x}:``, brackets and notes removed; split at ``, ; /``).
    ``single_words`` keeps only one-word headwords and translations; otherwise up to ``max_words`` words."""
    limit = 1 if single_words else max_words
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for hw, text in entries:
        hw = " ".join(hw.split())
        if not hw or len(hw.split()) > limit:
            continue
        for line in text.split("\n")[1:]:
            for t in _translations(line, limit):
                if (hw, t) not in seen:
                    seen.add((hw, t))
                    pairs.append((hw, t))
    return pairs


def _code_or_raw(code: str) -> str:
    from xlt.languages import resolve

    try:
        return resolve(code).code
    except XltError:
        return code


def read_freedict(pair: str, root: str | Path = DICTD_ROOT, single_words: bool = True, max_words: int = 3) -> Dictionary:
    """The FreeDict dictionary ``pair`` (e.g. ``"eng-swh"``) from ``root`` as a :class:`Dictionary`.

    Needs ``apt-get install dict-freedict-<pair>`` (Debian/Ubuntu); the error says so when the files are missing.
    """
    pair = pair.strip().lower()
    if not _PAIR_RE.match(pair):
        raise XltError(f"FreeDict pair {pair!r} is not of the form 'src-tgt'",
                       "give two FreeDict language codes, e.g. 'eng-swh' or 'swh-eng'")
    root = Path(root)
    index = root / f"freedict-{pair}.index"
    data = root / f"freedict-{pair}.dict.dz"
    if not data.is_file() and (root / f"freedict-{pair}.dict").is_file():
        data = root / f"freedict-{pair}.dict"
    missing = [p for p in (index, data) if not p.is_file()]
    if missing:
        raise XltError(f"the FreeDict {pair} dictionary is not installed: {missing[0]} not found", _install_hint(pair))
    entries = parse_dictd(index, data)
    pairs = freedict_pairs(entries, single_words=single_words, max_words=max_words)
    src, tgt = pair.split("-")
    return Dictionary(pairs, f"freedict:{pair}", _code_or_raw(src), _code_or_raw(tgt), None,
                      {"pair": pair, "root": str(root), "entries": len(entries),
                       "headwords": len({hw for hw, _ in entries}), "single_words": single_words})


def _freedict_codes(lang: str) -> list[str]:
    """FreeDict file codes that may stand for ``lang`` (its ISO 639-3 code, the macrolanguage code, as given)."""
    from xlt.languages import MACRO_TO_INDIVIDUAL

    raw = lang.strip().lower()
    code = _code_or_raw(raw)
    out = [code] + [m for m, ind in MACRO_TO_INDIVIDUAL.items() if ind == code] + [raw]
    return list(dict.fromkeys(c for c in out if re.fullmatch(r"[a-z]{2,3}", c)))


def freedict_dictionary(source_lang: str, target_lang: str, root: str | Path = DICTD_ROOT,
                        single_words: bool = True, directions: str = "both") -> Dictionary:
    """Source → target pairs from FreeDict in either direction, merged: ``freedict-<src>-<tgt>`` as it is and
    ``freedict-<tgt>-<src>`` with its pairs reversed (``directions`` = ``"both"``, ``"forward"`` or
    ``"reverse"``). Language codes may be ISO 639-1 or 639-3 (``sw``, ``swa``, ``swh``)."""
    if directions not in ("both", "forward", "reverse"):
        raise XltError(f"unknown directions {directions!r}", "use 'both', 'forward' or 'reverse'")
    root = Path(root)
    src_codes, tgt_codes = _freedict_codes(source_lang), _freedict_codes(target_lang)

    def find(a_codes, b_codes) -> str | None:
        for a in a_codes:
            for b in b_codes:
                if (root / f"freedict-{a}-{b}.index").is_file():
                    return f"{a}-{b}"
        return None

    parts: list[Dictionary] = []
    fwd = find(src_codes, tgt_codes) if directions in ("both", "forward") else None
    rev = find(tgt_codes, src_codes) if directions in ("both", "reverse") else None
    if fwd:
        parts.append(read_freedict(fwd, root, single_words))
    if rev:
        parts.append(read_freedict(rev, root, single_words).reversed())
    if not parts:
        s, t = src_codes[0], tgt_codes[0]
        wanted = {"both": [f"{s}-{t}", f"{t}-{s}"], "forward": [f"{s}-{t}"], "reverse": [f"{t}-{s}"]}[directions]
        raise XltError(
            f"no FreeDict dictionary between {s} and {t} in {root} (looked for "
            + ", ".join(f"freedict-{p}.index" for p in wanted) + ")",
            "install the Debian package(s): apt-get install " + " ".join(f"dict-freedict-{p}" for p in wanted)
            + " (either direction is enough; not every pair exists), or pass root= the folder holding them",
        )
    merged = merge_dictionaries(*parts, source="freedict:" + "+".join(filter(None, [fwd, rev])))
    merged.source_lang, merged.target_lang = _code_or_raw(source_lang), _code_or_raw(target_lang)
    merged.meta.update({"root": str(root), "single_words": single_words, "forward": fwd, "reverse": rev})
    return merged


# ---------------------------------------------------------------------------------------------------------
# induction from parallel text
# ---------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _word_pattern():
    """Runs of letters and combining marks (Devanagari vowel signs, diacritics), with inner apostrophes
    (``ng'ombe``, ``god's``). Uses the ``regex`` module (a transformers dependency) when present."""
    try:
        import regex

        return regex.compile(r"[\p{L}\p{M}]+(?:['’][\p{L}\p{M}]+)*")
    except ImportError:  # pragma: no cover - regex ships with transformers
        marks = "".join(
            re.escape(chr(c)) for c in range(0x110000) if unicodedata.category(chr(c)) in ("Mn", "Mc", "Me")
        )
        letter = rf"(?:[^\W\d_]|[{marks}])"
        return re.compile(rf"{letter}+(?:['’]{letter}+)*")


def tokenize_words(text: str, lower: bool = True) -> list[str]:
    """Words of ``text``: NFC-normalised, lower-cased, letters and combining marks only (digits and
    punctuation dropped), inner apostrophes kept and written as ``'``."""
    text = unicodedata.normalize("NFC", text)
    if lower:
        text = text.lower()
    return [w.replace("’", "'") for w in _word_pattern().findall(text)]


def _binary_matrix(docs: list[list[str]]) -> tuple[sp.csr_matrix, list[str], np.ndarray]:
    """Segment × word 0/1 matrix (CSR), the words by column, and their document frequencies."""
    vocab: dict[str, int] = {}
    indices: list[int] = []
    indptr = [0]
    for toks in docs:
        ids = {vocab.setdefault(w, len(vocab)) for w in toks}
        indices.extend(ids)
        indptr.append(len(indices))
    idx = np.asarray(indices, dtype=np.int32)
    mat = sp.csr_matrix((np.ones(len(idx), dtype=np.int32), idx, np.asarray(indptr, dtype=np.int64)),
                        shape=(len(docs), len(vocab)))
    df = np.bincount(idx, minlength=len(vocab)).astype(np.int64)
    return mat, list(vocab), df


@dataclass
class Associations:
    """Co-occurrence statistics of word pairs over aligned segments, in coordinate form.

    ``rows[k]``/``cols[k]`` index ``source_words``/``target_words``; ``counts[k]`` = c(s, t), the number of
    segments holding both; ``scores[k]`` its association score. Only pairs with c(s, t) ≥ ``min_count`` are kept.
    """

    source_words: list[str]
    target_words: list[str]
    source_counts: np.ndarray  # c(s): segments holding s
    target_counts: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    counts: np.ndarray
    scores: np.ndarray
    segments: int
    score: str
    min_count: int

    def __len__(self) -> int:
        return len(self.rows)

    def lookup(self, source_word: str, target_word: str) -> tuple[int, float] | None:
        """``(c(s, t), score)`` of one pair, or ``None`` when it is below ``min_count`` or unknown (for tests/debugging)."""
        try:
            i, j = self.source_words.index(source_word), self.target_words.index(target_word)
        except ValueError:
            return None
        hit = np.flatnonzero((self.rows == i) & (self.cols == j))
        return (int(self.counts[hit[0]]), float(self.scores[hit[0]])) if len(hit) else None

    def best(self, by: str = "source") -> np.ndarray:
        """Positions (into ``rows``/``cols``) of each source word's best target (``by="source"``) or each target
        word's best source (``by="target"``): highest score, then highest count, then lowest index."""
        key, other = (self.rows, self.cols) if by == "source" else (self.cols, self.rows)
        if len(key) == 0:
            return np.zeros(0, dtype=np.int64)
        order = np.lexsort((other, -self.counts, -self.scores, key))
        k = key[order]
        first = np.ones(len(k), dtype=bool)
        first[1:] = k[1:] != k[:-1]
        return order[first]

    def mutual_best(self) -> np.ndarray:
        """Positions of pairs where t is s's best and s is t's best."""
        return np.intersect1d(self.best("source"), self.best("target"), assume_unique=True)


def _check_args(min_count: int, score: str, max_pairs: int | None) -> None:
    if score not in SCORES:
        raise XltError(f"unknown association score {score!r}", f"use one of: {', '.join(SCORES)}")
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise XltError(f"min_count must be a whole number ≥ 1, got {min_count!r}", "pass e.g. min_count=5")
    if max_pairs is not None and (isinstance(max_pairs, bool) or not isinstance(max_pairs, (int, np.integer)) or max_pairs < 1):
        raise XltError(f"max_pairs must be a whole number ≥ 1 or None, got {max_pairs!r}", "pass e.g. max_pairs=5000, or None for all")


def association_scores(segments: Iterable[tuple[str, str]], min_count: int = 1, score: str = "dice") -> Associations:
    """Co-occurrence counts and association scores of all word pairs seen together in ≥ ``min_count`` segments.

    ``segments`` are ``(source_text, target_text)`` pairs. Each segment counts a word once (binary matrices).
    Dice = 2·c(s,t) / (c(s) + c(t)); PMI = ln(c(s,t)·N / (c(s)·c(t))), N = number of segments.
    """
    _check_args(min_count, score, None)
    src_docs, tgt_docs = [], []
    for a, b in segments:
        src_docs.append(tokenize_words(a))
        tgt_docs.append(tokenize_words(b))
    n = len(src_docs)
    xs, sw, cs = _binary_matrix(src_docs)
    xt, tw, ct = _binary_matrix(tgt_docs)
    # words seen in fewer than min_count segments cannot reach c(s,t) >= min_count: drop them before the product
    ks, kt = np.flatnonzero(cs >= min_count), np.flatnonzero(ct >= min_count)
    xs, xt = xs[:, ks], xt[:, kt]
    sw, tw = [sw[i] for i in ks], [tw[i] for i in kt]
    cs, ct = cs[ks], ct[kt]
    co = (xs.T.tocsr() @ xt).tocoo()
    keep = co.data >= min_count
    rows, cols = co.row[keep].astype(np.int64), co.col[keep].astype(np.int64)
    cnt = co.data[keep].astype(np.int64)
    if score == "dice":
        val = 2.0 * cnt / (cs[rows] + ct[cols])
    else:
        val = np.log(cnt.astype(np.float64) * n / (cs[rows].astype(np.float64) * ct[cols]))
    return Associations(sw, tw, cs, ct, rows, cols, cnt, val.astype(np.float64), n, score, int(min_count))


def induce_from_segments(segments: Iterable[tuple[str, str]], min_count: int = 5, score: str = "dice",
                         max_pairs: int | None = None, mutual: bool = True, source: str = "induced") -> Dictionary:
    """Word pairs from aligned ``(source_text, target_text)`` segments: the pairs that are each other's best
    association (``mutual=True``; otherwise every source word's best target), c(s,t) ≥ ``min_count``,
    best score first, at most ``max_pairs``. Words are lower-cased (:func:`tokenize_words`)."""
    _check_args(min_count, score, max_pairs)
    t0 = time.perf_counter()
    segments = list(segments)
    if not segments:
        raise XltError("there are no aligned segments to induce a dictionary from",
                       "give a parallel corpus whose two languages share document keys (e.g. --corpus bible)")
    assoc = association_scores(segments, min_count=min_count, score=score)
    pos = assoc.mutual_best() if mutual else assoc.best("source")
    if len(pos) == 0:
        raise XltError(
            f"no word pair co-occurs in at least {min_count} of the {assoc.segments} aligned segments",
            f"lower min_count (now {min_count}) or give more parallel text",
        )
    order = np.lexsort((assoc.cols[pos], assoc.rows[pos], -assoc.counts[pos], -assoc.scores[pos]))
    pos = pos[order]
    if max_pairs is not None:
        pos = pos[:max_pairs]
    pairs = [(assoc.source_words[i], assoc.target_words[j]) for i, j in zip(assoc.rows[pos].tolist(), assoc.cols[pos].tolist())]
    meta = {
        "score": score, "min_count": int(min_count), "mutual_best": mutual, "max_pairs": max_pairs,
        "segments": assoc.segments, "source_words": len(assoc.source_words), "target_words": len(assoc.target_words),
        "candidate_pairs": len(assoc), "pairs": len(pairs), "pair_counts": assoc.counts[pos].tolist(),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return Dictionary(pairs, source, None, None, assoc.scores[pos].tolist(), meta)


def induce_from_parallel(corpus, source_lang: str, target_lang: str, split: str | None = "train", min_count: int = 5,
                         score: str = "dice", max_pairs: int | None = None, mutual: bool = True) -> Dictionary:
    """Induce a ``source_lang`` → ``target_lang`` word dictionary from the aligned documents of ``corpus``
    (``corpus.parallel``), by co-occurrence association; see :func:`induce_from_segments`.

    On the 30k-verse English–Swahili Bible this takes a few seconds and gives a few thousand pairs.
    """
    from xlt.corpora import open_corpus

    _check_args(min_count, score, max_pairs)
    corpus = open_corpus(corpus)
    src, tgt = corpus.language(source_lang), corpus.language(target_lang)
    if src == tgt:
        raise XltError(f"source and target language are both {src.code}", "give two different languages")
    aligned = corpus.parallel(src, tgt, split)
    if not aligned:
        raise XltError(f"the {corpus.name} corpus has no aligned segments between {src.code} and {tgt.code}"
                       + (f" in the {split} split" if split else ""),
                       "use a parallel corpus (e.g. --corpus bible) or documents that share keys")
    d = induce_from_segments(((a, b) for _, a, b in aligned), min_count=min_count, score=score,
                             max_pairs=max_pairs, mutual=mutual, source=f"induced:{corpus.name} {score}")
    d.source_lang, d.target_lang = src.code, tgt.code
    d.meta.update({"corpus": corpus.name, "split": split})
    return d
