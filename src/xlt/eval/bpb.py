"""Bits per byte: a tokenizer-independent measure of how well a model predicts held-out text.

``bpb = Σ_tokens NLL (nats) / ln 2 / Σ UTF-8 bytes``. The held-out documents are joined with ``\\n``
into one stream, prefixed with a boundary token (the tokenizer's start token where it has one), tokenised once,
and scored in consecutive windows of ``window`` tokens; each window is conditioned on the token before it, so every
text token is predicted exactly once, with up to ``window`` tokens of context. Where the tokenizer starts every
text with a special token (Gemma's and Llama's ``<bos>``), every window starts with it, as every sequence the model
was trained on did (unscored; Gemma-3-270M on 4,000 bytes of Swahili: 2.23 bits/byte with it, 2.67 without).
Because the numerator counts every token and the denominator counts bytes, models with different tokenizers are
comparable.

Every result carries its signature (:mod:`xlt.signature`): window, how documents are joined, the boundary token,
the start token of every window (where there is one), the byte count, the split, hashes of the tokenizer and the
model, and the xlt version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from xlt.errors import XltError
from xlt.precision import autocast


def start_token_ids(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts before every text: Gemma's and Llama's ``<bos>``; none for byte-level BPE
    tokenizers such as SmolLM2's and GPT-2's."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i: i + len(plain)] == plain:
            return [int(t) for t in full[:i]]
    return []


def first_token_ids(tokenizer) -> list[int]:
    """What a scored or generated text follows: the tokenizer's start tokens, else the boundary token."""
    return start_token_ids(tokenizer) or [boundary_token_id(tokenizer)]


def boundary_token_id(tokenizer) -> int:
    """The token that separates documents in a training stream: EOS, else BOS, else id 0."""
    for attr in ("eos_token_id", "bos_token_id"):
        tid = getattr(tokenizer, attr, None)
        if tid is not None:
            return int(tid)
    return 0


def truncate_texts(texts: list[str], max_bytes: int | None) -> list[str]:
    """The first documents of ``texts`` up to ``max_bytes`` UTF-8 bytes in all (whole documents, at least one)."""
    if not max_bytes:
        return list(texts)
    out, total = [], 0
    for t in texts:
        n = len(t.encode("utf-8")) + 1
        if out and total + n > max_bytes:
            break
        out.append(t)
        total += n
    return out


def stream_bytes(texts: list[str]) -> int:
    """The denominator of :func:`bits_per_byte`: UTF-8 bytes of the non-empty texts joined with newlines."""
    return len("\n".join(t for t in texts if t.strip()).encode("utf-8"))


@dataclass(frozen=True)
class BpbResult:
    bits_per_byte: float
    nats: float
    tokens: int
    bytes: int
    window: int
    signature: str = ""

    @property
    def tokens_per_byte(self) -> float:
        return self.tokens / self.bytes

    def as_dict(self) -> dict:
        return {"bits_per_byte": self.bits_per_byte, "nll_nats": self.nats, "tokens": self.tokens,
                "bytes": self.bytes, "window": self.window, "signature": self.signature}


def _role(tokenizer, tid: int) -> str:
    role = next((r for r in ("eos", "bos") if getattr(tokenizer, f"{r}_token_id", None) == tid), "id")
    return f"{role}={tid}"


def bpb_signature(model, tokenizer, window: int, nbytes: int, split: str | None, precision: str = "fp32",
                  mhash: str | None = None) -> str:
    from xlt.signature import Signature, model_hash, tokenizer_hash

    start = start_token_ids(tokenizer)
    return str(Signature("bpb", window=window, join="newline", boundary=_role(tokenizer, first_token_ids(tokenizer)[-1]),
                         start=",".join(_role(tokenizer, t) for t in start) or None, bytes=nbytes,
                         split=split or "-", precision=None if precision == "fp32" else precision,
                         tok=tokenizer_hash(tokenizer), model=mhash or model_hash(model)))


