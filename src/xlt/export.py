"""``xlt export``: a model folder written by ``xlt adapt`` -> a plain Hugging Face model folder.

The output holds safetensors weights (sharded with ``model.safetensors.index.json`` above ``shard_size``), a
``config.json`` of the model's standard transformers architecture, the target tokenizer and
``generation_config.json``: ``AutoModelForCausalLM.from_pretrained(OUT)`` and ``AutoTokenizer.from_pretrained(OUT)``
load it with no xlt installed (no custom code, no ``xlt_*`` config keys), and so does lm-eval (both tested);
vLLM and TGI read the same standard layout.

How a method's folder becomes the standard architecture is the method's own business
(:meth:`xlt.adapt.methods.Method.export_model`): whole models are written as they are, PEFT adapters are merged,
MoS folds its assembled factors into the weights, a sparse delta is already applied when the folder loads,
recursive models are unrolled into L independent layers; bottleneck adapters (not linear) and prefix tuning
refuse with the reason. The engine only loads the folder (:func:`~xlt.adapt.methods.load_adapted`, which checks
the base model's fingerprint), calls the hook, checks that what it returned is exactly the standard architecture
(every tensor and no other), casts and writes into a temporary folder beside OUT, renamed when complete.
``xlt_export.json`` records what was exported (folder name, method, dtype; no path of the machine) and
``README.md`` is the model card (:func:`xlt.report.card.write_export_card`, from the source folder's card).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from xlt.errors import XltError

__all__ = ["DTYPES", "ExportResult", "export", "model_folders"]

log = logging.getLogger("xlt.export")

#: ``--dtype`` names (and the aliases accepted) -> torch dtype names
DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
          "fp16": "float16", "float16": "float16"}
_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
META = "xlt_method.json"  # what a parameter-efficient method folder holds (xlt.adapt.methods.META)
_WHOLE_MARKERS = ("transfer_summary.json", "xlt_merge.json")  # xlt adapt's `full` folders, xlt merge outputs


@dataclass
class ExportResult:
    out: Path
    method: str
    dtype: str
    shards: int
    bytes: int
    parameters: int

    def summary(self) -> str:
        return (f"exported {self.method} to {self.out}: {self.parameters:,} parameters in {self.dtype}, "
                f"{self.bytes / 1e6:,.1f} MB in {self.shards} safetensors file(s)")


def _is_model_folder(p: Path) -> bool:
    return (p / META).is_file() or ((p / "config.json").is_file() and any((p / m).is_file() for m in _WHOLE_MARKERS))


def model_folders(run: str | Path) -> list[str]:
    """The model folders an ``xlt adapt`` run folder holds (``<init>`` and ``<init>+<method>``), by name."""
    run = Path(run)
    return sorted(p.name for p in run.iterdir() if p.is_dir() and not p.name.startswith(".") and _is_model_folder(p))


def _resolve_folder(folder: Path) -> Path:
    """``folder`` itself when it is a model folder xlt wrote; the only model of a run folder; else one error."""
    if not folder.is_dir():
        raise XltError(f"{folder} is not a folder", "give a model folder written by xlt adapt (RUN/<init> or "
                                                   "RUN/<init>+<method>) or a run folder")
    if _is_model_folder(folder):
        return folder
    if (folder / "run.json").is_file():
        names = model_folders(folder)
        if len(names) == 1:
            return folder / names[0]
        if not names:
            raise XltError(f"the run folder {folder} holds no finished model folder", "finish the run (rerun the same "
                           "xlt adapt command) and export one of its model folders")
        raise XltError(f"the run folder {folder} holds {len(names)} models: {', '.join(names)}",
                       f"export one of them: xlt export {folder / names[0]} OUT")
    raise XltError(f"{folder} is not a model folder written by xlt (no {META}, and no config.json with "
                   f"{' or '.join(_WHOLE_MARKERS)}) nor an xlt adapt run folder (no run.json)",
                   "give a model folder of an xlt adapt run (RUN/<init> or RUN/<init>+<method>) or the run folder; "
                   "a plain transformers folder needs no export")


def _config_dtype(folder: Path) -> str | None:
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    d = cfg.get("dtype") or cfg.get("torch_dtype") or (cfg.get("text_config") or {}).get("dtype")
    return d if d in _SHORT else None


def _source_dtype(folder: Path, meta: dict | None, base) -> str:
    """The dtype the source model was stored in (its config.json), else float32."""
    if meta is None:
        return _config_dtype(folder) or "float32"
    from xlt.adapt.methods.base import resolve_base
    from xlt.models import resolve_source

    try:
        if isinstance(base, (str, Path)):
            return _config_dtype(resolve_source(base)) or "float32"
        if base is None and meta.get("base_model"):
            return _config_dtype(resolve_base(meta["base_model"], folder)) or "float32"
    except XltError:
        pass
    return "float32"


def _check_standard(model, method: str) -> None:
    """What the method's hook returned is a transformers model whose tensors are exactly its class's (nothing
    missing, nothing added, same shapes): else the written folder would not load as the same model."""
    import torch
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel) or not type(model).__module__.startswith("transformers."):
        raise XltError(f"method {method} exported a {type(model).__name__}, not a transformers model",
                       f"the method's export_model must return the plain transformers model; use the folder with xlt")
    with torch.device("meta"):
        ref = type(model)(model.config)
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    extra, missing = sorted(set(have) - set(want)), sorted(set(want) - set(have))
    wrong = sorted(k for k in set(have) & set(want) if have[k] != want[k])
    if extra or missing or wrong:
        detail = "; ".join(f"{what}: {', '.join(ks[:3])}{' …' if len(ks) > 3 else ''}"
                           for what, ks in (("not in the architecture", extra), ("missing", missing),
                                            ("other shape", wrong)) if ks)
        raise XltError(f"method {method} does not export to the standard {type(model).__name__} ({detail})",
                       "the method's export_model must fold its modules into the architecture's weights")


def _clean_config(model, tokenizer) -> None:
    """No ``xlt_*`` key left in the config; special-token ids those of the folder's (target) tokenizer."""
    from xlt import arch

    for c in arch.configs(model):
        for k in [k for k in vars(c) if k.startswith("xlt_")]:
            delattr(c, k)
    arch.set_special_token_ids(model, tokenizer)


