"""Language-specific neurons (LAPE): counting in the shared capture pass, selection as the reference's
``identify.py``, ablation, the ablation matrix, stability, the naive port, the report and its files.

Two synthetic "languages" use disjoint word lists (a word-level tokenizer gives each its own token-id range); a tiny
Llama gets planted neurons whose gate rows read a language-indicator dimension of the embeddings."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from xlt.analyze.capture import Probe, run_probes, tokenize
from xlt.analyze.neurons import (MIN_TOKENS, ActivationCounts, ActivationProbe, ablate_neurons, ablation_matrix,
                                 count_activations, ffn_sites, find_language_neurons, jaccard, lape, lape_scores,
                                 naive_lape_counts, neuron_counts, neurons_report, read_neurons, stability,
                                 write_neurons)
from xlt.errors import XltError
from xlt.models.tiny import tiny_model

SYL_A = ["ka", "li", "mu", "na", "to", "we", "si", "ra"]
SYL_B = ["bo", "fe", "gu", "hi", "jo", "ve", "zy", "xu"]
WORDS_A = [a + b for a in SYL_A for b in SYL_A]
WORDS_B = [a + b for a in SYL_B for b in SYL_B]
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
A_IDS = list(range(4, 4 + 64))
B_IDS = list(range(68, 132))
VOCAB = 132
#: planted language neurons of the tiny Llama: {lang: {layer: neuron indices}}
PLANT = {"aa": {0: [3, 17], 1: [40, 99]}, "bb": {0: [5, 60], 1: [7, 120]}}


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS_A + WORDS_B)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def make_texts(words, n, seed, lo=15, hi=35):
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def planted_llama(a=0.03, c=10.0, beta0=0.002, beta1=1.0, head=1.0):
    """A tiny Llama whose embeddings carry a language indicator (dim 0: +a for language aa's tokens, −a otherwise;
    dim 1 likewise for bb; dim 2: +a for every token). The planted neurons' gate rows read only their language's
    indicator (c · e_dim), so they fire on that language's tokens and on no other token; their up rows read the
    constant dim 2. Layer-0 planted neurons write a little back to their indicator; layer-1 ones write to dims 3/4,
    which the output head reads to favour that language's tokens. Nothing else writes dims 0–4."""
    m = tiny_model("llama", vocab_size=VOCAB, hidden=64, layers=2, seed=0, tied=False, bos_token_id=1,
                   eos_token_id=2, pad_token_id=3)
    with torch.no_grad():
        emb = m.model.embed_tokens.weight
        emb[:, :5] = 0
        emb[:, 0], emb[:, 1], emb[:, 2] = -a, -a, a
        emb[A_IDS, 0] = a
        emb[B_IDS, 1] = a
        h = m.lm_head.weight
        h[:, 3], h[:, 4] = -head, -head
        h[A_IDS, 3] = head
        h[B_IDS, 4] = head
        for layer in m.model.layers:
            layer.self_attn.o_proj.weight[:5] = 0
            layer.mlp.down_proj.weight[:5] = 0
        for lang, dim in (("aa", 0), ("bb", 1)):
            for layer, idx in PLANT[lang].items():
                mlp = m.model.layers[layer].mlp
                for j in idx:
                    mlp.gate_proj.weight[j] = 0
                    mlp.gate_proj.weight[j, dim] = c
                    mlp.up_proj.weight[j] = 0
                    mlp.up_proj.weight[j, 2] = 1.0
                    mlp.down_proj.weight[:, j] = 0
                    mlp.down_proj.weight[dim if layer == 0 else dim + 3, j] = beta0 if layer == 0 else beta1
    return m


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


@pytest.fixture(scope="module")
def texts():
    """~2,600 tokens per language (each half above MIN_TOKENS)."""
    return {"aa": make_texts(WORDS_A, 100, 1), "bb": make_texts(WORDS_B, 100, 2)}


@pytest.fixture(scope="module")
def held_out():
    return {"aa": make_texts(WORDS_A, 30, 11, 4, 14), "bb": make_texts(WORDS_B, 30, 12, 4, 14)}


@pytest.fixture(scope="module")
def short_texts():
    """Few texts of very different lengths, so batches carry padding."""
    return {"aa": make_texts(WORDS_A, 14, 3, 1, 30), "bb": make_texts(WORDS_B, 11, 4, 1, 30)}


def as_lists(neurons):
    return {lang: {layer: ix.tolist() for layer, ix in by_layer.items()} for lang, by_layer in neurons.items()}


