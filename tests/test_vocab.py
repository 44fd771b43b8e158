import copy

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conftest import byte_bpe_tokenizer
from xlt.errors import XltError
from xlt.models import tiny_model
from xlt.vocab import (TransferContext, TransferMapping, build_mapping, canonical_vocab, get_init, mix_rows,
                       parse_inits, tokenizer_kind, train_tokenizer, transfer_model)
from xlt.vocab.canon import TokenizerKind, canonical_token, to_model_form


def _ids(tok, text):
    return torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])


BYTE = TokenizerKind("BPE", byte_level=True, metaspace=False, byte_fallback=False, continuing_prefix=None)
SPM = TokenizerKind("Unigram", byte_level=False, metaspace=True, byte_fallback=True, continuing_prefix=None)
WP = TokenizerKind("WordPiece", byte_level=False, metaspace=False, byte_fallback=False, continuing_prefix="##")


@pytest.mark.parametrize("kind,token,expected", [
    (BYTE, "ĠHaus", b" Haus"), (SPM, "▁Haus", b" Haus"), (WP, "Haus", b" Haus"), (WP, "##haus", b"haus"),
    (SPM, "<0x41>", b"A"), (BYTE, "Ã¤", "ä".encode()), (BYTE, "Haus", b"Haus"), (SPM, "haus", b"haus"),
])
def test_canonical_forms(kind, token, expected):
    assert canonical_token(token, kind) == expected


@pytest.mark.parametrize("kind,data", [(BYTE, b" Haus"), (SPM, b" Haus"), (WP, b" Haus"), (WP, b"haus"), (BYTE, "ä".encode())])
def test_model_form_round_trip(kind, data):
    assert canonical_token(to_model_form(data, kind), kind) == data


def test_partial_utf8_only_where_expressible():
    assert to_model_form(b"\xc3", BYTE) == "Ã"
    assert to_model_form(b"\xc3", SPM) == "<0xC3>"
    assert to_model_form(b"\xc3", WP) is None


def test_kind_detection(source_tokenizer):
    k = tokenizer_kind(source_tokenizer)
    assert k.byte_level and k.model == "BPE" and k.family == "byte-level BPE"


def test_kind_detection_for_each_family(source_texts):
    """The kind is read from the pipeline's components and the model's options, for every model type."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    assert tokenizer_kind(unigram_metaspace_tokenizer(source_texts)) == TokenizerKind("Unigram", False, True, False, None)
    uni_bf = Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0), ("<0x41>", -2.0)], 0, True))
    uni_bf.pre_tokenizer = pre_tokenizers.Metaspace()
    assert tokenizer_kind(uni_bf) == TokenizerKind("Unigram", False, True, True, None)
    wp = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]", continuing_subword_prefix="@@"))
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    assert tokenizer_kind(wp) == TokenizerKind("WordPiece", False, False, False, "@@")
    bpe = Tokenizer(models.BPE({"<unk>": 0, "<0x41>": 1, "a": 2}, [], unk_token="<unk>", byte_fallback=True))
    bpe.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    assert tokenizer_kind(bpe) == TokenizerKind("BPE", False, True, True, None)


def unigram_metaspace_tokenizer(texts, vocab_size=300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "</s>"],
                                                           unk_token="<unk>", show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")


def _model_for(tok, arch="llama", tied=True, seed=0):
    return tiny_model(arch, vocab_size=len(tok), hidden=32, layers=1, heads=2, tied=tied, seed=seed,
                      eos_token_id=tok.eos_token_id)


@pytest.mark.parametrize("arch,tied", [("llama", True), ("llama", False), ("gpt2", True), ("gpt2", False)])
def test_identical_tokenizer_overlap_reproduces_logits_exactly(source_tokenizer, arch, tied):
    tok = source_tokenizer
    model = _model_for(tok, arch, tied)
    x = _ids(tok, "Kali muna tosi. Banwe korhate!")
    ref = model(x).logits
    mapping = build_mapping("overlap", TransferContext(tok, tok))
    assert set(mapping.evidence) == {"overlap", "special"}
    new = transfer_model(copy.deepcopy(model), tok, mapping)
    assert torch.equal(new(x).logits, ref)
    assert (new.get_output_embeddings().weight is new.get_input_embeddings().weight) == tied


def test_overlap_across_tokenizer_families(source_texts, source_tokenizer):
    """A SentencePiece-style target (▁) finds the byte-level source's Ġ tokens as overlap."""
    tgt = unigram_metaspace_tokenizer(source_texts)
    mapping = build_mapping("overlap", TransferContext(source_tokenizer, tgt))
    src_forms = {f: i for i, f in enumerate(canonical_vocab(source_tokenizer)) if f is not None}
    copied = [i for i, e in enumerate(mapping.evidence) if e == "overlap"]
    assert len(copied) > 50
    for i in copied:
        form = canonical_vocab(tgt)[i]
        assert mapping.weights[i, src_forms[form]] == 1.0


