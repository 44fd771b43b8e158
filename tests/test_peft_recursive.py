"""Relaxed recursive transformers: full-rank SVD-LoRA reproduces the original, rank 0 is the pure recursive
model, looped positions share storage, save/load."""

import copy

import pytest
import torch

from xlt.adapt.methods import fingerprint, get_method, load_adapted
from xlt.adapt.methods.recursive import shared_parameters, to_recursive, unique_parameters
from xlt.errors import XltError
from xlt.models import tiny_model

IDS = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
LIN = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
       "mlp.down_proj"]


def _model(dtype=torch.float32):
    return tiny_model("llama", vocab_size=64, hidden=32, layers=4, heads=2, seed=1).to(dtype)


def _logits(m):
    with torch.no_grad():
        return m(input_ids=IDS).logits


def test_full_rank_svd_lora_reproduces_the_original():
    m = _model(torch.float64)
    ref = _logits(m)
    rec = to_recursive(copy.deepcopy(m), K=2, init="average", r=32)  # 32 = min(d_in, d_out) of every layer
    assert torch.allclose(_logits(rec), ref, atol=1e-9)
    low = to_recursive(copy.deepcopy(m), K=2, init="stepwise", r=4)
    err_low = (_logits(low) - ref).abs().max()
    assert err_low > 1e-4  # a truncated residual is an approximation


@pytest.mark.parametrize("init", ["average", "stepwise", "lower"])
def test_rank_zero_is_the_pure_recursive_model_with_shared_storage(init):
    m = _model()
    rec = to_recursive(copy.deepcopy(m), K=2, init=init, r=0)
    # by hand: position l runs shared layer l mod 2, built from the original layers
    manual = copy.deepcopy(m)
    src = {"average": None, "stepwise": [0, 2], "lower": [0, 1]}[init]
    with torch.no_grad():
        for l in range(4):
            for n in LIN:
                group = [g for g in range(4) if g % 2 == l % 2]
                w = (torch.stack([m.model.layers[g].get_submodule(n).weight for g in group]).mean(0) if src is None
                     else m.model.layers[src[l % 2]].get_submodule(n).weight)
                manual.model.layers[l].get_submodule(n).weight.copy_(w)
    assert torch.allclose(_logits(rec), _logits(manual), atol=1e-6)
    for n in LIN:
        a, b = rec.model.layers[0].get_submodule(n).weight, rec.model.layers[2].get_submodule(n).weight
        assert a.data_ptr() == b.data_ptr() and a is b
        assert rec.model.layers[1].get_submodule(n).weight.data_ptr() != a.data_ptr()


def test_parameter_count_gradients_and_save_load(tmp_path):
    src = _model()
    src.save_pretrained(tmp_path / "src")
    meth = get_method("recursive", {"K": 2, "r": 4})
    rec = meth.prepare(copy.deepcopy(src))
    lin_per_layer = sum(src.model.layers[0].get_submodule(n).weight.numel() for n in LIN)
    norms = 2 * 32 * 4 + 32
    lora = 4 * sum(4 * sum(src.model.layers[0].get_submodule(n).weight.shape) for n in LIN)
    assert unique_parameters(rec) == 64 * 32 + 2 * lin_per_layer + norms + lora
    assert unique_parameters(src) - unique_parameters(rec) == 2 * lin_per_layer - lora
    assert meth.trainable_parameters(rec) == 2 * lin_per_layer + norms + lora
    # stage 2: the shared block and the LoRAs train; a shared weight collects the gradient of both positions
    for p in rec.parameters():
        p.requires_grad_(False)
    trainable = shared_parameters(rec)
    for p in trainable:
        p.requires_grad_(True)
    rec.train()
    rec(input_ids=IDS, labels=IDS).loss.backward()
    ids = {id(p) for p in trainable}
    for n, p in rec.named_parameters():
        assert (p.grad is not None) == (id(p) in ids), n
    rec.eval()
    with torch.no_grad():
        for p in trainable:
            p.add_(torch.randn_like(p) * 0.01)
    ref = _logits(rec)
    meth.save(rec, tmp_path / "f", str(tmp_path / "src"), fingerprint(src))
    back = load_adapted(tmp_path / "f")
    assert torch.equal(_logits(back), ref)
    assert back.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.data_ptr() == \
        back.base_model.model.model.layers[2].self_attn.q_proj.base_layer.weight.data_ptr()


def test_recursive_bad_input():
    with pytest.raises(XltError, match=r"4 layers cannot be looped as K = 3") as e:
        to_recursive(_model(), K=3)
    assert "[1, 2, 4]" in e.value.fix
    with pytest.raises(XltError, match="rank 40 is larger"):
        to_recursive(_model(), K=2, r=40)
