"""Language-specific neurons: LAPE (Tang et al., ACL 2024, "Language-Specific Neurons: The Key to Multilingual
Capabilities in Large Language Models"), reimplemented on HF forward hooks.

1. **Counting** (:class:`ActivationProbe`, a :class:`~xlt.analyze.capture.Probe`, so it runs in the same forward
   pass as every other analysis metric): for each language k, layer ℓ and FFN neuron j, the number of real tokens
   (padding masked) on which the FFN activation is positive, and the number of tokens. The activation is the output
   of the MLP's activation module: ``act_fn(gate_proj(x))`` in gated MLPs (Llama, Qwen2, Gemma-3, Mistral, …),
   ``act(c_fc(x))`` in GPT-2. Only int64 counts of shape (layers, neurons) are kept, never the activations.
   Mixture-of-experts FFNs (Mixtral, OLMoE, Qwen-MoE) are refused: their experts are fused tensors applied to the
   tokens routed to them, so a neuron's firing rate is not defined per token; analyse their routing instead.
2. **Selection** (:func:`lape`), as ``identify.py`` of RUCAIBox/Language-Specific-Neurons (commit ``fdeca23``):

   - pₖ(ℓ, j) = count / n_tokens(k) (float32, as the reference's int/int division);
   - p̃ₖ = pₖ / Σₖ' pₖ' (0 where the sum is 0); LAPE(ℓ, j) = −Σₖ p̃ₖ ln p̃ₖ;
   - τ = the ``round(N · filter_rate)``-th smallest of all N = L·F·K probabilities (``kthvalue``, not an
     interpolated percentile); neurons where no language has pₖ > τ get LAPE = +∞;
   - the ``round(L·F · top_rate)`` neurons with the lowest LAPE (over *all* L·F neurons) are selected;
   - a selected neuron belongs to every language with pₖ > bar, where bar is computed like τ with
     ``activation_bar_ratio`` (the same value by default), so a neuron can belong to several languages, and a
     selected neuron with LAPE = +∞ (when fewer neurons pass the filter than are selected) belongs to none.

   Ties in LAPE are broken by (layer, neuron) order; the reference's ``topk`` leaves their order unspecified.
3. **Intervention** (:func:`ablate_neurons`): zero the selected activations (``index_fill_`` on the last dimension
   of the activation module's output, as the reference's ``ppl.py``) while the context is open;
   :func:`ablation_matrix` measures the change in bits per byte on every language when one language's neurons are
   zeroed (Tang et al.'s matrix, with bits per byte instead of perplexity).
4. **Stability** (:func:`stability`): Jaccard similarity of the neuron sets found on two halves of each language's
   text.

Identification needs at least :data:`MIN_TOKENS` counted tokens per language (per half for :func:`stability`).
That is a floor against meaningless output, not a recommendation: the paper counts ~100 M tokens per language, and
the two-halves Jaccard shows whether a given amount of text gives a reproducible set.
"""

from __future__ import annotations

import json
import operator
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MethodType
from typing import Iterator, Mapping, Sequence

import torch

from xlt.analyze.capture import Batch, Probe, decoder_layers, run_probes, tokenize
from xlt.errors import XltError

#: fewest counted tokens per language :func:`lape` accepts (each half's, for :func:`stability`)
MIN_TOKENS = 1000

Neurons = dict[str, dict[int, torch.Tensor]]  # {lang: {layer: LongTensor of neuron indices, ascending}}


# -- where the activations are ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FfnSite:
    """One decoder layer's FFN: the MLP module, its activation module and the number of neurons."""

    layer: int
    mlp: torch.nn.Module
    act: torch.nn.Module
    width: int
    kind: str  # "gated" (act_fn(gate_proj(x)) * up_proj(x)) or "gpt2" (act(c_fc(x)))


