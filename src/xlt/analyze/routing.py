"""Routing analysis of mixture-of-experts models: which experts each language's tokens use, layer by layer.

Capture (:class:`RoutingProbe`, a :class:`~xlt.analyze.capture.Probe`): forward hooks on the routers (each sparse
layer's gate, found per family by :mod:`xlt.analyze.moe_families`) read one ``(B·T, E)`` tensor per sparse layer,
padding included, which is reshaped to ``(B, T, E)`` and masked. The model's own ``output_router_logits=True`` gives
the same tensors (``source="output"``; Qwen2/3-MoE leave some layers dense, so the tuple is mapped to decoder layers)
but also makes the model compute its load-balancing loss over all of them, work the analysis does not use, so the
hooks are the default. A tensor whose every real-token row is ≥ 0 and sums to 1 (± 1e-4; ± 1e-2 in 16-bit dtypes)
is taken as probabilities (earlier transformers 5.x versions returned softmaxed values under the same name) and turned into
log-probabilities; logits are used as they are (a softmax reads both the same way). The probe reduces each batch at
once and keeps, per language, per sequence and per sparse layer, the expert-importance vector of each mode:

- ``topk_weight`` (the default, Bandarkar et al. 2025 §1.3): the router's softmax over all experts, kept on the top-k
  experts of each token and renormalised to sum to 1 there, averaged over the sequence's real tokens;
- ``softmax_mean``: the full softmax averaged over real tokens (no top-k mask);
- ``counts``: the share of the sequence's ``k · L`` expert slots that went to each expert (top-k frequency / k);
- ``last``: the top-k-masked, renormalised distribution at the last real token;

and, per language, how many real tokens the router sent to each expert (the model's own top-k), from which
activation rates follow (SteerMoE's ``risk_diff``).

Metrics (pure functions on tensors, vectorised): :func:`jsd` (natural log, mixture clamped at 1e-10),
:func:`routing_divergence` (mean JSD over parallel pairs, a shuffled-pair baseline and Bandarkar's entropy-normalised
JSD, which is approximate: its bound ``ln E − ½(H(P)+H(Q))`` is not the maximum of the JSD), :func:`routing_entropy`,
:func:`language_experts` (Δₑ = p̄ₑ(x) − p̄ₑ(ref) > k·std(Δ)), :func:`task_experts` (the largest activation-rate
differences). :func:`routing_report` puts them together as JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from xlt.analyze.capture import Batch, Probe, run_probes, tokenize
from xlt.analyze.moe_families import find_routers
from xlt.errors import XltError

#: expert-importance modes, in the order :class:`RoutingProbe` keeps them
MODES = ("topk_weight", "softmax_mean", "counts", "last")
#: the JSD mixture floor and the floor of Bandarkar's normalising bound
JSD_EPS = 1e-10
NORM_FLOOR = 1e-6


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise XltError(f"unknown routing importance mode {mode!r}", f"choose from: {', '.join(MODES)}")


# --------------------------------------------------------------------------------------------- router outputs


def is_probabilities(x: torch.Tensor) -> bool:
    """Whether router outputs ``x`` (``(..., E)``) are probabilities: every entry ≥ 0 and every row summing to 1
    within 1e-4 (1e-2 for 16-bit dtypes, whose rounding alone moves a sum that far)."""
    tol = 1e-2 if x.dtype in (torch.float16, torch.bfloat16) else 1e-4
    xf = x.float()
    return bool((xf >= 0).all() and ((xf.sum(-1) - 1).abs() <= tol).all())


def as_log_scores(x: torch.Tensor, probabilities: bool | None = None) -> tuple[torch.Tensor, bool]:
    """Router outputs as scores whose softmax is the routing distribution: logits unchanged, probabilities as their
    logarithms (floored at the smallest normal float32, so a zero stays finite). Returns ``(scores, were_probs)``;
    ``probabilities=None`` detects which with :func:`is_probabilities`."""
    if probabilities is None:
        probabilities = is_probabilities(x)
    if probabilities:
        return torch.log(x.float().clamp_min(torch.finfo(torch.float32).tiny)), True
    return x, False


def router_probs(x: torch.Tensor, probabilities: bool | None = None) -> torch.Tensor:
    """The routing distribution (float32 softmax over the last axis) of router outputs that are logits or
    probabilities. For logits it is the very tensor transformers' routers take their top-k from."""
    scores, _ = as_log_scores(x, probabilities)
    return torch.nn.functional.softmax(scores, dtype=torch.float, dim=-1)


