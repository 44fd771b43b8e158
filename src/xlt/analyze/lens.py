"""Logit lens and tuned lens: decode every layer's residual stream with what the model does after its last layer.

Layers are numbered ``0..L``: layer 0 is the input of the first decoder block (the embeddings, scaled as the model
scales them), layer ℓ ≥ 1 the output of block ℓ, and layer L the last block's output. The residual stream is read
by forward hooks on the decoder blocks (:func:`xlt.analyze.capture.decoder_layers`), *before* any final norm, so
every layer goes through the same decoding:

    logits_ℓ = post(head(final_norm(h_ℓ)))

``final_norm`` is the backbone's own final norm module, ``head`` the model's output embedding module, and ``post``
the family's logit post-processing: Gemma-2/3 ``final_logit_softcapping`` (``c·tanh(z/c)``), Cohere's
``logit_scale`` (``z·s``) and Granite's ``logits_scaling`` (``z/s``). At layer L this is exactly the model's own
computation, so the lens at L equals the model's logits; :class:`LensProbe` checks that on the first batch it sees
and refuses to go on when it does not hold (an unknown family that applies something else after its last layer).

Why hooks and not ``output_hidden_states``: in transformers 5.x the last entry of ``hidden_states`` is the
*final-normed* state (``tie_last_hidden_states``) for Llama, Gemma-3, Qwen2, GPT-2, Mixtral and OLMoE alike, while
the others are pre-norm; a lens reading ``hidden_states`` must skip the norm at L only. Reading the blocks' outputs
avoids the special case (the tests check that both views agree for every family).

Only the positions asked for are decoded (``positions="last"``: the last real token of each row; ``"all"``: every
real token), in chunks of rows, one layer at a time; what is kept is a reduction (entropy in bits, KL to the final
layer, top-k tokens, log-probability of given token sets, token energy) unless ``keep_probs`` asks for the full
distributions of the decoded rows.

The **tuned lens** (Belrose et al. 2023; the semantics of the ``tuned-lens`` 0.2.0 package) adds a residual affine
translator per layer below L, ``h + A_ℓ h + b_ℓ``, zero-initialised (so an untrained tuned lens *is* the logit
lens), trained to minimise KL(final-layer distribution ‖ lens distribution) at the same token, with the package's
optimiser (SGD with Nesterov momentum 0.9, learning rate ``lr_scale·(1 − 0.9)``, weight decay 1e-3, gradient norm
clipped to 1, linear decay to zero; or Adam with AMSGrad). Translators are saved as safetensors.
"""

from __future__ import annotations

import abc

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from xlt.analyze.capture import Batch, Probe, Tokenized, decoder_layers, run_probes, tokenize
from xlt.errors import XltError

__all__ = [
    "LogitLens", "TunedLens", "LensProbe", "ResidualProbe", "LensRows", "LensResult", "HiddenStates",
    "final_norm", "logit_lens", "lens_kl", "lens_report", "token_text",
]

LN2 = math.log(2.0)
POSITIONS = ("last", "all")
_MISSING = object()
#: where the final norm sits under a causal LM's backbone (``model.base_model``), first match wins
_NORM_PATHS = ("norm", "ln_f", "final_layer_norm", "final_norm", "norm_f", "decoder.final_layer_norm",
               "language_model.norm")


