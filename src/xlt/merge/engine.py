"""The merge engine: plan and check (:mod:`xlt.merge.planner`), then stream (:mod:`xlt.merge.execute`).

:func:`run` plans the merge, checks the disk has room, then writes the output tensor by tensor into a temporary
folder beside OUT, renamed into place when complete, with ``xlt_merge.json``: what was merged, how, from which
inputs (with their SHA-256), and a provenance :class:`~xlt.signature.Signature`, and ``README.md``, the model card
(inputs, method, config). Paths in both are relative to OUT (packaged models by name), so the folder holds no path of
the machine; :attr:`MergeResult.provenance` keeps them as given.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import torch

from xlt.errors import XltError
from xlt.merge.execute import Executor, MergeResult, human, merge_tensors, peak_rss_bytes
from xlt.merge.io import LoraSource, ShardedWriter, copy_tokenizer
from xlt.merge.planner import Plan, plan
from xlt.signature import Signature, json_hash
from xlt.util import portable

__all__ = ["run", "plan", "merge_tensors", "MergeResult", "parse_size", "signature"]

log = logging.getLogger("xlt.merge")


def parse_size(s: str | int) -> int:
    """``"5GB"``, ``"500MB"``, ``"1B"`` (mergekit: bytes), ``1000000`` -> bytes."""
    if isinstance(s, int):
        return s
    m = re.fullmatch(r"\s*([\d.]+)\s*([kKmMgGtT]?)(i?)[bB]?\s*", str(s))
    if not m:
        raise XltError(f"cannot read size {s!r}", "write e.g. 5GB, 500MB or a number of bytes")
    mult = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[m[2].lower()]
    if m[3]:
        mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m[2].lower()]
    return int(float(m[1]) * mult)


def _hash_inputs(sources: dict) -> dict:
    from xlt.util import sha256_file

    out = {}
    for ref, src in sources.items():
        out[ref] = {str(p.name if p.parent == src.path else p): sha256_file(p) for p in src.files()}
    return out


def _inputs(p: Plan) -> dict:
    return {ref: {"path": str(getattr(s, "path", "")), "label": s.label,
                  "lora": str(s.adapter) if isinstance(s, LoraSource) else None} for ref, s in p.sources.items()}


def write_merge_card(folder: Path, provenance: dict, p: Plan, name: str) -> None:
    """The output's model card (``README.md``): the method, the inputs, the config as YAML, and the language and
    licence the inputs' own cards agree on (:mod:`xlt.report.card`)."""
    import yaml

    from xlt.report.card import merge_card_info, read_front_matter, render_card, write_card_text

    cards = {}
    for ref, src in p.sources.items():
        folder_of = getattr(src, "adapter", None) or getattr(src, "path", None)
        cards[ref] = read_front_matter(folder_of) if folder_of else {}
    config = yaml.safe_dump(provenance.get("config"), sort_keys=False, allow_unicode=True) \
        if isinstance(provenance.get("config"), dict) else None
    write_card_text(folder, render_card(merge_card_info(provenance, cards, config, folder=name)))


def signature(p: Plan, input_sha256: dict | None) -> str:
    """``merge|method:…|dtype:…|out_dtype:…|seed:…|config:…|inputs:…|options:…|xlt:…``: ``config`` hashes the config
    as written; ``inputs`` the input files' SHA-256, model by model (``sha256-…``: the same files elsewhere give the
    same hash), or the input paths when the files were not hashed (``path-…``); ``options`` the parameters as
    resolved (defaults included) for every merged tensor."""
    cfg = p.config
    inputs = (f"sha256-{json_hash([list(files.values()) for files in input_sha256.values()])}"
              if input_sha256 is not None else f"path-{json_hash(_inputs(p))}")
    resolved = {"top": p.options, "tensors": {t.name: t.params for t in p.merged}}
    return str(Signature("merge", method=p.method.name, dtype=str(p.compute_dtype).removeprefix("torch."),
                         out_dtype=cfg.out_dtype or cfg.dtype or "input", seed=cfg.random_seed,
                         config=json_hash(cfg.raw), inputs=inputs, options=json_hash(resolved)))


