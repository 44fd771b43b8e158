"""MoS (mixture of shards): equals LoRA in the degenerate case, shared shards collect every layer's gradient,
the parameter count follows the formula, export to plain LoRA, save/load."""

import copy
import math

import pytest
import torch

from xlt.adapt.methods import fingerprint, get_method, load_adapted
from xlt.adapt.methods.mos import MoS, MoSLinear, attach_mos, mos_parameters
from xlt.errors import XltError

from tiny_llama import IDS, _logits, _model


def _randomise(model, std=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mos_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * std)


def test_all_private_single_shard_equals_plain_lora():
    from peft import LoraConfig, get_peft_model

    base = _model()
    mos = copy.deepcopy(base)
    mods = attach_mos(mos, r=4, alpha=8, shards=1, private=4, target_modules=["q_proj", "down_proj"])
    assert torch.equal(_logits(mos), _logits(base))  # B = 0 at the start
    _randomise(mos)
    pm = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"]))
    with torch.no_grad():
        for n, m in mods.items():
            layer = pm.base_model.model.get_submodule(n)
            layer.lora_A["default"].weight.copy_(m.priv_a)
            layer.lora_B["default"].weight.copy_(m.priv_b)
    assert torch.allclose(_logits(mos), _logits(pm), atol=1e-6)


def test_no_sharing_single_shard_equals_lora_and_export_is_exact(tmp_path):
    """No sharing with one shard per vector: every pool row used once, i.e. plain LoRA with pooled storage."""
    base = _model()
    mos = copy.deepcopy(base)
    mods = attach_mos(mos, r=2, alpha=2, shards=1, private=0, share=False, target_modules=["v_proj", "up_proj"])
    used = torch.cat([torch.cat([m.idx_a.view(-1) for m in mods.values() if m.sa == s]) for s in {m.sa for m in mods.values()}])
    assert len(used) == len(torch.unique(used)) == sum(p.shape[0] for k, p in mos.mos_pools.pools.items() if k[0] == "a")
    _randomise(mos)
    with torch.no_grad():
        for m in mods.values():
            m.scale_a.fill_(1.0)
            m.scale_b.fill_(1.0)
    ref = _logits(mos)
    pm = MoS.export_lora(mos, tmp_path / "lora")
    assert torch.allclose(_logits(pm), ref, atol=1e-6)
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()


def test_shared_shard_gets_gradient_from_every_layer_that_uses_it():
    m = _model()
    mods = attach_mos(m, r=4, alpha=8, shards=2, private=1, pool_ratio=0.05, target_modules="all-linear", scale_std=0.3)
    _randomise(m, 0.2)
    facs = {}
    orig = MoSLinear.factors

    def spy(self):
        a, b = orig(self)
        a.retain_grad()
        b.retain_grad()
        facs[id(self)] = (a, b)
        return a, b

    MoSLinear.factors = spy
    try:
        m(input_ids=IDS, labels=IDS).loss.backward()
    finally:
        MoSLinear.factors = orig
    pa = m.mos_pools.pools["a16"]  # 32-wide inputs, two pieces of 16
    expect = torch.zeros_like(pa)
    users = set()
    for n, mod in mods.items():
        if mod.sa != 16:
            continue
        ga = facs[id(mod)][0].grad[: mod.r - mod.private].reshape(-1, mod.shards, 16)  # d_in = 32: no truncation
        for (i, j), row in zip(torch.cartesian_prod(torch.arange(ga.shape[0]), torch.arange(mod.shards)), mod.idx_a.view(-1)):
            expect[row] += ga[i, j] * mod.scale_a[i, j]
            if row == 0:
                users.add(n)
    assert len(users) >= 2  # the pool is small: row 0 is shared by several layers
    assert torch.allclose(pa.grad, expect, atol=1e-6)


def test_trainable_parameter_count_matches_the_formula_and_is_8x_below_lora():
    m = _model()
    r, sh, pv, ratio = 8, 2, 1, 0.125
    mods = attach_mos(m, r=r, alpha=16, shards=sh, private=pv, pool_ratio=ratio)
    pools = sum(p.numel() for p in m.mos_pools.parameters())
    need = {}
    for mod in mods.values():
        need[("a", mod.sa)] = need.get(("a", mod.sa), 0) + (r - pv) * sh
        need[("b", mod.sb)] = need.get(("b", mod.sb), 0) + (r - pv) * sh
    assert pools == sum(math.ceil(n * ratio) * size for (_, size), n in need.items())
    expect = pools + sum(pv * (mod.d_in + mod.d_out) + 2 * (r - pv) * sh for mod in mods.values())
    assert get_method("mos").trainable_parameters(m) == sum(p.numel() for p in mos_parameters(m)) == expect
    lora = sum(r * (mod.d_in + mod.d_out) for mod in mods.values())
    default = copy.deepcopy(_model())
    get_method("mos").prepare(default)
    # defaults (private 0, pools of 1/8 of LoRA's pieces): the pools hold 1/8 of LoRA's parameters (up to rounding);
    # the per-(rank, piece) scales come on top (2·r·shards per layer, negligible at real sizes)
    pools_default = sum(p.numel() for p in default.mos_pools.parameters())
    assert lora / 8 <= pools_default <= lora / 8 + sum(p.shape[1] for p in default.mos_pools.parameters())
    assert get_method("mos").trainable_parameters(default) == pools_default + 14 * 2 * 8 * 2


def test_mos_frozen_base_save_load_and_bad_input(tmp_path):
    src = _model()
    src.save_pretrained(tmp_path / "src")
    meth = get_method("mos", {"r": 4, "shards": 2, "private": 1})
    m = meth.prepare(copy.deepcopy(src))
    _randomise(m)
    m.train()
    for p in m.parameters():
        p.requires_grad_(False)
    for p in meth.stage2_parameters(m):
        p.requires_grad_(True)
    m(input_ids=IDS, labels=IDS).loss.backward()
    trainable = {id(p) for p in meth.stage2_parameters(m)}
    for n, p in m.named_parameters():
        assert (p.grad is not None) == (id(p) in trainable), n
    m.eval()
    ref = _logits(m)
    meth.save(m, tmp_path / "f", str(tmp_path / "src"), fingerprint(src))
    assert torch.equal(_logits(load_adapted(tmp_path / "f")), ref)
    with pytest.raises(XltError, match="rank 40 is larger"):
        attach_mos(_model(), r=40)
    with pytest.raises(XltError, match="match no linear layer"):
        attach_mos(_model(), target_modules=["wq"])
