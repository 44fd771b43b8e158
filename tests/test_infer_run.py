"""``xlt generate`` end to end on a tiny model: records, selections, summary, determinism, bad input."""

from __future__ import annotations

import json

import pytest

from xlt.errors import XltError
from xlt.infer.run import Prompt, conditioning, generate, read_prompts, render_prompt


@pytest.fixture(scope="module")
def tiny_gen(tmp_path_factory, source_texts):
    from conftest import byte_bpe_tokenizer

    from xlt.models import tiny_model

    tok = byte_bpe_tokenizer(source_texts[:300], vocab_size=300)
    model = tiny_model("llama", vocab_size=len(tok), hidden=32, layers=1, seed=0, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    path = tmp_path_factory.mktemp("gen_model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def prompts(tmp_path, source_texts):
    p = tmp_path / "p.jsonl"
    recs = [{"id": f"v{i}", "text": t, "ref": "Habari ya asubuhi, rafiki yangu mpendwa."} for i, t in enumerate(source_texts[:5])]
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return p


def _run(tiny_gen, prompts, out, **kw):
    kw = {"pool": "greedy,0.7x2,1.5x2", "max_new_tokens": 6, "batch_size": 2, **kw}
    return generate(str(tiny_gen), str(prompts), "sw", out, **kw)


def test_records_selections_and_summary(tiny_gen, prompts, tmp_path):
    summary = _run(tiny_gen, prompts, tmp_path / "g.jsonl")
    recs = [json.loads(l) for l in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert [r["key"] for r in recs] == [f"v{i}" for i in range(5)]
    for r in recs:
        assert len(r["candidates"]) == 5 and r["candidates"][0]["temperature"] is None
        assert r["text"] == r["candidates"][r["selected"]["mbr"]]["text"] and r["select"] == "mbr"
        assert r["selected"]["greedy"] == 0 and r["langs"] == ["eng", "swh"]
        assert "Translate the following text from English into Swahili" in r["prompt"]  # no <2sw>: instruction
    assert set(summary["methods"]) == {"greedy", "mbr"} and summary["n"] == 5
    row = summary["methods"]["mbr"]
    assert 0 <= row["off_target"] <= 1 and "chrf" in row and row["chrf_signature"].startswith("nrefs:1")
    assert json.loads((tmp_path / "g.summary.json").read_text())["methods"] == summary["methods"]
    man = json.loads((tmp_path / "g.manifest.json").read_text())
    assert man["command"].startswith("xlt generate ") and man["stats"]["methods"] == summary["methods"]


def test_mbr_choice_is_the_pool_argmax(tiny_gen, prompts, tmp_path):
    from xlt.infer.mbr import mbr_select

    _run(tiny_gen, prompts, tmp_path / "g.jsonl")
    for line in (tmp_path / "g.jsonl").read_text().splitlines():
        r = json.loads(line)
        texts = [c["text"] for c in r["candidates"]]
        assert r["selected"]["mbr"] == mbr_select(texts, greedy_index=0).index


def test_deterministic_in_seed_chunk_and_batch(tiny_gen, prompts, tmp_path):
    a = _run(tiny_gen, prompts, tmp_path / "a.jsonl", seed=3)
    b = _run(tiny_gen, prompts, tmp_path / "b.jsonl", seed=3, chunk_size=1, batch_size=1)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes() and a["methods"] == b["methods"]
    _run(tiny_gen, prompts, tmp_path / "c.jsonl", seed=4)
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()


def test_tag_conditioning(tiny_gen, tmp_path):
    from transformers import AutoTokenizer

    from xlt.data.builders.tag import add_tag_tokens
    from xlt.models import load_model

    tok = AutoTokenizer.from_pretrained(tiny_gen)
    assert conditioning(tok, "sw", "auto") == ("instruction", None)
    with pytest.raises(XltError, match="(?s)no <2sw> token.*xlt data tag"):
        conditioning(tok, "sw", "tag")
    model = load_model(tiny_gen)
    add_tag_tokens(model, tok, ["<2sw>"])
    assert conditioning(tok, "swh", "auto") == ("tag", "<2sw>")
    assert render_prompt(tok, Prompt("1", "hello", None, None), "English", "Swahili", "tag", "<2sw>") == "<2sw> hello"


def test_bad_input(tiny_gen, prompts, tmp_path):
    with pytest.raises(XltError, match="not a number above 0"):
        _run(tiny_gen, prompts, tmp_path / "x.jsonl", pool="greedy,0x2")
    with pytest.raises(XltError, match="pool is empty|sampling pool"):
        _run(tiny_gen, prompts, tmp_path / "x.jsonl", pool="")
    with pytest.raises(XltError, match="needs --evidence-langs"):
        _run(tiny_gen, prompts, tmp_path / "x.jsonl", select="xmbr")
    with pytest.raises(XltError, match="chrF compares characters.*|cannot score candidates"):
        _run(tiny_gen, prompts, tmp_path / "x.jsonl", select="xmbr", evidence_langs=["fr"], utility="chrf")
    with pytest.raises(XltError, match="--lid script"):
        generate(str(tiny_gen), str(prompts), "ny", tmp_path / "x.jsonl")
    (tmp_path / "exists.jsonl").write_text("x\n")
    with pytest.raises(XltError, match="already exists"):
        _run(tiny_gen, prompts, tmp_path / "exists.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_xmbr_with_a_judge_counts_other_language_evidence():
    from xlt.infer.pool import parse_pool
    from xlt.infer.run import Generate

    pool = parse_pool("greedy,1.0x2")
    judge = lambda c, e: [[float(x == y) for y in e] for x in c]  # noqa: E731
    sel = Generate._select(["a b", "c d", "a b c"], {"fra": ["a b c", "a b c"]}, "swh", judge, None, pool)
    assert sel["greedy"] == 0 and sel["mbr"] == 0 and sel["xmbr"] == 2  # all tie alone; the French pool decides


def test_script_lid_run(tiny_gen, prompts, tmp_path):
    s = _run(tiny_gen, prompts, tmp_path / "s.jsonl", lid="script")
    assert s["lid"] == "script" and s["methods"]["greedy"]["off_target_signature"].find("script(LATIN)") > 0


def test_read_prompts_from_jsonl_errors(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": 1, "txt": "x"}\n')
    with pytest.raises(XltError, match="no 'text' or 'prompt'"):
        read_prompts(str(p), "eng", "swh", "test", None)
    p.write_text('{"id": 1, "prompt": "Once upon"}\n')
    (r,) = read_prompts(str(p), "eng", "swh", "test", None)
    assert r.prompt == "Once upon" and r.text is None


def test_chat_prompts_are_not_given_a_second_start_token(tiny_gen):
    from transformers import AutoTokenizer

    from xlt.eval.bpb import first_token_ids
    from xlt.infer.run import encode_prompt

    tok = AutoTokenizer.from_pretrained(tiny_gen)
    plain = encode_prompt(tok, "hello there")
    assert plain[: len(first_token_ids(tok))] == first_token_ids(tok)
    chat = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    ids = encode_prompt(tok, chat)
    assert ids == tok(chat, add_special_tokens=False)["input_ids"] and ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