def _unwrap(model):
    """The transformers model under a PEFT wrapper (``get_base_model``), else ``model`` itself."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def final_norm(model):
    """The module a causal LM applies between its last decoder block and its LM head (``None`` when the model has
    the attribute but no norm in it, as OPT-350m)."""
    hf = _unwrap(model)
    backbone = getattr(hf, "base_model", hf)
    for path in _NORM_PATHS:
        obj: Any = backbone
        for part in path.split("."):
            obj = getattr(obj, part, _MISSING)
            if obj is _MISSING:
                break
        if obj is not _MISSING:
            return obj
    raise XltError(f"cannot find the final norm of a {type(hf).__name__}",
                   "the lens supports decoder-only causal LMs whose backbone has a final norm named "
                   f"{', '.join(_NORM_PATHS[:5])} (Llama, Gemma, Qwen, GPT-2, Mixtral, OLMoE families)")


def _chunks(n: int, size: int):
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


class LogitLens:
    """``logits(h, layer)``: the model's own final norm, LM head and logit post-processing applied to a residual
    state ``h`` (..., d) of any layer; float32 logits. Holds references to the model's modules (no copies)."""

    kind = "logit"

    def __init__(self, model):
        hf = _unwrap(model)
        self.model = model
        self.norm = final_norm(hf)
        self.head = hf.get_output_embeddings()
        if self.head is None or getattr(self.head, "weight", None) is None:
            raise XltError(f"a {type(hf).__name__} has no output embedding (LM head) to decode with",
                           "give a causal language model (…ForCausalLM)")
        self.num_layers = len(decoder_layers(model))
        cfg = hf.config
        text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self.softcap = getattr(text, "final_logit_softcapping", None)
        mul = getattr(hf, "logit_scale", None)  # Cohere keeps config.logit_scale as a plain number on the model
        self.scale_mul = float(mul) if isinstance(mul, (int, float)) and not isinstance(mul, bool) else None
        div = getattr(text, "logits_scaling", None)  # Granite divides by config.logits_scaling
        self.scale_div = float(div) if isinstance(div, (int, float)) and not isinstance(div, bool) else None
        self._energy: tuple | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def normed(self, h: torch.Tensor) -> torch.Tensor:
        """``final_norm(h)`` in the model's dtype."""
        x = h.to(self.dtype)
        return x if self.norm is None else self.norm(x)

    def logits(self, h: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """Float32 logits of residual states ``h`` (..., d); ``layer`` is unused (the logit lens is the same at
        every layer) and kept so that every lens has one signature."""
        z = self.head(self.normed(h))
        if self.scale_mul is not None:
            z = z * self.scale_mul
        if self.scale_div is not None:
            z = z / self.scale_div
        if self.softcap is not None:
            z = torch.tanh(z / self.softcap) * self.softcap
        return z.float()

    # --- token energy (Wendler et al. 2024) ------------------------------------------------------------------
    def _energy_parts(self) -> tuple:
        """(gain g, the norm of the zero vector, per-token row norms ‖W_v ⊙ g‖, √(‖ÛᵀÛ‖²_F / V²)), computed once.

        The norm's per-dimension gain is read off the module itself: for a zero-mean ±1 probe vector s,
        (N(s) − N(−s))/2 · s = g for RMSNorm (g = weight, or 1 + weight in Gemma) and LayerNorm alike."""
        if self._energy is not None:
            return self._energy
        w = self.head.weight
        d = w.shape[1]
        with torch.no_grad():
            s = torch.ones(d, device=w.device)
            s[1::2] = -1.0
            if d % 2:  # keep the probe zero-mean so LayerNorm's centring leaves it alone
                s[-1] = 0.0
            g = torch.zeros(d, device=w.device)
            for p in (s, torch.roll(s, 1)):
                pos = self.normed(p.unsqueeze(0)).float()[0]
                neg = self.normed(-p.unsqueeze(0)).float()[0]
                g = torch.where(p != 0, (pos - neg) / 2 * p, g)
            n0 = self.normed(torch.zeros(1, d, device=w.device)).float()[0]
            rows = torch.empty(w.shape[0], device=w.device)
            gram = torch.zeros(d, d, device=w.device, dtype=torch.float64)
            for sl in _chunks(w.shape[0], 8192):
                u = w[sl].float() * g
                r = u.norm(dim=1).clamp_min(1e-30)
                rows[sl] = r
                u = u / r.unsqueeze(1)
                gram += (u.T @ u).double()
            avg = float(gram.pow(2).sum().sqrt() / w.shape[0])
        self._energy = (g, n0, rows, avg)
        return self._energy

    def energy(self, h: torch.Tensor) -> torch.Tensor:
        """Token energy of residual states ``h`` (N, d) → (N,), as in Wendler et al. (2024):
        √(mean_v (Û_v·ĥ)²) / √(‖ÛᵀÛ‖²_F / V²), with Û the unit-length rows of the unembedding scaled by the final
        norm's gain and ĥ the unit-length normalised state (the norm without its gain and bias)."""
        g, n0, rows, avg = self._energy_parts()
        with torch.no_grad():
            x = self.normed(h).float() - n0
            safe = torch.where(g != 0, g, torch.ones_like(g))
            x = torch.where(g != 0, x / safe, torch.zeros_like(x))
            x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            proj = (x * g) @ self.head.weight.float().T / rows
            return proj.pow(2).mean(-1).sqrt() / avg


def _unembed_fingerprint(lens: LogitLens) -> str:
    w = lens.head.weight.detach().float().cpu().contiguous()
    return hashlib.sha256(w.numpy().tobytes()).hexdigest()[:16]


@dataclass
class HiddenStates:
    """Residual states of one group at the captured positions: ``states`` (L+1, n, d) float32 on the CPU, rows in
    text order (``index``, then ``position``)."""

    index: np.ndarray
    position: np.ndarray
    states: torch.Tensor


class _Residual(Probe, abc.ABC):
    """Hooks every decoder block and keeps, per batch, the residual stream of layers 0..L at the chosen positions;
    a subclass says what it keeps of them (``_consume``)."""

    def __init__(self, model, positions: str = "last", groups: Sequence[str] | None = None,
                 exclude_first: bool = False):
        if positions not in POSITIONS:
            raise XltError(f"unknown lens positions {positions!r}", f"choose one of: {', '.join(POSITIONS)}")
        self.positions = positions
        self.groups = None if groups is None else set(groups)
        self.exclude_first = bool(exclude_first)
        self.num_layers = len(decoder_layers(model))
        self._states: list[torch.Tensor | None] = [None] * (self.num_layers + 1)
        self._where: tuple | None = None

    def _wants(self, batch: Batch) -> bool:
        return self.groups is None or batch.lang in self.groups

    def _select(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, positions) of the states to keep in ``batch``, on the batch's device."""
        if self._where is not None and self._where[0] is batch:
            return self._where[1], self._where[2]
        if self.positions == "last":
            rows = torch.arange(batch.input_ids.shape[0], device=batch.mask.device)
            pos = batch.last.to(batch.mask.device)
            if self.exclude_first:
                keep = pos > 0
                rows, pos = rows[keep], pos[keep]
        else:
            m = batch.mask.clone()
            if self.exclude_first:
                m[:, 0] = False
            rows, pos = m.nonzero(as_tuple=True)
        self._where = (batch, rows, pos)
        return rows, pos

    def _take(self, batch: Batch, h) -> torch.Tensor:
        h = h[0] if isinstance(h, (tuple, list)) else h
        rows, pos = self._select(batch)
        return h[rows.to(h.device), pos.to(h.device)].detach()

    def hooks(self, model):
        layers = decoder_layers(model)

        def first(batch, args, output):
            if not self._wants(batch):
                return
            if not args or not torch.is_tensor(args[0]):
                raise XltError(f"the first decoder block of a {type(model).__name__} got its input by keyword",
                               "the lens reads the block's first positional argument; this family is not supported")
            self._states[0] = self._take(batch, args[0])
            self._states[1] = self._take(batch, output)

        def later(i):
            def fn(batch, args, output):
                if self._wants(batch):
                    self._states[i] = self._take(batch, output)
            return fn

        return [(layers[0], first)] + [(layers[i - 1], later(i)) for i in range(2, len(layers) + 1)]

    def on_output(self, batch: Batch, out) -> None:
        if not self._wants(batch):
            return
        missing = [i for i, s in enumerate(self._states) if s is None]
        if missing:
            raise XltError(f"layers {missing} of the residual stream were not captured",
                           "the model skipped decoder blocks in its forward; the lens needs every block to run")
        rows, pos = self._select(batch)
        states = torch.stack(self._states)  # (L+1, N, d)
        self._states = [None] * (self.num_layers + 1)
        self._where = None
        self._consume(batch, states, rows, pos, out)

    @abc.abstractmethod
    def _consume(self, batch: Batch, states: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor, out) -> None:
        """Reduce one batch's ``states`` ((L+1) × rows × d at ``rows``/``pos``) into what the probe keeps."""


class ResidualProbe(_Residual):
    """Keeps the residual stream of layers 0..L at the chosen positions (float32, CPU); ``result()`` gives
    ``{group: HiddenStates}``. Used to train a tuned lens; memory is (L+1) × rows × d."""

    name = "hidden"

    def __init__(self, model, positions: str = "all", groups: Sequence[str] | None = None,
                 exclude_first: bool = False):
        super().__init__(model, positions, groups, exclude_first)
        self._parts: dict[str, list] = {}

    def _consume(self, batch, states, rows, pos, out) -> None:
        idx = batch.index.to(rows.device)[rows]
        self._parts.setdefault(batch.lang, []).append(
            (idx.cpu().numpy(), pos.cpu().numpy(), states.float().cpu()))

    def result(self) -> dict[str, HiddenStates]:
        res = {}
        for g, parts in self._parts.items():
            index = np.concatenate([p[0] for p in parts])
            position = np.concatenate([p[1] for p in parts])
            states = torch.cat([p[2] for p in parts], dim=1)
            order = np.lexsort((position, index))
            res[g] = HiddenStates(index[order], position[order], states[:, torch.from_numpy(order)].clone())
        return res


@dataclass
class LensRows:
    """What a lens decoded for one group, rows in text order (``index``, then ``position``); arrays are (L+1, n, …).

    ``entropy`` in bits; ``kl`` = KL(final layer ‖ layer) in nats (0 at L); ``top1_agree`` whether the layer's
    argmax is the final layer's; ``set_logprobs[name]`` the log-probability of each row's token set ``name`` (−inf
    for an empty set); ``energy`` token energy (when asked); ``probs`` the full distributions (when asked);
    ``mean_probs`` (L+1, V) the distribution averaged over the rows (when asked)."""

    index: np.ndarray
    position: np.ndarray
    entropy: np.ndarray
    kl: np.ndarray
    top1_agree: np.ndarray
    top_ids: np.ndarray
    top_probs: np.ndarray
    set_logprobs: dict[str, np.ndarray] = field(default_factory=dict)
    energy: np.ndarray | None = None
    probs: np.ndarray | None = None
    mean_probs: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.index)


