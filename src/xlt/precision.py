"""Which arithmetic training runs in: ``--precision auto|fp32|bf16``.

``bf16`` is autocast to bfloat16 with fp32 master weights and fp32 optimizer state (the parameters are never cast:
only the matrix products and their gradients run in bf16). ``auto`` picks bf16 where the device computes it natively
(CUDA devices with bf16; CPUs with AVX512-BF16 or AMX-BF16, read from ``/proc/cpuinfo``) and fp32 elsewhere; the
choice and its reason go into ``metrics.json``. Evaluation stays fp32 unless asked (``--eval-precision``), so
bits/byte compare across machines.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch

from xlt.errors import XltError

PRECISIONS = ("auto", "fp32", "bf16")

#: CPU flags that mean bf16 matrix products run in hardware (``/proc/cpuinfo``)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where ``/proc/cpuinfo`` cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def device_type() -> str:
    """``cuda`` where a CUDA device is visible (what the trainer uses), else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_support(device: str | None = None) -> tuple[bool, str]:
    """Whether ``device`` (default: the one training uses) computes bf16 natively, and why (or why not)."""
    device = device or device_type()
    if device == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
        return ok, f"CUDA device {name} {'supports' if ok else 'does not support'} bf16"
    found = [f for f in BF16_CPU_FLAGS if f in cpu_flags()]
    if found:
        return True, f"the CPU has {' and '.join(found)}"
    return False, f"the CPU has none of {', '.join(BF16_CPU_FLAGS)} (bf16 would be emulated, slower than fp32)"


@dataclass(frozen=True)
class Precision:
    """A resolved precision: what was asked, what is used, on which device and why."""

    requested: str
    used: str  # "fp32" or "bf16"
    device: str
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_precision(requested: str, device: str | None = None, what: str = "--precision") -> Precision:
    """``auto`` → bf16 where :func:`bf16_support`, else fp32; ``bf16`` where unsupported is one clear error."""
    device = device or device_type()
    if requested not in PRECISIONS:
        raise XltError(f"{what} {requested!r} is not one of {', '.join(PRECISIONS)}",
                       f"pass {what} auto (bf16 where the hardware has it), fp32 or bf16")
    ok, why = bf16_support(device)
    if requested == "bf16" and not ok:
        raise XltError(f"{what} bf16 was asked for, but {why}",
                       f"use {what} fp32 (or auto, which picks fp32 here), or run on a device with bf16")
    used = requested if requested != "auto" else ("bf16" if ok else "fp32")
    return Precision(requested, used, device, why)


def autocast(precision: str, device: str | None = None):
    """The context the forward pass runs in: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device or device_type(), dtype=torch.bfloat16)
    return nullcontext()
