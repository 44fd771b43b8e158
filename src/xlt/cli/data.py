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


def _make_command(name: str, entry: Any):
    from xlt import options as opts

    specs = opts.specs(entry.options)
    params, annotations = [], {}
    for s in specs:
        tp = _flag_type(s.type)
        flag = "--" + s.name.replace("_", "-")
        decls = [f"{flag}/--no-{s.name.replace('_', '-')}"] if tp is Optional[bool] else [flag]
        default_txt = "required" if s.required else f"default: {s.default}"
        help_ = f"{s.help} [{default_txt}]"
        params.append(inspect.Parameter(s.field, inspect.Parameter.KEYWORD_ONLY,
                                        default=typer.Option(None, *decls, help=help_, show_default=False),
                                        annotation=tp))
        annotations[s.field] = tp
    for pname, tp, default in _COMMON:
        params.append(inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=tp))
        annotations[pname] = tp

    def command(**kwargs):
        from xlt.data.engine import run_builder

        common = {p: kwargs.pop(p) for p, _, _ in _COMMON}
        values = {s.name: kwargs[s.field] for s in specs if kwargs.get(s.field) is not None}
        manifest = run_builder(name, common["out"], seed=common["seed"], overwrite=common["overwrite"],
                               chunk_size=common["chunk_size"], show_progress=common["progress"],
                               as_dataset=common["as_dataset"], **values)
        _summary(manifest, common["out"])

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = annotations
    command.__name__ = name.replace("-", "_")
    command.__doc__ = entry.description
    return command


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
