"""Batched generation of hedged sampling pools with one KV-cache decode loop.

:func:`generate_pool` returns, for every prompt, one :class:`Candidate` per row of a :class:`~xlt.infer.pool.Pool`
(greedy and samples at several temperatures), all decoded together:

- **Length buckets.** Prompts are sorted by token length (longest first) and cut into batches of ``batch_size``
  prompts, so little padding is computed; the output is in input order.
- **One prefill per prompt.** A batch of prompts is left-padded and run through the model once (attention mask over
  the padding, position ids counted from each prompt's first real token, as ``model.generate`` does). The KV cache
  (a transformers ``DynamicCache``) and the last-position logits are then repeated to ``pool.size`` rows per prompt,
  so every pool member continues from the same prefill.
- **One decode loop for the whole pool.** Each step feeds every live row its last token. A row's next token is the
  argmax of the logits (greedy rows) or a draw from ``softmax(logits / τ)`` over the full vocabulary (no top-k,
  top-p or penalties). A draw is the inverse CDF of the tempered distribution at a uniform number from the row's own
  ``torch.Generator``, seeded with :func:`row_seed` from (``seed``, the prompt's index in the input or its key, the
  member, the sample), so a candidate does not depend on the batch size, on the other prompts of its batch, or on
  the device's random state.
- **Finished rows are dropped.** A row stops when it emits one of ``eos_token_ids``; its rows of the cache, the
  attention mask and the positions are removed (``index_select``), so the batch shrinks as rows finish.
- The model runs under ``torch.no_grad`` in eval mode; its training mode is restored afterwards. Logits are read in
  float32, as ``model.generate`` does, so the greedy row equals ``model.generate(do_sample=False)`` token for token.

Prompts given as text are tokenised as the project's evaluation does (:func:`xlt.eval.bpb.first_token_ids`: the
tokenizer's start tokens, e.g. ``<bos>``, else the boundary token, then the text without special tokens);
pre-tokenised prompts (lists of ids) are used as given.

A candidate's ``token_ids`` are the generated tokens before the stop token (the stop token itself is left out, so
``text`` ends where the row stopped); ``sum_logprob`` is the model's log-probability (at temperature 1, whatever the
row's temperature) of the generated tokens including the stop token, i.e. of the candidate as a finished sequence.

Sliding-window models (Gemma-3's local layers) see the window over cache slots, padding included, exactly as in
batched ``model.generate``: beyond the window, a left-padded short prompt sees fewer real tokens than it would alone.
Length buckets keep the padding small.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from xlt.errors import XltError
from xlt.infer.pool import Pool, PoolRow, parse_pool
from xlt.util import stable_hash


@dataclass(frozen=True)
class Candidate:
    """One generated continuation of a prompt.

    ``member`` and ``sample`` locate it in the pool (``temperature`` is ``None`` for the greedy row); ``finished`` is
    true when a stop token ended it before ``max_new_tokens``."""

    text: str
    token_ids: tuple[int, ...]
    member: int
    sample: int
    temperature: float | None
    sum_logprob: float
    finished: bool


def row_seed(seed: int, prompt_key: int | str, member: int, sample: int) -> int:
    """The seed of one sampled row's generator: a stable hash of (seed, the prompt's key, member, sample); the key is
    the prompt's index in the input unless :func:`generate_pool` is given ``prompt_keys``."""
    return stable_hash(f"xlt.generate/{seed}/{prompt_key}/{member}/{sample}") & ((1 << 63) - 1)


