"""``xlt study matrix`` (MonoByte): the byte tokenizer round-trips any text, bits/byte is what it says, a 3-language
toy run has its zero-shot diagonal best in every column and writes a transfer table, bad input."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from xlt.data.toy import toy_parallel
from xlt.errors import XltError
from xlt.study.matrix import EOS, OFFSET, VOCAB, bits_per_byte, decode, encode, run_matrix_study


@pytest.mark.parametrize("text", ["plain ASCII", "中文字符和日本語のかな", "עברית וערבية مكتوبة من اليمين",
                                  "emoji 👩🏽‍🔬🏳️‍🌈", "combining e\u0301 a\u0308 \u0915\u094d\u0937", "", "\x00\x7f\n"])
def test_byte_tokenizer_round_trips(text):
    ids = encode(text)
    assert decode(ids) == text
    assert len(ids) == len(text.encode("utf-8")) and all(OFFSET <= i < VOCAB for i in ids)
    assert decode([EOS] + ids + [EOS, 0]) == text  # special ids are skipped


def test_decode_refuses_invalid_utf8():
    with pytest.raises(UnicodeDecodeError):
        decode([0xC3 + OFFSET])  # a lone lead byte


def test_bits_per_byte_of_a_uniform_model_is_log2_of_the_vocabulary():
    import torch

    from xlt.study.lm import TinyLMOptions, new_model

    model = new_model(VOCAB, TinyLMOptions(hidden=16, layers=1, heads=2), seed=0, max_positions=16)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    rows = np.array([[EOS] + encode("abcdefg"), [EOS] + encode("xyz") + [EOS] + encode("qwe")])
    # every target is predicted with probability 1/VOCAB; EOS targets add cost but do not count as bytes
    n_targets, n_bytes = 7 + 7, 7 + 6
    assert bits_per_byte(model, rows) == pytest.approx(n_targets * math.log2(VOCAB) / n_bytes, rel=1e-6)


@pytest.fixture
def toy_corpus(tmp_path):
    path = tmp_path / "toy.jsonl"
    toy_parallel(path, ("eng", "rus", "hin"), n=3000)
    return f"jsonl:{path}"


def _small(corpus, **kw):
    return dict(corpus=corpus, langs=["eng", "rus", "hin"], control_lang="eng", seq_len=64, pretrain_bytes=80_000,
                finetune_bytes=2_000, eval_bytes=1_200, hidden=48, layers=1, heads=2, batch_size=8, **kw)


def test_three_language_run(tmp_path, toy_corpus):
    out = tmp_path / "m"
    m = run_matrix_study(out, show_progress=False, **_small(toy_corpus))
    zs = np.array(m["zero_shot_bits_per_byte"])
    assert m["sources"] == ["eng", "rus", "hin", "control"] and m["targets"] == ["eng", "rus", "hin"]
    assert zs.shape == (4, 3) and np.all(np.isfinite(zs))
    for j in range(3):  # a model pretrained on the target's language is best on it before fine-tuning
        assert np.argmin(zs[:, j]) == j, zs
    ft, scratch = np.array(m["finetuned_bits_per_byte"]), np.array(m["scratch_bits_per_byte"])
    assert np.allclose(np.array(m["transfer_score"]), scratch[None, :] - ft)
    assert np.all(np.diag(ft[:3]) < scratch)  # pretraining on the target's own language helps
    with open(out / "transfer_table.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and all(r["source"] != r["target"] and r["source"] != "control" for r in rows)
    assert {r["metric"] for r in rows} == {"bits_per_byte"} and {r["direction"] for r in rows} == {"lower"}
    assert (out / "report.html").read_text().count("<img") == 3


def test_identical_settings_give_identical_matrices(tmp_path, toy_corpus):
    a = run_matrix_study(tmp_path / "a", show_progress=False, **_small(toy_corpus, control=False))
    b = run_matrix_study(tmp_path / "b", show_progress=False, **_small(toy_corpus, control=False))
    assert a["finetuned_bits_per_byte"] == b["finetuned_bits_per_byte"]


@pytest.mark.parametrize("bad, says", [({"pretrain_bytes": 10_000_000}, "bytes of pretrain text"),
                                       ({"langs": ["eng"]}, "at least 2"), ({"langs": ["eng", "eng"]}, "repeats"),
                                       ({"langs": ["eng", "xx"]}, "xx")])
def test_bad_input(tmp_path, toy_corpus, bad, says):
    opts = _small(toy_corpus)
    opts.update(bad)
    with pytest.raises(XltError) as err:
        run_matrix_study(tmp_path / "o", show_progress=False, **opts)
    assert says in str(err.value)
    assert not (tmp_path / "o").exists()
