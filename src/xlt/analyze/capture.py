"""One capture pass over a model: every analysis metric reads what *probes* collect during the same forward passes.

A :class:`Probe` declares what it needs from the model's forward (``forward_kwargs``, e.g.
``{"output_hidden_states": True}`` or ``{"output_router_logits": True}``), may attach forward hooks on modules
(``hooks``) and reads the model's output (``on_output``). :func:`run_probes` tokenises the texts of every language
once, batches them by length (padding on the right, masked), runs each batch once with the union of the probes'
forward arguments and hands every probe the :class:`Batch` it belongs to. Never asks the model for logits over the
whole batch when no probe needs them: the LM head is skipped (``logits_to_keep=1``) unless a probe sets
``needs_logits``. When every probe says, by ``stop_after``, after which decoder layer's module it has all it needs
(routing reads the last sparse layer's router), the forward is cut there: a hook on the latest of those modules ends
the pass (the layers and head after it never run) and ``on_output`` receives ``None``.

Results are independent of the batch size and of padding: every probe receives ``mask`` (True on real tokens) and
must reduce over real tokens only. For causal decoders the padding mask is not passed to the model
(``padding_mask="auto"``): padding is on the right, so under the causal mask no real token ever sees a pad token and
the real tokens' states are the same as with the mask (positions count from 0 either way); without it attention takes
its plain causal kernel. Pad positions then hold states of their own, which the probes mask out. Sequences of one language are kept in their given order; ``Batch.index`` holds
each row's position in that language's text list (the parallel index for verse-aligned corpora).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from xlt.errors import XltError


@dataclass
class Batch:
    """One forward pass: rows of one language, right-padded."""

    lang: str  # the language code the texts were given under
    input_ids: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T) bool, True on real tokens
    index: torch.Tensor  # (B,) each row's position in the language's text list

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(1)

    @property
    def last(self) -> torch.Tensor:
        """(B,) the position of each row's last real token."""
        return self.lengths - 1


class Probe:
    """What one metric collects during the capture pass (subclass and override what you need)."""

    name: str = "probe"
    forward_kwargs: dict = {}
    needs_logits: bool = False

    def hooks(self, model) -> list[tuple[torch.nn.Module, Callable[[Batch, Any, Any], None]]]:
        """``(module, fn)`` pairs: ``fn(batch, args, output)`` runs after ``module``'s forward in every batch."""
        return []

    def stop_after(self, model) -> tuple[int, torch.nn.Module] | None:
        """``(decoder layer index, module)``: nothing this probe reads is computed after that module's forward in
        that layer, so the pass may end there; ``None`` (the default): the probe needs the whole forward and its
        output."""
        return None

    def on_output(self, batch: Batch, out) -> None:
        """Called with the model's output object after each batch."""

    def result(self) -> Any:
        return None


@dataclass
class Tokenized:
    """Token ids of every text of every language (truncated to ``max_length``)."""

    ids: dict[str, list[list[int]]] = field(default_factory=dict)

    def n_tokens(self, lang: str) -> int:
        return sum(len(x) for x in self.ids[lang])


def tokenize(tokenizer, texts: dict[str, Sequence[str]], max_length: int = 128, add_bos: bool = True) -> Tokenized:
    """Token ids per language: the tokenizer's own special tokens at the start (BOS where it has one), truncated to
    ``max_length``; an empty text is refused (it would have no token to pool)."""
    out = Tokenized()
    bos = getattr(tokenizer, "bos_token_id", None)
    for lang, items in texts.items():
        rows = []
        for i, t in enumerate(items):
            if not t or not t.strip():
                raise XltError(f"text {i} of {lang} is empty", "drop empty lines from the analysis texts")
            ids = tokenizer(t, add_special_tokens=False)["input_ids"]
            if add_bos and bos is not None:
                ids = [bos] + ids
            rows.append(ids[:max_length])
        out.ids[lang] = rows
    return out


def batches(tok: Tokenized, batch_size: int = 16, pad_id: int = 0) -> Iterator[Batch]:
    """Batches of one language each, rows sorted by length (longest first) so padding is small."""
    for lang, rows in tok.ids.items():
        order = sorted(range(len(rows)), key=lambda i: (-len(rows[i]), i))
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            t = max(len(rows[i]) for i in idx)
            ids = torch.full((len(idx), t), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), t), dtype=torch.bool)
            for r, i in enumerate(idx):
                ids[r, :len(rows[i])] = torch.tensor(rows[i])
                mask[r, :len(rows[i])] = True
            yield Batch(lang, ids, mask, torch.tensor(idx))


@contextmanager
def attached(model, probes: Sequence[Probe], current: list) -> Iterator[None]:
    """Register every probe's hooks; ``current[0]`` is the batch the hooks report to."""
    handles = []
    try:
        for p in probes:
            for module, fn in p.hooks(model):
                handles.append(module.register_forward_hook(
                    lambda mod, args, output, fn=fn: fn(current[0], args, output)))
        yield
    finally:
        for h in handles:
            h.remove()


class _StopForward(Exception):
    """Raised by the cut-off hook: every probe has what it needs from this batch."""


