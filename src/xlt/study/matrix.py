"""``xlt study matrix``: a transfer matrix from tiny monolingual byte-level LMs (MonoByte, Abonizio et al., COLING
2022, arXiv 2209.11035; seed-papers §2).

MonoByte pretrains one byte-level model per language under identical settings, so that how well a source language
transfers to a target can be compared across pairs with nothing else varying. Here, at toy scale:

- **Tokenizer**: UTF-8 bytes, id = byte + 3 (ByT5: 0 pad, 1 EOS, 2 unknown; no vocabulary to learn, nothing
  language-specific), :func:`encode` / :func:`decode` round-trip any text.
- **Pretraining**: one tiny LM (:mod:`xlt.study.lm`) per language on exactly ``pretrain_bytes`` of its train split
  (the verses, each followed by EOS, packed into rows of ``seq_len``, rows shuffled with the seed), same steps, same
  seed, same everything; plus a **control** (``control``): the same bytes of ``control_lang`` shuffled within each
  verse (the byte statistics of a language without its order; MonoByte's non-language baseline).
- **Fine-tuning**: each pretrained model, and a model from scratch, trained on each target's first
  ``finetune_bytes`` (a budget small enough for the start to matter), at ``finetune_lr``.
- **Scores** on each target's dev split (``eval_bytes``): bits per byte = summed next-byte cross-entropy / ln 2 /
  number of byte targets (the verse separators' cost included); the **transfer score** of (source, target) = the
  from-scratch model's bits/byte − the fine-tuned model's (higher: the source helped more); **zero-shot** = the
  pretrained model's bits/byte on the target without fine-tuning.

Outputs: ``metrics.json`` (the three matrices, settings, times), ``transfer_table.csv`` (one row per (source, target)
of different languages, the control left out:
task ``lm-bytes``, metric ``bits_per_byte`` of the fine-tuned model, direction lower, ``n_target`` = fine-tuning
bytes; the format ``xlt predict fit`` reads) and ``report.html`` (heatmaps).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from xlt.errors import XltError
from xlt.options import option, positive
from xlt.study.lm import TinyLMOptions, cross_entropy_sum, new_model, rows_from_ids, train_rows

PAD, EOS, UNK, OFFSET = 0, 1, 2, 3
VOCAB = 256 + OFFSET
CONTROL = "control"


def encode(text: str) -> list[int]:
    """UTF-8 bytes + 3."""
    return [b + OFFSET for b in text.encode("utf-8")]


def decode(ids) -> str:
    """The text of byte ids (special ids skipped); invalid UTF-8 is an error, not replaced."""
    return bytes(int(i) - OFFSET for i in ids if int(i) >= OFFSET).decode("utf-8")


def _two_or_more(v: list[str]) -> str | None:
    return None if len(v) >= 2 else "needs at least 2 languages"


@dataclass
class MatrixStudyOptions(TinyLMOptions):
    corpus: str = option("bible", "corpus with every language's text")
    langs: list[str] = option(["eng", "deu", "fra", "rus", "hin", "swh", "ind"], "languages: each a source and a target",
                              check=_two_or_more)
    control: bool = option(True, "also pretrain a non-language control (control_lang's bytes shuffled per verse)")
    control_lang: str = option("eng", "language whose shuffled bytes make the control")
    seq_len: int = option(128, "bytes per training row (EOS first)", check=positive)
    pretrain_bytes: int = option(600_000, "pretraining bytes per language (identical for all)", check=positive)
    finetune_bytes: int = option(32_768, "fine-tuning bytes of each target", check=positive)
    finetune_lr: float = option(1e-3, "peak learning rate of fine-tuning", check=positive)
    eval_bytes: int = option(16_384, "dev bytes per target for bits/byte", check=positive)
    seed: int = option(0, "seed of row orders, the control's shuffles and the models")


def _rows(texts: list[str], o: MatrixStudyOptions) -> np.ndarray:
    return rows_from_ids([encode(t) for t in texts], o.seq_len, EOS, EOS)


def _take(rows: np.ndarray, n_bytes: int, seq_len: int, what: str, lang: str) -> np.ndarray:
    need = math.ceil(n_bytes / (seq_len - 1))
    if len(rows) < need:
        have = len(rows) * (seq_len - 1)
        raise XltError(f"{lang} has {have:,} bytes of {what} text, fewer than the {n_bytes:,} asked",
                       f"lower --{what.replace(' ', '-')}-bytes to at most {have:,}, or give more text")
    return rows[:need]


def bits_per_byte(model, rows: np.ndarray) -> float:
    total, _ = cross_entropy_sum(model, rows)
    n_bytes = int((rows[:, 1:] >= OFFSET).sum())
    return total / math.log(2) / n_bytes


def _shuffled_within(texts: list[str], seed: int) -> list[list[int]]:
    rng = np.random.default_rng([seed, 13])
    return [list(rng.permutation(np.asarray(encode(t), dtype=np.int64))) for t in texts]


def run_matrix_study(out: str | Path, show_progress: bool = True, overwrite: bool = False, **options) -> dict:
    """Run the study (module docstring); write ``out/metrics.json``, ``out/transfer_table.csv`` and
    ``out/report.html`` through a temporary folder; return the metrics."""
    from tqdm.auto import tqdm

    from xlt.corpora import open_corpus
    from xlt.options import build
    from xlt.util import atomic_dir, write_json_atomic

    o = build(MatrixStudyOptions, options, "xlt study matrix")
    out = Path(out)
    if out.exists() and not overwrite:
        raise XltError(f"{out} already exists", "choose another --out or pass --overwrite")
    if len(set(o.langs)) != len(o.langs):
        raise XltError(f"--langs repeats a language: {','.join(o.langs)}", "name each language once")
    t0 = time.time()
    corpus = open_corpus(o.corpus)
    langs = [corpus.language(code).code for code in o.langs]
    ft_o = TinyLMOptions(**{**{k: getattr(o, k) for k in asdict(TinyLMOptions())}, "lr": o.finetune_lr})
    pre, ft, dev = {}, {}, {}
    for lang in langs:
        train = corpus.texts(lang, "train")
        order = np.random.default_rng([o.seed, 17]).permutation(len(train))
        rows = _rows([train[i] for i in order], o)
        # pretraining and fine-tuning rows come from disjoint ends of the shuffled train split
        pre[lang] = _take(rows, o.pretrain_bytes, o.seq_len, "pretrain", lang)
        ft[lang] = _take(rows[::-1], o.finetune_bytes, o.seq_len, "finetune", lang)
        dev[lang] = _take(_rows(corpus.texts(lang, "dev"), o), o.eval_bytes, o.seq_len, "eval", lang)
    sources = list(langs)
    if o.control:
        ctl = corpus.language(o.control_lang).code
        train = corpus.texts(ctl, "train")
        order = np.random.default_rng([o.seed, 17]).permutation(len(train))
        shuffled = _shuffled_within([train[i] for i in order], o.seed)
        pre[CONTROL] = _take(rows_from_ids(shuffled, o.seq_len, EOS, EOS), o.pretrain_bytes, o.seq_len, "pretrain",
                             f"{CONTROL} ({ctl})")
        sources.append(CONTROL)

    def fresh():
        return new_model(VOCAB, o, o.seed, o.seq_len, pad_token_id=PAD, bos_token_id=EOS, eos_token_id=EOS)

    times: dict[str, float] = {}
    zero_shot = np.full((len(sources), len(langs)), np.nan)
    finetuned = np.full((len(sources), len(langs)), np.nan)
    scratch = np.full(len(langs), np.nan)
    bar = tqdm(total=len(sources) * (1 + len(langs)) + len(langs), desc="study matrix", disable=not show_progress)
    ts = time.time()
    for j, tgt in enumerate(langs):
        model = fresh()
        train_rows(model, ft[tgt], ft_o, o.seed)
        scratch[j] = bits_per_byte(model, dev[tgt])
        bar.update(1)
    times["scratch"] = time.time() - ts
    ts = time.time()
    for i, src in enumerate(sources):
        base = fresh()
        train_rows(base, pre[src], o, o.seed, desc=f"pretrain {src}")
        bar.update(1)
        for j, tgt in enumerate(langs):
            zero_shot[i, j] = bits_per_byte(base, dev[tgt])
            model = copy.deepcopy(base)
            train_rows(model, ft[tgt], ft_o, o.seed)
            finetuned[i, j] = bits_per_byte(model, dev[tgt])
            bar.update(1)
    bar.close()
    times["pretrain_and_finetune"] = time.time() - ts
    transfer = scratch[None, :] - finetuned
    metrics = {
        "study": "matrix",
        "definition": "MonoByte-style: byte-level tiny LMs pretrained per language under identical settings, "
                      "fine-tuned on each target; bits/byte on the target's dev split; transfer score = "
                      "from-scratch bits/byte - fine-tuned bits/byte",
        "options": asdict(o), "sources": sources, "targets": langs,
        "finetuned_bits_per_byte": finetuned.tolist(), "zero_shot_bits_per_byte": zero_shot.tolist(),
        "scratch_bits_per_byte": scratch.tolist(), "transfer_score": transfer.tolist(),
        "seconds": {**{k: round(v, 1) for k, v in times.items()}, "total": round(time.time() - t0, 1)},
    }
    rows = [{"source": s, "target": t, "task": "lm-bytes", "metric": "bits_per_byte",
             "score": float(finetuned[i, j]), "direction": "lower", "n_target": o.finetune_bytes,
             "provenance": "xlt study matrix"}
            for i, s in enumerate(sources) if s != CONTROL for j, t in enumerate(langs) if s != t]
    from xlt.report.study import render_matrix_study

    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_json_atomic(tmp / "metrics.json", metrics)
        _write_table(tmp / "transfer_table.csv", rows)
        (tmp / "report.html").write_text(render_matrix_study(metrics), encoding="utf-8")
    return metrics


def _write_table(path: Path, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
