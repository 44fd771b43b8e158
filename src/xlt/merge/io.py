"""The merge engine's only I/O layer: lazy tensor sources and a streaming safetensors writer.

Sources
    :class:`SafetensorsSource` reads a model folder (one ``*.safetensors`` file or shards with
    ``model.safetensors.index.json``). Headers are parsed and checked up front (a missing or truncated
    shard is an error before any work); tensor data is memory-mapped and handed out as zero-copy views,
    so reading a slice of rows costs only the rows converted to the compute dtype.
    Pickle (``*.bin``) weights are read only with ``allow_pickle=True``, through
    ``torch.load(weights_only=True, mmap=True)``.

    :class:`LoraSource` is a base model plus a PEFT LoRA adapter folder (``adapter_config.json`` +
    ``adapter_model.safetensors``): a tensor with a LoRA pair reads as ``W + (α/r)·B·A`` (``α/√r``
    with rsLoRA), computed for the requested rows only; the full merged model is never materialised.

Writer
    :class:`ShardedWriter` knows every output tensor's name, shape and dtype before the first byte
    is written (the engine plans them), so it writes each shard's header first and then streams the
    tensor data in row chunks: peak memory is one chunk, not one shard.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from xlt.errors import XltError

ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
ST_NAMES = {v: k for k, v in ST_DTYPES.items()}
INDEX_NAME = "model.safetensors.index.json"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: str  # shard file name
    start: int  # absolute byte offset in the file
    end: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorInfo], dict]:
    """Parse and check one safetensors file's header; raise :class:`XltError` when it is corrupt or truncated."""
    fix = "re-download or re-save the model (save_pretrained); the file is incomplete or damaged"
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError("file shorter than a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100_000_000:
                raise ValueError(f"header length {n} exceeds the file")
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise XltError(f"weights file {path} is corrupt or truncated ({str(e)[:120]})", fix) from None
    meta = header.pop("__metadata__", None) or {}
    infos: dict[str, TensorInfo] = {}
    data_start, data_end = 8 + n, 0
    for name, h in header.items():
        try:
            dtype = ST_DTYPES[h["dtype"]]
            s, e = (int(x) for x in h["data_offsets"])
            shape = tuple(int(x) for x in h["shape"])
        except (KeyError, TypeError, ValueError):
            raise XltError(f"weights file {path} has an unreadable header entry for {name!r}", fix) from None
        numel = 1
        for d in shape:
            numel *= d
        if e - s != numel * torch.tensor([], dtype=dtype).element_size():
            raise XltError(f"weights file {path}: tensor {name!r} has inconsistent offsets", fix)
        infos[name] = TensorInfo(name, shape, dtype, path.name, data_start + s, data_start + e)
        data_end = max(data_end, e)
    if data_start + data_end != size:
        raise XltError(f"weights file {path} is corrupt or truncated: its header promises {data_start + data_end} "
                       f"bytes, the file has {size}", fix)
    return infos, meta


def _labelled(path: Path) -> str:
    return str(path)


class SafetensorsSource:
    """A model folder read lazily, tensor by tensor (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, allow_pickle: bool = False, label: str | None = None):
        self.path = Path(path)
        self.label = label or str(path)
        self.allow_pickle = allow_pickle
        if not self.path.is_dir():
            raise XltError(f"model folder {self.path} does not exist", "give a local HF model folder")
        cfg = self.path / "config.json"
        if not cfg.is_file():
            raise XltError(f"model folder {self.path} has no config.json", "give the folder that save_pretrained wrote")
        try:
            self.config: dict = json.loads(cfg.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise XltError(f"{cfg} is not valid JSON ({e})", "restore the file from the original model") from None
        self.infos: dict[str, TensorInfo] = {}
        self._pickled: dict[str, dict] | None = None
        self._maps: dict[str, tuple] = {}
        files = self._weight_files()
        if files is None:
            return
        for f in files:
            infos, _ = read_safetensors_header(self.path / f)
            for k, v in infos.items():
                if k in self.infos:
                    raise XltError(f"tensor {k!r} appears in two shards of {self.path}", "re-save the model")
                self.infos[k] = v

    # -- discovery -------------------------------------------------------------------------------------
    def _weight_files(self) -> list[str] | None:
        index = self.path / INDEX_NAME
        if index.is_file():
            try:
                wm = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
                raise XltError(f"{index} is not a valid safetensors index ({e})", "re-save the model") from None
            files = sorted(set(wm.values()))
            missing = [f for f in files if not (self.path / f).is_file()]
            if missing:
                raise XltError(f"model folder {self.path} is missing shard(s) {', '.join(missing)} named in {INDEX_NAME}",
                               "download or copy the missing shard files into the folder")
            return files
        files = sorted(p.name for p in self.path.glob("*.safetensors"))
        if files:
            return files
        bins = sorted(self.path.glob("*.bin"))
        bins = [b for b in bins if b.name not in ("training_args.bin", "optimizer.bin", "scheduler.bin")]
        if bins:
            if not self.allow_pickle:
                raise XltError(f"model folder {self.path} has only pickle (*.bin) weights, which can run code when loaded",
                               "convert it to safetensors, or pass --allow-pickle if you trust the file")
            self._load_pickled(bins)
            return None
        raise XltError(f"model folder {self.path} has no weights (*.safetensors)", "give a complete model folder")

    def _load_pickled(self, bins: list[Path]) -> None:
        self._pickled = {}
        for b in bins:
            try:
                sd = torch.load(b, map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:  # torch raises many types for bad pickles
                raise XltError(f"cannot read pickle weights {b} with weights_only=True ({str(e)[:120]})",
                               "convert the model to safetensors") from None
            for k, t in sd.items():
                self._pickled[k] = t
                self.infos[k] = TensorInfo(k, tuple(t.shape), t.dtype, b.name, 0, 0)

    # -- reading ---------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self.infos)

    def __contains__(self, name: str) -> bool:
        return name in self.infos

    def info(self, name: str) -> TensorInfo:
        return self.infos[name]

    def files(self) -> list[Path]:
        return sorted({self.path / i.file for i in self.infos.values()})

    def _raw(self, name: str) -> torch.Tensor:
        """A zero-copy, memory-mapped view of the stored tensor (never written to)."""
        info = self.infos[name]
        if self._pickled is not None:
            return self._pickled[name]
        if info.file not in self._maps:
            fh = open(self.path / info.file, "rb")
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
            self._maps[info.file] = (fh, mm)
        mm = self._maps[info.file][1]
        if info.numel == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        flat = torch.frombuffer(mm, dtype=info.dtype, count=info.numel, offset=info.start)
        return flat.view(info.shape)

    def rows(self, name: str, start: int | None = None, stop: int | None = None,
             dtype: torch.dtype | None = None) -> torch.Tensor:
        """Rows ``start:stop`` of dim 0 (the whole tensor when both are None), as a new tensor in ``dtype``."""
        t = self._raw(name)
        if start is not None and t.dim() > 0:
            t = t[start:stop]
        return t.to(dtype=dtype or t.dtype, copy=True)

    def release(self, name: str) -> None:
        """Drop ``name``'s mapped pages from this process's resident set (they stay in the page cache):
        without this, every input page read stays counted in the merge's RSS until the end."""
        info = self.infos.get(name)
        if info is None or info.file not in self._maps or not hasattr(mmap, "MADV_DONTNEED"):
            return
        mm = self._maps[info.file][1]
        start = info.start - info.start % mmap.PAGESIZE
        if info.end > start:
            try:
                mm.madvise(mmap.MADV_DONTNEED, start, info.end - start)
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        for fh, mm in self._maps.values():
            try:
                mm.close()
            except BufferError:  # a view is still alive; the map is freed with it
                pass
            fh.close()
        self._maps.clear()


class LoraSource:
    """``base`` weights plus a PEFT LoRA adapter, read lazily: ``W + s·B·A`` for adapted tensors."""

    def __init__(self, base: SafetensorsSource, adapter: str | os.PathLike, allow_pickle: bool = False):
        self.base = base
        self.adapter = Path(adapter)
        self.label = f"{base.label}+{adapter}"
        self.path = base.path
        self.config = base.config
        cfg_path = self.adapter / "adapter_config.json"
        if not cfg_path.is_file():
            raise XltError(f"LoRA adapter folder {self.adapter} has no adapter_config.json",
                           "give the folder that PEFT's save_pretrained wrote")
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        if cfg.get("peft_type", "LORA") != "LORA":
            raise XltError(f"{self.adapter} is a {cfg.get('peft_type')} adapter, not LoRA", "give a LoRA adapter")
        for unsupported in ("use_dora", "rank_pattern", "alpha_pattern", "lora_bias"):
            if cfg.get(unsupported):
                raise XltError(f"LoRA adapter {self.adapter} uses {unsupported}, which the merge engine does not read",
                               "merge the adapter into its base with PEFT's merge_and_unload and give that folder")
        r, alpha = int(cfg["r"]), float(cfg.get("lora_alpha", cfg["r"]))
        self.scale = alpha / (r ** 0.5) if cfg.get("use_rslora") else alpha / r
        self.fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))
        self.weights = SafetensorsSource.__new__(SafetensorsSource)
        st = self.adapter / "adapter_model.safetensors"
        if st.is_file():
            infos, _ = read_safetensors_header(st)
            self.weights.path, self.weights.infos, self.weights._maps = self.adapter, infos, {}
            self.weights._pickled = None
        elif (self.adapter / "adapter_model.bin").is_file() and allow_pickle:
            self.weights.path, self.weights.infos, self.weights._maps = self.adapter, {}, {}
            self.weights._load_pickled([self.adapter / "adapter_model.bin"])
        else:
            raise XltError(f"LoRA adapter folder {self.adapter} has no adapter_model.safetensors",
                           "give the folder that PEFT's save_pretrained wrote")
        self.pairs: dict[str, tuple[str, str, bool]] = {}  # base name -> (A key, B key, is_embedding)
        self.replaced: dict[str, str] = {}  # base name -> full tensor key (modules_to_save)
        for key in self.weights.infos:
            stem = key.removeprefix("base_model.model.")
            for a_tag, b_tag, emb in ((".lora_A.weight", ".lora_B.weight", False),
                                      (".lora_embedding_A", ".lora_embedding_B", True)):
                if stem.endswith(a_tag):
                    module = stem[: -len(a_tag)]
                    bkey = key[: -len(a_tag)] + b_tag
                    if bkey not in self.weights.infos:
                        raise XltError(f"LoRA adapter {self.adapter} has {key} without its B matrix", "re-save the adapter")
                    self.pairs[module + ".weight"] = (key, bkey, emb)
                    break
            else:
                if ".lora_B" not in stem and ".lora_embedding_B" not in stem:
                    self.replaced[stem.replace(".modules_to_save.default", "").replace(".modules_to_save", "")] = key
        unknown = [n for n in list(self.pairs) + list(self.replaced) if n not in base.infos]
        if unknown:
            raise XltError(f"LoRA adapter {self.adapter} targets tensors absent from {base.path}: {', '.join(unknown[:5])}",
                           "give the base model the adapter was trained on")

    def names(self) -> list[str]:
        return self.base.names()

    def __contains__(self, name: str) -> bool:
        return name in self.base.infos

    def info(self, name: str) -> TensorInfo:
        return self.base.infos[name]

    def files(self) -> list[Path]:
        return self.base.files() + self.weights.files()

    def delta_rows(self, name: str, start: int | None, stop: int | None, dtype: torch.dtype) -> torch.Tensor | None:
        """ΔW rows ``start:stop`` in ``dtype`` (None when the adapter does not touch ``name``)."""
        if name not in self.pairs:
            return None
        akey, bkey, emb = self.pairs[name]
        A = self.weights.rows(akey, dtype=dtype)
        B = self.weights.rows(bkey, dtype=dtype)
        if emb:  # PEFT Embedding: A (r, num_embeddings), B (dim, r); ΔW = (B A)ᵀ = Aᵀ Bᵀ
            lhs = A.T if start is None else A.T[start:stop]
            return (lhs @ B.T) * self.scale
        if self.fan_in_fan_out:  # stored weight is (in, out) = (B A)ᵀ
            lhs = A.T if start is None else A.T[start:stop]
            return (lhs @ B.T) * self.scale
        lhs = B if start is None else B[start:stop]
        return (lhs @ A) * self.scale

    def rows(self, name: str, start: int | None = None, stop: int | None = None,
             dtype: torch.dtype | None = None) -> torch.Tensor:
        if name in self.replaced:
            return self.weights.rows(self.replaced[name], start, stop, dtype)
        w = self.base.rows(name, start, stop, dtype)
        d = self.delta_rows(name, start, stop, torch.float32 if w.dtype in (torch.bfloat16, torch.float16) else w.dtype)
        if d is None:
            return w
        return (w.to(d.dtype) + d).to(w.dtype)

    def release(self, name: str) -> None:
        self.base.release(name)

    def close(self) -> None:
        self.base.close()
        self.weights.close()


