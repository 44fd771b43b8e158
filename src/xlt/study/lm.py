"""Tiny language models for controlled transfer studies: rows of token ids, one seeded training pass, perplexity.

The studies (:mod:`xlt.study.clone`, ...) differ only in *which* rows a model sees and in which order, so everything
else lives here and is the same for every run of a study: the model (:func:`xlt.models.tiny.tiny_model`, a Llama of
the given width and depth, tied embeddings), the optimiser (AdamW, β = (0.9, 0.95), weight decay on matrices only,
gradients clipped at 1), the learning-rate schedule (linear warm-up over ``warmup`` of the steps, then cosine decay to
10 % of the peak) and the evaluation (perplexity = exp of the mean next-token cross-entropy over every predicted
position of the held-out rows). Rows are consumed in the order given, ``batch_size`` at a time (the last batch may be
smaller), so a curriculum is the order of the rows and a token budget is their number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from xlt.errors import XltError
from xlt.options import option, positive


@dataclass
class TinyLMOptions:
    hidden: int = option(64, "model width", check=positive)
    layers: int = option(2, "transformer layers", check=positive)
    heads: int = option(4, "attention heads", check=positive)
    batch_size: int = option(16, "rows per optimizer step", check=positive)
    lr: float = option(3e-3, "peak learning rate (AdamW)", check=positive)
    warmup: float = option(0.05, "share of the steps spent warming up linearly")
    weight_decay: float = option(0.01, "AdamW weight decay (matrices only)")


def rows_from_ids(sequences: Sequence[Sequence[int]], seq_len: int, bos: int, eos: int | None) -> np.ndarray:
    """``(n, seq_len)`` rows: each ``bos`` followed by ``seq_len − 1`` tokens of the sequences joined by ``eos``
    (the tail that does not fill a row is dropped)."""
    if seq_len < 2:
        raise XltError(f"seq_len {seq_len} leaves no room after the start token", "give seq_len ≥ 2")
    stream: list[int] = []
    for ids in sequences:
        stream.extend(ids)
        if eos is not None:
            stream.append(eos)
    body = seq_len - 1
    n = len(stream) // body
    data = np.asarray(stream[: n * body], dtype=np.int64).reshape(n, body)
    return np.concatenate([np.full((n, 1), bos, dtype=np.int64), data], axis=1)


def new_model(vocab_size: int, o: TinyLMOptions, seed: int, max_positions: int, **special_ids):
    from xlt.models.tiny import tiny_model

    return tiny_model("llama", vocab_size=vocab_size, hidden=o.hidden, layers=o.layers, heads=o.heads, seed=seed,
                      max_positions=max_positions, **special_ids)


def warmup_cosine(steps: int, warmup: float):
    """Learning-rate factor per step: linear warm-up over ``warmup`` of the steps, then cosine decay to 10 %."""
    n_warm = max(1, int(round(warmup * steps)))

    def factor(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        frac = (step - n_warm) / max(1, steps - n_warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    return factor


def train_rows(model, rows: np.ndarray, o: TinyLMOptions, seed: int, *, desc: str = "train",
               show_progress: bool = False) -> list[float]:
    """One pass over ``rows`` in order (``ceil(n / batch_size)`` steps); returns the training loss of every step."""
    import torch
    from tqdm.auto import tqdm

    if len(rows) == 0:
        raise XltError("no training rows", "give more text or a larger token budget")
    torch.manual_seed(seed)
    steps = math.ceil(len(rows) / o.batch_size)
    named = list(model.named_parameters())
    decay = [p for n, p in named if p.dim() >= 2 and "norm" not in n]
    rest = [p for n, p in named if not (p.dim() >= 2 and "norm" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=o.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, o.warmup))
    data = torch.from_numpy(np.ascontiguousarray(rows))
    losses = []
    model.train()
    for step in tqdm(range(steps), desc=desc, disable=not show_progress, leave=False):
        batch = data[step * o.batch_size:(step + 1) * o.batch_size]
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def perplexity(model, rows: np.ndarray, batch_size: int = 32) -> float:
    """exp(mean next-token cross-entropy over every predicted position of ``rows``)."""
    total, count = cross_entropy_sum(model, rows, batch_size)
    return math.exp(total / count)


def cross_entropy_sum(model, rows: np.ndarray, batch_size: int = 32) -> tuple[float, int]:
    """(summed next-token cross-entropy in nats, number of predicted positions) over ``rows``."""
    import torch

    if len(rows) == 0:
        raise XltError("no held-out rows to measure perplexity on", "give more dev text or a smaller seq_len")
    total, count = 0.0, 0
    data = torch.from_numpy(np.ascontiguousarray(rows))
    with torch.inference_mode():
        for i in range(0, len(data), batch_size):
            batch = data[i:i + batch_size]
            logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                                   reduction="sum")
            total += float(ce)
            count += batch[:, 1:].numel()
    return total, count
