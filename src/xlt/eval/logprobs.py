"""Log-probabilities of target tokens without building the batch × length × vocabulary logits.

A causal LM's forward pass ends with ``logits = head(final_hidden)`` (plus, in a few families, a fixed rescaling:
Gemma-2/3's ``final_logit_softcapping``, Cohere's ``logit_scale``, Granite's ``logits_scaling``). Scoring needs the
log-probability of one token per position, so :func:`target_logprobs` runs the model body once, keeps the hidden
states of the scored positions only, and applies the head and the log-softmax to ``chunk`` positions at a time in
fp32: peak memory is ``chunk × vocabulary`` floats instead of ``batch × length × vocabulary`` (Gemma-3's 262,144-token
vocabulary: 1 GiB of logits for 8 × 128 tokens). The first call per model checks the chunked path against the
model's own logits on a short input and uses the model's logits whenever they disagree (a family whose head does
something this module does not know), so the result is always what the model computes.
"""

from __future__ import annotations

import weakref

import torch

#: bytes of fp32 logits held at once: 32 MiB = 170 positions of SmolLM2's 49,152-token vocabulary, 32 of Gemma-3's
#: 262,144 (measured on Gemma-3, 4 × 8 kB of documents: 1,024 positions took 2.2 GiB more peak memory than this, and
#: were slower; 16 MiB saved 0.1 GiB more but took a third longer)
LOGITS_BYTES = 32 << 20

_CHECKED: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


def _body_and_head(model):
    """The model body (returns ``last_hidden_state``) and the output head, or None where there is no such split.
    A PEFT model is split inside its base model, whose layers carry the adapters."""
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        model = get_base()
    head = getattr(model, "get_output_embeddings", lambda: None)()
    prefix = getattr(model, "base_model_prefix", None)
    body = getattr(model, prefix, None) if prefix else None
    if head is None or body is None or body is model:
        return None
    return body, head


def _rescale(model, logits: torch.Tensor) -> torch.Tensor:
    cfg = getattr(model, "config", None)
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    scale = getattr(model, "logit_scale", None)
    if isinstance(scale, (int, float)):
        logits = logits * scale
    div = getattr(cfg, "logits_scaling", None)
    if div and div != 1:
        logits = logits / div
    return logits


def _chunked(model, body, head, input_ids, attention_mask, targets, chunk) -> torch.Tensor:
    hidden = body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    mask = targets != -100
    h = hidden[mask]
    t = targets[mask]
    out = torch.empty(t.shape[0], dtype=torch.float32, device=hidden.device)
    if chunk is None:
        chunk = max(16, LOGITS_BYTES // (4 * head.weight.shape[0]))
    for s in range(0, t.shape[0], chunk):
        logits = _rescale(model, head(h[s: s + chunk]).float())
        picked = logits.gather(1, t[s: s + chunk, None])[:, 0]
        top = logits.max(dim=-1, keepdim=True).values
        # logsumexp in place: no second chunk-sized tensor
        lse = logits.sub_(top).exp_().sum(dim=-1).log_() + top[:, 0]
        out[s: s + chunk] = picked - lse
        del logits
    full = torch.zeros(targets.shape, dtype=torch.float32, device=hidden.device)
    full[mask] = out
    return full


def _full(model, input_ids, attention_mask, targets) -> torch.Tensor:
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    lp = torch.log_softmax(logits, dim=-1).gather(2, targets.clamp(min=0)[..., None])[..., 0]
    return torch.where(targets != -100, lp, torch.zeros_like(lp))


def _chunked_matches(model, split) -> bool:
    ok = _CHECKED.get(model)
    if ok is None:
        device = next(model.parameters()).device
        vocab = split[1].weight.shape[0]
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (1, 9), generator=g).to(device)
        att = torch.ones_like(ids)
        tgt = ids[:, 1:].clone()
        try:
            a = _chunked(model, *split, ids[:, :-1], att[:, :-1], tgt, 3)
        except (AttributeError, TypeError, ValueError, RuntimeError):  # the body does not return hidden states
            a = None
        b = _full(model, ids[:, :-1], att[:, :-1], tgt)
        ok = a is not None and bool(torch.allclose(a, b, atol=1e-4, rtol=1e-4))
        _CHECKED[model] = ok
    return ok


@torch.no_grad()
def target_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor,
                    chunk: int | None = None) -> torch.Tensor:
    """``log p(targets[b, i] | input_ids[b, :i+1])`` in fp32, shape of ``targets``; 0 where ``targets == -100``.

    Only the scored positions' logits are built, ``chunk`` positions at a time (default: as many as
    :data:`LOGITS_BYTES` allow; see the module docstring)."""
    split = _body_and_head(model)
    if split is None or not _chunked_matches(model, split):
        return _full(model, input_ids, attention_mask, targets)
    return _chunked(model, *split, input_ids, attention_mask, targets, chunk)
