"""The ``xlt`` command line: a thin layer over the Python API (same names, same defaults)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from xlt.cli.common import out, parse_options, print_registry  # noqa: F401 (parse_options: part of this module's API)
from xlt.errors import XltError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(help="xlt: cross-lingual transfer of language models.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
models_app = typer.Typer(help="Prepare and inspect source models.", no_args_is_help=True)
corpus_app = typer.Typer(help="Inspect corpora.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(corpus_app, name="corpus")
err = Console(stderr=True)


@app.command()
def adapt(
    source: str = typer.Option("smollm2", help="Source model: a local HF folder, or a packaged model from `xlt models list` (prepared on first use)."),
    target: str = typer.Option("sw", help="Target language, ISO 639-1 or 639-3 (sw = swa = swh)."),
    corpus: str = typer.Option("bible", help="bible | text:PATH | jsonl:PATH[#FIELD] | hf:PATH[#COLUMN]."),
    init: str = typer.Option("overlap,mean,random", help="Comma-separated embedding inits (see `xlt inits`)."),
    out: Path = typer.Option(Path("runs/adapt"), help="Run folder: one model per init, metrics.json, report.html."),
    steps: int = typer.Option(300, help="Training steps per init (stage 1 + stage 2)."),
    stage1_steps: Optional[int] = typer.Option(None, help="Embedding-only steps first [default: steps/3]."),
    vocab_size: int = typer.Option(8000, help="Target tokenizer vocabulary size."),
    batch_size: int = typer.Option(8, help="Sequences per micro-batch (per process)."),
    grad_accum: int = typer.Option(1, help="Micro-batches per optimizer step."),
    seq_len: int = typer.Option(256, help="Tokens per packed training sequence."),
    lr: float = typer.Option(2e-4, help="Peak learning rate of stage 2 (whole model)."),
    embedding_lr: float = typer.Option(1e-3, help="Peak learning rate of stage 1 (embeddings)."),
    eval_every: Optional[int] = typer.Option(None, help="Evaluate dev bits/byte every N steps [default: steps/10]."),
    eval_max_bytes: int = typer.Option(20000, help="Cap on held-out text per evaluation (bytes, whole documents)."),
    save_every: Optional[int] = typer.Option(None, help="Checkpoint every N steps [default: eval-every]."),
    seed: int = typer.Option(0, help="Seed for inits and data order."),
    source_lang: str = typer.Option("en", help="Source model's language (for premium on parallel text)."),
    samples: int = typer.Option(3, help="Greedy continuations of held-out prompts per model."),
    dictionary: Optional[str] = typer.Option(None, help="Bilingual dictionary for wechsel: TSV path or freedict:eng-swh [default: induced from the parallel corpus]."),
    init_option: Optional[list[str]] = typer.Option(None, "--init-option", "-O",
                                                    help="KEY=VALUE for init methods (repeatable; `xlt inits` lists each one's options), e.g. -O wechsel_faithful=true -O source_vectors=en.bin."),
    multihead: bool = typer.Option(False, help="Keep the source model's output head and tokenizer beside the new one (heads/<lang>/ in each model folder; --method full only)."),
    romanize: bool = typer.Option(False, help="Train and evaluate on uroman-romanised target text (non-Latin scripts); results in both scripts' units (per romanised and per native-script byte)."),
    loo_tokens: int = typer.Option(200, help="Overlapping tokens held out for the leave-one-out comparison (0 skips it)."),
    method: str = typer.Option("full", help="Comma-separated stage-2 methods: full | lora | sft | ... (see `xlt methods`)."),
    method_option: Optional[list[str]] = typer.Option(None, "--method-option", "-M",
                                                      help="KEY=VALUE for the methods (repeatable; `xlt methods` lists each one's options), e.g. -M r=8 -M density=0.01."),
    overwrite: bool = typer.Option(False, help="Start over: replace what --out holds (a finished or an interrupted run)."),
    allow_pickle: bool = typer.Option(False, help="Allow loading pickle (*.bin) weights. Only for files you trust."),
    precision: str = typer.Option("auto", help="Training arithmetic: auto (bf16 where the CPU has AVX512-BF16/AMX or the GPU has bf16, else fp32) | fp32 | bf16. bf16 is autocast; weights and optimizer state stay fp32."),
    eval_precision: str = typer.Option("fp32", help="Bits/byte arithmetic: fp32 (comparable across machines) | bf16 | auto."),
    compile: str = typer.Option("no", "--compile", help="Train through torch.compile: no | yes (an error if it cannot run here) | try (eager where it cannot). Compiling takes a minute or more per stage on a small CPU; it pays on long runs (docs/training.md)."),
    analyze: bool = typer.Option(False, "--analyze", help="At the end, run xlt analyze on the source and every adapted model (alignment, lens, language neurons on source- and target-language verses; needs a parallel corpus) into OUT/analysis/, linked from report.html."),
    progress: bool = typer.Option(True, help="Show progress bars."),
):
    """Adapt a source LM to a target language: new tokenizer, embedding init(s), continued training, report.

    Rerunning an interrupted run with the same settings resumes it where it stopped.
    """
    from xlt.adapt import AdaptSettings, run

    settings = AdaptSettings.create(
        source=source, target=target, corpus=corpus, init=init, steps=steps, stage1_steps=stage1_steps,
        vocab_size=vocab_size, batch_size=batch_size, grad_accum=grad_accum, seq_len=seq_len, lr=lr,
        embedding_lr=embedding_lr, eval_every=eval_every, eval_max_bytes=eval_max_bytes, save_every=save_every,
        seed=seed, source_lang=source_lang, samples=samples, init_options=parse_options(init_option, dictionary, "-O"),
        loo_tokens=loo_tokens, romanize=romanize, method=method, method_options=parse_options(method_option, None, "-M"),
        multihead=multihead, precision=precision, eval_precision=eval_precision, compile=compile)
    run(settings, out, overwrite=overwrite, allow_pickle=allow_pickle, show_progress=progress, analyze=analyze)


@app.command()
def inits():
    """List the registered embedding-initialisation methods and their options (for -O KEY=VALUE)."""
    from xlt.vocab.registry import INITS

    print_registry(INITS, "-O KEY=VALUE to xlt adapt (one set for all the inits of a run; each takes its own keys)")


@app.command()
def methods():
    """List the registered stage-2 adaptation methods and their options (for -M KEY=VALUE)."""
    from xlt.adapt.methods import ADAPTATIONS

    print_registry(ADAPTATIONS, "-M KEY=VALUE to xlt adapt (one set for all the methods of a run; each takes its own keys)")


@app.command()
def merges():
    """List the registered merge methods and their parameters (for a merge config's parameters:)."""
    from xlt.merge.registry import MERGES

    print_registry(MERGES, "KEY: VALUE under parameters: in the merge config (per-model ones under models[*].parameters)")


@app.command()
def evals():
    """List the registered evaluation suites and their options (for xlt evaluate -O KEY=VALUE)."""
    from xlt.eval.registry import SUITES

    print_registry(SUITES, "-O KEY=VALUE to xlt evaluate (one set for all the suites; each takes its own keys)")


@app.command()
def losses():
    """List the registered task losses and modules (xlt.tasks) and their options."""
    from xlt.tasks.registry import LOSSES, MODULES

    print_registry(LOSSES, "keyword arguments: xlt.tasks.losses.get(NAME)(*inputs, **options)")
    print_registry(MODULES, "keyword arguments of the module's constructor")


@app.command()
def evaluate(
    models: Optional[list[str]] = typer.Argument(None, help="Models: packaged names (smollm2, gemma3), HF folders, or `xlt adapt` run folders (each of its models and its source)."),
    langs: str = typer.Option("bible", help="Comma-separated languages (ISO 639-1/3), or bible for all of the corpus's."),
    suite: Optional[str] = typer.Option(None, help="Comma-separated suites (`xlt evals`); if not given: bpb,tokenizer, plus forgetting for a run folder."),
    out: Path = typer.Option(Path("runs/eval"), help="Folder for metrics.json and report.html."),
    corpus: str = typer.Option("bible", help="Held-out text: bible | text:PATH | jsonl:PATH[#FIELD] | hf:PATH[#COLUMN]."),
    split: str = typer.Option("test", help="Held-out split (dev | test)."),
    max_bytes: int = typer.Option(8000, help="Held-out text per language (UTF-8 bytes, whole documents)."),
    bpb_mode: Optional[str] = typer.Option(None, help="stream (xlt adapt's definition, default) | documents (lm-eval's loglikelihood_rolling bits_per_byte). Same as -O bpb_mode=..."),
    tasks: Optional[str] = typer.Option(None, help="lm-eval tasks for --suite tasks: bible (xlt's Bible tasks in every language, the default) or task names, comma-separated. Same as -O tasks=..."),
    task_dir: Optional[Path] = typer.Option(None, help="A folder of lm-eval task YAML files with local data, for --suite tasks. Same as -O task_dir=..."),
    refs: Optional[Path] = typer.Option(None, help="MT references, one segment per line (suite mt)."),
    hyps: Optional[str] = typer.Option(None, help="MT systems as NAME=FILE,NAME=FILE (the first is the baseline of the paired tests; suite mt)."),
    test: Optional[str] = typer.Option(None, help="MT paired tests: bs | ar | bs,ar | none. Same as -O mt_test=..."),
    qa: Optional[Path] = typer.Option(None, help="QA predictions, JSON lines {lang, prediction, answers[, system, asked_in, source]} (suite qa: EM/F1, mother-tongue and locality effects)."),
    translate: Optional[str] = typer.Option(None, help="SRC-TGT (e.g. eng-swh): the models translate held-out documents, scored by suite mt. Same as -O translate=..."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-O", help="KEY=VALUE for the suites (repeatable; `xlt evals` lists them)."),
    seed: int = typer.Option(0, help="Seed for everything a suite draws."),
    precision: str = typer.Option("fp32", help="Forward-pass arithmetic: fp32 | bf16 (marked in each signature)."),
    overwrite: bool = typer.Option(False, help="Replace what --out holds."),
    allow_pickle: bool = typer.Option(False, help="Allow loading pickle (*.bin) weights. Only for files you trust."),
    progress: bool = typer.Option(True, help="Show progress bars."),
):
    """Score models in many languages: bits/byte, tokenizer premium, forgetting, parity (see `xlt evals`).

    Writes OUT/metrics.json (every score with its n, direction and signature) and OUT/report.html.
    """
    from xlt.eval.evaluate import evaluate as run_eval

    opts = parse_options(option, None, "-O")
    for key, value in (("bpb_mode", bpb_mode), ("tasks", tasks), ("task_dir", task_dir), ("mt_test", test),
                       ("translate", translate)):
        if value is not None:
            opts[key] = str(value)
    inputs = {}
    if refs is not None or hyps is not None:
        inputs = {"refs": refs, "hyps": _named_files(hyps)}
    if qa is not None:
        inputs["qa"] = qa
    if translate and not suite:
        suite = "mt"
    res = run_eval(models or [], langs, suite, out, corpus=corpus, split=split, max_bytes=max_bytes, options=opts,
                   inputs=inputs, seed=seed, precision=precision, allow_pickle=allow_pickle, overwrite=overwrite,
                   show_progress=progress)
    _print_scores(res.scores)
    import logging

    logging.getLogger("xlt").info("report: %s", (res.out / "report.html").resolve())


def _named_files(spec: str | None) -> dict[str, str]:
    """``"base=a.txt,bt=b.txt"`` -> ``{"base": "a.txt", "bt": "b.txt"}`` (a bare path is named after its file)."""
    out: dict[str, str] = {}
    for item in (x.strip() for x in (spec or "").split(",") if x.strip()):
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).stem, item
        if name in out:
            raise XltError(f"system {name!r} is given twice in --hyps", "name each system once: NAME=FILE,...")
        out[name] = path
    return out


def _print_scores(scores) -> None:
    """One table per metric: a row per language, a column per model (the report has the plots)."""
    from rich.table import Table

    for metric in scores.metrics():
        table = scores.table(metric)
        langs = list(dict.fromkeys(lang for row in table.values() for lang in row))
        t = Table(title=f"{metric} ({'higher' if scores.direction(metric) else 'lower'} is better)")
        t.add_column("lang")
        for m in table:
            t.add_column(m, justify="right")
        for lang in langs:
            t.add_row(lang, *[f"{row[lang]:.4g}" if lang in row else "—" for row in table.values()])
        out.print(t)


@models_app.command("prepare")
def models_prepare(
    name: str = typer.Argument("smollm2", help="Packaged model to convert (one of `xlt models list`)."),
    force: bool = typer.Option(False, help="Convert again even if the cache has it."),
):
    """Convert a model shipped in a PyPI package into a safetensors HF folder in the cache (once)."""
    from xlt.models import PREPARERS, prepare, prepared_path

    cached = name in PREPARERS and (prepared_path(name) / "xlt_prepared.json").is_file()
    path = prepare(name, force=force)
    out.print(f"{'cached' if cached and not force else 'prepared'}: {path}")


@models_app.command("list")
def models_list():
    """List the packaged models xlt can prepare, and whether they are in the cache."""
    from xlt.models import PREPARERS, prepared_path

    for name, info in PREPARERS.items():
        ready = (prepared_path(name) / "xlt_prepared.json").is_file()
        out.print(f"[bold]{name}[/]  {info['description']}  [{'green' if ready else 'yellow'}]{'prepared' if ready else 'not prepared'}[/]",
                  highlight=False)


@corpus_app.command("stats")
def corpus_stats(
    corpus: str = typer.Argument("bible", help="bible | text:PATH | jsonl:PATH[#FIELD] | hf:PATH[#COLUMN]."),
    lang: Optional[list[str]] = typer.Option(None, "--lang", help="Languages to count [default: all]."),
):
    """Documents, words, characters and bytes per language and split."""
    from rich.table import Table

    from xlt.corpora import SPLITS, open_corpus

    c = open_corpus(corpus, lang[0] if lang else None)
    langs = [c.language(l) for l in lang] if lang else c.languages()
    table = Table(title=f"{c.name}: {c.split_rule}")
    for col in ("language", "split", "documents", "words", "characters", "bytes"):
        table.add_column(col, justify="left" if col in ("language", "split") else "right")
    for l in langs:
        for split in SPLITS:
            st = c.stats(l, split)
            table.add_row(f"{l.code} ({l.name})", split, f"{st.documents:,}", f"{st.words:,}", f"{st.characters:,}", f"{st.bytes:,}")
    out.print(table)


from xlt.cli.merge import MergeCommand, merge as _merge  # noqa: E402

app.command(name="merge", cls=MergeCommand)(_merge)

from xlt.cli.analyze import analyses as _analyses, analyze as _analyze, upcycle as _upcycle  # noqa: E402

app.command(name="analyze")(_analyze)
app.command(name="analyses")(_analyses)
app.command(name="upcycle")(_upcycle)

from xlt.cli.export import export as _export  # noqa: E402

app.command(name="export")(_export)

from xlt.cli.data import data_app, register_commands as _register_data_commands  # noqa: E402

_register_data_commands()
app.add_typer(data_app, name="data")

from xlt.cli.data import generate_command as _generate_command  # noqa: E402

app.command(name="generate")(_generate_command())

from xlt.cli.study import study_app  # noqa: E402

app.add_typer(study_app, name="study")

from xlt.cli.predict import predict_app  # noqa: E402

app.add_typer(predict_app, name="predict")

from xlt.cli.task_cmds import register_all as _register_task_commands  # noqa: E402

_register_task_commands(app)


def setup_logging(console: Console = err) -> None:
    """Show the library's ``xlt`` log records (INFO and up) on stderr through rich; library users choose their own."""
    import logging

    from rich.logging import RichHandler

    logger = logging.getLogger("xlt")
    if not any(getattr(h, "_xlt_cli", False) for h in logger.handlers):
        h = RichHandler(console=console, show_time=False, show_path=False, show_level=False, markup=False,
                        highlighter=None, rich_tracebacks=False)
        h.setFormatter(logging.Formatter("xlt %(message)s"))
        h._xlt_cli = True
        logger.addHandler(h)
    # under `accelerate launch` / torchrun only the first process reports progress; the others say only what is wrong
    import os

    logger.setLevel(logging.INFO if int(os.environ.get("RANK", "0") or 0) == 0 else logging.WARNING)


def main() -> None:
    from xlt.adapt.train import TrainingInterrupted

    setup_logging()
    try:
        app()
    except XltError as e:
        err.print(f"[bold red]error:[/] {e.problem}", highlight=False, soft_wrap=True)
        if e.fix:
            err.print(f"[bold]fix:[/] {e.fix}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except TrainingInterrupted as e:
        err.print(f"[yellow]interrupted[/] at step {e.step}; checkpoint in {e.checkpoint}. Run the same command again to resume.")
        sys.exit(130)


if __name__ == "__main__":
    main()
