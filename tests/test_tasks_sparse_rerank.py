"""SparseDelta and LT-SFT on BERT encoders, and the sparse-delta reranker (xlt.tasks.sparse_rerank) on a tiny random
BERT: exactly k entries, nothing outside the mask moves, θ₀ restored bit for bit, the paper's compositions
θ₀ + φ_L + φ_rank (qlang/dlang) and θ₀ + φ_Lq + φ_Ld + φ_rank (both) against dense weights, split refused, the ranking
delta trained on top of θ₀ + φ_en, save/load, `load_reranker` of either kind, `xlt retrieve eval --rerank`."""

from __future__ import annotations

import copy

import pytest
import torch

from xlt.adapt.methods.base import fingerprint
from xlt.adapt.methods.sparse import SparseDelta, _named_body, compose, lt_sft
from xlt.errors import XltError
from xlt.tasks.rerank import load_reranker, pointwise_examples
from xlt.tasks.sparse_rerank import (SparseDeltaReranker, SparseRerankerOptions, train_language_sft,
                                     train_ranking_sft)

from tiny_bert import texts, tiny_bert, word_tokenizer

torch.set_num_threads(1)

OPTS = SparseRerankerOptions(query_length=8, max_length=24)
Q, D = texts(10, 5), texts(11, 5)


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


def _body(bert) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in bert.named_parameters()}


def _random_delta(bert, k: int, seed: int) -> SparseDelta:
    """k random entries of the body with N(0, 0.5²) values."""
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(p.shape, generator=g) for n, p in _named_body(bert).items()}
    from xlt.adapt.methods.sparse import topk_indices

    idx = topk_indices(scores, k)
    return SparseDelta(idx, {n: torch.randn(len(i), generator=g) * 0.5 for n, i in idx.items()},
                       {n: tuple(_named_body(bert)[n].shape) for n in idx}, fingerprint(bert))


def _dense_logits(rr, deltas, queries, docs):
    """The head on a copy of the encoder whose weights are θ₀ + Σ dense(φ), summed in float64."""
    bert = copy.deepcopy(rr.bert)
    with torch.no_grad():
        body = _named_body(bert)
        for n, p in body.items():
            acc = p.detach().double().clone()
            for d in deltas:
                if n in d.indices:
                    acc += d.dense()[n].double()
            p.copy_(acc.float())
    ids, att, types, _ = rr.tokenize(queries, docs)
    with torch.no_grad():
        h = bert(input_ids=ids, attention_mask=att, token_type_ids=types).last_hidden_state
        return rr.head(h[:, 0]).squeeze(-1)


@pytest.fixture
def rr(tok):
    r = SparseDeltaReranker(tiny_bert(tok), tok, OPTS, seed=3).eval()
    r.add_language("en", _random_delta(r.bert, 300, 1))
    r.add_language("fr", _random_delta(r.bert, 300, 2))
    r.set_rank_delta(_random_delta(r.bert, 500, 4))
    return r


def test_sparse_delta_applies_and_reverts_bit_identically_on_bert(tok):
    bert = tiny_bert(tok)
    before = _body(bert)
    d = _random_delta(bert, 400, 0)
    saved = d.apply(bert)
    changed = sum(int((p != before[n]).sum()) for n, p in bert.named_parameters())
    assert 0 < changed <= 400
    d.revert(bert, saved)
    assert all(torch.equal(p, before[n]) for n, p in bert.named_parameters())


def test_lt_sft_on_bert_keeps_exactly_k_entries_and_restores_theta0(tok):
    """LT-SFT of masked LM on a BERT (train_language_sft): exactly k entries in the delta, the body left exactly at
    θ₀, embeddings never in the delta, same seed → the same delta, another seed → another."""
    def run(seed):
        r = SparseDeltaReranker(tiny_bert(tok), tok, OPTS)
        before = _body(r.bert)
        rec = train_language_sft(r, texts(0, 40), "sw", k=250, full_steps=3, sparse_steps=3, batch_size=4, lr=1e-2,
                                 seed=seed)
        assert all(torch.equal(p, before[n]) for n, p in r.bert.named_parameters())
        assert all(not p.requires_grad for p in r.bert.parameters())
        return r.language_deltas["swh"], rec

    d, rec = run(0)
    assert d.nnz == rec["nnz"] == 250 and len(rec["losses_full"]) == len(rec["losses_sparse"]) == 3
    assert "embeddings.word_embeddings.weight" not in d.indices
    assert all(bool((v != 0).any()) for v in d.values.values())
    assert run(0)[0].digest() == d.digest()
    assert run(1)[0].digest() != d.digest()


