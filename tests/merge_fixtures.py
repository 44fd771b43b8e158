"""Tiny checkpoints for the merge tests: a random Llama saved as an HF folder, and "fine-tunes" of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny tensors gain nothing from a second torch thread, and on a busy machine each parallel region can wait a
    scheduler time slice for it (a 64K-bin histogram then takes milliseconds instead of microseconds). Imported
    into a test module, it applies to that module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def input_count(method, has_base: bool) -> int:
    """The most inputs besides the base (up to 2, or ``min_models``) a merge method's declaration accepts."""
    hi = max(method.min_models, 2) if method.max_models is None else method.max_models
    for n in range(min(hi, max(method.min_models, 2)), method.min_models - 1, -1):
        if method.check_inputs is None or method.check_inputs(n, has_base) is None:
            return n
    raise AssertionError(f"{method.name}: no input count satisfies its own declaration")


def save_tiny(path: Path, seed: int = 0, vocab: int = 64, hidden: int = 32, layers: int = 2, tied: bool = False,
              dtype: torch.dtype = torch.float32, tokenizer=None) -> Path:
    """A tiny random Llama saved with save_pretrained (config.json + model.safetensors)."""
    from xlt.models import tiny_model

    model = tiny_model("llama", vocab_size=vocab, hidden=hidden, layers=layers, heads=4, tied=tied, seed=seed)
    model.to(dtype)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def finetune(base: Path, out: Path, seed: int, scale: float = 1e-2, only: str | None = None,
             density: float = 1.0) -> Path:
    """A copy of ``base`` with N(0, scale) noise added to every tensor (or those whose name contains ``only``),
    on a random ``density`` fraction of the elements."""
    out.mkdir(parents=True, exist_ok=True)
    for f in base.iterdir():
        if f.suffix != ".safetensors" and f.is_file():
            shutil.copy2(f, out / f.name)
    g = torch.Generator().manual_seed(seed)
    for shard in base.glob("*.safetensors"):
        sd = load_file(shard)
        for k, v in sd.items():
            if only is None or only in k:
                noise = torch.randn(v.shape, generator=g) * scale
                if density < 1:
                    noise *= (torch.rand(v.shape, generator=g) < density)
                sd[k] = (v.float() + noise).to(v.dtype)
        save_file(sd, out / shard.name, metadata={"format": "pt"})
    return out


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors folder (sharded or not)."""
    out = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def write_config(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def lora_adapter(base: Path, out: Path, r: int = 4, alpha: float = 8.0, seed: int = 0,
                 targets=("q_proj", "v_proj")) -> Path:
    """A PEFT-format LoRA adapter folder for ``base`` (random A and B), written without PEFT."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in tensors(base).items():
        if any(t in k for t in targets) and k.endswith(".weight"):
            stem = "base_model.model." + k[: -len(".weight")]
            sd[stem + ".lora_A.weight"] = torch.randn(r, v.shape[1], generator=g) * 0.1
            sd[stem + ".lora_B.weight"] = torch.randn(v.shape[0], r, generator=g) * 0.1
    out.mkdir(parents=True, exist_ok=True)
    save_file(sd, out / "adapter_model.safetensors", metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": list(targets),
        "fan_in_fan_out": False, "use_rslora": False, "base_model_name_or_path": str(base)}), encoding="utf-8")
    return out


def tied_bf16_models(d: Path, n_ft: int = 3) -> dict:
    """A bf16 base and bf16 "fine-tunes" whose deltas are a few multiples of a bf16 step, so that many |δ|
    are exactly equal to each tensor's TIES trim threshold (ties that straddle it)."""
    base = save_tiny(d / "base", seed=4, vocab=64, hidden=32, layers=2, dtype=torch.bfloat16)
    return {"base": base, "ft": [finetune(base, d / f"ft{i}", seed=40 + i, scale=4e-3, density=0.7)
                                 for i in range(1, n_ft + 1)]}


def threshold_ties(base: dict, fts: list[dict], name: str, density: float) -> torch.Tensor:
    """Where any fine-tune's |δ| (float32) equals that tensor's per-tensor top-k threshold exactly."""
    b = base[name].float()
    tie = torch.zeros(b.shape, dtype=torch.bool)
    for f in fts:
        a = (f[name].float() - b).abs().reshape(-1)
        k = max(1, int(density * a.numel()))
        thr = torch.sort(a, descending=True).values[k - 1]
        tie |= (a == thr).reshape(b.shape)
    return tie
