"""Train a tiny mixture-of-experts LM on several languages, for routing analysis on a model whose routing was learned.

:func:`train_tiny_moe` trains one shared byte-level BPE over the languages' ``train`` split, builds an OLMoE-style
model (:func:`xlt.models.tiny.tiny_moe`: by default 4 layers, 8 experts, top-2, width 128) and trains it with a plain,
seeded AdamW loop on monolingual sequences (every batch draws its rows from the languages in equal shares), with the
family's load-balancing loss. The result is an HF folder (safetensors, tokenizer, ``xlt_tiny_moe.json`` with the
settings, the loss curve and the held-out loss per language) that :func:`xlt.analyze.routing.capture_routing` reads
like any other model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import torch

from xlt.errors import XltError

#: six Bible languages in four scripts (Latin, Cyrillic, Arabic, Devanagari)
BIBLE_LANGS = ("eng", "fra", "deu", "rus", "arb", "hin")
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def train_bpe(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE (NFC-normalised) with ``<pad> <s> </s> <unk>`` at ids 0-3, as a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def _chunks(tokenizer, texts: Sequence[str], seq_len: int) -> torch.Tensor:
    """``(n, seq_len)`` rows of ``<s>`` followed by ``seq_len − 1`` tokens of the texts joined by ``</s>``."""
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream += ids + [tokenizer.eos_token_id]
    body = seq_len - 1
    n = len(stream) // body
    if n == 0:
        return torch.empty((0, seq_len), dtype=torch.long)
    data = torch.tensor(stream[: n * body], dtype=torch.long).view(n, body)
    return torch.cat([torch.full((n, 1), tokenizer.bos_token_id, dtype=torch.long), data], 1)


def train_tiny_moe(langs: Sequence[str] = BIBLE_LANGS, family: str = "olmoe", steps: int = 2000,
                   out: str | Path = "tiny-moe", seed: int = 0, *, corpus="bible", vocab_size: int = 8000,
                   hidden: int = 128, layers: int = 4, experts: int = 8, top_k: int = 2, seq_len: int = 128,
                   batch_size: int = 16, lr: float = 2e-3, warmup: float = 0.05, weight_decay: float = 0.01,
                   aux_loss_coef: float = 0.01, max_docs: int | None = None, eval_rows: int = 32,
                   show_progress: bool = False) -> dict:
    """Train a tiny MoE of ``family`` on ``langs`` of ``corpus`` (a name or :class:`~xlt.corpora.base.Corpus`; its
    ``train`` split, the first ``max_docs`` documents of each language when given) for ``steps`` AdamW steps
    (linear warm-up over ``warmup`` of them, then cosine decay to 10 %; gradients clipped at 1), seeded by ``seed``;
    save it with its tokenizer under ``out`` and return the summary written to ``out/xlt_tiny_moe.json`` (the
    training loss of every step: cross-entropy plus ``aux_loss_coef`` times the load-balancing loss; the held-out
    cross-entropy per language on up to ``eval_rows`` rows of its ``dev`` split; the time)."""
    from tqdm.auto import tqdm

    from xlt.corpora import open_corpus
    from xlt.models.tiny import MOE_FAMILIES, tiny_moe

    if family not in MOE_FAMILIES:
        raise XltError(f"unknown tiny MoE family {family!r}", f"choose from: {', '.join(MOE_FAMILIES)}")
    if steps < 1 or batch_size < 1 or seq_len < 2:
        raise XltError(f"steps ({steps}), batch_size ({batch_size}) and seq_len ({seq_len}) are too small",
                       "give steps ≥ 1, batch_size ≥ 1, seq_len ≥ 2")
    langs = list(langs)
    if not langs:
        raise XltError("no language to train on", f"give languages, e.g. {', '.join(BIBLE_LANGS)}")
    t0 = time.time()
    torch.manual_seed(seed)
    corp = open_corpus(corpus)
    train = {lang: corp.texts(lang, "train")[:max_docs] for lang in langs}
    dev = {lang: corp.texts(lang, "dev")[:max_docs] for lang in langs}
    empty = [lang for lang, t in train.items() if not t]
    if empty:
        raise XltError(f"the corpus has no train text in {', '.join(empty)}", "choose languages the corpus has")
    tokenizer = train_bpe([t for lang in langs for t in train[lang]], vocab_size)
    data = {lang: _chunks(tokenizer, train[lang], seq_len) for lang in langs}
    short = [lang for lang, d in data.items() if len(d) == 0]
    if short:
        raise XltError(f"{', '.join(short)} has less text than one sequence of {seq_len} tokens",
                       "give more text or a smaller seq_len")
    t_data = time.time() - t0

    model = tiny_moe(family, vocab_size=len(tokenizer), hidden=hidden, layers=layers, experts=experts, top_k=top_k,
                     seed=seed, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id, router_aux_loss_coef=aux_loss_coef)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "norm" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "norm" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    from xlt.study.lm import warmup_cosine

    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, warmup))
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    t1 = time.time()
    for _ in tqdm(range(steps), desc="tiny MoE", disable=not show_progress):
        which = torch.randint(0, len(langs), (batch_size,), generator=gen)
        rows = [data[langs[i]][torch.randint(0, len(data[langs[i]]), (1,), generator=gen)] for i in which.tolist()]
        batch = torch.cat(rows)
        loss = model(input_ids=batch, labels=batch, output_router_logits=True, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(float(loss.detach()), 5))
    t_train = time.time() - t1
    model.eval()

    dev_loss = {}
    with torch.inference_mode():
        for lang in langs:
            rows = _chunks(tokenizer, dev[lang], seq_len)[:eval_rows] if dev[lang] else None
            if rows is None or len(rows) == 0:
                continue
            dev_loss[lang] = round(float(model(input_ids=rows, labels=rows, use_cache=False).loss), 5)

    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    summary = {
        "family": family, "langs": langs, "corpus": getattr(corp, "name", str(corpus)), "seed": seed,
        "steps": steps, "vocab_size": len(tokenizer), "hidden": hidden, "layers": layers, "experts": experts,
        "top_k": top_k, "seq_len": seq_len, "batch_size": batch_size, "lr": lr, "aux_loss_coef": aux_loss_coef,
        "max_docs": max_docs, "train_rows": {lang: len(d) for lang, d in data.items()},
        "loss": losses, "dev_loss": dev_loss,
        "seconds": {"data": round(t_data, 1), "train": round(t_train, 1), "total": round(time.time() - t0, 1)},
    }
    (path / "xlt_tiny_moe.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary
