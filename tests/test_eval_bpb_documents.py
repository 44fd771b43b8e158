"""Chunked log-probabilities and lm-eval's document bits/byte."""

import json
import math

import pytest
import torch

from conftest import has_package
from families import MODEL_CASES, tokenizer as make_tokenizer
from xlt.eval.bpb import bits_per_byte, document_bits_per_byte, rolling_windows
from xlt.eval.logprobs import target_logprobs
from xlt.models import tiny_model


def _full(model, ids, att, tgt):
    logits = model(input_ids=ids, attention_mask=att).logits.double()
    lp = torch.log_softmax(logits, -1).gather(2, tgt.clamp(min=0)[..., None])[..., 0]
    return torch.where(tgt != -100, lp, torch.zeros_like(lp))


@pytest.mark.parametrize("family,tied", MODEL_CASES)
def test_chunked_logprobs_equal_the_models_own_logits(family, tied):
    model = tiny_model(family, vocab_size=97, hidden=32, layers=2, heads=4, tied=tied).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (3, 12), generator=g)
    att = torch.ones_like(ids)
    att[1, 9:] = 0  # right padding
    tgt = torch.roll(ids, -1, 1)
    tgt[:, -1] = -100
    tgt[1, 8:] = -100
    tgt[0, :4] = -100
    with torch.no_grad():
        want = _full(model, ids, att, tgt)
        got = target_logprobs(model, ids, att, tgt, chunk=5)
    assert got.dtype == torch.float32 and torch.equal(got == 0, tgt == -100)
    assert torch.allclose(got.double(), want, atol=2e-5)


def test_a_head_rescaling_is_applied_or_the_models_logits_are_used():
    model = tiny_model("gemma3", vocab_size=97, hidden=32, layers=1, heads=4).eval()
    model.config.final_logit_softcapping = 0.5  # makes tanh matter on these logits
    ids = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(2))
    tgt = torch.roll(ids, -1, 1)
    tgt[:, -1] = -100
    with torch.no_grad():
        assert torch.allclose(target_logprobs(model, ids, torch.ones_like(ids), tgt).double(),
                              _full(model, ids, torch.ones_like(ids), tgt), atol=2e-5)


def test_rolling_windows_predict_every_token_once_with_disjoint_context():
    toks = list(range(10, 33))
    wins = rolling_windows(toks, prefix=1, max_len=8)
    assert [t for _, cont in wins for t in cont] == toks
    assert wins[0] == ([1], toks[:8])  # disjoint: the first window's context is the prefix token alone
    for ctx, cont in wins:
        assert len(ctx) + len(cont) - 1 <= 8
    # a later window's context ends right before its first predicted token
    for ctx, cont in wins[1:]:
        assert toks.index(cont[0]) == toks.index(ctx[-1]) + 1


def test_all_zero_logits_give_tokens_times_log2_vocab_per_byte(source_tokenizer, source_texts):
    tok = source_tokenizer
    model = tiny_model("llama", vocab_size=len(tok), hidden=32, layers=1, heads=2, tied=False, max_positions=16)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    texts = source_texts[:25]
    r = document_bits_per_byte(model, tok, texts)
    ntok = sum(len(tok.encode(t)) for t in texts)
    nbytes = sum(len(t.encode()) for t in texts)
    assert r.tokens == ntok and r.bytes == nbytes and r.window == 16
    # exact up to the fp32 rounding of ln V in the log-softmax
    assert r.bits_per_byte == pytest.approx(ntok * math.log2(len(tok)) / nbytes, rel=1e-7)
    assert "mode:documents" in r.signature
    assert bits_per_byte(model, tok, texts, mode="documents").bits_per_byte == r.bits_per_byte


def _lm_eval_bpb(model, tok, texts, tmp_path, max_length):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp_path / "task.yaml").write_text(
        "task: xlt_docs_test\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: bits_per_byte\n    aggregation: bits_per_byte\n    higher_is_better: false\n")
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=1, device="cpu", max_length=max_length)
    res = simple_evaluate(model=lm, tasks=["xlt_docs_test"], task_manager=TaskManager(include_path=str(tmp_path)),
                          log_samples=False, bootstrap_iters=0)
    return res["results"]["xlt_docs_test"]["bits_per_byte,none"]


@pytest.mark.skipif(not has_package("lm_eval"), reason="needs the eval extra (lm-eval)")
@pytest.mark.parametrize("kind", [pytest.param("byte-bpe", marks=pytest.mark.heavy), "sp-bpe"])
def test_documents_mode_equals_lm_eval_bits_per_byte(kind, source_texts, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tok = make_tokenizer(kind, source_texts, vocab_size=300)
    tok.bos_token, tok.eos_token = "<s>", "</s>"
    model = tiny_model("llama", vocab_size=len(tok), hidden=32, layers=2, heads=4, max_positions=64).eval()
    texts = source_texts[:12] + [" ".join(source_texts[12:20])]  # the last one needs several windows of 16
    ours = document_bits_per_byte(model, tok, texts, max_len=16, batch_size=5)
    assert ours.window == 16
    assert abs(ours.bits_per_byte - _lm_eval_bpb(model, tok, texts, tmp_path, 16)) < 1e-6


def test_chunked_logprobs_are_closer_to_float64_than_an_fp32_log_softmax():
    """With a large vocabulary, summing the exponentials in one fp32 log-softmax loses precision (lm-eval's way);
    xlt's chunked log-sum-exp keeps the total within 1e-4 nats of float64 and closer than the fp32 log-softmax."""
    model = tiny_model("llama", vocab_size=262_144, hidden=16, layers=1, heads=2, tied=True).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(40)  # spread logits as a trained model's are
    ids = torch.randint(0, 262_144, (2, 40), generator=torch.Generator().manual_seed(4))
    tgt = torch.roll(ids, -1, 1)
    tgt[:, -1] = -100
    att = torch.ones_like(ids)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=att).logits
        f64 = _full(model, ids, att, tgt).sum().item()
        lp32 = torch.log_softmax(logits.float(), -1).gather(2, tgt.clamp(min=0)[..., None])[..., 0]
        fp32 = torch.where(tgt != -100, lp32, torch.zeros_like(lp32)).double().sum().item()
        ours = target_logprobs(model, ids, att, tgt).double().sum().item()
    assert abs(ours - f64) < 1e-4
    assert abs(ours - f64) <= abs(fp32 - f64)


def test_a_peft_model_is_scored_through_its_base_like_the_plain_model():
    """A LoRA model whose B matrices are zero computes the same function as its base: the same log-probabilities,
    to the last bit, through the same chunked path."""
    from peft import LoraConfig, get_peft_model

    from xlt.eval.logprobs import _body_and_head

    base = tiny_model("llama", vocab_size=97, hidden=32, layers=2, heads=4).eval()
    ids = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(5))
    tgt = torch.roll(ids, -1, 1)
    tgt[:, -1] = -100
    with torch.no_grad():
        plain = target_logprobs(base, ids, torch.ones_like(ids), tgt)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).eval()
    assert _body_and_head(peft_model) is not None
    with torch.no_grad():
        wrapped = target_logprobs(peft_model, ids, torch.ones_like(ids), tgt)
    assert torch.equal(plain, wrapped)