def run(config, out: str | os.PathLike, overwrite: bool = False, allow_pickle: bool = False,
        shard_size: str | int = "5GB", chunk_elems: int = 1 << 23, threads: int | None = None,
        copy_tokenizer_files: bool = True, hash_inputs: bool = True, show_progress: bool = True,
        ) -> MergeResult:
    """Merge the models a config describes into the folder ``out``.

    ``config``: a YAML path or string, a dict or a :class:`~xlt.merge.config.MergeConfig` (see
    :mod:`xlt.merge.config`). ``out`` must not exist unless ``overwrite``. Everything is checked before
    anything is written; the output is built in a temporary folder beside ``out`` and renamed when
    complete. ``shard_size``: the largest output shard (``"5GB"``, bytes). ``chunk_elems``: rows of
    element-wise methods are processed in chunks of about this many elements (memory ≈ a few chunks per
    input). ``threads``: torch CPU threads. ``hash_inputs``: record the SHA-256 of every input weight file
    in the provenance (``xlt_merge.json``), computed in a background thread.
    """
    from xlt.util import atomic_dir

    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not overwrite:
        raise XltError(f"output folder {out} already exists", "choose another OUT, or pass --overwrite to replace it")
    if threads:
        torch.set_num_threads(threads)
    max_shard = parse_size(shard_size)
    if max_shard <= 0:
        raise XltError(f"shard size {shard_size!r} is not positive", "give e.g. 5GB")
    p = plan(config, allow_pickle=allow_pickle)
    if not p.tensors:
        raise XltError("the merge would write no tensor", "check models/slices and drop: in the config")
    metadata = {"merge_method": p.method.name}
    writer_probe = ShardedWriter(out, p.planned(), max_shard, metadata)
    need = writer_probe.total_bytes() + (1 << 20)
    anchor = out.parent if out.parent.exists() else Path(os.path.abspath(out)).anchor
    probe = anchor
    while not Path(probe).exists():
        probe = Path(probe).parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise XltError(f"not enough disk for the merge: it writes {human(need)} and {probe} has {human(free)} free",
                       "free some space, or give an OUT on a disk with room")
    for n in p.notes:
        log.info("%s", n)
    pool = ThreadPoolExecutor(max_workers=1) if hash_inputs else None
    hashes = pool.submit(_hash_inputs, p.sources) if pool else None
    try:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            writer = ShardedWriter(tmp, p.planned(), max_shard, metadata)
            try:
                stats = Executor(p, chunk_elems, show_progress).execute(writer)
                writer.close()
            except BaseException:
                writer.abort()
                raise
            (tmp / "config.json").write_text(json.dumps(p.out_config, indent=2) + "\n", encoding="utf-8")
            copied = copy_tokenizer(p.sources[p.tokenizer_source].path, tmp) if copy_tokenizer_files else []
            input_sha256 = hashes.result() if hashes else None
            provenance = {
                "tool": "xlt merge",
                "merge_method": p.method.name,
                "signature": signature(p, input_sha256),
                "method": {"description": p.method.description, "paper": p.method.paper,
                           "reference": p.method.reference, "deviations": p.method.deviations},
                "config": p.config.raw,
                "config_file": p.config.source,
                "options": p.resolved_options(),
                "inputs": _inputs(p),
                "input_sha256": input_sha256,
                "config_from": p.config_source, "tokenizer_from": p.tokenizer_source, "tokenizer_files": copied,
                "dropped": {r: sorted(v) for r, v in p.dropped.items()},
                "copied": {t.name: f"{t.inputs[0].model}: {t.why}" for t in p.tensors if t.copy},
                "notes": p.notes,
                "statistics": stats,
                "tensors": len(p.tensors), "bytes": writer.bytes_written, "shards": len(writer.names),
                "compute_dtype": str(p.compute_dtype).removeprefix("torch."),
            }
            written = portable(provenance, out)  # paths relative to OUT, packaged models by name
            (tmp / "xlt_merge.json").write_text(json.dumps(written, indent=2, ensure_ascii=False, default=str) + "\n",
                                                encoding="utf-8")
            write_merge_card(tmp, written, p, out.name)
    except FileExistsError:
        raise XltError(f"output folder {out} already exists", "choose another OUT, or pass --overwrite") from None
    finally:
        if pool:
            pool.shutdown(wait=True)
        for s in p.sources.values():
            s.close()
    res = MergeResult(out, len(p.tensors), len(p.merged), len(p.tensors) - len(p.merged), writer.bytes_written,
                      time.perf_counter() - t0, peak_rss_bytes(), len(writer.names), provenance)
    log.info("%s", res.summary())
    return res


