"""xlt.infer.chrf (vectorised sentence chrF = sacrebleu's) and xlt.infer.mbr (MBR / X-MBR selection)."""

from __future__ import annotations

import random

import numpy as np
import pytest

pytest.importorskip("sacrebleu")

import sacrebleu  # noqa: E402

from xlt.errors import XltError  # noqa: E402
from xlt.infer import chrf as chrf_mod  # noqa: E402
from xlt.infer.chrf import ChrfConfig, ChrfStats, chrf_matrix, sentence_chrf  # noqa: E402
from xlt.infer.mbr import mbr_select, mbr_select_many, xmbr_select  # noqa: E402

# Latin, Greek, Cyrillic, CJK, Devanagari (with a combining sign), Arabic, emoji, spaces of several kinds, punctuation
ALPHABET = list("abcdeABC") + list("αβγ") + list("жяд") + list("中文字") + ["न", "ि", "ह"] + list("بسم") + ["🙂"] \
    + [" ", " ", "  ", "\t", "\n", "\u3000", "\u00a0"] + list(".,!?()'\"-")


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lengths = [0, 1, 2, 3, 4, 5, 6, 7, 9, 15, 40, 90]
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.choice(lengths))) for _ in range(n)]


def _sentences(n: int, seed: int) -> list[str]:
    """Word-like texts (so word n-grams and punctuation splitting of chrF++ matter)."""
    rng = random.Random(seed)
    words = "the river (stone) light, house bread! water field. night ok? 'city' road-king a".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))) for _ in range(n)]


EDGE = ["", "", " ", "\t \n", "a", "ab", "abc", "abcde", "abcdef", "abc def", "a b c", "aaaaaa", "aaaaaaa",
        "same text here.", "same text here.", "(hi)", "hi!", "!"]

CONFIGS = {
    "chrF2": (ChrfConfig(), {}),
    "chrF++": (ChrfConfig(word_order=2), {"word_order": 2}),
    "eps": (ChrfConfig(eps_smoothing=True), {"eps_smoothing": True}),
    "whitespace,order4,beta3": (ChrfConfig(char_order=4, beta=3, whitespace=True),
                                {"char_order": 4, "beta": 3, "remove_whitespace": False}),
}


def _sacrebleu_matrix(hyps: list[str], refs: list[str], **kw) -> np.ndarray:
    return np.array([[sacrebleu.sentence_chrf(h, [r], **kw).score for r in refs] for h in hyps])


# -- chrF ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS))
def test_chrf_matrix_equals_sentence_chrf(name):
    config, kw = CONFIGS[name]
    texts = _random_texts(30, seed=1) + _sentences(12, seed=2) + EDGE
    got = chrf_matrix(texts, texts, config)
    want = _sacrebleu_matrix(texts, texts, **kw)
    assert got.dtype == np.float64 and got.shape == (len(texts), len(texts))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert (want > 0).sum() > len(texts) and (want < 100).any()  # the fixture exercises partial matches


def test_chrf_rectangular_and_convenience():
    hyps, refs = _random_texts(7, seed=3) + ["", "xyz"], _sentences(5, seed=4) + EDGE[:6]
    np.testing.assert_allclose(chrf_matrix(hyps, refs), _sacrebleu_matrix(hyps, refs), rtol=0, atol=1e-9)
    for h, r in [("", ""), ("", "abc"), ("abc", ""), ("abcdefg", "abcdefg"), ("ab cd", "abcd"), ("the cat", "a cat")]:
        assert sentence_chrf(h, r) == pytest.approx(sacrebleu.sentence_chrf(h, [r]).score, abs=1e-9)
    assert sentence_chrf("the same sentence", "the same sentence") == 100.0
    assert sentence_chrf("", "") == 0.0
    assert chrf_matrix([], ["a"]).shape == (0, 1)


def test_chrf_sparse_path_and_large_alphabet(monkeypatch):
    """The sparse product (large pools) and the id renumbering (alphabets too large for int64 6-gram ids)."""
    rng = random.Random(5)
    cjk = [chr(0x4E00 + i) for i in range(2500)]  # 2500**6 > 2**62
    texts = ["".join(rng.choice(cjk[:40] if i % 2 else cjk) for _ in range(rng.randint(0, 20))) for i in range(24)]
    texts += _random_texts(10, seed=6)
    want = _sacrebleu_matrix(texts, texts)
    np.testing.assert_allclose(chrf_matrix(texts, texts), want, rtol=0, atol=1e-9)
    monkeypatch.setattr(chrf_mod, "DENSE_LIMIT", 0)
    np.testing.assert_allclose(chrf_matrix(texts, texts), want, rtol=0, atol=1e-9)
    config, kw = CONFIGS["chrF++"]
    np.testing.assert_allclose(chrf_matrix(texts, texts, config), _sacrebleu_matrix(texts, texts, **kw),
                               rtol=0, atol=1e-9)


