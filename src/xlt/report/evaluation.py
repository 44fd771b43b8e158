"""The report of ``xlt evaluate``: one static HTML page from its metrics.json (plots embedded as PNG)."""

from __future__ import annotations

import html
import json

from xlt.eval.scores import LangScores
from xlt.report.html import CSS, _f, _img, _table
from xlt.report.plots import grouped_bars, heatmap, range_bars


def _scores_section(scores: LangScores) -> list[str]:
    parts = ["<h2>Scores by language</h2>"]
    for metric in scores.metrics():
        if metric.startswith("forget%"):
            continue
        hib = scores.direction(metric)
        table = scores.table(metric)
        parts.append(f"<h3>{html.escape(metric)}</h3>")
        parts.append(_img(heatmap(table, metric, hib), f"{metric} per model and language"))
        langs = sorted({lang for row in table.values() for lang in row})
        parts.append(_table(["model"] + langs, [[m] + [row.get(lang) for lang in langs] for m, row in table.items()]))
        sigs = sorted({s.signature for s in scores.select(metric=metric) if s.signature})
        if sigs:
            parts.append("<p class='how'>How: " + "<br>".join(f"<code>{html.escape(s)}</code>" for s in sigs[:4])
                         + (f" (and {len(sigs) - 4} more in metrics.json)" if len(sigs) > 4 else "") + "</p>")
    return parts


def _parity_section(d: dict) -> list[str]:
    parts = ["<h2>Parity across languages</h2>",
             "<p class='how'>Per model and metric: average over languages (bar) ± 2·SE across languages, min (red) and "
             "max (green); gap = max − min (MultiLoKo).</p>"]
    by_metric: dict[str, list] = {}
    for r in d["table"]:
        by_metric.setdefault(r["metric"], []).append(r)
    for metric, rows in by_metric.items():
        parts.append(_img(range_bars([(r["model"], r["average"], r["two_se"], r["min"], r["max"]) for r in rows],
                                     f"parity of {metric}", metric), f"parity of {metric}"))
        parts.append(_table(["model", "average", "2·SE", "min", "min lang", "max", "max lang", "gap"],
                            [[r["model"], r["average"], r["two_se"], r["min"], r["min_lang"], r["max"], r["max_lang"],
                              r["gap"]] for r in rows]))
        with_ref = [r for r in rows if "transfer_ratio" in r]
        if with_ref:
            langs = sorted({k for r in with_ref for k in r["transfer_ratio"]})
            parts.append(f"<p>Transfer ratio (score / score in {html.escape(d['ref'])}):</p>")
            parts.append(_table(["model"] + langs, [[r["model"]] + [r["transfer_ratio"].get(k) for k in langs]
                                                    for r in with_ref]))
    return parts


def _forgetting_section(d: dict) -> list[str]:
    rows = d["table"]
    groups: dict[str, dict[str, float]] = {}
    for r in rows:
        groups.setdefault(r["model"], {})[r["metric"]] = r["forget_percent"]
    parts = ["<h2>Forgetting</h2>",
             "<p class='how'>Forget% = (before − after) / before × 100 on the source language, sign flipped for "
             "lower-is-better metrics: positive means the adapted model lost what its source model had.</p>",
             _img(grouped_bars(groups, "source-language forgetting", "Forget %", 0.0), "forgetting")]
    parts.append(_table(["model", "metric", "source lang", "before", "after", "Forget %", "target", "target zero-shot",
                         "target adapted"],
                        [[r["model"], r["metric"], r["source_lang"], r["before"], r["after"], r["forget_percent"],
                          r.get("target"), r.get("target_zero_shot"), r.get("target_adapted")] for r in rows]))
    return parts


def _premium_section(scores: LangScores) -> list[str]:
    table = scores.table("premium")
    if not table:
        return []
    groups = {lang: {m: row[lang] for m, row in table.items() if lang in row}
              for lang in sorted({lang for row in table.values() for lang in row})}
    return ["<h2>Tokenizer premium</h2>",
            "<p class='how'>Tokens a language needs for the same verses, relative to the reference language (1 = "
            "parity; Petrov et al. 2023).</p>",
            _img(grouped_bars(groups, "token premium", "premium", 1.0), "token premium")]


