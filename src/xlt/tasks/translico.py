"""TransliCo (Liu, Ma, Ye, Schütze, ACL 2024; seed-papers §20): continued pretraining on sentences paired with their
uroman romanisation, loss = MLM(original) + MLM(romanised) + w · TCM.

TCM (Transliteration Contrastive Modeling), as ``cisnlp/TransliCo``'s ``seq_contrast`` computes it:

- ``p_i`` / ``q_i`` = mean of layer ``L``'s hidden states of sentence i and of its romanisation over the tokens
  that are not special tokens or padding (``L`` indexes ``hidden_states``: 0 = the embedding output, 8 = after the
  8th layer, the paper's default);
- interleave them into 2B vectors ``z = [p_1, q_1, p_2, q_2, …]``; similarity ``z zᵀ / τ`` (dot product, no
  normalisation; τ = 1) with the diagonal masked to −∞;
- each row's positive is its pair (label 1, 0, 3, 2, …): ``TCM = ½ · mean_rows(−log softmax(row)[positive])``.

The hidden states are those of the MLM forward pass (the inputs with [MASK]s), as in the reference trainer.
MLM here uses :class:`TiedMLMHead` (dense + GELU + LayerNorm, decoder tied to the input embeddings) over a
vocabulary subset (the tokens of the training texts), so an encoder without an MLM head (e5) can train on CPU.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from xlt.errors import XltError
from xlt.options import option
from xlt.tasks.registry import register_loss, register_module

PAPER = "Liu, Ma, Ye, Schütze 2024, TransliCo (arXiv 2401.06620); cisnlp/TransliCo"


def _positive(v) -> str | None:
    return None if v > 0 else "must be > 0"


@dataclass
class TcmOptions:
    """Options of the TCM loss."""

    tau: float = option(1.0, "temperature of the dot-product similarity", check=_positive)


@dataclass
class TransliCoOptions:
    """Options of TransliCo continued pretraining."""

    layer: int = option(8, "hidden_states index whose mean pool TCM contrasts (0 = embeddings)")
    tau: float = option(1.0, "TCM temperature", check=_positive)
    tcm_weight: float = option(1.0, "w in MLM + MLM + w·TCM (0: MLM only)")
    mlm_probability: float = option(0.15, "share of tokens masked (80/10/10 [MASK]/random/kept)", check=_positive)
    steps: int = option(40, "optimizer steps", check=_positive)
    batch_size: int = option(8, "sentence pairs per step", check=_positive)
    lr: float = option(5e-5, "AdamW learning rate", check=_positive)
    max_length: int = option(48, "tokens per sentence (special tokens included)", check=_positive)
    seed: int = option(0, "seed of batches, masking and the head's initialisation")


# ---------------------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------------------
def _pool(h, mask, what: str):
    m = mask.to(h.dtype).unsqueeze(-1)
    n = m.sum(1)
    if bool((n == 0).any()):
        raise XltError(f"a {what} sentence has no token to pool (only special tokens or padding)",
                       "drop empty sentences")
    return (h * m).sum(1) / n


def _example(generator):
    import torch

    h1 = torch.randn(3, 5, 8, generator=generator).requires_grad_(True)
    h2 = torch.randn(3, 6, 8, generator=generator).requires_grad_(True)
    m1 = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0], [0, 1, 1, 1, 1]])
    m2 = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 1, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1]])
    return (h1, h2, m1, m2), {"tau": 4.0}


@register_loss("tcm", description="TransliCo transliteration contrastive loss: NT-Xent over interleaved mean-pooled "
               "original/romanised states, diagonal masked, × 0.5", options=TcmOptions, example=_example, paper=PAPER)
def tcm_loss(h_orig, h_translit, mask_orig, mask_translit, tau: float = 1.0):
    """TCM of B sentence pairs: ``h_*`` (B, length, dim) hidden states of one layer, ``mask_*`` (B, length) 1 on
    the tokens to pool (not special, not padding). See the module docstring for the formula."""
    import torch
    import torch.nn.functional as F

    if h_orig.shape[0] != h_translit.shape[0] or h_orig.shape[-1] != h_translit.shape[-1]:
        raise XltError(f"TCM needs as many original as romanised sentences of one width, not {tuple(h_orig.shape)} "
                       f"and {tuple(h_translit.shape)}", "pass one romanisation per sentence, same layer")
    if tau <= 0:
        raise XltError(f"tau must be > 0, not {tau}", "pass tau=1.0")
    p, q = _pool(h_orig, mask_orig, "original"), _pool(h_translit, mask_translit, "romanised")
    b = p.shape[0]
    z = torch.stack([p, q], 1).reshape(2 * b, -1)
    sim = (z @ z.T / tau).masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    labels = torch.arange(2 * b, device=z.device) ^ 1  # 1, 0, 3, 2, …
    return F.nll_loss(torch.log_softmax(sim.float(), dim=-1), labels) * 0.5


# ---------------------------------------------------------------------------------------------------------
# model parts
# ---------------------------------------------------------------------------------------------------------
def check_layer(encoder, layer: int) -> int:
    """``layer`` if it indexes the encoder's ``hidden_states`` (0 … number of layers), else one error."""
    n = int(encoder.config.num_hidden_layers)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= n:
        raise XltError(f"TCM layer {layer!r} is out of range: this encoder has {n} layers (hidden_states 0…{n})",
                       f"pass a layer between 0 and {n} (TransliCo uses 8 on 12-layer encoders)")
    return layer


