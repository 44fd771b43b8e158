"""``xlt export FOLDER OUT``: the command over :func:`xlt.export.export` (same names, same defaults)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def export(
    folder: Path = typer.Argument(..., help="A model folder of an xlt adapt run (RUN/<init> or RUN/<init>+<method>), or a run folder that holds one model."),
    out: Path = typer.Argument(..., help="Output model folder (must not exist unless --overwrite)."),
    dtype: Optional[str] = typer.Option(None, help="fp32 | bf16 | fp16 (default: the source model's stored dtype, else fp32). fp16 refuses values beyond its range."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists (only once the new folder is complete)."),
    shard_size: str = typer.Option("5GB", help="Largest safetensors file, e.g. 5GB, 500MB; a larger model is sharded with model.safetensors.index.json."),
    base: Optional[str] = typer.Option(None, help="Base model of a parameter-efficient folder (folder or packaged name), if not the one it names; its weights must match the folder's fingerprint."),
):
    """Write an adapted model as a plain Hugging Face model folder (safetensors, config.json, tokenizer, generation
    config) that transformers, vLLM and lm-eval load without xlt: LoRA and MoS merged into the weights, the sparse
    delta applied, recursive models unrolled. Bottleneck adapters and prefix tuning cannot be exported (the error says
    why). See docs/export.md."""
    from xlt.export import export as run

    run(folder, out, dtype=dtype, overwrite=overwrite, shard_size=shard_size, base=base)
