"""Upcycling a dense model into a mixture of language-family experts (Apollo-MoE, seed paper 11).

Checks: the family table (Glottolog lineage from urielplus' CSVs, or the user's map); the expert plan and the
--moe-layers specs; the upcycled Qwen2-MoE model computes the dense model's logits at init and reloads with plain
transformers; an MoE MLP equals the dense MLP (renormalised top-k) or the picked weights' sum times it (not
renormalised); hybrid routing forces the language expert into exactly k picks in training only; training with it
updates only the experts the languages are routed to; ``upcycle_run`` writes a complete folder and refuses bad inputs
before loading anything.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from xlt.analyze import langfamilies as fam
from xlt.analyze.upcycle import (HybridRouting, LanguageBatches, hybrid_topk, make_plan, parse_moe_layers, plan_of,
                                 save_upcycled, train_upcycled, upcycle, upcycle_run)
from xlt.errors import XltError
from xlt.models import tiny_model

from conftest import has_package

pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")
needs_uriel = pytest.mark.skipif(not has_package("urielplus"), reason="urielplus (Glottolog tables) not installed")
IDS = torch.randint(0, 128, (2, 13), generator=torch.Generator().manual_seed(0))
FAMILY_MAP = {"en": "Indo-European", "fr": "Indo-European", "de": "Indo-European", "zh": "Sino-Tibetan",
              "sw": "Atlantic-Congo"}


def _dense(arch="llama", tied=True, layers=3, seed=0, **kw):
    return tiny_model(arch, vocab_size=128, hidden=32, layers=layers, heads=4, tied=tied, seed=seed, **kw)


def _logits(m, ids=IDS):
    with torch.no_grad():
        return m(input_ids=ids).logits


def _moe_block(moe, layer):
    return moe.model.layers[layer].mlp


# -- families ----------------------------------------------------------------------------------------------------------
@pytest.fixture()
def csv_dir(tmp_path):
    """A two-file table in urielplus' layout: a lineage, an isolate (empty lineage), an ISO code without a lineage."""
    (tmp_path / "lang_fam_geo.csv").write_text(
        "language_id,language_name,latitude,longitude,lineage\n"
        'stan1293,English,0,0,"Indo-European, Classical Indo-European, Germanic"\n'
        'swah1253,Swahili,0,0,"Atlantic-Congo, Volta-Congo, Benue-Congo"\n'
        "basq1248,Basque,0,0,\n", encoding="utf-8")
    (tmp_path / "uriel_glottocode_map.csv").write_text(
        "iso_code,glottocode\neng,stan1293\nswh,swah1253\neus,basq1248\nfra,stan1290\n", encoding="utf-8")
    fam.glottolog_families.cache_clear()
    return tmp_path


def test_families_from_csv_layout(csv_dir):
    got = fam.language_families(["en", "sw", "eu"], csv_dir=csv_dir)
    assert got == {"eng": "Indo-European", "swh": "Atlantic-Congo", "eus": "Basque"}  # isolate: its own family
    # fra has an ISO->glottocode row but no lineage row: missing, one error naming it and the fix
    with pytest.raises(XltError) as e:
        fam.language_families(["en", "fr", "de"], csv_dir=csv_dir)
    msg = str(e.value)
    assert "fra (French)" in msg and "deu (German)" in msg and "eng" not in msg.split("Fix")[0]
    assert "--family-map" in e.value.fix


def test_family_map_decides_and_fills_gaps(csv_dir, tmp_path):
    path = tmp_path / "families.txt"
    path.write_text("# mine\nfr = Romance\n\nde=Germanic  # comment\n", encoding="utf-8")
    got, source = fam.language_families(["en", "fr", "de"], path, csv_dir=csv_dir, with_source=True)
    assert got == {"eng": "Indo-European", "fra": "Romance", "deu": "Germanic"}
    assert source == {"eng": "glottolog", "fra": "family-map", "deu": "family-map"}
    assert fam.language_families(["sw"], {"swa": "Bantu"}, csv_dir=csv_dir) == {"swh": "Bantu"}  # codes resolved
    path.write_text("fr Romance\n", encoding="utf-8")
    with pytest.raises(XltError, match="line 1 .* is not lang=family"):
        fam.language_families(["fr"], path, csv_dir=csv_dir)


