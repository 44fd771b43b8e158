"""``xlt study clone``: language imbalance with cloned languages (Schäfer, Ravfogel, Hofmann, Pimentel, Schlag 2024,
arXiv 2404.07982; seed-papers §1).

One corpus in one language is rendered in ``k`` languages that differ only in their token ids
(:func:`xlt.data.builders.clone.clone_map`: row 0 the original, every clone a disjoint copy of the cloned ids,
special tokens — padding, BOS, EOS — never remapped). A tiny LM (:mod:`xlt.study.lm`) is trained from scratch under
each *setting* with the same token budget, and its perplexity is measured per language on the same held-out text
rendered in every language.

- **Data.** A byte-level BPE of ``vocab_size`` trained on the language's train split; the documents, each followed
  by EOS, packed into rows of ``seq_len`` (BOS + ``seq_len − 1`` tokens), shuffled once with the seed (repeated,
  reshuffled, when the budget exceeds one pass). Every setting reads the *same* rows in the same order: only their
  language differs. Held-out rows: the first ``eval_rows`` rows of the dev split, in every language.
- **Sampling** (the paper's per-sequence sampling): row ``i`` of ``n`` is rendered in a clone when ``u_i < p``, the
  clone ``1 + ⌊v_i·(k−1)⌋`` — ``u, v`` uniform, drawn once from the seed and shared by all settings (common random
  numbers: two settings differ only where their thresholds do). ``p`` is ``p_clone``, or for a schedule ``a_b_c``
  the value of the equal stage that ``i/n`` falls in (the paper's ``LanguageScheduler``; the rows are consumed in
  order, so the schedule is a curriculum). Expected shares: ``1 − p`` original, ``p/(k−1)`` each clone.
- **Token budget**: ``⌊token_budget / seq_len⌋`` rows in every setting (tokens counted as ``seq_len`` per row).
- **Monolingual runs** on the original language alone with ``mono_fractions`` of the budget (default ⅛, ¼, ½, 1)
  give the data-scaling law ``1/ppl = −a·x^(−b) + c`` (``x`` = tokens / budget; :mod:`xlt.predict.scaling`'s
  ``data`` law); per setting and language, the **MLTE** (monolingual token equivalent) is the ``x`` at which the law
  reaches that language's perplexity, times the budget, and **TEff** = MLTE / tokens the language actually saw
  (> 1: it profited from the other languages). A perplexity beyond the law's range has no MLTE (NaN, with why).
- **Symmetry check**: at ``p = 0.5`` with ``k = 2`` the two languages should have the same perplexity (paper:
  26.13 vs 26.14); the relative difference is reported and checked against ``symmetry_tolerance``.

The paper's crossover (90/10 better than 50/50 on both languages) needs scale; it is reported, not asserted.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xlt.errors import XltError
from xlt.options import density, option, positive
from xlt.study.lm import TinyLMOptions, new_model, perplexity, rows_from_ids, train_rows


def _probabilities(values: list[float]) -> str | None:
    bad = [v for v in values if not 0 <= v <= 1]
    return f"p_clone values must lie in [0, 1], got {bad}" if bad else None


def _fractions(values: list[float]) -> str | None:
    if len(values) < 3:
        return "needs at least 3 fractions (the data law has 3 parameters)"
    bad = [v for v in values if not 0 < v <= 1]
    return f"fractions must lie in (0, 1], got {bad}" if bad else None


def _k(v: int) -> str | None:
    return None if v >= 2 else f"must be ≥ 2 (the original plus at least one clone), got {v}"


@dataclass
class CloneStudyOptions(TinyLMOptions):
    lr: float = option(1e-2, "peak learning rate (AdamW; at 3e-3 the 50/50 languages ended 2.1 % apart, at 1e-2 "
                             "1.75 %, on the English Bible defaults)")
    corpus: str = option("bible", "corpus with the language's text: bible, text:PATH, jsonl:PATH")
    lang: str = option("eng", "the language that is cloned")
    vocab_size: int = option(2000, "BPE vocabulary of the original language", check=positive)
    k: int = option(2, "languages: the original plus k − 1 clones", check=_k)
    frac_clone: float = option(1.0, "share of the non-special vocabulary that is cloned (the rest is shared)",
                               check=density)
    p_clone: list[float] = option([0.5, 0.9], "settings: probability that a row is in a clone", check=_probabilities)
    schedule: list[str] = option(["0.1_0.9"], "settings: p_clone per equal stage of the data, e.g. 0.1_0.9")
    token_budget: int = option(1_000_000, "training tokens of every setting", check=positive)
    seq_len: int = option(128, "tokens per training row", check=positive)
    mono_fractions: list[float] = option([0.125, 0.25, 0.5, 1.0], "monolingual runs at these shares of the budget",
                                         check=_fractions)
    eval_rows: int = option(128, "held-out rows (dev split) per language", check=positive)
    symmetry_tolerance: float = option(0.02, "p = 0.5, k = 2: largest relative ppl difference that passes")
    seed: int = option(0, "seed of the tokenizer's data order, the row order, the sampling and the models")


@dataclass
class Setting:
    name: str
    p: float | None = None
    schedule: list[float] | None = None
    fraction: float = 1.0  # share of the budget (monolingual runs)
    mono: bool = False
    results: dict[str, Any] = field(default_factory=dict)


def _settings(o: CloneStudyOptions) -> list[Setting]:
    from xlt.data.builders.clone import parse_schedule

    mono = [Setting(f"mono {f:g}", p=0.0, fraction=f, mono=True) for f in sorted(set(o.mono_fractions))]
    if not any(s.fraction == 1.0 for s in mono):
        mono.append(Setting("mono 1", p=0.0, fraction=1.0, mono=True))
    mixed = [Setting(f"p={p:g}", p=p) for p in o.p_clone]
    mixed += [Setting(f"schedule {s}", schedule=parse_schedule(s)) for s in o.schedule]
    return mono + mixed


def languages_of_rows(n: int, k: int, setting: Setting, seed: int) -> np.ndarray:
    """The language (0 = original, 1..k−1 = clones) of each of ``n`` rows (module docstring: common random numbers)."""
    from xlt.data.builders.clone import sample_copies, schedule_p

    rng = np.random.default_rng([seed, 7])
    u, v = rng.random(n), rng.random(n)
    if setting.schedule is not None:
        p = np.array([schedule_p(setting.schedule, i / n) for i in range(n)])
    else:
        p = np.full(n, float(setting.p or 0.0))
    return sample_copies(u, v, p, k)


def training_rows(content: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` rows of ``content`` in a seeded order (each pass through it reshuffled)."""
    out, epoch = [], 0
    while sum(len(x) for x in out) < n:
        out.append(content[np.random.default_rng([seed, 11, epoch]).permutation(len(content))])
        epoch += 1
    return np.concatenate(out)[:n] if out else content[:0]


