"""Hedged sampling pools (xlt.infer.pool) and their batched KV-cache decode loop (xlt.infer.decode).

Tiny random models of several families: the greedy row equals ``model.generate(do_sample=False)``; candidates depend
only on (seed, prompt index, member, sample), not on the batch size or the batch's other prompts; a sampled row
follows ``softmax(logits / τ)``; a stop token ends a row without changing the others; bad pools raise one XltError.
"""

from __future__ import annotations

import math

import pytest
import torch

from xlt.errors import XltError
from xlt.eval.bpb import first_token_ids
from xlt.infer.decode import (Candidate, encode_prompts, generate_greedy, generate_pool, length_buckets,
                                stop_token_ids)
from xlt.infer.pool import Pool, PoolMember, parse_pool
from xlt.models import tiny_model

PROMPTS = ["Ka", "Li mu na to we si ra.", "Po de ban kor", "Tel mi zu ha ka li mu na to we si", "Ra po.",
           "Mu na to we si ra po de ban kor tel", "Zu"]
POOL = "greedy,0.3x2,0.7x3,1.0x2"


def _model(arch: str, tok, seed: int = 0):
    return tiny_model(arch, vocab_size=len(tok), hidden=32, layers=2, heads=2, seed=seed,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


@pytest.fixture(scope="module")
def llama(source_tokenizer):
    return _model("llama", source_tokenizer)


def _reference_greedy(model, ids: list[int], n: int) -> list[int]:
    x = torch.tensor([ids])
    y = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False, eos_token_id=None,
                       pad_token_id=0)
    return y[0, len(ids):].tolist()


def _key(c: Candidate):
    return (c.text, c.token_ids, c.member, c.sample, c.temperature, c.finished)


# ----------------------------------------------------------------------------------------------------------- pool


def test_parse_pool_members_size_and_description():
    pool = parse_pool(POOL)
    assert pool.members == (PoolMember(None, 1), PoolMember(0.3, 2), PoolMember(0.7, 3), PoolMember(1.0, 2))
    assert pool.size == 8 and len(pool) == 4 and pool.greedy_row == 0
    assert pool.describe() == "greedy,0.3x2,0.7x3,1.0x2 (8 candidates)"
    assert parse_pool(pool.describe().split(" ")[0]) == pool
    assert [(r.member, r.sample, r.temperature) for r in pool.rows()][:4] == [(0, 0, None), (1, 0, 0.3), (1, 1, 0.3),
                                                                              (2, 0, 0.7)]
    assert parse_pool(" 0.5 , greedy ").greedy_row == 1 and parse_pool("1.5").size == 1


@pytest.mark.parametrize("spec, words", [
    ("", "empty"), (" , ", "empty item"), ("0", "above 0"), ("-0.5x2", "above 0"), ("greedy,0", "above 0"),
    ("0.7x0", "at least 1"), ("0.7x-2", "at least 1"), ("0.7x", "count"), ("0.7x1.5", "count"),
    ("hot", "cannot read"), ("0.7y2", "cannot read"), ("greedyx2", "greedy"), ("greedy,greedy", "more than once"),
])
def test_parse_pool_errors(spec, words):
    with pytest.raises(XltError) as err:
        parse_pool(spec)
    assert words in err.value.problem and err.value.fix


def test_nonpositive_temperature_suggests_greedy_and_pool_checks_members():
    with pytest.raises(XltError) as err:
        parse_pool("greedy,0.0x3")
    assert "greedy" in err.value.fix
    with pytest.raises(XltError):
        PoolMember(float("nan"), 1)
    with pytest.raises(XltError):
        Pool(())


def test_generate_pool_refuses_a_bad_pool_before_running(llama, source_tokenizer):
    for spec in ("", "0", "0.5x0"):
        with pytest.raises(XltError):
            generate_pool(llama, source_tokenizer, PROMPTS, spec)
    with pytest.raises(XltError):
        generate_pool(llama, source_tokenizer, PROMPTS, "greedy", max_new_tokens=0)


# ------------------------------------------------------------------------------------------------------ greedy


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen2", "gpt2"])
def test_greedy_row_equals_model_generate(arch, source_tokenizer):
    """Prompts of different lengths, left-padded in two length buckets, against one unpadded generate each."""
    model = _model(arch, source_tokenizer, seed=1)
    ids = encode_prompts(source_tokenizer, PROMPTS)
    assert len({len(x) for x in ids}) > 3 and max(len(x) for x in ids) + 10 < 32  # within Gemma's sliding window
    pools = generate_pool(model, source_tokenizer, PROMPTS, POOL, max_new_tokens=10, batch_size=4, eos_token_ids=[])
    for p, cands in zip(ids, pools):
        assert len(cands) == 8
        greedy = cands[0]
        assert greedy.temperature is None and not greedy.finished
        assert list(greedy.token_ids) == _reference_greedy(model, p, 10)
        assert greedy.text == source_tokenizer.decode(list(greedy.token_ids), skip_special_tokens=True)


