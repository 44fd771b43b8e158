"""``xlt eval-tools`` (TUCAN tool-call scoring of a model's greedy answers) and ``xlt tools-data`` (the Bible
verse-lookup demo set). Thin layer over :mod:`xlt.tasks.toolcall`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app) -> None:
    app.command(name="eval-tools")(eval_tools)
    app.command(name="tools-data")(tools_data)


def eval_tools(
    model: str = typer.Option("smollm2", help="A packaged model (`xlt models list`) or an HF folder with a chat template."),
    data: Path = typer.Option(..., help="JSON lines: user_message, functions, expected_behavior {should_call_function, "
                                        "expected_function, expected_parameters}, scenario_type, language "
                                        "(`xlt tools-data` writes a demo set)."),
    langs: Optional[str] = typer.Option(None, help="Comma-separated languages to evaluate (the records' language "
                                                   "field) (default: all in --data)."),
    out: Path = typer.Option(Path("runs/tools"), help="Folder: metrics.json, responses.jsonl, report.html."),
    max_new_tokens: int = typer.Option(64, help="Greedy tokens generated per answer."),
    batch_size: int = typer.Option(8, help="Prompts per generation batch."),
    start_tag: str = typer.Option("```tool_call", help="Opening tag of a tool-call block."),
    end_tag: str = typer.Option("```", help="Closing tag of a tool-call block."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
    allow_pickle: bool = typer.Option(False, help="Allow loading pickle (*.bin) weights. Only for files you trust."),
    progress: bool = typer.Option(True, help="Show progress bars."),
):
    """Score a model's tool calls as TUCAN does: CORRECT, NO_CALL_WHEN_EXPECTED, WRONG_FUNCTION, WRONG_PARAMETERS,
    UNEXPECTED_CALL, MALFORMED_JSON; accuracy overall, per scenario and per language."""
    from rich.table import Table

    from xlt.cli.common import out as console
    from xlt.tasks.toolcall import CATEGORIES, evaluate_tools

    m = evaluate_tools(model, data, out, [l.strip() for l in langs.split(",") if l.strip()] if langs else None,
                       max_new_tokens=max_new_tokens, batch_size=batch_size, start_tag=start_tag, end_tag=end_tag,
                       overwrite=overwrite, allow_pickle=allow_pickle, progress=progress)
    t = Table(title=f"tool-call accuracy {m['accuracy']:.3f} ({m['correct']}/{m['total']}, {m['seconds']:.0f} s) "
                    f"-> {out}/report.html")
    for c in ("language/scenario", "n", "accuracy"):
        t.add_column(c, justify="left" if c.startswith("lang") else "right")
    for k, v in m["by_language_scenario"].items():
        t.add_row(k, str(v["total"]), f"{v['accuracy']:.3f}")
    console.print(t)
    console.print("errors: " + ", ".join(f"{c} {m['error_distribution'][c]}" for c in CATEGORIES[1:]), highlight=False)


def tools_data(
    out: Path = typer.Option(Path("tools.jsonl"), help="JSON-lines file to write."),
    langs: str = typer.Option("en,sw", help="Comma-separated languages (templates: en, sw, fr)."),
    n_calls: int = typer.Option(100, help="get_verse queries per language (the same verses in every language)."),
    n_irrelevant: int = typer.Option(25, help="Questions no function answers, per language."),
    seed: int = typer.Option(0, help="Seed for the verses and templates drawn."),
):
    """Write the demo set: the tool get_verse(book, chapter, verse), template queries naming real verses (book names
    from the Bible corpus in each language) and unrelated questions."""
    from xlt.cli.common import out as console
    from xlt.tasks.toolcall import verse_lookup_records, write_records

    recs = verse_lookup_records([l.strip() for l in langs.split(",") if l.strip()], n_calls, n_irrelevant, seed)
    write_records(recs, out)
    console.print(f"{len(recs)} records -> {out}")
