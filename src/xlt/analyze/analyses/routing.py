"""``routing``: how a mixture-of-experts model routes each language (Bandarkar et al. 2025;
:mod:`xlt.analyze.routing`): per sparse layer, the expert-importance distributions of parallel texts, their JSD to
the reference language (with a shuffled-pair baseline and the approximate entropy-normalised form), the routing
entropy and the language-specialised experts. With ``steer=middle`` (and ``task_data``), the paper's four steering
arms (:class:`~xlt.analyze.steer.RouterSteer`, SteerMoE's hard rule): bits/byte per language on held-out texts with
no steering, with the middle layers' task experts promoted, with the same outside the middle layers, and with each
language's specialised experts promoted. Dense models are skipped (``xlt upcycle`` makes one a mixture)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from xlt.analyze.registry import register_analysis
from xlt.options import option, positive


def _one_of(*names):
    return lambda v: None if v in names else f"choose from: {', '.join(names)}"


@dataclass
class RoutingOptions:
    mode: str = option("topk_weight", "expert importance: topk_weight (top-k masked, renormalised, mean over "
                                      "tokens), softmax_mean, counts or last", check=_one_of(
                                          "topk_weight", "softmax_mean", "counts", "last"))
    k_sd: float = option(3.0, "an expert is language-specialised when Δ > k_sd · std(Δ) (needs E − 1 > k_sd²)",
                         check=positive)
    steer: str = option("", "steering arms: '' (none) or middle (needs task_data)", check=_one_of("", "middle"))
    task_data: str = option("", "English task-domain text for the task experts: text:PATH (one text per line)")
    steer_experts: int = option(1, "experts promoted per steered layer (at most the router's top-k)",
                                check=positive)


def applies(model, opts) -> str | None:
    from xlt.analyze.moe_families import find_routers
    from xlt.errors import XltError

    try:
        find_routers(model)
    except XltError as e:
        return e.problem + (f" ({e.fix})" if e.fix else "")
    return None


def probes(ctx, model, tok, opts: RoutingOptions):
    from xlt.analyze.routing import RoutingProbe

    return [RoutingProbe(model)]


def _task_texts(spec: str) -> list[str]:
    from xlt.errors import XltError

    if not spec.startswith("text:"):
        raise XltError(f"task_data {spec!r} is not text:PATH", "give -O task_data=text:PATH (one text per line)")
    path = Path(spec[5:])
    if not path.is_file():
        raise XltError(f"task data {path} does not exist", "give an existing text file, one text per line")
    lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    if len(lines) < 4:
        raise XltError(f"task data {path} has {len(lines)} non-empty lines", "give at least 4 texts")
    return lines


def _middle(layers: list[int], n_layers: int) -> list[int]:
    """Sparse layers in the middle third of the decoder (at least one)."""
    lo, hi = n_layers / 3, 2 * n_layers / 3
    mid = [x for x in layers if lo <= x < hi]
    return mid or [layers[len(layers) // 2]]


def _steering(ctx, model, tok, opts: RoutingOptions, caps: dict) -> dict:
    from xlt.analyze.capture import run_probes, tokenize
    from xlt.analyze.routing import RoutingProbe, task_experts
    from xlt.analyze.steer import RouterSteer
    from xlt.errors import XltError
    from xlt.eval.bpb import bits_per_byte
    from xlt.signature import model_hash

    if not opts.task_data:
        raise XltError("steer=middle needs task-domain text", "give -O task_data=text:PATH (English task texts)")
    held = ctx.extra.get("heldout") or {}
    if not held:
        raise XltError("steering needs held-out texts to measure", "run with --heldout 20 or more")
    probe = RoutingProbe(model)
    task = run_probes(model, tokenize(tok, {ctx.ref: _task_texts(opts.task_data)}, ctx.max_length), [probe],
                      batch_size=ctx.batch_size, show_progress=False)[0][ctx.ref]
    general = caps[ctx.ref]
    layers = list(general.layers)
    n_layers = int(getattr(model.config, "num_hidden_layers", max(layers) + 1))
    mid = _middle(layers, n_layers)
    outside = [x for x in layers if x not in mid]
    k = min(opts.steer_experts, general.model_top_k)
    arms = {"none": {}, "task experts, middle": task_experts(task, general, k, layers=mid)}
    if outside:
        arms["task experts, outside the middle"] = task_experts(task, general, k, layers=outside)
    h = model_hash(model)
    table: dict[str, dict[str, float]] = {}
    for arm, experts in arms.items():
        experts = {layer: e for layer, e in experts.items() if e}
        with RouterSteer(model, experts, mode="hard") if experts else _nothing():
            table[arm] = {lang: bits_per_byte(model, tok, t, model_hash=h).bits_per_byte for lang, t in held.items()}
    # each language with its own most over-used experts (vs the reference) promoted in the middle layers
    arm = "language experts, middle"
    table[arm] = {}
    ref_q = general.importance[opts.mode].double().mean(0)
    for lang, t in held.items():
        if lang == ctx.ref:
            continue
        delta = caps[lang].importance[opts.mode].double().mean(0) - ref_q  # (L, E)
        experts = {layer: [int(e) for e in delta[layers.index(layer)].argsort(descending=True)[:k]] for layer in mid}
        with RouterSteer(model, experts, mode="hard"):
            table[arm][lang] = bits_per_byte(model, tok, t, model_hash=h).bits_per_byte
    return {"middle_layers": mid, "outside_layers": outside, "experts_per_layer": k,
            "task_experts": {a: {str(k_): v for k_, v in e.items()} for a, e in arms.items() if a != "none"},
            "bits_per_byte": table,
            "how": f"SteerMoE hard rule (forced experts' log-softmax score := max + 0.01) on {k} expert(s) per layer; "
                   f"task experts = largest activation-rate difference between the task data and the {ctx.ref} "
                   f"texts (risk_diff); language experts = largest mean-importance excess over {ctx.ref}; "
                   f"bits/byte (stream) on {len(next(iter(held.values())))} held-out texts per language"}


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def finish(ctx, model, tok, opts: RoutingOptions, probes) -> dict:
    import numpy as np

    from xlt.analyze.routing import routing_report

    caps = probes[0].result()
    rep = routing_report(caps, ref=ctx.ref, mode=opts.mode, k_sd=opts.k_sd, seed=ctx.seed)
    if opts.steer:
        rep["steering"] = _steering(ctx, model, tok, opts, caps)
    rep["how"] = (f"{opts.mode} expert importance per text and sparse layer on {len(ctx.texts[ctx.ref])} parallel "
                  f"texts; JSD (nats) to {ctx.ref} over matching texts, dotted: over mismatched texts")
    rep["_arrays"] = {f"{lang}_{mode}": np.asarray(c.importance[mode]) for lang, c in caps.items()
                      for mode in c.importance} | {f"{lang}_selections": np.asarray(c.selections)
                                                   for lang, c in caps.items()}
    return rep


def write(out, name: str, result: dict) -> None:
    import numpy as np

    arrays = result.pop("_arrays", None)
    if arrays:
        (out / name / "routing").mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / name / "routing" / "importance.npz", **arrays)


def section(results: dict[str, dict], settings: dict) -> list[str]:
    from xlt.report.html import _img, _table
    from xlt.report.plots import grouped_bars, layer_curves

    parts = ["<h2>Expert routing</h2>",
             "<p class='how'>Bandarkar et al. 2025: per sparse layer, the JSD (nats, ≤ ln 2) between the expert-"
             "importance distributions of each text and its translation in the reference language, averaged over "
             "texts; dotted: the same over mismatched texts (no alignment). Lower = routed more like the reference. "
             "The paper finds language-specific routing in early and late layers and shared routing in the middle."
             "</p>"]
    for name, r in results.items():
        langs = {k: v for k, v in r["languages"].items() if "jsd" in v}
        parts.append(f"<h3>{html.escape(name)}</h3><p class='how'>{html.escape(r.get('how', ''))}; family "
                     f"{html.escape(r['family'])}, {r['n_experts']} experts, top-{r['model_top_k']}, sparse layers "
                     f"{r['layers']}</p>")
        parts.append(_img(layer_curves({k: v["jsd"] for k, v in langs.items()}, f"{name}: routing JSD to {r['ref']}",
                                       "JSD (nats)", baselines={k: v["jsd_shuffled"] for k, v in langs.items()},
                                       xlabel=f"sparse layer (decoder layers {r['layers']})"), f"{name} JSD"))
        parts.append(_img(layer_curves({k: v["entropy"] for k, v in r["languages"].items()},
                                       f"{name}: routing entropy (max {r['max_entropy']:.3f})", "nats",
                                       xlabel="sparse layer"), f"{name} entropy"))
        spec = [[k, "; ".join(f"L{layer}: {e}" for layer, e in v.get("specialised_experts", {}).items() if e) or "—"]
                for k, v in langs.items()]
        parts.append("<p>Language-specialised experts (Δ > " + f"{r['k_sd']:g}·std):</p>"
                     + _table(["language", "experts by layer"], spec))
        st = r.get("steering")
        if st:
            parts.append(f"<p class='how'>Steering: {html.escape(st['how'])}; middle layers {st['middle_layers']}"
                         "</p>")
            parts.append(_img(grouped_bars(st["bits_per_byte"], f"{name}: bits/byte per steering arm",
                                           "bits/byte"), f"{name} steering"))
            langs_ = sorted({k for v in st["bits_per_byte"].values() for k in v})
            parts.append(_table(["arm"] + langs_, [[a] + [v.get(k) for k in langs_]
                                                   for a, v in st["bits_per_byte"].items()]))
    return parts


register_analysis("routing", "MoE models: per sparse layer, JSD of expert importance to the reference language "
                  "(with a shuffled baseline), routing entropy, language-specialised experts; steering arms with "
                  "steer=middle", RoutingOptions, probes=probes, finish=finish, applies=applies, section=section,
                  write=write)
