"""BabelBERT lexical specialisation (Green, Ponzetto, Glavaš 2023; seed-papers §19) and its BLI evaluation.

- Word vector (:func:`encode_words`, :func:`word_vectors`): the encoder run on the word alone, last hidden states
  averaged over the word's subwords, special tokens (and padding) excluded. No prefix is added.
- Specialisation (:func:`specialise`): symmetric InfoNCE with in-batch negatives on translation pairs
  (:func:`babelbert_infonce`, registered as loss ``"babelbert_infonce"``): with unit vectors ``s_i``, ``t_i`` of a
  batch of B pairs and temperature τ, ``L = ½ [CE(S, I) + CE(Sᵀ, I)]`` where ``S[i, j] = s_i·t_j / τ`` and CE is
  the mean cross-entropy with target ``i`` for row ``i``. A batch never holds the same source or target word twice
  (a repeat would be a false negative).
- Lexicons (:func:`load_lexicon`): FreeDict (``freedict``) when installed, else induced from the Bible's train split
  (``induced``; mutual-best Dice, :func:`xlt.vocab.dictionary.induce_from_parallel`); split 50/50 by source word
  (:func:`split_lexicon`); a train/test split that shares a source word is refused (:func:`check_split`).
- :func:`run_bli` (the ``xlt bli`` command): P@1/MRR en↔X with NN and CSLS before and after specialisation.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from xlt.errors import XltError
from xlt.options import option
from xlt.tasks.registry import register_loss

PAPER = "Green, Ponzetto, Glavaš 2023, Massively Multilingual Lexical Specialization (arXiv 2208.01018)"
#: lexicon sources understood by :func:`load_lexicon`
LEXICONS = ("auto", "freedict", "induced")


def _positive(v) -> str | None:
    return None if v > 0 else "must be > 0"


@dataclass
class BabelBertOptions:
    """Options of BabelBERT specialisation."""

    temperature: float = option(0.05, "InfoNCE temperature τ (cosine / τ)", check=_positive)
    steps: int = option(200, "optimizer steps", check=_positive)
    batch_size: int = option(64, "translation pairs per batch (the in-batch negatives)", check=_positive)
    lr: float = option(2e-5, "AdamW learning rate", check=_positive)
    train_embeddings: bool = option(False, "also train the (large) input embedding matrix")
    train_layers: int = option(0, "train only the top N transformer layers (0: all of them)",
                               check=lambda v: None if v >= 0 else "must be ≥ 0")
    seed: int = option(0, "seed of batch order and dropout")


# ---------------------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------------------
def _example(generator):
    import torch

    s = torch.randn(4, 8, generator=generator).requires_grad_(True)
    t = torch.randn(4, 8, generator=generator).requires_grad_(True)
    return (s, t), {"temperature": 0.1}


@register_loss("babelbert_infonce", description="symmetric InfoNCE with in-batch negatives on translation pairs "
               "(BabelBERT lexical specialisation)", options=BabelBertOptions, example=_example, paper=PAPER)
def babelbert_infonce(src, tgt, temperature: float = 0.05):
    """½ [CE(S, I) + CE(Sᵀ, I)], S = cos(src_i, tgt_j) / τ: row i of ``src`` (B, d) translates row i of ``tgt``."""
    import torch
    import torch.nn.functional as F

    if src.shape != tgt.shape or src.dim() != 2:
        raise XltError(f"InfoNCE needs two (pairs, dim) matrices of one shape, not {tuple(src.shape)} and "
                       f"{tuple(tgt.shape)}", "pass one source and one target vector per translation pair")
    if temperature <= 0:
        raise XltError(f"temperature must be > 0, not {temperature}", "pass temperature=0.05")
    logits = F.normalize(src, dim=-1) @ F.normalize(tgt, dim=-1).T / temperature
    labels = torch.arange(len(src), device=src.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


# ---------------------------------------------------------------------------------------------------------
# word vectors
# ---------------------------------------------------------------------------------------------------------
def encode_words(encoder, tokenizer, words: Sequence[str], max_length: int = 32):
    """(len(words), hidden) tensor: each word encoded alone, last hidden states averaged over its subwords
    (special tokens and padding excluded). Differentiable; the caller picks train/eval mode and grad."""
    if isinstance(words, str):
        raise XltError("encode_words takes a list of words, not one string", "pass [word]")
    enc = tokenizer(list(words), padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                    return_special_tokens_mask=True, return_token_type_ids=False)
    mask = enc["attention_mask"] * (1 - enc["special_tokens_mask"])
    empty = (mask.sum(1) == 0).nonzero().flatten().tolist()
    if empty:
        raise XltError(f"word {words[empty[0]]!r} has no subword besides special tokens",
                       "drop empty words from the lexicon")
    device = next(encoder.parameters()).device
    hidden = encoder(input_ids=enc["input_ids"].to(device),
                     attention_mask=enc["attention_mask"].to(device)).last_hidden_state
    m = mask.to(device=device, dtype=hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1)


def word_vectors(encoder, tokenizer, words: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """(len(words), hidden) float32 word vectors (:func:`encode_words`) in eval mode without gradients, in batches
    of words of similar length; a word's vector does not depend on its batch (up to float rounding)."""
    import torch

    words = list(words)
    out = np.zeros((len(words), encoder.config.hidden_size), dtype=np.float32)
    lengths = [len(tokenizer.tokenize(w)) for w in words]
    order = sorted(range(len(words)), key=lambda i: -lengths[i])
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            for a in range(0, len(order), batch_size):
                rows = order[a:a + batch_size]
                out[rows] = encode_words(encoder, tokenizer, [words[i] for i in rows]).float().cpu().numpy()
    finally:
        encoder.train(was_training)
    return out


