"""MoE routing analysis and router steering (xlt.analyze.routing, .steer, .moe_families, .tiny_moe).

Tiny random mixture-of-experts models of the four built-in routing families (OLMoE, Mixtral, Qwen2-MoE, Qwen3-MoE;
the Qwen ones with a dense layer), random token ids; nothing is downloaded.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from xlt.analyze.capture import Batch, Tokenized, attached, run_probes
from xlt.analyze.moe_families import ROUTING_FAMILIES, find_routers, qwen_sparse_layers
from xlt.analyze.routing import (MODES, LangRouting, RoutingProbe, capture_routing, importance, is_probabilities, jsd,
                                 language_experts, risk_diff, routing_divergence, routing_entropy, routing_report,
                                 select, task_experts)
from xlt.analyze.steer import RouterSteer
from xlt.errors import XltError
from xlt.models.tiny import MOE_FAMILIES, tiny_moe

VOCAB = 64


def make_model(family: str, experts: int = 8, top_k: int = 2, layers: int = 4, seed: int = 0, **kw):
    """A tiny MoE; the Qwen families get a dense layer 1 (so router tensors and decoder layers differ in number)."""
    dense = [1] if family.startswith("qwen") else None
    return tiny_moe(family, vocab_size=VOCAB, hidden=32, layers=layers, experts=experts, top_k=top_k, seed=seed,
                    mlp_only_layers=dense, **kw)


def random_rows(n: int, seed: int, lo: int = 4, hi: int = VOCAB, min_len: int = 3, max_len: int = 20):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g)
    return [torch.randint(lo, hi, (int(k),), generator=g).tolist() for k in lengths]


@pytest.fixture(scope="module", params=MOE_FAMILIES)
def family_model(request):
    return request.param, make_model(request.param)


def gate_recorder(model):
    """Hooks on every router recording its outputs per call: ``{decoder layer: [(logits, weights, indices), ...]}``."""
    routers = find_routers(model)
    seen = {layer: [] for layer in routers.layers}
    handles = [g.register_forward_hook(lambda mod, args, out, layer=layer: seen[layer].append(
        tuple(x.detach().clone() for x in out))) for layer, g in zip(routers.layers, routers.gates)]
    return seen, handles


# ----------------------------------------------------------------------------------------------- metrics


def test_jsd_fixtures():
    p = torch.tensor([0.2, 0.3, 0.5])
    assert float(jsd(p, p)) == 0.0
    assert float(jsd(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))) == pytest.approx(math.log(2), abs=1e-12)
    assert float(jsd(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]))) == pytest.approx(0.215762, abs=1e-6)
    a, b = torch.softmax(torch.randn(5, 3, 7), -1), torch.softmax(torch.randn(5, 3, 7), -1)
    d = jsd(a, b)
    assert d.shape == (5, 3) and torch.allclose(d, jsd(b, a)) and bool((d > 0).all()) and bool((d <= math.log(2)).all())


def test_importance_fixture_and_modes():
    w = importance(torch.tensor([2.0, 1.0, 0.0, 0.0]), top_k=2)
    assert torch.allclose(w, torch.tensor([0.7311, 0.2689, 0.0, 0.0]), atol=1e-4)
    # two tokens + one padding token whose values must not count
    z = torch.tensor([[2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0], [9.0, 9.0, 9.0, -9.0]])
    mask = torch.tensor([True, True, False])
    p = torch.softmax(z, -1)
    topk_w = importance(z, 2, mode="topk_weight", mask=mask)
    assert topk_w.sum() == pytest.approx(1.0, abs=1e-6)
    tok2 = torch.zeros(4)
    top2 = torch.topk(p[1], 2).indices
    tok2[top2] = p[1, top2] / p[1, top2].sum()
    assert torch.allclose(topk_w, (torch.tensor([0.7311, 0.2689, 0.0, 0.0]) + tok2) / 2, atol=1e-4)
    assert torch.allclose(importance(z, 2, mode="softmax_mean", mask=mask), p[:2].mean(0), atol=1e-6)
    counts = importance(z, 2, mode="counts", mask=mask)
    assert counts.sum() == pytest.approx(1.0) and counts[0] == pytest.approx(0.25) and counts[2] == pytest.approx(0.25)
    assert torch.allclose(importance(z, 2, mode="last", mask=mask), tok2, atol=1e-6)
    # without renormalisation the top-k mass is the raw softmax mass
    raw = importance(torch.tensor([2.0, 1.0, 0.0, 0.0]), 2, renorm=False)
    assert torch.allclose(raw, torch.softmax(torch.tensor([2.0, 1.0, 0.0, 0.0]), -1) * torch.tensor([1.0, 1, 0, 0]))
    # probabilities are detected and read the same way as logits
    assert is_probabilities(p) and not is_probabilities(z)
    for mode in MODES:
        assert torch.allclose(importance(p, 2, mode=mode, mask=mask), importance(z, 2, mode=mode, mask=mask),
                              atol=1e-6), mode
    with pytest.raises(XltError, match="unknown routing importance mode"):
        importance(z, 2, mode="mean")
    with pytest.raises(XltError, match="top_k 5"):
        importance(z, 5)


def test_importance_left_and_right_padding_agree():
    z = torch.randn(2, 6, 8)
    right = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    # the same tokens, padded on the left
    zl = torch.cat([torch.randn(1, 2, 8) * 50, z[:1, :4]], 1)
    left = torch.tensor([[False] * 2 + [True] * 4])
    zl[0, 0, 0] = float("nan")  # a NaN in a padding row must not leak
    for mode in MODES:
        a = importance(z[:1], 2, mode=mode, mask=right[:1])
        b = importance(zl, 2, mode=mode, mask=left)
        assert torch.allclose(a, b, atol=1e-6), mode


def test_routing_divergence_and_entropy():
    g = torch.Generator().manual_seed(0)
    q = torch.softmax(torch.randn(6, 3, 8, generator=g) * 2, -1)
    same = routing_divergence(q, q.clone())
    assert torch.equal(same.jsd, torch.zeros(3, dtype=torch.float64))
    assert bool((same.shuffled > 0.01).all())  # misaligned pairs differ
    q2 = torch.softmax(torch.randn(6, 3, 8, generator=g) * 2, -1)
    d = routing_divergence(q, q2, seed=3)
    pairs = jsd(q, q2)
    assert torch.allclose(d.jsd, pairs.mean(0))
    h = lambda x: -(x * x.log()).sum(-1)  # noqa: E731
    bound = (math.log(8) - 0.5 * (h(q.double()) + h(q2.double()))).clamp_min(1e-6)
    assert torch.allclose(d.normalised, (pairs / bound).mean(0))
    assert torch.equal(d.shuffled, routing_divergence(q, q2, seed=3).shuffled)  # seeded
    assert routing_divergence(q[:1], q2[:1]).shuffled is None
    ent = routing_entropy(q)
    assert ent.shape == (3,) and torch.allclose(ent, h(q.double()).mean(0))
    assert torch.allclose(routing_entropy(torch.full((2, 1, 8), 1 / 8)), torch.tensor([math.log(8)], dtype=torch.float64))
    with pytest.raises(XltError, match="parallel sequences"):
        routing_divergence(q, q2[:5])


def test_language_experts_on_planted_means():
    g = torch.Generator().manual_seed(1)
    base = torch.softmax(torch.randn(2, 16, generator=g) * 0.1, -1)  # (L, E)
    shifted = base.clone()
    shifted[1, 5] += 0.5
    shifted[1] /= shifted[1].sum()
    found = language_experts({"eng": base, "fra": shifted, "deu": base.clone()}, ref="eng", layer_ids=[3, 7])
    assert found["fra"] == {3: [], 7: [5]} and found["deu"] == {3: [], 7: []}
    assert language_experts({"eng": base, "fra": shifted}, ref="eng", layer_ids=[3, 7], layers=[7]) == {"fra": {7: [5]}}
    # Δ sums to 0: with E experts no single expert can exceed sqrt(E - 1) standard deviations
    eight = torch.full((1, 8), 1 / 8)
    spike = eight.clone()
    spike[0, 2] += 0.5
    spike /= spike.sum()
    assert language_experts({"eng": eight, "fra": spike}, k_sd=3)["fra"] == {0: []}
    assert language_experts({"eng": eight, "fra": spike}, k_sd=2)["fra"] == {0: [2]}
    with pytest.raises(XltError, match="reference language 'eng'"):
        language_experts({"fra": spike})


def test_task_experts_is_risk_diff_top_n():
    task = torch.tensor([[0.5, 0.1, 0.3, 0.1], [0.2, 0.2, 0.3, 0.3]])
    general = torch.tensor([[0.2, 0.3, 0.3, 0.2], [0.25, 0.25, 0.25, 0.25]])
    assert torch.allclose(risk_diff(task, general), (task - general).double())
    assert task_experts(task, general, 2, layer_ids=[0, 2]) == {0: [0], 2: [2, 3]}  # only positive differences
    assert task_experts(task, general, 1, layer_ids=[0, 2], layers=[2]) == {2: [2]}
    with pytest.raises(XltError, match="n_per_layer"):
        task_experts(task, general, 0)


# ----------------------------------------------------------------------------------------------- families


def test_routing_family_registry():
    assert set(MOE_FAMILIES) <= set(ROUTING_FAMILIES.names())
    with pytest.raises(XltError, match="unknown routing family 'olmo'") as e:
        ROUTING_FAMILIES.get("olmo")
    assert "olmoe" in e.value.fix
    cfg = type("C", (), {"mlp_only_layers": [1], "decoder_sparse_step": 2, "num_experts": 8})()
    assert qwen_sparse_layers(cfg, 6) == [3, 5]


@pytest.mark.parametrize("family,norm", [(f, n) for f in MOE_FAMILIES if f != "mixtral" for n in (False, True)]
                         + [("mixtral", None)])
def test_gate_contract_and_native_rule_bit_exact(family, norm):
    """Every family's router returns (logits, weights, indices), and the family's rule recomputes the last two to
    the bit (with and without norm_topk_prob where the family has the switch; Mixtral always renormalises)."""
    model = make_model(family, norm_topk_prob=norm) if norm is not None else make_model(family)
    routers = find_routers(model)
    assert routers.renorm == (True if norm is None else norm)
    assert routers.layers == ((0, 2, 3) if family.startswith("qwen") else (0, 1, 2, 3))
    h = torch.randn(2, 5, 32) * 3
    for dtype in (torch.float32, torch.bfloat16):  # Mixtral returns float32 weights from bf16 logits, the rest bf16
        for gate in routers.gates:
            out = copy.deepcopy(gate).to(dtype)(h.to(dtype))
            assert isinstance(out, tuple) and len(out) == 3 and out[0].shape == (10, routers.n_experts)
            weights, indices = routers.family.route(out[0], routers.top_k, routers.renorm)
            assert torch.equal(weights, out[1]) and torch.equal(indices, out[2]) and weights.dtype == out[1].dtype


@pytest.mark.parametrize("family", ["olmoe", "mixtral"])
def test_zero_bias_is_bit_identical_in_bfloat16(family):
    model = make_model(family).to(torch.bfloat16)
    ids = torch.randint(4, VOCAB, (2, 9), generator=torch.Generator().manual_seed(9))
    base, base_gates = _run(model, ids)
    with RouterSteer(model, {layer: [0, 1] for layer in find_routers(model).layers}, mode="bias", epsilon=0.0):
        out, gates = _run(model, ids)
    assert torch.equal(out.logits, base.logits)
    for layer, (logits, weights, indices) in gates.items():
        assert weights.dtype == base_gates[layer][1].dtype and torch.equal(weights, base_gates[layer][1])


# ----------------------------------------------------------------------------------------------- capture


def test_probe_topk_is_the_gates_choice_for_every_token(family_model):
    """Top-k recomputed from the returned router logits == the experts the router picked, token by token; the
    probe's selection counts == the router's picks over real tokens; tensors map to the right decoder layers; the
    default capture (hooks on the routers) gives exactly what the returned tuple gives."""
    family, model = family_model
    rows = random_rows(9, seed=2)
    tok = Tokenized({"eng": rows})
    probe = RoutingProbe(model, source="output")
    seen, handles = gate_recorder(model)
    returned = []
    orig = probe.on_output
    probe.on_output = lambda batch, out: (returned.append((batch, out.router_logits)), orig(batch, out))
    try:
        res = run_probes(model, tok, [probe], batch_size=4, show_progress=False)[0]["eng"]
    finally:
        for h in handles:
            h.remove()
    assert res.layers == list(find_routers(model).layers) and res.router_output == "logits"
    counts = torch.zeros(len(res.layers), res.n_experts, dtype=torch.long)
    for b, (batch, router_logits) in enumerate(returned):
        assert len(router_logits) == len(res.layers)
        for pos, layer in enumerate(res.layers):
            logits, _, picked = seen[layer][b]
            assert torch.equal(router_logits[pos], logits)  # the tuple's pos-th tensor is this layer's router
            assert torch.equal(select(router_logits[pos], res.top_k), picked)
            real = batch.mask.reshape(-1)
            counts[pos] += torch.bincount(picked[real].reshape(-1), minlength=res.n_experts)
    assert torch.equal(res.selections, counts)
    assert res.tokens == sum(len(r) for r in rows)
    assert torch.allclose(res.rates.sum(-1), torch.full((len(res.layers),), float(res.top_k), dtype=torch.float64))
    for mode in MODES:
        q = res.q(mode)
        assert q.shape == (9, len(res.layers), res.n_experts)
        assert torch.allclose(q.sum(-1), torch.ones(q.shape[:2]), atol=1e-5), mode
    hooked = RoutingProbe(model)
    attached_before = sum(len(m._forward_hooks) for m in model.modules())
    # the hooked pass ends at the last sparse layer's router: that layer's experts and the final norm never run
    last = res.layers[-1]
    ran = {"experts": 0, "norm": 0}
    watch = [model.model.layers[last].mlp.experts.register_forward_hook(
                 lambda *a: ran.__setitem__("experts", ran["experts"] + 1)),
             model.model.norm.register_forward_hook(lambda *a: ran.__setitem__("norm", ran["norm"] + 1))]
    try:
        by_hook = run_probes(model, tok, [hooked], batch_size=4, show_progress=False)[0]["eng"]
    finally:
        for h in watch:
            h.remove()
    assert ran == {"experts": 0, "norm": 0}
    assert sum(len(m._forward_hooks) for m in model.modules()) == attached_before  # nothing left attached
    assert hooked.sources_used == {"hook"} and by_hook.layers == res.layers
    assert torch.equal(by_hook.selections, res.selections)
    for mode in MODES:
        assert torch.equal(by_hook.q(mode), res.q(mode)), mode


def test_probe_independent_of_batch_size_and_padding_side():
    model = make_model("olmoe")
    rows = random_rows(7, seed=3)
    tok = Tokenized({"eng": rows})
    one = run_probes(model, tok, [RoutingProbe(model)], batch_size=1, show_progress=False)[0]["eng"]
    many = run_probes(model, tok, [RoutingProbe(model)], batch_size=7, show_progress=False)[0]["eng"]
    assert torch.equal(one.index, torch.arange(7)) and torch.equal(many.index, torch.arange(7))
    for mode in MODES:
        assert torch.allclose(one.q(mode), many.q(mode), atol=1e-6), mode
    assert torch.equal(one.selections, many.selections) and one.tokens == many.tokens

    # the same rows padded on the left (positions counted from the first real token), fed to the probe by hand
    t = max(len(r) for r in rows)
    ids = torch.zeros(7, t, dtype=torch.long)
    mask = torch.zeros(7, t, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, t - len(r):] = torch.tensor(r)
        mask[i, t - len(r):] = True
    probe = RoutingProbe(model)
    batch = Batch("eng", ids, mask, torch.arange(7))
    with attached(model, [probe], [batch]), torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask.long(), position_ids=(mask.cumsum(1) - 1).clamp_min(0),
                    use_cache=False, output_router_logits=True)
        probe.on_output(batch, out)
    left = probe.result()["eng"]
    for mode in MODES:
        assert torch.allclose(left.q(mode), many.q(mode), atol=1e-5), mode
    assert torch.equal(left.selections, many.selections)


class _Rewrap(torch.nn.Module):
    """A model whose output carries transformed router logits (softmaxed: older transformers; None: no support)."""

    def __init__(self, inner, transform):
        super().__init__()
        self.inner, self.model, self.config, self.transform = inner, inner.model, inner.config, transform

    def forward(self, **kw):
        out = self.inner(**kw)
        out.router_logits = self.transform(out.router_logits)
        return out


def test_probabilities_detected_and_hook_fallback():
    model = make_model("qwen3_moe")
    tok = Tokenized({"eng": random_rows(6, seed=4)})
    plain = run_probes(model, tok, [RoutingProbe(model, source="output")], batch_size=4, show_progress=False)[0]["eng"]
    soft = _Rewrap(model, lambda rl: tuple(torch.softmax(x.float(), -1) for x in rl))
    probe = RoutingProbe(soft, source="output")
    probs = run_probes(soft, tok, [probe], batch_size=4, show_progress=False)[0]["eng"]
    assert probs.router_output == "probabilities" and probe.sources_used == {"output"}
    for mode in MODES:
        assert torch.allclose(probs.q(mode), plain.q(mode), atol=1e-5), mode
    assert torch.equal(probs.selections, plain.selections)

    none = _Rewrap(model, lambda rl: None)
    probe = RoutingProbe(none, source="output")
    hooked = run_probes(none, tok, [probe], batch_size=4, show_progress=False)[0]["eng"]
    assert probe.sources_used == {"hook"}
    forced = RoutingProbe(model)  # the default: hooks, no output_router_logits (no load-balancing loss computed)
    assert forced.forward_kwargs == {}
    by_hook = run_probes(model, tok, [forced], batch_size=4, show_progress=False)[0]["eng"]
    for res in (hooked, by_hook):
        for mode in MODES:
            assert torch.equal(res.q(mode), plain.q(mode)), mode
        assert torch.equal(res.selections, plain.selections)


def test_identical_ids_under_two_labels_give_zero_divergence(source_tokenizer, source_texts):
    model = make_model("olmoe", experts=8)
    model.resize_token_embeddings(len(source_tokenizer))
    texts = source_texts[:12]
    res = capture_routing(model, source_tokenizer, {"eng": texts, "xxx": list(texts)}, batch_size=5)
    report = routing_report(res, ref="eng")
    json.dumps(report, allow_nan=False)
    lang = report["languages"]["xxx"]
    assert lang["jsd"] == [0.0] * 4 and lang["jsd_normalised"] == [0.0] * 4
    assert all(v > 0 for v in lang["jsd_shuffled"])
    assert lang["specialised_experts"] == {str(i): [] for i in range(4)}
    assert report["layers"] == [0, 1, 2, 3] and report["n_experts"] == 8 and report["router_output"] == "logits"
    assert all(0 < h <= math.log(8) for h in lang["entropy"])
    with pytest.raises(XltError, match="same parallel texts"):
        routing_report(capture_routing(model, source_tokenizer, {"eng": texts, "xxx": texts[:11]}), ref="eng")
    with pytest.raises(XltError, match="reference language 'fra'"):
        routing_report(res, ref="fra")


def test_planted_router_bias_is_found():
    """Language B's tokens carry +3 on embedding dimension 0, language A's −3; layer 0's router weights expert 11
    strongly along that dimension: expert 11 must come out as B's (only) most specialised expert at layer 0, and not
    in the same model without the plant."""
    a_rows, b_rows = random_rows(10, 5, lo=4, hi=34), random_rows(10, 6, lo=34, hi=64)
    tok = Tokenized({"A": a_rows, "B": b_rows})
    found = {}
    for planted in (False, True):
        model = make_model("olmoe", experts=16)
        if planted:
            with torch.no_grad():
                emb = model.get_input_embeddings().weight
                emb[4:34, 0] = -3.0
                emb[34:64, 0] = 3.0
                find_routers(model).gate(0).weight[11, 0] = 20.0
        res = run_probes(model, tok, [RoutingProbe(model)], batch_size=4, show_progress=False)[0]
        found[planted] = language_experts(res, ref="A")["B"]
        if planted:
            assert res["B"].rates[0, 11] == 1.0 and res["A"].rates[0, 11] == 0.0
    assert found[True][0][0] == 11
    assert 11 not in found[False][0]


def test_probe_refuses_bad_input():
    with pytest.raises(XltError, match="no routing rule for model type 'llama'") as e:
        from xlt.models import tiny_model

        RoutingProbe(tiny_model("llama", vocab_size=VOCAB, hidden=32))
    assert "xlt upcycle" in e.value.fix
    model = make_model("olmoe")
    with pytest.raises(XltError, match="top_k 9"):
        RoutingProbe(model, top_k=9)
    with pytest.raises(XltError, match="unknown routing importance mode"):
        RoutingProbe(model, modes=["topk"])
    res = run_probes(model, Tokenized({"eng": random_rows(3, 1)}), [RoutingProbe(model, modes=["counts"])],
                     show_progress=False)[0]
    with pytest.raises(XltError, match="was not captured"):
        res["eng"].q("last")


# ----------------------------------------------------------------------------------------------- steering


def _run(model, ids):
    seen, handles = gate_recorder(model)
    try:
        with torch.inference_mode():
            out = model(input_ids=ids, output_router_logits=True, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return out, {layer: calls[0] for layer, calls in seen.items()}


def test_steering_all_modes(family_model):
    family, model = family_model
    routers = find_routers(model)
    ids = torch.randint(4, VOCAB, (3, 12), generator=torch.Generator().manual_seed(7))
    base, base_gates = _run(model, ids)
    first, mid, last = routers.layers[0], routers.layers[1], routers.layers[-1]

    with RouterSteer(model, {mid: [1]}, mode="bias", epsilon=0.0):  # ε = 0: nothing changes, to the bit
        out, _ = _run(model, ids)
    assert torch.equal(out.logits, base.logits)
    assert all(torch.equal(a, b) for a, b in zip(out.router_logits, base.router_logits))

    forced = [5, 2][: routers.top_k]
    with RouterSteer(model, {mid: forced[:1], last: forced}, mode="hard"):
        out, gates = _run(model, ids)
        res = capture_routing_ids(model, ids)
    for layer in (mid, last):
        picked = gates[layer][2]
        for e in forced[: (1 if layer == mid else len(forced))]:
            assert bool((picked == e).any(-1).all()), (layer, e)  # in the top-k of 100 % of the tokens
        assert res.rates[routers.layers.index(layer), forced[0]] == 1.0
    assert torch.equal(gates[first][2], base_gates[first][2])  # before the steered layers: untouched
    for layer in routers.layers:
        if layer not in (mid, last):  # the native rule still routes every unsteered layer
            assert torch.equal(select(gates[layer][0], routers.top_k), gates[layer][2])
    assert not torch.equal(out.logits, base.logits)

    with RouterSteer(model, {mid: [6]}, mode="hard"):
        _, hard = _run(model, ids)
    with RouterSteer(model, {mid: [6]}, mode="bias", epsilon=50.0):
        _, bias = _run(model, ids)
    shift = torch.zeros(routers.n_experts)
    shift[6] = 50.0
    assert torch.equal(bias[mid][0], base_gates[mid][0] + shift)  # the router logits carry exactly +ε
    assert torch.equal(hard[mid][2].sort(-1).values, bias[mid][2].sort(-1).values)
    assert torch.equal(hard[first][2], base_gates[first][2])

    with RouterSteer(model, {layer: [0, 3] for layer in routers.layers}, mode="deactivate"):
        _, off = _run(model, ids)
    for layer in routers.layers:
        assert not bool(((off[layer][2] == 0) | (off[layer][2] == 3)).any()), layer
    assert bool(((base_gates[first][2] == 0) | (base_gates[first][2] == 3)).any())  # they were picked unsteered

    after, _ = _run(model, ids)  # every context restored the routers
    assert torch.equal(after.logits, base.logits)
    assert all("forward" not in g.__dict__ for g in routers.gates)


def capture_routing_ids(model, ids) -> LangRouting:
    return run_probes(model, Tokenized({"x": ids.tolist()}), [RoutingProbe(model)], show_progress=False)[0]["x"]


def test_steering_restores_on_exception_and_nests():
    model = make_model("olmoe")
    ids = torch.randint(4, VOCAB, (2, 8), generator=torch.Generator().manual_seed(8))
    base, _ = _run(model, ids)
    gate = find_routers(model).gate(2)
    with pytest.raises(RuntimeError, match="boom"):
        with RouterSteer(model, {2: [1]}, mode="hard"):
            assert "forward" in gate.__dict__
            raise RuntimeError("boom")
    assert "forward" not in gate.__dict__
    with RouterSteer(model, {2: [1]}, mode="deactivate"):
        with RouterSteer(model, {2: [4]}, mode="hard"):
            _, gates = _run(model, ids)
        inner_off, _ = _run(model, ids)
    picked = gates[2][2]
    assert bool((picked == 4).any(-1).all()) and not bool((picked == 1).any())
    assert not torch.equal(inner_off.logits, base.logits)
    after, _ = _run(model, ids)
    assert torch.equal(after.logits, base.logits) and "forward" not in gate.__dict__


def test_steering_refuses_bad_input():
    from xlt.models import tiny_model

    model = make_model("qwen2_moe")  # layer 1 is dense
    cases = [
        (dict(experts={0: [8]}), "experts \\[8\\] of layer 0 do not exist"),
        (dict(experts={1: [0]}), "layer 1 has no router"),
        (dict(experts={9: [0]}), "layer 9 does not exist"),
        (dict(experts={0: [0, 1, 2]}), "3 experts forced on in layer 0"),
        (dict(experts={0: [0, 0]}), "experts repeated"),
        (dict(experts={0: list(range(7))}, mode="deactivate"), "7 of 8 experts deactivated"),
        (dict(experts={0: [0]}, mode="bias"), "bias steering needs a finite number epsilon"),
        (dict(experts={0: [0]}, mode="hard", epsilon=1.0), "epsilon only applies to bias"),
        (dict(experts={0: [0]}, mode="soft"), "unknown steering mode"),
    ]
    for kwargs, message in cases:
        with pytest.raises(XltError, match=message):
            RouterSteer(model, **kwargs)
    with pytest.raises(XltError, match="no routing rule for model type 'llama'") as e:
        RouterSteer(tiny_model("llama", vocab_size=VOCAB, hidden=32), {0: [0]})
    assert "xlt upcycle" in e.value.fix
    # a model whose family has routers nowhere (every Qwen3-MoE layer dense)
    dense = tiny_moe("qwen3_moe", vocab_size=VOCAB, hidden=32, layers=2, experts=4, top_k=2, mlp_only_layers=[0, 1])
    with pytest.raises(XltError, match="not a mixture of experts") as e:
        RouterSteer(dense, {0: [0]})
    assert "xlt upcycle" in e.value.fix


# ----------------------------------------------------------------------------------------------- tiny MoE training


def test_train_tiny_moe_few_steps(tmp_path, parallel_jsonl):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xlt.analyze.tiny_moe import train_tiny_moe

    kw = dict(langs=["en", "sw"], steps=12, seed=3, corpus=str(parallel_jsonl), vocab_size=320, hidden=32, layers=2,
              experts=4, top_k=2, seq_len=32, batch_size=8, lr=1e-2, eval_rows=4)
    summary = train_tiny_moe(out=tmp_path / "a", **kw)
    assert len(summary["loss"]) == 12 and sum(summary["loss"][-3:]) / 3 < summary["loss"][0]
    assert set(summary["dev_loss"]) <= {"en", "sw"}
    assert (tmp_path / "a" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "a" / "xlt_tiny_moe.json").read_text())["loss"] == summary["loss"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    assert type(model).__name__ == "OlmoeForCausalLM" and len(tok) == model.config.vocab_size
    assert tok.decode(tok("Kali muna.", add_special_tokens=False)["input_ids"]) == "Kali muna."
    res = capture_routing(model, tok, {"en": ["Kali muna to.", "Li na."], "sw": ["Ban kor.", "Tel mi zu."]})
    assert routing_report(res, ref="en")["layers"] == [0, 1]
    again = train_tiny_moe(out=tmp_path / "b", **kw)
    assert again["loss"] == summary["loss"]  # seeded
