"""``xlt merge CONFIG OUT``: the command over :func:`xlt.merge.run` (same names, same defaults)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperCommand


class MergeCommand(TyperCommand):
    """``xlt merge``'s command: its ``--help`` names the registered merge methods, read from the registry only when
    help is shown (the registry imports torch and every method; the CLI's start-up imports neither)."""

    def format_help(self, ctx, formatter) -> None:
        from xlt.merge.registry import MERGES

        names = ", ".join(MERGES.names())
        if names not in (self.help or ""):
            self.help = (self.help or "").replace("the registered methods", f"the registered methods ({names})", 1)
        return super().format_help(ctx, formatter)


def merge(
    config: Path = typer.Argument(..., help="YAML merge config (a subset of mergekit's format; see docs/merge.md)."),
    out: Path = typer.Argument(..., help="Output model folder (must not exist unless --overwrite)."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists (only once the new merge is complete)."),
    shard_size: str = typer.Option("5GB", help="Largest output shard, e.g. 5GB, 1GB, 500MB."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: torch's own)."),
    chunk_elems: int = typer.Option(1 << 23, help="Element-wise methods work on row chunks of about this many elements."),
    allow_pickle: bool = typer.Option(False, help="Allow pickle (*.bin) inputs, read with weights_only=True. Only for files you trust."),
    hash_inputs: bool = typer.Option(True, help="Record each input weight file's SHA-256 in xlt_merge.json."),
    copy_tokenizer: bool = typer.Option(True, help="Copy the tokenizer files of tokenizer_source (or the base) to OUT."),
    dry_run: bool = typer.Option(False, help="Only check the config against the models and print the plan."),
    progress: bool = typer.Option(True, help="Show a progress bar over tensors."),
):
    """Merge models with one of the registered methods; `xlt merges` lists each one's parameters.

    Everything is checked before any work (architectures, shapes, tensors covered, parameters, disk);
    the output (sharded safetensors + index, config.json, tokenizer, xlt_merge.json provenance) is
    written to a temporary folder and renamed to OUT when complete.
    """
    import logging

    from xlt.merge import plan, run

    log = logging.getLogger("xlt.merge")
    if dry_run:
        p = plan(config, allow_pickle=allow_pickle)
        for n in p.notes:
            log.info("%s", n)
        log.info("%s: %d output tensors (%d merged, %d copied) from %d model(s); config from %s", p.method.name,
                 len(p.tensors), len(p.merged), len(p.tensors) - len(p.merged), len(p.sources), p.config_source)
        return
    run(config, out, overwrite=overwrite, allow_pickle=allow_pickle, shard_size=shard_size, chunk_elems=chunk_elems,
        threads=threads, copy_tokenizer_files=copy_tokenizer, hash_inputs=hash_inputs, show_progress=progress)
