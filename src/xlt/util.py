"""Small shared helpers: atomic output directories, hashing, cache location, JSON."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _cache_root() -> str:
    return os.environ.get("XLT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "xlt")


def cache_dir() -> Path:
    """Where xlt keeps converted models and other reusable artefacts (``$XLT_CACHE`` or ``~/.cache/xlt``)."""
    path = Path(_cache_root())
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``final`` and rename it to ``final`` only on success.

    Readers never see a half-written folder: either the old content (or nothing) or the new one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(final)
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file beside it and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def read_folder_config(folder: str | os.PathLike, name: str, what: str, fix: str) -> dict:
    """The JSON file ``name`` that a saved ``what`` (a reranker, an encoder…) keeps in ``folder``: one clear error
    when it is missing (``fix`` says what to give instead) or is not JSON."""
    from xlt.errors import XltError

    path = Path(folder) / name
    if not path.is_file():
        raise XltError(f"{folder} holds no {what} (no {name})", fix)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise XltError(f"{path} is not readable JSON ({e})", f"save the {what} again") from None


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def portable_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """How an artefact records ``path`` so that it holds on another machine: a packaged model's folder in the xlt
    cache by the model's name (``smollm2``), another cache path as ``$XLT_CACHE/...``, a path relative to ``root``
    (the folder the artefact is in, or its run folder) when the two share a folder below the filesystem root, else
    the last part of the path. A relative path without ``root`` is kept as given."""
    raw = os.fspath(path)
    if root is None and not os.path.isabs(os.path.expanduser(raw)):
        return raw
    p = os.path.abspath(os.path.expanduser(raw))
    cache = os.path.abspath(_cache_root())  # not cache_dir(): recording a path must not create the cache
    if _inside(p, cache):
        parts = os.path.relpath(p, cache).split(os.sep)
        if len(parts) >= 2 and parts[0] == "models":  # a prepared model: its xlt_prepared.json gives its name
            try:
                with open(os.path.join(cache, "models", parts[1], "xlt_prepared.json"), encoding="utf-8") as fh:
                    name = json.load(fh).get("name")
            except (OSError, ValueError):
                name = None
            if name:
                return "/".join([name, *parts[2:]])
        return "$XLT_CACHE/" + os.path.relpath(p, cache)
    if root is not None:
        r = os.path.abspath(os.path.expanduser(os.fspath(root)))
        if os.path.commonpath([p, r]) != os.path.dirname(os.path.commonpath([p, r])):  # not just "/"
            return os.path.relpath(p, r)
    return os.path.basename(p.rstrip(os.sep)) or p


def scrub_machine_paths(text: str, root: str | os.PathLike) -> str:
    """``text`` with this machine's paths replaced: ``root`` by ``.``, the temp folder by ``<tmp>``, home by ``~``
    (for benchmark JSON and logs that are committed; tests/test_no_machine_paths.py)."""
    for p, name in ((str(root), "."), (str(Path(tempfile.gettempdir()).resolve()), "<tmp>"), ("/tmp", "<tmp>"),
                    (str(Path.home()), "~")):
        if len(p) > 2:
            text = text.replace(p, name)
    return text


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


# an absolute path inside a string: at the start, or after a space, quote, bracket or one of ``:=|,``
_ABS_PATH = re.compile(r"(?:^|(?<=[\s:=|,(\['\"]))/(?=[^\s/])[^\s|,'\"()\[\]<>]*")


def portable(obj: Any, root: str | os.PathLike | None = None) -> Any:
    """``obj`` (JSON-like: dicts, lists, strings, numbers) with every absolute path of this machine in its strings
    replaced by :func:`portable_path` (relative to ``root``), in keys as in values. A path counts when it, or its parent folder, exists
    here (so ``bits/byte`` or a URL is left alone). Used on everything xlt writes into a run or model folder."""
    if isinstance(obj, dict):
        return {portable(k, root): portable(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(portable(v, root) for v in obj)
    if isinstance(obj, Path):
        return portable_path(obj, root) if obj.is_absolute() else str(obj)
    if not isinstance(obj, str) or "/" not in obj:
        return obj

    def sub(m: re.Match) -> str:
        text = m.group(0)
        cand = text.rstrip(".;")
        parent = os.path.dirname(cand.rstrip("/"))
        if os.path.exists(cand) or (parent not in ("", "/") and os.path.isdir(parent)):
            return portable_path(cand, root) + text[len(cand):]
        return text

    return _ABS_PATH.sub(sub, obj)


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same on every machine and Python run."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def sha256_file(path: str | os.PathLike, limit: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        read = 0
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            read += len(chunk)
            if limit is not None and read >= limit:
                break
    return h.hexdigest()


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM) in MiB, NaN where /proc is absent (for benchmarks)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def machine_info(packages: tuple[str, ...] = ("torch", "transformers", "tokenizers", "peft", "accelerate",
                                              "safetensors", "numpy", "fasttext-wheel", "mergekit", "wechsel",
                                              "deepfocus")) -> dict:
    """What a benchmark ran on: CPU model, cores, memory, OS, Python and package versions (for committed results)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from xlt.precision import cpu_flags

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in cpu_flags()]
    mem = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem = round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    versions = {}
    for p in packages:
        try:
            versions[p] = version(p)
        except PackageNotFoundError:
            pass
    import xlt

    return {"cpu": cpu, "cpu_flags": flags, "cores": os.cpu_count(), "affinity": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity") else None, "memory_gib": mem, "os": platform.platform(),
            "python": platform.python_version(), "xlt": xlt.__version__, "versions": versions}


def iter_jsonl(path: str | os.PathLike, what: str = "JSONL") -> Iterator[tuple[int, dict]]:
    """``(line number, record)`` for each non-empty line of a JSON-lines file, read lazily; one clear
    :class:`~xlt.errors.XltError` for a missing file, invalid JSON or a line that is not an object (``what`` names the
    file's role in the messages)."""
    from xlt.errors import XltError

    path = Path(path)
    if not path.is_file():
        raise XltError(f"{what} file {path} does not exist", f"give the JSON-lines file of {what}")
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise XltError(f"{path.name} line {n} is not valid JSON ({e.msg})", "fix or remove that line") from None
            except UnicodeDecodeError:
                raise XltError(f"{path.name} is not UTF-8 (line {n})", "convert it to UTF-8") from None
            if not isinstance(rec, dict):
                raise XltError(f"{path.name} line {n} is a JSON {type(rec).__name__}, not an object",
                               f"each line of the {what} file is one JSON object")
            yield n, rec
