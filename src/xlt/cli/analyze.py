"""``xlt analyze``, ``xlt analyses`` and ``xlt upcycle``: thin layers over :mod:`xlt.analyze` (same defaults)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def analyze(
    models: list[str] = typer.Argument(..., help="Models: packaged names (smollm2, gemma3), HF folders, or `xlt adapt` run folders (each of its models and its source)."),
    langs: str = typer.Option("eng,swh", help="Comma-separated languages (ISO 639-1/3) of the corpus, or bible for all of its languages."),
    ref: str = typer.Option("eng", help="The language every other is compared with (added to --langs if missing)."),
    analysis: Optional[str] = typer.Option(None, "--analysis", "-a", help="Comma-separated analyses (`xlt analyses`); default: every default analysis that applies to each model."),
    corpus: str = typer.Option("bible", help="A verse-aligned corpus (bible, or jsonl:PATH with ids shared across languages)."),
    n: int = typer.Option(300, help="Aligned texts per language in the capture pass."),
    heldout: int = typer.Option(40, help="Further aligned texts held out for measurements such as the neuron ablations."),
    split: str = typer.Option("test", help="Split of the reference language the texts come from."),
    out: Path = typer.Option(Path("runs/analysis"), help="Folder for analysis.json, analysis.html and side files."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-O", help="KEY=VALUE for the analyses (repeatable; `xlt analyses` lists them)."),
    batch_size: int = typer.Option(16, help="Texts per forward pass."),
    max_length: int = typer.Option(128, help="Tokens per text at most."),
    seed: int = typer.Option(0, help="Seed for every shuffle and bootstrap."),
    overwrite: bool = typer.Option(False, help="Replace what --out holds."),
    allow_pickle: bool = typer.Option(False, help="Allow loading pickle (*.bin) weights. Only for files you trust."),
    progress: bool = typer.Option(True, help="Show progress bars."),
):
    """How models represent languages, layer by layer: alignment with the reference language, lenses, language
    neurons, MoE routing (see `xlt analyses`). Writes OUT/analysis.json and OUT/analysis.html."""
    import logging

    from xlt.analyze import analyze as run
    from xlt.cli.common import parse_options

    res = run(models, langs, analysis, out, corpus=corpus, ref=ref, n=n, heldout=heldout, split=split,
              options=parse_options(option, None, "-O"), seed=seed, batch_size=batch_size, max_length=max_length,
              allow_pickle=allow_pickle, overwrite=overwrite, show_progress=progress)
    logging.getLogger("xlt").info("report: %s", (res.out / "analysis.html").resolve())


def analyses():
    """List the registered analyses and their options (for xlt analyze -O KEY=VALUE)."""
    from xlt.analyze.registry import ANALYSES
    from xlt.cli.common import print_registry

    print_registry(ANALYSES, "-O KEY=VALUE to xlt analyze (one set for all the analyses; each takes its own keys)")


def upcycle(
    source: str = typer.Argument(..., help="The dense model: a packaged name (smollm2) or an HF folder (Llama, Mistral or Qwen2 family)."),
    out: Path = typer.Argument(..., help="Folder for the mixture-of-experts model (a standard Qwen2-MoE HF folder)."),
    langs: str = typer.Option(..., help="Comma-separated languages the experts serve (ISO 639-1/3)."),
    experts: str = typer.Option("family", help="family (one expert per language family), language (one per language), or a number."),
    moe_layers: str = typer.Option("last:2", help="Layers that become MoE: last:N (Post-MoE), first:N, all, or indices 10,11."),
    top_k: Optional[int] = typer.Option(None, help="Experts per token (default: 2, or 1 with a single expert)."),
    family_map: Optional[Path] = typer.Option(None, help="A lang=family file overriding Glottolog's families."),
    train_steps: int = typer.Option(200, help="Training steps with hybrid routing (0: convert only)."),
    corpus: str = typer.Option("bible", help="Training text."),
    batch_size: int = typer.Option(8, help="Sequences per step."),
    seq_len: int = typer.Option(128, help="Tokens per sequence."),
    lr: float = typer.Option(2e-4, help="Peak learning rate."),
    precision: str = typer.Option("fp32", help="fp32 | bf16 | auto."),
    seed: int = typer.Option(0, help="Seed for the router and the training data order."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
    progress: bool = typer.Option(True, help="Show progress bars."),
):
    """Dense model -> language-family mixture of experts (Apollo-MoE): experts copied from the MLP, a new router,
    MoE only in --moe-layers, trained with hybrid routing. At init its logits equal the dense model's."""
    import logging

    from xlt.analyze.upcycle import upcycle_run

    res = upcycle_run(source, out, langs, experts=int(experts) if experts.isdigit() else experts,
                      moe_layers=moe_layers, train_steps=train_steps,
                      family_map=str(family_map) if family_map else None, seed=seed, show_progress=progress,
                      top_k=top_k, corpus=corpus, batch_size=batch_size, seq_len=seq_len, lr=lr,
                      precision=precision, overwrite=overwrite)
    logging.getLogger("xlt").info("upcycled model: %s", Path(res["out"]).resolve())