# ---------------------------------------------------------------------------------------------------------
# lexicons
# ---------------------------------------------------------------------------------------------------------
def _single_words(d):
    from xlt.vocab.dictionary import Dictionary, tokenize_words

    keep = [(s.lower(), t.lower()) for s, t in d.pairs if tokenize_words(s) == [s.lower()] and tokenize_words(t) == [t.lower()]]
    return Dictionary(list(dict.fromkeys(keep)), d.source, d.source_lang, d.target_lang, None, dict(d.meta))


def load_lexicon(source_lang: str, target_lang: str, kind: str = "auto", corpus: str = "bible"):
    """A ``source_lang`` → ``target_lang`` lexicon of single lower-case words (a :class:`xlt.vocab.dictionary.
    Dictionary`): FreeDict (``"freedict"``), induced from ``corpus``'s train split (``"induced"``), or FreeDict when
    installed and induced otherwise (``"auto"``)."""
    from xlt.vocab.dictionary import freedict_dictionary, induce_from_parallel

    if kind not in LEXICONS:
        raise XltError(f"unknown lexicon {kind!r}", f"use one of: {', '.join(LEXICONS)}")
    if kind in ("auto", "freedict"):
        try:
            d = _single_words(freedict_dictionary(source_lang, target_lang))
            if len(d):
                return d
            if kind == "freedict":
                raise XltError(f"FreeDict {source_lang}-{target_lang} has no single-word pairs", "use --lexicon induced")
        except XltError:
            if kind == "freedict":
                raise
    d = _single_words(induce_from_parallel(corpus, source_lang, target_lang, split="train"))
    if not len(d):
        raise XltError(f"no word pairs were induced for {source_lang}-{target_lang}", "use a larger parallel corpus")
    return d


def split_lexicon(d, seed: int = 0, test_share: float = 0.5):
    """``(train, test)``: the lexicon's distinct source words shuffled with ``seed``, the first ``test_share`` of
    them (rounded) with all their translations in test, the rest in train."""
    from xlt.vocab.dictionary import Dictionary

    if not 0 < test_share < 1:
        raise XltError(f"test_share must be between 0 and 1, not {test_share}", "pass test_share=0.5")
    words = sorted({s for s, _ in d.pairs})
    if len(words) < 2:
        raise XltError(f"the {d.source} lexicon has {len(words)} source word(s): too few to split",
                       "give a lexicon with at least 2 source words")
    random.Random(seed).shuffle(words)
    n_test = min(max(1, round(test_share * len(words))), len(words) - 1)
    test_words = set(words[:n_test])
    parts = [[p for p in d.pairs if (p[0] in test_words) == is_test] for is_test in (False, True)]
    train, test = (Dictionary(p, d.source, d.source_lang, d.target_lang, None, {**d.meta, "part": name})
                   for p, name in zip(parts, ("train", "test")))
    check_split(train, test)
    return train, test


