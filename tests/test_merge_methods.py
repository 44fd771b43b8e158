"""The merge methods' math on hand-computed 2×3 matrices and on oracles written from the papers' definitions."""

from __future__ import annotations

import math

import pytest
import torch

from merge_fixtures import input_count
from xlt.errors import XltError
from xlt.merge import MERGES, merge_tensors
from xlt.merge.methods.layer_swap import layer_sources
from xlt.merge.stats import RankSelector

BASE = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
D1 = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
D2 = torch.tensor([[-3.0, 1.0, 0.5], [2.0, -1.0, -2.0]])
M1, M2 = BASE + D1, BASE + D2


def test_linear_by_hand():
    # (m1 + 3 m2) / 4 = base + (d1 + 3 d2) / 4
    out = merge_tensors("linear", None, [M1, M2], weight=[1.0, 3.0])
    assert torch.equal(out, torch.tensor([[-1.0, 2.25, 3.5], [5.5, 5.0, 4.25]]))
    out = merge_tensors("linear", None, [M1, M2], weight=[1.0, 3.0], normalize=False)
    assert torch.equal(out, M1 + 3 * M2)


def test_task_arithmetic_by_hand():
    out = merge_tensors("task_arithmetic", BASE, [M1, M2], weight=[1.0, 3.0], **{"lambda": 0.5})
    assert torch.equal(out, torch.tensor([[-3.0, 2.5, 4.0], [7.0, 5.0, 2.5]]))
    out = merge_tensors("task_arithmetic", BASE, [M1, M2], weight=[1.0, 3.0], normalize=True)
    assert torch.allclose(out, BASE + (D1 + 3 * D2) / 4)


def test_ties_by_hand():
    # density 0.5 keeps k = 3 of 6: |d1| = 1 2 .5 0 3 1 -> 3, 2 and the first of the tied 1s (flat index 0);
    # |d2| = 3 1 .5 2 1 2 -> 3, 2, 2. Trimmed: d1 = 1 -2 0 0 3 0, d2 = -3 0 0 2 0 -2; sum -2 -2 0 2 3 -2 elects
    # signs - - + + + -; agreeing entries: d2[0], d1[1], none, d2[3], d1[4], d2[5]; disjoint mean over them.
    out = merge_tensors("ties", BASE, [M1, M2], density=0.5)
    assert torch.equal(out, torch.tensor([[-2.0, 0.0, 3.0], [6.0, 8.0, 4.0]]))
    # weights: d1 ×2 and d2 ×1: weighted sums 2·d1t + d2t = -1 -4 0 2 6 -2; the mean divides by agreeing weights
    out = merge_tensors("ties", BASE, [M1, M2], density=0.5, weight=[2.0, 1.0])
    expect = BASE + torch.tensor([[-3.0, -2.0, 0.0], [2.0, 3.0, -2.0]])  # (2·d)/2 and d/1: the same deltas
    assert torch.equal(out, expect)
    # density 1: no trim; entry [0,0]: 1 and -3 -> sign -, only d2 agrees -> -3
    out = merge_tensors("ties", BASE, [M1, M2], density=1.0)
    assert out[0, 0] == BASE[0, 0] - 3 and out[0, 2] == BASE[0, 2] + 0.5


def test_ties_keeps_exactly_k_with_ties():
    base = torch.zeros(10)
    m = torch.tensor([1.0, 1, 1, 1, 1, 1, 1, 1, 1, 1])  # all tied
    out = merge_tensors("ties", base, [m], density=0.3)
    assert torch.equal(out, torch.tensor([1.0, 1, 1, 0, 0, 0, 0, 0, 0, 0]))  # the first three, in flat order


def test_dare_keeps_density_and_is_unbiased_and_seeded():
    base = torch.zeros(200, 500)
    g = torch.Generator().manual_seed(0)
    m = torch.randn(200, 500, generator=g)
    out = merge_tensors("dare_linear", base, [m], density=0.3, seed=1)
    kept = (out != 0).float().mean().item()
    assert abs(kept - 0.3) < 4 * math.sqrt(0.3 * 0.7 / out.numel())
    assert torch.allclose(out[out != 0], (m / 0.3)[out != 0])  # exact 1/p rescale
    assert torch.equal(out, merge_tensors("dare_linear", base, [m], density=0.3, seed=1))
    assert not torch.equal(out, merge_tensors("dare_linear", base, [m], density=0.3, seed=2))
    # expectation over seeds equals the plain delta (task arithmetic)
    small = m[:4, :5]
    mean = sum(merge_tensors("dare_linear", base[:4, :5], [small], density=0.5, seed=s) for s in range(2000)) / 2000
    assert torch.allclose(mean, small, atol=0.12 * small.abs().max().item())
    assert (mean - small).abs().mean() < 0.05 * small.abs().mean() + 0.02