def _check_fp16(model) -> None:
    import torch

    limit = torch.finfo(torch.float16).max
    for name, t in model.state_dict().items():
        if t.is_floating_point() and t.numel():
            big = t.detach().abs().max().item()
            if big > limit and big != float("inf"):
                raise XltError(f"tensor {name} holds values up to {big:.4g}, beyond float16's range (±{limit:g}): "
                               "they would become inf", "export with --dtype bf16 (float32's range) or --dtype fp32")


def export(folder: str | Path, out: str | Path, dtype: str | None = None, overwrite: bool = False,
           shard_size: str | int = "5GB", base=None) -> ExportResult:
    """Write the model of ``folder`` (a model folder of an ``xlt adapt`` run, or a run folder holding one model) to
    ``out`` as a plain Hugging Face model folder.

    ``dtype``: ``fp32``, ``bf16`` or ``fp16`` [default: the source model's stored dtype, else fp32]; ``fp16`` refuses a
    model with values beyond its range, naming the tensor. ``shard_size``: the largest safetensors file (``"5GB"``,
    ``"500MB"`` or bytes); a larger model is written in shards with ``model.safetensors.index.json``. ``base``: the
    base model (folder, packaged name or loaded model) for a parameter-efficient folder, if not the one it names; its
    weights must hash to the fingerprint the folder records. ``out`` must not exist unless ``overwrite``; nothing is
    written before every check passed (the folder is built beside ``out`` and renamed when complete).
    """
    import torch

    from xlt.adapt.methods import ADAPTATIONS, Method, load_adapted
    from xlt.merge.engine import parse_size
    from xlt.models import load_tokenizer
    from xlt.report.card import write_export_card
    from xlt.util import atomic_dir, write_json_atomic

    folder, out = Path(folder), Path(out)
    if dtype is not None and str(dtype).lower() not in DTYPES:
        raise XltError(f"unknown dtype {dtype!r}", "choose fp32, bf16 or fp16")
    max_shard = parse_size(shard_size)
    if max_shard <= 0:
        raise XltError(f"shard size {shard_size!r} is not positive", "give e.g. 5GB or 500MB")
    if out.exists() and not overwrite:
        raise XltError(f"output folder {out} already exists", "choose another OUT, or pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise XltError(f"output {out} is a file", "give a folder path for OUT")
    src = _resolve_folder(folder)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise XltError(f"OUT {out} is the folder being exported or inside it", "give an OUT outside the model folder")
    meta = json.loads((src / META).read_text(encoding="utf-8")) if (src / META).is_file() else None
    if meta is not None and meta.get("method") not in ADAPTATIONS.names():
        load_adapted(src, base=base)  # raises the error that names the installed methods
    cls = ADAPTATIONS.get(meta["method"]) if meta is not None else Method
    method = meta["method"] if meta is not None else "full"
    if meta is None and (src / "metrics.json").is_file():
        method = json.loads((src / "metrics.json").read_text(encoding="utf-8")).get("method") or method
    target = DTYPES[str(dtype).lower()] if dtype is not None else _source_dtype(src, meta, base)
    tokenizer = load_tokenizer(src)

    model = load_adapted(src, base=base)  # a fingerprint mismatch of the base raises here, saying which
    with torch.no_grad():
        plain = cls.export_model(model)
    _check_standard(plain, method)
    _clean_config(plain, tokenizer)
    plain.eval()
    if target == "float16":
        _check_fp16(plain)
    plain = plain.to(getattr(torch, target))
    n_params = sum(p.numel() for p in {id(p): p for p in plain.parameters()}.values())

    try:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            plain.save_pretrained(tmp, max_shard_size=max_shard)
            tokenizer.save_pretrained(tmp)
            if not (tmp / "generation_config.json").is_file() and getattr(plain, "generation_config", None) is not None:
                plain.generation_config.save_pretrained(tmp)
            write_json_atomic(tmp / "xlt_export.json", {
                "tool": "xlt export", "source": src.name, "method": method,
                "method_options": (meta or {}).get("options"), "base_model": _portable((meta or {}).get("base_model")),
                "dtype": _SHORT[target], "parameters": n_params, "xlt_version": _version()})
            # The folder is complete here (weights, config, tokenizer, generation config, xlt_export.json): its model
            # card (README.md) is written now, before the rename, from the source folder's card.
            write_export_card(tmp, src, name=out.name)
    except FileExistsError:
        raise XltError(f"output folder {out} already exists", "choose another OUT, or pass --overwrite") from None
    files = sorted(out.glob("*.safetensors"))
    res = ExportResult(out, method, _SHORT[target], len(files), sum(f.stat().st_size for f in files), n_params)
    log.info("%s", res.summary())
    return res


def _portable(name) -> str | None:
    """A base-model name without the machine's folders (the last part of a path)."""
    if not name:
        return None
    return Path(str(name)).name if ("/" in str(name) or "\\" in str(name)) else str(name)


def _version() -> str:
    import xlt

    return xlt.__version__