def select(x: torch.Tensor, top_k: int, probabilities: bool | None = None) -> torch.Tensor:
    """The ``top_k`` experts each token is routed to (``(..., top_k)`` indices, most probable first)."""
    return torch.topk(router_probs(x, probabilities), top_k, dim=-1).indices


def _last_position(mask: torch.Tensor) -> torch.Tensor:
    """(...,) the position of the last True of each row of ``mask`` (``(..., T)``), whichever side is padded."""
    t = mask.shape[-1]
    return t - 1 - torch.argmax(torch.flip(mask, dims=[-1]).long(), dim=-1)


def _reduce(p: torch.Tensor, top_k: int, renorm: bool, mask: torch.Tensor, modes: Sequence[str]
            ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Importance vectors ``{mode: (..., E)}`` of probabilities ``p`` (``(..., T, E)``) over the real tokens of
    ``mask`` (``(..., T)``), and the top-k indicator ``(..., T, E)`` they were taken from."""
    m = mask.unsqueeze(-1)
    n = m.sum(-2).to(p.dtype).clamp_min(1)
    keep = torch.zeros_like(p).scatter_(-1, torch.topk(p, top_k, dim=-1).indices, 1.0)
    w = p * keep
    if renorm:
        w = w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    zero = p.new_zeros(())
    out = {}
    for mode in modes:  # torch.where, not a product: a padding row may hold NaN (a fully masked attention row)
        if mode == "topk_weight":
            out[mode] = torch.where(m, w, zero).sum(-2) / n
        elif mode == "softmax_mean":
            out[mode] = torch.where(m, p, zero).sum(-2) / n
        elif mode == "counts":
            out[mode] = torch.where(m, keep, zero).sum(-2) / (n * top_k)
        else:  # last
            pos = _last_position(mask).unsqueeze(-1).unsqueeze(-1).expand(*w.shape[:-2], 1, w.shape[-1])
            out[mode] = torch.gather(w, -2, pos).squeeze(-2)
    return out, keep


def importance(logits: torch.Tensor, top_k: int, renorm: bool = True, mode: str = "topk_weight",
               mask: torch.Tensor | None = None, probabilities: bool | None = None) -> torch.Tensor:
    """Expert-importance vector(s) of router outputs ``logits`` (``(..., T, E)``; ``(E,)`` is one token) over the
    real tokens of ``mask`` (``(..., T)``, all real when None): ``(..., E)``, in the ``mode`` of the module docstring.
    ``renorm`` renormalises the top-k weights of each token to sum to 1 (Bandarkar's metric always does; False keeps
    the raw softmax mass of the kept experts). ``probabilities`` says what ``logits`` hold (None: detect)."""
    _check_mode(mode)
    x = logits.unsqueeze(0) if logits.dim() == 1 else logits
    e = x.shape[-1]
    if not 1 <= top_k <= e:
        raise XltError(f"top_k {top_k} is not between 1 and the number of experts ({e})", f"choose 1 ≤ top_k ≤ {e}")
    if mask is None:
        mask = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
    out, _ = _reduce(router_probs(x, probabilities), top_k, renorm, mask.to(torch.bool), (mode,))
    return out[mode]


# --------------------------------------------------------------------------------------------- metrics


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of distributions ``p`` over the last axis (0·ln 0 = 0)."""
    return -torch.special.xlogy(p, p).sum(-1)


def jsd(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (nats, ≤ ln 2) between distributions over the last axis:
    ½KL(P‖M) + ½KL(Q‖M), M = ½(P+Q) clamped at 1e-10; broadcasts over the leading axes."""
    p, q = torch.broadcast_tensors(p.double(), q.double())
    m = (0.5 * (p + q)).clamp_min(JSD_EPS)
    kl_pm = (torch.special.xlogy(p, p) - torch.special.xlogy(p, m)).sum(-1)
    kl_qm = (torch.special.xlogy(q, q) - torch.special.xlogy(q, m)).sum(-1)
    return (0.5 * (kl_pm + kl_qm)).clamp_min(0.0)


def _normalise(q: torch.Tensor) -> torch.Tensor:
    q = q.double()
    return q / q.sum(-1, keepdim=True).clamp_min(JSD_EPS)


def _derangement(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two index vectors pairing every item with another one (no item with itself), drawn with ``seed``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm, torch.roll(perm, -1)


@dataclass
class Divergence:
    """Per layer: mean JSD over aligned pairs, the same over shuffled (misaligned) pairs (None with fewer than two
    pairs) and Bandarkar's entropy-normalised JSD (approximate, see :func:`routing_divergence`)."""

    jsd: torch.Tensor
    shuffled: torch.Tensor | None
    normalised: torch.Tensor


def routing_divergence(q_ref: torch.Tensor, q_x: torch.Tensor, seed: int = 0) -> Divergence:
    """How differently parallel sequences are routed: ``q_ref`` and ``q_x`` are importance vectors ``(N, L, E)``
    (or ``(N, E)``), row i of one the translation of row i of the other. Rows are normalised to sum to 1.

    ``jsd``: per layer, the mean over the N pairs of JSD(q_ref[i], q_x[i]). ``shuffled``: the same over pairs
    matched by a seeded derangement (row i with another row), the value of no alignment. ``normalised``: per pair
    JSD / max(ln E − ½(H(P)+H(Q)), 1e-6), averaged (Bandarkar et al.'s plotted form; its authors call the bound
    approximate: it is not the maximum of the JSD, so values may exceed 1 and grow large for near-uniform routing)."""
    if q_ref.shape != q_x.shape:
        raise XltError(f"routing divergence needs parallel sequences: shapes {tuple(q_ref.shape)} and "
                       f"{tuple(q_x.shape)} differ", "capture both languages on the same parallel texts")
    p, q = _normalise(q_ref), _normalise(q_x)
    d = jsd(p, q)
    bound = (math.log(p.shape[-1]) - 0.5 * (entropy(p) + entropy(q))).clamp_min(NORM_FLOOR)
    shuffled = None
    if p.shape[0] >= 2:
        a, b = _derangement(p.shape[0], seed)
        shuffled = jsd(p[a], q[b]).mean(0)
    return Divergence(d.mean(0), shuffled, (d / bound).mean(0))


def routing_entropy(q: torch.Tensor) -> torch.Tensor:
    """Per layer, the mean over sequences of the entropy (nats, ≤ ln E) of their importance vectors ``(N, L, E)``."""
    return entropy(_normalise(q)).mean(0)


def _layer_ids(n: int, layer_ids: Sequence[int] | None) -> list[int]:
    ids = list(range(n)) if layer_ids is None else [int(i) for i in layer_ids]
    if len(ids) != n:
        raise XltError(f"{len(ids)} layer ids for {n} layers", "give one id per layer of the tensors")
    return ids


def _chosen(ids: list[int], layers: Sequence[int] | None) -> list[int]:
    if layers is None:
        return list(range(len(ids)))
    bad = [x for x in layers if x not in ids]
    if bad:
        raise XltError(f"layers {bad} have no routing data", f"choose from the sparse layers {ids}")
    return [ids.index(x) for x in layers]


def language_experts(q_by_lang: Mapping[str, Any], ref: str = "eng", k_sd: float = 3.0,
                     layers: Sequence[int] | None = None, layer_ids: Sequence[int] | None = None
                     ) -> dict[str, dict[int, list[int]]]:
    """Language-specialised experts: for each language x ≠ ``ref`` and layer, Δₑ = p̄ₑ(x) − p̄ₑ(ref) and the experts
    with Δₑ > ``k_sd`` · std(Δ) (population std over the E experts), largest Δ first.

    ``q_by_lang`` maps each language to importance vectors ``(N, L, E)`` (averaged over N), ``(L, E)`` mean
    distributions, or a :class:`LangRouting` (its ``topk_weight`` mode). ``layer_ids`` label the L axis (a
    LangRouting brings its own: decoder-layer indices); ``layers`` restricts to those labels. Δ sums to 0 over the
    experts, so an expert can exceed k·std only when E − 1 > k² (with k = 3: at least 11 experts)."""
    means, ids = {}, layer_ids
    for lang, q in q_by_lang.items():
        if isinstance(q, LangRouting):
            ids = ids if ids is not None else q.layers
            q = q.importance["topk_weight"]
        q = q.double()
        means[lang] = q.mean(0) if q.dim() == 3 else q
    if ref not in means:
        raise XltError(f"the reference language {ref!r} has no routing data", f"choose from: {', '.join(means)}")
    ids = _layer_ids(means[ref].shape[0], ids)
    rows = _chosen(ids, layers)
    out: dict[str, dict[int, list[int]]] = {}
    for lang, m in means.items():
        if lang == ref:
            continue
        if m.shape != means[ref].shape:
            raise XltError(f"{lang} and {ref} routing data differ in shape ({tuple(m.shape)} vs "
                           f"{tuple(means[ref].shape)})", "capture every language with the same model")
        delta = m - means[ref]
        sd = delta.std(-1, unbiased=False)
        out[lang] = {}
        for r in rows:
            hit = torch.nonzero(delta[r] > k_sd * sd[r]).flatten()
            out[lang][ids[r]] = [int(e) for e in hit[torch.argsort(delta[r][hit], descending=True)]]
    return out


def _rates(x) -> tuple[torch.Tensor, list[int] | None]:
    if isinstance(x, LangRouting):
        return x.rates, x.layers
    return x.double(), None


def risk_diff(rates_task, rates_general) -> torch.Tensor:
    """SteerMoE's ``risk_diff``: activation rate on task data minus activation rate on general data, ``(L, E)``
    (rates as tensors or :class:`LangRouting` results)."""
    a, _ = _rates(rates_task)
    b, _ = _rates(rates_general)
    if a.shape != b.shape:
        raise XltError(f"activation rates of shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be compared",
                       "capture both data sets with the same model")
    return a - b


def task_experts(rates_task, rates_general, n_per_layer: int, layers: Sequence[int] | None = None,
                 layer_ids: Sequence[int] | None = None) -> dict[int, list[int]]:
    """Task experts (SteerMoE): per layer, the ``n_per_layer`` experts with the largest positive :func:`risk_diff`
    (activated more often on task data than on general data), largest first; ready for
    :class:`~xlt.analyze.steer.RouterSteer` when the layers are decoder-layer indices (a :class:`LangRouting`
    brings them; otherwise ``layer_ids`` label the L axis)."""
    if n_per_layer < 1:
        raise XltError(f"n_per_layer must be at least 1, not {n_per_layer}", "ask for one or more experts per layer")
    diff = risk_diff(rates_task, rates_general)
    ids = _layer_ids(diff.shape[0], layer_ids if layer_ids is not None else _rates(rates_task)[1])
    out = {}
    for r in _chosen(ids, layers):
        order = torch.argsort(diff[r], descending=True, stable=True)[:n_per_layer]
        out[ids[r]] = [int(e) for e in order if diff[r, e] > 0]
    return out


# --------------------------------------------------------------------------------------------- capture


@dataclass
class LangRouting:
    """The routing of one language's sequences (what :class:`RoutingProbe` returns per language)."""

    lang: str
    layers: list[int]  # the decoder-layer index of each sparse layer (the L axis)
    n_experts: int
    top_k: int  # the k of the importance modes
    model_top_k: int  # the k the router uses (selections)
    renorm: bool
    family: str
    router_output: str  # "logits" or "probabilities": what the model returned
    index: torch.Tensor  # (N,) each sequence's position in the language's text list, ascending
    importance: dict[str, torch.Tensor]  # mode -> (N, L, E) float32
    selections: torch.Tensor  # (L, E) int64: real tokens the router sent to each expert
    tokens: int  # real tokens seen

    @property
    def rates(self) -> torch.Tensor:
        """(L, E) activation rate: the share of real tokens routed to each expert (sums to ``model_top_k``)."""
        return self.selections.double() / max(self.tokens, 1)

    def q(self, mode: str = "topk_weight") -> torch.Tensor:
        _check_mode(mode)
        if mode not in self.importance:
            raise XltError(f"mode {mode!r} was not captured (captured: {', '.join(self.importance)})",
                           f"capture with RoutingProbe(..., modes=[..., {mode!r}])")
        return self.importance[mode]


@dataclass
class _Acc:
    index: list = field(default_factory=list)
    rows: dict = field(default_factory=dict)
    selections: torch.Tensor | None = None
    tokens: int = 0


class RoutingProbe(Probe):
    """Captures the routing of every batch and reduces it at once (see the module docstring).

    ``top_k`` is the k of the importance modes (default: the router's own); ``renorm`` renormalises the top-k
    weights (True: Bandarkar's metric; None: as the model's router does); ``family`` names a routing family
    (default: from ``config.model_type``); ``source`` is ``hook`` (forward hooks on the routers, the default),
    ``output`` (``output_router_logits``; hooks whenever the output has no router logits) or ``auto`` (``output`` when
    the config has ``output_router_logits``, else hooks). ``result()`` is ``{lang: LangRouting}``."""

    name = "routing"

    def __init__(self, model, top_k: int | None = None, *, modes: Sequence[str] = MODES, renorm: bool | None = True,
                 family: str | None = None, source: str = "hook"):
        self.routers = find_routers(model, family)
        e = self.routers.n_experts
        self.top_k = int(top_k) if top_k is not None else self.routers.top_k
        if not 1 <= self.top_k <= e:
            raise XltError(f"top_k {self.top_k} is not between 1 and the number of experts ({e})",
                           f"choose 1 ≤ top_k ≤ {e}")
        self.modes = tuple(modes)
        if not self.modes:
            raise XltError("no routing importance mode given", f"choose from: {', '.join(MODES)}")
        for mode in self.modes:
            _check_mode(mode)
        self.renorm = self.routers.renorm if renorm is None else bool(renorm)
        if source not in ("auto", "output", "hook"):
            raise XltError(f"unknown router source {source!r}", "choose auto, output or hook")
        if source == "auto":
            source = "output" if hasattr(getattr(model, "config", None), "output_router_logits") else "hook"
        self.source = source
        self.forward_kwargs = {"output_router_logits": True} if source == "output" else {}
        self.router_output: set[str] = set()
        self.sources_used: set[str] = set()
        self._hooked: dict[int, torch.Tensor] = {}
        self._acc: dict[str, _Acc] = {}

    def hooks(self, model):
        def make(pos):
            def fn(batch, args, output):
                self._hooked[pos] = (output[0] if isinstance(output, (tuple, list)) else output).detach()
            return fn
        return [(g, make(pos)) for pos, g in enumerate(self.routers.gates)]

    def stop_after(self, model):
        """With hooks, the last sparse layer's router is the last thing read: the experts of that layer and every
        layer after it need not run. Reading the model's ``router_logits`` output needs the whole forward."""
        if self.source != "hook":
            return None
        return self.routers.layers[-1], self.routers.gates[-1]

    def _tensors(self, out) -> list[torch.Tensor]:
        n = len(self.routers.layers)
        rl = getattr(out, "router_logits", None) if self.source == "output" else None
        if isinstance(rl, (tuple, list)) and len(rl) > 0:
            if len(rl) != n:
                raise XltError(f"the model returned {len(rl)} router tensors for {n} sparse layers "
                               f"{list(self.routers.layers)}", "capture with source='hook'")
            self.sources_used.add("output")
            tensors = list(rl)
        else:
            missing = [self.routers.layers[p] for p in range(n) if p not in self._hooked]
            if missing:
                raise XltError(f"no router outputs were captured for layers {missing}",
                               "check that the model's routers run in its forward (layer.mlp.gate)")
            self.sources_used.add("hook")
            tensors = [self._hooked[p] for p in range(n)]
        self._hooked = {}
        return tensors

    def on_output(self, batch: Batch, out) -> None:
        tensors = self._tensors(out)
        b, t = batch.mask.shape
        mask = batch.mask.to(torch.bool)
        per_mode: dict[str, list[torch.Tensor]] = {m: [] for m in self.modes}
        sel = []
        for z in tensors:
            z = z.detach().reshape(b, t, -1)
            scores, was_probs = as_log_scores(z, is_probabilities(z[mask]))  # real tokens decide
            self.router_output.add("probabilities" if was_probs else "logits")
            p = torch.nn.functional.softmax(scores, dtype=torch.float, dim=-1)
            vals, keep = _reduce(p, self.top_k, self.renorm, mask, self.modes)
            for m in self.modes:
                per_mode[m].append(vals[m])
            if self.top_k != self.routers.top_k:
                keep = torch.zeros_like(p).scatter_(-1, torch.topk(p, self.routers.top_k, dim=-1).indices, 1.0)
            sel.append(torch.where(mask.unsqueeze(-1), keep, 0.0).sum((0, 1)).round().long())
        acc = self._acc.setdefault(batch.lang, _Acc())
        acc.index.append(batch.index.cpu())
        for m in self.modes:
            acc.rows.setdefault(m, []).append(torch.stack(per_mode[m], 1).float().cpu())  # (B, L, E)
        counts = torch.stack(sel).cpu()
        acc.selections = counts if acc.selections is None else acc.selections + counts
        acc.tokens += int(mask.sum())

    def result(self) -> dict[str, LangRouting]:
        out = {}
        kind = "/".join(sorted(self.router_output)) or "none"
        for lang, acc in self._acc.items():
            index = torch.cat(acc.index)
            order = torch.argsort(index)
            index = index[order]
            if len(torch.unique(index)) != len(index):
                raise ValueError(f"routing probe saw a sequence of {lang} twice (run it over one capture pass only)")
            out[lang] = LangRouting(
                lang, list(self.routers.layers), self.routers.n_experts, self.top_k, self.routers.top_k, self.renorm,
                self.routers.family.name, kind, index, {m: torch.cat(r)[order] for m, r in acc.rows.items()},
                acc.selections, acc.tokens)
        return out


def capture_routing(model, tokenizer, texts: Mapping[str, Sequence[str]], *, batch_size: int = 16,
                    max_length: int = 128, show_progress: bool = False, **probe_options) -> dict[str, LangRouting]:
    """Tokenise ``texts`` (``{lang: [text, ...]}``) and run one :class:`RoutingProbe` over them (options as there)."""
    probe = RoutingProbe(model, **probe_options)
    tok = tokenize(tokenizer, dict(texts), max_length=max_length)
    pad = tokenizer.pad_token_id if getattr(tokenizer, "pad_token_id", None) is not None else 0
    return run_probes(model, tok, [probe], batch_size=batch_size, pad_id=pad, show_progress=show_progress,
                      desc="routing")[0]


# --------------------------------------------------------------------------------------------- report


def _floats(x: torch.Tensor | None) -> list | None:
    return None if x is None else [round(float(v), 6) for v in x]


def routing_report(results_by_lang: Mapping[str, LangRouting], ref: str = "eng", mode: str = "topk_weight",
                   k_sd: float = 3.0, seed: int = 0) -> dict:
    """A JSON-serialisable summary of a routing capture: per language and sparse layer, the routing entropy, the
    JSD to ``ref`` over parallel sequences (with its shuffled-pair baseline and the approximate entropy-normalised
    form) and the language-specialised experts (:func:`language_experts` at ``k_sd`` on the ``mode`` vectors)."""
    _check_mode(mode)
    if not results_by_lang:
        raise XltError("no routing results to report", "capture at least one language")
    if ref not in results_by_lang:
        raise XltError(f"the reference language {ref!r} was not captured",
                       f"choose from: {', '.join(results_by_lang)}")
    r0 = results_by_lang[ref]
    q_ref = r0.q(mode)
    report: dict[str, Any] = {
        "ref": ref, "mode": mode, "family": r0.family, "layers": list(r0.layers), "n_experts": r0.n_experts,
        "top_k": r0.top_k, "model_top_k": r0.model_top_k, "renorm": r0.renorm, "router_output": r0.router_output,
        "max_entropy": round(math.log(r0.n_experts), 6), "k_sd": k_sd, "seed": seed,
        "notes": {"jsd": "nats, mean over parallel pairs; ≤ ln 2 = 0.693147",
                  "jsd_shuffled": "the same over misaligned pairs (a seeded derangement): the no-alignment value",
                  "jsd_normalised": "approximate (Bandarkar et al.): JSD / max(ln E − mean entropy, 1e-6), not "
                                    "bounded by 1"},
        "languages": {},
    }
    q_by_lang = {}
    for lang, r in results_by_lang.items():
        if r.layers != r0.layers or r.n_experts != r0.n_experts:
            raise XltError(f"{lang} was captured on another model than {ref}", "capture every language in one pass")
        q = r.q(mode)
        q_by_lang[lang] = q
        entry: dict[str, Any] = {"n_sequences": int(q.shape[0]), "n_tokens": int(r.tokens),
                                 "entropy": _floats(routing_entropy(q)),
                                 "activation_rate": [[round(float(v), 6) for v in row] for row in r.rates]}
        if lang != ref:
            if not torch.equal(r.index, r0.index):
                raise XltError(f"{lang} and {ref} were not captured on the same parallel texts "
                               f"({len(r.index)} and {len(r0.index)} sequences)",
                               "give every language the same number of parallel texts, in the same order")
            d = routing_divergence(q_ref, q, seed=seed)
            entry.update(jsd=_floats(d.jsd), jsd_shuffled=_floats(d.shuffled), jsd_normalised=_floats(d.normalised))
        report["languages"][lang] = entry
    specialised = language_experts(q_by_lang, ref=ref, k_sd=k_sd, layer_ids=r0.layers)
    union: dict[int, set] = {layer: set() for layer in r0.layers}
    for lang, per_layer in specialised.items():
        report["languages"][lang]["specialised_experts"] = {str(k): v for k, v in per_layer.items()}
        for layer, experts in per_layer.items():
            union[layer].update(experts)
    report["specialised_experts_union"] = {str(k): sorted(v) for k, v in union.items()}
    return report
