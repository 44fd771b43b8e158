"""TransliCo (xlt.tasks.translico), issue 18 item 7: TCM equals a hand-computed NT-Xent on 2 pairs of 2-d vectors
(special tokens and padding left out of the pools); a layer outside the encoder's hidden states is refused; the
tied MLM head saves and loads to the same outputs; on a toy language written in two "scripts" (a letter cipher)
MLM + TCM aligns the scripts at the TCM layer better than MLM alone."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from xlt.errors import XltError
from xlt.tasks import losses
from xlt.tasks.translico import (TiedMLMHead, TransliCoOptions, check_layer, cross_script_retrieval, mask_tokens,
                                 tcm_loss, train_translico, translico_step)

_CIPHER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "qwertyuiopasdfghjklzxcvbnm")


def test_tcm_is_hand_computed_nt_xent():
    # pooled vectors p1=(1,0), q1=(1,1), p2=(0,1), q2=(0,2); interleaved z = [p1, q1, p2, q2]
    # dots: p1q1=1 p1p2=0 p1q2=0 q1p2=1 q1q2=2 p2q2=2; each row's positive is its pair, the diagonal is masked
    e = math.exp
    rows = [-math.log(e(1) / (e(1) + e(0) + e(0))),   # p1: q1 | p2, q2
            -math.log(e(1) / (e(1) + e(1) + e(2))),   # q1: p1 | p2, q2
            -math.log(e(2) / (e(0) + e(1) + e(2))),   # p2: q2 | p1, q1
            -math.log(e(2) / (e(0) + e(2) + e(2)))]   # q2: p2 | p1, q1
    want = 0.5 * sum(rows) / 4
    # each sentence: [CLS] token(s) [SEP] pad; specials and padding hold junk that must not be pooled
    junk = 99.0
    h_orig = torch.tensor([[[junk, junk], [1.0, 0.0], [1.0, 0.0], [junk, junk]],
                           [[junk, junk], [0.0, 1.0], [junk, junk], [junk, junk]]])
    m_orig = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0]])
    h_tr = torch.tensor([[[junk, -junk], [2.0, 0.0], [0.0, 2.0], [junk, 0.0], [junk, junk]],
                         [[junk, junk], [0.0, 2.0], [junk, junk], [junk, junk], [junk, junk]]])
    m_tr = torch.tensor([[0, 1, 1, 0, 0], [0, 1, 0, 0, 0]])
    got = tcm_loss(h_orig, h_tr, m_orig, m_tr)
    assert float(got) == pytest.approx(want, abs=1e-6)
    assert float(losses.get("tcm")(h_orig, h_tr, m_orig, m_tr, tau=1.0)) == pytest.approx(want, abs=1e-6)
    # τ divides the dot products
    assert float(tcm_loss(h_orig * math.sqrt(2), h_tr * math.sqrt(2), m_orig, m_tr, tau=2.0)) == pytest.approx(want, abs=1e-5)
    with pytest.raises(XltError, match="no token to pool"):
        tcm_loss(h_orig, h_tr, torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0]]), m_tr)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A random 2-layer BERT with [MASK], a unigram tokenizer over a toy language and its ciphered 'script'."""
    from tokenizers import processors
    from transformers import BertConfig, BertModel

    from conftest import make_language, sentences
    from families import tokenizer as tiny_tokenizer

    words = [w for w in make_language(11, 150) if w.isalpha()]
    texts = [t.lower().rstrip(".") for t in sentences(5, 420, words)]
    translit = [t.translate(_CIPHER) for t in texts]
    tok = tiny_tokenizer("sp-unigram", texts + translit, vocab_size=300)
    tok.add_special_tokens({"mask_token": "<mask>"})
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.bos_token_id), ("</s>", tok.eos_token_id)])
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=96, max_position_embeddings=64, pad_token_id=tok.pad_token_id)
    return BertModel(cfg, add_pooling_layer=False).eval(), tok, texts, translit


def test_layer_out_of_range_is_refused(toy):
    model, tok, texts, translit = toy
    assert check_layer(model, 2) == 2 and check_layer(model, 0) == 0
    for bad in (3, -1, 8):
        with pytest.raises(XltError, match="out of range"):
            check_layer(model, bad)
    head = TiedMLMHead(model)
    with pytest.raises(XltError, match="TCM layer 8 is out of range"):  # the default layer on a 2-layer encoder
        translico_step(model, head, tok, texts[:2], translit[:2], TransliCoOptions(), torch.Generator())
    with pytest.raises(XltError, match="out of range"):
        train_translico(model, tok, texts[:4], translit[:4], TransliCoOptions(layer=5, steps=1))


def test_mlm_head_masking_and_save_load(toy, tmp_path):
    model, tok, texts, _ = toy
    head = TiedMLMHead(model, vocab_ids=[5, 9, 7, 5]).eval()
    assert head.vocab_ids.tolist() == [5, 7, 9]
    assert head.targets(torch.tensor([7, 8, 9])).tolist() == [1, -100, 2]
    h = torch.randn(3, 48, generator=torch.Generator().manual_seed(0))
    torch.save(head.state_dict(), tmp_path / "head.pt")
    other = TiedMLMHead(model, vocab_ids=[5, 7, 9]).eval()
    other.load_state_dict(torch.load(tmp_path / "head.pt"))
    assert torch.equal(head(h), other(h))
    x = head.norm(torch.nn.functional.gelu(head.dense(h)))
    torch.testing.assert_close(head(h)[:, 1], x @ model.get_input_embeddings().weight[7] + head.bias[1])
    ids = torch.arange(4, 104).reshape(4, 25)
    special = torch.zeros_like(ids)
    special[:, 0] = 1
    masked, labels = mask_tokens(ids, special, torch.tensor([50, 51]), 3, 0.5, torch.Generator().manual_seed(1))
    assert (labels[:, 0] == -100).all() and torch.equal(masked[:, 0], ids[:, 0])
    chosen = labels != -100
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(masked[~chosen], ids[~chosen])
    assert 0.3 < chosen.float().mean() < 0.7 and (masked[chosen] == 3).float().mean() > 0.6


def test_tcm_aligns_scripts_better_than_mlm_alone(toy):
    model, tok, texts, translit = toy
    train, test = slice(0, 300), slice(300, 420)
    res = {}
    for name, w in (("mlm", 0.0), ("mlm+tcm", 1.0)):
        m = copy.deepcopy(model)
        o = TransliCoOptions(layer=2, tcm_weight=w, steps=60, batch_size=16, lr=2e-3, max_length=32, seed=0)
        run = train_translico(m, tok, texts[train], translit[train], o)
        res[name] = cross_script_retrieval(m, tok, texts[test], translit[test], layer=2)
        if w:
            assert run["curves"]["tcm"][-1] < run["curves"]["tcm"][0]
    # measured: MLM alone ~0.03-0.04, MLM + TCM ~0.34-0.39 (120 held-out sentences, chance 1/120)
    assert res["mlm+tcm"]["orig_to_translit"] > res["mlm"]["orig_to_translit"] + 0.2, res
    assert res["mlm+tcm"]["translit_to_orig"] > res["mlm"]["translit_to_orig"] + 0.2, res
