"""Mixture of LoRAs: N language (or task) LoRA adapters in one PEFT model, routed per example.

- **Hard routing** by language id: :func:`route_by_language` runs each example through its own language's
  adapter (PEFT's native ``adapter_names=`` mixed-batch forward).
- **Soft sentence-level routing** (MT4CrossOIE): :class:`RoutedLoRA`. A router (``Linear(d → N)``, no bias)
  reads the mean of the example's input embeddings (padding excluded) and gives gates
  ``g = softmax(logits)``; each targeted layer returns ``base(x) + Σ_i g_i · s_i · B_i A_i x``. With
  ``top_k`` the logits outside the K largest are set to −inf *before* the softmax, so exactly K gates are
  non-zero and they sum to 1 (MT4CrossOIE zeroes probabilities and re-applies softmax, which gives the
  zeroed experts weight again). PEFT still owns the LoRA weights and their storage; the router is added
  with hooks, PEFT's forwards are not patched (its own adapter path is switched off while routing).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from xlt.errors import XltError


def route_by_language(peft_model, input_ids, languages: list[str], prefix: str = "lang/", **kw):
    """Forward with example ``i`` through adapter ``prefix + languages[i]`` (``"__base__"`` for none)."""
    if peft_model.training:
        raise XltError("hard routing by language id (PEFT's mixed-batch forward) is for inference",
                       "call model.eval() first; to train, train each language adapter on its own language's batches")
    names = [l if l == "__base__" else prefix + l for l in languages]
    missing = sorted({n for n in names if n != "__base__" and n not in peft_model.peft_config})
    if missing:
        raise XltError(f"no adapter for {missing}", f"loaded adapters: {', '.join(sorted(peft_model.peft_config))}")
    return peft_model(input_ids=input_ids, adapter_names=names, **kw)


def topk_softmax(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Softmax over the last dim with every logit outside the top ``k`` masked to −inf first."""
    if k is not None:
        if not 1 <= k <= logits.shape[-1]:
            raise XltError(f"top_k = {k} with {logits.shape[-1]} adapters", f"choose 1 <= top_k <= {logits.shape[-1]}")
        kth = logits.topk(k, dim=-1).indices
        mask = torch.full_like(logits, float("-inf")).scatter(-1, kth, 0.0)
        logits = logits + mask
    return torch.softmax(logits, dim=-1)


class RoutedLoRA(nn.Module):
    """Soft routing over the LoRA adapters ``names`` of ``peft_model`` (see the module docstring)."""

    def __init__(self, peft_model, names: list[str], top_k: int | None = None, seed: int = 0):
        super().__init__()
        missing = [n for n in names if n not in peft_model.peft_config]
        if missing:
            raise XltError(f"adapter(s) {missing} are not loaded", f"loaded adapters: {', '.join(sorted(peft_model.peft_config))}")
        self.pm, self.names, self.top_k = [peft_model], list(names), top_k
        base = peft_model.get_base_model()
        d = base.get_input_embeddings().weight.shape[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.router = nn.Linear(d, len(names), bias=False)
            nn.init.normal_(self.router.weight, std=0.02)
        self.fixed_gates: torch.Tensor | None = None
        self.gates: torch.Tensor | None = None
        self._mask = None
        self._handles = []
        peft_model.base_model.set_adapter(list(names))
        peft_model.base_model.enable_adapter_layers()
        self._layers = [m for m in peft_model.modules() if hasattr(m, "lora_A") and any(n in m.lora_A for n in names)]
        for m in self._layers:
            m._disable_adapters = True  # PEFT's own sum of the active adapters is off; the hook below routes
        self._handles.append(base.register_forward_pre_hook(self._capture_mask, with_kwargs=True))
        self._handles.append(base.get_input_embeddings().register_forward_hook(self._route))
        for m in self._layers:
            self._handles.append(m.register_forward_hook(self._mix))

    def set_gates(self, gates: torch.Tensor | None) -> None:
        """Fix the gates (batch × N, or N for every example) instead of the router's; None returns to the router."""
        self.fixed_gates = gates

    def _capture_mask(self, module, args, kwargs):
        self._mask = kwargs.get("attention_mask")

    def _route(self, module, args, emb):
        if self.fixed_gates is not None:
            g = self.fixed_gates.to(emb.dtype)
            self.gates = g.expand(emb.shape[0], -1) if g.ndim == 1 else g
            return
        m = self._mask
        m = torch.ones(emb.shape[:2], device=emb.device, dtype=emb.dtype) if m is None else m.to(emb.dtype)
        pooled = (emb * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1)
        self.gates = topk_softmax(self.router(pooled), self.top_k)

    def _mix(self, module, args, out):
        x = args[0]
        g = self.gates
        for i, n in enumerate(self.names):
            if n not in module.lora_A:
                continue
            delta = module.lora_B[n](module.lora_A[n](module.lora_dropout[n](x.to(module.lora_A[n].weight.dtype))))
            w = g[:, i].view(-1, *([1] * (delta.ndim - 1)))
            out = out + (w * module.scaling[n] * delta).to(out.dtype)
        return out

    def trainable(self, train_loras: bool = True) -> list[nn.Parameter]:
        """Set requires_grad: the router (and the LoRAs with ``train_loras``); the base stays frozen."""
        for p in self.pm[0].parameters():
            p.requires_grad_(False)
        ps = list(self.router.parameters())
        if train_loras:
            ps += [p for n, p in self.pm[0].named_parameters() if "lora_" in n and any(f".{a}." in n for a in self.names)]
        for p in ps:
            p.requires_grad_(True)
        return ps

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        for m in self._layers:
            m._disable_adapters = False
        self._handles = []

    def save(self, folder: str | Path) -> None:
        """PEFT adapters (one subfolder each, PEFT's layout) + ``router.safetensors`` + ``router.json``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.pm[0].save_pretrained(str(folder), selected_adapters=self.names, save_embedding_layers=False)
        save_file({"weight": self.router.weight.detach().contiguous()}, str(folder / "router.safetensors"))
        (folder / "router.json").write_text(json.dumps({"names": self.names, "top_k": self.top_k}))

    @classmethod
    def load(cls, base_model, folder: str | Path) -> "RoutedLoRA":
        from peft import PeftModel
        from safetensors.torch import load_file

        from xlt.adapt.methods.base import adapter_dir

        folder = Path(folder)
        meta = json.loads((folder / "router.json").read_text())
        pm = None
        for n in meta["names"]:
            sub = adapter_dir(folder, n)
            if pm is None:
                pm = PeftModel.from_pretrained(base_model, str(sub), adapter_name=n)
            else:
                pm.load_adapter(str(sub), adapter_name=n)
        r = cls(pm, meta["names"], meta["top_k"])
        r.router.load_state_dict(load_file(str(folder / "router.safetensors")))
        return r