def test_no_table_and_no_map_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(fam, "urielplus_csv_dir", lambda: None)
    with pytest.raises(XltError) as e:
        fam.language_families(["en", "sw"], {"en": "Indo-European"})
    assert "swh (Swahili)" in str(e.value) and "eng" not in str(e.value).split("Fix")[0]
    assert "urielplus" in e.value.fix and "--family-map" in e.value.fix


@needs_uriel
def test_glottolog_families_from_urielplus():
    got = fam.language_families(["en", "fr", "de", "zh", "sw", "ny", "ja", "eu", "ar"])
    assert got == {"eng": "Indo-European", "fra": "Indo-European", "deu": "Indo-European", "cmn": "Sino-Tibetan",
                   "swh": "Atlantic-Congo", "nya": "Atlantic-Congo", "jpn": "Japonic", "eus": "Basque",
                   "arb": "Afro-Asiatic"}
    with pytest.raises(XltError, match=r"que \(Quechua\)"):  # a macrolanguage code Glottolog's ISO map lacks
        fam.language_families(["en", "qu"])


# -- plan and layer specs -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,want", [("last:2", [2, 3]), ("all", [0, 1, 2, 3]), ("first:1", [0]),
                                       ("-2,-1", [2, 3]), ("3, 0", [0, 3]), ([1, -1], [1, 3])])
def test_moe_layer_specs(spec, want):
    assert parse_moe_layers(spec, 4) == want


@pytest.mark.parametrize("spec", ["last:0", "last:5", "last:x", "middle", "1,1", [4], "", "2,a", [True]])
def test_bad_moe_layer_specs(spec):
    with pytest.raises(XltError) as e:
        parse_moe_layers(spec, 4)
    assert e.value.fix


def test_expert_plans():
    langs = ["en", "fr", "de", "zh", "sw"]
    p = make_plan(langs, 4, family_map=FAMILY_MAP)
    assert p.experts == ["Indo-European", "Sino-Tibetan", "Atlantic-Congo"] and p.top_k == 2
    assert p.language_expert == {"eng": 0, "fra": 0, "deu": 0, "cmn": 1, "swh": 2} and p.moe_layers == [2, 3]
    p = make_plan(langs, 4, experts="language", family_map=FAMILY_MAP)
    assert p.num_experts == 5 and p.language_expert["swh"] == 4
    p = make_plan(langs, 4, experts="5", family_map=FAMILY_MAP, top_k=3)
    assert p.experts[3:] == [None, None] and p.top_k == 3 and p.grouping == "family+free"
    assert make_plan(["en"], 4, family_map=FAMILY_MAP).top_k == 1  # one expert: one pick
    with pytest.raises(XltError, match="fewer than the 3 language families"):
        make_plan(langs, 4, experts=2, family_map=FAMILY_MAP)
    with pytest.raises(XltError, match="--top-k 4"):
        make_plan(langs, 4, top_k=4, family_map=FAMILY_MAP)
    with pytest.raises(XltError, match="more than once"):
        make_plan(["sw", "swa"], 4, family_map=FAMILY_MAP)


# -- conversion ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch,tied,layers", [("llama", True, "last:2"), ("llama", False, "all"),
                                              ("qwen2", False, "last:2"), ("mistral", True, [0, 2])])
def test_upcycled_logits_equal_dense_at_init(arch, tied, layers):
    extra = {"sliding_window": None} if arch == "mistral" else {}
    if arch == "mistral":
        import transformers as T

        torch.manual_seed(0)
        dense = T.MistralForCausalLM(T.MistralConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
                                                     num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                                     tie_word_embeddings=tied, **extra)).eval()
    else:
        dense = _dense(arch, tied)
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    moe, plan = upcycle(dense, ["en", "fr", "zh", "sw"], moe_layers=layers, family_map=FAMILY_MAP)
    assert type(moe).__name__ == "Qwen2MoeForCausalLM" and plan.num_experts == 3
    assert (moe.lm_head.weight is moe.model.embed_tokens.weight) == tied
    moe_layers = [i for i, layer in enumerate(moe.model.layers) if hasattr(layer.mlp, "experts")]
    assert moe_layers == plan.moe_layers == parse_moe_layers(layers, 3)
    diff = (_logits(moe) - _logits(dense)).abs().max().item()
    assert diff <= 1e-5, diff
    assert all(torch.equal(v, dense.state_dict()[k]) for k, v in before.items())  # the source is left unchanged
    # the router is seeded: same seed, same router; another seed, another router
    gate = _moe_block(moe, plan.moe_layers[-1]).gate.weight
    assert torch.equal(gate, _moe_block(upcycle(dense, ["en", "fr", "zh", "sw"], moe_layers=layers,
                                                family_map=FAMILY_MAP)[0], plan.moe_layers[-1]).gate.weight)
    assert not torch.equal(gate, _moe_block(upcycle(dense, ["en", "fr", "zh", "sw"], moe_layers=layers, seed=1,
                                                    family_map=FAMILY_MAP)[0], plan.moe_layers[-1]).gate.weight)
    assert 0 < gate.std().item() < 0.05