def lexicon_splits(source_lang: str, target_lang: str, spec: str = "auto", corpus: str = "bible", seed: int = 0):
    """``(lexicon, train, test)`` for one language pair. ``spec``: ``auto`` / ``freedict`` / ``induced``
    (:func:`load_lexicon`, then :func:`split_lexicon`), or ``tsv:PATTERN`` with ``{pair}`` in the pattern
    (e.g. ``tsv:lex/{pair}.tsv``, split here) and optionally ``{part}`` (``lex/{pair}.{part}.tsv``: the given
    ``train`` and ``test`` files, refused when they share a source word)."""
    from xlt.vocab.dictionary import Dictionary, merge_dictionaries

    if not str(spec).startswith("tsv:"):
        d = load_lexicon(source_lang, target_lang, spec, corpus)
        return (d, *split_lexicon(d, seed=seed))
    pattern = str(spec)[4:]
    if "{pair}" not in pattern:
        raise XltError(f"lexicon pattern {pattern!r} has no {{pair}}", "write e.g. tsv:lex/{pair}.tsv")
    pair = f"{source_lang}-{target_lang}"
    if "{part}" not in pattern:
        d = _single_words(Dictionary.load_tsv(pattern.format(pair=pair), None, source_lang, target_lang))
        return (d, *split_lexicon(d, seed=seed))
    train, test = (_single_words(Dictionary.load_tsv(pattern.format(pair=pair, part=part), None, source_lang,
                                                     target_lang)) for part in ("train", "test"))
    check_split(train, test)
    return merge_dictionaries(train, test, source=f"tsv:{pattern}"), train, test


def check_split(train, test) -> None:
    """Refuse a train/test lexicon pair that shares source words (held-out BLI would be measured on train words)."""
    shared = sorted({s for s, _ in train.pairs} & {s for s, _ in test.pairs})
    if shared:
        raise XltError(f"train and test lexicons share {len(shared)} source word(s), e.g. {', '.join(shared[:5])}",
                       "split by source word (xlt.tasks.babelbert.split_lexicon) so test words are unseen")


# ---------------------------------------------------------------------------------------------------------
# evaluation and specialisation
# ---------------------------------------------------------------------------------------------------------
def evaluate_lexicon(encoder, tokenizer, test, k: int = 10, max_words: int | None = 1000, seed: int = 0) -> dict:
    """BLI on a test lexicon: candidates are its distinct source and target words (at most ``max_words`` source
    words, sampled with ``seed``, and their translations); NN and CSLS, both directions."""
    from xlt.tasks.bli import bli, gold_from_pairs

    pairs = list(test.pairs)
    srcs = sorted({s for s, _ in pairs})
    if max_words and len(srcs) > max_words:
        keep = set(random.Random(seed).sample(srcs, max_words))
        pairs = [p for p in pairs if p[0] in keep]
        srcs = sorted(keep)
    tgts = sorted({t for _, t in pairs})
    gold = gold_from_pairs(pairs, srcs, tgts)
    xs, ys = word_vectors(encoder, tokenizer, srcs), word_vectors(encoder, tokenizer, tgts)
    out = {"source_words": len(srcs), "target_words": len(tgts), "pairs": len(pairs)}
    for method in ("nn", "csls"):
        r = bli(xs, ys, gold, method=method, k=min(k, len(srcs), len(tgts)))
        out[method] = {d: {key: r[d][key] for key in ("p_at_1", "mrr", "queries", "candidates")}
                       for d in ("src_to_tgt", "tgt_to_src")}
    return out


def _batches(pairs: list[tuple[str, str]], batch_size: int, rng: random.Random):
    """Endless batches of pairs without a repeated source or target word inside a batch, epoch by epoch."""
    while True:
        rest = pairs[:]
        rng.shuffle(rest)
        while rest:
            batch, src, tgt, left = [], set(), set(), []
            for p in rest:
                if len(batch) < batch_size and p[0] not in src and p[1] not in tgt:
                    batch.append(p)
                    src.add(p[0])
                    tgt.add(p[1])
                else:
                    left.append(p)
            rest = left
            if len(batch) >= 2:
                yield batch


