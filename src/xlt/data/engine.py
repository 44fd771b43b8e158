"""The one engine every data builder runs on: streaming, per-record randomness, atomic output, the manifest.

A builder (registered in :data:`xlt.data.registry.BUILDERS`) only turns inputs into records: a generator
``records(ctx, options)`` that yields dicts. This engine, which knows no builder by name,

- hands the builder a :class:`BuildContext`: ``ctx.rng(key)`` is a NumPy generator seeded from
  ``(seed, builder, record key)``, so a record's randomness does not depend on which records came before it,
  on the chunk size or on the batch size; ``ctx.chunks(it)`` groups an iterator into chunks of ``chunk_size``;
  ``ctx.keep(filter, ok)`` counts what each filter kept and dropped;
- writes each record as one JSON line (keys in the builder's order, UTF-8) to a temporary file beside the
  output, flushed after every chunk, renamed over the output only when the builder finished (no half-written
  output, ever); an existing output is refused without ``overwrite``;
- checks each record's common fields (``key``, ``langs``, ``origin`` real|synthetic) and adds ``builder``;
- writes ``manifest.json``: the equivalent command, xlt's version, the seed, the options, SHA-256 of every
  input file, the records written, kept/dropped per filter and the builder's statistics (``ctx.extra``).

Outputs: ``OUT.jsonl`` (with ``OUT.manifest.json`` beside it), or a folder ``OUT/`` holding ``data.jsonl`` and
``manifest.json`` (and ``dataset/``, a ``datasets`` ``save_to_disk`` copy, with ``as_dataset=True``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from xlt.errors import XltError
from xlt.util import portable, sha256_file, stable_hash

ORIGINS = ("real", "synthetic")


@dataclass
class FilterCount:
    kept: int = 0
    dropped: int = 0


@dataclass
class BuildContext:
    """What a builder gets from the engine besides its options."""

    builder: str
    seed: int = 0
    chunk_size: int = 1000
    show_progress: bool = False
    filters: dict[str, FilterCount] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    written: int = 0
    #: builder-specific statistics (before/after counts, F1 against gold, ...), written to the manifest's "stats"
    extra: dict = field(default_factory=dict)
    #: the output folder being written (a temporary folder renamed at the end), for side outputs such as a model;
    #: None when the output is a single JSONL file
    workdir: Path | None = None
    _on_chunk: Callable[[], None] | None = None

    def side_folder(self, what: str) -> Path:
        """A folder inside the output for a side output (``what``); refused for a JSONL ``--out``."""
        if self.workdir is None:
            raise XltError(f"builder {self.builder} writes {what} beside its records, which needs a folder output",
                           "give --out a folder name (not X.jsonl)")
        path = self.workdir / what
        path.mkdir(parents=True, exist_ok=True)
        return path

    def rng(self, key: str | int | tuple) -> np.random.Generator:
        """The generator of one record: the same for the same (seed, builder, key) on every machine and run."""
        k = key if isinstance(key, str) else "\x1f".join(map(str, key)) if isinstance(key, tuple) else str(key)
        return np.random.default_rng(stable_hash(f"{self.seed}\x00{self.builder}\x00{k}"))

    def seed_for(self, key: str | int | tuple) -> int:
        """An integer seed (for torch generators) derived like :meth:`rng`."""
        return int(self.rng(key).integers(0, 2**63 - 1))

    def keep(self, name: str, ok: bool) -> bool:
        """Count one decision of filter ``name`` and return ``ok``: ``if not ctx.keep("len", ratio < 2): continue``."""
        c = self.filters.setdefault(name, FilterCount())
        if ok:
            c.kept += 1
        else:
            c.dropped += 1
        return ok

    def chunks(self, items: Iterable[Any]) -> Iterator[list[Any]]:
        """``items`` in lists of ``chunk_size``; everything yielded for one chunk is on disk before the next is read."""
        buf: list[Any] = []
        for it in items:
            buf.append(it)
            if len(buf) >= self.chunk_size:
                yield buf
                buf = []
                self.flush()
        if buf:
            yield buf
            self.flush()

    def flush(self) -> None:
        if self._on_chunk is not None:
            self._on_chunk()

    def add_input(self, name: str, path: str | os.PathLike) -> None:
        """Record an input file's SHA-256 in the manifest (a folder: each file under it, in sorted order)."""
        p = Path(path)
        if p.is_dir():
            import hashlib

            h = hashlib.sha256()
            for f in sorted(x for x in p.rglob("*") if x.is_file()):
                h.update(str(f.relative_to(p)).encode())
                h.update(sha256_file(f).encode())
            self.inputs[name] = h.hexdigest()
        elif p.is_file():
            self.inputs[name] = sha256_file(p)

    def add_input_hash(self, name: str, digest: str) -> None:
        self.inputs[name] = digest


def output_paths(out: str | os.PathLike) -> tuple[Path, Path, bool]:
    """``(data file, manifest, is_folder)`` for ``--out``: ``X.jsonl`` -> ``X.jsonl`` + ``X.manifest.json``;
    anything else is a folder with ``data.jsonl`` and ``manifest.json``."""
    out = Path(out)
    if out.suffix == ".jsonl":
        return out, out.with_name(out.stem + ".manifest.json"), False
    return out / "data.jsonl", out / "manifest.json", True


def check_record(rec: dict, builder: str, n: int) -> None:
    """One clear error for a record that lacks the common fields (a builder bug or a bad input record)."""
    where = f"record {n} of builder {builder}"
    if not isinstance(rec, dict):
        raise XltError(f"{where} is a {type(rec).__name__}, not a dict", "builders yield dicts")
    if not isinstance(rec.get("key"), str) or not rec["key"]:
        raise XltError(f"{where} has no string 'key' (the source record it comes from)", "yield key=...")
    langs = rec.get("langs")
    if not isinstance(langs, list) or not all(isinstance(x, str) for x in langs):
        raise XltError(f"{where} ({rec['key']}) has no 'langs' list", "yield langs=[...] with the record's languages")
    if rec.get("origin") not in ORIGINS:
        raise XltError(f"{where} ({rec['key']}) has origin {rec.get('origin')!r}", f"use one of {ORIGINS}")


