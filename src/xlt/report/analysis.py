"""The report of ``xlt analyze``: one static HTML page from its analysis.json; each analysis renders its own
section (its ``section`` hook), so this page names no analysis."""

from __future__ import annotations

import html
import json

from xlt.report.html import CSS, _table


def render_analysis(data: dict) -> str:
    from xlt.analyze.registry import ANALYSES

    s = data["settings"]
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>xlt analyze</title>",
             f"<style>{CSS}</style></head><body>", "<h1>xlt analyze</h1>",
             f"<p>{len(data['models'])} model(s); languages {html.escape(', '.join(s['langs']))}, each against "
             f"{html.escape(s['ref'])}; {s['n']} verse-aligned texts per language from the "
             f"{html.escape(str(s['corpus']))} corpus's {html.escape(s['split'])} split (at most {s['max_length']} "
             f"tokens each) in one capture pass per model; {s['heldout']} more held out. "
             f"Took {data['seconds']['total']:.0f} s.</p>",
             _table(["model", "role", "source", "path"],
                    [[m["name"], m["role"], m.get("source"), m["path"]] for m in data["models"]])]
    for name, by_model in data["results"].items():
        if not by_model:
            continue
        a = ANALYSES.get(name)
        if a.section is not None:
            parts += a.section(by_model, s)
        else:
            parts.append(f"<h2>{html.escape(name)}</h2><pre>"
                         + html.escape(json.dumps(by_model, indent=1, ensure_ascii=False, default=float)[:20000])
                         + "</pre>")
    if data.get("skipped"):
        parts.append("<h2>Not applicable</h2>" + _table(["model", "analysis", "why"],
                                                        [[r["model"], r["analysis"], r["why"]]
                                                         for r in data["skipped"]]))
    parts.append("<h2>Settings</h2><pre>" + html.escape(json.dumps(s, indent=2, ensure_ascii=False)) + "</pre>")
    parts.append("<h2>What each analysis computes</h2><ul>" + "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in data["definitions"].items()) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