def specialise(encoder, tokenizer, pairs: Sequence[tuple[str, str]], options: BabelBertOptions | None = None,
               log=None) -> dict:
    """Train ``encoder`` in place on translation ``pairs`` with :func:`babelbert_infonce` (AdamW); returns the loss
    curve and timing. The input embeddings stay frozen unless ``options.train_embeddings``; with
    ``options.train_layers = N`` only the top N transformer layers train."""
    import torch

    o = options or BabelBertOptions()
    pairs = list(dict.fromkeys((str(s), str(t)) for s, t in pairs))
    if len({s for s, _ in pairs}) < 2 or len({t for _, t in pairs}) < 2:
        raise XltError(f"specialisation needs at least 2 distinct source and target words, got {len(pairs)} pairs",
                       "give a larger training lexicon")
    torch.manual_seed(o.seed)
    rng = random.Random(o.seed)
    emb = encoder.get_input_embeddings()
    frozen = [] if o.train_embeddings else [p for p in emb.parameters() if p.requires_grad]
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if o.train_layers and layers is not None and o.train_layers < len(layers):
        keep = {id(p) for layer in list(layers)[-o.train_layers:] for p in layer.parameters()}
        frozen = [p for p in encoder.parameters() if p.requires_grad and id(p) not in keep]
    for p in frozen:
        p.requires_grad_(False)
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=o.lr)
    losses, t0 = [], time.perf_counter()
    encoder.train()
    try:
        batches = _batches(pairs, o.batch_size, rng)
        for step in range(o.steps):
            batch = next(batches)
            v = encode_words(encoder, tokenizer, [s for s, _ in batch] + [t for _, t in batch])
            loss = babelbert_infonce(v[:len(batch)], v[len(batch):], o.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if log and (step % 20 == 0 or step == o.steps - 1):
                log(f"step {step + 1}/{o.steps}: InfoNCE {loss.item():.4f}")
    finally:
        encoder.eval()
        for p in frozen:
            p.requires_grad_(True)
    return {"losses": losses, "seconds": time.perf_counter() - t0, "pairs": len(pairs),
            "trainable_parameters": sum(p.numel() for p in params)}


def _parse_pairs(pairs) -> list[tuple[str, str]]:
    items = pairs.split(",") if isinstance(pairs, str) else list(pairs)
    out = []
    for item in items:
        parts = [p.strip() for p in str(item).split("-")]
        if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
            raise XltError(f"language pair {item!r} is not 'src-tgt' with two different languages",
                           "write pairs like en-sw,en-de")
        out.append((parts[0], parts[1]))
    if not out:
        raise XltError("no language pair given", "pass --pairs en-sw,en-de")
    return out


def run_bli(out: str | Path, encoder: str = "e5", pairs="en-sw,en-de", lexicon: str = "auto",
            specialise_: bool = True, options: BabelBertOptions | None = None, k: int = 10,
            max_test_words: int | None = 1000, corpus: str = "bible", overwrite: bool = False, log=None) -> dict:
    """BLI per language pair (P@1/MRR both ways, NN and CSLS) on the held-out half of each lexicon, before and (with
    ``specialise_``) after BabelBERT specialisation on the union of the training halves; writes ``metrics.json``
    and ``report.html`` to ``out`` (atomically; every input is checked before anything is written)."""
    from xlt.infer.embed import _load_encoder
    from xlt.signature import Signature

    o = options or BabelBertOptions()
    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not overwrite:
        raise XltError(f"{out} already exists", "choose another --out or pass --overwrite")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise XltError(f"k must be a whole number ≥ 1, not {k!r}", "pass --k 10")
    lang_pairs = _parse_pairs(pairs)
    lexicons = {f"{s}-{t}": lexicon_splits(s, t, lexicon, corpus, o.seed) for s, t in lang_pairs}
    model, tokenizer, folder = _load_encoder(encoder, "cpu")
    say = log or (lambda msg: None)
    res = {"before": {}, "after": {}}
    for name, (_, _, test) in lexicons.items():
        say(f"BLI {name} before specialisation")
        res["before"][name] = evaluate_lexicon(model, tokenizer, test, k, max_test_words, o.seed)
    training = None
    if specialise_:
        train_pairs = [p for _, train, _ in lexicons.values() for p in train.pairs]
        say(f"specialising on {len(train_pairs)} translation pairs ({o.steps} steps)")
        training = specialise(model, tokenizer, train_pairs, o, log=say)
        for name, (_, _, test) in lexicons.items():
            say(f"BLI {name} after specialisation")
            res["after"][name] = evaluate_lexicon(model, tokenizer, test, k, max_test_words, o.seed)
    sig = Signature("bli", encoder=Path(folder).name, pairs=",".join(lexicons), lexicon=lexicon,
                    specialise=specialise_, k=k, max_test_words=max_test_words, **asdict(o))
    metrics = {
        "signature": str(sig), "encoder": encoder, "pairs": list(lexicons), "lexicon": lexicon, "k": k,
        "specialise": specialise_, "options": {**asdict(o), "k": k, "max_test_words": max_test_words,
                                                "lexicon": lexicon, "encoder": encoder},
        "lexicons": {n: {"source": d.source, "pairs": len(d), "train_pairs": len(tr), "test_pairs": len(te),
                         "train_source_words": len({s for s, _ in tr.pairs}),
                         "test_source_words": len({s for s, _ in te.pairs})}
                     for n, (d, tr, te) in lexicons.items()},
        "before": res["before"], "after": res["after"] or None,
        "training": None if training is None else {key: training[key] for key in ("seconds", "pairs",
                                                                                  "trainable_parameters")}
        | {"first_loss": training["losses"][0], "last_loss": training["losses"][-1]},
        "seconds": time.perf_counter() - t0,
        "definition": "P@1 / MRR of the best-ranked gold translation among the test lexicon's words; NN = cosine, "
                      "CSLS = 2cos − r_x − r_y (r = mean cosine of the k nearest neighbours in the other language)",
    }
    return _write(out, metrics, overwrite)


def _write(out: Path, metrics: dict, overwrite: bool) -> dict:
    from xlt.util import atomic_dir, write_json_atomic

    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_json_atomic(tmp / "metrics.json", metrics)
        (tmp / "report.html").write_text(render_report(metrics), encoding="utf-8")
    return metrics


def render_report(metrics: dict) -> str:
    """The ``report.html`` of :func:`run_bli`: one table per language pair (direction × method × stage)."""
    import html

    from xlt.report.html import _table
    from xlt.report.study import _page

    parts = [f"<p>{html.escape(metrics['definition'])}. Lexicons split 50/50 by source word; specialisation trains "
             "on the train halves of all pairs, BLI uses the test halves.</p>"]
    for name in metrics["pairs"]:
        lex = metrics["lexicons"][name]
        src, tgt = name.split("-")
        parts.append(f"<h2>{html.escape(name)}</h2><p>lexicon {html.escape(lex['source'])}: {lex['pairs']} pairs, "
                     f"{lex['train_pairs']} train / {lex['test_pairs']} test</p>")
        rows = []
        for stage in ("before", "after"):
            r = (metrics.get(stage) or {}).get(name)
            if not r:
                continue
            for method in ("nn", "csls"):
                for d, label in (("src_to_tgt", f"{src}→{tgt}"), ("tgt_to_src", f"{tgt}→{src}")):
                    m = r[method][d]
                    rows.append([stage, method.upper(), label, m["p_at_1"], m["mrr"], m["queries"], m["candidates"]])
        parts.append(_table(["stage", "method", "direction", "P@1", "MRR", "queries", "candidates"], rows))
    if metrics.get("training"):
        t = metrics["training"]
        parts.append(f"<h2>Specialisation</h2><p>{t['pairs']} pairs, InfoNCE {t['first_loss']:.3f} → "
                     f"{t['last_loss']:.3f}, {t['trainable_parameters']:,} trainable parameters, "
                     f"{t['seconds']:.0f} s</p>")
    return _page("xlt bli", parts, metrics)
