"""Target tokenizers trained from each kind of source tokenizer (tests/families.py): same kind, the source's special
tokens, byte fallback that still works, no reserved placeholders and no merges across SentencePiece pieces."""

from __future__ import annotations

import json
import re

import pytest

from families import TOKENIZER_KINDS, tokenizer
from xlt.errors import XltError
from xlt.vocab import min_vocab_size, tokenizer_kind, train_tokenizer
from xlt.vocab.tokenizer import BYTE_PIECES, carried_special_tokens

#: characters the synthetic languages never use: another script, an astral symbol, accents, a tab
UNSEEN = "Ĥa 한국어 𝔸 ñé\tok!"


@pytest.fixture(scope="module", params=TOKENIZER_KINDS)
def pair(request, source_texts, target_texts):
    src = tokenizer(request.param, source_texts)
    return request.param, src, train_tokenizer(src, target_texts, min_vocab_size(src) + 120)


def _specials(tok) -> dict[str, int]:
    added = tok.backend_tokenizer.get_added_tokens_decoder()
    return {a.content: i for i, a in added.items() if a.special}


def test_same_kind_and_special_tokens(pair):
    kind, src, tgt = pair
    assert tokenizer_kind(tgt) == tokenizer_kind(src)
    assert set(_specials(tgt)) == set(_specials(src))
    for role in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(tgt, role) == getattr(src, role)
        assert tgt.convert_ids_to_tokens(getattr(tgt, role + "_id")) == getattr(src, role)


def test_vocab_size_is_kept(pair):
    kind, src, tgt = pair
    n = min_vocab_size(src) + 120
    if kind == "sp-unigram":  # the Unigram trainer stops when the text has no more pieces to offer
        assert len(tgt) <= n
    else:
        assert len(tgt) == n


def test_round_trip_with_unseen_characters(pair, target_texts):
    kind, _, tgt = pair
    seen = " ".join(target_texts[:5])
    for text in (seen, UNSEEN, f"{seen} {UNSEEN}"):
        ids = tgt(text, add_special_tokens=False)["input_ids"]
        if kind == "sp-unigram" and text != seen:  # no byte fallback: unseen characters can only be <unk>
            assert tgt.unk_token_id in ids
            continue
        assert tgt.unk_token_id not in ids, (kind, tgt.convert_ids_to_tokens(ids))
        assert tgt.decode(ids) == text


def test_byte_fallback_target_has_the_256_byte_pieces(pair):
    kind, src, tgt = pair
    vocab = tgt.get_vocab()
    assert tokenizer_kind(tgt).byte_fallback == (kind == "sp-bpe")
    if kind == "sp-bpe":
        assert all(p in vocab for p in BYTE_PIECES)
        assert tgt.tokenize("한") == ["▁", "<0xED>", "<0x95>", "<0x9C>"]
    else:
        assert not any(p in vocab for p in BYTE_PIECES)


def test_sentencepiece_bpe_merges_stay_within_pieces(source_texts, target_texts):
    """Gemma's and Llama-2's BPE runs over the whole text; the target is trained on SentencePiece's pieces, so no
    token has a "▁" inside or mixes letters with punctuation (none of Gemma-3's 262,144 does)."""
    tgt = train_tokenizer(tokenizer("sp-bpe", source_texts), target_texts, 600)
    tokens = [t for t in tgt.get_vocab() if t not in BYTE_PIECES and t not in _specials(tgt)]
    assert [t for t in tokens if "▁" in t.lstrip("▁")] == []
    assert [t for t in tokens if re.search(r"[a-zA-Z]", t) and re.search(r"[.,!?]", t)] == []
    assert any(t.startswith("▁") and len(t) > 3 for t in tokens)  # whole words are still learned
    assert json.loads(tgt.backend_tokenizer.to_str())["pre_tokenizer"] is None  # the source's pipeline, unchanged


