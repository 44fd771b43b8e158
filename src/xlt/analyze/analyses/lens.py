"""``lens`` and ``latent``: what each layer would predict (:mod:`xlt.analyze.lens`, :mod:`xlt.analyze.latent`).

``lens`` decodes every layer at each text's last token with the logit lens (the model's own final norm, LM head and
soft-capping applied to layer ℓ's residual) — and, with ``tuned_steps``, also with a tuned lens trained here — during
the shared capture pass: per language and layer, entropy (bits), KL to the last layer (nats) and how often the
layer's top token is the model's. ``latent`` is Wendler et al.'s experiment: word-translation and repetition prompts
built from the corpus's own word pairs, and per layer the probability of the target word's start tokens and of the
reference-language (latent) word's, entropy and token energy, with bootstrap intervals."""

from __future__ import annotations

import html
from dataclasses import dataclass

from xlt.analyze.registry import register_analysis
from xlt.options import non_negative, option, positive


@dataclass
class LensOptions:
    tuned_steps: int = option(0, "train a tuned lens for this many steps on the texts and report it beside the "
                                 "logit lens (0: logit lens only)", check=non_negative)


def _applies_causal(model, opts) -> str | None:
    if not callable(getattr(model, "can_generate", None)) or not model.can_generate() \
            or model.get_output_embeddings() is None:
        return "a lens needs a decoder-only causal LM with an output head"
    return None


def lens_probes(ctx, model, tok, opts: LensOptions):
    from xlt.analyze.lens import LensProbe, TunedLens

    probes = [LensProbe(model, "last")]
    if opts.tuned_steps:
        tuned = TunedLens.fit(model, tok, ctx.texts, steps=opts.tuned_steps, seed=ctx.seed,
                              max_length=ctx.max_length, show_progress=ctx.show_progress)
        probes.append(LensProbe(model, "last", lens=tuned, check=False))
    return probes


def lens_finish(ctx, model, tok, opts: LensOptions, probes) -> dict:
    from xlt.analyze.lens import lens_report

    out = {"logit": lens_report(probes[0].result(), tok)}
    if len(probes) > 1:
        out["tuned"] = lens_report(probes[1].result(), tok)
    out["how"] = (f"lenses at the last token of {len(ctx.texts[ctx.ref])} texts per language; layer 0 = embeddings"
                  + (f"; tuned lens: {opts.tuned_steps} steps on these texts" if opts.tuned_steps else ""))
    return out


def lens_section(results: dict[str, dict], settings: dict) -> list[str]:
    from xlt.report.html import _img
    from xlt.report.plots import layer_curves

    parts = ["<h2>Lenses</h2>", "<p class='how'>Each layer's residual stream decoded with the model's own final "
             "norm and LM head (logit lens; dotted: tuned lens where trained). KL to the last layer falls as the "
             "prediction forms; top-1 agreement = share of texts whose top token at the layer is the model's.</p>"]
    for name, r in results.items():
        parts.append(f"<h3>{html.escape(name)}</h3><p class='how'>{html.escape(r['how'])}</p>")
        g = r["logit"]["groups"]
        tuned = r.get("tuned", {}).get("groups")
        parts.append(_img(layer_curves({k: v["kl_to_final_nats"] for k, v in g.items()}, f"{name}: KL to the last "
                                       "layer", "nats", baselines={k: v["kl_to_final_nats"] for k, v in tuned.items()}
                                       if tuned else None), f"{name} lens KL"))
        parts.append(_img(layer_curves({k: v["top1_agreement"] for k, v in g.items()}, f"{name}: top-1 agreement "
                                       "with the model", "share of texts"), f"{name} lens agreement"))
    return parts


register_analysis("lens", "logit lens (and tuned lens with tuned_steps) at each text's last token: per language and "
                  "layer, entropy, KL to the last layer, top-1 agreement, top tokens", LensOptions,
                  probes=lens_probes, finish=lens_finish, applies=_applies_causal, section=lens_section)