def test_dare_mask_does_not_depend_on_chunking():
    from xlt.merge.methods.dare import uniform

    whole = uniform(3, "w", 0, 0, 3_000_000)
    parts = torch.cat([uniform(3, "w", 0, a, min(3_000_000, a + 700_001)) for a in range(0, 3_000_000, 700_001)])
    assert torch.equal(whole, parts)


def test_dare_ties_elects_signs():
    base = torch.zeros(1000)
    a, b = torch.ones(1000), -2 * torch.ones(1000)
    out = merge_tensors("dare_ties", base, [a, b], density=1.0)
    assert torch.equal(out, -2 * torch.ones(1000))  # sum -1 elects '-'; only b agrees; normalize off: w·δ


def pcb_oracle(taus: torch.Tensor, density: float, q: float) -> torch.Tensor:
    """The PCB kernel's formulas on a dense n×d matrix (sorts for the quantiles), written from the definitions."""
    n, d = taus.shape
    a = taus.abs()
    s = a.sort(dim=1).values
    lo, hi = s[:, int(d * q)].unsqueeze(1), s[:, int(d * (1 - q) - 1)].unsqueeze(1)
    a = a.clamp(lo, hi)
    intra = torch.exp(n * ((a - lo) / (hi - lo)) ** 2)
    inter = torch.tanh(taus * taus.sum(0))
    score = intra * inter
    ss = score.sort(dim=1).values
    m, big = ss[:, int(d * (1 - density))].unsqueeze(1), ss[:, -1].unsqueeze(1)
    beta = (score.clamp(min=m) - m) / (big - m)
    return (taus.sign() * a * beta).sum(0) / beta.sum(0).clamp(min=1e-12)


def test_pcb_by_hand_small():
    # n = 2, d = 4, no clamping (q = 0), keep half. τ1 = (1, -2, 0.5, 0), τ2 = (0.5, -1, -1, 2).
    t1, t2 = torch.tensor([1.0, -2.0, 0.5, 0.0]), torch.tensor([0.5, -1.0, -1.0, 2.0])
    total = t1 + t2  # 1.5 -3 -0.5 2
    def score(t):
        a = t.abs()
        return [math.exp(2 * ((x - a.min()) / (a.max() - a.min())) ** 2) * math.tanh(y * z)
                for x, y, z in zip(a.tolist(), t.tolist(), total.tolist())]
    s1, s2 = score(t1), score(t2)
    def beta(s):
        m, big = sorted(s)[2], max(s)  # rank int(4 * 0.5) = 2
        return [(max(x, m) - m) / (big - m) for x in s]
    b1, b2 = beta(s1), beta(s2)
    expect = torch.tensor([(x * p + y * r) / max(p + r, 1e-12) for x, y, p, r in zip(t1.tolist(), t2.tolist(), b1, b2)])
    out = merge_tensors("pcb", torch.zeros(4), [t1, t2], density=0.5, clamp_ratio=0.0)
    assert torch.allclose(out, expect, atol=1e-6)
    assert torch.allclose(out, pcb_oracle(torch.stack([t1, t2]), 0.5, 0.0), atol=1e-6)


def test_pcb_matches_dense_oracle_and_returns_self():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 50, generator=g)
    ms = [base + 0.1 * torch.randn(40, 50, generator=g) for _ in range(3)]
    out = merge_tensors("pcb", base, ms, density=0.2, clamp_ratio=0.01, **{"lambda": 1.0})
    taus = torch.stack([(m - base).reshape(-1) for m in ms])
    assert torch.allclose(out, base + pcb_oracle(taus, 0.2, 0.01).reshape(40, 50), atol=1e-5)
    assert torch.equal(merge_tensors("pcb", base, [base, base]), base)