def ffn_sites(model) -> list[FfnSite]:
    """The FFN of every decoder layer, bottom first; one :class:`XltError` for a mixture-of-experts layer or an FFN of
    another layout."""
    from xlt import arch

    layers = decoder_layers(model)
    fam = arch.of(model)
    if not fam.causal:
        raise XltError(f"language-specific neurons are defined for causal LMs; {type(model).__name__} is not one",
                       "analyse a decoder-only model (Llama, Gemma-3, Qwen2, GPT-2 families)")
    sites = []
    for i, layer in enumerate(layers):
        mlp = arch.ffn(layer, model)
        if fam.moe or hasattr(mlp, "experts"):
            raise XltError(f"layer {i} of this {type(model).__name__} is a mixture of experts "
                           f"({type(mlp).__name__}); LAPE counts the neurons of dense FFNs, and an expert's neurons "
                           "only see the tokens routed to it",
                           "analyse the routing of mixture-of-experts models instead, or choose a dense model")
        if all(isinstance(getattr(mlp, n, None), torch.nn.Module) for n in ("gate_proj", "up_proj", "down_proj",
                                                                             "act_fn")):
            sites.append(FfnSite(i, mlp, mlp.act_fn, int(mlp.gate_proj.out_features), "gated"))
        elif all(isinstance(getattr(mlp, n, None), torch.nn.Module) for n in ("c_fc", "c_proj", "act")):
            sites.append(FfnSite(i, mlp, mlp.act, int(mlp.c_fc.nf), "gpt2"))
        else:
            raise XltError(f"the FFN of layer {i} ({type(mlp).__name__}) has neither the gated layout "
                           "(gate_proj, up_proj, down_proj, act_fn) nor GPT-2's (c_fc, c_proj, act)",
                           "LAPE supports Llama-, Qwen2-, Gemma-3- and GPT-2-style FFNs; use a model of those families")
    if len({id(s.act) for s in sites}) != len(sites):
        raise XltError(f"the layers of this {type(model).__name__} share one activation module, so a hook cannot tell "
                       "them apart", "give every layer its own activation module")
    return sites


# -- counting -----------------------------------------------------------------------------------------------------
@dataclass
class ActivationCounts:
    """Per language: how many counted tokens fired each neuron (int64, (layers, neurons)), and the tokens counted."""

    counts: dict[str, torch.Tensor]
    n_tokens: dict[str, int]

    @property
    def langs(self) -> list[str]:
        return list(self.counts)


