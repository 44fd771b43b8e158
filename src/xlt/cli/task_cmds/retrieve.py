"""``xlt retrieve train|adapter|rerank|eval``: ColBERT-XM modular retrieval (a shared encoder, one adapter per
language, exact MaxSim) and cross-encoder rerankers. Thin layer over :func:`xlt.tasks.colbert_xm.run_train`,
:func:`~xlt.tasks.colbert_xm.run_adapter`, :func:`xlt.tasks.sparse_rerank.run_rerank` and
:func:`~xlt.tasks.colbert_xm.run_eval`, with the same defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

retrieve_app = typer.Typer(help="ColBERT-XM retrieval: train the shared encoder, add a language adapter, train a "
                                "reranker, evaluate.",
                           no_args_is_help=True)


def _progress(every: int):
    from xlt.cli.common import out as console

    def log(step, loss):
        if (step + 1) % every == 0:
            console.print(f"step {step + 1}: loss {loss:.4f}")
    return log


@retrieve_app.command("train")
def train_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: encoder/, metrics.json, report.html."),
    encoder: str = typer.Option("e5", help="Encoder: e5 (multilingual-e5-small, `xlt models prepare e5`) or a "
                                           "local BertModel folder."),
    corpus: str = typer.Option("bible", help="Corpus of the training pairs (bible: BBE → KJV verse pairs)."),
    train_lang: str = typer.Option("en", help="Language of the training pairs (its adapter is active)."),
    steps: int = typer.Option(200, help="Optimiser steps."),
    batch_size: int = typer.Option(8, help="Triples per step."),
    lr: float = typer.Option(3e-5, help="AdamW learning rate (10 warm-up steps)."),
    n_triples: Optional[int] = typer.Option(None, help="Use only this many training triples (default: all)."),
    adapter_steps: int = typer.Option(0, help="MLM steps of the training language's adapter first (0: identity)."),
    seed: int = typer.Option(0, help="Seed of the projection, batches and dropout."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
):
    """Train the shared layers and projection (embeddings and adapters frozen) by pairwise + in-batch softmax CE."""
    from xlt.cli.common import out as console
    from xlt.tasks.colbert_xm import run_train

    m = run_train(out, encoder, corpus, train_lang, steps, batch_size, lr, n_triples, adapter_steps, seed, overwrite,
                  log=_progress(max(1, steps // 10)))
    t = m["training"]
    console.print(f"{t['steps']} steps in {t['seconds']:.0f} s, loss {t['losses'][0]:.3f} -> {t['losses'][-1]:.3f}; "
                  f"-> {out}/report.html")


@retrieve_app.command("adapter")
def adapter_cmd(
    run: Path = typer.Argument(..., help="A run folder written by `xlt retrieve train`."),
    lang: str = typer.Option(..., help="The new language (ISO 639-1/3)."),
    corpus: str = typer.Option("bible", help="Corpus of the language's MLM text (its train split)."),
    steps: int = typer.Option(200, help="MLM steps."),
    batch_size: int = typer.Option(16, help="Texts per step."),
    lr: float = typer.Option(1e-4, help="AdamW learning rate."),
    seed: int = typer.Option(0, help="Seed of the adapter, masking and batches."),
    overwrite: bool = typer.Option(False, help="Train the language's adapter again if it exists."),
):
    """Add LANG's adapter and train only it, by masked LM over the language's tokens (shared weights untouched)."""
    from xlt.cli.common import out as console
    from xlt.tasks.colbert_xm import run_adapter

    m = run_adapter(run, lang, corpus, steps, batch_size, lr, seed, overwrite, log=_progress(max(1, steps // 10)))
    t = m["training"]
    console.print(f"adapter {t['language']}: {t['steps']} steps in {t['seconds']:.0f} s, MLM loss "
                  f"{t['losses'][0]:.3f} -> {t['losses'][-1]:.3f}; -> {run}/adapter-{t['language']}/report.html")


@retrieve_app.command("rerank")
def rerank_cmd(
    run: Path = typer.Argument(..., help="A run folder written by `xlt retrieve train` (its encoder and adapters)."),
    out: Path = typer.Option(..., "--out", "-o", help="Reranker folder (for `xlt retrieve eval --rerank`), with "
                                                      "metrics.json and report.html."),
    kind: str = typer.Option("adapter", help="adapter: a ranking adapter over the run's language adapters; sparse: "
                                             "LT-SFT sparse deltas (a language delta each, a ranking delta)."),
    langs: str = typer.Option("en", help="Languages the reranker serves (adapter: the run must have them; sparse: "
                                         "a language delta is trained for each; en is always included)."),
    steps: int = typer.Option(200, help="Ranking steps (sparse: split between the full and the sparse phase)."),
    batch_size: int = typer.Option(8, help="Query-document pairs per step."),
    lr: Optional[float] = typer.Option(None, help="Learning rate [adapter 1e-3; sparse 3e-5, head 1e-3]."),
    n_triples: Optional[int] = typer.Option(2000, help="BBE → KJV training triples (each a positive and a "
                                                       "negative pair)."),
    density: float = typer.Option(0.01, help="sparse: share of the encoder body's entries in each delta."),
    lang_steps: int = typer.Option(100, help="sparse: LT-SFT steps per phase of each language delta."),
    seed: int = typer.Option(0, help="Seed of the head, batches and masks."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
):
    """Train a cross-encoder reranker (point-wise BCE on Bible verse pairs) for `xlt retrieve eval --rerank`."""
    from xlt.cli.common import out as console
    from xlt.tasks.sparse_rerank import run_rerank

    m = run_rerank(run, out, kind, langs.split(","), steps, batch_size, lr, n_triples, density, lang_steps, seed,
                   overwrite, log=None)
    t = m["training"]
    console.print(f"{kind} reranker: {steps} steps in {t['seconds']:.0f} s, BCE {t['losses'][0]:.3f} -> "
                  f"{t['losses'][-1]:.3f}; -> {out}/report.html")


@retrieve_app.command("eval")
def eval_cmd(
    run: Path = typer.Argument(..., help="A run folder written by `xlt retrieve train`."),
    pairs: str = typer.Option("en-en", help="Comma-separated QUERY-DOC language pairs, e.g. en-sw,fr-fr,de-de."),
    split: str = typer.Option("test", help="Books whose verses are the queries: test or dev."),
    n_docs: int = typer.Option(5000, help="Documents per pair (the relevant verses plus train-book verses)."),
    n_queries: Optional[int] = typer.Option(None, help="Use only this many queries per pair (default: all)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for metrics.json, report.html "
                                                                 "(default: RUN/eval-SPLIT)."),
    batch_size: int = typer.Option(64, help="Texts per encoder batch."),
    seed: int = typer.Option(0, help="Seed of the distractor documents and their order."),
    overwrite: bool = typer.Option(False, help="Replace the output folder if it exists."),
    rerank: Optional[Path] = typer.Option(None, help="A reranker folder (CrossEncoderReranker or SparseDeltaReranker "
                                                     ".save, xlt.tasks): also rerank the adapter run's top k."),
    rerank_mode: str = typer.Option("split", help="CLIR mode of the reranker: qlang | dlang | split | both (sparse "
                                                  "rerankers: qlang | dlang | both)."),
    rerank_k: int = typer.Option(100, help="First-stage candidates the reranker reorders."),
):
    """MRR@10 and recall@1/10/100 per pair, with the languages' adapters and without any adapter (and reranked with
    --rerank)."""
    from rich.table import Table

    from xlt.cli.common import out as console
    from xlt.tasks.colbert_xm import run_eval

    reranker = None
    if rerank is not None:
        from xlt.tasks.rerank import load_reranker

        reranker = load_reranker(rerank)
    m = run_eval(run, pairs.split(","), split, n_docs, n_queries, out, batch_size, seed, overwrite,
                 reranker=reranker, rerank_mode=rerank_mode, rerank_k=rerank_k)
    t = Table(title=f"retrieval, {split} split, {n_docs} documents ({m['seconds']:.0f} s)")
    for c in ("pair", "adapters", "queries", "MRR@10", "R@1", "R@10", "R@100"):
        t.add_column(c, justify="left" if c in ("pair", "adapters") else "right")
    for p, res in m["results"].items():
        for mode, r in res.items():
            t.add_row(p, mode, str(r["queries"]), *(f"{r[k]:.3f}" for k in ("mrr@10", "recall@1", "recall@10",
                                                                             "recall@100")))
    console.print(t)


def register(app) -> None:
    app.add_typer(retrieve_app, name="retrieve")
