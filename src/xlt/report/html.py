"""One self-contained static HTML report per run: settings, plots (embedded PNG), tables, samples."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from xlt.report.plots import bpb_curves, bpb_vs_parameters, loss_curves

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em} td,th{border:1px solid #ddd;padding:.3em .6em;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.how{color:#555;font-size:.85em} img{max-width:100%} code,pre{background:#f6f6f6;padding:.1em .3em}
pre{white-space:pre-wrap;padding:.6em} .best{font-weight:bold;color:#05612a}
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _f(x, nd=3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return html.escape(str(x))


def _table(header: list[str], rows: list[list], best_col: int | None = None) -> str:
    best = None
    if best_col is not None:
        vals = [r[best_col] for r in rows if isinstance(r[best_col], (int, float))]
        best = min(vals) if vals else None
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        cells = []
        for j, v in enumerate(r):
            cls = ' class="best"' if best_col == j and best is not None and v == best else ""
            cells.append(f"<td{cls}>{_f(v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


def _share(r: dict) -> float | None:
    n, total = r.get("trainable_parameters_stage2"), r.get("model_parameters")
    return 100.0 * n / total if n and total else None


def render(metrics: dict) -> str:
    s = metrics["settings"]
    t = s["train"]
    defs = metrics["definitions"]
    ref = metrics["reference"]
    inits = metrics["inits"]
    summ = metrics["summary"]
    lang = metrics["target_language"]
    src_name = Path(s["source"]).name or s["source"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>xlt adapt: {html.escape(s['source'])} → "
             f"{html.escape(lang['name'])}</title><style>{CSS}</style></head><body>",
             f"<h1>xlt adapt: {html.escape(src_name)} → {html.escape(lang['name'])} ({lang['code']})</h1>",
             *([f"<p>Source model: {html.escape(metrics['source_model']['description'])}.</p>"]
               if metrics.get("source_model", {}).get("description") else []),
             f"<p>{len(inits)} embedding initialisations compared on the same target tokenizer, data and training budget. "
             f"Wall time {metrics['wall_seconds'] / 60:.1f} min. xlt {metrics['xlt_version']}.</p>"]

    # headline
    comp = metrics.get("comparisons", {}).get("overlap_vs_random_step0")
    if comp:
        parts.append(f"<p><b>Before any training, <code>overlap</code> is {comp['bits_per_byte_lower_by']:.3f} bits/byte "
                     f"lower than <code>random</code> ({100 * comp['relative']:.1f}% lower).</b></p>")

    roman = "native_script_dev" in ref
    if roman:
        parts.append(f"<p>Target text romanised with uroman: models train and are scored on romanised text. Source model, "
                     f"no transfer, on the same dev documents: <b>{ref['native_script_dev']['bits_per_byte']:.3f}</b> "
                     f"bits/byte in the native script ({ref['native_script_dev']['bytes']:,} bytes), "
                     f"<b>{ref['dev']['bits_per_byte']:.3f}</b> romanised ({ref['dev']['bytes']:,} bytes). The results "
                     "table gives every model in both scripts' units: per romanised byte and per native-script byte.</p>")
    parts.append("<h2>Bits per byte during training</h2>")
    curves = {n: [(e["step"], e["bits_per_byte"]) for e in r["history"]["eval"]] for n, r in inits.items()}
    parts.append(_img(bpb_curves(curves, ref["dev"]["bits_per_byte"], t["stage1_steps"]), "dev bits per byte against training step"))
    parts.append(f"<p class='how'>{html.escape(defs['bits_per_byte'])}. Dev split, at most {s['eval_max_bytes']:,} bytes "
                 f"({ref['dev']['bytes']:,} bytes used). Steps before the dotted line train the embeddings only.</p>")

    parts.append("<h2>Results</h2>")
    head = ["init", "rank", "dev bpb at step 0", f"dev bpb at step {t['steps']}", "test bpb at end",
            "steps to reach random's final", "steps-saved ratio", "seconds"]
    ref_row = ["source model, no transfer (own tokenizer)", None, ref["dev"]["bits_per_byte"], None, ref["test"]["bits_per_byte"],
               None, None, None]
    if roman:
        head[2:5] = [h + " (romanised)" for h in head[2:5]]
        head[5:5] = [f"dev bpb at step {t['steps']} per native byte", "test bpb at end per native byte"]
        ref_row[5:5] = [ref["native_script_dev"]["bits_per_byte"], ref["native_script_test"]["bits_per_byte"]]
    rows = [ref_row]
    for n, r in sorted(summ.items(), key=lambda kv: kv[1].get("rank", 0)):
        ratio = "at step 0" if r.get("reached_at_step0") else r.get("steps_saved_ratio")
        row = [n, r.get("rank"), r["bpb_step0"], r["bpb_final"], r["test_bpb_final"], r.get("steps_to_random_final"),
               ratio, r["seconds"]]
        if roman:
            row[5:5] = [r.get("bpb_final_per_native_byte"), r.get("test_bpb_final_per_native_byte")]
        rows.append(row)
    parts.append(_table(head, rows, best_col=3))
    keys = ["rank", "bpb_step0", "bpb_final", "test_bpb_final", "steps_to_random_final", "steps_saved_ratio"]
    if roman:
        keys.append("per_native_byte")
    parts.append("<p class='how'>" + "<br>".join(html.escape(f"{k}: {defs[k]}") for k in keys if k in defs) + "</p>")

    if any(r.get("method", "full") != "full" for r in summ.values()):
        parts.append("<h2>Adaptation methods</h2>")
        rows = [[n, r.get("init"), r.get("method"), r.get("trainable_parameters_stage2"), _share(r),
                 r.get("model_parameters"), r["bpb_final"], r["test_bpb_final"], r["seconds"]]
                for n, r in sorted(summ.items(), key=lambda kv: kv[1]["bpb_final"])]
        parts.append(_table(["run", "init", "method", "trainable parameters (stage 2)", "% of model parameters",
                             "model parameters", f"dev bpb at step {t['steps']}", "test bpb at end", "seconds"], rows,
                            best_col=6))
        one_init = len({r.get("init") for r in summ.values()}) == 1  # then label the points by method alone
        points = {(r.get("method") if one_init else n): (r.get("trainable_parameters_stage2"), r["bpb_final"], r["test_bpb_final"])
                  for n, r in summ.items()}
        parts.append(_img(bpb_vs_parameters(points, ref["dev"]["bits_per_byte"]),
                          "bits per byte at the end against parameters trained in stage 2"))
        parts.append("<p class='how'>" + "<br>".join(html.escape(f"{k}: {defs[k]}") for k in
                                                    ("trainable_parameters_stage2", "model_parameters") if k in defs)
                     + "<br>% of model parameters: trainable parameters (stage 2) / model parameters × 100. The plot: "
                       "each run's dev (dot) and test (cross) bits/byte after the last step against its stage-2 "
                       "trainable parameters, log scale.</p>")

    parts.append("<h2>Comparison without training</h2>")
    rows = [[n, r.get("loo_cosine"), r["bpb_step0"], r.get("overlap_share"), r.get("fallback_share")]
            for n, r in sorted(summ.items(), key=lambda kv: kv[1]["bpb_step0"])]
    parts.append(_table(["init", "leave-one-out cosine (higher is better)", "dev bpb at step 0", "overlap share",
                         "fallback share"], rows, best_col=2))
    parts.append("<p class='how'>" + "<br>".join(html.escape(f"{k}: {defs[k]}") for k in ("loo_cosine", "overlap_share", "fallback_share")
                                                if k in defs) + "</p>")

    parts.append("<h2>Training loss</h2>")
    parts.append(_img(loss_curves({n: [(h["step"], h["loss"]) for h in r["history"]["train"]] for n, r in inits.items()}),
                      "train loss against training step"))
    parts.append("<p class='how'>Mean token cross-entropy of each optimizer step's batch (packed training sequences).</p>")

    parts.append("<h2>How the embeddings were initialised</h2>")
    kinds = sorted({k for r in inits.values() for k in r["transfer"]["rows_by_evidence"]})
    rows = [[n] + [r["transfer"]["rows_by_evidence"].get(k, 0) for k in kinds] + [r["seconds"]["init"]] for n, r in inits.items()]
    parts.append(_table(["init"] + [f"rows: {k}" for k in kinds] + ["seconds"], rows))
    skip = {"method", "target_vocab", "source_vocab", "rows_by_evidence", "share_by_evidence"}
    for n, r in inits.items():
        notes = {k: v for k, v in r["transfer"].items() if k not in skip}
        if notes:
            parts.append(f"<p class='how'><b>{html.escape(n)}</b>: " + html.escape(json.dumps(notes, ensure_ascii=False)) + "</p>")
    parts.append("<p class='how'>special: special token copied by string or role; overlap: token present in both vocabularies "
                 "(canonical byte form), row copied; pieces: mean of the rows of the source tokenizer's pieces of the token; "
                 "neighbours: similarity-weighted mix of source rows (wechsel: top-k softmax; focus: sparsemax over overlapping "
                 "tokens); alignment: count-weighted mix of the source tokens it aligns to in parallel text; "
                 "mean: mean of all source rows; random: normal draw with the source rows' per-dimension mean and std.</p>")

    tk = metrics["tokenization"]
    parts.append("<h2>Tokenization</h2>")
    cols = ["tokens_per_word", "tokens_per_byte"] + (["premium"] if tk["parallel_with"] else [])
    rows = [[n] + [r.get(c) for c in cols] for n, r in tk["table"].items()]
    parts.append(_table(["tokenizer"] + cols, rows))
    parts.append(f"<p class='how'>On the {tk['split']} split ({tk['documents']} documents). fertility: {html.escape(defs['fertility'])}. "
                 + (f"premium: {html.escape(defs['premium'])} ({tk['parallel_with']})." if tk["parallel_with"] else "") + "</p>")

    parts.append("<h2>Samples (greedy, held-out prompts)</h2>")
    parts.append("<p class='how'>Greedy decoding of 24 new tokens after the first words of held-out test documents, "
                 "with no repeated 3-gram of tokens.</p>")
    sample_rows = [("source model, no transfer", ref["samples"])] + [(n, r["samples"]) for n, r in inits.items()]
    for n, samples in sample_rows:
        parts.append(f"<h3>{html.escape(n)}</h3>")
        for smp in samples:
            parts.append(f"<pre><b>{html.escape(smp['prompt'])}</b>{html.escape(smp['continuation'])}</pre>")

    parts.append("<h2>Provenance</h2>")
    rows = [["source model, no transfer", "dev bits/byte", ref["dev"].get("signature", "")],
            ["source model, no transfer", "test bits/byte", ref["test"].get("signature", "")]]
    for n, r in inits.items():
        last = r["history"]["eval"][-1] if r["history"]["eval"] else {}
        rows += [[n, "embedding mapping", r["transfer"].get("signature", "")],
                 [n, f"dev bits/byte at step {last.get('step', '')}", last.get("signature", "")],
                 [n, "test bits/byte at end", r["test"].get("signature", "")]]
    parts.append("<table><tr><th>model</th><th>number</th><th>signature</th></tr>" + "".join(
        f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td style='text-align:left'><code>{html.escape(c)}</code>"
        "</td></tr>" for a, b, c in rows) + "</table>")
    if "signature" in defs:
        parts.append(f"<p class='how'>{html.escape(defs['signature'])}. Every evaluation in metrics.json carries its "
                     "own.</p>")
    prec = metrics.get("precision")
    if prec:
        parts.append(f"<p>Arithmetic: training in {html.escape(prec['train'])} (asked: {html.escape(prec['requested'])}; "
                     f"{html.escape(prec['reason'])}), evaluation in {html.escape(prec['eval'])}, on "
                     f"{html.escape(prec['device'])}. {html.escape(prec['note'])}.</p>")

    parts += _evaluations(metrics.get("evaluations", []))
    parts += _analyses(metrics.get("analyses", []))
    parts.append("<h2>Settings</h2>")
    parts.append(f"<pre>{html.escape(json.dumps({'settings': s, 'corpus': metrics['corpus']}, indent=2, ensure_ascii=False))}</pre>")
    parts.append(f"<p class='how'>Training text: {metrics['train_tokens']:,} target tokens. Every number here is also in metrics.json.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _evaluations(evals: list[dict]) -> list[str]:
    """What ``xlt evaluate`` measured on this run's models (each evaluation links to its own report)."""
    if not evals:
        return []
    parts = ["<h2>Evaluations (xlt evaluate)</h2>"]
    for e in evals:
        parts.append(f"<p><a href='{html.escape(e['report'])}'>{html.escape(e['report'])}</a>: suites "
                     f"{html.escape(', '.join(e['suites']))} on {html.escape(', '.join(e['langs']))} "
                     f"({html.escape(e['split'])} split).</p>")
        by_metric: dict[str, dict[str, dict[str, float]]] = {}
        for sc in e["scores"]:
            by_metric.setdefault(sc["metric"], {}).setdefault(sc["model"], {})[sc["lang"]] = sc["value"]
        for metric, table in by_metric.items():
            langs = sorted({lang for row in table.values() for lang in row})
            parts.append(f"<p>{html.escape(metric)}</p>" + _table(
                ["model"] + langs, [[m] + [row.get(lang) for lang in langs] for m, row in table.items()]))
    return parts


