"""Static word vectors: fastText trained on a corpus (cached by content hash) or loaded from ``.bin``/``.vec``.

Training defaults are small enough for a cache file well under 50 MB (``bucket=50_000``, dim 100) and
deterministic: fastText seeds its generators with a fixed value, and one thread (the default) makes the
result reproducible (multi-threaded training is not).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from xlt.errors import XltError
from xlt.util import cache_dir

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def word_tokenize(text: str) -> list[str]:
    """Words and punctuation marks (Unicode-aware; combining marks stay inside words)."""
    return _WORD.findall(text)


@dataclass(frozen=True)
class FastTextConfig:
    model: str = "cbow"
    dim: int = 100
    epoch: int = 5
    min_count: int = 5
    minn: int = 3
    maxn: int = 6
    neg: int = 10
    bucket: int = 50_000
    lr: float = 0.05
    threads: int = 1


class WordVectors:
    """A uniform view of word vectors: fastText models (with subwords) or plain ``.vec`` tables."""

    def __init__(self, ft=None, words: list[str] | None = None, matrix: np.ndarray | None = None, origin: str = ""):
        self.ft = ft
        self.origin = origin
        self._words = words
        self._vocab: set[str] | None = None
        if ft is not None:
            self.dim = ft.get_dimension()
            self._index = None
        else:
            self._words = words or []
            self.matrix = np.asarray(matrix, dtype=np.float32)
            self.dim = self.matrix.shape[1]
            self._index = {w: i for i, w in enumerate(self._words)}

    @property
    def words(self) -> list[str]:
        """The vocabulary (fastText: its words, read on first use)."""
        if self._words is None:
            self._words = self.ft.get_words(on_unicode_error="replace")
        return self._words

    @property
    def has_subwords(self) -> bool:
        return self.ft is not None

    def __contains__(self, word: str) -> bool:
        if self.ft is None:
            return word in self._index
        if self._vocab is None:  # one set instead of a call into fastText per lookup
            self._vocab = set(self.words)
        return word in self._vocab

    def vector(self, word: str) -> np.ndarray:
        """The word's vector; with fastText, built from character n-grams for unknown words (zeros if none)."""
        if self.ft is not None:
            return self.ft.get_word_vector(word)
        i = self._index.get(word)
        return self.matrix[i] if i is not None else np.zeros(self.dim, np.float32)

    def vectors(self, words: list[str]) -> np.ndarray:
        """One row per word (repeated words are looked up once)."""
        first: dict[str, int] = {}
        where = np.fromiter((first.setdefault(w, len(first)) for w in words), dtype=np.int64, count=len(words))
        unique = np.zeros((len(first), self.dim), np.float32)
        if self.ft is not None:  # fastText's getWordVector into one reused buffer: 2x its Python wrapper
            import fasttext_pybind

            buf = fasttext_pybind.Vector(self.dim)
            view, get = np.asarray(buf), self.ft.f.getWordVector
            for w, i in first.items():
                get(buf, w)
                unique[i] = view
        else:
            for w, i in first.items():
                unique[i] = self.vector(w)
        return unique[where]


def _fasttext():
    """The fasttext module, with its 'load_model does not return WordVectorModel' notice silenced."""
    try:
        import fasttext
        import fasttext.FastText as _ft
    except ImportError:
        raise XltError("word-vector methods need the 'fasttext' package", "pip install fasttext-wheel") from None
    _ft.eprint = lambda *args, **kwargs: None
    return fasttext


def _min_words(cfg: FastTextConfig) -> int:
    return 20 * cfg.min_count


def train_fasttext(lines: list[str], cfg: FastTextConfig = FastTextConfig(), cache: bool = True,
                   label: str = "text", pretokenized: bool = False) -> WordVectors:
    """Train fastText on ``lines`` (words found with :func:`word_tokenize` unless ``pretokenized``).

    The model is cached in ``$XLT_CACHE/fasttext/<hash>.bin`` keyed by the text and the settings, so a
    second run with the same inputs loads it instead of training.
    """
    fasttext = _fasttext()
    docs = [l if pretokenized else " ".join(word_tokenize(l)) for l in lines]
    docs = [d for d in docs if d.strip()]
    n_words = sum(len(d.split()) for d in docs)
    if n_words < _min_words(cfg):
        raise XltError(f"too little {label} to train fastText: {n_words} words",
                       f"give at least {_min_words(cfg):,} words (20 × min_count {cfg.min_count}); a useful model needs "
                       "tens of thousands")
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    for d in docs:
        h.update(d.encode("utf-8"))
        h.update(b"\n")
    path = cache_dir() / "fasttext" / f"{h.hexdigest()[:24]}.bin"
    if cache and path.is_file():
        return WordVectors(fasttext.load_model(str(path)), origin=f"cache:{path.name}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.txt"
        data.write_text("\n".join(docs) + "\n", encoding="utf-8")
        kwargs = dict(model=cfg.model, dim=cfg.dim, epoch=cfg.epoch, minCount=cfg.min_count, minn=cfg.minn,
                      maxn=cfg.maxn, neg=cfg.neg, bucket=cfg.bucket, lr=cfg.lr, thread=cfg.threads, verbose=0)
        try:
            ft = fasttext.train_unsupervised(str(data), **kwargs)
        except (RuntimeError, ValueError) as e:
            raise XltError(f"fastText could not train on the {label} ({e})",
                           f"give more text or lower min_count (now {cfg.min_count})") from None
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmpf = tempfile.mkstemp(dir=path.parent, suffix=".bin")
        os.close(fd)
        ft.save_model(tmpf)
        os.replace(tmpf, path)
    return WordVectors(ft, origin="trained")


def load_word_vectors(path: str | os.PathLike) -> WordVectors:
    """Load fastText ``.bin`` (with subwords) or text ``.vec`` (``n dim`` header, then ``word v1 … vdim``)."""
    path = Path(path)
    if not path.is_file():
        raise XltError(f"word-vector file {path} does not exist", "check the path")
    if path.suffix == ".bin":
        fasttext = _fasttext()
        try:
            return WordVectors(fasttext.load_model(str(path)), origin=str(path))
        except Exception as e:
            raise XltError(f"{path} is not a fastText .bin model ({e})", "give a model saved by fastText") from None
    words, rows = [], []
    with open(path, encoding="utf-8", errors="strict") as fh:
        first = fh.readline().split()
        dim = int(first[1]) if len(first) == 2 and all(x.isdigit() for x in first) else None
        if dim is None:
            fh.seek(0)
        for ln, line in enumerate(fh, 2):
            parts = line.rstrip("\n").rstrip().split(" ")
            if len(parts) < 2:
                continue
            dim = dim or len(parts) - 1
            if len(parts) - 1 != dim:
                raise XltError(f"{path} line {ln} has {len(parts) - 1} values, expected {dim}",
                               "every line must be `word v1 … vdim` with the header's dimension")
            words.append(parts[0])
            rows.append(np.asarray(parts[1:], dtype=np.float32))
    if not rows:
        raise XltError(f"{path} holds no vectors", "give a .vec file with `word v1 … vdim` lines")
    return WordVectors(words=words, matrix=np.stack(rows), origin=str(path))


def check_same_dim(a: WordVectors, b: WordVectors, what: str = "source and target word vectors") -> None:
    if a.dim != b.dim:
        raise XltError(f"the {what} have different dimensions ({a.dim} and {b.dim})",
                       "use vectors of one dimension for both languages (e.g. train both with the same --dim)")
