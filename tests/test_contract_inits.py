"""The contract every registered embedding init keeps, for every tokenizer kind, and the transfer of its mapping onto
tiny models of every supported family: a method, tokenizer kind or family added later is tested here without new
test code.

- the mapping has one row per target token and one column per source token, and every row is a fill rule (``mean``,
  ``random``) or non-negative weights summing to 1; special tokens are copied from the source's specials;
- an identical target tokenizer gives back the source embeddings exactly where the method promises it
  (``InitMethod.identity``);
- the same settings give the same mapping (deterministic with a seed);
- applied to a model of any family (tied or untied head), the transferred model computes a loss, every ``vocab_size``
  follows the new vocabulary, and it saves and loads to the same logits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from families import MODEL_CASES, TOKENIZER_KINDS, model_for, tokenizer
from xlt import arch
from xlt.corpora import open_corpus
from xlt.vocab import TransferContext, build_mapping, train_tokenizer, transfer_model
from xlt.vocab.canon import special_token_ids
from xlt.vocab.mapping import FILL_RULES
from xlt.vocab.registry import INITS

#: options that make the data-driven methods work on the tiny corpus (each method takes the keys it declares)
SMALL_DATA = {"fasttext_min_count": 1, "fasttext_epochs": 2, "fasttext_dim": 16, "focus_min_count": 1,
              "focus_epochs": 2, "transtok_min_count": 1}


@pytest.fixture(scope="module")
def corpus(parallel_jsonl):
    return open_corpus(str(parallel_jsonl))


@pytest.fixture(scope="module")
def tokenizers(source_texts, target_texts):
    """Per kind: a source tokenizer and a target tokenizer trained from it (``train_tokenizer``, as xlt adapt does)."""
    out = {}
    for kind in TOKENIZER_KINDS:
        src = tokenizer(kind, source_texts)
        out[kind] = (src, train_tokenizer(src, target_texts, len(src) - 20))
    return out


def _options(name: str) -> dict:
    keys = {s for s in INITS.options(name).__dataclass_fields__}
    return {k: v for k, v in SMALL_DATA.items() if k in keys}


def _ctx(src, tgt, corpus, seed=0):
    return TransferContext(src, tgt, seed=seed, corpus=corpus, source_lang="en", target_lang="sw")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XLT_CACHE", str(tmp_path_factory.getbasetemp() / "xlt-cache"))


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
@pytest.mark.parametrize("name", INITS.names())
def test_init_contract(name, kind, tokenizers, corpus):
    src, tgt = tokenizers[kind]
    opts = INITS.options(name, _options(name))
    m = build_mapping(name, _ctx(src, tgt, corpus), opts)
    assert m.weights.shape == (len(tgt), len(src))
    m.check()  # fill rule or a convex combination, per row
    assert set(m.evidence) - set(FILL_RULES), f"{name} produced only fill rules"
    w = m.weights.tocsr()
    for t in special_token_ids(tgt):  # specials come from specials, one to one
        if m.evidence[t] == "special":
            cols = w.indices[w.indptr[t]:w.indptr[t + 1]]
            assert len(cols) == 1 and cols[0] in special_token_ids(src), (name, t)
    again = build_mapping(name, _ctx(src, tgt, corpus), opts)
    assert (again.weights != m.weights).nnz == 0 and again.evidence == m.evidence, f"{name} is not deterministic"

    # an identical tokenizer: the source embeddings exactly, where the method promises it
    ident = build_mapping(name, _ctx(src, src, corpus), opts)
    emb = torch.randn(len(src), 16, generator=torch.Generator().manual_seed(0))
    from xlt.vocab import mix_rows

    rebuilt = mix_rows(ident, emb, seed=0)
    if INITS.get(name).reproduces_identity(opts):
        assert torch.equal(rebuilt, emb), f"{name} promises the identity for identical tokenizers"
    else:
        assert not torch.equal(rebuilt, emb)


@pytest.mark.parametrize("family,tied", MODEL_CASES)
def test_transfer_onto_every_family(family, tied, tokenizers, corpus, tmp_path):
    """A mapping applied to a model of each family: loss computes, vocab sizes follow, save/load gives the logits."""
    from transformers import AutoModelForCausalLM

    src, tgt = tokenizers["sp-bpe" if family == "gemma3" else "byte-bpe"]
    model = model_for(family, src, tied=tied)
    m = build_mapping("overlap", _ctx(src, tgt, corpus))
    head_before = None if tied else model.get_output_embeddings().weight.detach().clone()
    transfer_model(model, tgt, m, seed=0)
    n = len(tgt)
    assert model.get_input_embeddings().weight.shape[0] == n and model.config.vocab_size == n
    assert all(getattr(mod, "vocab_size", n) == n for mod in model.modules())
    assert arch.is_tied(model) == tied
    if not tied:  # the head went through the same mapping as the input embeddings
        from xlt.vocab import mix_rows

        assert torch.equal(model.get_output_embeddings().weight, mix_rows(m, head_before, seed=1))
    ids = torch.tensor([tgt("kali muna tel", add_special_tokens=False)["input_ids"] * 2])
    out = model(input_ids=ids, labels=ids)
    assert torch.isfinite(out.loss) and out.logits.shape[-1] == n
    model.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(back(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
    assert back.config.vocab_size == n and arch.is_tied(back) == tied


def test_every_init_is_registered_with_options_and_a_description():
    for name in INITS.names():
        spec = INITS.get(name)
        assert spec.description and spec.name == name
        INITS.options(name)  # the declared defaults are valid
    assert np.all([isinstance(INITS.get(n).reproduces_identity(INITS.options(n)), bool) for n in INITS.names()])