def _with_reserved_tokens(kind: str, texts: list[str], tmp_path):
    """A source like Gemma's: reserved ``<unusedN>`` special tokens and non-special added tokens, saved and loaded."""
    from transformers import AutoTokenizer

    src = tokenizer(kind, texts)
    src.add_tokens(["<h1>", "</h1>"])
    src.add_special_tokens({"extra_special_tokens": ["<start_of_turn>"] + [f"<unused{i}>" for i in range(300)]})
    src.save_pretrained(tmp_path)
    return AutoTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_reserved_placeholders_and_added_tokens_are_not_carried(kind, source_texts, target_texts, tmp_path):
    src = _with_reserved_tokens(kind, source_texts, tmp_path)
    assert len(_specials(src)) == 4 + 1 + 300
    assert carried_special_tokens(src)[-1] == "<start_of_turn>" and len(carried_special_tokens(src)) == 5
    n = min_vocab_size(src) + 120
    tgt = train_tokenizer(src, target_texts, n)
    assert set(_specials(tgt)) == {"<pad>", "<s>", "</s>", "<unk>", "<start_of_turn>"}
    assert "<h1>" not in tgt.get_vocab() and not any(t.startswith("<unused") for t in tgt.get_vocab())
    if kind != "sp-unigram":
        assert len(tgt) == n
    tgt.save_pretrained(tmp_path / "target")
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path / "target")
    assert len(again) == len(tgt) and again.tokenize(UNSEEN) == tgt.tokenize(UNSEEN)


def test_too_small_for_the_byte_pieces(source_texts, target_texts):
    src = tokenizer("sp-bpe", source_texts)
    assert min_vocab_size(src) == 4 + 1 + 256
    with pytest.raises(XltError, match="byte-fallback"):
        train_tokenizer(src, target_texts, 200)


def test_bits_per_byte_starts_every_window_with_the_start_token(source_texts):
    """Gemma's tokenizer starts every text with <bos>, and Gemma needs it at the start of every sequence: the scored
    text follows it, and every later window starts with it too (unscored); documents in a training stream are still
    separated by EOS, and tokenizers without a start token are scored as before."""
    import math

    import torch
    from tokenizers import processors

    from families import model_for
    from xlt.eval import bits_per_byte
    from xlt.eval.bpb import boundary_token_id, first_token_ids, start_token_ids

    tok = tokenizer("sp-bpe", source_texts)
    assert start_token_ids(tok) == [] and first_token_ids(tok) == [tok.eos_token_id]
    bos = tok.bos_token_id
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    assert start_token_ids(tok) == first_token_ids(tok) == [bos] and boundary_token_id(tok) == tok.eos_token_id
    model = model_for("llama", tok).eval()
    texts, window = source_texts[:6], 16
    ids = [bos] + tok("\n".join(texts), add_special_tokens=False)["input_ids"]
    nll = 0.0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, window):
            pre = [] if s == 0 else [bos]
            x = torch.tensor([pre + ids[s: s + window]])
            target = torch.tensor(ids[s + 1: s + window + 1])
            logits = model(x).logits[0, len(pre): len(pre) + len(target)].double()
            nll += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
    r = bits_per_byte(model, tok, texts, window=window)
    assert r.tokens == len(ids) - 1 and abs(r.nats - nll) < 1e-3
    assert abs(r.bits_per_byte - nll / math.log(2) / r.bytes) < 1e-6
    assert f"boundary:bos={bos}|start:bos={bos}|" in r.signature


def test_training_blocks_start_with_the_start_token():
    """Training sequences begin with the start token too (as Gemma saw every sequence); the stream fills the rest."""
    import numpy as np

    from xlt.adapt.data import PackedBlocks

    stream = np.arange(10, 110, dtype=np.int32)
    plain, started = PackedBlocks(stream, 10, 0), PackedBlocks(stream, 10, 0, start=[2])
    assert len(plain) == 10 and len(started) == 11
    batch = started.batch(0, 0, 1, 4)
    assert batch.shape == (4, 10) and (batch[:, 0] == 2).all()
    rows = sorted(tuple(started.sample(k)[1:].tolist()) for k in range(len(started)))
    assert rows == [tuple(range(10 + 9 * i, 19 + 9 * i)) for i in range(11)]  # every stream token once, in order
    assert plain.batch(0, 0, 1, 4).shape == (4, 10)
    with pytest.raises(XltError, match="no room"):
        PackedBlocks(stream, 1, 0, start=[2])