def _mlp_inputs(n=40, hidden=32):
    return torch.randn(2, n // 2, hidden, generator=torch.Generator().manual_seed(3))


def test_moe_mlp_equals_dense_mlp_when_renormalised():
    dense = _dense()
    moe, plan = upcycle(dense, ["en", "zh", "sw"], family_map=FAMILY_MAP, router_std=1.0)
    x = _mlp_inputs()
    for i in plan.moe_layers:
        block = _moe_block(moe, i)
        with torch.no_grad():
            _, w, picks = block.gate(x.reshape(-1, 32))
            got, want = block(x), dense.model.layers[i].mlp(x)
        assert len(picks.unique()) == 3  # the router spreads tokens over all experts
        assert 0.8 < block.gate.weight.std().item() < 1.2  # drawn from N(0, router_std)
        assert (got - want).abs().max().item() <= 1e-5


def test_moe_mlp_is_scaled_by_picked_weights_without_renormalisation():
    dense = _dense()
    moe, plan = upcycle(dense, ["en", "zh", "sw"], family_map=FAMILY_MAP, norm_topk_prob=False, router_std=0.1)
    assert moe.config.norm_topk_prob is False
    x = _mlp_inputs()
    for i in plan.moe_layers:
        block = _moe_block(moe, i)
        with torch.no_grad():
            _, w, _ = block.gate(x.reshape(-1, 32))
            scale = w.sum(-1).reshape(2, -1, 1)
            got, want = block(x), dense.model.layers[i].mlp(x)
        assert scale.max() < 0.99 and scale.min() > 1 / 3  # top-2 of 3 probabilities: more than a third, below 1
        assert (got - scale * want).abs().max().item() <= 1e-5
        assert (got - want).abs().max().item() > 1e-3


def test_saved_folder_reloads_with_plain_transformers(tmp_path, source_tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeForCausalLM

    dense = _dense()
    moe, plan = upcycle(dense, ["en", "fr", "sw"], family_map=FAMILY_MAP)
    out = save_upcycled(moe, source_tokenizer, tmp_path / "moe")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "upcycle.json"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    mask = os.umask(0)
    os.umask(mask)
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o666 & ~mask}  # ordinary files, not private ones
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert type(reloaded) is Qwen2MoeForCausalLM
    assert torch.equal(_logits(reloaded), _logits(moe))
    assert (_logits(reloaded) - _logits(dense)).abs().max().item() <= 1e-5
    cfg = AutoConfig.from_pretrained(out)
    assert cfg.xlt_upcycle["language_expert"] == {"eng": 0, "fra": 0, "swh": 1}
    assert plan_of(reloaded).as_dict() == plan.as_dict()
    assert cfg.mlp_only_layers == [0] and cfg.shared_expert_intermediate_size == 0 and cfg.qkv_bias is False
    side = json.loads((out / "upcycle.json").read_text())
    assert side["plan"] == plan.as_dict() and side["training"] is None
    with pytest.raises(XltError, match="already exists"):
        save_upcycled(moe, source_tokenizer, out)


def test_refuses_what_qwen2_moe_cannot_compute():
    for arch in ("gemma3", "gpt2", "mixtral"):
        with pytest.raises(XltError) as e:
            upcycle(_dense(arch), ["en"], family_map=FAMILY_MAP)
        assert "Llama-family" in e.value.fix
    with pytest.raises(XltError, match="attention_bias"):
        upcycle(_dense(attention_bias=True), ["en"], family_map=FAMILY_MAP)
    import transformers as T

    qwen = T.Qwen2ForCausalLM(T.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, use_sliding_window=True, sliding_window=8,
                                            max_window_layers=0))
    with pytest.raises(XltError, match="sliding-window"):
        upcycle(qwen, ["en"], family_map=FAMILY_MAP)


