"""Alignment metrics (pure math) and the one-pass hidden-state capture."""

import math

import pytest
import torch

from xlt.analyze.alignment import (cka_permutation, debiased_cka, hsic1_kernel, layer_alignment, linear_cka,
                                   paired_cosine, retrieval)
from xlt.errors import XltError


def _gauss(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cka_is_one_under_orthogonal_maps_and_scaling():
    X = _gauss(120, 16, 0)
    Q, _ = torch.linalg.qr(_gauss(16, 16, 1))
    Y = 3.7 * X @ Q
    assert linear_cka(X, Y) == pytest.approx(1.0, abs=1e-10)
    assert debiased_cka(X, Y) == pytest.approx(1.0, abs=1e-10)


def test_debiased_cka_equals_its_kernel_form():
    X, Y = _gauss(50, 8, 2), _gauss(50, 12, 3) + 0.5 * torch.cat([_gauss(50, 8, 2), _gauss(50, 4, 4)], 1)
    K, L = X @ X.T, Y @ Y.T  # uncentred: the unbiased estimator does not need centring
    ref = hsic1_kernel(K, L) / (hsic1_kernel(K, K) * hsic1_kernel(L, L)).sqrt()
    assert debiased_cka(X, Y) == pytest.approx(float(ref), abs=1e-10)
    assert cka_permutation(X, Y, n_perm=3)["value"] == pytest.approx(float(ref), abs=1e-10)


def test_debiased_cka_is_near_zero_for_independent_gaussians_where_biased_is_not():
    X, Y = _gauss(500, 64, 5), _gauss(500, 64, 6)
    assert abs(debiased_cka(X, Y)) < 0.01
    assert linear_cka(X, Y) > 0.08  # ≈ d / (N + d): the upward bias
    res = cka_permutation(X, Y, n_perm=50)
    assert res["p"] > 0.05 and abs(res["baseline"]) < 0.01


def test_permutation_p_is_small_for_related_representations():
    X = _gauss(80, 10, 7)
    Y = X + 0.5 * _gauss(80, 10, 8)
    res = cka_permutation(X, Y, n_perm=99)
    assert res["p"] == pytest.approx(0.01) and res["value"] > res["baseline"] + 0.5


def test_retrieval_identity_and_chance():
    X = _gauss(60, 16, 9)
    r = retrieval(X, X)
    assert r["x2y"] == 1.0 and r["y2x"] == 1.0
    r = retrieval(X, _gauss(60, 16, 10))
    assert r["x2y"] < 0.1 and r["y2x"] < 0.1


def test_ratio_margin_fixes_a_hub():
    # y0 is close to every x (a hub): plain cosine sends most queries there, the ratio margin does not
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 8, generator=g, dtype=torch.float64)
    Y = X + 0.6 * torch.randn(40, 8, generator=g, dtype=torch.float64)
    Y[0] = X.mean(0) * 8 + 0.01
    assert retrieval(X, Y, margin="ratio")["x2y"] > retrieval(X, Y, margin="absolute")["x2y"]


def test_paired_cosine_baseline_is_the_mean_over_all_other_pairs():
    X, Y = _gauss(30, 6, 11), _gauss(30, 6, 12)
    res = paired_cosine(X, Y)
    Xn, Yn = X / X.norm(dim=1, keepdim=True), Y / Y.norm(dim=1, keepdim=True)
    S = Xn @ Yn.T
    off = [float(S[i, j]) for i in range(30) for j in range(30) if i != j]
    assert res["shuffled"] == pytest.approx(sum(off) / len(off), abs=1e-12)
    assert res["delta"] == pytest.approx(res["paired"] - res["shuffled"])
    same = paired_cosine(X + 5, X + 5)  # anisotropic: every cosine is high, the delta says how much is pairing
    assert same["paired"] == pytest.approx(1.0) and same["shuffled"] > 0.9


def test_bad_shapes_are_one_clear_error():
    with pytest.raises(XltError, match="same N"):
        linear_cka(_gauss(5, 3, 0), _gauss(6, 3, 0))
    with pytest.raises(XltError, match="at least 4"):
        debiased_cka(_gauss(3, 3, 0), _gauss(3, 3, 0))