def encode_prompts(tokenizer, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
    """Token ids of every prompt: text as the project's evaluation builds model inputs (start tokens + the text
    without special tokens), lists of ids as given."""
    from xlt.eval.bpb import first_token_ids

    out: list[list[int]] = []
    start: list[int] | None = None
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            if tokenizer is None:
                raise XltError(f"prompt {i} is text but no tokenizer was given",
                               "pass the model's tokenizer, or pre-tokenised prompts (lists of token ids)")
            if start is None:
                start = first_token_ids(tokenizer)
            ids = start + list(tokenizer(p, add_special_tokens=False)["input_ids"])
        else:
            ids = [int(t) for t in p]
        if not ids:
            raise XltError(f"prompt {i} has no tokens", "give every prompt at least one token")
        out.append(ids)
    return out


def stop_token_ids(model, tokenizer, eos_token_ids: int | Iterable[int] | None) -> list[int]:
    """The tokens that end a row: ``eos_token_ids`` when given (empty: never stop early), else the tokenizer's EOS and
    the model's generation-config EOS tokens (e.g. Gemma's ``<end_of_turn>``)."""
    if eos_token_ids is not None:
        return [int(eos_token_ids)] if isinstance(eos_token_ids, int) else [int(t) for t in eos_token_ids]
    ids: list[int] = []
    candidates = [getattr(tokenizer, "eos_token_id", None)]
    gen = getattr(model, "generation_config", None)
    candidates.append(getattr(gen, "eos_token_id", None) if gen is not None else None)
    for c in candidates:
        for t in ([c] if isinstance(c, int) else list(c or [])):
            if int(t) not in ids:
                ids.append(int(t))
    return ids


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Prompt indices sorted by length (longest first, ties in input order) and cut into batches of ``batch_size``."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def _uniforms(pool_rows: list[PoolRow], prompt_keys: list[int | str], seed: int, steps: int) -> torch.Tensor:
    """One uniform number in (0, 1] per row and step, from each sampled row's own generator (greedy rows: 1)."""
    out = torch.ones(len(prompt_keys) * len(pool_rows), steps, dtype=torch.float64)
    r = 0
    for p in prompt_keys:
        for row in pool_rows:
            if row.temperature is not None:
                g = torch.Generator().manual_seed(row_seed(seed, p, row.member, row.sample))
                out[r] = 1.0 - torch.rand(steps, generator=g, dtype=torch.float64)
            r += 1
    return out


def choose_tokens(logits: torch.Tensor, inv_temperature: torch.Tensor, greedy: torch.Tensor,
                  uniform: torch.Tensor) -> torch.Tensor:
    """Next token of every row: the argmax for ``greedy`` rows, else the inverse CDF of ``softmax(logits · 1/τ)`` at
    ``uniform`` (in (0, 1]); a token of probability 0 is never drawn."""
    argmax = logits.argmax(-1)
    probs = torch.softmax(logits * inv_temperature[:, None], dim=-1)
    cdf = probs.cumsum(-1)
    x = (uniform.to(cdf.dtype) * cdf[:, -1]).clamp_min(torch.finfo(cdf.dtype).tiny)
    drawn = torch.searchsorted(cdf, x[:, None]).squeeze(1).clamp_max(logits.shape[-1] - 1)
    return torch.where(greedy, argmax, drawn)


class _Forward:
    """Calls the model with the cache under the keyword its forward takes (``cache`` in transformers ≥ 5.x, else
    ``past_key_values``), keeping only the last position's logits where the model allows it."""

    def __init__(self, model):
        params = inspect.signature(model.forward).parameters
        self.model = model
        self.cache_key = "cache" if "cache" in params else "past_key_values"
        self.keep_last = "logits_to_keep" in params

    def __call__(self, input_ids, attention_mask, position_ids, cache) -> torch.Tensor:
        kwargs = {self.cache_key: cache}
        if self.keep_last:
            kwargs["logits_to_keep"] = 1
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=True, **kwargs)
        return out.logits[:, -1, :].float()


def _new_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


@dataclass
class _Prefix:
    """A prompt prefix shared by every prompt (few-shot demonstrations), run through the model once."""

    ids: list[int]
    cache: object


def _prefix(forward: _Forward, model, ids: list[int], device) -> _Prefix:
    x = torch.tensor([ids], dtype=torch.long, device=device)
    cache = _new_cache(model)
    forward(x, torch.ones_like(x), torch.arange(len(ids), device=device)[None], cache)
    return _Prefix(ids, cache)


