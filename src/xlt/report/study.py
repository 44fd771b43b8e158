"""Reports of ``xlt study``: one static HTML page per study from its metrics (tables, plots as embedded PNG)."""

from __future__ import annotations

import html
import json

import numpy as np

from xlt.report.html import CSS, _img, _table
from xlt.report.plots import _axes, _fig_bytes


def _page(title: str, parts: list[str], metrics: dict) -> str:
    head = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
            f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    tail = ["<h2>Settings</h2><pre>" + html.escape(json.dumps(metrics.get("options", {}), indent=2,
                                                               ensure_ascii=False, default=str)) + "</pre>",
            "</body></html>"]
    return "\n".join(head + parts + tail)


def clone_law_plot(metrics: dict, fit) -> bytes:
    """Monolingual perplexity against training tokens with the fitted data law; each setting's languages drawn at
    their monolingual token equivalent (MLTE) on the curve, against the tokens they actually saw."""
    law = metrics["law"]
    budget = law["token_budget"]
    xs = np.asarray(law["points"]["x"], dtype=float)
    fig, ax = _axes((7.5, 4.4))
    ax.plot(xs * budget, law["points"]["ppl"], "ko", label="monolingual runs")
    grid = np.geomspace(xs.min() / 2, xs.max() * 2, 200)
    with np.errstate(all="ignore"):
        ax.plot(grid * budget, [v if v > 0 else np.nan for v in fit.predict(grid)], "k-",
                lw=1, label="data law 1/ppl = −a·x^(−b) + c")
    markers = iter("s^vD<>ph*")
    for s in metrics["settings"]:
        if s["mono"]:
            continue
        m = next(markers, "o")
        for c, ppl in s["ppl"].items():
            seen = s["tokens_per_language"][int(c)]
            if seen:
                ax.plot(seen, ppl, m, mfc="none", label=f"{s['name']}, language {c} (tokens seen)")
    ax.set_xscale("log")
    ax.set_xlabel("training tokens in the language")
    ax.set_ylabel("dev perplexity (lower is better)")
    ax.legend(fontsize=7)
    return _fig_bytes(fig)