def test_lt_sft_moves_nothing_outside_its_mask_during_the_sparse_phase(tok):
    """The sparse phase's weights (captured at its last step) differ from θ₀ only at the delta's indices, and the
    delta is exactly their difference there."""
    bert = tiny_bert(tok)
    theta0 = {n: p.detach().clone() for n, p in _named_body(bert).items()}
    seen = {}
    x = torch.randint(5, 60, (4, 7), generator=torch.Generator().manual_seed(0))

    def loss_at(step):
        if step == 5:  # the last sparse step: the weights after two masked updates
            seen.update({n: p.detach().clone() for n, p in _named_body(bert).items()})
        return bert(input_ids=x).last_hidden_state.pow(2).mean()

    delta, _ = lt_sft(_named_body(bert), loss_at, k=100, full_steps=3, sparse_steps=3, lr=1e-2)
    for n, w in seen.items():
        moved = (w != theta0[n]).reshape(-1)
        inside = torch.zeros_like(moved)
        if n in delta.indices:
            inside[delta.indices[n]] = True
        assert not (moved & ~inside).any(), n
    with pytest.raises(XltError, match="full and a sparse phase"):
        lt_sft(_named_body(bert), loss_at, k=10, full_steps=0, sparse_steps=3)


def test_compositions_are_theta0_plus_the_modes_deltas(rr):
    t = rr.tokenize(Q, D)
    en, fr, rank = rr.language_deltas["eng"], rr.language_deltas["fra"], rr.rank_delta
    with torch.no_grad():
        cases = {"qlang": [fr, rank], "dlang": [en, rank], "both": [fr, en, rank]}
        for mode, parts in cases.items():
            got = rr(*t, "fr", "en", mode)
            assert (got - _dense_logits(rr, parts, Q, D)).abs().max() < 1e-5, mode
        # both with one language = qlang; the composition is one delta on the union of the indices
        assert torch.equal(rr(*t, "en", "en", "both"), rr(*t, "en", "en", "qlang"))
        assert rr.composition("fr", "en", "both").digest() == compose([fr, en, rank]).digest()


def test_scoring_leaves_the_encoder_bit_identical_and_empty_deltas_are_theta0(rr, tok):
    before = _body(rr.bert)
    rr.score(Q, D, "fr", "en", mode="both")
    assert all(torch.equal(p, before[n]) for n, p in rr.bert.named_parameters())
    plain = SparseDeltaReranker(tiny_bert(tok), tok, OPTS, seed=3).eval()
    plain.add_language("en")  # no language delta: θ₀
    ids, att, types, _ = plain.tokenize(Q, D)
    with torch.no_grad():
        ref = plain.head(plain.bert(input_ids=ids, attention_mask=att,
                                    token_type_ids=types).last_hidden_state[:, 0]).squeeze(-1)
    assert torch.equal(plain.score(Q, D, "en"), ref)


def test_split_and_unknown_modes_and_languages_are_refused(rr, tok):
    with pytest.raises(XltError, match="per-token") as e:
        rr.score(Q, D, "en", "fr", mode="split")
    assert "qlang, dlang, both" in e.value.fix
    with pytest.raises(XltError, match="unknown cross-lingual mode"):
        rr.check_mode("sideways")
    with pytest.raises(XltError, match="no language delta") as e:
        rr.score(Q, D, "en", "de")
    assert "eng, fra" in str(e.value.problem)
    other = tiny_bert(tok, seed=9)
    with pytest.raises(XltError, match="another encoder"):
        rr.add_language("de", _random_delta(other, 10, 0))
    with pytest.raises(XltError, match="BERT-style"):
        SparseDeltaReranker(torch.nn.Linear(2, 2), tok)