@dataclass
class LensResult:
    """Per group :class:`LensRows`, plus the settings. ``final_check`` is the largest |lens(L) − model logits| seen
    in the first-batch check (``None`` when the model's output had no logits for a decoded row)."""

    lens: str
    positions: str
    num_layers: int
    groups: dict[str, LensRows]
    final_check: float | None = None
    top_k: int = 5

    @property
    def layers(self) -> list[int]:
        return list(range(self.num_layers + 1))


class LensProbe(_Residual):
    """Decodes layers 0..L with a lens at the chosen positions, during the shared capture pass.

    ``lens``: a :class:`LogitLens` (default) or :class:`TunedLens`. ``groups``: only batches of these text groups
    (``None``: all). ``token_sets``: ``{group: [ {name: token ids}, … one mapping per text ]}``; each decoded row gets
    the log-probability of its text's sets. ``keep_probs`` keeps the full distributions of the decoded rows (memory
    (L+1) × rows × V); ``mean_probs`` sums them per group on the fly ((L+1) × V); ``energy`` adds token energy;
    ``exclude_first`` skips position 0 (the BOS token); ``chunk_rows`` rows are decoded at a time. ``check``: on the
    first batch, compare the lens at layer L with the model's logits for a decoded row and raise
    an :class:`~xlt.errors.XltError` when they differ (beyond float rounding).
    """

    name = "lens"

    def __init__(self, model, positions: str = "last", *, lens=None, groups: Sequence[str] | None = None,
                 token_sets: Mapping[str, Sequence[Mapping[str, Sequence[int]]]] | None = None, top_k: int = 5,
                 keep_probs: bool = False, mean_probs: bool = False, energy: bool = False,
                 exclude_first: bool = False, chunk_rows: int = 256, check: bool = True):
        super().__init__(model, positions, groups, exclude_first)
        self.lens = lens if lens is not None else LogitLens(model)
        if self.lens.num_layers != self.num_layers:
            raise XltError(f"the lens has {self.lens.num_layers} layers but the model {self.num_layers}",
                           "use a lens made for this model")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise XltError(f"top_k must be a whole number ≥ 1, got {top_k!r}", "pass e.g. top_k=5")
        self.top_k = top_k
        self.token_sets = {g: list(v) for g, v in (token_sets or {}).items()}
        self._set_names = {g: list(dict.fromkeys(k for m in v for k in m)) for g, v in self.token_sets.items()}
        self.keep_probs, self.mean_probs, self.energy = bool(keep_probs), bool(mean_probs), bool(energy)
        self.chunk_rows = max(1, int(chunk_rows))
        self.check = bool(check)
        self._checked = False
        self._final_check: float | None = None
        self._parts: dict[str, list[dict]] = {}
        self._mean: dict[str, torch.Tensor] = {}

    def _set_index(self, group: str, text_idx: torch.Tensor, vocab: int, device) -> dict[str, tuple]:
        """Per set name: (padded ids (n, m), valid mask (n, m)) for rows whose texts are ``text_idx``."""
        sets = self.token_sets.get(group)
        if not sets:
            return {}
        rows = text_idx.tolist()
        if max(rows) >= len(sets):
            raise XltError(f"token_sets of {group!r} has {len(sets)} entries but the group has more texts",
                           "give one mapping of token sets per text of the group")
        out = {}
        for k in self._set_names[group]:  # every set of the group, so every chunk has the same sets
            lists = [[int(t) for t in sets[i].get(k, ()) if 0 <= int(t) < vocab] for i in rows]
            m = max(1, max(len(x) for x in lists))
            ids = torch.zeros(len(lists), m, dtype=torch.long)
            valid = torch.zeros(len(lists), m, dtype=torch.bool)
            for r, x in enumerate(lists):
                ids[r, :len(x)] = torch.tensor(x, dtype=torch.long)
                valid[r, :len(x)] = True
            out[k] = (ids.to(device), valid.to(device))
        return out

    def _final_layer_check(self, batch: Batch, out, rows, pos, z_final, sl) -> None:
        logits = getattr(out, "logits", None)
        if logits is None or self._checked:
            return
        t, kept = batch.input_ids.shape[1], logits.shape[1]  # logits_to_keep=k: only the last k columns
        r, p = rows[sl], pos[sl]
        hits = (p >= t - kept).nonzero(as_tuple=True)[0]
        if len(hits) == 0:
            return
        k = int(hits[0])
        ref = logits[r[k].to(logits.device), (p[k] - (t - kept)).to(logits.device)].float().to(z_final.device)
        diff = float((z_final[k] - ref).abs().max())
        scale = max(1.0, float(ref.abs().max()))
        exact = logits.dtype == torch.float32 and self.lens.dtype == torch.float32
        tol = (1e-4 if exact else 3e-2) * scale
        self._checked = True
        self._final_check = diff
        if not diff <= tol:
            raise XltError(
                f"the lens at the last layer does not reproduce the logits of this "
                f"{type(_unwrap(self.lens.model)).__name__} (largest difference {diff:.3g})",
                "this model family applies something after its last decoder block that xlt's lens does not know "
                "(it knows the final norm, Gemma soft-capping, Cohere and Granite logit scaling); "
                "report the model class")

    def _consume(self, batch, states, rows, pos, out) -> None:
        lens, L, k = self.lens, self.num_layers, self.top_k
        group = batch.lang
        n = rows.shape[0]
        if n == 0:
            return
        text_idx = batch.index.to(rows.device)[rows].cpu()
        device = lens.device
        res: dict[str, Any] = {"index": text_idx.numpy(), "position": pos.cpu().numpy(), "entropy": [], "kl": [],
                               "top1_agree": [], "top_ids": [], "top_probs": [], "sets": {}, "energy": [],
                               "probs": []}
        for sl in _chunks(n, self.chunk_rows):
            hs = states[:, sl].to(device)
            z_final = lens.logits(hs[L], L)
            if self.check:
                self._final_layer_check(batch, out, rows, pos, z_final, sl)
            lp_final = torch.log_softmax(z_final, -1)
            p_final = lp_final.exp()
            arg_final = lp_final.argmax(-1)
            vocab = z_final.shape[-1]
            sets = self._set_index(group, text_idx[sl], vocab, device)
            ent, kl, agree, tid, tpr, en, pr = [], [], [], [], [], [], []
            sres: dict[str, list] = {name: [] for name in sets}
            for layer in range(L + 1):
                lp = lp_final if layer == L else torch.log_softmax(lens.logits(hs[layer], layer), -1)
                p = lp.exp()
                ent.append((-(p * lp).sum(-1) / LN2).cpu())
                kl.append(torch.zeros(lp.shape[0]) if layer == L else (p_final * (lp_final - lp)).sum(-1).cpu())
                agree.append((lp.argmax(-1) == arg_final).cpu())
                top = lp.topk(min(k, vocab), dim=-1)
                tid.append(top.indices.cpu())
                tpr.append(top.values.exp().cpu())
                for name, (ids, valid) in sets.items():
                    picked = lp.gather(1, ids).masked_fill(~valid, float("-inf"))
                    sres[name].append(torch.logsumexp(picked, dim=-1).cpu())
                if self.energy:
                    en.append(lens.energy(hs[layer]).float().cpu())
                if self.keep_probs:
                    pr.append(p.cpu())
                if self.mean_probs:
                    acc = self._mean.get(group)
                    if acc is None:
                        acc = self._mean[group] = torch.zeros(L + 1, vocab, dtype=torch.float64)
                    acc[layer] += p.sum(0).double().cpu()
            res["entropy"].append(torch.stack(ent))
            res["kl"].append(torch.stack(kl))
            res["top1_agree"].append(torch.stack(agree))
            res["top_ids"].append(torch.stack(tid))
            res["top_probs"].append(torch.stack(tpr))
            for name, v in sres.items():
                res["sets"].setdefault(name, []).append(torch.stack(v))
            if self.energy:
                res["energy"].append(torch.stack(en))
            if self.keep_probs:
                res["probs"].append(torch.stack(pr))
        self._parts.setdefault(group, []).append(res)

    def result(self) -> LensResult:
        groups: dict[str, LensRows] = {}
        for g, parts in self._parts.items():
            index = np.concatenate([p["index"] for p in parts])
            position = np.concatenate([p["position"] for p in parts])
            order = np.lexsort((position, index))

            def cat(chunks: list, order=order):
                return torch.cat(chunks, dim=1).numpy()[:, order] if chunks else None

            # every chunk of the group carries every set name of the group (a text without a set gets -inf)
            sets = {nm: cat([c for p in parts for c in p["sets"][nm]]) for nm in self._set_names.get(g, [])}
            mean = self._mean.get(g)
            groups[g] = LensRows(
                index=index[order], position=position[order],
                entropy=cat([c for p in parts for c in p["entropy"]]), kl=cat([c for p in parts for c in p["kl"]]),
                top1_agree=cat([c for p in parts for c in p["top1_agree"]]),
                top_ids=cat([c for p in parts for c in p["top_ids"]]),
                top_probs=cat([c for p in parts for c in p["top_probs"]]), set_logprobs=sets,
                energy=cat([c for p in parts for c in p["energy"]]) if self.energy else None,
                probs=cat([c for p in parts for c in p["probs"]]) if self.keep_probs else None,
                mean_probs=None if mean is None else (mean / len(index)).float().numpy(),
            )
        return LensResult(self.lens.kind, self.positions, self.num_layers, groups, self._final_check, self.top_k)


