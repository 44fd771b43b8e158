"""WECHSEL and FOCUS maths on tiny inputs (vectors given, so no fastText training needed)."""

import copy

import numpy as np
import pytest
import torch

from conftest import byte_bpe_tokenizer
from xlt.errors import XltError
from xlt.models import tiny_model
from xlt.vocab import TransferContext, mix_rows, transfer_model
from xlt.vocab.neighbours import normalise_rows, procrustes, softmax_weights, sparsemax, topk_cosine
from xlt.vocab.similarity import align_spaces, decoded_tokens, focus_mapping, wechsel_mapping
from xlt.vocab.wordvec import FastTextConfig, WordVectors, check_same_dim, load_word_vectors, train_fasttext


def test_procrustes_recovers_a_planted_rotation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16))
    r, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    np.testing.assert_allclose(procrustes(x, x @ r), r, atol=1e-5)


def test_sparsemax_known_values_and_one_hot():
    p = sparsemax(torch.tensor([[1.0, 0.5, 0.0], [3.0, 1.0, 0.0], [0.2, 0.2, 0.2]]))
    torch.testing.assert_close(p, torch.tensor([[0.75, 0.25, 0.0], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]]))
    z = torch.randn(50, 30)
    z[:, 0] = z.max(1).values + 1.01  # one similarity dominates by more than 1: exactly one-hot
    q = sparsemax(z)
    assert torch.equal(q[:, 0], torch.ones(50)) and q[:, 1:].abs().sum() == 0
    z[:, 0] = z[:, 1:].max(1).values + 1.0  # the boundary case: one-hot up to round-off
    torch.testing.assert_close(sparsemax(z)[:, 0], torch.ones(50), atol=1e-6, rtol=0)
    torch.testing.assert_close(sparsemax(torch.randn(20, 40)).sum(1), torch.ones(20))


def test_topk_cosine_matches_brute_force_in_chunks():
    rng = np.random.default_rng(1)
    q, k = normalise_rows(rng.normal(size=(100, 8))), normalise_rows(rng.normal(size=(300, 8)))
    sims, idx = topk_cosine(q, k, 5, chunk=7)
    full = q @ k.T
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :5])
    np.testing.assert_allclose(sims, np.take_along_axis(full, idx, 1), atol=1e-5)


def _float64_topk_ok(q, keys, sims, idx, k):
    """Every returned key is a float64 top-k key of its query, scores are its float64 scores, best first."""
    full = np.asarray(q, np.float64) @ np.asarray(keys, np.float64).T
    kth = -np.sort(-full, axis=1)[:, k - 1]
    got = np.take_along_axis(full, idx, 1)
    bad = np.flatnonzero((got < kth[:, None] - 1e-12).any(1))
    assert not len(bad), f"rows {bad.tolist()}: a returned key is not among the float64 top-k ({(kth[bad, None] - got[bad]).max()})"
    assert all(len(set(r)) == k for r in idx.tolist()), "a key returned twice"
    np.testing.assert_allclose(sims, got, rtol=0, atol=1e-6)
    assert (np.diff(got, axis=1) <= 1e-12).all()


def test_topk_cosine_duplicate_keys_and_near_ties_give_the_float64_top_k():
    """Duplicated key rows are searched once but each copy counts; ties are ordered by key index; and keys
    closer than float32 can tell apart are still ranked as float64 ranks them (the certificate re-searches)."""
    rng = np.random.default_rng(3)
    base = normalise_rows(rng.normal(size=(400, 32)), dtype=np.float64)
    keys = np.concatenate([base, base[:50], np.zeros((30, 32))])  # 50 duplicates, 30 zero rows
    # near-ties: copies of one key nudged by ~1e-9 (invisible in float32)
    nudged = base[7] + rng.normal(size=(40, 32)) * 1e-9
    keys = np.concatenate([keys, normalise_rows(nudged, dtype=np.float64)])
    q = np.concatenate([normalise_rows(rng.normal(size=(60, 32)), dtype=np.float64), base[[7, 8, 9, 8]]])
    sims, idx = topk_cosine(q, keys, 12, chunk=16, dtype=np.float64)
    _float64_topk_ok(q, keys, sims, idx, 12)
    assert np.array_equal(idx[61], idx[63]) and np.array_equal(sims[61], sims[63])  # a repeated query
    # a duplicated key and its copy come out together, lower index first
    dup_q = base[3:4]
    _, i = topk_cosine(dup_q, keys, 2, dtype=np.float64)
    assert i[0].tolist() == [3, 400 + 3]
    # more neighbours than distinct keys: every key, zero rows last
    s2, i2 = topk_cosine(q[:2], keys[:5], 10)
    assert i2.shape == (2, 5) and sorted(i2[0].tolist()) == [0, 1, 2, 3, 4]


