"""``mos``: Mixture of Shards (Wang et al., ICLR 2025): LoRA factors assembled from shards of global pools.

Each targeted linear layer ℓ gets ``ΔW = (α/r) B A`` like LoRA, but the rows of ``A`` (r × d_in) and the
columns of ``B`` (d_out × r) are not free parameters:

- **vector sharding**: each rank vector is the concatenation of ``shards`` pieces (the last one truncated
  when ``shards`` does not divide the dimension);
- **global pools shared across layers**: pieces come from pools ``P_A``, ``P_B`` (one per piece size),
  of ``pool_ratio`` × the pieces LoRA would need (``share=False``: one pool row per piece, no sharing);
- **subset selection**: each layer has its own fixed index matrix into the pool (drawn once from the seed,
  without repetition inside a layer while the pool is large enough; the paper's routing may be learned,
  which the reference notes as unverified; here it is fixed and saved with the adapter);
- **pair dissociation** (``dissociate``): ``B``'s indices are drawn independently of ``A``'s;
- **shard privatisation**: ``private`` of the r rank vectors per layer are the layer's own parameters;
- a trainable scale per (rank, piece), initialised N(``scale_mean``, ``scale_std``) ("random scaling").

``B``'s pool and private part start at zero, so the model is unchanged at the start. Trainable parameters:
``|P_A| + |P_B| + Σ_ℓ private·(d_in + d_out) + Σ_ℓ 2·(r − private)·shards``.

Saved as ``mos.safetensors`` (what xlt reads back exactly) and, beside it, the materialised factors as a standard
PEFT LoRA adapter carrying the new vocabulary (:func:`write_lora`), so plain peft loads the folder like a ``lora``
one; :meth:`MoS.export_lora` writes that adapter anywhere.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from xlt.adapt.methods.base import Method, adapter_dir, register_adaptation
from xlt.errors import XltError
from xlt.options import non_negative, option, positive


class MoSLinear(nn.Module):
    """``base(x) + (α/r) · x Aᵀ Bᵀ`` with A, B assembled from the shared pools (held by the parent ``MoSPools``)."""

    def __init__(self, base: nn.Linear, pools: "MoSPools", name: str, r: int, alpha: float, shards: int, private: int,
                 idx_a: torch.Tensor, idx_b: torch.Tensor, scale_mean: float, scale_std: float, gen: torch.Generator):
        super().__init__()
        self.base = base
        self._pools = [pools]  # not a submodule: the pools belong to the model once
        self.r, self.shards, self.private = r, shards, private
        self.scaling = alpha / r
        self.d_in, self.d_out = base.in_features, base.out_features
        self.sa, self.sb = math.ceil(self.d_in / shards), math.ceil(self.d_out / shards)
        shared = r - private
        self.register_buffer("idx_a", idx_a.view(shared, shards).clone())
        self.register_buffer("idx_b", idx_b.view(shared, shards).clone())
        self.scale_a = nn.Parameter(torch.randn(shared, shards, generator=gen) * scale_std + scale_mean)
        self.scale_b = nn.Parameter(torch.randn(shared, shards, generator=gen) * scale_std + scale_mean)
        self.priv_a = nn.Parameter(torch.empty(private, self.d_in))
        nn.init.kaiming_uniform_(self.priv_a, a=math.sqrt(5), generator=gen) if private else None
        self.priv_b = nn.Parameter(torch.zeros(self.d_out, private))

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The materialised LoRA factors ``A`` (r × d_in) and ``B`` (d_out × r)."""
        if self.idx_a.shape[0] == 0:  # all rank vectors private
            return self.priv_a, self.priv_b
        pa, pb = self._pools[0].pool("a", self.sa), self._pools[0].pool("b", self.sb)
        a = (pa[self.idx_a] * self.scale_a[..., None]).reshape(self.idx_a.shape[0], -1)[:, : self.d_in]
        b = (pb[self.idx_b] * self.scale_b[..., None]).reshape(self.idx_b.shape[0], -1)[:, : self.d_out]
        return torch.cat([a, self.priv_a], 0), torch.cat([b.T, self.priv_b], 1)

    def forward(self, x):
        a, b = self.factors()
        return self.base(x) + (x @ a.T @ b.T) * self.scaling


class MoSPools(nn.Module):
    def __init__(self):
        super().__init__()
        self.pools = nn.ParameterDict()

    def pool(self, side: str, size: int) -> torch.Tensor:
        return self.pools[f"{side}{size}"]


def _linears(model, targets):
    from xlt.adapt.methods.lora import linear_modules, resolve_targets

    lin = linear_modules(model)
    chosen = resolve_targets(model, targets)
    bad = [n for n in chosen if not isinstance(lin[n], nn.Linear)]
    if bad:
        raise XltError(f"mos supports nn.Linear layers only; {bad[:3]} are not", "target Llama-style linear layers")
    return {n: lin[n] for n in chosen}