class ActivationProbe(Probe):
    """Counts, per language and per layer×neuron, the real tokens on which the FFN activation is > 0.

    Attach it with the other probes to :func:`~xlt.analyze.capture.run_probes`; ``result()`` is an
    :class:`ActivationCounts`. Padding is masked, so counts do not depend on the batch size or the padding.
    ``split_at={lang: k}`` also keeps the counts of texts ``index < k`` and ``index >= k`` apart (:meth:`halves`),
    for :func:`stability`, in the same pass."""

    name = "neurons"

    def __init__(self, model, split_at: Mapping[str, int] | None = None):
        self.sites = ffn_sites(model)
        self.split_at = dict(split_at) if split_at is not None else None
        self._counts: dict[tuple[str, int], list[torch.Tensor | None]] = {}
        self._tokens: dict[tuple[str, int], int] = {}
        self._calls = [0] * len(self.sites)

    def _part(self, batch: Batch) -> torch.Tensor:
        """(B,) 0 or 1 per row: which half of its language's texts the row is in (all 0 without ``split_at``)."""
        if self.split_at is None or batch.lang not in self.split_at:
            return torch.zeros(len(batch.index), dtype=torch.long)
        return (batch.index >= self.split_at[batch.lang]).long()

    def hooks(self, model):
        return [(s.act, lambda batch, args, output, i=i: self._count(i, batch, output))
                for i, s in enumerate(ffn_sites(model))]

    def _count(self, layer: int, batch: Batch, output: torch.Tensor) -> None:
        self._calls[layer] += 1
        mask = batch.mask.to(output.device)
        part = self._part(batch)  # on the CPU, like batch.index: no device sync
        for p in part.unique().tolist():
            rows = mask & (part == p).to(mask.device).unsqueeze(1) if self.split_at is not None else mask
            # (F,): real tokens of these rows with act > 0 (a masked sum, so nothing waits for the device)
            fired = ((output > 0) & rows.unsqueeze(-1)).sum(dim=(0, 1), dtype=torch.int64)
            acc = self._counts.setdefault((batch.lang, p), [None] * len(self.sites))
            acc[layer] = fired if acc[layer] is None else acc[layer] + fired

    def on_output(self, batch: Batch, out) -> None:
        bad = [i for i, c in enumerate(self._calls) if c != 1]
        if bad:
            raise XltError(f"the activation module of layer {bad[0]} ran {self._calls[bad[0]]} times in one forward "
                           "pass (expected once)",
                           "LAPE needs one activation call per layer and token; this model's FFN is not supported")
        self._calls = [0] * len(self.sites)
        part = self._part(batch)
        lengths = batch.mask.sum(1).cpu()
        for p in part.unique().tolist():
            key = (batch.lang, p)
            self._tokens[key] = self._tokens.get(key, 0) + int(lengths[part == p].sum())

    def _collect(self, parts: Sequence[int]) -> ActivationCounts:
        counts, n = {}, {}
        langs = list(dict.fromkeys(lang for lang, _ in self._counts))
        for lang in langs:
            keys = [(lang, p) for p in parts if (lang, p) in self._counts]
            if not keys:
                continue
            per_layer = []
            for i in range(len(self.sites)):
                per_layer.append(sum(self._counts[k][i].cpu() for k in keys))
            widths = {t.shape[0] for t in per_layer}
            if len(widths) != 1:
                raise XltError(f"the layers of this model have FFNs of different widths ({sorted(widths)})",
                               "LAPE pools rates over layers of one width; analyse a model with uniform FFN width")
            counts[lang] = torch.stack(per_layer)
            n[lang] = sum(self._tokens[k] for k in keys)
        return ActivationCounts(counts, n)

    def result(self) -> ActivationCounts:
        return self._collect((0, 1))

    def halves(self) -> tuple[ActivationCounts, ActivationCounts]:
        """The counts of each language's texts before and after its ``split_at`` index."""
        if self.split_at is None:
            raise XltError("this ActivationProbe was not asked to split the texts",
                           "create it with split_at={lang: number of texts in the first half}")
        return self._collect((0,)), self._collect((1,))


