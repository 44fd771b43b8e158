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


def test_the_grid_in_one_command_gives_bits_per_byte_against_trainable_parameters(tmp_path, monkeypatch, capsys,
                                                                                   tiny_source_dir, parallel_jsonl):
    import json
    import sys

    from xlt.cli.main import main

    out = tmp_path / "grid"
    monkeypatch.setattr(sys, "argv", ["xlt", "adapt", "--source", str(tiny_source_dir), "--corpus", str(parallel_jsonl),
                                      "--init", "overlap", "--method", ",".join(GRID), "-M", "size=4", "--steps", "3",
                                      "--stage1-steps", "1", "--vocab-size", "350", "--batch-size", "2", "--seq-len", "16",
                                      "--eval-max-bytes", "2000", "--samples", "1", "--loo-tokens", "0", "--no-progress",
                                      "--out", str(out)])
    with pytest.raises(SystemExit) as e:
        main()
    logged = capsys.readouterr().err
    assert e.value.code == 0, logged
    for name in GRID:  # the log names each run (its [label] is not eaten as console markup)
        assert f"[overlap+{name}]" in logged
    summ = json.loads((out / "metrics.json").read_text())["summary"]
    assert set(summ) == {f"overlap+{n}" for n in GRID}
    n = {k.split("+")[1]: r["trainable_parameters_stage2"] for k, r in summ.items()}
    # tiny model: 2 layers, d = 64, 4 heads (full-size k/v), FFN 128; size 4 everywhere
    adapter = 2 * (64 * 4 + 4 + 4 * 64 + 64)
    assert n["prefix"] == 4 * 2 * 2 * 64
    assert n["lora-attn"] == 2 * 2 * 4 * (64 + 64)
    assert n["lora-ffn"] == 2 * 4 * ((64 + 128) + (128 + 64))
    assert {n[k] for k in GRID if "adapter" in k} == {adapter}
    for r in summ.values():
        assert r["bpb_final"] > 0 and r["test_bpb_final"] > 0 and r["model_parameters"] > r["trainable_parameters_stage2"]
    html = (out / "report.html").read_text()
    assert "Adaptation methods" in html and "% of model parameters" in html
    assert 'alt="bits per byte at the end against parameters trained in stage 2" src="data:image/png;base64,' in html
    for name in GRID:
        assert f"<td>overlap+{name}</td>" in html
    for k in ("overlap+seq-adapter-ffn", "overlap+prefix"):  # every folder loads back as it was evaluated
        from transformers import AutoTokenizer

        from xlt.corpora import open_corpus
        from xlt.eval import bits_per_byte, truncate_texts
        from xlt.languages import resolve

        test = truncate_texts(open_corpus(str(parallel_jsonl)).texts(resolve("sw"), "test"), 2000)
        model, tok = load_adapted(out / k), AutoTokenizer.from_pretrained(out / k)
        assert bits_per_byte(model, tok, test, 512).bits_per_byte == summ[k]["test_bpb_final"], k


def test_prefix_from_tokens_is_the_model_reading_those_tokens_first():
    from xlt.adapt.methods.unified import init_prefix_from_tokens

    m = tiny_model("llama", vocab_size=64, hidden=32, layers=2, heads=4, seed=1)
    m.config.num_key_value_heads = 2  # grouped-query attention, as in SmolLM2
    m = type(m)(m.config).eval()
    pre = torch.randint(0, 64, (5,), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        read_first = m(input_ids=torch.cat([pre.expand(2, -1), IDS], 1)).logits[:, 5:]
    meth = get_method("prefix", {"size": 5})
    pm = meth.prepare(copy.deepcopy(m))
    assert meth.trainable_parameters(pm) == 5 * 2 * 2 * 2 * 8  # tokens x layers x (k, v) x kv heads x head dim
    assert not torch.allclose(_logits(pm), read_first, atol=1e-3)  # PEFT's random prefix
    init_prefix_from_tokens(pm, pre)
    assert torch.allclose(_logits(pm), read_first, atol=1e-5)
    with pytest.raises(XltError, match="4 tokens given for 5 prefix vectors"):
        init_prefix_from_tokens(pm, pre[:4])
    with pytest.raises(XltError, match="option prefix_init must be one of tokens, random, got 'zeros'"):
        get_method("prefix", {"prefix_init": "zeros"})


def test_prefix_training_starts_from_the_first_training_tokens(tmp_path):
    import numpy as np

    from xlt.adapt import PackedBlocks, TrainConfig
    from xlt.adapt.methods.unified import init_prefix_from_tokens

    blocks = PackedBlocks(np.random.default_rng(0).integers(0, 64, 2000).astype(np.int32), seq_len=16, seed=3)
    src = _model()
    # stage 1 only (embeddings): the prefix stays where the method put it before training
    cfg = TrainConfig(steps=1, stage1_steps=1, batch_size=2, seq_len=16, eval_every=1, save_every=1, seed=0)
    for init, expect_tokens in (("tokens", True), ("random", False)):
        meth = get_method("prefix", {"size": 4, "prefix_init": init})
        pm = meth.prepare(copy.deepcopy(src))
        ref = meth.prepare(copy.deepcopy(src))
        init_prefix_from_tokens(ref, blocks.sample(0)[:4])
        trained, _ = meth.train(pm, blocks, cfg, tmp_path / init, None, False, init, None)
        w, w_ref = (x.prompt_encoder["default"].embedding.weight for x in (trained, ref))
        assert torch.equal(w, w_ref) == expect_tokens, init