def test_ranking_delta_trains_on_top_of_the_language_delta(tok, monkeypatch):
    """train_ranking_sft: LT-SFT starts from θ₀ + φ_en (the weights it sees), θ₀ is restored after, the head trains,
    BCE falls on a learnable toy task (same document as query vs another), deterministic."""
    import xlt.tasks.sparse_rerank as sr

    starts = []

    def spy(params, *a, **kw):
        starts.append({n: p.detach().clone() for n, p in params.items()})
        return lt_sft(params, *a, **kw)

    monkeypatch.setattr(sr, "lt_sft", spy)

    def run():
        r = SparseDeltaReranker(tiny_bert(tok), tok, OPTS, seed=3).eval()
        r.add_language("en", _random_delta(r.bert, 300, 1))
        before, head0 = _body(r.bert), copy.deepcopy(r.head.state_dict())
        docs = texts(30, 32)
        ex = pointwise_examples([(d, d, docs[(i + 7) % len(docs)]) for i, d in enumerate(docs)])
        rec = train_ranking_sft(r, ex, "en", k=400, full_steps=12, sparse_steps=12, batch_size=8, lr=3e-3,
                                head_lr=3e-2, seed=0)
        assert all(torch.equal(p, before[n]) for n, p in r.bert.named_parameters())
        assert not torch.equal(r.head.weight, head0["weight"])
        return r, rec

    r, rec = run()
    expected = copy.deepcopy(r.bert)
    r.language_deltas["eng"].apply(expected)
    assert all(torch.equal(starts[0][n], p) for n, p in _named_body(expected).items())
    assert not all(torch.equal(starts[0][n], p) for n, p in _named_body(r.bert).items())
    assert r.rank_delta.nnz == 400
    assert sum(rec["losses_sparse"][-4:]) / 4 < sum(rec["losses_full"][:4]) / 4
    r2, rec2 = run()
    assert r2.rank_delta.digest() == r.rank_delta.digest() and rec2["losses_sparse"] == rec["losses_sparse"]
    assert r.score(Q, D, "en").shape == (5,)