def _prefill(forward: _Forward, model, ids: list[list[int]], pad_id: int, device, prefix: _Prefix | None = None):
    """The left-padded prompts through the model once: last logits [B, V], the cache, the attention mask and the
    next positions [B, 1]. With ``prefix``, the prompts continue its cache (copied to every row): the rows are
    ``prefix, padding, prompt``, the padding masked and the positions counted over real tokens only."""
    import copy

    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
        mask[i, width - len(x):] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    if prefix is None:
        cache = _new_cache(model)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        logits = forward(input_ids, mask, positions, cache)
        return logits, cache, mask, positions[:, -1:] + 1
    cache = copy.deepcopy(prefix.cache)
    cache.batch_repeat_interleave(len(ids))
    n = len(prefix.ids)
    positions = (n + mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    full = torch.cat([mask.new_ones((len(ids), n)), mask], dim=1)
    logits = forward(input_ids, full, positions, cache)
    return logits, cache, full, positions[:, -1:] + 1


def _decode_batch(forward: _Forward, model, ids: list[list[int]], prompt_keys: list[int | str], pool: Pool,
                  max_new_tokens: int, seed: int, stops: list[int], pad_id: int,
                  device, prefix: _Prefix | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The generated tokens [B · pool.size, max_new_tokens] of one batch of prompts (-1 after a row's stop token,
    which is kept) and each row's summed log-probability [B · pool.size]; rows are prompt-major, in pool order."""
    rows = pool.rows()
    n = len(rows)
    logits, cache, mask, positions = _prefill(forward, model, ids, pad_id, device, prefix)
    cache.batch_repeat_interleave(n)
    logits = logits.repeat_interleave(n, 0)
    mask = mask.repeat_interleave(n, 0)
    positions = positions.repeat_interleave(n, 0)

    total = len(ids) * n
    temps = [r.temperature for r in rows] * len(ids)
    all_greedy = all(t is None for t in temps)
    greedy = torch.tensor([t is None for t in temps], device=device)
    inv_temperature = torch.tensor([1.0 if t is None else 1.0 / t for t in temps], dtype=torch.float32, device=device)
    uniforms = _uniforms(rows, prompt_keys, seed, max_new_tokens).to(device)
    stop_ids = torch.tensor(stops, dtype=torch.long, device=device)

    tokens = torch.full((total, max_new_tokens), -1, dtype=torch.long, device=device)
    logprobs = torch.zeros(total, dtype=torch.float32, device=device)
    alive = torch.arange(total, device=device)
    for step in range(max_new_tokens):
        nxt = logits.argmax(-1) if all_greedy else choose_tokens(logits, inv_temperature, greedy, uniforms[alive, step])
        tokens[alive, step] = nxt
        logprobs[alive] += torch.log_softmax(logits, -1).gather(1, nxt[:, None]).squeeze(1)
        if step == max_new_tokens - 1:
            break
        keep = ~torch.isin(nxt, stop_ids) if len(stops) else None
        if keep is not None and not bool(keep.all()):
            if not bool(keep.any()):
                break
            idx = keep.nonzero().squeeze(1)
            cache.batch_select_indices(idx)
            alive, nxt, mask, positions = alive[idx], nxt[idx], mask[idx], positions[idx]
            greedy, inv_temperature = greedy[idx], inv_temperature[idx]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        logits = forward(nxt[:, None], mask, positions, cache)
        positions = positions + 1
    return tokens, logprobs


def _candidates(tokens: list[list[int]], logprobs: list[float], pool: Pool, stops: set[int],
                tokenizer) -> list[Candidate]:
    """The candidates of one prompt from its rows of generated tokens."""
    out = []
    for row, toks, lp in zip(pool.rows(), tokens, logprobs):
        toks = [t for t in toks if t >= 0]
        finished = bool(toks) and toks[-1] in stops
        if finished:
            toks = toks[:-1]
        text = tokenizer.decode(toks, skip_special_tokens=True) if tokenizer is not None else ""
        out.append(Candidate(text=text, token_ids=tuple(toks), member=row.member, sample=row.sample,
                             temperature=row.temperature, sum_logprob=float(lp), finished=finished))
    return out


def _pad_id(tokenizer, stops: list[int]) -> int:
    """Any id to fill the left padding with (masked out): the tokenizer's pad token, else a stop token, else 0."""
    for t in (getattr(tokenizer, "pad_token_id", None), *stops):
        if isinstance(t, int):
            return t
    return 0


def _check_args(max_new_tokens: int, batch_size: int) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise XltError(f"max_new_tokens must be an integer of at least 1, not {max_new_tokens!r}",
                       "pass --max-new-tokens 1 or more (48 by default)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise XltError(f"batch_size must be an integer of at least 1, not {batch_size!r}",
                       "pass --batch-size 1 or more (16 by default)")


def generate_pool(model, tokenizer, prompts: Sequence[str] | Sequence[Sequence[int]], pool: Pool | str,
                  max_new_tokens: int = 48, batch_size: int = 16, seed: int = 0,
                  eos_token_ids: int | Iterable[int] | None = None, progress: bool = False,
                  prompt_keys: Sequence[int | str] | None = None,
                  prefix: str | Sequence[int] | None = None) -> list[list[Candidate]]:
    """For every prompt, one :class:`Candidate` per row of ``pool`` (in :meth:`Pool.rows` order), in input order.

    ``batch_size`` counts prompts per prefill; each decode step runs ``batch_size · pool.size`` rows at most.
    ``eos_token_ids``: the tokens that end a row (default: the tokenizer's and the model's EOS; ``[]``: none).
    ``prompt_keys``: one key per prompt (e.g. the record's id) that seeds its samples in place of its index, so
    splitting or reordering the input does not change a prompt's candidates.
    ``prefix``: text (or ids) every prompt starts with, e.g. few-shot demonstrations: it is run through the model
    once and its cache copied to every row, so its cost is paid once, not once per prompt. The model then reads
    the prefix's tokens (with the start tokens) followed by each prompt's tokens (tokenised on their own, without
    start tokens); a text split there tokenises as the two parts do.
    ``tokenizer`` may be ``None`` for pre-tokenised prompts; the candidates' text is then empty."""
    pool = parse_pool(pool)
    _check_args(max_new_tokens, batch_size)
    if prefix is not None:
        (prefix_ids,) = encode_prompts(tokenizer, [prefix])
        prompts = [[int(t) for t in p] if not isinstance(p, str) else
                   list(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    ids = encode_prompts(tokenizer, prompts)
    keys = list(range(len(ids))) if prompt_keys is None else list(prompt_keys)
    if len(keys) != len(ids):
        raise XltError(f"{len(keys)} prompt keys for {len(ids)} prompts", "pass one key per prompt, or none")
    stops = stop_token_ids(model, tokenizer, eos_token_ids)
    pad_id = _pad_id(tokenizer, stops)
    device = next(model.parameters()).device
    forward = _Forward(model)
    results: list[list[Candidate] | None] = [None] * len(ids)
    shared = None

    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tqdm(total=len(ids), desc="generate", disable=not progress) as bar:
            if prefix is not None:
                shared = _prefix(forward, model, prefix_ids, device)
            for batch in length_buckets([len(x) for x in ids], batch_size):
                tokens, logprobs = _decode_batch(forward, model, [ids[i] for i in batch], [keys[i] for i in batch],
                                                 pool, max_new_tokens, seed, stops, pad_id, device, shared)
                tokens, logprobs = tokens.tolist(), logprobs.tolist()
                n = pool.size
                for j, i in enumerate(batch):
                    results[i] = _candidates(tokens[j * n:(j + 1) * n], logprobs[j * n:(j + 1) * n], pool,
                                             set(stops), tokenizer)
                bar.update(len(batch))
    finally:
        if was_training:
            model.train()
    return results  # type: ignore[return-value]


def generate_greedy(model, tokenizer, prompts: Sequence[str] | Sequence[Sequence[int]], max_new_tokens: int = 48,
                    batch_size: int = 16, eos_token_ids: int | Iterable[int] | None = None,
                    progress: bool = False) -> list[Candidate]:
    """The greedy continuation of every prompt (the pool ``greedy``), in input order."""
    pools = generate_pool(model, tokenizer, prompts, "greedy", max_new_tokens=max_new_tokens, batch_size=batch_size,
                          eos_token_ids=eos_token_ids, progress=progress)
    return [p[0] for p in pools]