def test_greedy_equals_batched_generate_beyond_gemma_sliding_window(source_tokenizer):
    """Past the sliding window, left padding shortens the window as in batched ``model.generate``: still equal."""
    model = _model("gemma3", source_tokenizer, seed=2)
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(3, len(source_tokenizer), (n,), generator=g).tolist() for n in (40, 25, 33)]
    width = max(map(len, ids))
    x = torch.tensor([[0] * (width - len(p)) + p for p in ids])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ids])
    ref = model.generate(x, attention_mask=mask, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    ours = generate_greedy(model, None, ids, max_new_tokens=8, batch_size=3, eos_token_ids=[])
    assert [list(c.token_ids) for c in ours] == ref[:, width:].tolist()


def test_generate_greedy_and_text_prompts(llama, source_tokenizer):
    ids = encode_prompts(source_tokenizer, PROMPTS)
    assert ids[0][: len(first_token_ids(source_tokenizer))] == first_token_ids(source_tokenizer)
    assert encode_prompts(None, [[5, 6]]) == [[5, 6]]
    with pytest.raises(XltError):
        encode_prompts(None, ["text without a tokenizer"])
    with pytest.raises(XltError):
        encode_prompts(None, [[]])
    from_text = generate_greedy(llama, source_tokenizer, PROMPTS, max_new_tokens=6, eos_token_ids=[])
    from_ids = generate_greedy(llama, source_tokenizer, ids, max_new_tokens=6, eos_token_ids=[])
    assert from_text == from_ids
    pooled = generate_pool(llama, source_tokenizer, PROMPTS, POOL, max_new_tokens=6, eos_token_ids=[])
    assert [p[0] for p in pooled] == from_text


def test_sum_logprob_is_the_model_log_probability(llama, source_tokenizer):
    ids = encode_prompts(source_tokenizer, PROMPTS[:3])
    pools = generate_pool(llama, source_tokenizer, ids, "greedy,1.3x2", max_new_tokens=7, eos_token_ids=[])
    for p, cands in zip(ids, pools):
        for c in cands:
            seq = torch.tensor([p + list(c.token_ids)])
            with torch.no_grad():
                lp = torch.log_softmax(llama(input_ids=seq).logits[0].float(), -1)
            want = sum(float(lp[len(p) - 1 + k, t]) for k, t in enumerate(c.token_ids))
            assert c.sum_logprob == pytest.approx(want, abs=1e-4)


# ------------------------------------------------------------------------------------------------ determinism


def test_same_seed_identical_different_seed_differs(llama, source_tokenizer):
    a = generate_pool(llama, source_tokenizer, PROMPTS, POOL, max_new_tokens=8, seed=7, eos_token_ids=[])
    b = generate_pool(llama, source_tokenizer, PROMPTS, POOL, max_new_tokens=8, seed=7, eos_token_ids=[])
    c = generate_pool(llama, source_tokenizer, PROMPTS, POOL, max_new_tokens=8, seed=8, eos_token_ids=[])
    assert a == b
    assert [p[0] for p in a] == [p[0] for p in c]  # greedy does not depend on the seed
    sampled = [(x.token_ids, y.token_ids) for pa, pc in zip(a, c) for x, y in zip(pa[1:], pc[1:])]
    assert sum(x != y for x, y in sampled) > len(sampled) // 2
    # the samples of one prompt differ from each other (each row has its own generator)
    assert len({x.token_ids for x in a[1][3:6]}) == 3


def test_batch_size_and_batch_company_do_not_change_candidates(llama, source_tokenizer):
    runs = [generate_pool(llama, source_tokenizer, PROMPTS, POOL, max_new_tokens=8, batch_size=bs, seed=3)
            for bs in (1, 3, 8)]
    for run in runs[1:]:
        assert [[_key(c) for c in p] for p in run] == [[_key(c) for c in p] for p in runs[0]]
        for p, q in zip(run, runs[0]):
            assert [c.sum_logprob for c in p] == pytest.approx([c.sum_logprob for c in q], abs=1e-4)
    # the same prompts at the same indices with other company: the same candidates
    other = PROMPTS[:3] + ["Kor tel mi zu ha ka li mu na to we si ra po de ban", "Ha"]
    mixed = generate_pool(llama, source_tokenizer, other, POOL, max_new_tokens=8, batch_size=8, seed=3)
    assert [[_key(c) for c in p] for p in mixed[:3]] == [[_key(c) for c in p] for p in runs[0][:3]]


def test_prompt_keys_seed_samples_wherever_the_prompt_sits(llama, source_tokenizer):
    keys = [f"doc{i}" for i in range(len(PROMPTS))]
    whole = generate_pool(llama, source_tokenizer, PROMPTS, POOL, max_new_tokens=6, seed=2, prompt_keys=keys)
    tail = generate_pool(llama, source_tokenizer, PROMPTS[4:], POOL, max_new_tokens=6, seed=2, prompt_keys=keys[4:])
    assert [[_key(c) for c in p] for p in tail] == [[_key(c) for c in p] for p in whole[4:]]
    by_index = generate_pool(llama, source_tokenizer, PROMPTS[4:], POOL, max_new_tokens=6, seed=2)
    assert [[c.token_ids for c in p[1:]] for p in by_index] != [[c.token_ids for c in p[1:]] for p in whole[4:]]
    with pytest.raises(XltError):
        generate_pool(llama, source_tokenizer, PROMPTS, POOL, prompt_keys=keys[:2])


def test_length_buckets_sort_longest_first_and_cover_every_prompt():
    buckets = length_buckets([3, 9, 1, 9, 5], 2)
    assert buckets == [[1, 3], [4, 0], [2]]


# ------------------------------------------------------------------------------------------------ distribution


def _chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def test_first_sampled_token_follows_tempered_softmax():
    """2,000 rows at τ = 0.6 over a vocabulary of 6: their first tokens against softmax(logits / 0.6) (χ², 5 degrees
    of freedom, 0.1 % critical value 20.5); the same counts must reject the untempered softmax, so the test can fail."""
    vocab, n, temperature = 6, 2000, 0.6
    model = tiny_model("llama", vocab_size=vocab, hidden=16, layers=1, heads=2, tied=False, seed=4)
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.6)
    prompt = [1, 4, 2]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].float()
    pools = generate_pool(model, None, [prompt], f"greedy,{temperature}x{n}", max_new_tokens=1, eos_token_ids=[])
    assert pools[0][0].token_ids == (int(logits.argmax()),)
    counts = torch.bincount(torch.tensor([c.token_ids[0] for c in pools[0][1:]]), minlength=vocab).float()
    tempered, plain = torch.softmax(logits / temperature, -1), torch.softmax(logits, -1)
    assert float(plain.max() - tempered.max()) < -0.05  # the two distributions are far enough apart to tell
    assert _chi_square(counts, tempered) < 20.5
    assert _chi_square(counts, plain) > 20.5


