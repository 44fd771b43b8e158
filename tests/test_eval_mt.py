"""xlt.eval.mt: sacrebleu scores, and paired tests that equal sacrebleu's PairedTest (p-values, means, CIs)."""

from __future__ import annotations

import random

import numpy as np
import pytest

pytest.importorskip("sacrebleu")

from sacrebleu.metrics import BLEU, CHRF, TER  # noqa: E402
from sacrebleu.significance import PairedTest  # noqa: E402

from xlt.errors import XltError  # noqa: E402
from xlt.eval import mt  # noqa: E402

SACRE = {"bleu": BLEU, "chrf": CHRF, "chrf++": lambda: CHRF(word_order=2), "ter": TER}
WORDS = ("river stone light house bread water field night morning city road king people land voice hand "
         "mountain fire word heart door gold tree child").split()


def _refs(n: int = 60, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) + rng.choice([".", "!", "?", ""])
            for _ in range(n)]


def _noisy(refs: list[str], p: float, seed: int) -> list[str]:
    """Each word replaced with probability p, and the last word dropped with probability p."""
    rng = random.Random(seed)
    out = []
    for line in refs:
        words = [w if rng.random() > p else rng.choice(WORDS) for w in line.split()]
        if rng.random() < p and len(words) > 1:
            words = words[:-1]
        out.append(" ".join(words))
    return out


REFS = _refs()
SYSTEMS = {"base": _noisy(REFS, 0.20, 2), "close": _noisy(REFS, 0.22, 3), "worse": _noisy(REFS, 0.75, 4)}
SYSTEMS["copy"] = list(SYSTEMS["base"])


def _sacrebleu(test: str, n: int, monkeypatch, systems=SYSTEMS, baseline="base"):
    monkeypatch.setenv("SACREBLEU_SEED", "12345")
    named = [(baseline, systems[baseline])] + [(k, v) for k, v in systems.items() if k != baseline]
    sigs, scores = PairedTest(named, {m: SACRE[m]() for m in mt.METRICS}, [REFS], test_type=test, n_samples=n)()
    names = scores.pop("System")
    return {m: (sig.format(), dict(zip(names, col))) for m, (sig, col) in zip(mt.METRICS, zip(sigs.values(),
                                                                                             scores.values()))}


# -- corpus scores ------------------------------------------------------------------------------------------------
def test_identical_text_is_perfect():
    s = mt.mt_scores(REFS, REFS)
    assert s["bleu"].score == pytest.approx(100.0, abs=1e-9)  # sacrebleu's exp(mean log) gives 100.00000000000004
    assert (s["chrf"].score, s["chrf++"].score, s["ter"].score) == (100.0, 100.0, 0.0)
    assert s["ter"].higher_is_better is False and s["bleu"].higher_is_better is True
    assert s["bleu"].signature == "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"


def test_one_substitution_in_eight_words():
    # precisions 7/8, 5/7, 3/6, 1/5: their product is 1/16, so BLEU = 100 * (1/16)^(1/4) = 50; TER = 1 edit / 8 words
    s = mt.mt_scores(["one two three four nine six seven eight"], ["one two three four five six seven eight"])
    assert s["bleu"].score == pytest.approx(50.0, abs=1e-9)
    assert s["ter"].score == pytest.approx(12.5, abs=1e-9)


def test_scores_equal_sacrebleu_corpus_scores():
    hyps = SYSTEMS["close"]
    s = mt.mt_scores(hyps, REFS)
    for name in mt.METRICS:
        assert s[name].score == SACRE[name]().corpus_score(hyps, [REFS]).score
    assert s["chrf"].signature.startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no")
    assert "nw:2" in s["chrf++"].signature


# -- vectorised score-from-statistics -----------------------------------------------------------------------------
@pytest.mark.parametrize("metric", mt.METRICS)
def test_resample_scores_equal_sacrebleu_on_every_resample(metric):
    m = SACRE[metric]()
    st32 = np.array(m._extract_corpus_statistics(SYSTEMS["close"], [REFS]), dtype=np.float32)
    idx = np.random.default_rng(7).choice(len(REFS), size=(300, len(REFS)))
    sums = np.stack([st32[i].sum(0) for i in idx])  # sacrebleu's bootstrap sums
    expect = np.array([m._compute_score_from_stats(row).score for row in sums])
    got = mt.resample_scores(metric, sums.astype(np.float64), np.float32)
    assert got.dtype == expect.dtype and np.array_equal(got, expect)


@pytest.mark.parametrize("metric", mt.METRICS)
@pytest.mark.parametrize("kind", [np.float32, np.int64, np.float64])
def test_resample_scores_equal_sacrebleu_on_edge_cases(metric, kind):
    """Small random statistics, many zeros: empty orders, no matches, empty references, zero-length output."""
    m = SACRE[metric]()
    k = {"bleu": 10, "chrf": 18, "chrf++": 24, "ter": 2}[metric]
    rng = np.random.default_rng(3)
    sums = rng.integers(0, 4, size=(400, k)) * (rng.random((400, k)) < 0.7)
    if metric == "bleu":  # totals shrink with the order, matches stay below them
        sums[:, 6:10] = np.sort(sums[:, 6:10] + rng.integers(0, 3, size=(400, 4)), axis=1)[:, ::-1]
        sums[:, 2:6] = np.minimum(sums[:, 2:6], sums[:, 6:10])
    typed = sums.astype(kind)
    expect = np.array([m._compute_score_from_stats(row).score for row in typed])
    got = mt.resample_scores(metric, sums, kind)
    assert got.dtype == expect.dtype and np.array_equal(got, expect)