@dataclass
class LatentOptions:
    latent_pair: str = option("", "SRC-TGT word-translation direction (e.g. fra-cmn); default: the first two "
                                  "languages besides the reference")
    latent_prompts: int = option(100, "prompts per task at most", check=positive)
    latent_min_count: int = option(5, "a word pair must co-occur this often in the corpus", check=positive)
    drop_source_overlap: bool = option(False, "also drop pairs whose source and latent words share a start token "
                                              "(so copying the source cannot pass for thinking in the latent "
                                              "language; not in Wendler et al.)")


def _pair(ctx, opts: LatentOptions) -> tuple[str, str]:
    from xlt.errors import XltError

    if opts.latent_pair:
        src, sep, tgt = opts.latent_pair.partition("-")
        if not sep or not src or not tgt:
            raise XltError(f"latent_pair {opts.latent_pair!r} is not SRC-TGT", "write e.g. -O latent_pair=fra-cmn")
        return src, tgt
    others = [lang for lang in ctx.langs if lang != ctx.ref]
    if len(others) < 2:
        raise XltError("the latent-language analysis needs a source and a target language besides the reference",
                       "give --langs with two more languages, or -O latent_pair=SRC-TGT")
    return others[0], others[1]


def latent_finish(ctx, model, tok, opts: LatentOptions, probes) -> dict:
    from xlt.analyze.latent import latent_language, latent_report, word_triples

    src, tgt = _pair(ctx, opts)
    triples = word_triples(src, tgt, ctx.ref, corpus=ctx.corpus, min_count=opts.latent_min_count)
    res = latent_language(model, tok, triples, src, tgt, ctx.ref, max_prompts=opts.latent_prompts, seed=ctx.seed,
                          batch_size=ctx.batch_size, drop_source_overlap=opts.drop_source_overlap,
                          show_progress=ctx.show_progress)
    rep = latent_report(res, tok)
    rep["how"] = (f"{src}→{tgt} word translation and {tgt} repetition prompts (4 demonstrations) from word pairs "
                  f"induced from the corpus; P = probability of the word's start tokens at the last position; "
                  f"95% bootstrap intervals")
    return rep


def latent_section(results: dict[str, dict], settings: dict) -> list[str]:
    from xlt.report.html import _img, _table
    from xlt.report.plots import layer_curves

    parts = ["<h2>Latent language</h2>", "<p class='how'>Wendler et al. 2024: per layer (logit lens at the last "
             "prompt token), the probability of the target word (its start tokens) and of the same word in the "
             "latent (reference) language. A latent curve above the target's in the middle layers is what the paper "
             "reads as the model working through English.</p>"]
    for name, r in results.items():
        parts.append(f"<h3>{html.escape(name)}</h3><p class='how'>{html.escape(r['how'])}</p>")
        rows = []
        for task, t in r["tasks"].items():
            series = {"P(target)": t["p_target"]["mean"], f"P({r['latent_lang']})": t["p_latent"]["mean"]}
            if "p_source" in t:
                series["P(source)"] = t["p_source"]["mean"]
            parts.append(_img(layer_curves(series, f"{name}: {task} ({t['n']} prompts)", "probability"),
                              f"{name} {task}"))
            rows.append([task, t["n"], t["latent_peak_layer"], t["latent_peak"], t["target_peak_layer"],
                         t["target_peak"]])
        parts.append(_table(["task", "prompts", f"P({r['latent_lang']}) peak layer", "peak", "P(target) peak layer",
                             "peak"], rows))
        if r.get("example_prompt"):
            parts.append(f"<pre>{html.escape(r['example_prompt'])}</pre>")
    return parts


register_analysis("latent", "latent language (Wendler et al.): per layer, P(target word) vs P(reference-language "
                  "word) on word-translation and repetition prompts, entropy, token energy", LatentOptions,
                  finish=latent_finish, applies=_applies_causal, section=latent_section, default=False)