def test_pieces_rows_are_the_mean_of_source_pieces(source_tokenizer, target_texts):
    src = source_tokenizer
    tgt = byte_bpe_tokenizer(target_texts, 450)
    model = _model_for(src)
    mapping = build_mapping("overlap", TransferContext(src, tgt))
    pieces_rows = [i for i, e in enumerate(mapping.evidence) if e == "pieces"]
    assert pieces_rows, "target vocabulary should have tokens the source lacks"
    E = model.get_input_embeddings().weight.detach()
    new = mix_rows(mapping, E, seed=0)
    kind = tokenizer_kind(src)
    for i in pieces_rows[:50]:
        form = canonical_vocab(tgt)[i]
        ids = [t.id for t in src.backend_tokenizer.model.tokenize(to_model_form(form, kind))]
        assert len(ids) > 1
        torch.testing.assert_close(new[i], E[ids].mean(0), rtol=0, atol=1e-6)
    mapping.check()  # rows sum to 1, non-negative


def test_special_tokens_mapped_by_role(source_tokenizer, source_texts):
    tgt = unigram_metaspace_tokenizer(source_texts)  # "</s>" is its eos; source eos is "<|im_end|>"
    mapping = build_mapping("mean", TransferContext(source_tokenizer, tgt))
    eos_t, eos_s = tgt.eos_token_id, source_tokenizer.eos_token_id
    assert mapping.evidence[eos_t] == "special" and mapping.weights[eos_t, eos_s] == 1.0


def test_random_rows_match_source_statistics():
    g = torch.Generator().manual_seed(0)
    E = torch.randn(50, 8, generator=g) * torch.linspace(0.5, 3, 8) + torch.arange(8.0)
    n = 20000
    mapping = TransferMapping(sp.csr_matrix((n, 50)), ["random"] * n, "random")
    new = mix_rows(mapping, E, seed=3)
    torch.testing.assert_close(new.mean(0), E.mean(0), atol=0.06, rtol=0)
    torch.testing.assert_close(new.std(0), E.std(0), atol=0.06, rtol=0.02)
    assert torch.isfinite(new).all()


def test_mean_rows_and_no_nan(source_tokenizer, target_texts):
    tgt = byte_bpe_tokenizer(target_texts, 450)
    model = _model_for(source_tokenizer)
    E = model.get_input_embeddings().weight.detach()
    for name in ("mean", "overlap", "random"):
        new = mix_rows(build_mapping(name, TransferContext(source_tokenizer, tgt)), E, 0)
        assert torch.isfinite(new).all() and (new.abs().sum(1) > 0).all()
    new = mix_rows(build_mapping("mean", TransferContext(source_tokenizer, tgt)), E, 0)
    torch.testing.assert_close(new[-1], E.mean(0))


def test_deterministic_with_seed_despite_global_rng(source_tokenizer, target_texts):
    tgt = byte_bpe_tokenizer(target_texts, 450)
    E = _model_for(source_tokenizer).get_input_embeddings().weight.detach()
    m = build_mapping("random", TransferContext(source_tokenizer, tgt, seed=5))
    a = mix_rows(m, E, seed=5)
    torch.manual_seed(1234), np.random.seed(99), torch.rand(7)
    b = mix_rows(m, E, seed=5)
    assert torch.equal(a, b)
    assert not torch.equal(a, mix_rows(m, E, seed=6))


def test_tied_head_stays_tied_after_save_and_load(tmp_path, source_tokenizer, target_texts):
    from transformers import AutoModelForCausalLM

    tgt = byte_bpe_tokenizer(target_texts, 450)
    model = transfer_model(_model_for(source_tokenizer), tgt, build_mapping("overlap", TransferContext(source_tokenizer, tgt)))
    assert model.config.vocab_size == len(tgt) and model.config.eos_token_id == tgt.eos_token_id
    model.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert back.lm_head.weight.data_ptr() == back.model.embed_tokens.weight.data_ptr()
    x = _ids(tgt, "Kali muna.")
    assert torch.equal(back(x).logits, model(x).logits)