# -- paired tests against sacrebleu's PairedTest ------------------------------------------------------------------
@pytest.mark.parametrize("test,n", [("bs", 200), ("ar", 500)])
def test_paired_test_equals_sacrebleu(test, n, monkeypatch):
    mt.clear_cache()
    ours = mt.paired_test(REFS, SYSTEMS, "base", test=test, n_samples=n)
    theirs = _sacrebleu(test, n, monkeypatch)
    middling = 0
    for metric in mt.METRICS:
        sig, results = theirs[metric]
        assert ours.signatures[metric] == sig
        for system, res in results.items():
            row = ours.get(system, metric)
            assert row.score == res.score
            assert row.p_sacrebleu == res.p_value
            if test == "bs":
                assert abs(row.mean - res.mean) <= 1e-9 and abs(row.ci - res.ci) <= 1e-9
            else:
                assert row.mean is None and res.mean is None
            middling += res.p_value is not None and res.p_value > 0.05
    assert middling >= 2  # the close system's p-values are not all at the floor: the comparison is not vacuous
    again = mt.paired_test(REFS, SYSTEMS, "base", test=test, n_samples=n)  # statistics from the cache now
    assert again.rows == ours.rows


def test_exact_fallbacks_equal_sacrebleu(monkeypatch):
    """With sums treated as too big for float32, the per-resample float32 path and the float64 swap path agree too."""
    monkeypatch.setattr(mt, "_F32_EXACT", 8)
    for test, n in (("bs", 100), ("ar", 200)):
        ours = mt.paired_test(REFS, SYSTEMS, "base", test=test, n_samples=n)
        for metric, (_, results) in _sacrebleu(test, n, monkeypatch).items():
            for system, res in results.items():
                row = ours.get(system, metric)
                assert (row.p_sacrebleu, row.mean, row.ci) == (res.p_value, res.mean, res.ci)


def test_identical_systems_get_p_one(monkeypatch):
    for test, n in (("bs", 200), ("ar", 500)):
        res = mt.paired_test(REFS, SYSTEMS, "base", test=test, n_samples=n)
        raw = _sacrebleu(test, n, monkeypatch)
        for metric in mt.METRICS:
            row = res.get("copy", metric)
            assert row.delta == 0.0 and row.p == 1.0 and row.p_raw == 1.0
            assert row.p_sacrebleu == raw[metric][1]["copy"].p_value == 1 / (n + 1)  # sacrebleu's quirk


def test_much_worse_system_is_significant():
    for test, n in (("bs", 200), ("ar", 500)):
        res = mt.paired_test(REFS, SYSTEMS, "base", test=test, n_samples=n)
        for metric in mt.METRICS:
            row = res.get("worse", metric)
            assert row.p < 0.01
            assert (row.delta < 0) == row.higher_is_better  # worse: lower BLEU/chrF, higher TER


def test_corrections_in_paired_test():
    plain = mt.paired_test(REFS, SYSTEMS, "base", test="ar", n_samples=300)
    for corr, fn in (("bonferroni", mt.bonferroni), ("holm", mt.holm)):
        res = mt.paired_test(REFS, SYSTEMS, "base", test="ar", n_samples=300, correction=corr)
        for metric in mt.METRICS:
            raw = [plain.get(s, metric).p_raw for s in ("close", "worse", "copy")]
            assert [res.get(s, metric).p for s in ("close", "worse", "copy")] == fn(raw)
    assert plain.get("base", "bleu").p is None and plain.get("base", "bleu").delta == 0.0


# -- corrections --------------------------------------------------------------------------------------------------
def test_bonferroni():
    assert mt.bonferroni([0.0055556] * 3) == pytest.approx([0.0166668] * 3, abs=1e-12)
    assert mt.bonferroni([0.5, 0.2, 0.01]) == pytest.approx([1.0, 0.6, 0.03])


def test_holm():
    assert mt.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert mt.holm([0.5, 0.6]) == [1.0, 1.0]
    adj = mt.holm([0.001, 0.2, 0.01, 0.04])
    order = np.argsort([0.001, 0.2, 0.01, 0.04])
    assert all(np.diff(np.array(adj)[order]) >= 0)  # monotone in the raw order
    with pytest.raises(XltError):
        mt.holm([0.5, 1.5])


# -- errors -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call,needle", [
    (lambda: mt.mt_scores(["a", "b"], ["a"]), "2 hypotheses but 1 references"),
    (lambda: mt.mt_scores([], []), "empty"),
    (lambda: mt.mt_scores(["a"], ["a"], metrics=("meteor",)), "unknown MT metric"),
    (lambda: mt.mt_scores("a b", ["a"]), "list of strings"),
    (lambda: mt.paired_test(REFS, {"base": SYSTEMS["base"]}, "base"), "at least one other system"),
    (lambda: mt.paired_test(REFS, SYSTEMS, "nope"), "baseline 'nope' is not one of"),
    (lambda: mt.paired_test(REFS, {"base": SYSTEMS["base"], "short": REFS[:-1]}, "base"), "has 59 lines"),
    (lambda: mt.paired_test(REFS, SYSTEMS, "base", test="perm"), "unknown paired test"),
    (lambda: mt.paired_test(REFS, SYSTEMS, "base", correction="fdr"), "unknown correction"),
    (lambda: mt.paired_test(REFS, SYSTEMS, "base", n_samples=0), "positive integer"),
])
def test_bad_input_raises_xlt_error(call, needle):
    with pytest.raises(XltError) as e:
        call()
    assert needle in e.value.problem and e.value.fix
