"""``xlt bli``: bilingual lexicon induction with an encoder's word vectors (P@1/MRR en↔X, NN and CSLS), before and
after BabelBERT lexical specialisation. Thin layer over :func:`xlt.tasks.babelbert.run_bli`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app) -> None:
    @app.command("bli")
    def bli_cmd(
        encoder: str = typer.Option("e5", help="Encoder: 'e5' (multilingual-e5-small, `xlt models prepare e5`) or "
                                               "a local BertModel folder."),
        pairs: str = typer.Option("en-sw,en-de", help="Comma-separated language pairs src-tgt."),
        lexicon: str = typer.Option("auto", help="auto (FreeDict if installed, else induced) | freedict | induced "
                                                 "(from the Bible's train split) | tsv:PATTERN with {pair} "
                                                 "(and optionally {part} = train/test)."),
        specialise: bool = typer.Option(True, "--specialise/--no-specialise",
                                        help="Also specialise the encoder (symmetric InfoNCE on the train halves) "
                                             "and evaluate again."),
        steps: int = typer.Option(200, help="Specialisation steps."),
        batch_size: int = typer.Option(64, help="Translation pairs per batch (in-batch negatives)."),
        lr: float = typer.Option(2e-5, help="AdamW learning rate."),
        temperature: float = typer.Option(0.05, help="InfoNCE temperature."),
        train_layers: int = typer.Option(0, help="Train only the top N transformer layers (0: all)."),
        k: int = typer.Option(10, help="CSLS neighbourhood size."),
        max_test_words: int = typer.Option(1000, help="At most this many test source words per pair (0: all)."),
        corpus: str = typer.Option("bible", help="Parallel corpus for induced lexicons."),
        seed: int = typer.Option(0, help="Seed of the lexicon split, batch order and dropout."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder: metrics.json, report.html."),
        overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
        options: Optional[list[str]] = typer.Option(None, "-O", help="Specialisation option KEY=VALUE "
                                                    "(see `xlt losses`); overrides the flags above."),
    ):
        """BLI P@1/MRR both ways (NN and CSLS, one similarity pass) on held-out lexicon halves, before/after
        BabelBERT specialisation."""
        from rich.table import Table

        from xlt.cli.common import out as console
        from xlt.cli.common import parse_options
        from xlt.options import build
        from xlt.tasks.babelbert import BabelBertOptions, run_bli

        values = {"steps": steps, "batch_size": batch_size, "lr": lr, "temperature": temperature,
                  "train_layers": train_layers, "seed": seed, **parse_options(options)}
        o = build(BabelBertOptions, values, "xlt bli")
        m = run_bli(out, encoder, pairs, lexicon, specialise, o, k, max_test_words or None, corpus, overwrite,
                    log=lambda msg: console.print(f"[dim]{msg}[/]", highlight=False))
        t = Table(title=f"BLI ({m['seconds']:.0f} s) -> {out}/report.html")
        for c in ("pair", "stage", "method", "→ P@1", "→ MRR", "← P@1", "← MRR"):
            t.add_column(c, justify="left" if c in ("pair", "stage", "method") else "right")
        for name in m["pairs"]:
            for stage in ("before", "after"):
                r = (m.get(stage) or {}).get(name)
                for method in ("nn", "csls") if r else ():
                    f, b = r[method]["src_to_tgt"], r[method]["tgt_to_src"]
                    t.add_row(name, stage, method, f"{f['p_at_1']:.3f}", f"{f['mrr']:.3f}", f"{b['p_at_1']:.3f}",
                              f"{b['mrr']:.3f}")
        console.print(t)