def test_topk_cosine_certificate_falls_back_when_float32_cannot_separate(monkeypatch):
    """With no spare candidates the float32 bound cannot certify tied rows, which are then searched in float64."""
    import xlt.vocab.neighbours as nb

    rng = np.random.default_rng(4)
    keys = normalise_rows(rng.normal(size=(200, 16)), dtype=np.float64)
    keys[100:150] = keys[5] + rng.normal(size=(50, 16)) * 1e-10  # 51 keys tied beyond float32 precision
    q = keys[[5, 6, 7]]
    calls = []
    real = np.argpartition
    monkeypatch.setattr(nb, "_EXTRA", 0)
    monkeypatch.setattr(nb.np, "argpartition", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    sims, idx = topk_cosine(q, keys, 5, dtype=np.float64)
    assert calls, "the tied row should have been re-searched in float64"
    _float64_topk_ok(q, keys, sims, idx, 5)


def test_word_vectors_batch_equals_fasttext(tmp_path, monkeypatch, target_texts):
    pytest.importorskip("fasttext")
    monkeypatch.setenv("XLT_CACHE", str(tmp_path))
    v = train_fasttext(target_texts[:300], FastTextConfig(dim=16, epoch=1, min_count=2, bucket=2000))
    words = v.words[:50] + ["kali", "zzqx", "", "ñandú", "kali", "日本"]
    got = v.vectors(words)
    want = np.stack([v.ft.get_word_vector(w) for w in words])
    assert np.array_equal(got, want)


def test_softmax_weights():
    w = softmax_weights(np.array([[1.0, 0.9, 0.5]]), 0.1)
    e = np.exp(np.array([1.0, 0.9, 0.5]) / 0.1)
    np.testing.assert_allclose(w[0], e / e.sum())


def _vectors_for(tok, dim=16, seed=0):
    words = sorted(set(decoded_tokens(tok)) - {""})
    rng = np.random.default_rng(seed)
    return WordVectors(words=words, matrix=rng.normal(size=(len(words), dim)).astype(np.float32))


def _logits_equal(tok, mapping):
    model = tiny_model("llama", vocab_size=len(tok), hidden=32, layers=1, heads=2, eos_token_id=tok.eos_token_id)
    x = torch.tensor([tok("Kali muna tosi banwe.", add_special_tokens=False)["input_ids"]])
    new = transfer_model(copy.deepcopy(model), tok, mapping)
    return torch.equal(new(x).logits, model(x).logits)


def test_wechsel_identity_with_overlap_copy(source_tokenizer):
    v = _vectors_for(source_tokenizer)
    m = wechsel_mapping(source_tokenizer, source_tokenizer, v, v, None)
    m.check()
    assert set(m.evidence) <= {"overlap", "special"} and _logits_equal(source_tokenizer, m)


def test_wechsel_faithful_is_not_the_identity_and_top1_weight_follows_the_formula(source_tokenizer):
    tok = source_tokenizer
    v = _vectors_for(tok)
    m = wechsel_mapping(tok, tok, v, v, np.eye(16), k=10, temperature=0.1, copy_overlap=False)
    m.check()
    assert "neighbours" in m.evidence and not _logits_equal(tok, m)
    emb = normalise_rows(v.vectors(decoded_tokens(tok)))
    for i in [j for j, e in enumerate(m.evidence) if e == "neighbours"][:30]:
        sims, _ = topk_cosine(emb[i:i + 1], emb, 10)
        expected = 1 / np.exp((sims[0] - 1) / 0.1).sum()  # weight of the token itself (cosine 1)
        assert abs(m.weights[i].max() - expected) < 1e-4


def test_wechsel_single_neighbour_copies_it(source_tokenizer, target_texts):
    tgt = byte_bpe_tokenizer(target_texts, 450)
    s, t = _vectors_for(source_tokenizer, seed=1), _vectors_for(tgt, seed=2)
    m = wechsel_mapping(source_tokenizer, tgt, s, t, None, k=1, copy_overlap=False)
    rows = [i for i, e in enumerate(m.evidence) if e == "neighbours"]
    assert rows and all(m.weights[i].nnz == 1 and m.weights[i].sum() == pytest.approx(1.0) for i in rows)
    zero = [i for i, e in enumerate(m.evidence) if e == "random"]  # tokens without a vector fall back
    assert all(m.weights[i].nnz == 0 for i in zero)


def test_focus_identity_and_sparse_convex_rows(source_tokenizer, target_texts):
    tok = source_tokenizer
    native = WordVectors(words=tok.convert_ids_to_tokens(list(range(len(tok)))),
                         matrix=np.random.default_rng(0).normal(size=(len(tok), 12)).astype(np.float32))
    m = focus_mapping(tok, tok, native)
    assert set(m.evidence) <= {"overlap", "special"} and _logits_equal(tok, m)
    tgt = byte_bpe_tokenizer(target_texts, 450)
    toks = tgt.convert_ids_to_tokens(list(range(len(tgt))))
    vecs = WordVectors(words=toks, matrix=np.random.default_rng(1).normal(size=(len(tgt), 12)).astype(np.float32))
    m = focus_mapping(tok, tgt, vecs)
    m.check()
    new = [i for i, e in enumerate(m.evidence) if e == "neighbours"]
    assert new and m.notes["anchors"] > 0
    # every weight sits on an anchor (an overlapping token) and rows are convex combinations
    anchor_src = {int(m.weights[i].indices[0]) for i, e in enumerate(m.evidence) if e == "overlap"}
    assert all(set(m.weights[i].indices) <= anchor_src for i in new)
    E = tiny_model("llama", vocab_size=len(tok), hidden=32, layers=1, heads=2).get_input_embeddings().weight.detach()
    assert torch.isfinite(mix_rows(m, E, 0)).all()


def test_focus_dominant_anchor_gives_its_row(source_tokenizer):
    """A new token whose vector equals one anchor's (similarity 1 vs ≤ 0 for others) gets that anchor's row."""
    tok = source_tokenizer
    words = tok.convert_ids_to_tokens(list(range(len(tok))))
    new_tok = "Ġzzqq"
    mat = np.eye(len(words) + 1, dtype=np.float32)[:, : len(words) + 1]
    vecs = WordVectors(words=words + [new_tok], matrix=np.vstack([mat[: len(words)], mat[5:6]]))
    from tokenizers import AddedToken

    tgt = copy.deepcopy(tok)
    tgt.add_tokens([AddedToken(new_tok, special=False)])
    m = focus_mapping(tok, tgt, vecs)
    i = len(tgt) - 1
    assert m.evidence[i] == "neighbours" and m.weights[i].nnz == 1 and m.weights[i, 5] == pytest.approx(1.0)


def test_align_spaces_and_dimension_errors():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    x = rng.normal(size=(60, 8)).astype(np.float32)
    r, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    src = WordVectors(words=words, matrix=x)
    tgt = WordVectors(words=[w.upper() for w in words], matrix=(x @ r).astype(np.float32))
    rot, used = align_spaces(src, tgt, [(w, w.upper()) for w in words])
    np.testing.assert_allclose(rot, r, atol=1e-4)
    assert used >= 60
    with pytest.raises(XltError, match="no dictionary pair"):
        align_spaces(src, tgt, [("nope", "NADA")])
    with pytest.raises(XltError, match="different dimensions"):
        check_same_dim(src, WordVectors(words=["a"], matrix=np.zeros((1, 5))))


def test_vec_file_reader(tmp_path):
    p = tmp_path / "v.vec"
    p.write_text("2 3\nhaus 1 2 3\nkatze 4 5 6\n", encoding="utf-8")
    v = load_word_vectors(p)
    assert v.dim == 3 and "haus" in v and np.array_equal(v.vector("katze"), [4, 5, 6]) and not v.vector("x").any()
    p.write_text("2 3\nhaus 1 2\n", encoding="utf-8")
    with pytest.raises(XltError, match="expected 3"):
        load_word_vectors(p)


def test_fasttext_training_is_cached_and_rejects_too_little_text(tmp_path, monkeypatch, target_texts):
    pytest.importorskip("fasttext")
    monkeypatch.setenv("XLT_CACHE", str(tmp_path))
    cfg = FastTextConfig(dim=16, epoch=2, min_count=2, bucket=2000)
    a = train_fasttext(target_texts[:300], cfg)
    files = list((tmp_path / "fasttext").glob("*.bin"))
    assert len(files) == 1 and files[0].stat().st_size < 50e6 and a.origin == "trained"
    b = train_fasttext(target_texts[:300], cfg)
    assert b.origin.startswith("cache:") and np.array_equal(a.vector("kali"), b.vector("kali"))
    with pytest.raises(XltError, match="too little"):
        train_fasttext(["ka li mu"], cfg)