def test_untied_head_gets_the_same_mapping(source_tokenizer, target_texts):
    tgt = byte_bpe_tokenizer(target_texts, 450)
    model = _model_for(source_tokenizer, tied=False)
    E_out = model.get_output_embeddings().weight.detach().clone()
    mapping = build_mapping("overlap", TransferContext(source_tokenizer, tgt))
    new = transfer_model(model, tgt, mapping)
    torch.testing.assert_close(new.get_output_embeddings().weight.detach(), mix_rows(mapping, E_out, 1))


def test_mapping_save_load(tmp_path, source_tokenizer, target_texts):
    tgt = byte_bpe_tokenizer(target_texts, 450)
    m = build_mapping("overlap", TransferContext(source_tokenizer, tgt))
    m.save(tmp_path / "w.npz")
    back = TransferMapping.load(tmp_path / "w.npz")
    assert back.evidence == m.evidence and (back.weights != m.weights).nnz == 0
    s = m.summary()
    assert sum(s["rows_by_evidence"].values()) == len(tgt)


def test_unknown_init_lists_valid_ones():
    with pytest.raises(XltError) as e:
        get_init("wechsle")
    assert "overlap" in e.value.fix and "random" in e.value.fix
    with pytest.raises(XltError):
        parse_inits("overlap,nope")


def test_vocab_size_smaller_than_specials(source_tokenizer, target_texts):
    with pytest.raises(XltError) as e:
        train_tokenizer(source_tokenizer, target_texts, 2)
    assert "smaller than the 3 special tokens" in e.value.problem
    with pytest.raises(XltError, match="initial alphabet"):
        train_tokenizer(source_tokenizer, target_texts, 100)


def test_train_tokenizer_same_family_and_specials(source_tokenizer, target_texts):
    tgt = train_tokenizer(source_tokenizer, target_texts, 350)
    assert tokenizer_kind(tgt) == tokenizer_kind(source_tokenizer)
    assert len(tgt) == 350
    for role in ("eos_token", "bos_token", "unk_token"):
        assert getattr(tgt, role) == getattr(source_tokenizer, role)
        assert getattr(tgt, role + "_id") == getattr(source_tokenizer, role + "_id")


def test_leave_one_out_never_uses_the_tokens_own_row(source_tokenizer, target_texts):
    from xlt.vocab.compare import holdout_sample, leave_one_out

    tgt = byte_bpe_tokenizer(target_texts, 450)
    model = _model_for(source_tokenizer)
    E = model.get_input_embeddings().weight
    ctx = TransferContext(source_tokenizer, tgt, seed=0)
    sample = holdout_sample(ctx, 40)
    assert len(sample) == 40 and all(canonical_vocab(tgt)[t] == canonical_vocab(source_tokenizer)[s] for t, s in sample.items())
    r = leave_one_out("overlap", ctx, E, 40)
    assert r["tokens"] == 40 and r["mean_cosine"] < 0.99  # FVT would otherwise split each token into itself
    m = leave_one_out("mean", ctx, E, 40)
    expected = torch.nn.functional.cosine_similarity(E.detach().double().mean(0, keepdim=True),
                                                     E.detach().double()[list(sample.values())]).mean().item()
    assert m["mean_cosine"] == pytest.approx(expected, abs=1e-9)


def test_held_out_shared_token_is_split_by_its_last_merge(source_tokenizer, target_texts):
    """FVT on a held-out shared token: the mean of the two source tokens whose BPE merge makes it, never itself."""
    from xlt.vocab.compare import holdout_sample

    tgt = byte_bpe_tokenizer(target_texts, 450)
    ctx = TransferContext(source_tokenizer, tgt, seed=0)
    sample = holdout_sample(ctx, 40)
    merges = source_tokenizer.backend_tokenizer.to_str()
    import json

    model = json.loads(merges)["model"]
    vocab = model["vocab"]
    made_by = {}
    for m in model["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        made_by.setdefault(vocab[a + b], (vocab[a], vocab[b]))
    mapping = build_mapping("overlap", TransferContext(source_tokenizer, tgt, seed=0, holdout=frozenset(sample)))
    W = mapping.weights.tocsr()
    checked = 0
    for t, s in sample.items():
        row = W[t]
        if s in made_by:  # multi-byte tokens: exactly the merge's two parts, half each (or one part twice)
            a, b = made_by[s]
            expected = {a: 0.5, b: 0.5} if a != b else {a: 1.0}
            assert dict(zip(row.indices.tolist(), row.data.tolist())) == pytest.approx(expected)
            assert mapping.evidence[t] == "pieces"
            checked += 1
        else:  # a single byte has no smaller pieces: the mean row
            assert row.nnz == 0 and mapping.evidence[t] == "mean"
    assert checked >= 5