def attach_mos(model, r: int = 8, alpha: float = 16, shards: int = 2, private: int = 0, pool_ratio: float = 0.125,
               dissociate: bool = True, share: bool = True, target_modules="all-linear", scale_mean: float = 1.0, scale_std: float = 0.0,
               seed: int = 0) -> dict[str, MoSLinear]:
    """Replace the targeted linear layers of ``model`` by :class:`MoSLinear` (in place); returns them by name."""
    lins = _linears(model, target_modules)
    for n, m in lins.items():
        if r > min(m.in_features, m.out_features):
            raise XltError(f"rank {r} is larger than layer {n}'s dimensions ({m.in_features} in, {m.out_features} out)",
                           "use a smaller -M r")
    if not 0 <= private <= r:
        raise XltError(f"private = {private} rank vectors out of r = {r}", "choose 0 <= private <= r")
    if not 1 <= shards:
        raise XltError(f"shards = {shards}", "use at least one shard per vector")
    if not 0 < pool_ratio <= 1:
        raise XltError(f"pool_ratio {pool_ratio} is not in (0, 1]", "give the pool size as a share of LoRA's pieces")
    gen = torch.Generator().manual_seed(seed)
    shared = r - private
    need: dict[str, int] = {}
    for m in lins.values():  # pieces LoRA would need, per (side, piece size)
        need_a, need_b = f"a{math.ceil(m.in_features / shards)}", f"b{math.ceil(m.out_features / shards)}"
        need[need_a] = need.get(need_a, 0) + shared * shards
        need[need_b] = need.get(need_b, 0) + shared * shards
    pools = MoSPools()
    for key, n in sorted(need.items()):
        size = int(key[1:])
        count = (max(1, math.ceil(n * pool_ratio)) if share else n) if n else 0
        p = torch.empty(count, size)
        if key[0] == "a":  # like LoRA's A (kaiming-uniform on the full row width); B starts at zero
            bound = 1 / math.sqrt(size * shards)
            p.uniform_(-bound, bound, generator=gen)
        else:
            p.zero_()
        pools.pools[key] = nn.Parameter(p)
    model.add_module("mos_pools", pools)

    offsets: dict[int, int] = {}

    def draw(n_pool: int, k: int, key=None) -> torch.Tensor:
        if not share:  # no sharing: every layer its own block of pool rows
            start = offsets.get(key, 0)
            offsets[key] = start + k
            return torch.arange(start, start + k)
        if k <= n_pool:
            return torch.randperm(n_pool, generator=gen)[:k]
        return torch.randint(0, n_pool, (k,), generator=gen)

    out = {}
    for name, lin in lins.items():
        sa, sb = math.ceil(lin.in_features / shards), math.ceil(lin.out_features / shards)
        na, nb = pools.pools[f"a{sa}"].shape[0] if shared else 1, pools.pools[f"b{sb}"].shape[0] if shared else 1
        ia = draw(na, shared * shards, ("a", sa)) if shared else torch.zeros(0, dtype=torch.long)
        ib = (draw(nb, shared * shards, ("b", sb)) if dissociate or not share else ia % nb) if shared else torch.zeros(0, dtype=torch.long)
        mod = MoSLinear(lin, pools, name, r, alpha, shards, private, ia, ib, scale_mean, scale_std, gen)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, mod)
        out[name] = mod
    return out


def mos_parameters(model) -> list[nn.Parameter]:
    ps = list(model.mos_pools.parameters())
    for m in model.modules():
        if isinstance(m, MoSLinear):
            ps += [m.scale_a, m.scale_b, m.priv_a, m.priv_b]
    return [p for p in ps if p.numel()]


def mos_state(model) -> dict[str, torch.Tensor]:
    return {n: t.detach().contiguous() for n, t in model.state_dict().items()
            if n.startswith("mos_pools.") or any(s in n for s in (".scale_a", ".scale_b", ".priv_a", ".priv_b", ".idx_a", ".idx_b"))}


@dataclass
class MoSOptions:
    r: int = option(8, "rank of each layer's assembled LoRA factors", check=positive)
    alpha: float = option(16, "scale alpha (the update is scaled by alpha/r)", check=positive)
    shards: int = option(2, "pieces each rank vector is cut into (vector sharding)", check=positive)
    private: int = option(0, "rank vectors per layer that are the layer's own (shard privatisation)", check=non_negative)
    pool_ratio: float = option(0.125, "pool size as a share of the pieces LoRA would need", check=positive)
    dissociate: bool = option(True, "draw B's pool indices independently of A's (pair dissociation)")
    share: bool = option(True, "share the pools across layers (false: one pool row per piece)")
    target_modules: str | list[str] = option("all-linear", "linear layers to adapt: all-linear or name suffixes")
    scale_mean: float = option(1.0, "mean of the per-(rank, piece) scales at the start")
    scale_std: float = option(0.0, "std of the per-(rank, piece) scales at the start", check=non_negative)
    seed: int = option(0, "seed of the pools and the index draws")