# -- writer ------------------------------------------------------------------------------------------------
@dataclass
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = torch.tensor([], dtype=self.dtype).element_size()
        for s in self.shape:
            n *= s
        return n


def shard_layout(tensors: list[PlannedTensor], max_shard_bytes: int) -> list[list[PlannedTensor]]:
    """Greedy assignment in plan order: a new shard starts when the next tensor would pass the limit."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards if shards[0] else []


def shard_names(n: int) -> list[str]:
    if n == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


def header_bytes(shard: list[PlannedTensor], metadata: dict | None = None) -> bytes:
    header: dict = {"__metadata__": {"format": "pt", **(metadata or {})}}
    off = 0
    for t in shard:
        header[t.name] = {"dtype": ST_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + t.nbytes]}
        off += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


class ShardedWriter:
    """Write planned tensors into ``folder`` as safetensors shards plus ``model.safetensors.index.json``.

    Call :meth:`begin` with each tensor's name in plan order, then :meth:`write` its data (whole, or
    consecutive row chunks), then :meth:`end`. Shapes, dtypes and byte counts are checked.
    """

    def __init__(self, folder: Path, tensors: list[PlannedTensor], max_shard_bytes: int, metadata: dict | None = None):
        self.folder = Path(folder)
        self.shards = shard_layout(tensors, max_shard_bytes)
        self.names = shard_names(len(self.shards))
        self.order = [(i, t) for i, s in enumerate(self.shards) for t in s]
        self.metadata = metadata
        self._pos = -1
        self._fh = None
        self._written = 0
        self.bytes_written = 0

    def total_bytes(self) -> int:
        return sum(t.nbytes for _, t in self.order) + sum(len(header_bytes(s, self.metadata)) for s in self.shards)

    def begin(self, name: str) -> PlannedTensor:
        if self._pos >= 0 and self._written != self.order[self._pos][1].nbytes:
            raise RuntimeError(f"tensor {self.order[self._pos][1].name} was not completely written")
        self._pos += 1
        shard, t = self.order[self._pos]
        if t.name != name:
            raise RuntimeError(f"writer expected {t.name}, got {name}")
        if self._pos == 0 or self.order[self._pos - 1][0] != shard:
            if self._fh is not None:
                self._fh.close()
            self._fh = open(self.folder / self.names[shard], "wb")
            hb = header_bytes(self.shards[shard], self.metadata)
            self._fh.write(hb)
            self.bytes_written += len(hb)
        self._written = 0
        return t

    def write(self, data: torch.Tensor) -> None:
        t = self.order[self._pos][1]
        if data.dtype != t.dtype:
            raise RuntimeError(f"{t.name}: writer got {data.dtype}, planned {t.dtype}")
        data = data.contiguous()
        if data.numel():
            buf = data.view(-1).view(torch.uint8).numpy()
            self._fh.write(memoryview(buf))
        n = data.numel() * data.element_size()
        self._written += n
        self.bytes_written += n
        if self._written > t.nbytes:
            raise RuntimeError(f"{t.name}: more data than its planned shape {t.shape}")

    def end(self) -> None:
        t = self.order[self._pos][1]
        if self._written != t.nbytes:
            raise RuntimeError(f"{t.name}: wrote {self._written} of {t.nbytes} bytes")

    def close(self) -> None:
        if self._pos != len(self.order) - 1:
            raise RuntimeError("writer closed before every planned tensor was written")
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        index = {"metadata": {"total_size": sum(t.nbytes for _, t in self.order)},
                 "weight_map": {t.name: self.names[i] for i, t in self.order}}
        (self.folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def copy_tokenizer(src: Path, dst: Path) -> list[str]:
    """Copy the tokenizer (and generation config) files of ``src`` to ``dst``; the names copied."""
    import shutil

    names = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
             "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json", "generation_config.json"]
    copied = []
    for n in names:
        if (src / n).is_file():
            shutil.copy2(src / n, dst / n)
            copied.append(n)
    return copied


def iter_chunks(shape: tuple[int, ...], max_elems: int) -> Iterable[tuple[int | None, int | None]]:
    """Row ranges over dim 0 with at most ``max_elems`` elements each (``(None, None)`` for 0-d tensors)."""
    if len(shape) == 0:
        yield None, None
        return
    rows = shape[0]
    per_row = 1
    for s in shape[1:]:
        per_row *= s
    step = max(1, max_elems // max(1, per_row))
    if rows == 0:
        yield 0, 0
        return
    for a in range(0, rows, step):
        yield a, min(rows, a + step)