def loss_plot(curves: dict[str, list[float]]) -> bytes:
    fig, ax = _axes((7.5, 3.8))
    for name, losses in curves.items():
        y = np.asarray(losses)
        k = max(1, len(y) // 50)
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(len(smooth)) + k, smooth, lw=1, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (moving mean)")
    ax.legend(fontsize=7)
    return _fig_bytes(fig)


def render_clone_study(metrics: dict, curves: dict[str, list[float]], fit) -> str:
    o = metrics["options"]
    k = o["k"]
    rows = []
    for s in metrics["settings"]:
        row = [s["name"], f"{s['tokens']:,}"]
        row += [f"{100 * x:.1f} %" for x in s["share_per_language"]]
        row += [s["ppl"].get(str(c)) for c in range(k)]
        row += [(s["teff"] or {}).get(str(c)) for c in range(k)]
        rows.append(row)
    head = (["setting", "tokens"] + [f"share L{c}" for c in range(k)] + [f"ppl L{c}" for c in range(k)]
            + [f"TEff L{c}" for c in range(k)])
    parts = [f"<p>Cloned-language study (Schäfer et al. 2024): the {html.escape(o['lang'])} text of the "
             f"{html.escape(str(o['corpus']))} corpus in {k} languages that differ only in their token ids "
             f"(L0 = original, L1… = clones, {o['frac_clone']:g} of the vocabulary cloned); a {o['layers']}-layer, "
             f"d = {o['hidden']} Llama trained from scratch on {o['token_budget']:,} tokens per setting. Took "
             f"{metrics['seconds']:.0f} s.</p>",
             "<h2>Perplexity and token efficiency per setting</h2>", _table(head, rows),
             "<p class='how'>ppl = exp(mean next-token cross-entropy) on the dev split rendered in each language "
             "(the same text in every language). TEff = MLTE / tokens the language saw, MLTE = the tokens at which "
             "the monolingual data law reaches that perplexity (> 1: the language profited from the others).</p>"]
    sym = metrics.get("symmetry")
    if sym:
        parts.append(f"<p>Symmetry check ({html.escape(sym['setting'])}): ppl {sym['ppl'][0]:.3f} vs "
                     f"{sym['ppl'][1]:.3f}, relative difference {100 * sym['relative_difference']:.2f} % "
                     f"({'within' if sym['passed'] else 'OUTSIDE'} the {100 * sym['tolerance']:g} % tolerance; "
                     "paper: 26.13 vs 26.14).</p>")
    law = metrics["law"]
    if "skipped" in law:
        parts += ["<h2>Monolingual data law</h2>", f"<p>not fitted: {html.escape(law['skipped'])}</p>",
                  "<h2>Training loss</h2>", _img(loss_plot(curves), "training loss")]
        return _page("xlt study clone", parts, metrics)
    params = ", ".join(f"{k_}={v:.4g}" for k_, v in law.get("params", {}).items())
    parts += ["<h2>Monolingual data law</h2>",
              f"<p>{html.escape(law['form'])}: {html.escape(params)} (R² {law.get('r2', float('nan')):.4f}).</p>",
              _img(clone_law_plot(metrics, fit), "perplexity against tokens"),
              "<h2>Training loss</h2>", _img(loss_plot(curves), "training loss")]
    return _page("xlt study clone", parts, metrics)


def heatmap(matrix, rows: list[str], cols: list[str], title: str, cmap: str = "viridis_r", fmt: str = "{:.2f}") -> bytes:
    """A labelled heatmap with each cell's value written in it."""
    m = np.asarray(matrix, dtype=float)
    fig, ax = _axes((1.1 * len(cols) + 2.5, 0.55 * len(rows) + 1.8))
    im = ax.imshow(m, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    ax.set_title(title, fontsize=10)
    finite = m[np.isfinite(m)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if np.isfinite(m[i, j]):
                ax.text(j, i, fmt.format(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if (m[i, j] > mid) == cmap.endswith("_r") else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _fig_bytes(fig)


def render_matrix_study(metrics: dict) -> str:
    o = metrics["options"]
    src, tgt = metrics["sources"], metrics["targets"]
    parts = [f"<p>MonoByte-style transfer matrix: one byte-level {o['layers']}-layer, d = {o['hidden']} LM per source "
             f"language pretrained on {o['pretrain_bytes']:,} bytes of the {html.escape(str(o['corpus']))} corpus "
             f"(identical settings and seed){', plus a control (shuffled bytes)' if o['control'] else ''}; each "
             f"fine-tuned on {o['finetune_bytes']:,} bytes of every target; bits/byte on "
             f"{o['eval_bytes']:,} dev bytes per target. Took {metrics['seconds']['total']:.0f} s.</p>",
             "<h2>Transfer score</h2>",
             _img(heatmap(metrics["transfer_score"], src, tgt, "from-scratch bits/byte − fine-tuned bits/byte "
                          "(higher: the source helped more)", cmap="viridis"), "transfer score"),
             "<h2>Fine-tuned bits/byte</h2>",
             _img(heatmap(metrics["finetuned_bits_per_byte"], src, tgt, "target dev bits/byte after fine-tuning"),
                  "fine-tuned"),
             "<h2>Zero-shot bits/byte</h2>",
             _img(heatmap(metrics["zero_shot_bits_per_byte"], src, tgt, "target dev bits/byte of the pretrained "
                          "model, no fine-tuning"), "zero-shot"),
             "<h2>From scratch</h2>",
             _table(["target", "bits/byte (fine-tuning budget only)"],
                    [[t, v] for t, v in zip(tgt, metrics["scratch_bits_per_byte"])]),
             "<p class='how'>bits/byte = summed next-byte cross-entropy / ln 2 / number of byte targets of the dev "
             "rows (UTF-8 bytes, ids byte + 3, EOS between verses).</p>"]
    return _page("xlt study matrix", parts, metrics)