#: tokens one forward pass of the scorer may hold (windows are batched up to this many)
TOKEN_BUDGET = 1024


@torch.no_grad()
def bits_per_byte(model, tokenizer, texts: list[str], window: int = 512, batch_size: int = 4,
                  device: str | torch.device | None = None, split: str | None = None,
                  precision: str = "fp32", mode: str = "stream", model_hash: str | None = None) -> BpbResult:
    """Bits per UTF-8 byte of ``model`` on ``texts``.

    ``mode="stream"`` (the default) scores the texts joined into one stream (see the module docstring);
    ``mode="documents"`` is lm-eval's ``loglikelihood_rolling`` definition (:func:`document_bits_per_byte`).
    ``split`` names the held-out split in the result's signature; ``precision="bf16"`` runs the forward pass under
    bf16 autocast (the log-softmax stays fp32) and says so in the signature. ``model_hash`` (of
    :func:`xlt.signature.model_hash`) saves hashing the weights again when one model is scored on many texts."""
    if mode == "documents":
        return document_bits_per_byte(model, tokenizer, texts, device=device, split=split, precision=precision,
                                      model_hash=model_hash)
    if mode != "stream":
        raise XltError(f"unknown bits/byte mode {mode!r}", "use 'stream' or 'documents'")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise XltError("no held-out text to evaluate on", "give a corpus whose dev/test split has text")
    stream = "\n".join(texts)
    nbytes = stream_bytes(texts)
    first, start = first_token_ids(tokenizer), start_token_ids(tokenizer)
    ids = [first[-1]] + tokenizer(stream, add_special_tokens=False)["input_ids"]
    ids_t = torch.tensor(ids, dtype=torch.long)
    n_pred = len(ids) - 1
    # window k: inputs start + ids[s : s+L], targets ids[s+1 : s+L+1], for s = 0, L, 2L, ... (ids[0] = first[-1])
    rows = []
    for s in range(0, n_pred, window):
        n = min(window, n_pred - s)
        pre = first[:-1] if s == 0 else start
        rows.append((list(pre) + ids[s: s + n], [-100] * len(pre) + ids[s + 1: s + n + 1]))
    total = _score_rows(model, rows, batch_size, device, precision)
    return BpbResult(total / math.log(2) / nbytes, total, n_pred, nbytes, window,
                     bpb_signature(model, tokenizer, window, nbytes, split, precision, model_hash))