@dataclass
class TiedMLMHeadOptions:
    """Options of the tied MLM head."""

    vocab_ids: list[int] = option([], "token ids the softmax covers (empty: the whole vocabulary)")


@register_module("tied_mlm_head", description="MLM head (dense, GELU, LayerNorm, decoder tied to the input "
                 "embeddings) with a softmax over a vocabulary subset", options=TiedMLMHeadOptions, paper=PAPER)
class TiedMLMHead(nn.Module):
    """``head(hidden) -> logits`` over ``vocab_ids`` (logit j is token ``vocab_ids[j]``); the decoder is the encoder's
    input embeddings at those rows (tied), plus a bias."""

    def __init__(self, encoder, vocab_ids: Sequence[int] | None = None):
        super().__init__()
        d = encoder.config.hidden_size
        self.embeddings = encoder.get_input_embeddings()
        n = self.embeddings.num_embeddings
        ids = sorted({int(i) for i in vocab_ids}) if vocab_ids else list(range(n))
        if ids[0] < 0 or ids[-1] >= n:
            raise XltError(f"vocab_ids must lie in 0…{n - 1}", "pass token ids of this encoder's vocabulary")
        self.register_buffer("vocab_ids", torch.tensor(ids, dtype=torch.long), persistent=True)
        self.dense = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d, eps=getattr(encoder.config, "layer_norm_eps", 1e-12))
        self.bias = nn.Parameter(torch.zeros(len(ids)))

    def forward(self, hidden):
        x = self.norm(nn.functional.gelu(self.dense(hidden)))
        return x @ self.embeddings.weight[self.vocab_ids].T + self.bias

    def targets(self, token_ids):
        """Positions of ``token_ids`` in ``vocab_ids`` (−100 for ids outside the subset)."""
        pos = torch.searchsorted(self.vocab_ids, token_ids).clamp(max=len(self.vocab_ids) - 1)
        return torch.where(self.vocab_ids[pos] == token_ids, pos, torch.full_like(pos, -100))


def mask_tokens(input_ids, special_mask, vocab, mask_id: int, probability: float, generator):
    """BERT masking of the non-special tokens: ``(masked ids, labels)``; each token where ``special_mask`` is 0 is
    chosen with ``probability`` (labels keep its id there, −100 elsewhere); of the chosen, 80 % become ``mask_id``,
    10 % a random id of ``vocab`` (a 1-d tensor), 10 % stay."""
    ids = input_ids.clone()
    chosen = (torch.rand(ids.shape, generator=generator) < probability) & ~special_mask.bool()
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    roll = torch.rand(ids.shape, generator=generator)
    ids[chosen & (roll < 0.8)] = int(mask_id)
    rnd = chosen & (roll >= 0.8) & (roll < 0.9)
    ids[rnd] = vocab[torch.randint(0, len(vocab), (int(rnd.sum()),), generator=generator)]
    return ids, labels


def _encode(tokenizer, texts, max_length):
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                    return_special_tokens_mask=True, return_token_type_ids=False)
    pool = enc["attention_mask"] * (1 - enc["special_tokens_mask"])
    return enc["input_ids"], enc["attention_mask"], pool


def translico_step(encoder, head, tokenizer, orig: Sequence[str], translit: Sequence[str], o: TransliCoOptions,
                   generator) -> dict:
    """The losses of one batch: ``{"loss", "mlm_orig", "mlm_translit", "tcm"}`` (``loss`` has a graph)."""
    import torch
    import torch.nn.functional as F

    layer = check_layer(encoder, o.layer)
    mlm, states, pools = [], [], []
    for texts in (orig, translit):
        ids, att, pool = _encode(tokenizer, texts, o.max_length)
        masked, labels = mask_tokens(ids, 1 - pool, head.vocab_ids, tokenizer.mask_token_id, o.mlm_probability,
                                     generator)
        out = encoder(input_ids=masked, attention_mask=att, output_hidden_states=o.tcm_weight != 0)
        sel = labels != -100
        if bool(sel.any()):
            logits = head(out.last_hidden_state[sel])
            mlm.append(F.cross_entropy(logits, head.targets(labels[sel]), ignore_index=-100))
        else:
            mlm.append(out.last_hidden_state.sum() * 0.0)
        if o.tcm_weight != 0:
            states.append(out.hidden_states[layer])
            pools.append(pool)
    tcm = tcm_loss(states[0], states[1], pools[0], pools[1], o.tau) if o.tcm_weight != 0 else torch.zeros(())
    loss = mlm[0] + mlm[1] + o.tcm_weight * tcm
    return {"loss": loss, "mlm_orig": float(mlm[0].detach()), "mlm_translit": float(mlm[1].detach()),
            "tcm": float(tcm.detach())}