def _cut_off(model, probes: Sequence[Probe]) -> torch.nn.Module | None:
    """The module after which the forward may end (the latest of the probes' ``stop_after``), or None when a probe
    needs the whole forward."""
    stops = [p.stop_after(model) for p in probes]
    if not stops or any(s is None for s in stops):
        return None
    return max(stops, key=lambda s: s[0])[1]


def _is_causal(model) -> bool:
    from xlt import arch

    try:
        return bool(arch.of(model).causal)
    except XltError:  # an unknown family: keep the mask
        return False


def run_probes(model, tok: Tokenized, probes: Sequence[Probe], batch_size: int = 16, pad_id: int = 0,
               show_progress: bool = True, desc: str = "capture", padding_mask: bool | str = "auto") -> list[Any]:
    """One forward pass per batch for all ``probes`` (cut after the probes' ``stop_after`` module when all of them
    give one); returns each probe's ``result()`` in order. ``padding_mask``: pass the attention mask to the model
    (True), or not (False), or "auto": not for causal decoders, whose right padding it cannot change (module
    docstring)."""
    from tqdm.auto import tqdm

    kwargs: dict = {}
    for p in probes:
        for k, v in p.forward_kwargs.items():
            if kwargs.get(k, v) != v:
                raise ValueError(f"probes disagree on forward argument {k!r}")
            kwargs[k] = v
    if not any(p.needs_logits for p in probes):
        kwargs["logits_to_keep"] = 1  # the LM head on one position only: no B×T×V logits
    device = next(model.parameters()).device
    current: list = [None]
    cut = _cut_off(model, probes)
    use_mask = (not _is_causal(model)) if padding_mask == "auto" else bool(padding_mask)
    total = sum((len(r) + batch_size - 1) // batch_size for r in tok.ids.values())
    was_training = model.training
    handles: list = []
    model.eval()
    try:
        with attached(model, probes, current), torch.inference_mode():
            if cut is not None:  # registered after the probes' hooks, so theirs on the same module run first
                handles.append(cut.register_forward_hook(_raise_stop))
            for b in tqdm(batches(tok, batch_size, pad_id), total=total, desc=desc, disable=not show_progress):
                b = Batch(b.lang, b.input_ids.to(device), b.mask.to(device), b.index)
                current[0] = b
                try:
                    out = model(input_ids=b.input_ids, attention_mask=b.mask.long() if use_mask else None,
                                use_cache=False, **kwargs)
                except _StopForward:
                    out = None
                for p in probes:
                    p.on_output(b, out)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [p.result() for p in probes]


def _raise_stop(module, args, output):
    raise _StopForward


def decoder_layers(model) -> list[torch.nn.Module]:
    """The decoder blocks of a causal LM (``model.model.layers`` and the usual variants)."""
    base = getattr(model, "get_base_model", None)
    if callable(base) and not hasattr(model, "model"):
        model = base()
    for path in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "model.model.layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return list(obj)
    raise XltError(f"cannot find the decoder layers of a {type(model).__name__}",
                   "analysis supports decoder-only causal LMs (Llama, Gemma, Qwen, GPT-2, Mixtral, OLMoE families)")


def pool(hidden: torch.Tensor, batch: Batch, how: str = "mean") -> torch.Tensor:
    """(B, T, d) → (B, d): the mean over real tokens, or the last real token."""
    if how == "mean":
        m = batch.mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1)
    if how == "last":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), batch.last.to(hidden.device)]
    raise XltError(f"unknown pooling {how!r}", "choose mean or last")


def iter_texts(texts: dict[str, Iterable[str]]) -> dict[str, list[str]]:
    return {k: list(v) for k, v in texts.items()}


class HiddenProbe(Probe):
    """Pooled hidden states of every layer (embeddings = layer 0 … the last block's output = layer L), per
    language: ``result()[lang]`` is a float32 (N, L+1, d) tensor, row i = text i. ``pool``: ``mean`` over real tokens
    (the default; the BOS token is left out when ``skip_first``), or the ``last`` real token."""

    name = "hidden"
    forward_kwargs = {"output_hidden_states": True}

    def __init__(self, sizes: dict[str, int], pool: str = "mean", skip_first: bool = True):
        if pool not in ("mean", "last"):
            raise XltError(f"unknown pooling {pool!r}", "choose mean or last")
        self.sizes, self.how, self.skip_first = dict(sizes), pool, skip_first
        self.store: dict[str, torch.Tensor] = {}

    def on_output(self, batch: Batch, out) -> None:
        hs = out.hidden_states
        b = batch
        if self.skip_first and self.how == "mean" and bool((b.lengths > 1).all()):
            m = b.mask.clone()
            m[:, 0] = False
            b = Batch(b.lang, b.input_ids, m, b.index)
        pooled = torch.stack([pool(h.float(), b, self.how) for h in hs], dim=1).cpu()  # (B, L+1, d)
        if batch.lang not in self.store:
            self.store[batch.lang] = torch.zeros(self.sizes[batch.lang], *pooled.shape[1:])
        self.store[batch.lang][batch.index] = pooled

    def result(self) -> dict[str, torch.Tensor]:
        return self.store
