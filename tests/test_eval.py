import math

import torch

from conftest import byte_bpe_tokenizer
from xlt.eval import bits_per_byte, boundary_token_id, prompts_from, truncate_texts
from xlt.eval.tokenization import premium
from xlt.models import tiny_model
from xlt.vocab import fertility


def test_uniform_model_gives_log2_vocab_bits_per_token(source_tokenizer, source_texts):
    tok = source_tokenizer
    model = tiny_model("llama", vocab_size=len(tok), hidden=32, layers=1, heads=2, tied=False)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # all logits 0: every token costs ln V nats
    texts = source_texts[:40]
    r = bits_per_byte(model, tok, texts, window=64)
    n_bytes = len("\n".join(texts).encode())
    n_tokens = len(tok("\n".join(texts), add_special_tokens=False)["input_ids"])
    assert r.bytes == n_bytes and r.tokens == n_tokens
    assert abs(r.bits_per_byte - n_tokens * math.log2(len(tok)) / n_bytes) < 1e-9 * n_tokens


def test_single_window_equals_manual_computation(source_tokenizer, source_texts):
    tok = source_tokenizer
    model = tiny_model("llama", vocab_size=len(tok), hidden=32, layers=1, heads=2)
    texts = source_texts[:5]
    ids = [boundary_token_id(tok)] + tok("\n".join(texts), add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(x).logits[0, :-1].double(), -1)
    nll = -logp[torch.arange(len(ids) - 1), x[0, 1:]].sum().item()
    r = bits_per_byte(model, tok, texts, window=len(ids) + 5)
    assert abs(r.nats - nll) < 1e-3 and abs(r.bits_per_byte - nll / math.log(2) / r.bytes) < 1e-6


def test_every_token_scored_once_whatever_the_window(source_tokenizer, source_texts):
    model = tiny_model("llama", vocab_size=len(source_tokenizer), hidden=32, layers=1, heads=2)
    a = bits_per_byte(model, source_tokenizer, source_texts[:30], window=16)
    b = bits_per_byte(model, source_tokenizer, source_texts[:30], window=1000)
    assert a.tokens == b.tokens and a.bytes == b.bytes


def test_fertility_and_premium(source_tokenizer, source_texts, target_texts):
    f = fertility(source_tokenizer, ["ka li", "mu"])
    assert f["words"] == 3 and f["bytes"] == 7 and f["tokens"] >= 3
    tgt = byte_bpe_tokenizer(target_texts, 450)
    # the target tokenizer is better on the target language than the source tokenizer
    assert fertility(tgt, target_texts[:100])["tokens_per_word"] < fertility(source_tokenizer, target_texts[:100])["tokens_per_word"]
    assert premium(source_tokenizer, source_texts[:50], source_tokenizer, source_texts[:50]) == 1.0


def test_truncate_and_prompts():
    texts = ["a" * 10] * 10
    assert len(truncate_texts(texts, 25)) == 2 and len(truncate_texts(texts, 1)) == 1 and len(truncate_texts(texts, None)) == 10
    p = prompts_from(["one two three four five six seven eight"] * 9, n=3, words=4)
    assert p == ["one two three four"] * 3
