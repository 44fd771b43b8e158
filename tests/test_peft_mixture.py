"""Mixture of LoRAs: hard routing by language id, soft routing with gates that sum to 1 and exact top-K."""

import copy

import pytest
import torch

from xlt.adapt.mixture import RoutedLoRA, route_by_language, topk_softmax
from xlt.errors import XltError
from xlt.models import tiny_model

IDS = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(0))
LANGS = ["lang/sw", "lang/yo", "lang/ha"]


def _peft(seed=1):
    from peft import LoraConfig, get_peft_model

    base = tiny_model("llama", vocab_size=64, hidden=32, layers=2, heads=2, seed=seed)
    cfg = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"])
    pm = get_peft_model(copy.deepcopy(base), cfg, adapter_name=LANGS[0])
    for n in LANGS[1:]:
        pm.add_adapter(n, cfg)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return pm.eval()


def _single(pm, name, ids=IDS):
    pm.base_model.set_adapter(name)
    with torch.no_grad():
        return pm(input_ids=ids).logits


def test_topk_softmax_masks_logits_before_the_softmax():
    logits = torch.tensor([[2.0, 0.5, 1.0, -1.0], [0.0, 0.0, 3.0, 1.0]])
    g = topk_softmax(logits, 2)
    assert torch.allclose(g.sum(-1), torch.ones(2)) and ((g > 0).sum(-1) == 2).all()
    # renormalised over the top 2 only: e^2 / (e^2 + e^1)
    assert g[0, 0].item() == pytest.approx(torch.e ** 2 / (torch.e ** 2 + torch.e), rel=1e-6) and g[0, 1] == 0
    with pytest.raises(XltError, match="top_k = 5 with 4 adapters"):
        topk_softmax(logits, 5)


def test_hard_routing_sends_each_example_through_its_language():
    pm = _peft()
    singles = {n: _single(pm, n) for n in LANGS}
    with torch.no_grad():
        out = route_by_language(pm, IDS, ["yo", "sw", "ha"]).logits
    for i, n in enumerate(["lang/yo", "lang/sw", "lang/ha"]):
        assert torch.allclose(out[i], singles[n][i], atol=1e-6)
    with pytest.raises(XltError, match=r"no adapter for \['lang/de'\]"):
        route_by_language(pm, IDS, ["de", "sw", "ha"])


def test_one_hot_gates_equal_the_single_adapter_and_router_gates_are_exact_top_k():
    pm = _peft()
    singles = {n: _single(pm, n) for n in LANGS}
    r = RoutedLoRA(pm, LANGS, top_k=2)
    for i, n in enumerate(LANGS):
        r.set_gates(torch.nn.functional.one_hot(torch.tensor(i), 3).float())
        with torch.no_grad():
            assert torch.allclose(pm(input_ids=IDS).logits, singles[n], atol=1e-6), n
    # an even mix equals the average of the deltas: logits differ from every single adapter
    r.set_gates(torch.full((3,), 1 / 3))
    with torch.no_grad():
        mixed = pm(input_ids=IDS).logits
    assert all(not torch.allclose(mixed, s, atol=1e-4) for s in singles.values())
    r.set_gates(None)
    with torch.no_grad():
        r.router.weight.normal_(0, 1.0)
        pm(input_ids=IDS, attention_mask=torch.ones_like(IDS))
    assert torch.allclose(r.gates.sum(-1), torch.ones(3), atol=1e-6)
    assert ((r.gates > 0).sum(-1) == 2).all()
    # only the router and the LoRAs train; the base gets no gradient
    trainable = {id(p) for p in r.trainable()}
    pm.train()
    pm(input_ids=IDS, labels=IDS).loss.backward()
    for n, p in list(pm.named_parameters()) + [("router", r.router.weight)]:
        assert (p.grad is not None) == (id(p) in trainable), n
    assert r.router.weight.grad.abs().sum() > 0


def test_routed_mixture_saves_and_loads(tmp_path):
    pm = _peft()
    r = RoutedLoRA(pm, LANGS, top_k=2)
    with torch.no_grad():
        r.router.weight.normal_(0, 1.0)
        ref = pm(input_ids=IDS).logits
    r.save(tmp_path / "mix")
    base = tiny_model("llama", vocab_size=64, hidden=32, layers=2, heads=2, seed=1)
    r2 = RoutedLoRA.load(base, tmp_path / "mix")
    with torch.no_grad():
        assert torch.equal(r2.pm[0](input_ids=IDS).logits, ref)