def run_clone_study(out: str | Path, show_progress: bool = True, overwrite: bool = False,
                    **options) -> dict:
    """Run the study (module docstring) and write ``out/metrics.json`` and ``out/report.html``; returns the
    metrics. Written to a temporary folder beside ``out`` and renamed at the end."""
    from xlt.options import build
    from xlt.util import atomic_dir, write_json_atomic

    o = build(CloneStudyOptions, options, "xlt study clone")
    out = Path(out)
    if out.exists() and not overwrite:
        raise XltError(f"{out} already exists", "choose another --out or pass --overwrite")
    t0 = time.time()
    settings = _settings(o)
    tok, content, dev, table = _prepare(o)
    n_rows = o.token_budget // o.seq_len
    if n_rows < o.batch_size:
        raise XltError(f"a token budget of {o.token_budget} is fewer than one batch of {o.batch_size} rows of "
                       f"{o.seq_len} tokens", "give a larger --token-budget")
    order = training_rows(content, n_rows, o.seed)
    vocab = int(table.max()) + 1
    dev_rows = {c: table[c][dev] for c in range(o.k)}
    curves: dict[str, list[float]] = {}
    for s in settings:
        n = max(o.batch_size, int(round(s.fraction * n_rows)))
        rows = order[:n]
        langs = languages_of_rows(n, o.k, s, o.seed)
        rendered = table[langs[:, None], rows]
        model = new_model(vocab, o, o.seed, o.seq_len, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id)
        ts = time.time()
        curves[s.name] = train_rows(model, rendered, o, o.seed, desc=s.name, show_progress=show_progress)
        ppl = {c: perplexity(model, dev_rows[c]) for c in (range(1) if s.mono else range(o.k))}
        counts = np.bincount(langs, minlength=o.k)
        s.results = {"rows": n, "tokens": n * o.seq_len, "seconds": round(time.time() - ts, 2),
                     "tokens_per_language": [int(c) * o.seq_len for c in counts],
                     "share_per_language": [float(c) / n for c in counts],
                     "ppl": {str(c): v for c, v in ppl.items()},
                     "final_train_loss": curves[s.name][-1]}
    fit, law = _fit_law(settings, o)
    for s in settings:
        _add_teff(s, fit, o)
    metrics = {
        "study": "clone",
        "definition": "Schäfer et al. 2024 cloned languages; ppl = exp(mean next-token cross-entropy) on the dev "
                      "split rendered in each language; MLTE from the monolingual data law 1/ppl = -a·x^(-b) + c "
                      "(x = tokens / budget); TEff = MLTE / tokens seen",
        "options": asdict(o),
        "tokenizer": {"vocab_size": len(tok), "cloned_vocab_size": vocab, "special_ids_never_cloned":
                      sorted(int(i) for i in np.flatnonzero(table[1] == np.arange(table.shape[1])))[:64]},
        "data": {"train_rows_available": int(len(content)), "dev_rows": int(len(dev)), "budget_rows": n_rows,
                 "passes_over_the_data": round(n_rows / max(1, len(content)), 3)},
        "settings": [{"name": s.name, "p_clone": s.p, "schedule": s.schedule, "fraction": s.fraction,
                      "mono": s.mono, **s.results} for s in settings],
        "law": law,
        "symmetry": _symmetry(settings, o),
        "seconds": round(time.time() - t0, 1),
    }
    from xlt.report.study import render_clone_study

    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_json_atomic(tmp / "metrics.json", metrics)
        write_json_atomic(tmp / "curves.json", curves)
        (tmp / "report.html").write_text(render_clone_study(metrics, curves, fit), encoding="utf-8")
    return metrics