# -- the capture pass -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_llama():
    from xlt.models import tiny_model

    return tiny_model("llama", vocab_size=300, hidden=64, layers=2, heads=4, seed=1)


class _Tok:
    """A tokenizer of space-separated integers (ids given directly), with a BOS."""

    bos_token_id = 1

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [int(x) for x in text.split()]}


def _texts(seed, n=24, shift=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(3, 12, (1,), generator=g))
        out.append(" ".join(str(int(x) + shift) for x in torch.randint(2, 140, (k,), generator=g)))
    return out


def test_hidden_probe_is_independent_of_batch_size_and_padding(tiny_llama):
    from xlt.analyze.capture import HiddenProbe, run_probes, tokenize

    texts = {"aaa": _texts(0, n=12), "bbb": _texts(0, n=12, shift=150)}
    tok = tokenize(_Tok(), texts)
    sizes = {k: len(v) for k, v in texts.items()}
    outs = []
    for bs in (1, 5, 12):
        for how in ("mean", "last"):
            outs.append((bs, how, run_probes(tiny_llama, tok, [HiddenProbe(sizes, how)], batch_size=bs,
                                             show_progress=False)[0]))
    for bs, how, res in outs:
        ref = next(r for b, h, r in outs if b == 1 and h == how)
        for lang in texts:
            assert res[lang].shape == (12, 3, 64)
            torch.testing.assert_close(res[lang], ref[lang], atol=2e-5, rtol=0)
    # row i is text i: one text alone gives the same row
    one = run_probes(tiny_llama, tokenize(_Tok(), {"aaa": [texts["aaa"][7]]}), [HiddenProbe({"aaa": 1})],
                     show_progress=False)[0]
    torch.testing.assert_close(one["aaa"][0], outs[0][2]["aaa"][7], atol=2e-5, rtol=0)


def test_leaving_out_the_padding_mask_of_a_causal_decoder_changes_no_real_token(tiny_llama):
    """run_probes passes no attention mask to causal decoders (right padding: no real token sees a pad under the
    causal mask): the pooled states equal those of the masked forward, in batches that carry padding."""
    from xlt.analyze.capture import HiddenProbe, _is_causal, run_probes, tokenize

    texts = {"aaa": _texts(1, n=10)}
    tok = tokenize(_Tok(), texts)
    assert len({len(r) for r in tok.ids["aaa"]}) > 1  # lengths differ: the batch pads
    assert _is_causal(tiny_llama)
    res = {m: run_probes(tiny_llama, tok, [HiddenProbe({"aaa": 10}, "mean")], batch_size=10, show_progress=False,
                         padding_mask=m)[0]["aaa"] for m in ("auto", True)}
    torch.testing.assert_close(res["auto"], res[True], atol=2e-6, rtol=0)


def test_random_model_on_a_cloned_vocabulary_shows_geometry_but_no_alignment(tiny_llama):
    """Language B is language A with every token id shifted (disjoint vocabulary, same content): an untrained model
    cannot retrieve translations (cross-space metrics at chance), yet CKA is above its permutation baseline because
    sentences sharing tokens are close in both spaces (anchors §2.1)."""
    from xlt.analyze.capture import HiddenProbe, run_probes, tokenize

    a = _texts(3, n=200)
    texts = {"aaa": a, "bbb": [" ".join(str(int(x) + 150) for x in t.split()) for t in a]}
    res = run_probes(tiny_llama, tokenize(_Tok(), texts), [HiddenProbe({"aaa": 200, "bbb": 200})], batch_size=32,
                     show_progress=False)[0]
    for layer in range(3):
        m = layer_alignment(res["aaa"][:, layer], res["bbb"][:, layer], n_perm=50)
        assert m["retrieval_x2y"] <= 0.05 and m["retrieval_y2x"] <= 0.05
        assert abs(m["cos_delta"]) < 0.05
        if layer == 0:
            assert m["cka_linear"] > 0.0 and m["cka_debiased"] > m["cka_debiased_baseline"] + 0.05
            assert m["cka_debiased_p"] < 0.05
    assert not math.isnan(m["cka_linear"])