# ---------------------------------------------------------------------------------------------------------
# tuned lens
# ---------------------------------------------------------------------------------------------------------
class TunedLens(torch.nn.Module):
    """The tuned lens: ``logits(h, ℓ) = LogitLens(h + A_ℓ h + b_ℓ)`` for ℓ < L, the logit lens itself at L.

    Translators are float32 ``Linear(d, d)`` modules initialised to zero. Train with :meth:`fit`, save with
    :meth:`save`, load with :meth:`load`. ``history`` holds the mean training KL (nats, over layers) per step.
    """

    kind = "tuned"

    def __init__(self, model, bias: bool = True):
        super().__init__()
        self.base = LogitLens(model)  # a plain object: the model's modules are not registered here
        self.num_layers = self.base.num_layers
        self.d_model = int(self.base.head.weight.shape[1])
        self.bias = bool(bias)
        self.translators = torch.nn.ModuleList()
        for _ in range(self.num_layers):
            t = torch.nn.Linear(self.d_model, self.d_model, bias=self.bias, dtype=torch.float32,
                                device=self.base.device)
            torch.nn.init.zeros_(t.weight)
            if t.bias is not None:
                torch.nn.init.zeros_(t.bias)
            self.translators.append(t)
        self.history: list[float] = []
        self.settings: dict = {}

    @property
    def model(self):
        return self.base.model

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    def transform(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """``h + A_ℓ h + b_ℓ`` (identity at the last layer), in ``h``'s dtype."""
        if layer == self.num_layers:
            return h
        t = self.translators[layer]
        x = h.to(t.weight.dtype)
        return (x + t(x)).to(h.dtype)

    def logits(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        return self.base.logits(self.transform(h, layer))

    def energy(self, h: torch.Tensor) -> torch.Tensor:
        """Token energy of the untranslated residual state (a property of the stream, not of the lens)."""
        return self.base.energy(h)

    @classmethod
    def fit(cls, model, tokenizer, texts: Sequence[str] | Mapping[str, Sequence[str]], *, steps: int = 250,
            tokens_per_step: int = 256, max_tokens: int = 4096, max_length: int = 128, optimizer: str = "sgd",
            lr_scale: float = 1.0, momentum: float = 0.9, weight_decay: float = 1e-3, warmup_steps: int | None = None,
            seed: int = 0, batch_size: int = 8, bias: bool = True, show_progress: bool = False) -> "TunedLens":
        """Train a tuned lens on ``texts`` (a list, or ``{group: list}``), CPU-sized.

        The residual stream of every real token except the first (BOS) is captured once, at most ``max_tokens``
        tokens; each step draws ``tokens_per_step`` of them (seeded, without replacement within an epoch) and
        minimises, summed over the layers ℓ < L, KL(p_L ‖ p_ℓ) at the same token (the package's ``--loss kl``,
        ``token_shift`` 0). Optimisers as ``tuned-lens`` 0.2.0: ``"sgd"`` (Nesterov, momentum 0.9, learning rate
        ``lr_scale·(1 − momentum)``, no warm-up) or ``"adam"`` (AMSGrad, β = (momentum, 0.999), learning rate
        ``lr_scale·1e-3``, warm-up ``min(1000, steps // 5)``); weight decay 1e-3; gradient norm clipped to 1; the
        learning rate decays linearly as the package's scheduler does (``get_linear_schedule_with_warmup(opt, w,
        steps − w)``: with a warm-up it reaches zero ``w`` steps before the end). The model is not changed.
        """
        for name, v in (("steps", steps), ("tokens_per_step", tokens_per_step), ("max_tokens", max_tokens)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise XltError(f"{name} must be a whole number ≥ 1, got {v!r}", f"pass e.g. {name}=256")
        if optimizer not in ("sgd", "adam"):
            raise XltError(f"unknown tuned-lens optimizer {optimizer!r}", "choose sgd (the package's default) or adam")
        groups = _groups(texts)
        tok = _limit_tokens(tokenize(tokenizer, groups, max_length=max_length), max_tokens)
        probe = ResidualProbe(model, positions="all", exclude_first=True)
        (hidden,) = run_probes(model, tok, [probe], batch_size=batch_size, pad_id=_pad_id(tokenizer),
                               show_progress=show_progress, desc="tuned lens: capture")
        if not hidden:
            raise XltError("no tokens to train the tuned lens on", "give texts of more than one token")
        states = torch.cat([h.states for h in hidden.values()], dim=1)[:, :max_tokens].clone()
        lens = cls(model, bias=bias)
        lens.settings = {"steps": steps, "tokens_per_step": tokens_per_step, "tokens": int(states.shape[1]),
                         "optimizer": optimizer, "lr_scale": lr_scale, "momentum": momentum,
                         "weight_decay": weight_decay, "seed": seed, "loss": "kl", "max_length": max_length}
        lens._train(states, steps, tokens_per_step, optimizer, lr_scale, momentum, weight_decay, warmup_steps, seed,
                    show_progress)
        return lens

    def _train(self, states, steps, per_step, optimizer, lr_scale, momentum, weight_decay, warmup, seed,
               show_progress) -> None:
        from tqdm.auto import tqdm

        params = list(self.parameters())
        if optimizer == "sgd":
            # the package undoes PyTorch's effective 1/(1 - momentum) step scaling, so lr_scale 1 is its optimum
            opt = torch.optim.SGD(params, lr=lr_scale * (1 - momentum), momentum=momentum, nesterov=True,
                                  weight_decay=weight_decay)
            warmup = 0 if warmup is None else warmup
        else:
            opt = torch.optim.Adam(params, lr=lr_scale * 1e-3, betas=(momentum, 0.999), amsgrad=True,
                                   weight_decay=weight_decay)
            warmup = min(1000, steps // 5) if warmup is None else warmup
        total = steps - warmup  # tuned-lens 0.2.0: get_linear_schedule_with_warmup(opt, w, steps - w)

        def factor(s: int) -> float:
            if s < warmup:
                return s / max(1, warmup)
            return max(0.0, (total - s) / max(1, total - warmup))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        model = self.model
        frozen = [(p, p.requires_grad) for p in model.parameters()]
        was_training = model.training
        gen = torch.Generator().manual_seed(seed)
        n = states.shape[1]
        states = states.to(self.device)
        L = self.num_layers
        perm, cursor = torch.randperm(n, generator=gen), 0
        try:
            model.eval()
            for p, _ in frozen:  # gradients flow through the frozen norm and head into the translators only
                p.requires_grad_(False)
            for _ in tqdm(range(steps), desc="tuned lens: train", disable=not show_progress):
                take, need = [], min(per_step, n)
                while need:
                    if cursor >= n:
                        perm, cursor = torch.randperm(n, generator=gen), 0
                    got = perm[cursor:cursor + need]
                    take.append(got)
                    cursor += len(got)
                    need -= len(got)
                idx = torch.cat(take).to(self.device)
                with torch.no_grad():
                    lp_final = torch.log_softmax(self.base.logits(states[L, idx]), -1)
                    p_final = lp_final.exp()
                loss_sum = 0.0
                for layer in range(L):
                    lp = torch.log_softmax(self.logits(states[layer, idx], layer), -1)
                    loss = (p_final * (lp_final - lp)).sum(-1).mean()
                    loss.backward()
                    loss_sum += float(loss.detach())
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                opt.zero_grad(set_to_none=False)
                sched.step()
                self.history.append(loss_sum / max(1, L))
        finally:
            for p, flag in frozen:
                p.requires_grad_(flag)
            model.train(was_training)

    def save(self, path: str | Path) -> Path:
        """Write the translators to ``path`` (``.safetensors`` is added when missing) with the lens settings and a
        fingerprint of the LM head as metadata; returns the file written."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in self.translators.state_dict().items()}
        meta = {"format": "xlt-tuned-lens", "version": "1", "num_layers": str(self.num_layers),
                "d_model": str(self.d_model), "bias": json.dumps(self.bias),
                "model_class": type(_unwrap(self.model)).__name__,
                "vocab_size": str(self.base.head.weight.shape[0]), "unembed": _unembed_fingerprint(self.base),
                "settings": json.dumps(self.settings), "history": json.dumps(self.history)}
        save_file(tensors, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path, model, strict: bool = True) -> "TunedLens":
        """A lens saved by :meth:`save`, for ``model``. With ``strict``, a lens trained against another LM head
        (its fingerprint differs) is refused."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise XltError(f"tuned lens file {path} does not exist", "give the .safetensors file TunedLens.save wrote")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
            tensors = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types with library text
            raise XltError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0][:120]})",
                           "give the file TunedLens.save wrote") from None
        if meta.get("format") != "xlt-tuned-lens":
            raise XltError(f"{path} is not an xlt tuned lens", "give the file TunedLens.save wrote")
        lens = cls(model, bias=json.loads(meta.get("bias", "true")))
        if int(meta["num_layers"]) != lens.num_layers or int(meta["d_model"]) != lens.d_model:
            raise XltError(f"the tuned lens in {path} is for {meta['num_layers']} layers of width {meta['d_model']}, "
                           f"the model has {lens.num_layers} of width {lens.d_model}",
                           "train a tuned lens for this model (TunedLens.fit)")
        if strict and meta.get("unembed") != _unembed_fingerprint(lens.base):
            raise XltError(f"the tuned lens in {path} was trained against another LM head than this model's",
                           "train a tuned lens for this model, or load with strict=False to use it anyway")
        lens.translators.load_state_dict({k: v.to(lens.device) for k, v in tensors.items()})
        lens.settings = json.loads(meta.get("settings", "{}"))
        lens.history = json.loads(meta.get("history", "[]"))
        return lens


