"""Sparse fine-tuning (LT-SFT): exact k, exact apply/revert, order-independent composition, masked AdamW."""

import copy

import numpy as np
import pytest
import torch

from xlt.adapt import PackedBlocks, TrainConfig, Trainer
from xlt.adapt.methods import fingerprint, get_method, load_adapted
from xlt.adapt.methods.sparse import MaskedTraining, SparseDelta, compose, topk_indices
from xlt.errors import XltError
from xlt.models import tiny_model


def _model(seed=1):
    return tiny_model("llama", vocab_size=64, hidden=32, layers=2, heads=2, seed=seed)


def _random_delta(model, k, seed):
    g = torch.Generator().manual_seed(seed)
    body = {n: p for n, p in model.named_parameters() if "embed" not in n}
    scores = {n: torch.rand(p.shape, generator=g) for n, p in body.items()}
    idx = topk_indices(scores, k)
    return SparseDelta(idx, {n: torch.randn(len(i), generator=g) * 1e-2 for n, i in idx.items()},
                       {n: tuple(body[n].shape) for n in idx})


def test_topk_is_exact_with_ties():
    s = {"a": torch.tensor([3.0, 1.0, 2.0, 2.0]), "b": torch.tensor([[2.0, 5.0], [0.0, 2.0]])}
    got = topk_indices(s, 4)  # 5, 3, then two of the four 2.0 ties: by name, then index
    assert {n: i.tolist() for n, i in got.items()} == {"a": [0, 2, 3], "b": [1]}
    assert sum(len(i) for i in topk_indices(s, 8).values()) == 8
    with pytest.raises(XltError, match="k = 9 entries asked for, but the selectable parameters have 8 entries"):
        topk_indices(s, 9)


def test_apply_revert_is_bit_identical_and_save_load():
    m = _model()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    d = _random_delta(m, 500, 0)
    assert d.nnz == 500
    saved = d.apply(m)
    changed = sum(int((p != before[n]).sum()) for n, p in m.named_parameters())
    assert 0 < changed <= 500
    for n, i in d.indices.items():  # θ₀[idx] + v at the indices
        p = dict(m.named_parameters())[n]
        assert torch.equal(p.detach().reshape(-1)[i], before[n].reshape(-1)[i] + d.values[n])
    d.revert(m, saved)
    for n, p in m.named_parameters():
        assert p.detach().numpy().tobytes() == before[n].numpy().tobytes(), n


def test_composition_is_order_independent_and_additive(tmp_path):
    m = _model()
    a, b, c = (_random_delta(m, 400, s) for s in (1, 2, 3))
    abc, cab, bca = compose([a, b, c]), compose([c, a, b]), compose([b, c, a])
    for x in (cab, bca):
        assert x.indices.keys() == abc.indices.keys()
        for n in abc.indices:
            assert torch.equal(x.indices[n], abc.indices[n]) and torch.equal(x.values[n], abc.values[n])
    dense = {n: sum(d.dense()[n].double() for d in (a, b, c) if n in d.indices) for n in abc.indices}
    for n, t in abc.dense().items():
        assert torch.allclose(t.double(), dense[n], atol=1e-7)
    assert abc.nnz == len({(n, int(i)) for d in (a, b, c) for n, ii in d.indices.items() for i in ii})
    abc.save(tmp_path / "d.safetensors")
    back = SparseDelta.load(tmp_path / "d.safetensors")
    assert back.digest() == abc.digest() and back.shapes == abc.shapes
    # merge-engine interop: a dense task vector and back
    again = SparseDelta.from_dense(abc.dense(), abc.nnz)
    assert sum(len(i) for i in again.indices.values()) == abc.nnz
    a.base_fingerprint, b.base_fingerprint = "x" * 64, "y" * 64
    with pytest.raises(XltError, match="different base models"):
        compose([a, b])


@pytest.mark.parametrize("masked_optimizer", [True, False])
def test_entries_outside_the_mask_do_not_move_under_adamw_with_weight_decay(tmp_path, masked_optimizer):
    blocks = PackedBlocks(np.random.default_rng(0).integers(0, 64, 2000).astype(np.int32), seq_len=16, seed=0)
    m = _model()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    idx = topk_indices({n: torch.rand(p.shape, generator=torch.Generator().manual_seed(5))
                        for n, p in m.named_parameters() if "embed" not in n}, 300)
    hooks = MaskedTraining(m, idx)
    if not masked_optimizer:  # plain AdamW with the same gradient masks: its weight decay moves everything
        hooks.make_optimizer = lambda groups, **kw: torch.optim.AdamW(groups, **kw)
    cfg = TrainConfig(steps=4, stage1_steps=0, batch_size=2, seq_len=16, lr=1e-2, weight_decay=0.1, eval_every=10,
                      save_every=10)
    Trainer(m, blocks, cfg, tmp_path, show_progress=False, method=hooks).train()
    hooks.remove()
    inside = outside_moved = 0
    for n, p in m.named_parameters():
        moved = (p.detach() != before[n]).reshape(-1)
        mask = torch.zeros_like(moved)
        if n in idx:
            mask[idx[n]] = True
            inside += int(moved[mask].sum())
        outside_moved += int(moved[~mask].sum())
    assert inside > 250  # the selected entries train
    if masked_optimizer:
        assert outside_moved == 0
    else:
        assert outside_moved > 1000


def test_lt_sft_selects_exactly_k_and_loads_back(tmp_path):
    blocks = PackedBlocks(np.random.default_rng(1).integers(0, 64, 3000).astype(np.int32), seq_len=16, seed=0)
    src = _model()
    src.save_pretrained(tmp_path / "src")
    meth = get_method("sft", {"k": 700})
    m = copy.deepcopy(src)
    cfg = TrainConfig(steps=6, stage1_steps=2, batch_size=2, seq_len=16, lr=1e-2, eval_every=2, save_every=10)
    out, hist = meth.train(m, blocks, cfg, tmp_path / "w", None, False, "sft", None)
    assert meth.delta.nnz == 700 == meth.trainable_parameters(out)
    assert [h["step"] for h in hist["train"]] == [1, 2, 3, 4, 5, 6]
    assert [h["phase"] for h in hist["train"]] == ["stage1"] * 2 + ["full"] * 2 + ["sparse"] * 2
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = out(input_ids=ids).logits
    meth.save(out, tmp_path / "f", str(tmp_path / "src"), fingerprint(src))
    back = load_adapted(tmp_path / "f")
    with torch.no_grad():
        assert torch.equal(back(input_ids=ids).logits, ref)
    # interrupted in the sparse phase and resumed (a fresh model, as a new process would have): the same delta
    from xlt.adapt import TrainingInterrupted

    m2 = get_method("sft", {"k": 700})
    with pytest.raises(TrainingInterrupted):
        m2.train(copy.deepcopy(src), blocks, cfg, tmp_path / "w2", None, False, "sft", 5)
    m3 = get_method("sft", {"k": 700})
    _, hist3 = m3.train(copy.deepcopy(src), blocks, cfg, tmp_path / "w2", None, False, "sft", None)
    assert m3.delta.digest() == meth.delta.digest()
    assert [h["loss"] for h in hist3["train"]] == [h["loss"] for h in hist["train"]]
    with pytest.raises(XltError, match="is larger than the"):
        get_method("sft", {"k": 10**9}).k_for(src)
    with pytest.raises(XltError, match="density"):
        get_method("sft", {"density": 1.5})
