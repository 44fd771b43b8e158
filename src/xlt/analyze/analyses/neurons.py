"""``neurons``: language-specific FFN neurons (LAPE, Tang et al. 2024; :mod:`xlt.analyze.neurons`). Activation
counts come from the shared capture pass (each language's texts split in two halves for the stability check); the
ablation matrix (Δ bits/byte on language j with language i's neurons zeroed) is measured on held-out texts."""

from __future__ import annotations

import html
from dataclasses import dataclass

from xlt.analyze.registry import register_analysis
from xlt.options import non_negative, option, unit_interval


@dataclass
class NeuronOptions:
    top_rate: float = option(0.01, "share of all FFN neurons kept (lowest LAPE entropy)", check=unit_interval)
    filter_rate: float = option(0.95, "activation-rate quantile a neuron must exceed in some language",
                                check=unit_interval)
    activation_bar_ratio: float = option(0.95, "quantile that assigns a kept neuron to a language",
                                         check=unit_interval)
    neuron_min_tokens: int = option(1000, "fewest tokens per language (per half, for the stability check) below "
                                          "which the sets are refused as unreliable", check=non_negative)
    ablation_texts: int = option(40, "held-out texts per language for the ablation matrix (0: no ablation)",
                                 check=non_negative)


def applies(model, opts) -> str | None:
    from xlt.analyze.neurons import ffn_sites
    from xlt.errors import XltError

    try:
        ffn_sites(model)
    except XltError as e:
        return e.problem
    return None


def probes(ctx, model, tok, opts: NeuronOptions):
    from xlt.analyze.neurons import ActivationProbe

    return [ActivationProbe(model, split_at={lang: len(t) // 2 for lang, t in ctx.texts.items()})]


def finish(ctx, model, tok, opts: NeuronOptions, probes) -> dict:
    from xlt.analyze.neurons import ablation_matrix, lape, neurons_report, stability

    probe = probes[0]
    probe_result = probe.result()
    params = dict(top_rate=opts.top_rate, filter_rate=opts.filter_rate,
                  activation_bar_ratio=opts.activation_bar_ratio)
    neurons = lape(probe_result.counts, probe_result.n_tokens, min_tokens=opts.neuron_min_tokens, **params)
    first, second = probe.halves()
    jac = stability(first, second, min_tokens=opts.neuron_min_tokens, **params)
    held = {lang: t[:opts.ablation_texts] for lang, t in ctx.extra.get("heldout", {}).items()}
    matrix = ablation_matrix(model, tok, neurons, held) if opts.ablation_texts and held else None
    rep = neurons_report(neurons, probe_result, matrix, jac, params)
    rep["how"] = (f"LAPE on {sum(probe_result.n_tokens.values())} tokens ({len(ctx.langs)} languages; a token counts "
                  "when the FFN activation is > 0); stability = Jaccard of the sets found on each half of the texts"
                  + (f"; ablation: bits/byte on {opts.ablation_texts} held-out texts per language" if matrix else ""))
    rep["_neurons"] = neurons  # for write(); dropped from analysis.json
    return rep


def write(out, name: str, result: dict) -> None:
    from xlt.analyze.neurons import write_neurons

    neurons = result.pop("_neurons", None)
    if neurons is not None:
        write_neurons(neurons, out / name)


def section(results: dict[str, dict], settings: dict) -> list[str]:
    from xlt.report.html import _img, _table
    from xlt.report.plots import heatmap, layer_curves

    parts = ["<h2>Language-specific neurons (LAPE)</h2>",
             "<p class='how'>Tang et al. 2024: per FFN neuron and language, the share of tokens on which it fires; "
             "the 1% of neurons whose firing is most concentrated on few languages (lowest entropy) are assigned to "
             "each language whose rate passes the 95th percentile. The ablation matrix zeroes row language's "
             "neurons and shows the rise in bits/byte on each column language (held-out texts).</p>"]
    for name, r in results.items():
        parts.append(f"<h3>{html.escape(name)}</h3><p class='how'>{html.escape(r.get('how', ''))}</p>")
        parts.append(_img(layer_curves({k: [float(x) for x in v] for k, v in r["per_layer"].items()},
                                       f"{name}: language neurons per layer", "neurons"), f"{name} neurons"))
        jac = r.get("stability_jaccard") or {}
        parts.append(_table(["language", "neurons", "Jaccard (two halves)"],
                            [[k, n, jac.get(k)] for k, n in r["n_neurons"].items()]))
        ab = r.get("ablation")
        if ab:
            parts.append(_img(heatmap(ab["delta_bits_per_byte"], f"{name}: Δ bits/byte (row: ablated)", False),
                              f"{name} ablation matrix"))
            rate = ab.get("own_most_hurt_rate")
            parts.append(f"<p>Own-language ablation hurts its own text most for "
                         f"{sum(ab['own_most_hurt'].values())} of {len(ab['own_most_hurt'])} languages"
                         + (f" ({rate:.0%})" if rate is not None else "") + ".</p>")
    return parts


register_analysis("neurons", "language-specific FFN neurons (LAPE): sets per language, stability over two halves, "
                  "ablation matrix of Δ bits/byte", NeuronOptions, probes=probes, finish=finish, applies=applies,
                  section=section, write=write)