def command_line(builder: str, values: dict[str, Any], out: Any, seed: int, command: str | None = None) -> str:
    """The ``xlt data`` command (or ``command``) that builds the same output (for the manifest)."""
    import shlex

    parts = (command or f"xlt data {builder}").split()
    for k, v in values.items():
        if v is None:
            continue
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            parts.append(flag if v else "--no-" + k.replace("_", "-"))
        elif isinstance(v, (list, tuple)):
            parts += [flag, ",".join(map(str, v))]
        else:
            parts += [flag, str(v)]
    parts += ["--seed", str(seed), "--out", str(out)]
    return " ".join(shlex.quote(p) for p in parts)


def run_builder(builder: str, out: str | os.PathLike, *, seed: int = 0, overwrite: bool = False,
                chunk_size: int = 1000, show_progress: bool = False, as_dataset: bool = False,
                **options: Any) -> dict:
    """Run the registered builder ``builder`` with ``options`` (its options dataclass's fields) and write ``out``.
    Returns the manifest (also written beside the data)."""
    from xlt.data.registry import BUILDERS

    entry = BUILDERS.get(builder)
    return run_entry(entry, builder, BUILDERS.options(builder, options), out, seed=seed, overwrite=overwrite,
                     chunk_size=chunk_size, show_progress=show_progress, as_dataset=as_dataset)


def run_entry(entry: Any, builder: str, opts: Any, out: str | os.PathLike, *, seed: int = 0, overwrite: bool = False,
              chunk_size: int = 1000, show_progress: bool = False, as_dataset: bool = False) -> dict:
    """Run any builder-shaped ``entry`` (``records(ctx, opts)``, ``description``; ``command``, the CLI command it
    is, default ``xlt data NAME``) with its built options ``opts``: what :func:`run_builder` and ``xlt generate``
    share."""
    from xlt import __version__
    from xlt.options import as_dict

    if chunk_size < 1:
        raise XltError(f"chunk size {chunk_size} is not positive", "give --chunk-size 1 or more")
    data_path, manifest_path, folder = output_paths(out)
    final = Path(out)
    if final.exists() and not overwrite:
        raise XltError(f"output {final} already exists", "pass --overwrite to replace it, or choose another --out")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it private; a folder output is an ordinary folder
    ctx = BuildContext(builder, seed=seed, chunk_size=chunk_size, show_progress=show_progress,
                       workdir=tmp if folder else None)
    try:
        tmp_data = tmp / "data.jsonl"
        from tqdm.auto import tqdm

        with open(tmp_data, "w", encoding="utf-8", newline="\n") as fh, \
                tqdm(desc=builder, unit=" records", disable=not show_progress, mininterval=1.0) as bar:
            ctx._on_chunk = fh.flush
            for rec in entry.records(ctx, opts):
                check_record(rec, builder, ctx.written)
                rec = {"builder": builder, **{k: v for k, v in rec.items() if k != "builder"}}
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                ctx.written += 1
                bar.update(1)
            ctx._on_chunk = None
        if ctx.written == 0:
            dropped = {k: c.dropped for k, c in ctx.filters.items() if c.dropped}
            raise XltError(f"builder {builder} produced no records" + (f" (dropped by filters: {dropped})" if dropped else ""),
                           "check the inputs and languages, or loosen the filters")
        values = as_dict(opts)
        manifest = portable({
            "builder": builder,
            "description": entry.description,
            "command": command_line(builder, values, out, seed, getattr(entry, "command", None)),
            "xlt_version": __version__,
            "seed": seed,
            "chunk_size": chunk_size,
            "options": values,
            "inputs": dict(sorted(ctx.inputs.items())),
            "records": ctx.written,
            "filters": {k: {"kept": c.kept, "dropped": c.dropped} for k, c in ctx.filters.items()},
            "stats": ctx.extra,
            "data": data_path.name,
        }, final.parent)
        with open(tmp / "manifest.json", "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        if folder and as_dataset:
            _save_dataset(tmp_data, tmp / "dataset")
        _publish(tmp, final, data_path, manifest_path, folder, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _save_dataset(jsonl: Path, folder: Path) -> None:
    try:
        import datasets
    except ImportError:
        raise XltError("--as-dataset needs the 'datasets' package", "pip install datasets, or use the JSONL") from None
    datasets.Dataset.from_json(str(jsonl)).save_to_disk(str(folder))


def _publish(tmp: Path, final: Path, data_path: Path, manifest_path: Path, folder: bool, overwrite: bool) -> None:
    """Move the finished files into place: a folder by one rename; a JSONL file and its manifest each by a rename
    (data first, so a manifest never describes data that is not there)."""
    if folder:
        if final.exists():
            if not overwrite:
                raise XltError(f"output {final} already exists", "pass --overwrite to replace it")
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
        tmp.mkdir()  # the caller's cleanup removes it
        return
    os.replace(tmp / "data.jsonl", data_path)
    os.replace(tmp / "manifest.json", manifest_path)


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of a builder's output (``X.jsonl`` or its folder)."""
    data_path = output_paths(path)[0] if not str(path).endswith(".jsonl") else Path(path)
    if not data_path.is_file():
        raise XltError(f"{data_path} does not exist", "give the --out of an `xlt data` command")
    with open(data_path, encoding="utf-8") as fh:
        return [json.loads(l) for l in fh if l.strip()]
