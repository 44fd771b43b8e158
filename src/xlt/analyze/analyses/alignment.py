"""``alignment``: per layer, how close each language's sentence representations are to the reference language's
(paired cosine minus its shuffled baseline, linear and debiased CKA with a permutation p-value, xSIM ratio-margin
retrieval@1 both ways; :mod:`xlt.analyze.alignment`). Pooled hidden states come from the shared capture pass."""

from __future__ import annotations

import html
from dataclasses import dataclass

from xlt.analyze.capture import HiddenProbe
from xlt.analyze.registry import register_analysis
from xlt.options import option, positive

METRICS = ("retrieval", "cos_delta", "cka_debiased", "cka_linear")


@dataclass
class AlignmentOptions:
    pool: str = option("mean", "how a sentence becomes one vector per layer: mean (over its tokens, BOS left out) "
                               "or last (its last token)", check=lambda v: None if v in ("mean", "last")
                       else "choose mean or last")
    n_perm: int = option(100, "shuffles for the debiased-CKA permutation baseline and p-value", check=positive)
    knn: int = option(4, "neighbours in the xSIM ratio margin", check=positive)


def probes(ctx, model, tok, opts: AlignmentOptions):
    return [HiddenProbe({lang: len(t) for lang, t in ctx.texts.items()}, opts.pool)]


def finish(ctx, model, tok, opts: AlignmentOptions, probes) -> dict:
    from xlt.analyze.alignment import layer_alignment

    hs = probes[0].result()
    ref = hs[ctx.ref]
    per_lang: dict[str, dict[str, list[float]]] = {}
    for lang, X in hs.items():
        if lang == ctx.ref:
            continue
        rows = [layer_alignment(X[:, layer], ref[:, layer], n_perm=opts.n_perm, seed=ctx.seed, k=opts.knn)
                for layer in range(X.shape[1])]
        d = {k: [r[k] for r in rows] for k in rows[0]}
        d["retrieval"] = [(a + b) / 2 for a, b in zip(d["retrieval_x2y"], d["retrieval_y2x"])]
        per_lang[lang] = d
    best = {lang: {"layer": max(range(len(d["retrieval"])), key=lambda i: (d["retrieval"][i], -i)),
                   "retrieval": max(d["retrieval"])} for lang, d in per_lang.items()}
    return {"ref": ctx.ref, "layers": int(ref.shape[1]), "n": int(ref.shape[0]), "pool": opts.pool,
            "per_lang": per_lang, "best": best,
            "how": f"{opts.pool}-pooled hidden states of {int(ref.shape[0])} parallel texts per language, layer 0 = "
                   f"embeddings; each language against {ctx.ref}; retrieval = mean of both directions of xSIM "
                   f"ratio-margin accuracy@1 (k={opts.knn}); debiased CKA baseline = mean over {opts.n_perm} "
                   "shuffles"}


def section(results: dict[str, dict], settings: dict) -> list[str]:
    from xlt.report.html import _img, _table
    from xlt.report.plots import heatmap, layer_curves

    parts = ["<h2>Alignment with the reference language</h2>",
             "<p class='how'>Per layer (0 = embeddings), each language's pooled sentence vectors against the "
             "reference's for the same texts. <b>retrieval</b>: xSIM ratio-margin accuracy@1, mean of both "
             "directions (chance = 1/N). <b>cos Δ</b>: mean paired cosine minus the mean over non-matching pairs. "
             "<b>debiased CKA</b> compares geometries (dotted: its shuffled baseline): it can exceed its baseline "
             "in a model with no cross-lingual alignment, where retrieval stays at chance.</p>"]
    for name, r in results.items():
        parts.append(f"<h3>{html.escape(name)}</h3><p class='how'>{html.escape(r['how'])}</p>")
        pl = r["per_lang"]
        parts.append(_img(layer_curves({k: v["retrieval"] for k, v in pl.items()}, f"{name}: retrieval@1 vs "
                                       f"{r['ref']}", "accuracy@1"), f"{name} retrieval per layer"))
        parts.append(_img(heatmap({k: {f"{i:02d}": x for i, x in enumerate(v["cos_delta"])} for k, v in pl.items()},
                                  f"{name}: paired − shuffled cosine per layer", True), f"{name} cosine"))
        parts.append(_img(layer_curves({k: v["cka_debiased"] for k, v in pl.items()}, f"{name}: debiased CKA",
                                       "CKA", baselines={k: v["cka_debiased_baseline"] for k, v in pl.items()}),
                          f"{name} CKA per layer"))
        parts.append(_table(["language", "best layer", "retrieval@1 there", "max cos Δ", "max debiased CKA"],
                            [[k, r["best"][k]["layer"], r["best"][k]["retrieval"], max(v["cos_delta"]),
                              max(v["cka_debiased"])] for k, v in pl.items()]))
    if len(results) > 1:  # before/after: every model on one plot per language
        langs = sorted({k for r in results.values() for k in r["per_lang"]})
        for lang in langs:
            series = {m: r["per_lang"][lang]["retrieval"] for m, r in results.items() if lang in r["per_lang"]}
            if len(series) > 1:
                parts.append(_img(layer_curves(series, f"retrieval@1 {lang}↔{settings.get('ref')} by model",
                                               "accuracy@1", xlabel="layer (models may differ in depth)"),
                                  f"models compared on {lang}"))
    return parts


register_analysis("alignment", "per layer: retrieval@1 (xSIM ratio margin), paired−shuffled cosine, linear and "
                  "debiased CKA of each language against the reference", AlignmentOptions, probes=probes,
                  finish=finish, section=section)