def test_save_load_same_scores_and_a_changed_encoder_is_refused(rr, tmp_path):
    rr.save(tmp_path / "sr")
    back = load_reranker(tmp_path / "sr")
    assert isinstance(back, SparseDeltaReranker) and back.languages == ["eng", "fra"]
    for mode in ("qlang", "dlang", "both"):
        assert torch.equal(back.score(Q, D, "fr", "en", mode), rr.score(Q, D, "fr", "en", mode))
    from safetensors.torch import load_file, save_file

    f = next((tmp_path / "sr" / "encoder").glob("*.safetensors"))
    sd = load_file(str(f))
    k = next(n for n in sd if "layer.0" in n and n.endswith("weight"))
    sd[k] = sd[k] + 1
    save_file(sd, str(f), metadata={"format": "pt"})
    with pytest.raises(XltError, match="does not hold the weights"):
        SparseDeltaReranker.load(tmp_path / "sr")
    with pytest.raises(XltError, match="holds no reranker"):
        load_reranker(tmp_path)
    (tmp_path / "sr" / "sparse_reranker.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(XltError, match="not readable JSON"):
        load_reranker(tmp_path / "sr")


def test_retrieve_eval_with_a_sparse_reranker(tok, tmp_path, monkeypatch):
    """`xlt retrieve eval --rerank` with a sparse reranker: an "adapter+rerank" row over the same candidate set;
    split is refused before anything is written."""
    import xlt.tasks.colbert_xm as cx
    from xlt.tasks.colbert_xm import ColbertXMOptions, LanguageModularEncoder

    docs = texts(20, 12)
    queries = [d.split(" ", 1)[-1] or d for d in docs[:6]]
    monkeypatch.setattr(cx, "bible_eval_set", lambda pair, split, n_docs, n_queries, seed: (
        queries, list(range(6)), docs, [f"d{i}" for i in range(len(docs))]))
    enc = LanguageModularEncoder(tiny_bert(tok), tok, ["en", "fr"], ColbertXMOptions(dim=16, reduction=4,
                                                                                     query_length=8, doc_length=20))
    enc.save(tmp_path / "run" / "encoder")
    r = SparseDeltaReranker(tiny_bert(tok), tok, OPTS, seed=3).eval()
    r.add_language("en", _random_delta(r.bert, 300, 1))
    r.add_language("fr", _random_delta(r.bert, 300, 2))
    r.set_rank_delta(_random_delta(r.bert, 500, 4))
    r.save(tmp_path / "rank")
    loaded = load_reranker(tmp_path / "rank")
    with pytest.raises(XltError, match="per-token"):
        cx.run_eval(tmp_path / "run", ["en-fr"], n_docs=12, reranker=loaded, rerank_mode="split")
    assert not (tmp_path / "run" / "eval-test").exists()
    m = cx.run_eval(tmp_path / "run", ["en-fr"], n_docs=12, reranker=loaded, rerank_mode="both")
    res = m["results"]["en-fr"]
    assert res["adapter+rerank"]["recall@100"] == res["adapter"]["recall@100"] == 1.0
    assert m["settings"]["rerank_mode"] == "both"


def test_retrieve_rerank_trains_either_kind_for_eval(tok, tmp_path, monkeypatch):
    """`xlt retrieve rerank RUN --kind adapter|sparse`: a reranker folder that `load_reranker` opens, with
    metrics.json and report.html; bad kind, an existing --out and a language the run has no adapter for are refused
    before anything is written."""
    import json

    import xlt.corpora
    import xlt.tasks.colbert_xm as cx
    from xlt.tasks.colbert_xm import ColbertXMOptions, LanguageModularEncoder
    from xlt.tasks.rerank import CrossEncoderReranker
    from xlt.tasks.sparse_rerank import run_rerank

    docs = texts(40, 12)
    monkeypatch.setattr(cx, "bible_triples", lambda n=None, seed=0: [(d, d, docs[(i + 3) % 12])
                                                                     for i, d in enumerate(docs)])

    class _Bible:
        def texts(self, lang, split):
            return texts(50 + len(lang), 20)

    monkeypatch.setattr(xlt.corpora, "open_corpus", lambda name: _Bible())
    enc = LanguageModularEncoder(tiny_bert(tok), tok, ["en", "fr"], ColbertXMOptions(dim=16, reduction=4,
                                                                                     query_length=8, doc_length=20))
    enc.save(tmp_path / "run" / "encoder")
    m = run_rerank(tmp_path / "run", tmp_path / "ra", "adapter", ["en", "fr"], steps=2, batch_size=4)
    assert isinstance(load_reranker(tmp_path / "ra"), CrossEncoderReranker)
    assert m["settings"]["languages"] == ["eng", "fra"] and len(m["training"]["losses"]) == 2
    m = run_rerank(tmp_path / "run", tmp_path / "rs", "sparse", ["fr"], steps=4, batch_size=4, density=0.01,
                   lang_steps=1)
    back = load_reranker(tmp_path / "rs")
    assert isinstance(back, SparseDeltaReranker) and back.languages == ["eng", "fra"]
    assert back.rank_delta.nnz == m["training"]["nnz"] > 0 and len(m["language_deltas"]) == 2
    assert json.loads((tmp_path / "rs" / "metrics.json").read_text())["signature"].startswith("rerank-sparse")
    assert (tmp_path / "rs" / "report.html").is_file()
    for kw, match in (({"kind": "dense"}, "unknown reranker kind"), ({"out": tmp_path / "ra"}, "exists"),
                      ({"langs": ["de"]}, "no adapter for deu")):
        args = {"run": tmp_path / "run", "out": tmp_path / "new", "kind": "adapter", "langs": ["en"], "steps": 2,
                **kw}
        with pytest.raises(XltError, match=match):
            run_rerank(**args)
        assert not (tmp_path / "new").exists()