@register_adaptation("mos", options=MoSOptions)
class MoS(Method):
    description = "mixture of shards: LoRA factors built from shards of pools shared across layers (~8x fewer parameters)"

    def prepare(self, model):
        attach_mos(model, **asdict(self.config))
        return model

    def stage2_parameters(self, model):
        return mos_parameters(model)

    @classmethod
    def export_model(cls, model):
        """Fold every layer's materialised update ``(α/r) B A`` into its weight (in float64, then the weight's dtype),
        put the plain linear layer back and drop the pools: the standard architecture (see :meth:`Method.export_model`)."""
        with torch.no_grad():
            for m in _unwrap(model):
                a, b = m.factors()
                w = m.base.weight
                w.copy_((w.double() + m.scaling * (b.double() @ a.double())).to(w.dtype))
        return super().export_model(model)

    def save_weights(self, model, folder: Path) -> dict:
        """``mos.safetensors`` (pools, indices, scales: what :meth:`load_weights` reads) and the materialised factors
        as a standard PEFT LoRA adapter that carries the vocabulary (:func:`write_lora`), for plain peft."""
        from safetensors.torch import save_file

        save_file(mos_state(model), str(folder / "mos.safetensors"))
        return write_lora(model, folder)

    @classmethod
    def load_weights(cls, model, folder: Path, meta: dict):
        from safetensors.torch import load_file

        attach_mos(model, **asdict(cls.config_from(meta["options"])))
        state = load_file(str(folder / "mos.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(mos_state(model)) - set(state):
            raise XltError(f"{folder}/mos.safetensors does not match the model's MoS layers", "load it on the base it was trained on")
        return model

    @staticmethod
    def export_lora(model, folder: str | Path, adapter_name: str = "default"):
        """Write the materialised factors (and the vocabulary) as a standard PEFT LoRA adapter (:func:`write_lora`);
        returns the PeftModel that plain peft loads from it, on a copy of the base without the MoS layers."""
        import copy

        from peft import PeftModel

        write_lora(model, folder, adapter_name)
        plain = copy.deepcopy(model)
        _unwrap(plain)
        return PeftModel.from_pretrained(plain, str(adapter_dir(folder, adapter_name)), adapter_name=adapter_name)


def _unwrap(model) -> list[MoSLinear]:
    """Put every MoS layer's plain linear layer back in its place and drop the shared pools; returns the MoS layers
    (whose factors can still be read)."""
    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, MoSLinear)]
    for n, m in mods:
        parent, _, child = n.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, m.base)
    if mods and hasattr(model, "mos_pools"):
        del model.mos_pools
    return [m for _, m in mods]


def write_lora(model, folder: str | Path, adapter_name: str = "default", base_name: str | None = None) -> dict:
    """Write the MoS layers' materialised factors ``A``, ``B`` (``ΔW = (α/r) B A``, exactly LoRA's form) as a standard
    PEFT LoRA adapter, PEFT's layout and key names, with the input embeddings and the head inside (as PEFT's
    ``save_embedding_layers=True`` writes them): ``base.resize_token_embeddings(len(tok))`` +
    ``PeftModel.from_pretrained(base, folder)`` gives the MoS model's logits. ``base_name``: what
    ``adapter_config.json`` names the base (default: the model's own name, made portable). Returns the
    ``xlt_method.json`` entry naming the file that holds the embeddings."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    from xlt.adapt.methods.base import ADAPTER, portable_base_name

    mods = {n: m for n, m in model.named_modules() if isinstance(m, MoSLinear)}
    if not mods:
        raise XltError("the model has no MoS layers", "attach MoS (method mos) before exporting")
    any_m = next(iter(mods.values()))
    prefix = "base_model.model."  # PEFT's keys for a LoRA adapter on a transformers model
    state = {}
    with torch.no_grad():
        for n, m in mods.items():
            a, b = m.factors()
            state[f"{prefix}{n}.lora_A.weight"] = a.detach().clone().contiguous()
            state[f"{prefix}{n}.lora_B.weight"] = b.detach().clone().contiguous()
        names = {id(mod): n for n, mod in model.named_modules()}
        for layer in (model.get_input_embeddings(), model.get_output_embeddings()):
            if layer is not None:  # a tied head is written too (a copy), as PEFT does
                state.update({f"{prefix}{names[id(layer)]}.{k}": v.detach().clone().contiguous()
                              for k, v in layer.state_dict().items()})
    out = adapter_dir(folder, adapter_name)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / ADAPTER), metadata={"format": "pt"})
    cfg = LoraConfig(r=any_m.r, lora_alpha=any_m.scaling * any_m.r, target_modules=sorted(mods), bias="none",
                     inference_mode=True)
    cfg.base_model_name_or_path = base_name if base_name is not None else portable_base_name(
        getattr(model.config, "_name_or_path", None) or None)
    cfg.save_pretrained(str(out), auto_mapping_dict={"base_model_class": type(model).__name__,
                                                      "parent_library": type(model).__module__})
    return {"embeddings": (out / ADAPTER).relative_to(folder).as_posix()}