def vocab_subset(tokenizer, texts: Sequence[str]) -> list[int]:
    """Token ids occurring in ``texts`` plus the special tokens (the MLM softmax's support)."""
    ids = {i for row in tokenizer(list(texts), add_special_tokens=False)["input_ids"] for i in row}
    return sorted(ids | set(tokenizer.all_special_ids))


def train_translico(encoder, tokenizer, orig: Sequence[str], translit: Sequence[str],
                    o: TransliCoOptions | None = None, head=None, log=None) -> dict:
    """Continued pretraining of ``encoder`` in place on ``(orig[i], translit[i])`` pairs: MLM on both scripts plus
    ``o.tcm_weight`` · TCM at ``o.layer``; the input embeddings stay frozen (their rows are the tied decoder).
    Returns the loss curves and the head."""
    import torch

    o = o or TransliCoOptions()
    check_layer(encoder, o.layer)
    if len(orig) != len(translit) or len(orig) < 2:
        raise XltError(f"TransliCo needs ≥ 2 sentences each with its romanisation, got {len(orig)} and "
                       f"{len(translit)}", "pass parallel lists (xlt.data.romanize.romanize_texts)")
    if tokenizer.mask_token_id is None:
        raise XltError("the tokenizer has no mask token", "use an encoder tokenizer with [MASK] / <mask>")
    torch.manual_seed(o.seed)
    head = head or TiedMLMHead(encoder, vocab_subset(tokenizer, list(orig) + list(translit)))
    emb = encoder.get_input_embeddings()
    emb.weight.requires_grad_(False)
    params = [p for p in list(encoder.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=o.lr)
    g = torch.Generator().manual_seed(o.seed)
    rng = random.Random(o.seed)
    order: list[int] = []
    curves = {"loss": [], "mlm_orig": [], "mlm_translit": [], "tcm": []}
    t0 = time.perf_counter()
    encoder.train()
    head.train()
    try:
        for step in range(o.steps):
            if len(order) < o.batch_size:
                rest = list(range(len(orig)))
                rng.shuffle(rest)
                order += rest
            idx, order = order[:o.batch_size], order[o.batch_size:]
            r = translico_step(encoder, head, tokenizer, [orig[i] for i in idx], [translit[i] for i in idx], o, g)
            opt.zero_grad(set_to_none=True)
            r["loss"].backward()
            opt.step()
            for key in curves:
                curves[key].append(float(r[key]) if key != "loss" else float(r["loss"].detach()))
            if log and (step % 10 == 0 or step == o.steps - 1):
                log(f"step {step + 1}/{o.steps}: loss {curves['loss'][-1]:.3f} (MLM {r['mlm_orig']:.3f} + "
                    f"{r['mlm_translit']:.3f}, TCM {r['tcm']:.3f})")
    finally:
        encoder.eval()
        head.eval()
        emb.weight.requires_grad_(True)
    return {"curves": curves, "seconds": time.perf_counter() - t0, "head": head}


def layer_vectors(encoder, tokenizer, texts: Sequence[str], layer: int, batch_size: int = 32,
                  max_length: int = 128) -> np.ndarray:
    """(len(texts), hidden) mean-pooled layer ``layer`` states (special tokens and padding excluded), eval mode."""

    check_layer(encoder, layer)
    out = []
    was = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            for a in range(0, len(texts), batch_size):
                ids, att, pool = _encode(tokenizer, texts[a:a + batch_size], max_length)
                h = encoder(input_ids=ids, attention_mask=att, output_hidden_states=True).hidden_states[layer]
                out.append(_pool(h, pool, "").float().numpy())
    finally:
        encoder.train(was)
    return np.concatenate(out) if out else np.zeros((0, encoder.config.hidden_size), dtype=np.float32)


def cross_script_retrieval(encoder, tokenizer, orig: Sequence[str], translit: Sequence[str], layer: int = 8,
                           max_length: int = 128) -> dict:
    """Retrieval@1 (= BLI P@1 with identity gold, :func:`xlt.tasks.bli.bli`, cosine) of each sentence's
    romanisation among all romanisations (``orig_to_translit``) and back, on layer ``layer``'s mean pools."""
    from xlt.tasks.bli import bli

    a = layer_vectors(encoder, tokenizer, list(orig), layer, max_length=max_length)
    b = layer_vectors(encoder, tokenizer, list(translit), layer, max_length=max_length)
    r = bli(a, b, [(i, i) for i in range(len(a))], method="nn")
    return {"orig_to_translit": r["src_to_tgt"]["p_at_1"], "translit_to_orig": r["tgt_to_src"]["p_at_1"],
            "sentences": len(a), "layer": layer}
