"""MT4CrossOIE stage 3: frozen model, one LoRA per language on its own data, then only the router on the mix."""

from __future__ import annotations

import copy

import pytest
import torch

from xlt.errors import XltError
from xlt.tasks.crossoie import Stage3Options, stage3, train_language_loras, train_router

torch.set_num_threads(1)

OPT = Stage3Options(r=2, lora_alpha=4, lora_steps=4, router_steps=4, lr=5e-2, router_lr=5e-2, seed=3)


@pytest.fixture(scope="module")
def classifier():
    import transformers as T

    torch.manual_seed(0)
    cfg = T.BertConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                       num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return T.BertForSequenceClassification(cfg).eval()


def _batches(seed: int, n: int = 2, shift: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(4 + shift, 30 + shift, (4, 6), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                    "labels": torch.randint(0, 3, (4,), generator=g)})
    return out


def _lora(pm, lang):
    return {n: p.detach().clone() for n, p in pm.named_parameters() if f".lang/{lang}." in n}


def test_each_language_lora_trains_on_its_own_data_only_and_the_base_gets_no_gradient(classifier):
    data = {"sw": _batches(1), "yo": _batches(2, shift=30)}
    base = copy.deepcopy(classifier)
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    pm = train_language_loras(base, data, OPT)
    for n, p in pm.get_base_model().named_parameters():
        if "lora_" not in n:
            assert p.grad is None and not p.requires_grad, n
            assert torch.equal(p, before[n.replace("base_layer.", "")]), n
    sw, yo = _lora(pm, "sw"), _lora(pm, "yo")
    assert sw and yo
    # sw's own data matters ...
    other_sw = _lora(train_language_loras(copy.deepcopy(classifier), {"sw": _batches(9)}, OPT), "sw")
    assert any(not torch.equal(sw[n], v) for n, v in other_sw.items())
    # other languages' data (or their absence) leave sw's LoRA bit-identical
    pm2 = train_language_loras(copy.deepcopy(classifier), {"sw": _batches(1), "yo": _batches(5), "ha": _batches(6)},
                               OPT)
    for n, v in _lora(pm2, "sw").items():
        assert torch.equal(v, sw[n]), n
    pm3 = train_language_loras(copy.deepcopy(classifier), {"sw": _batches(1)}, OPT)
    for n, v in _lora(pm3, "sw").items():
        assert torch.equal(v, sw[n]), n


def test_router_phase_changes_only_the_router_and_stage3_is_seeded(classifier):
    data = {"sw": _batches(1), "yo": _batches(2, shift=30)}
    pm = train_language_loras(copy.deepcopy(classifier), data, OPT)
    snapshot = {n: p.detach().clone() for n, p in pm.named_parameters()}
    routed = train_router(pm, data, OPT)
    for n, p in pm.named_parameters():
        assert torch.equal(p, snapshot[n]), n
        assert p.grad is None, n
    with torch.random.fork_rng(devices=[]):  # the router's seeded initial value (as RoutedLoRA draws it)
        torch.manual_seed(OPT.seed)
        init = torch.nn.Linear(32, 2, bias=False)
        torch.nn.init.normal_(init.weight, std=0.02)
    assert not torch.equal(routed.router.weight, init.weight)  # the router trained
    routed.detach()

    r1, log1 = stage3(copy.deepcopy(classifier), data, OPT)
    r2, log2 = stage3(copy.deepcopy(classifier), data, OPT)
    assert torch.equal(r1.router.weight, r2.router.weight) and log1 == log2
    assert len(log1.router_losses) == OPT.router_steps
    assert all(len(v) == OPT.lora_steps for v in log1.lora_losses.values())
    for (n1, p1), (n2, p2) in zip(r1.pm[0].named_parameters(), r2.pm[0].named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    other = Stage3Options(**{**OPT.__dict__, "seed": 4})
    r3, _ = stage3(copy.deepcopy(classifier), data, other)
    assert not torch.equal(r1.router.weight, r3.router.weight)
    # the gates of a routed forward sum to 1 per example
    b = data["sw"][0]
    with torch.no_grad():
        r1.pm[0](**b)
    assert torch.allclose(r1.gates.sum(-1), torch.ones(4), atol=1e-6)


def test_bad_input(classifier):
    with pytest.raises(XltError, match=r"no batches for \['yo'\]"):
        stage3(copy.deepcopy(classifier), {"sw": _batches(1), "yo": []}, OPT)
    with pytest.raises(XltError, match="top_k = 3 with 2 languages"):
        stage3(copy.deepcopy(classifier), {"sw": _batches(1), "yo": _batches(2)},
               Stage3Options(**{**OPT.__dict__, "top_k": 3}))
    nolabels = [{k: v for k, v in b.items() if k != "labels"} for b in _batches(1)]
    with pytest.raises(XltError, match="returned no loss"):
        stage3(copy.deepcopy(classifier), {"sw": nolabels}, OPT)
