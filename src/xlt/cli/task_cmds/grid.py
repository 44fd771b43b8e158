"""``xlt eval-grid``: JiraiBench's content-language × prompt-language grid of macro-F1 with paired-bootstrap
prompt-language effects. Thin layer over :func:`xlt.tasks.grid.evaluate_grid`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app) -> None:
    app.command(name="eval-grid")(eval_grid)


def _langs(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def eval_grid(
    model: str = typer.Option("smollm2", help="A packaged causal LM (`xlt models list`) or an HF folder."),
    task: str = typer.Option("bible-genre", help="Task: bible-genre (a verse -> its book's group)."),
    content: str = typer.Option("en,sw,fr", help="Comma-separated content languages (the examples' language)."),
    prompt: str = typer.Option("en,sw,fr", help="Comma-separated prompt languages (templates: en, sw, fr)."),
    out: Path = typer.Option(Path("runs/grid"), help="Folder: metrics.json, report.html."),
    per_group: int = typer.Option(4, help="Examples per label (book group); the same verses in every content language."),
    max_chars: int = typer.Option(160, help="Longest verse drawn, in characters (in every content language)."),
    baseline: str = typer.Option("native", help="Prompt language each effect is measured against: native (the "
                                                "content's own language) or a prompt language."),
    bootstrap: int = typer.Option(1000, help="Paired-bootstrap resamples for the effects' 95% CIs."),
    seed: int = typer.Option(0, help="Seed for the examples drawn and the bootstrap."),
    chat: Optional[bool] = typer.Option(None, "--chat/--no-chat", help="Put prompts in the tokenizer's chat template "
                                                                       "(default: when it has one)."),
    calibrate: bool = typer.Option(False, help="Subtract each label's score after a content-free prompt (text N/A) "
                                               "per prompt language: contextual calibration, off by default."),
    batch_size: int = typer.Option(8, help="Prompts per forward pass."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
    allow_pickle: bool = typer.Option(False, help="Allow loading pickle (*.bin) weights. Only for files you trust."),
    progress: bool = typer.Option(True, help="Show progress bars."),
):
    """Macro-F1 of every content × prompt language pair (labels by log-likelihood), and each prompt language's
    effect against the baseline with a paired-bootstrap 95% CI."""
    from rich.table import Table

    from xlt.cli.common import out as console
    from xlt.tasks.grid import evaluate_grid

    m = evaluate_grid(model, out, task, _langs(content), _langs(prompt), per_group=per_group, max_chars=max_chars,
                      baseline=baseline, samples=bootstrap, seed=seed, chat=chat, calibrate=calibrate, batch_size=batch_size,
                      overwrite=overwrite, allow_pickle=allow_pickle, progress=progress)
    t = Table(title=f"{task}: macro-F1 (n per cell), rows content, columns prompt ({m['seconds']:.0f} s) -> "
                    f"{out}/report.html")
    t.add_column("content")
    for p in m["prompt"]:
        t.add_column(p, justify="right")
    for c, row in m["grid"].items():
        t.add_row(c, *[f"{row[p]['macro_f1']:.3f} ({row[p]['n']})" for p in m["prompt"]])
    console.print(t)
    e = Table(title="prompt-language effects: ΔF1 vs baseline, paired-bootstrap 95% CI")
    for col in ("content", "prompt", "baseline", "ΔF1", "95% CI"):
        e.add_column(col, justify="right" if col in ("ΔF1", "95% CI") else "left")
    for x in m["effects"]:
        e.add_row(x["content"], x["prompt"], x["baseline"], f"{x['delta']:+.3f}",
                  f"[{x['ci_low']:+.3f}, {x['ci_high']:+.3f}]")
    console.print(e)
