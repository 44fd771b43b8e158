"""The contract every registered adaptation method keeps, on tiny models of every supported family (peft's shared
tester is the model): a method or a family added later is tested here without new test code.

- ``prepare`` leaves the logits unchanged, bit for bit, where the method says so (:meth:`Method.preserves_outputs`);
- the saved folder loads back (:func:`load_adapted`) to the same logits, after a vocabulary change and training;
- a run interrupted in stage 2 and resumed in a fresh process ends with the same weights and losses as one that
  was not interrupted;
- a method that cannot adapt a family refuses it at ``prepare`` with one :class:`XltError` that says how to fix it;
  every method works on the Llama-like families.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from families import MODEL_CASES
from xlt import arch
from xlt.adapt import PackedBlocks, TrainConfig, TrainingInterrupted
from xlt.adapt.methods import ADAPTATIONS, fingerprint, get_method, load_adapted
from xlt.errors import XltError
from xlt.models import tiny_model

VOCAB, NEW_VOCAB = 64, 72
MUST_WORK = {"llama", "gemma3", "qwen2"}
CFG = dict(steps=4, stage1_steps=1, batch_size=2, seq_len=16, eval_every=4, save_every=4, seed=3, lr=1e-2,
           embedding_lr=1e-2)
IDS = torch.randint(0, NEW_VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))


def _base(family: str, tied: bool):
    return tiny_model(family, vocab_size=VOCAB, hidden=32, layers=2, heads=4, tied=tied, seed=1, bos_token_id=1,
                      eos_token_id=2, pad_token_id=0)


def _transferred(base):
    """The base with a new, larger vocabulary (as after a vocabulary transfer), rows seeded."""
    m = copy.deepcopy(base)
    arch.resize_vocabulary(m, NEW_VOCAB)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in arch.embedding_parameters(m):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return m


def _logits(m, ids=IDS):
    with torch.no_grad():
        return m(input_ids=ids).logits


@pytest.fixture(scope="module")
def blocks():
    return PackedBlocks(np.random.default_rng(0).integers(0, NEW_VOCAB, 2000).astype(np.int32), seq_len=16, seed=3)


def _prepare(name, model):
    """The prepared model, or None when the method refuses the family (with a fix, and never a Llama-like one)."""
    method = get_method(name)
    try:
        return method, method.prepare(model)
    except XltError as e:
        family = arch.of(model).family
        assert family not in MUST_WORK, f"{name} refuses {family}: {e}"
        assert e.fix, f"{name} refused {family} without saying how to fix it"
        return method, None


def _train(name, base_t, blocks, work, interrupt_at=None):
    method, model = _prepare(name, copy.deepcopy(base_t))
    return method, method.train(model, blocks, TrainConfig(**CFG), work, None, False, name, interrupt_at)


CASES = [pytest.param(name, family, tied, id=f"{name}-{family}-{'tied' if tied else 'untied'}")
         for name in ADAPTATIONS.names() for family, tied in MODEL_CASES]


@pytest.mark.parametrize("name,family,tied", CASES)
def test_adaptation_contract(name, family, tied, blocks, tmp_path):
    base = _base(family, tied)
    base.save_pretrained(tmp_path / "base")
    base_t = _transferred(base)
    ref = _logits(base_t)
    method, prepared = _prepare(name, copy.deepcopy(base_t))
    if prepared is None:
        return
    if method.preserves_outputs():
        assert torch.equal(_logits(prepared), ref), f"{name} changed the logits at prepare"
    start = {k: v.clone() for k, v in prepared.state_dict().items()}

    # uninterrupted, then interrupted in stage 2 and resumed from the checkpoint with fresh objects
    method, (model, history) = _train(name, base_t, blocks, tmp_path / "a")
    with pytest.raises(TrainingInterrupted):
        _train(name, base_t, blocks, tmp_path / "b", interrupt_at=CFG["steps"] - 1)
    _, (resumed, history_r) = _train(name, base_t, blocks, tmp_path / "b")
    assert [h["loss"] for h in history_r["train"]] == [h["loss"] for h in history["train"]]
    sd, sd_r = model.state_dict(), resumed.state_dict()
    assert sd.keys() == sd_r.keys()
    for k in sd:
        assert torch.equal(sd[k], sd_r[k]), f"{name}: {k} differs after resume"
    assert any(not torch.equal(sd[k], start[k]) for k in sd if k in start), f"{name} trained nothing"

    # save -> load gives the same logits, on the base the folder names (checked by fingerprint)
    model.eval()
    out = _logits(model)
    method.save(model, tmp_path / "saved", str(tmp_path / "base"), None if method.whole_model else fingerprint(base))
    back = load_adapted(tmp_path / "saved")
    assert torch.equal(_logits(back), out), f"{name}: the saved folder loads to other logits"


def test_every_method_is_registered_with_options_and_a_description():
    for name in ADAPTATIONS.names():
        cls = ADAPTATIONS.get(name)
        assert cls.description and cls.name == name
        get_method(name)  # the declared defaults are valid
