"""Greedy continuations of held-out prompts, to see what a model writes."""

from __future__ import annotations

import torch


def prompts_from(texts: list[str], n: int = 3, words: int = 6) -> list[str]:
    """The first ``words`` words of ``n`` documents spread evenly over ``texts``."""
    texts = [t for t in texts if len(t.split()) > words]
    if not texts or n < 1:  # --samples 0: none
        return []
    step = max(1, len(texts) // n)
    return [" ".join(texts[i].split()[:words]) for i in range(0, step * n, step)][:n]


@torch.no_grad()
def greedy_samples(model, tokenizer, prompts: list[str], max_new_tokens: int = 24, no_repeat_ngram_size: int = 3) -> list[dict]:
    """Greedy decoding that never repeats an n-gram of ``no_repeat_ngram_size`` tokens (0 = plain greedy):
    short-trained models otherwise loop on one frequent word, which hides what they learned."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    from xlt.eval.bpb import boundary_token_id, first_token_ids

    out = []
    for p in prompts:
        ids = first_token_ids(tokenizer) + tokenizer(p, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids], device=device)
        y = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens, do_sample=False,
                           no_repeat_ngram_size=no_repeat_ngram_size or None,
                           pad_token_id=boundary_token_id(tokenizer), eos_token_id=None)
        out.append({"prompt": p, "continuation": tokenizer.decode(y[0, len(ids):], skip_special_tokens=True)})
    if was_training:
        model.train()
    return out