def _score_rows(model, rows: list[tuple[list[int], list[int]]], batch_size: int | None, device,
                precision: str) -> float:
    """Σ −log p over ``rows`` of (inputs, targets; −100 = not scored), right-padded in batches of at most
    ``batch_size`` rows (None: as many as :data:`TOKEN_BUDGET` tokens allow), longest first."""
    from xlt.eval.logprobs import target_logprobs

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    total = 0.0
    i = 0
    while i < len(order):
        longest = len(rows[order[i]][0])
        n = max(1, TOKEN_BUDGET // max(1, longest))
        if batch_size:
            n = min(n, batch_size)
        chunk = [rows[j] for j in order[i: i + n]]
        i += n
        inp = torch.zeros((len(chunk), longest), dtype=torch.long)
        tgt = torch.full((len(chunk), longest), -100, dtype=torch.long)
        att = torch.zeros((len(chunk), longest), dtype=torch.long)
        for r, (x, y) in enumerate(chunk):
            inp[r, :len(x)] = torch.tensor(x, dtype=torch.long)
            tgt[r, :len(y)] = torch.tensor(y, dtype=torch.long)
            att[r, :len(x)] = 1
        with autocast(precision, torch.device(device).type):
            lp = target_logprobs(model, inp.to(device), att.to(device), tgt.to(device))
        total -= lp.double().sum().item()
    if was_training:
        model.train()
    return total


# -- lm-eval's definition ---------------------------------------------------------------------------------------
def max_length(model, tokenizer, default: int = 2048) -> int:
    """lm-eval's context length for a model: ``n_positions``, ``max_position_embeddings`` or ``n_ctx`` of its (text)
    config, else the tokenizer's ``model_max_length`` unless unset, else ``default``."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        v = getattr(cfg, attr, None)
        if v is not None:
            return int(v)
    m = getattr(tokenizer, "model_max_length", None)
    if m is not None and m != int(1e30):
        return int(m)
    return default


def prefix_token_id(tokenizer) -> int:
    """lm-eval's prefix token: BOS where the tokenizer has one, else EOS (with neither, where lm-eval fails, the stream
    definition's boundary token, id 0)."""
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return boundary_token_id(tokenizer)


def rolling_windows(tokens: list[int], prefix: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """lm-eval's ``get_rolling_token_windows(context_len=1)`` followed by ``make_disjoint_window``: every token is
    predicted once, the first after ``prefix``, each later window with up to ``max_len`` tokens of context."""
    out = []
    if not tokens:
        return out
    first = min(max_len, len(tokens))
    out.append(([prefix] + tokens[: first - 1], tokens[:first]))
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_len)
        end = done + n
        ctx = tokens[max(0, end - max_len - 1): end - 1]
        out.append((ctx, tokens[end - n: end]))
        done = end
    # disjoint: the context keeps only what comes before the window's first predicted token
    return [(a[: len(a) - (len(b) - 1)], b) for a, b in out]


def document_tokens(tokenizer, text: str) -> list[int]:
    """What lm-eval's HF model scores for one document: the tokenizer's own encoding (its special tokens included),
    without them when the text already starts with the prefix token's text."""
    prefix_text = tokenizer.decode(prefix_token_id(tokenizer))
    add = not (prefix_text and text.startswith(prefix_text))
    return tokenizer.encode(text, add_special_tokens=add)


def document_signature(model, tokenizer, max_len: int, nbytes: int, ndocs: int, split: str | None,
                       precision: str = "fp32", mhash: str | None = None) -> str:
    from xlt.signature import Signature, model_hash, tokenizer_hash

    return str(Signature("bpb", mode="documents", window=max_len, docs=ndocs,
                         prefix=_role(tokenizer, prefix_token_id(tokenizer)), bytes=nbytes, split=split or "-",
                         precision=None if precision == "fp32" else precision,
                         tok=tokenizer_hash(tokenizer), model=mhash or model_hash(model)))


@torch.no_grad()
def document_bits_per_byte(model, tokenizer, texts: list[str], max_len: int | None = None,
                           device: str | torch.device | None = None, split: str | None = None,
                           precision: str = "fp32", batch_size: int | None = None,
                           model_hash: str | None = None) -> BpbResult:
    """lm-eval's ``bits_per_byte`` of a ``loglikelihood_rolling`` task: each document scored alone
    (:func:`document_tokens` after :func:`prefix_token_id`, disjoint windows of the model's context length),
    ``−Σ log p / ln 2 / Σ UTF-8 bytes of the documents``. Windows are batched by length (longest first) and only
    the scored positions' logits are built, a chunk at a time."""
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise XltError("no held-out text to evaluate on", "give a corpus whose dev/test split has text")
    max_len = max_len or max_length(model, tokenizer)
    prefix = prefix_token_id(tokenizer)
    rows, ntok = [], 0
    for t in texts:
        toks = document_tokens(tokenizer, t)
        ntok += len(toks)
        for ctx, cont in rolling_windows(toks, prefix, max_len):
            inp = (ctx + cont)[:-1]
            rows.append((inp, [-100] * (len(inp) - len(cont)) + cont))
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    total = _score_rows(model, rows, batch_size, device, precision)
    return BpbResult(total / math.log(2) / nbytes, total, ntok, nbytes, max_len,
                     document_signature(model, tokenizer, max_len, nbytes, len(texts), split, precision, model_hash))