# -- hybrid routing -----------------------------------------------------------------------------------------------------
def test_hybrid_topk_rule():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 6, generator=g)
    lang = torch.randint(-1, 6, (500,), generator=g)
    for k in (1, 2, 3):
        probs = logits.softmax(-1)
        plain = probs.topk(k, -1).indices
        for norm in (True, False):
            _, w, idx = hybrid_topk(logits, lang, k, norm)
            has = lang >= 0
            assert (idx[has] == lang[has, None]).any(-1).all()
            assert all(len(set(row)) == k for row in idx.tolist())  # still k distinct experts
            kept = ~has | (plain == lang[:, None]).any(-1)
            assert torch.equal(idx[kept], plain[kept])  # the router's picks stand when they have the language
            forced = ~kept
            assert forced.any() and torch.equal(idx[forced, :-1], plain[forced, :-1])  # the lowest pick is replaced
            want = probs.gather(1, idx)
            torch.testing.assert_close(w, want / want.sum(-1, keepdim=True) if norm else want)


def test_hybrid_routing_only_in_training():
    moe, plan = upcycle(_dense(), ["en", "zh", "sw"], family_map=FAMILY_MAP, router_std=1.0)
    gate = _moe_block(moe, plan.moe_layers[0]).gate
    h = torch.randn(60, 32, generator=torch.Generator().manual_seed(1))
    _, _, plain = gate(h)
    with HybridRouting(moe) as routing:
        moe.train()
        with pytest.raises(XltError, match="set_languages"):
            gate(h)
        for lang, expert in (("en", 0), ("zh", 1), ("swh", 2)):
            routing.set_languages(lang)
            _, w, picks = gate(h)
            assert (picks == expert).any(-1).all() and picks.shape == (60, 2)
            assert all(len(set(r)) == 2 for r in picks.tolist())
        assert not torch.equal(picks, plain)  # the rule did change some tokens' picks
        moe.eval()
        assert torch.equal(gate(h)[2], plain)  # eval: the router alone, languages or not
        # per-sequence labels, through the whole model: every token of a row has its row's expert
        moe.train()
        routing.set_languages(["zh", "sw"])
        seen = []
        hook = gate.register_forward_hook(lambda m, a, out: seen.append(out[2]))
        moe(input_ids=IDS)
        hook.remove()
        rows = seen[0].reshape(2, -1, 2)
        assert (rows[0] == 1).any(-1).all() and (rows[1] == 2).any(-1).all()
        with pytest.raises(XltError, match="not in this model's upcycling plan"):
            routing.set_languages("de")
    assert torch.equal(gate(h)[2], plain)  # after the context: plain routing in training mode too


# -- training -------------------------------------------------------------------------------------------------------------
def _upcycled_for_training(tokenizer):
    dense = tiny_model("llama", vocab_size=len(tokenizer), hidden=32, layers=2, heads=2, seed=0)
    # 3 experts for 2 families, top-1: hybrid routing sends every token to its language's expert alone
    return upcycle(dense, ["en", "sw"], experts=3, top_k=1, family_map={"en": "A", "sw": "B"})


def test_training_updates_only_the_language_experts(tmp_path, source_tokenizer, source_texts, target_texts):
    moe, plan = _upcycled_for_training(source_tokenizer)
    before = {k: v.clone() for k, v in moe.state_dict().items()}
    texts = {"en": source_texts[:200], "sw": target_texts[:200]}
    kw = dict(batch_size=2, seq_len=32, lr=1e-2, weight_decay=0.0, seed=4, show_progress=False)
    res = train_upcycled(moe, source_tokenizer, texts, 4, out=tmp_path / "out", **kw)
    assert [h["language"] for h in res["history"]] == ["eng", "swh", "eng", "swh"]
    assert res["languages"]["swh"]["expert"] == 1 and res["languages"]["eng"]["tokens"] > 0
    assert not moe.training
    for i in plan.moe_layers:
        for name in ("gate_up_proj", "down_proj"):
            key = f"model.layers.{i}.mlp.experts.{name}"
            new, old = moe.state_dict()[key], before[key]
            assert not torch.equal(new[0], old[0]) and not torch.equal(new[1], old[1])  # en's and sw's experts
            assert torch.equal(new[2], old[2])  # the free expert: never picked under hybrid top-1 routing
            assert not torch.equal(new[0], new[1])  # the two language experts have diverged
    saved = json.loads((tmp_path / "out" / "upcycle.json").read_text())
    assert saved["training"]["history"] == res["history"] and saved["plan"]["experts"] == ["A", "B", None]
    from transformers import AutoModelForCausalLM

    assert torch.equal(_logits(AutoModelForCausalLM.from_pretrained(tmp_path / "out")), _logits(moe))
    # deterministic: the same seed gives the same weights
    again, _ = _upcycled_for_training(source_tokenizer)
    train_upcycled(again, source_tokenizer, texts, 4, **kw)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in moe.state_dict().items())
    with pytest.raises(XltError, match="not in this model's upcycling plan"):
        train_upcycled(again, source_tokenizer, {"fr": texts["en"]}, 1, **kw)