def widen_oracle(base, ms, t=1.0, c=1.0, embedding=False):
    """WIDEN's definition, written with explicit loops over columns."""
    W0 = base.T if embedding else base
    Ws = [m.T if embedding else m for m in ms]
    K, n = len(Ws), W0.shape[1]
    def ranks(diff):  # position of each column in the stable ascending order, / n
        r = torch.zeros(K, n)
        for k in range(K):
            for pos, j in enumerate(sorted(range(n), key=lambda j: (diff[k, j].item(), j))):
                r[k, j] = pos / n
        return r
    dm = torch.stack([(w.norm(dim=0) - W0.norm(dim=0)).abs() for w in Ws])
    dd = torch.stack([1 - torch.nn.functional.cosine_similarity(w, W0, dim=0) for w in Ws])
    def imp(sig):
        s = torch.softmax(sig, dim=0)
        for k in range(K):
            avg = sig[k].mean()
            for j in range(n):
                if sig[k, j] > avg * t:
                    s[k, j] = c
        return s
    wgt = 0.5 * (imp(ranks(dm)) + imp(ranks(dd)))
    out = W0.clone()
    for k in range(K):
        out += (Ws[k] - W0) * wgt[k]
    return out.T if embedding else out


def test_widen_by_hand_1d():
    # |δ1| = 1 0 2 (mean 1: entry 2 calibrated), |δ2| = 0 3 1 (mean 4/3: entry 1 calibrated);
    # softmax over models elsewhere: col 0 (1, 0) -> (e/(e+1), 1/(e+1)).
    out = merge_tensors("widen", torch.zeros(3), [torch.tensor([1.0, 0, 2]), torch.tensor([0.0, 3, 1])])
    e = math.e
    expect = torch.tensor([e / (e + 1), 3.0, 2.0 + 1 / (e + 1)])
    assert torch.allclose(out, expect, atol=1e-6)


@pytest.mark.parametrize("embedding", [False, True])
def test_widen_matches_definition_and_returns_self(embedding):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(6, 5, generator=g)
    ms = [base + 0.3 * torch.randn(6, 5, generator=g) for _ in range(2)]
    name = "model.embed_tokens.weight" if embedding else "model.layers.0.mlp.up_proj.weight"
    out = merge_tensors("widen", base, ms, name=name, above_average_value_ratio=1.0, score_calibration_value=1.0)
    assert torch.allclose(out, widen_oracle(base, ms, embedding=embedding), atol=1e-6)
    assert torch.equal(merge_tensors("widen", base, [base, base], name=name), base)


def test_slerp():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    out = merge_tensors("slerp", a, [b], t=0.5)
    # θ = 90°: sin(45°)/sin(90°) each
    assert torch.allclose(out, torch.tensor([math.sqrt(0.5), 2 * math.sqrt(0.5)]))
    assert torch.equal(merge_tensors("slerp", a, [a], t=0.3), a)  # collinear: lerp
    assert torch.equal(merge_tensors("slerp", a, [b], t=0.0), a)


def test_layer_sources():
    assert layer_sources(8, 2, 1, 1, 1) == ["outer", "outer", "blend", "inner", "inner", "inner", "blend", "outer"]
    assert layer_sources(4, 0, 0) == ["inner"] * 4
    with pytest.raises(XltError, match="more than the model's 4"):
        layer_sources(4, 3, 2)


@pytest.mark.parametrize("name", [n for n in MERGES.names() if MERGES.get(n).idempotent])
def test_identical_inputs_return_the_input(name):
    """Every method that declares ``idempotent``, with its declared input count and example parameters."""
    m = MERGES.get(name)
    has_base = m.needs_base or m.uses_base
    x = torch.randn(7, 9, generator=torch.Generator().manual_seed(2))
    out = merge_tensors(name, x if has_base else None, [x] * input_count(m, has_base), **m.example)
    assert torch.equal(out, x), name


@pytest.mark.parametrize("density", [0.0, 1.5, -0.1])
def test_density_outside_range_is_refused(density):
    with pytest.raises(XltError, match=r"density must be in \(0, 1\]"):
        merge_tensors("ties", BASE, [M1, M2], density=density)


def test_rank_selector_exact_on_streams_with_ties():
    g = torch.Generator().manual_seed(3)
    for nonneg in (False, True):
        x = torch.randint(-50, 50, (20000,), generator=g).float() / 8
        if nonneg:
            x = x.abs()
        s = RankSelector(nonneg=nonneg)
        parts = x.split(3001)
        for p in parts:
            s.add(p)
        ranks = [0, 1, 9999, 19999]
        s.next_pass(ranks)
        for p in parts:
            s.add(p)
        xs = x.sort().values
        for sel in s.result():
            v = xs[sel.rank].item()
            assert sel.value == v and sel.less == int((x < v).sum()) and sel.equal == int((x == v).sum())