# ---------------------------------------------------------------------------------------------------------- eos


def test_stop_token_ends_a_row_and_leaves_the_others(llama, source_tokenizer):
    free = generate_pool(llama, source_tokenizer, PROMPTS, POOL, max_new_tokens=10, seed=5, eos_token_ids=[])
    stop = free[1][0].token_ids[3]  # the greedy row of prompt 1 emits it at step 4
    stopped = generate_pool(llama, source_tokenizer, PROMPTS, POOL, max_new_tokens=10, seed=5, eos_token_ids=[stop])
    greedy = stopped[1][0]
    first = free[1][0].token_ids.index(stop)
    assert greedy.finished and greedy.token_ids == free[1][0].token_ids[:first]
    assert greedy.text == source_tokenizer.decode(list(greedy.token_ids), skip_special_tokens=True)
    n_finished = 0
    for pf, ps in zip(free, stopped):
        for f, s in zip(pf, ps):
            if stop in f.token_ids:
                k = f.token_ids.index(stop)
                assert s.finished and s.token_ids == f.token_ids[:k]
                n_finished += 1
            else:
                assert not s.finished and s.token_ids == f.token_ids
                assert s.sum_logprob == pytest.approx(f.sum_logprob, abs=1e-4)
    assert n_finished >= 1


def test_stop_tokens_default_to_the_tokenizer_eos(llama, source_tokenizer):
    assert source_tokenizer.eos_token_id in stop_token_ids(llama, source_tokenizer, None)
    assert stop_token_ids(llama, source_tokenizer, []) == []
    assert stop_token_ids(llama, source_tokenizer, 7) == [7]


def test_training_mode_is_restored(source_tokenizer):
    model = _model("llama", source_tokenizer, seed=6).train()
    out = generate_greedy(model, source_tokenizer, PROMPTS[:2], max_new_tokens=4, eos_token_ids=[])
    assert model.training
    assert out == generate_greedy(model.eval(), source_tokenizer, PROMPTS[:2], max_new_tokens=4, eos_token_ids=[])
    assert all(math.isfinite(c.sum_logprob) for c in out)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen2", "gpt2"])
def test_shared_prefix_is_the_same_as_prefix_plus_prompt(arch, source_tokenizer):
    """A prefix run once and copied to every row gives the candidates of the full prompts (same tokens, same
    log-probabilities to float noise), whatever the batch size."""
    model = _model(arch, source_tokenizer, seed=2)
    prefix = encode_prompts(source_tokenizer, ["Ka li mu na to we. Po de ban kor."])[0]
    suffixes = [source_tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    full = generate_pool(model, source_tokenizer, [prefix + s for s in suffixes], POOL, max_new_tokens=6,
                         batch_size=3, eos_token_ids=[], seed=5)
    for bs in (1, 4):
        shared = generate_pool(model, source_tokenizer, suffixes, POOL, max_new_tokens=6, batch_size=bs,
                               eos_token_ids=[], seed=5, prefix=prefix)
        for a, b in zip(full, shared):
            assert [c.token_ids for c in a] == [c.token_ids for c in b]
            assert max(abs(x.sum_logprob - y.sum_logprob) for x, y in zip(a, b)) < 1e-4
    greedy = generate_pool(model, source_tokenizer, suffixes[:2], "greedy", max_new_tokens=6, eos_token_ids=[],
                           prefix=prefix)
    assert list(greedy[1][0].token_ids) == _reference_greedy(model, prefix + suffixes[1], 6)