def test_language_batches_alternate_and_announce():
    class Blocks:
        def __init__(self, base):
            self.base = base

        def sample(self, k):
            return torch.full((4,), self.base + k)

    moe, plan = upcycle(_dense(), ["en", "sw"], family_map=FAMILY_MAP)
    routing = HybridRouting(moe)
    data = LanguageBatches({"eng": Blocks(0), "swh": Blocks(1000)}, routing)
    b = data.batch(3, 0, 1, 2)  # step 3: the second batch of sw (blocks 2, 3)
    assert b[:, 0].tolist() == [1002, 1003] and routing._labels.item() == 1
    b = data.batch(3, 1, 2, 2)  # step 3, micro 1 of 2: global micro-batch 7
    assert b[:, 0].tolist() == [1006, 1007] and data.language_of(3, 1, 2) == "swh"


# -- the CLI's entry point ------------------------------------------------------------------------------------------------
@pytest.fixture()
def tiny_source_dir(tmp_path, source_tokenizer):
    """An untrained tiny Llama with the byte-level BPE tokenizer, saved as an HF folder (a source for upcycle_run)."""
    tok = source_tokenizer
    model = tiny_model("llama", vocab_size=len(tok), hidden=32, layers=2, heads=2, seed=0,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    path = tmp_path / "source"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_upcycle_run_writes_a_reloadable_folder(tmp_path, tiny_source_dir, parallel_jsonl):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "moe"
    res = upcycle_run(str(tiny_source_dir), out, "en,sw", moe_layers="last:1", train_steps=2,
                      family_map={"en": "Indo-European", "sw": "Atlantic-Congo"}, show_progress=False,
                      corpus=f"jsonl:{parallel_jsonl}", batch_size=2, seq_len=32)
    assert res["plan"]["language_expert"] == {"eng": 0, "swh": 1} and res["plan"]["source"] == str(tiny_source_dir)
    assert len(res["training"]["history"]) == 2
    saved = json.loads((out / "upcycle.json").read_text())
    assert saved["plan"] == res["plan"] and saved["training"]["steps"] == 2
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.mlp_only_layers == [0] and model.config.num_experts == 2
    with pytest.raises(XltError, match="already exists"):
        upcycle_run(str(tiny_source_dir), out, "en,sw", family_map={"en": "A", "sw": "B"}, train_steps=0)
    out2 = tmp_path / "untrained"
    upcycle_run(str(tiny_source_dir), out2, "en,sw", family_map={"en": "A", "sw": "B"}, train_steps=0)
    assert json.loads((out2 / "upcycle.json").read_text())["training"] is None


def test_upcycle_run_refuses_bad_input_before_loading(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-model"  # the errors below come before the source is looked at
    with pytest.raises(XltError, match="--moe-layers 'last:two'"):
        upcycle_run(missing, tmp_path / "a", "en", moe_layers="last:two", family_map={"en": "A"})
    with pytest.raises(XltError, match="--experts 'families'"):
        upcycle_run(missing, tmp_path / "a", "en", experts="families", family_map={"en": "A"})
    monkeypatch.setattr(fam, "urielplus_csv_dir", lambda: None)
    with pytest.raises(XltError, match=r"swh \(Swahili\)") as e:
        upcycle_run(missing, tmp_path / "a", "en,sw", family_map={"en": "A"})
    assert "--family-map" in e.value.fix
    (tmp_path / "b").mkdir()
    with pytest.raises(XltError, match="already exists"):
        upcycle_run(missing, tmp_path / "b", "en", family_map={"en": "A"})