def count_activations(model, tokenizer, texts_by_lang: Mapping[str, Sequence[str]], max_length: int = 128,
                      batch_size: int = 16, split_halves: bool = False, show_progress: bool = False):
    """Run :class:`ActivationProbe` alone over ``texts_by_lang`` (tokenised by :func:`~xlt.analyze.capture.tokenize`).

    Returns an :class:`ActivationCounts`, or ``(all, (first half, second half))`` with ``split_halves`` (each
    language's texts split at ``len // 2``)."""
    tok = tokenize(tokenizer, dict(texts_by_lang), max_length=max_length)
    split = {lang: len(v) // 2 for lang, v in tok.ids.items()} if split_halves else None
    probe = ActivationProbe(model, split_at=split)
    pad = getattr(tokenizer, "pad_token_id", None)
    run_probes(model, tok, [probe], batch_size=batch_size, pad_id=0 if pad is None else int(pad),
               show_progress=show_progress, desc="neurons")
    full = probe.result()
    return (full, probe.halves()) if split_halves else full


def naive_lape_counts(model, tokenizer, texts_by_lang: Mapping[str, Sequence[str]],
                      max_length: int = 128) -> ActivationCounts:
    """A direct port of the reference's ``activation.py`` counting, for benchmarks and cross-checks.

    Like the reference, it replaces each layer's MLP ``forward`` with one that computes the activation itself,
    counts ``(act.float() > 0)`` over every position and continues the FFN; sequences run one at a time with no
    padding (the reference packs text into full-length rows, which need none). It counts the same sequences as
    :class:`ActivationProbe` (each text tokenised by :func:`~xlt.analyze.capture.tokenize`), so the two must agree
    exactly. Only the last position's logits are computed, as the reference generates one token."""
    sites = ffn_sites(model)
    if len({s.width for s in sites}) != 1:
        raise XltError("the layers of this model have FFNs of different widths",
                       "LAPE pools rates over layers of one width; analyse a model with uniform FFN width")
    over_zero = torch.zeros(len(sites), sites[0].width, dtype=torch.int64)
    counts, n_tokens = {}, {}

    def factory(idx: int, kind: str):
        def gated_forward(self, x):
            activation = self.act_fn(self.gate_proj(x))
            over_zero[idx, :] += (activation.float() > 0).sum(dim=(0, 1)).cpu()
            return self.down_proj(activation * self.up_proj(x))

        def gpt2_forward(self, x):
            activation = self.act(self.c_fc(x))
            over_zero[idx, :] += (activation.float() > 0).sum(dim=(0, 1)).cpu()
            return self.dropout(self.c_proj(activation))

        return gated_forward if kind == "gated" else gpt2_forward

    tok = tokenize(tokenizer, dict(texts_by_lang), max_length=max_length)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for s in sites:
            s.mlp.forward = MethodType(factory(s.layer, s.kind), s.mlp)
        with torch.inference_mode():
            for lang, rows in tok.ids.items():
                over_zero.zero_()
                n = 0
                for ids in rows:
                    model(input_ids=torch.tensor([ids], device=device), use_cache=False, logits_to_keep=1)
                    n += len(ids)
                counts[lang] = over_zero.clone()
                n_tokens[lang] = n
    finally:
        for s in sites:
            if "forward" in vars(s.mlp):
                del s.mlp.forward
        model.train(was_training)
    return ActivationCounts(counts, n_tokens)


# -- selection ----------------------------------------------------------------------------------------------------
@dataclass
class LapeScores:
    """``probs`` (layers, neurons, languages): firing rates pₖ; ``entropy`` (layers, neurons): LAPE in nats."""

    langs: list[str]
    probs: torch.Tensor
    entropy: torch.Tensor


def _check_counts(counts_by_lang: Mapping[str, torch.Tensor], n_tokens_by_lang: Mapping[str, int],
                  min_tokens: int) -> list[str]:
    langs = list(counts_by_lang)
    if set(langs) != set(n_tokens_by_lang):
        raise XltError(f"counts and token totals name different languages ({sorted(langs)} vs "
                       f"{sorted(n_tokens_by_lang)})", "pass the counts and totals of one ActivationCounts")
    if len(langs) < 2:
        raise XltError(f"language-specific neurons need at least two languages; got {langs}",
                       "give texts in two or more languages")
    shapes = {tuple(counts_by_lang[k].shape) for k in langs}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise XltError("activation counts must have one (layers, neurons) shape for every language; "
                       f"got {sorted(shapes)}",
                       "count every language with the same model")
    short = [k for k in langs if int(n_tokens_by_lang[k]) < min_tokens]
    if short:
        have = ", ".join(f"{k} has {int(n_tokens_by_lang[k]):,}" for k in short)
        raise XltError(f"too little text to find language-specific neurons: {have} counted tokens "
                       f"(at least {min_tokens:,} per language are needed)",
                       f"give at least {min_tokens:,} tokens of text per language (the paper used about 100 million; "
                       "check the two-halves Jaccard to see whether your sets are reproducible)")
    for k in langs:
        c = counts_by_lang[k]
        if c.dtype.is_floating_point or c.dtype == torch.bool or (c.numel() and (int(c.min()) < 0 or
                                                                                  int(c.max()) > n_tokens_by_lang[k])):
            raise XltError(f"the activation counts of {k} are not integers between 0 and its token total",
                           "pass the counts of an ActivationProbe (or naive_lape_counts)")
    return langs


def lape_scores(counts_by_lang: Mapping[str, torch.Tensor], n_tokens_by_lang: Mapping[str, int],
                min_tokens: int = MIN_TOKENS) -> LapeScores:
    """Firing rates pₖ = count / n_tokens (float32) and LAPE = entropy of the rates normalised over languages (nats;
    a neuron that fires equally often in all K languages scores ln K, one that fires in one language only 0, and one
    that never fires 0, as in the reference, which keeps such neurons out by the τ filter)."""
    langs = _check_counts(counts_by_lang, n_tokens_by_lang, min_tokens)
    over_zero = torch.stack([counts_by_lang[k].cpu().to(torch.int64) for k in langs], dim=-1)  # L × F × K
    n = torch.tensor([int(n_tokens_by_lang[k]) for k in langs], dtype=torch.int64)
    probs = over_zero.to(torch.float32) / n.to(torch.float32)
    normed = probs / probs.sum(dim=-1, keepdim=True)
    normed[torch.isnan(normed)] = 0
    log_probs = torch.where(normed > 0, normed.log(), 0)
    entropy = -torch.sum(normed * log_probs, dim=-1)
    return LapeScores(langs, probs, entropy)


def rate_threshold(probs: torch.Tensor, ratio: float) -> float:
    """The reference's threshold: the ``round(N · ratio)``-th smallest of the N pooled rates."""
    flat = probs.flatten()
    k = round(len(flat) * ratio)
    if not 1 <= k <= len(flat):
        raise XltError(f"a rate threshold at {ratio} of {len(flat)} rates selects no rate",
                       "use a ratio in (0, 1] that keeps at least one rate")
    return flat.kthvalue(k).values.item()


def lape(counts_by_lang: Mapping[str, torch.Tensor], n_tokens_by_lang: Mapping[str, int], top_rate: float = 0.01,
         filter_rate: float = 0.95, activation_bar_ratio: float = 0.95, min_tokens: int = MIN_TOKENS) -> Neurons:
    """Language-specific neurons by LAPE, as ``identify.py`` of the reference (see the module docstring):
    ``{lang: {layer: LongTensor of neuron indices, ascending}}`` with every language and every layer present.

    ``counts_by_lang[k]`` is (layers, neurons) of token counts with act > 0, ``n_tokens_by_lang[k]`` the tokens
    counted (an :class:`ActivationCounts`' two fields). Fewer than ``min_tokens`` tokens in any language, fewer than
    two languages, or thresholds that select nothing raise one :class:`XltError`."""
    for name, v in (("top_rate", top_rate), ("filter_rate", filter_rate),
                    ("activation_bar_ratio", activation_bar_ratio)):
        if not 0 < v <= 1:
            raise XltError(f"{name} must be in (0, 1]; got {v}",
                           f"the paper's value is {0.01 if name == 'top_rate' else 0.95}")
    scores = lape_scores(counts_by_lang, n_tokens_by_lang, min_tokens)
    probs, entropy = scores.probs, scores.entropy.clone()
    num_layers, width, _ = probs.shape
    top_prob_value = rate_threshold(probs, filter_rate)
    top_position = (probs > top_prob_value).sum(dim=-1)
    entropy[top_position == 0] = torch.inf
    flat_entropy = entropy.flatten()
    n_select = round(len(flat_entropy) * top_rate)
    if n_select < 1:
        raise XltError(f"top_rate {top_rate} of {len(flat_entropy)} neurons selects none",
                       f"raise top_rate to at least {1 / len(flat_entropy):.2g}")
    index = torch.sort(flat_entropy, stable=True).indices[:n_select]  # ties: lower (layer, neuron) first
    row_index, col_index = index // width, index % width
    selected = probs[row_index, col_index]  # n × K
    bar = rate_threshold(probs, activation_bar_ratio)
    out: Neurons = {}
    for k, lang in enumerate(scores.langs):
        hit = selected[:, k] > bar
        rows, cols = row_index[hit], col_index[hit]
        out[lang] = {layer: torch.sort(cols[rows == layer]).values.long() for layer in range(num_layers)}
    return out


def neuron_counts(neurons: Neurons) -> dict[str, int]:
    """How many neurons each language has (over all layers)."""
    return {lang: int(sum(len(ix) for ix in by_layer.values())) for lang, by_layer in neurons.items()}


def _pairs(by_layer: Mapping[int, torch.Tensor]) -> set[tuple[int, int]]:
    return {(int(layer), int(j)) for layer, ix in by_layer.items() for j in torch.as_tensor(ix).tolist()}


def jaccard(a: Mapping[int, torch.Tensor], b: Mapping[int, torch.Tensor]) -> float | None:
    """|A ∩ B| / |A ∪ B| of two neuron sets given as ``{layer: indices}``; None when both are empty."""
    pa, pb = _pairs(a), _pairs(b)
    if not pa and not pb:
        return None
    return len(pa & pb) / len(pa | pb)


def stability(first: ActivationCounts, second: ActivationCounts, top_rate: float = 0.01, filter_rate: float = 0.95,
              activation_bar_ratio: float = 0.95, min_tokens: int = MIN_TOKENS) -> dict[str, float | None]:
    """Per language, the Jaccard similarity of the neurons :func:`lape` finds on two halves of the text (the counts of
    :meth:`ActivationProbe.halves`); None for a language with no neuron in either half. Each half needs
    ``min_tokens`` tokens per language."""
    if set(first.counts) != set(second.counts):
        raise XltError(f"the two halves name different languages ({sorted(first.counts)} vs {sorted(second.counts)})",
                       "give every language at least two texts, so each half has some")
    short = [k for k in first.counts if min(first.n_tokens[k], second.n_tokens[k]) < min_tokens]
    if short:
        have = ", ".join(f"{k} has {first.n_tokens[k]:,} + {second.n_tokens[k]:,}" for k in short)
        raise XltError(f"too little text to compare neuron sets across halves: {have} counted tokens "
                       f"(at least {min_tokens:,} per half are needed)",
                       f"give at least {2 * min_tokens:,} tokens of text per language, split evenly")
    kw = dict(top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=activation_bar_ratio,
              min_tokens=min_tokens)
    a = lape(first.counts, first.n_tokens, **kw)
    b = lape(second.counts, second.n_tokens, **kw)
    return {lang: jaccard(a[lang], b[lang]) for lang in a}


# -- intervention -------------------------------------------------------------------------------------------------
@contextmanager
def ablate_neurons(model, neurons_by_layer: Mapping[int, Sequence[int] | torch.Tensor]) -> Iterator[None]:
    """While open, the FFN activations of the given neurons (``{layer: indices}``) are zero in every forward pass
    (``index_fill_`` on the last dimension of the activation module's output, as the reference's ``ppl.py``). The
    hooks are removed on exit, also when the body raises."""
    sites = ffn_sites(model)
    plan: list[tuple[FfnSite, torch.Tensor]] = []
    for key, ix in neurons_by_layer.items():
        try:
            layer = operator.index(key)
        except TypeError:
            layer = -1
        if not 0 <= layer < len(sites):
            raise XltError(f"{key!r} is not a layer of this model (0–{len(sites) - 1})",
                           "pass the neuron sets lape() found for this model")
        ix = torch.as_tensor(ix, dtype=torch.long).flatten()
        if ix.numel() == 0:
            continue
        outside = ix[(ix < 0) | (ix >= sites[layer].width)]
        if outside.numel():
            raise XltError(f"neuron index {int(outside[0])} is outside layer {layer}'s {sites[layer].width} FFN "
                           "neurons", "pass the neuron sets lape() found for this model")
        plan.append((sites[layer], ix))
    handles = []

    def hook(module, args, output, ix):
        ix = ix.to(output.device)
        out = output.clone() if output.requires_grad else output
        return out.index_fill_(-1, ix, 0)

    try:
        for site, ix in plan:
            handles.append(site.act.register_forward_hook(lambda m, a, o, ix=ix: hook(m, a, o, ix)))
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass
class AblationMatrix:
    """Tang et al.'s matrix: ``delta[i][j]`` = bits/byte on language ``evaluated[j]`` with ``ablated[i]``'s neurons
    zeroed, minus the unablated bits/byte ``base[evaluated[j]]`` (positive: ablation hurts)."""

    ablated: list[str]
    evaluated: list[str]
    base: dict[str, float]
    delta: list[list[float]]

    def own_most_hurt(self) -> dict[str, bool]:
        """For each ablated language that is also evaluated: is its own text the one whose bits/byte rose most?"""
        out = {}
        for i, lang in enumerate(self.ablated):
            if lang in self.evaluated:
                row = self.delta[i]
                out[lang] = max(range(len(row)), key=lambda j: row[j]) == self.evaluated.index(lang)
        return out

    def as_dict(self) -> dict:
        own = self.own_most_hurt()
        return {"ablated": self.ablated, "evaluated": self.evaluated, "base_bits_per_byte": self.base,
                "delta_bits_per_byte": {a: dict(zip(self.evaluated, row)) for a, row in zip(self.ablated, self.delta)},
                "own_most_hurt": own, "own_most_hurt_rate": (sum(own.values()) / len(own)) if own else None}


def ablation_matrix(model, tokenizer, neurons: Neurons, texts_by_lang: Mapping[str, Sequence[str]],
                    **bpb_kwargs) -> AblationMatrix:
    """Bits per byte (:func:`xlt.eval.bpb.bits_per_byte`, ``bpb_kwargs`` passed on) of every language in
    ``texts_by_lang``, unablated and with each language's neurons of ``neurons`` zeroed (rows: ablated language,
    columns: evaluated language). Use held-out text, not the text the neurons were found on."""
    from xlt.eval.bpb import bits_per_byte
    from xlt.signature import model_hash

    if not neurons:
        raise XltError("no neuron sets to ablate", "pass the result of lape()")
    evaluated = list(texts_by_lang)
    if not evaluated:
        raise XltError("no texts to measure the ablations on", "give held-out texts for at least one language")
    bpb_kwargs.setdefault("model_hash", model_hash(model))

    def measure() -> dict[str, float]:
        return {j: bits_per_byte(model, tokenizer, list(texts_by_lang[j]), **bpb_kwargs).bits_per_byte
                for j in evaluated}

    base = measure()
    delta = []
    for lang in neurons:
        with ablate_neurons(model, neurons[lang]):
            ablated = measure()
        delta.append([ablated[j] - base[j] for j in evaluated])
    return AblationMatrix(list(neurons), evaluated, base, delta)


# -- summary and files --------------------------------------------------------------------------------------------
def neurons_report(neurons: Neurons, counts: ActivationCounts | None = None, matrix: AblationMatrix | None = None,
                   jaccard_by_lang: Mapping[str, float | None] | None = None, params: Mapping | None = None) -> dict:
    """A JSON-serialisable summary: per language the neuron count and per-layer histogram, the number of neurons
    that belong to two or more languages, the tokens counted (with ``counts``), the ablation matrix and how often a
    language's own ablation hurt its own text most (with ``matrix``), and the two-halves Jaccard (with
    ``jaccard_by_lang``). ``params`` (e.g. the thresholds) is copied in as given."""
    n_layers = 1 + max((int(layer) for by_layer in neurons.values() for layer in by_layer), default=-1)
    per_layer = {lang: [len(by_layer.get(layer, ())) for layer in range(n_layers)]
                 for lang, by_layer in neurons.items()}
    owners: dict[tuple[int, int], int] = {}
    for by_layer in neurons.values():
        for pair in _pairs(by_layer):
            owners[pair] = owners.get(pair, 0) + 1
    report = {
        "method": "LAPE (Tang et al., ACL 2024)",
        "languages": list(neurons),
        "params": dict(params) if params else {},
        "n_neurons": neuron_counts(neurons),
        "per_layer": per_layer,
        "n_shared": sum(1 for c in owners.values() if c > 1),
        "n_tokens": {k: int(v) for k, v in counts.n_tokens.items()} if counts is not None else None,
        "ablation": matrix.as_dict() if matrix is not None else None,
        "stability_jaccard": dict(jaccard_by_lang) if jaccard_by_lang is not None else None,
    }
    json.dumps(report, allow_nan=False)  # refuse NaN/inf here rather than in a reader
    return report


_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def write_neurons(neurons: Neurons, out_dir: str | Path) -> list[Path]:
    """Save ``OUT/neurons/<lang>.json`` per language: ``{"<layer>": [neuron indices]}`` for every layer."""
    folder = Path(out_dir) / "neurons"
    bad = [lang for lang in neurons if not _SAFE.match(lang) or ".." in lang]
    if bad:
        raise XltError(f"language code {bad[0]!r} cannot be a file name", "use codes of letters, digits, _ . -")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for lang, by_layer in neurons.items():
        path = folder / f"{lang}.json"
        data = {str(int(layer)): [int(j) for j in torch.as_tensor(ix).tolist()]
                for layer, ix in sorted(by_layer.items())}
        path.write_text(json.dumps(data) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def read_neurons(out_dir: str | Path) -> Neurons:
    """The neuron sets :func:`write_neurons` saved under ``OUT/neurons/``."""
    folder = Path(out_dir) / "neurons"
    files = sorted(folder.glob("*.json"))
    if not files:
        raise XltError(f"no neuron sets in {folder}", "run the neuron analysis first (it writes neurons/<lang>.json)")
    out: Neurons = {}
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        out[path.stem] = {int(layer): torch.tensor(ix, dtype=torch.long) for layer, ix in data.items()}
    return out


def find_language_neurons(model, tokenizer, texts_by_lang: Mapping[str, Sequence[str]],
                          eval_texts_by_lang: Mapping[str, Sequence[str]] | None = None, top_rate: float = 0.01,
                          filter_rate: float = 0.95, activation_bar_ratio: float = 0.95, max_length: int = 128,
                          batch_size: int = 16, min_tokens: int = MIN_TOKENS, show_progress: bool = False,
                          **bpb_kwargs) -> tuple[Neurons, dict]:
    """The whole analysis on its own: count (one pass, halves kept apart), select, check stability, and, with
    ``eval_texts_by_lang``, the ablation matrix. Returns the neuron sets and :func:`neurons_report`."""
    params = dict(top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=activation_bar_ratio)
    full, (first, second) = count_activations(model, tokenizer, texts_by_lang, max_length=max_length,
                                              batch_size=batch_size, split_halves=True, show_progress=show_progress)
    neurons = lape(full.counts, full.n_tokens, min_tokens=min_tokens, **params)
    jac = stability(first, second, min_tokens=min_tokens, **params)
    matrix = (ablation_matrix(model, tokenizer, neurons, eval_texts_by_lang, **bpb_kwargs)
              if eval_texts_by_lang else None)
    return neurons, neurons_report(neurons, full, matrix, jac, {**params, "max_length": max_length,
                                                                "min_tokens": min_tokens})