def _sel(values: torch.Tensor, k: int):
    s = RankSelector(nonneg=True)
    s.add(values)
    s.next_pass([values.numel() - k])
    s.add(values)
    return s.result()


def test_ties_straddling_detection_by_hand():
    from xlt.merge.methods.ties import straddles

    a = torch.tensor([3.0, 1, 1, 1, 0.5, 2])  # descending: 3 2 1 1 1 0.5
    assert straddles(_sel(a, 3))       # threshold 1: 2 above, 3 equal, room for 1 of them
    assert not straddles(_sel(a, 2))   # threshold 2: the only element equal to it is kept
    assert not straddles(_sel(a, 5))   # threshold 1: all three tied elements are kept
    assert not straddles(_sel(a, 1)) and not straddles([])


def test_ties_tie_break_mergekit_without_straddling_ties_takes_the_threshold_path(monkeypatch):
    import xlt.merge.methods.ties as ties

    def no_argsort(*a, **k):
        raise AssertionError("argsort run for a tensor without a straddling tie")

    monkeypatch.setattr(ties, "argsort_tie_bits", no_argsort)
    # |d1| = 1 2 .5 0 3 1.5 and |d2| = 3 1 .5 2 1.5 2.5: density 0.5 keeps 3, 2, 1.5 and 3, 2.5, 2 (no ties)
    d1 = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.5]])
    d2 = torch.tensor([[-3.0, 1.0, 0.5], [2.0, -1.5, -2.5]])
    # trimmed: d1 = 0 -2 0 0 3 -1.5, d2 = -3 0 0 2 0 -2.5; sums elect - - + + + -; disjoint means
    expect = BASE + torch.tensor([[-3.0, -2.0, 0.0], [2.0, 3.0, -2.0]])
    for tie_break in ("index", "mergekit"):
        out = merge_tensors("ties", BASE, [BASE + d1, BASE + d2], density=0.5, tie_break=tie_break)
        assert torch.equal(out, expect), tie_break


def test_ties_tie_break_mergekit_keeps_what_argsort_keeps():
    # 40 elements, 6 distinct magnitudes: k = 12 cuts through the 2.0s; n > 16 makes argsort's order unstable
    g = torch.Generator().manual_seed(7)
    delta = torch.randint(0, 6, (40,), generator=g).float() * torch.where(torch.rand(40, generator=g) < 0.5, -1.0, 1.0)
    a = delta.abs()
    assert straddles_k(a, 12)
    base = torch.zeros(40)
    mk = merge_tensors("ties", base, [delta], density=0.3, tie_break="mergekit")
    idx = merge_tensors("ties", base, [delta], density=0.3)
    top = torch.argsort(a, descending=True)[:12]  # mergekit/sparsify.py: magnitude
    want = torch.zeros(40)
    want[top] = delta[top]
    assert torch.equal(mk, want)
    assert int((mk != 0).sum()) == int((idx != 0).sum()) == 12
    thr = torch.sort(a, descending=True).values[11]
    assert not torch.equal(mk, idx), "argsort kept the same ties as stream order: the case tells nothing"
    assert bool(((mk != idx) <= (a == thr)).all())  # they differ only at elements equal to the threshold
    first = torch.nonzero(a == thr).reshape(-1)[: 12 - int((a > thr).sum())]
    assert bool((idx[first] != 0).all())  # index: lowest flat indices first


def straddles_k(a: torch.Tensor, k: int) -> bool:
    from xlt.merge.methods.ties import straddles

    return straddles(_sel(a, k))


def test_ties_tie_break_is_checked():
    with pytest.raises(XltError, match="tie_break must be one of index, mergekit, got 'random'"):
        merge_tensors("ties", BASE, [M1, M2], density=0.5, tie_break="random")
    with pytest.raises(XltError, match="cannot be combined with trim_scope: global") as e:
        merge_tensors("ties", BASE, [M1, M2], density=0.5, tie_break="mergekit", trim_scope="global")
    assert "trim_scope: tensor" in e.value.fix