def tiny(arch, seed=0):
    return tiny_model(arch, vocab_size=VOCAB, hidden=32, layers=2, heads=2, seed=seed, bos_token_id=1,
                      eos_token_id=2, pad_token_id=3)


# -- counting -------------------------------------------------------------------------------------------------------
def test_counts_do_not_depend_on_batch_size_or_padding(tok, short_texts):
    model = tiny("llama")
    tk = tokenize(tok, short_texts)
    lengths = [len(r) for r in tk.ids["aa"]]
    assert len(set(lengths)) > 3  # batches of several rows are padded
    runs = [count_activations(model, tok, short_texts, batch_size=bs) for bs in (1, 4, 32)]
    for r in runs:
        assert r.n_tokens == {lang: tk.n_tokens(lang) for lang in short_texts}
        for lang in short_texts:
            c = r.counts[lang]
            assert c.dtype == torch.int64 and c.shape == (2, 64)
            assert torch.equal(c, runs[0].counts[lang])
    assert 0 < int(runs[0].counts["aa"].sum()) < 2 * 64 * tk.n_tokens("aa")  # neither silent nor all-firing


def test_padding_positions_are_not_counted(tok, short_texts):
    """The same batches with different pad ids (which change the padded positions' activations) count the same."""
    model = tiny("llama")
    tk = tokenize(tok, short_texts)
    results = []
    for pad in (3, A_IDS[5], B_IDS[9]):
        probe = ActivationProbe(model)
        run_probes(model, tk, [probe], batch_size=8, pad_id=pad, show_progress=False)
        results.append(probe.result())
    for lang in short_texts:
        assert torch.equal(results[0].counts[lang], results[1].counts[lang])
        assert torch.equal(results[0].counts[lang], results[2].counts[lang])


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3", "gpt2"])
def test_naive_port_counts_equal_probe_counts(arch, tok, short_texts):
    model = tiny(arch)
    probe = count_activations(model, tok, short_texts, batch_size=8)
    naive = naive_lape_counts(model, tok, short_texts)
    assert naive.n_tokens == probe.n_tokens
    for lang in short_texts:
        assert torch.equal(naive.counts[lang], probe.counts[lang]), arch
        assert 0 < int(probe.counts[lang].sum()) < probe.counts[lang].numel() * probe.n_tokens[lang]
    # the naive port put the model back as it was
    assert all("forward" not in vars(s.mlp) for s in ffn_sites(model))


def test_counts_activation_module_output(tok):
    """The probe counts act_fn(gate_proj(x)) > 0 on every real token: checked against the gate computed by hand."""
    model = tiny("llama", seed=3)
    texts = {"aa": make_texts(WORDS_A, 3, 5, 5, 9), "bb": make_texts(WORDS_B, 3, 6, 5, 9)}
    got = count_activations(model, tok, texts, batch_size=2)
    tk = tokenize(tok, texts)
    gates = {}
    gate_proj = model.model.layers[1].mlp.gate_proj
    hook = gate_proj.register_forward_hook(lambda m, a, o: gates.setdefault("g", []).append(o))
    try:
        with torch.no_grad():
            for ids in tk.ids["bb"]:
                model(input_ids=torch.tensor([ids]))
    finally:
        hook.remove()
    expected = sum((g[0] > 0).sum(0) for g in gates["g"])
    assert torch.equal(got.counts["bb"][1], expected)


