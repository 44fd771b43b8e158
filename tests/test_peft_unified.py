"""The unified view (He et al. 2022): sequential vs parallel placement, one configuration space, the grid presets."""

import copy

import pytest
import torch

from xlt.adapt.methods import fingerprint, get_method, load_adapted
from xlt.adapt.methods.unified import GRID, attach_adapters
from xlt.errors import XltError
from xlt.models import tiny_model

IDS = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))


def _model():
    return tiny_model("llama", vocab_size=64, hidden=32, layers=2, heads=2, seed=1)


def _logits(m):
    with torch.no_grad():
        return m(input_ids=IDS).logits


@pytest.mark.parametrize("form", ["sequential", "parallel"])
def test_sequential_and_parallel_forms_by_hand(form):
    m = _model()
    mlp = m.model.layers[0].mlp
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = mlp(x)
    mods = attach_adapters(m, "ffn", form, size=4, scale=3.0)
    with torch.no_grad():
        assert torch.equal(mlp(x), plain)  # zero up-projection
        for p in mods.parameters():
            p.normal_(0, 0.3)
        ad = mods[0]
        expect = plain + 3.0 * ad.up(torch.relu(ad.down(plain if form == "sequential" else x)))
        assert torch.allclose(mlp(x), expect, atol=1e-6)


def test_trainable_counts_and_bad_configurations():
    m = _model()
    a = get_method("par-adapter-ffn")
    am = a.prepare(copy.deepcopy(m))
    assert a.trainable_parameters(am) == 2 * (32 * 16 + 16 + 16 * 32 + 32)
    lo = get_method("lora-attn")
    assert lo.trainable_parameters(lo.prepare(copy.deepcopy(m))) == 2 * 2 * 8 * (32 + 32)
    pre = get_method("prefix", {"size": 4})
    # PEFT prefix tuning: per virtual token, a key and a value vector for every layer
    assert pre.trainable_parameters(pre.prepare(copy.deepcopy(m))) == 4 * 2 * 2 * 32
    with pytest.raises(XltError, match="form=sequential does not exist"):
        get_method("unified", {"function": "lora", "form": "sequential"})
    with pytest.raises(XltError, match="prefix tuning modifies attention only"):
        get_method("unified", {"function": "prefix", "where": "ffn"})


@pytest.mark.parametrize("name", GRID)
def test_every_grid_point_starts_unchanged_trains_only_itself_and_loads_back(tmp_path, name):
    src = _model()
    src.save_pretrained(tmp_path / "src")
    meth = get_method(name, {"size": 4})
    m = meth.prepare(copy.deepcopy(src))
    if name != "prefix":  # prefix vectors cannot start as a no-op
        assert torch.equal(_logits(m), _logits(src))
    trainable = meth.stage2_parameters(m)
    for p in m.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    with torch.no_grad():
        for p in trainable:
            p.add_(torch.randn_like(p) * 0.05)
    m.train()
    m(input_ids=IDS, labels=IDS).loss.backward()
    ids = {id(p) for p in trainable}
    for n, p in m.named_parameters():
        assert (p.grad is not None) == (id(p) in ids), n
    m.eval()
    ref = _logits(m)
    assert not torch.allclose(ref, _logits(src), atol=1e-5)
    meth.save(m, tmp_path / "f", str(tmp_path / "src"), fingerprint(src))
    assert torch.equal(_logits(load_adapted(tmp_path / "f")), ref)
