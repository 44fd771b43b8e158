"""Cross-lingual extractive QA on the Bible with self-knowledge distillation (xlt.tasks.selfkd; arXiv 2309.17134).

Context: 5 consecutive English verses (World English Bible). Question: one of them in another language (default
Swahili). Answer: that verse's span in the context. Train examples come from the corpus's train books, test examples
from its held-out dev + test books.

The encoder is multilingual-e5-small (``xlt models prepare e5``), cut to its first ``--cached + --trained`` layers:
the lower ``--cached`` layers are frozen and run once per example (their outputs are cached), the ``--trained``
layers above them and a QA head (start/end logits; non-context positions masked) are trained. Phases:

1. teacher: cross-entropy on English questions (the verse in the King James version, a paraphrase of the context's
   wording), like the paper's English-SQuAD teacher;
2. from that model, the same number of steps on cross-lingual questions with (a) cross-entropy only and
   (b) ``qa_self_distillation`` (CE + mAP@k-weighted KL to the teacher, which is refreshed to the student at each
   epoch, as in the authors' script).

Prints exact match / F1 on the held-out cross-lingual test questions before phase 2 and after each arm, and writes
them as JSON with ``--json``. Run: ``OMP_NUM_THREADS=1 python examples/tasks/selfkd_qa.py``.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time

import torch
from torch import nn

from xlt.corpora import open_corpus
from xlt.errors import XltError
from xlt.tasks.selfkd import (best_span, encode_qa, exact_match_f1, map_at_k_coefficient, qa_self_distillation_loss,
                              span_text)

NEG = -1e4  # added to non-context logits (finite, so the KL stays defined)


def windows(corpus, lang: str, questions, qlang: str, split: str, n: int, rng: random.Random, max_words: int):
    """``n`` (question, context, answer) triples: 5 consecutive same-chapter verses of ``lang`` in ``corpus``, the
    question one of them in ``qlang`` from the ``questions`` corpus."""
    docs = corpus.documents(lang, split)
    q = {d.key: d.text for d in questions.documents(qlang, split)}
    runs = []
    for i in range(len(docs) - 4):
        w = docs[i:i + 5]
        chap = {d.key.rsplit(":", 1)[0] for d in w}
        if len(chap) == 1 and all(len(d.text.split()) <= max_words for d in w) and all(d.key in q for d in w):
            runs.append(w)
    rng.shuffle(runs)
    out = []
    for w in runs[:n]:
        j = rng.randrange(5)
        out.append((q[w[j].key], " ".join(d.text for d in w), w[j].text))
    if len(out) < n:
        raise XltError(f"only {len(out)} five-verse contexts of ≤ {max_words}-word verses in {lang}/{split}",
                       "lower --train/--test or raise --max-words")
    return out


class Head(nn.Module):
    """The trained top of the encoder and a start/end head."""

    def __init__(self, layers: nn.ModuleList, config):
        super().__init__()
        self.layers, self.config = layers, config
        self.qa = nn.Linear(config.hidden_size, 2)

    def forward(self, h, mask, context_mask):
        from transformers.masking_utils import create_bidirectional_mask

        m = create_bidirectional_mask(config=self.config, inputs_embeds=h, attention_mask=mask)
        for layer in self.layers:
            h = layer(h, m)
        s, e = self.qa(h).unbind(-1)
        off = (1 - context_mask.to(s.dtype)) * NEG
        return s + off, e + off


def featurise(encoder, tokenizer, triples, cached: int, batch: int, max_length: int):
    """Batches of cached lower-layer states with the gold positions and what evaluation needs."""
    from transformers.masking_utils import create_bidirectional_mask

    out = []
    for i in range(0, len(triples), batch):
        qs, cs, ans = zip(*triples[i:i + batch])
        enc = encode_qa(tokenizer, list(qs), list(cs), list(ans), max_length=max_length)
        with torch.no_grad():
            h = encoder.embeddings(input_ids=enc["input_ids"])
            m = create_bidirectional_mask(config=encoder.config, inputs_embeds=h, attention_mask=enc["attention_mask"])
            for layer in encoder.encoder.layer[:cached]:
                h = layer(h, m)
        out.append({"h": h, "mask": enc["attention_mask"], "ctx": enc["context_mask"], "start": enc["start_positions"],
                    "end": enc["end_positions"], "offsets": enc["offsets"], "contexts": cs, "answers": ans})
    return out


def evaluate(model, batches) -> dict:
    model.eval()
    em = f1 = n = 0.0
    with torch.no_grad():
        for b in batches:
            s, e = model(b["h"], b["mask"], b["ctx"])
            spans = best_span(s, e, b["ctx"], 128)
            for (i, j), offs, ctx, gold in zip(spans, b["offsets"], b["contexts"], b["answers"]):
                pred = span_text(ctx, offs, i, j)
                a, f = exact_match_f1(pred, gold)
                em, f1, n = em + a, f1 + f, n + 1
    return {"exact_match": round(100 * em / n, 1), "f1": round(100 * f1 / n, 1), "n": int(n)}


def train(model, batches, steps, lr, seed, distil: bool, temperature: float):
    """``steps`` AdamW steps over shuffled epochs of ``batches``; with ``distil`` the loss is qa_self_distillation
    with the teacher a frozen copy of the model, refreshed at each epoch after the first."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    teacher, order, epoch, alphas, losses = copy.deepcopy(model).eval(), [], 0, [], []
    for _ in range(steps):
        if not order:
            order = torch.randperm(len(batches), generator=g).tolist()
            if epoch > 0:
                teacher = copy.deepcopy(model).eval()
            epoch += 1
        b = batches[order.pop()]
        model.train()
        s, e = model(b["h"], b["mask"], b["ctx"])
        if distil:
            with torch.no_grad():
                ts, te = teacher(b["h"], b["mask"], b["ctx"])
            loss = qa_self_distillation_loss((s, e), (ts, te), (b["start"], b["end"]), temperature=temperature)
            alphas.append(map_at_k_coefficient(b["start"], b["end"], ts, te, temperature=temperature))
        else:
            loss = 0.5 * (nn.functional.cross_entropy(s, b["start"]) + nn.functional.cross_entropy(e, b["end"]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return {"final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4),
            "mean_alpha_kl": round(sum(alphas) / len(alphas), 3) if alphas else None, "epochs": epoch}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="e5", help="e5 (prepared) or a local BertModel folder")
    p.add_argument("--lang", default="swh", help="question language of the cross-lingual phase and the test")
    p.add_argument("--train", type=int, default=160, help="training examples per phase")
    p.add_argument("--test", type=int, default=80, help="held-out cross-lingual test questions")
    p.add_argument("--cached", type=int, default=4, help="frozen lower layers, run once and cached")
    p.add_argument("--trained", type=int, default=2, help="encoder layers trained above them")
    p.add_argument("--teacher-steps", type=int, default=40)
    p.add_argument("--steps", type=int, default=40, help="steps of each phase-2 arm")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--max-words", type=int, default=30, help="longest verse (words) in a context")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the numbers here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    t0 = time.time()

    from transformers import AutoModel

    from xlt.models.hf import quiet_transformers
    from xlt.models.loading import check_model_folder, load_tokenizer, resolve_source

    quiet_transformers()
    folder = check_model_folder(resolve_source(a.model))
    encoder = AutoModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    tok = load_tokenizer(folder)
    n_layers = len(encoder.encoder.layer)
    if a.cached + a.trained > n_layers:
        raise XltError(f"--cached {a.cached} + --trained {a.trained} > the encoder's {n_layers} layers",
                       "lower one of them")
    corpus = open_corpus("bible")
    rng = random.Random(a.seed)
    from xlt.corpora.bible import BibleCorpus

    kjv = BibleCorpus({"eng": "k"})  # the King James wording of the same verses: English questions
    tr_en = windows(corpus, "eng", kjv, "eng", "train", a.train, rng, a.max_words)
    tr_x = windows(corpus, "eng", corpus, a.lang, "train", a.train, rng, a.max_words)
    te_x = windows(corpus, "eng", corpus, a.lang, "dev", a.test // 2, rng, a.max_words) + \
        windows(corpus, "eng", corpus, a.lang, "test", a.test - a.test // 2, rng, a.max_words)
    feats = {k: featurise(encoder, tok, v, a.cached, a.batch, 320) for k, v in
             (("train_en", tr_en), ("train_x", tr_x), ("test_x", te_x))}
    t_feat = time.time() - t0

    top = nn.ModuleList(copy.deepcopy(encoder.encoder.layer[a.cached:a.cached + a.trained]))
    model = Head(top, encoder.config)
    base = evaluate(model, feats["test_x"])
    teacher_log = train(model, feats["train_en"], a.teacher_steps, a.lr, a.seed, False, a.temperature)
    before = evaluate(model, feats["test_x"])
    results = {}
    for name, distil in (("ce", False), ("ce+self-kd", True)):
        m = copy.deepcopy(model)
        log = train(m, feats["train_x"], a.steps, a.lr, a.seed + 1, distil, a.temperature)
        results[name] = {**evaluate(m, feats["test_x"]), **log}
    out = {"question_lang": a.lang, "context_lang": "eng", "model": a.model, "cached_layers": a.cached,
           "trained_layers": a.trained, "train_examples": a.train, "teacher_steps": a.teacher_steps,
           "steps": a.steps, "batch": a.batch, "lr": a.lr, "temperature": a.temperature, "seed": a.seed,
           "untrained": base, "teacher (before phase 2)": {**before, **teacher_log}, "after": results,
           "feature_seconds": round(t_feat, 1), "wall_seconds": round(time.time() - t0, 1)}
    print(json.dumps(out, indent=2, ensure_ascii=False))
    if a.json:
        from xlt.util import write_json_atomic

        write_json_atomic(a.json, out)
    return out


if __name__ == "__main__":
    main()
