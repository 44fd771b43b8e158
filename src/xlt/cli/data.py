"""``xlt data NAME``: one command per registered data builder, its flags made from the builder's options dataclass.

Nothing here names a builder: a new builder module gets its command, flags and ``--help`` from its declaration.
Flags the user does not give are not passed, so the Python defaults apply unchanged.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, Optional

import typer

data_app = typer.Typer(help="Build cross-lingual training data (one command per builder; every output has a "
                            "manifest.json).", no_args_is_help=True)

#: flags every builder takes (handled by the engine, not by the builder)
_COMMON = [
    ("out", Path, typer.Option(..., "--out", "-o", help="Output: X.jsonl (manifest beside it as X.manifest.json) or a folder (data.jsonl + manifest.json).")),
    ("seed", int, typer.Option(0, help="Seed: each record's randomness comes from (seed, builder, record key).")),
    ("chunk_size", int, typer.Option(1000, help="Records read and written per chunk (output is the same for any size).")),
    ("overwrite", bool, typer.Option(False, help="Replace --out if it exists.")),
    ("as_dataset", bool, typer.Option(False, help="With a folder --out: also save a `datasets` copy (save_to_disk) in OUT/dataset.")),
    ("progress", bool, typer.Option(True, help="Show progress bars.")),
]


def _flag_type(tp: Any) -> Any:
    """bool flags stay bool; every other option is read as text and converted by the options dataclass."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (typing.Union,) else []
    if tp is bool or args == [bool]:
        return Optional[bool]
    return Optional[str]


def _shown(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def _metavar(tp: Any) -> str:
    """INT, FLOAT, TEXT, LIST or the choices A|B of a Literal (optional types by their inner type)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Union and len(args) == 1:
        tp = args[0]
    if typing.get_origin(tp) is typing.Literal:
        return "|".join(map(str, typing.get_args(tp)))
    if typing.get_origin(tp) in (list, tuple):
        return "A,B,..."
    return {int: "INT", float: "FLOAT"}.get(tp, "TEXT")


def _make_command(name: str, entry: Any, run=None, common=None):
    """A Typer command whose flags are ``entry.options``' fields plus ``common`` (default: every builder's flags);
    ``run(values, **common)`` does the work (default: :func:`xlt.data.engine.run_builder` for builder ``name``)."""
    from xlt import options as opts

    common = _COMMON if common is None else common

    specs = opts.specs(entry.options)
    params, annotations = [], {}
    for s in specs:
        tp = _flag_type(s.type)
        flag = "--" + s.name.replace("_", "-")
        decls = [f"{flag}/--no-{s.name.replace('_', '-')}"] if tp is Optional[bool] else [flag]
        default_txt = "required" if s.required else f"default: {_shown(s.default)}"
        help_ = f"{s.help} ({default_txt})"
        meta = None if tp is Optional[bool] else _metavar(s.type)
        params.append(inspect.Parameter(s.field, inspect.Parameter.KEYWORD_ONLY,
                                        default=typer.Option(None, *decls, help=help_, show_default=False,
                                                             metavar=meta),
                                        annotation=tp))
        annotations[s.field] = tp
    for pname, tp, default in common:
        params.append(inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=tp))
        annotations[pname] = tp

    def command(**kwargs):
        given = {p: kwargs.pop(p) for p, _, _ in common}
        values = {s.name: kwargs[s.field] for s in specs if kwargs.get(s.field) is not None}
        (run or _run_builder(name))(values, **given)

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = annotations
    command.__name__ = name.replace("-", "_")
    command.__doc__ = entry.description
    return command


def _run_builder(name: str):
    def run(values: dict, out, seed, chunk_size, overwrite, as_dataset, progress):
        from xlt.data.engine import run_builder

        manifest = run_builder(name, out, seed=seed, overwrite=overwrite, chunk_size=chunk_size,
                               show_progress=progress, as_dataset=as_dataset, **values)
        _summary(manifest, out)
    return run


def _summary(manifest: dict, out: Path) -> None:
    import logging

    log = logging.getLogger("xlt")
    filt = ", ".join(f"{k}: kept {v['kept']}, dropped {v['dropped']}" for k, v in manifest["filters"].items())
    log.info("%s: %d records -> %s%s", manifest["builder"], manifest["records"], out, f" ({filt})" if filt else "")


def register_commands() -> None:
    """One ``xlt data NAME`` command per registered builder (imports the builder modules, which import lightly)."""
    from xlt.data.registry import BUILDERS

    for name, entry in sorted(BUILDERS.all().items()):
        data_app.command(name, help=entry.description)(_make_command(name, entry))


def generate_command():
    """``xlt generate``: flags from :class:`xlt.infer.run.GenerateOptions` (the Python API's defaults)."""
    from xlt.infer.run import Generate

    def run(values: dict, out, seed, chunk_size, overwrite, progress):
        from xlt.infer.run import generate

        summary = generate(out=out, seed=seed, chunk_size=chunk_size, overwrite=overwrite, show_progress=progress,
                           **values)
        _print_generation(summary)

    common = [c for c in _COMMON if c[0] != "as_dataset"]
    cmd = _make_command("generate", Generate(), run, common)
    cmd.__doc__ = ("Generate in a target language with a hedged sampling pool (greedy + samples at several "
                   "temperatures, one decode loop) and pick a candidate per prompt by greedy, MBR or X-MBR; "
                   "writes the candidates, the choices and a summary (off-target rate, chrF/BLEU per method).")
    return cmd


def _print_generation(summary: dict) -> None:
    from rich.table import Table

    from xlt.cli.common import out

    t = Table(title=f"{summary['n']} prompts (off-target by {summary['lid']}"
                    + (f"; references: {summary['off_target_floor']:.3f}" if "off_target_floor" in summary else "") + ")")
    for c in ("method", "off-target", "chrF", "BLEU"):
        t.add_column(c, justify="right" if c != "method" else "left")
    for m, row in summary["methods"].items():
        t.add_row(m, f"{row['off_target']:.3f}", f"{row['chrf']:.2f}" if "chrf" in row else "–",
                  f"{row['bleu']:.2f}" if "bleu" in row else "–")
    out.print(t)