def _analyses(entries: list[dict]) -> list[str]:
    """What ``xlt analyze`` found on this run's models (each analysis links to its own page)."""
    if not entries:
        return []
    parts = ["<h2>Analyses (xlt analyze)</h2>"]
    for e in entries:
        parts.append(f"<p><a href='{html.escape(e['report'])}'>{html.escape(e['report'])}</a>: "
                     f"{html.escape(', '.join(e['analyses']))} on {html.escape(', '.join(e['langs']))} against "
                     f"{html.escape(e['ref'])} ({e['n']} aligned verses per language).</p>")
        rows = [[m, lang, b["layer"], b["retrieval"]] for m, by in e.get("best_retrieval", {}).items()
                for lang, b in by.items()]
        if rows:
            parts.append("<p class='how'>Best layer for translation retrieval (xSIM ratio margin, accuracy@1, mean "
                         "of both directions):</p>" + _table(["model", "language", "best layer", "retrieval@1"],
                                                             rows))
    return parts


def write_report(out: str | Path, metrics: dict) -> Path:
    """Write ``out/report.html`` (through a temporary file and a rename) and return its path."""
    import os
    import tempfile

    out = Path(out)
    path = out / "report.html"
    fd, tmp = tempfile.mkstemp(prefix=".report.", suffix=".html", dir=out)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(render(metrics))
    os.replace(tmp, path)
    return path