def _limit_tokens(tok: Tokenized, max_tokens: int) -> Tokenized:
    """The first texts of ``tok`` holding ``max_tokens`` tokens after their first (the last one kept is cut)."""
    out = Tokenized()
    left = max_tokens
    for g, rows in tok.ids.items():
        kept = []
        for r in rows:
            if left <= 0:
                break
            kept.append(r[:left + 1])
            left -= len(kept[-1]) - 1
        if kept:
            out.ids[g] = kept
    return out


# ---------------------------------------------------------------------------------------------------------
# convenience runs and reports
# ---------------------------------------------------------------------------------------------------------
def _groups(texts) -> dict[str, list[str]]:
    if isinstance(texts, str):
        raise XltError("texts were given as a single string", "pass a list of texts, or {group: list of texts}")
    return {k: list(v) for k, v in texts.items()} if isinstance(texts, Mapping) else {"texts": list(texts)}


def _pad_id(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def logit_lens(model, tokenizer, texts: Sequence[str] | Mapping[str, Sequence[str]], positions: str = "last", *,
               lens=None, max_length: int = 128, batch_size: int = 8, show_progress: bool = False,
               **probe_options) -> LensResult:
    """Run one :class:`LensProbe` over ``texts`` (a list, or ``{group: list}``) by itself; the analysis engine
    instead adds the probe to its shared capture pass. ``probe_options`` go to :class:`LensProbe`."""
    probe = LensProbe(model, positions, lens=lens, **probe_options)
    (res,) = run_probes(model, tokenize(tokenizer, _groups(texts), max_length=max_length), [probe],
                        batch_size=batch_size, pad_id=_pad_id(tokenizer), show_progress=show_progress, desc="lens")
    return res


def lens_kl(model, tokenizer, texts: Sequence[str] | Mapping[str, Sequence[str]], lens=None, *,
            max_length: int = 128, batch_size: int = 8) -> np.ndarray:
    """Mean KL(final layer ‖ lens) in nats per layer, shape (L+1,), over every real token but the first of
    ``texts``; ``lens`` is a :class:`TunedLens` or ``None`` for the logit lens."""
    res = logit_lens(model, tokenizer, texts, "all", lens=lens, max_length=max_length, batch_size=batch_size,
                     top_k=1, exclude_first=True)
    if not res.groups:
        raise XltError("no tokens to measure the lens on", "give texts of more than one token")
    kl = np.concatenate([g.kl for g in res.groups.values()], axis=1)
    return kl.mean(axis=1)


def token_text(tokenizer, token_id: int) -> str:
    """A readable form of one token: its UTF-8 text (a leading space where it starts a word; bytes that are not
    whole characters as ``\\xNN``), or the token string for special tokens."""
    from xlt.vocab.canon import canonical_vocab

    surf = canonical_vocab(tokenizer)
    b = surf[token_id] if 0 <= token_id < len(surf) else None
    if b is None:
        s = tokenizer.convert_ids_to_tokens(int(token_id))
        return s if isinstance(s, str) else str(token_id)
    return b.decode("utf-8", errors="backslashreplace")


def _top_tokens(mean: np.ndarray, k: int, tokenizer) -> list[list[dict]]:
    out = []
    for row in mean:
        ids = np.argsort(-row, kind="stable")[:k]
        out.append([{"id": int(i), "p": float(row[i]),
                     **({"token": token_text(tokenizer, int(i))} if tokenizer is not None else {})} for i in ids])
    return out


def _first_at_least(values: Sequence[float], level: float) -> int | None:
    for i, v in enumerate(values):
        if v >= level:
            return i
    return None


def lens_report(result: LensResult, tokenizer=None) -> dict:
    """A JSON-serialisable summary of a :class:`LensResult`: per group and per layer the mean entropy (bits), mean
    KL to the final layer (nats), the share of rows whose top token is the final layer's (and the first layer where
    it reaches one half), the mean probability of each token set, mean token energy, and the top tokens of the
    mean distribution (or, without ``mean_probs``, the most frequent top-1 tokens with their share of rows).
    Token strings are added when ``tokenizer`` is given."""
    groups = {}
    for g, rows in result.groups.items():
        agree = [float(x) for x in rows.top1_agree.mean(axis=1)]
        entry: dict[str, Any] = {
            "n": rows.n,
            "entropy_bits": [float(x) for x in rows.entropy.mean(axis=1)],
            "kl_to_final_nats": [float(x) for x in rows.kl.mean(axis=1)],
            "top1_agreement": agree,
            "first_agreeing_layer": _first_at_least(agree, 0.5),
            "set_probability": {k: [float(x) for x in np.exp(v).mean(axis=1)] for k, v in rows.set_logprobs.items()},
        }
        if rows.energy is not None:
            entry["energy"] = [float(x) for x in rows.energy.mean(axis=1)]
        if rows.mean_probs is not None:
            entry["top_tokens"] = _top_tokens(rows.mean_probs, result.top_k, tokenizer)
        else:
            tops = []
            for layer in range(result.num_layers + 1):
                ids, counts = np.unique(rows.top_ids[layer, :, 0], return_counts=True)
                order = np.lexsort((ids, -counts))[:result.top_k]
                tops.append([{"id": int(ids[i]), "share": float(counts[i] / rows.n),
                              **({"token": token_text(tokenizer, int(ids[i]))} if tokenizer is not None else {})}
                             for i in order])
            entry["top1_tokens"] = tops
        groups[g] = entry
    return {
        "kind": "lens", "lens": result.lens, "positions": result.positions, "num_layers": result.num_layers,
        "layers": result.layers, "final_check": result.final_check, "top_k": result.top_k,
        "layer_convention": "0 = input of the first decoder block (embeddings); l = output of block l",
        "groups": groups,
    }