def test_probe_runs_in_the_shared_pass_and_splits_halves(tok, short_texts):
    """With another probe in the same pass, counts are unchanged; halves add up to the whole and equal counting
    each half alone."""
    model = tiny("llama")

    class Hidden(Probe):
        forward_kwargs = {"output_hidden_states": True}

        def __init__(self):
            self.n = 0

        def on_output(self, batch, out):
            self.n += len(out.hidden_states)

    tk = tokenize(tok, short_texts)
    split = {lang: len(rows) // 2 for lang, rows in tk.ids.items()}
    probe, other = ActivationProbe(model, split_at=split), Hidden()
    run_probes(model, tk, [probe, other], batch_size=4, pad_id=3, show_progress=False)
    assert other.n > 0
    alone = count_activations(model, tok, short_texts)
    full = probe.result()
    first, second = probe.halves()
    for lang in short_texts:
        assert torch.equal(full.counts[lang], alone.counts[lang])
        assert torch.equal(first.counts[lang] + second.counts[lang], full.counts[lang])
        assert first.n_tokens[lang] + second.n_tokens[lang] == full.n_tokens[lang]
    head = {lang: v[: split[lang]] for lang, v in short_texts.items()}
    only_first = count_activations(model, tok, head)
    for lang in short_texts:
        assert torch.equal(only_first.counts[lang], first.counts[lang])
        assert only_first.n_tokens[lang] == first.n_tokens[lang]
    with pytest.raises(XltError, match="split"):
        ActivationProbe(model).halves()


def test_unsupported_models_are_one_clear_error():
    for arch in ("mixtral", "olmoe"):
        with pytest.raises(XltError, match="mixture of experts") as e:
            ActivationProbe(tiny_model(arch, vocab_size=VOCAB, hidden=32, layers=1, heads=2, eos_token_id=2))
        assert e.value.fix
    shared = tiny("llama")
    shared.model.layers[1].mlp.act_fn = shared.model.layers[0].mlp.act_fn
    with pytest.raises(XltError, match="share one activation module"):
        ActivationProbe(shared)


# -- selection ------------------------------------------------------------------------------------------------------
def synthetic_counts(seed=0, n=(20_000, 30_000, 25_000), layers=2, width=100):
    """Background neurons fire at 20–50 % in all three languages; planted neurons fire at 90 % in one language and
    never in the others; neuron (1, 50) fires at 90 % in languages x and y and never in z."""
    g = torch.Generator().manual_seed(seed)
    langs = ["x", "y", "z"]
    planted = {"x": {0: [4, 71]}, "y": {1: [8, 33]}, "z": {0: [90], 1: [2]}}
    counts = {}
    for k, lang in enumerate(langs):
        rate = 0.2 + 0.3 * torch.rand(layers, width, generator=g)
        for other, by_layer in planted.items():
            for layer, idx in by_layer.items():
                rate[layer, idx] = 0.9 if other == lang else 0.0
        rate[1, 50] = 0.9 if lang in ("x", "y") else 0.0
        counts[lang] = (rate * n[k]).round().long()
    return counts, dict(zip(langs, n)), planted


def expected_sets(planted, shared=True, layers=2):
    out = {lang: {layer: sorted(planted[lang].get(layer, [])) for layer in range(layers)} for lang in planted}
    if shared:
        for lang in ("x", "y"):
            out[lang][1] = sorted(out[lang][1] + [50])
    return out


def test_lape_recovers_planted_neurons_exactly():
    counts, n, planted = synthetic_counts()
    # 6 language-only neurons (LAPE 0) and one shared by x and y (LAPE ln 2); the background is near ln 3
    got = lape(counts, n, top_rate=7 / 200)
    assert as_lists(got) == expected_sets(planted)
    assert neuron_counts(got) == {"x": 3, "y": 3, "z": 2}
    # one fewer: the shared neuron (highest LAPE of the seven) is the one left out
    assert as_lists(lape(counts, n, top_rate=6 / 200)) == expected_sets(planted, shared=False)
    # a larger share keeps every planted neuron
    more = lape(counts, n, top_rate=0.1)
    for lang, by_layer in expected_sets(planted).items():
        for layer, idx in by_layer.items():
            assert set(idx) <= set(more[lang][layer].tolist())


def test_neuron_can_belong_to_two_languages():
    counts, n, _ = synthetic_counts()
    got = lape(counts, n, top_rate=7 / 200)
    owners = [lang for lang in got if 50 in got[lang][1].tolist()]
    assert owners == ["x", "y"]
    assert neurons_report(got)["n_shared"] == 1


def test_lape_scores_entropy():
    n = {"a": 1000, "b": 4000, "c": 2500}
    counts = {k: torch.zeros(1, 4, dtype=torch.long) for k in n}
    for k, v in n.items():
        counts[k][0, 0] = v // 2  # the same rate (50 %) in every language
        counts[k][0, 1] = v // 10 * (1 + (k == "a"))  # 20 % in a, 10 % elsewhere
    counts["b"][0, 2] = 900  # fires in b only
    s = lape_scores(counts, n)
    assert s.langs == ["a", "b", "c"]
    assert s.probs.shape == (1, 4, 3) and s.probs.dtype == torch.float32
    assert math.isclose(s.entropy[0, 0].item(), math.log(3), rel_tol=1e-6)
    p = np.array([0.5, 0.25, 0.25])
    assert math.isclose(s.entropy[0, 1].item(), float(-(p * np.log(p)).sum()), rel_tol=1e-6)
    assert s.entropy[0, 2].item() == 0 and s.entropy[0, 3].item() == 0  # never firing: 0, as the reference


def oracle_identify(counts, n, top_rate, filter_rate, bar_ratio):
    """An independent NumPy reading of the reference's selection rule (``identify.py``)."""
    langs = list(counts)
    oz = np.stack([counts[k].numpy() for k in langs], axis=-1)
    probs = oz.astype(np.float32) / np.array([n[k] for k in langs], dtype=np.float32)
    L, F, K = probs.shape
    ent = np.zeros((L, F))
    for i in range(L):
        for j in range(F):
            s = probs[i, j].sum()
            if s > 0:
                q = probs[i, j] / s
                ent[i, j] = -sum(x * math.log(x) for x in q if x > 0)
    flat = np.sort(probs.ravel())
    tau = flat[round(len(flat) * filter_rate) - 1]
    bar = flat[round(len(flat) * bar_ratio) - 1]
    ent[(probs > tau).sum(-1) == 0] = np.inf
    order = np.argsort(ent.ravel(), kind="stable")[: round(L * F * top_rate)]
    out = {k: {i: [] for i in range(L)} for k in langs}
    for idx in order:
        i, j = divmod(int(idx), F)
        for k, lang in enumerate(langs):
            if probs[i, j, k] > bar:
                out[lang][i].append(j)
    return {k: {i: sorted(v) for i, v in by.items()} for k, by in out.items()}


@pytest.mark.parametrize("top_rate,filter_rate,bar", [(0.01, 0.95, 0.95), (0.05, 0.9, 0.9), (0.2, 0.99, 0.5),
                                                      (0.3, 0.95, 0.8)])
def test_lape_matches_independent_reading_of_identify_py(top_rate, filter_rate, bar):
    g = torch.Generator().manual_seed(7)
    n = {"en": 50_000, "sw": 20_000, "yo": 35_000, "ha": 12_000}
    counts = {}
    for k, v in n.items():
        rate = torch.rand(3, 64, generator=g) ** 3  # skewed, with some neurons near silent
        rate[0, :5] = 0  # never firing anywhere
        counts[k] = (rate * v).floor().long()
    got = as_lists(lape(counts, n, top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=bar))
    assert got == oracle_identify(counts, n, top_rate, filter_rate, bar)
    if bar < filter_rate:  # neurons the filter dropped can still be assigned when the bar is lower (as the reference)
        assert sum(len(v) for by in got.values() for v in by.values()) > 0


def test_lape_refuses_bad_input_with_one_error():
    counts, n, _ = synthetic_counts()
    few = dict(n, y=MIN_TOKENS - 1, z=10)
    with pytest.raises(XltError) as e:
        lape(counts, few)
    msg = str(e.value)
    assert "y has 999" in msg and "z has 10" in msg and "1,000" in msg and e.value.fix
    with pytest.raises(XltError, match="two languages"):
        lape({"x": counts["x"]}, {"x": n["x"]})
    with pytest.raises(XltError, match="selects none"):
        lape(counts, n, top_rate=0.001)
    with pytest.raises(XltError, match="top_rate"):
        lape(counts, n, top_rate=0)
    with pytest.raises(XltError, match="different languages"):
        lape(counts, {"x": 1, "y": 2})
    with pytest.raises(XltError, match="not integers"):
        lape({k: v.float() for k, v in counts.items()}, n)


def test_stability_and_jaccard():
    a, na, _ = synthetic_counts(seed=0)
    b, nb, _ = synthetic_counts(seed=1)  # same planted neurons, other background draws
    assert stability(ActivationCounts(a, na), ActivationCounts(b, nb), top_rate=7 / 200) == {"x": 1.0, "y": 1.0,
                                                                                               "z": 1.0}
    b2 = dict(b)
    b2["z"] = b["z"].clone()
    b2["z"][0, 90] = 0  # z loses one of its two neurons in the second half
    assert stability(ActivationCounts(a, na), ActivationCounts(b2, nb), top_rate=6 / 200)["z"] == 0.5
    assert jaccard({0: torch.tensor([1, 2])}, {0: torch.tensor([2]), 1: torch.tensor([1])}) == 1 / 3
    assert jaccard({0: torch.tensor([], dtype=torch.long)}, {}) is None
    with pytest.raises(XltError, match="per half"):
        stability(ActivationCounts(a, dict(na, x=1500)), ActivationCounts(b, dict(nb, x=900)))


# -- the planted model: identification, ablation, matrix --------------------------------------------------------------
@pytest.fixture(scope="module")
def planted_run(tok, texts, held_out):
    model = planted_llama()
    neurons, report = find_language_neurons(model, tok, texts, held_out, top_rate=8 / 256, batch_size=64)
    return model, neurons, report


def test_planted_neurons_are_recovered(planted_run):
    _, neurons, report = planted_run
    assert as_lists(neurons) == PLANT
    assert report["n_neurons"] == {"aa": 4, "bb": 4}
    assert report["per_layer"] == {"aa": [2, 2], "bb": [2, 2]}
    assert report["stability_jaccard"] == {"aa": 1.0, "bb": 1.0}
    assert all(v > 2 * MIN_TOKENS for v in report["n_tokens"].values())


def test_ablating_a_languages_neurons_hurts_that_language(planted_run):
    _, _, report = planted_run
    ab = report["ablation"]
    d = ab["delta_bits_per_byte"]
    assert d["aa"]["aa"] > 0.05 and d["bb"]["bb"] > 0.05
    assert d["aa"]["aa"] >= 10 * abs(d["aa"]["bb"])
    assert d["bb"]["bb"] >= 10 * abs(d["bb"]["aa"])
    assert ab["own_most_hurt"] == {"aa": True, "bb": True} and ab["own_most_hurt_rate"] == 1.0
    assert set(ab["base_bits_per_byte"]) == {"aa", "bb"}


def test_ablation_matrix_rows_are_each_languages_ablation(planted_run, tok, held_out):
    """A matrix of one row (bb's neurons, evaluated on both) matches the full run's row; swapping the neuron sets
    swaps the rows."""
    model, neurons, report = planted_run
    m = ablation_matrix(model, tok, {"bb": neurons["aa"]}, held_out)
    assert m.ablated == ["bb"] and m.evaluated == ["aa", "bb"]
    assert m.delta[0] == pytest.approx([report["ablation"]["delta_bits_per_byte"]["aa"][j] for j in ("aa", "bb")],
                                       abs=1e-12)
    assert m.own_most_hurt() == {"bb": False}
    assert m.base == report["ablation"]["base_bits_per_byte"]


def test_ablation_zeroes_exactly_those_neurons_and_restores(planted_run, tok, short_texts):
    model, neurons, _ = planted_run
    ids = torch.tensor([tokenize(tok, {"aa": short_texts["aa"][:1]}).ids["aa"][0]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    before_counts = count_activations(model, tok, short_texts)
    with ablate_neurons(model, neurons["aa"]):
        with torch.no_grad():
            inside = model(input_ids=ids).logits
        counted = count_activations(model, tok, short_texts)
    assert not torch.equal(before, inside)
    for layer, idx in neurons["aa"].items():
        assert int(counted.counts["aa"][layer, idx].sum()) == 0  # the probe sees the zeroed activations
    others = [j for j in range(128) if j not in PLANT["aa"][0]]
    assert torch.equal(counted.counts["aa"][0, others], before_counts.counts["aa"][0, others])  # layer 0: only them
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)
    with pytest.raises(RuntimeError, match="boom"):
        with ablate_neurons(model, {1: [7, 120]}):
            raise RuntimeError("boom")
    assert all(not s.act._forward_hooks for s in ffn_sites(model))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, before)


def test_ablation_refuses_neurons_outside_the_model():
    model = tiny("llama")
    for bad, match in (({2: [0]}, "not a layer"), ({"0": [0]}, "not a layer"), ({0: [64]}, "outside"),
                       ({1: [-1]}, "outside")):
        with pytest.raises(XltError, match=match):
            with ablate_neurons(model, bad):
                pass
    assert all(not s.act._forward_hooks for s in ffn_sites(model))


# -- report and files -------------------------------------------------------------------------------------------------
def test_report_is_json_and_files_round_trip(planted_run, tmp_path):
    _, neurons, report = planted_run
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text)["ablation"]["own_most_hurt_rate"] == 1.0
    assert report["params"]["top_rate"] == 8 / 256 and report["languages"] == ["aa", "bb"]
    paths = write_neurons(neurons, tmp_path)
    assert sorted(p.name for p in paths) == ["aa.json", "bb.json"]
    assert json.loads((tmp_path / "neurons" / "aa.json").read_text()) == {"0": [3, 17], "1": [40, 99]}
    assert as_lists(read_neurons(tmp_path)) == as_lists(neurons)
    with pytest.raises(XltError, match="file name"):
        write_neurons({"../x": neurons["aa"]}, tmp_path)
    with pytest.raises(XltError, match="no neuron sets"):
        read_neurons(tmp_path / "empty")
    bare = neurons_report(neurons)
    assert bare["ablation"] is None and bare["stability_jaccard"] is None and bare["n_shared"] == 0
    partial = neurons_report({"a": {1: torch.tensor([2, 3])}, "b": {0: torch.tensor([1]), 1: torch.tensor([3])}})
    assert partial["per_layer"] == {"a": [0, 2], "b": [1, 1]} and partial["n_shared"] == 1
    assert partial["n_neurons"] == {"a": 2, "b": 2}