def test_chrf_stats_are_extracted_once_per_text():
    stats = ChrfStats(["abcabc", "abc", ""])
    # unigrams of "abcabc": a, b, c twice each; totals per order are (length - n + 1)
    np.testing.assert_array_equal(stats.totals[:, 0], [6, 5, 4, 3, 2, 1])
    np.testing.assert_array_equal(stats.totals[:, 2], 0)
    assert stats.matches(np.array([0]), np.array([1]))[:, 0, 0].tolist() == [3, 2, 1, 0, 0, 0]


def test_chrf_bad_input():
    with pytest.raises(XltError, match="list of str"):
        chrf_matrix("abc", ["abc"])
    with pytest.raises(XltError, match="item 1"):
        chrf_matrix(["a", None], ["a"])
    with pytest.raises(XltError, match="n-gram order"):
        ChrfConfig(char_order=0, word_order=0)


# -- MBR -----------------------------------------------------------------------------------------------------------
def test_identity_utility_picks_the_modal_candidate():
    pool = ["b", "a", "c", "a", "b", "a"]
    result = mbr_select(pool, utility="identity")
    assert (result.index, result.text, result.utility) == (1, "a", "identity")
    np.testing.assert_allclose(result.scores, [2 / 6, 3 / 6, 1 / 6, 3 / 6, 2 / 6, 3 / 6])
    assert mbr_select(pool, utility="identity", greedy_index=5).index == 5  # the greedy copy of the mode


def test_ties_go_to_greedy_then_lowest_index():
    pool = ["a", "b", "a", "b", "c"]  # a and b tie at 2/5
    assert mbr_select(pool, utility="identity", greedy_index=3).index == 3
    assert mbr_select(pool, utility="identity", greedy_index=1).index == 1
    assert mbr_select(pool, utility="identity", greedy_index=4).index == 0  # greedy not tied: lowest tied index
    assert mbr_select(pool, utility="identity", greedy_index=None).index == 0
    near = lambda c, e: np.array([[1.0], [1.0 + 5e-13], [0.5]])  # noqa: E731  within the tie tolerance
    assert mbr_select(["x", "y", "z"], ["e"], utility=near, greedy_index=0).index == 0
    far = lambda c, e: np.array([[1.0], [1.0 + 1e-9], [0.5]])  # noqa: E731
    assert mbr_select(["x", "y", "z"], ["e"], utility=far, greedy_index=0).index == 1


def test_chrf_mbr_equals_sacrebleu_expected_utility():
    pool = _sentences(9, seed=7) + ["the river light house", "the river light house."]
    result = mbr_select(pool, greedy_index=None)
    want = _sacrebleu_matrix(pool, pool).mean(axis=1)
    np.testing.assert_allclose(result.scores, want, rtol=0, atol=1e-9)
    assert result.index == int(np.argmax(want)) and result.utility == "chrf" and result.n_evidence == len(pool)
    evidence = _sentences(4, seed=8)
    np.testing.assert_allclose(mbr_select(pool, evidence).scores, _sacrebleu_matrix(pool, evidence).mean(axis=1),
                               rtol=0, atol=1e-9)


def _fake_embedder(dim: int = 8):
    """Deterministic vectors per text (a hash-seeded Gaussian), recording the calls."""
    calls: list[list[str]] = []

    def embed(texts):
        calls.append(list(texts))
        return np.stack([np.random.default_rng(sum(map(ord, t)) + 7919 * len(t)).normal(size=dim) for t in texts])

    return embed, calls


@pytest.mark.parametrize("utility", ["chrf", "chrf++", "identity", "e5", "judge"])
def test_single_candidate_is_returned(utility):
    embed, _ = _fake_embedder()
    u = (lambda c, e: np.full((len(c), len(e)), -3.0)) if utility == "judge" else utility
    result = mbr_select(["only one"], utility=u, embedder=embed)
    assert (result.index, result.text) == (0, "only one") and result.scores.shape == (1,)
    assert xmbr_select(["only one"], {"en": ["x y"]}, "de", utility="e5", embedder=embed).index == 0


def test_e5_picks_the_candidate_closest_to_the_mean_direction():
    embed, calls = _fake_embedder()
    pool = [f"candidate number {i}" for i in range(7)] + ["candidate number 3"]
    vectors = embed(pool)
    calls.clear()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = int(np.argmax(unit @ unit.mean(axis=0)))
    assert expected != 0  # the greedy default must not explain the choice
    result = mbr_select(pool, utility="e5", embedder=embed)
    assert (result.index, result.utility) == (expected, "e5")
    np.testing.assert_allclose(result.scores, unit @ unit.mean(axis=0), atol=1e-12)
    assert calls == [pool[:7]]  # one call, each distinct text once