def _prepare(o: CloneStudyOptions):
    from xlt.analyze.tiny_moe import train_bpe
    from xlt.corpora import open_corpus
    from xlt.data.builders.clone import tokenizer_clone_map

    corpus = open_corpus(o.corpus)
    lang = corpus.language(o.lang)
    train = corpus.texts(lang, "train")
    dev_texts = corpus.texts(lang, "dev")
    if not train or not dev_texts:
        raise XltError(f"the {corpus.name} corpus has no {'train' if not train else 'dev'} text in {lang.name}",
                       "choose a language with text in both splits")
    tok = train_bpe(train, o.vocab_size)
    enc = tok(train, add_special_tokens=False)["input_ids"]
    content = rows_from_ids(enc, o.seq_len, tok.bos_token_id, tok.eos_token_id)
    dev = rows_from_ids(tok(dev_texts, add_special_tokens=False)["input_ids"], o.seq_len, tok.bos_token_id,
                        tok.eos_token_id)[: o.eval_rows]
    if len(content) == 0 or len(dev) == 0:
        raise XltError(f"{lang.name} has too little text for one row of {o.seq_len} tokens",
                       "give more text or a smaller --seq-len")
    table = tokenizer_clone_map(tok, o.k, o.frac_clone, o.seed)
    return tok, content, dev, table


def _fit_law(settings: list[Setting], o: CloneStudyOptions):
    from xlt.predict.scaling import fit_law

    mono = sorted((s for s in settings if s.mono), key=lambda s: s.fraction)
    xs = [s.results["tokens"] / o.token_budget for s in mono]
    ppl = [s.results["ppl"]["0"] for s in mono]
    try:
        fit = fit_law("data", {"x": xs, "ppl": ppl})
    except XltError as e:  # the study's perplexities stand without the law; TEff is then missing, with why
        return None, {"form": "1/ppl = -a*x^(-b) + c, x = tokens / token_budget", "points": {"x": xs, "ppl": ppl},
                      "token_budget": o.token_budget, "skipped": e.problem}
    return fit, {"form": "1/ppl = -a*x^(-b) + c, x = tokens / token_budget", "points": {"x": xs, "ppl": ppl},
                 "token_budget": o.token_budget, **fit.to_json()}


def _add_teff(s: Setting, fit, o: CloneStudyOptions) -> None:
    teff, mlte, why = {}, {}, {}
    for c, ppl in s.results["ppl"].items():
        seen = s.results["tokens_per_language"][int(c)]
        if fit is None:
            mlte[c], teff[c], why[c] = None, None, "the data law could not be fitted"
            continue
        try:
            m = fit.mlte(ppl) * o.token_budget
        except XltError as e:
            mlte[c], teff[c], why[c] = None, None, e.problem
            continue
        mlte[c] = m
        teff[c] = m / seen if seen else None
        if not seen:
            why[c] = "the language saw no tokens in this setting"
    s.results.update({"mlte_tokens": mlte, "teff": teff, **({"teff_missing": why} if why else {})})


def _symmetry(settings: list[Setting], o: CloneStudyOptions) -> dict | None:
    half = next((s for s in settings if not s.mono and s.schedule is None and s.p == 0.5), None)
    if half is None or o.k != 2:
        return None
    a, b = half.results["ppl"]["0"], half.results["ppl"]["1"]
    rel = abs(a - b) / ((a + b) / 2)
    return {"setting": half.name, "ppl": [a, b], "relative_difference": rel, "tolerance": o.symmetry_tolerance,
            "passed": rel <= o.symmetry_tolerance}
