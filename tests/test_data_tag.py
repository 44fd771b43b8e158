"""Johnson et al.'s target-language tags: one token each, mean-initialised, prepended to the source side."""

from __future__ import annotations

import json

import pytest
import torch

from xlt.data.builders.tag import add_tag_tokens, tag_of
from xlt.data.engine import read_records, run_builder
from xlt.errors import XltError


@pytest.fixture
def tiny_llama_factory(source_texts):
    from conftest import byte_bpe_tokenizer

    from xlt.models import tiny_model

    def make(tied=True):
        tok = byte_bpe_tokenizer(source_texts[:200], vocab_size=300)
        model = tiny_model("llama", vocab_size=len(tok), hidden=32, layers=1, tied=tied, seed=0,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        return model, tok
    return make


def test_tag_names():
    assert tag_of("sw") == tag_of("swa") == tag_of("swh") == "<2sw>"
    assert tag_of("fra") == "<2fr>" and tag_of("nya") == "<2ny>"
    assert tag_of("yue") == "<2yue>"  # no ISO 639-1 code


@pytest.mark.parametrize("tied", [True, False])
def test_tags_are_one_token_with_mean_rows(tiny_llama_factory, tied):
    model, tok = tiny_llama_factory(tied=tied)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    out_before = model.get_output_embeddings().weight.detach().clone()
    ids = add_tag_tokens(model, tok, ["<2sw>", "<2fr>"])
    assert ids == [len(tok) - 2, len(tok) - 1]
    w = model.get_input_embeddings().weight
    assert torch.equal(w[: emb_before.shape[0]], emb_before)
    assert torch.allclose(w[ids[0]], emb_before.mean(0)) and torch.allclose(w[ids[1]], emb_before.mean(0))
    assert torch.allclose(model.get_output_embeddings().weight[ids[0]], out_before.mean(0))
    assert tok("<2sw> habari", add_special_tokens=False)["input_ids"][0] == ids[0]
    assert add_tag_tokens(model, tok, ["<2sw>"]) == [ids[0]] and len(tok) == emb_before.shape[0] + 2  # idempotent


def test_builder_prepends_the_target_tag_and_writes_the_model(tmp_path, tiny_llama_factory):
    model, tok = tiny_llama_factory()
    src = tmp_path / "src_model"
    model.save_pretrained(src)
    tok.save_pretrained(src)
    recs = [{"key": "1", "langs": ["eng", "swh"], "origin": "real", "src_text": "hello", "tgt_text": "habari"},
            {"key": "2", "langs": ["eng", "fra"], "tgt_lang": "fra", "origin": "real", "src_text": "hi", "tgt_text": "salut"}]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in recs))
    man = run_builder("tag", tmp_path / "out", input=str(inp), model=str(src))
    got = read_records(tmp_path / "out")
    assert [r["src_text"] for r in got] == ["<2sw> hello", "<2fr> hi"] and [r["tgt_text"] for r in got] == ["habari", "salut"]
    assert set(man["stats"]["tags"]) == {"<2sw>", "<2fr>"}
    from transformers import AutoTokenizer

    tok2 = AutoTokenizer.from_pretrained(tmp_path / "out" / "model")
    assert tok2("<2fr>", add_special_tokens=False)["input_ids"] == [man["stats"]["tags"]["<2fr>"]]
    with pytest.raises(XltError, match="needs a folder output"):
        run_builder("tag", tmp_path / "o.jsonl", input=str(inp), model=str(src))
    with pytest.raises(XltError, match="no text field 'text'"):
        run_builder("tag", tmp_path / "o2.jsonl", input=str(inp), field="text")
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o2.jsonl").exists()