def test_xmbr_with_target_only_evidence_is_mbr():
    pool = _sentences(8, seed=9)
    evidence = _sentences(5, seed=10)
    for utility in ("chrf", "identity"):
        a, b = xmbr_select(pool, {}, "de", utility=utility), mbr_select(pool, utility=utility)
        assert a.index == b.index and np.array_equal(a.scores, b.scores)
        a, b = xmbr_select(pool, {"de": evidence}, "de", utility=utility), mbr_select(pool, evidence, utility=utility)
        assert a.index == b.index and np.array_equal(a.scores, b.scores)


def test_xmbr_adds_the_other_languages_pools():
    pool, de, en, fr = ["c0", "c1", "c2"], ["d0", "d1"], ["e0", "e1", "e2"], ["f0"]
    support = {"c0": {"d0", "d1"}, "c1": {"d0"}, "c2": {"e0", "e1", "e2", "f0"}}
    seen = {}

    def judge(candidates, evidence):
        seen["evidence"] = list(evidence)
        return np.array([[float(e in support[c]) for e in evidence] for c in candidates])

    assert xmbr_select(pool, {"de": de}, "de", utility=judge).index == 0
    result = xmbr_select(pool, {"de": de, "en": en, "fr": fr}, "de", utility=judge)
    assert seen["evidence"] == de + en + fr and result.n_evidence == 6 and result.utility == "judge"
    np.testing.assert_allclose(result.scores, [2 / 6, 1 / 6, 4 / 6])
    assert result.index == 2
    result = xmbr_select(pool, {"en": en}, "de", utility=judge)  # the target evidence defaults to the pool
    assert seen["evidence"] == pool + en and result.index == 2


@pytest.mark.parametrize("utility,metric", [("chrf", "chrF"), ("chrf++", "chrF\\+\\+"), ("identity", "identity")])
def test_character_utilities_refuse_cross_lingual_evidence(utility, metric):
    with pytest.raises(XltError, match=f"{metric}.*another language") as info:
        xmbr_select(["Hallo Welt"], {"de": ["Hallo Welt"], "en": ["Hello world"]}, "de", utility=utility)
    assert "e5" in info.value.fix


def test_mbr_select_many_equals_mbr_select():
    pools = [_sentences(6, seed=s) for s in range(5)] + [["just one"]]
    many = mbr_select_many(pools)
    for pool, result in zip(pools, many):
        single = mbr_select(pool)
        assert result.index == single.index and np.array_equal(result.scores, single.scores)
    evidence = [_sentences(3, seed=20 + s) for s in range(len(pools))]
    for pool, ev, result in zip(pools, evidence, mbr_select_many(pools, evidence, utility="identity")):
        assert np.array_equal(result.scores, mbr_select(pool, ev, utility="identity").scores)


def test_bad_input_is_refused():
    with pytest.raises(XltError, match="candidate pool is empty"):
        mbr_select([])
    with pytest.raises(XltError, match="candidate pool is empty"):
        xmbr_select([], {"en": ["x"]}, "de", utility="e5", embedder=_fake_embedder()[0])
    with pytest.raises(XltError, match="evidence is empty"):
        mbr_select(["a"], [])
    with pytest.raises(XltError, match="en evidence pool is empty"):
        xmbr_select(["a"], {"en": []}, "de", utility="e5", embedder=_fake_embedder()[0])
    with pytest.raises(XltError, match="candidate pool is empty"):
        mbr_select_many([["a"], []])
    with pytest.raises(XltError, match="no embedder"):
        mbr_select(["a", "b"], utility="e5")
    with pytest.raises(XltError, match="unknown MBR utility"):
        mbr_select(["a", "b"], utility="bleurt")
    with pytest.raises(XltError, match="greedy_index 2"):
        mbr_select(["a", "b"], greedy_index=2)
    with pytest.raises(XltError, match="shape"):
        mbr_select(["a", "b"], utility=lambda c, e: np.zeros((len(c), len(e) + 1)))
    with pytest.raises(XltError, match="non-finite"):
        mbr_select(["a", "b"], utility=lambda c, e: np.full((len(c), len(e)), np.nan))
    with pytest.raises(XltError, match="embedder returned shape"):
        mbr_select(["a", "b"], utility="e5", embedder=lambda texts: np.zeros(len(texts)))
    with pytest.raises(XltError, match="single string"):
        mbr_select("abc")
