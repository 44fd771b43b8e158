import copy

import numpy as np
import pytest
import torch

from xlt.adapt import PackedBlocks, TrainConfig, Trainer, TrainingInterrupted, embedding_parameters
from xlt.errors import XltError
from xlt.models import tiny_model


@pytest.fixture()
def blocks():
    rng = np.random.default_rng(0)
    return PackedBlocks(rng.integers(0, 64, 4000).astype(np.int32), seq_len=16, seed=3)


def _model(tied=True):
    return tiny_model("llama", vocab_size=64, hidden=32, layers=2, heads=2, tied=tied, seed=1)


CFG = dict(steps=10, stage1_steps=4, batch_size=3, grad_accum=2, seq_len=16, eval_every=3, save_every=5, seed=3)


def _eval(m, step):
    with torch.no_grad():
        return {"bits_per_byte": float(m.get_input_embeddings().weight.norm())}


def test_packed_batches_depend_only_on_seed_and_step(blocks):
    a = blocks.batch(7, 1, 2, 3)
    b = PackedBlocks(np.asarray(blocks.blocks.view(-1), dtype=np.int32), 16, seed=3).batch(7, 1, 2, 3)
    assert torch.equal(a, b) and a.shape == (3, 16)
    assert not torch.equal(a, blocks.batch(8, 1, 2, 3))
    # one epoch visits every block once
    seen = torch.stack([blocks.sample(k) for k in range(len(blocks))])
    assert torch.equal(seen.sort(0).values, blocks.blocks.sort(0).values)


@pytest.mark.parametrize("interrupt_at", [4, 7])  # at the stage boundary, and mid stage 2
def test_resume_is_exact(tmp_path, blocks, interrupt_at):
    base = _model()
    full = Trainer(copy.deepcopy(base), blocks, TrainConfig(**CFG), tmp_path / "a", eval_fn=_eval, show_progress=False)
    hist_full = full.train()
    m2 = copy.deepcopy(base)
    t = Trainer(m2, blocks, TrainConfig(**CFG), tmp_path / "b", eval_fn=_eval, show_progress=False)
    with pytest.raises(TrainingInterrupted) as e:
        t.train(interrupt_at=interrupt_at)
    assert e.value.step == interrupt_at
    # a new process: a fresh copy of the initial model, resumed from the checkpoint
    resumed = Trainer(copy.deepcopy(base), blocks, TrainConfig(**CFG), tmp_path / "b", eval_fn=_eval, show_progress=False)
    hist_resumed = resumed.train()
    assert [h["loss"] for h in hist_resumed["train"]] == [h["loss"] for h in hist_full["train"]]
    assert hist_resumed["eval"] == hist_full["eval"]
    for (n, p), (_, q) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(p, q), n


def test_stage1_trains_only_embeddings(tmp_path, blocks):
    for tied in (True, False):
        base = _model(tied)
        m = copy.deepcopy(base)
        Trainer(m, blocks, TrainConfig(**{**CFG, "steps": 3, "stage1_steps": 3}), tmp_path / f"s{tied}", show_progress=False).train()
        emb = {id(p) for p in embedding_parameters(m)}
        for (n, p), q in zip(m.named_parameters(), base.parameters()):
            assert torch.equal(p, q) != (id(p) in emb), n


def test_loss_goes_down(tmp_path):
    text = np.tile(np.arange(32, dtype=np.int32), 200)  # a trivially predictable stream
    blocks = PackedBlocks(text, 16, 0)
    t = Trainer(_model(), blocks, TrainConfig(steps=30, stage1_steps=5, batch_size=4, seq_len=16, lr=3e-3, embedding_lr=3e-3,
                                              eval_every=30, save_every=30), tmp_path, show_progress=False)
    h = t.train()
    assert h["train"][-1]["loss"] < 0.7 * h["train"][0]["loss"]


def test_bad_settings():
    with pytest.raises(XltError, match="stage1"):
        TrainConfig(steps=5, stage1_steps=9).validate()
    with pytest.raises(XltError, match="at least 1"):
        TrainConfig(steps=0).validate()
    with pytest.raises(XltError, match="fewer than one sequence"):
        PackedBlocks(np.arange(5, dtype=np.int32), 16, 0)


def test_resume_restores_every_random_generator(tmp_path, blocks):
    """Checkpoints hold torch's, numpy's and Python's generator states: draws after a resume are the draws the
    uninterrupted run made, however the process's generators were disturbed in between."""
    import random

    def draws(m, step):
        return {"bits_per_byte": 0.0, "torch": torch.rand(1).item(), "numpy": float(np.random.rand()),
                "python": random.random()}

    cfg = {**CFG, "eval_every": 1, "save_every": 2}
    full = Trainer(_model(), blocks, TrainConfig(**cfg), tmp_path / "a", eval_fn=draws, show_progress=False)
    h_full = full.train()
    t = Trainer(_model(), blocks, TrainConfig(**cfg), tmp_path / "b", eval_fn=draws, show_progress=False)
    with pytest.raises(TrainingInterrupted):
        t.train(interrupt_at=6)
    torch.manual_seed(99), np.random.seed(99), random.seed(99)  # another process, other states
    resumed = Trainer(_model(), blocks, TrainConfig(**cfg), tmp_path / "b", eval_fn=draws, show_progress=False)
    assert resumed.train()["eval"] == h_full["eval"]
    ckpt = resumed.latest_checkpoint()
    assert ckpt is not None and {"cpu", "numpy", "python"} <= set(torch.load(ckpt / "optimizer.pt", weights_only=True)["rng"])