def _mt_section(d: dict, scores: LangScores) -> list[str]:
    parts = ["<h2>Machine translation</h2>",
             f"<p class='how'>{d['segments']} segments; sacrebleu's metrics (signatures below). Paired tests against the "
             "first system (bs: paired bootstrap, mean ± 95 % CI half-width; ar: approximate randomisation); p after "
             "the correction across systems; * p &lt; 0.05, ** p &lt; 0.01; identical systems get p = 1.</p>"]
    metrics = [m for m in ("bleu", "chrf", "chrf++", "ter") if m in scores.metrics()]
    tests = d.get("tests", {})
    rows = []
    for system in d["systems"]:
        row = [system]
        for m in metrics:
            s = next((x for x in scores.select(model=system, metric=m)), None)
            cell = _f(s.value, 2) if s else "—"
            for t, res in tests.items():
                r = next((x for x in res["rows"] if x["system"] == system and x["metric"] == m), None)
                if r is None or r["p"] is None:
                    continue
                mark = "**" if r["p"] < 0.01 else "*" if r["p"] < 0.05 else ""
                extra = f" ± {r['ci']:.2f}" if t == "bs" and r.get("ci") is not None else ""
                cell += f" [{t}: Δ {r['delta']:+.2f}{extra}, p {r['p']:.4f}{mark}]"
            row.append(cell)
        rows.append(row)
    parts.append(_table(["system"] + metrics, rows))
    sigs = sorted({s.signature for s in scores if s.suite == "mt"})
    parts.append("<p class='how'>" + "<br>".join(f"<code>{html.escape(x)}</code>" for x in sigs) + "</p>")
    for name, ex in d.get("translations", {}).items():
        parts.append(f"<p>{html.escape(name)}, first translations:</p>" + _table(
            ["source", "reference", "hypothesis"], [[e["source"], e["reference"], e["hypothesis"]] for e in ex]))
    return parts


def _offtarget_section(d: dict, scores: LangScores) -> list[str]:
    table = scores.table("off_target")
    groups = {lang: {**{m: row[lang] for m, row in table.items() if lang in row},
                     "floor (references)": d["floor"].get(lang)} for lang in d["floor"]}
    return ["<h2>Off-target generation</h2>",
            f"<p class='how'>Share of greedy continuations of held-out prompts that py3langid labels as another "
            f"language; the floor is its rate on the true continuations ({html.escape(d['how'])}).</p>",
            _img(grouped_bars(groups, "off-target rate", "share"), "off-target rate")]


def render_evaluation(metrics: dict) -> str:
    scores = LangScores.from_list(metrics["scores"])
    details = metrics.get("details", {})
    s = metrics["settings"]
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>xlt evaluate</title>",
             f"<style>{CSS}</style></head><body>",
             "<h1>xlt evaluate</h1>",
             f"<p>{len(metrics['models'])} model(s), languages {html.escape(', '.join(s['langs']) or '—')}, "
             f"suites {html.escape(', '.join(s['suites']))}; held-out text: the {html.escape(str(s['corpus']))} "
             f"corpus's {html.escape(s['split'])} split, up to {s['max_bytes']:,} bytes per language. "
             f"Took {metrics['seconds']['total']:.0f} s.</p>",
             _table(["model", "role", "source", "path"],
                    [[m["name"], m["role"], m.get("source"), m["path"]] for m in metrics["models"]])]
    if len(scores):
        parts += _scores_section(scores)
    if "parity" in details:
        parts += _parity_section(details["parity"])
    if "forgetting" in details:
        parts += _forgetting_section(details["forgetting"])
    parts += _premium_section(scores)
    if "mt" in details:
        parts += _mt_section(details["mt"], scores)
    if "off-target" in details:
        parts += _offtarget_section(details["off-target"], scores)
    for name, d in details.items():
        if name in ("parity", "forgetting", "tokenizer", "mt", "off-target"):
            continue
        parts.append(f"<h2>{html.escape(name)}</h2><pre>{html.escape(json.dumps(d, indent=2, ensure_ascii=False, default=float)[:20000])}</pre>")
    inv = details.get("tokenizer", {}).get("invalid")
    if inv:
        parts.append("<p>Invalid for their tokenizer (" + html.escape(details["tokenizer"]["invalid_rule"]) + "): "
                     + ", ".join(f"{html.escape(r['model'])} / {html.escape(r['lang'])} ({_f(r['unk_share'])})"
                                 for r in inv) + "</p>")
    parts.append("<h2>Settings</h2><pre>" + html.escape(json.dumps(s, indent=2, ensure_ascii=False)) + "</pre>")
    parts.append("<h2>What each suite computes</h2><ul>" + "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in metrics["definitions"].items()) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
