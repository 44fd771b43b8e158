"""Language/task adapter composition: LoRA stacks, exact composites, bottleneck + invertible adapters."""

import copy

import pytest
import torch

from xlt.adapt.compose import (AdapterStack, InvertibleAdapter, Stack, exact_composite, load_lora_stack, stack_lora)
from xlt.adapt.methods import fingerprint, get_method
from xlt.errors import XltError

from tiny_llama import IDS, _logits, _model


def _two_loras(base):
    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"]),
                        adapter_name="lang/sw")
    pm.add_adapter("task/x", LoraConfig(r=4, lora_alpha=2, target_modules=["q_proj", "up_proj"]))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return pm


def test_lora_stack_equals_the_sum_of_deltas_and_the_exact_composite_equals_the_stack():
    base = _model()
    pm = _two_loras(base)
    stack_lora(pm, ["lang/sw", "task/x"])
    stacked = _logits(pm)
    # by hand: W + Σ s_i B_i A_i on each targeted layer of a plain copy
    plain = copy.deepcopy(base)
    mods = dict(plain.named_modules())
    with torch.no_grad():
        for n, m in pm.named_modules():
            if hasattr(m, "lora_A"):
                target = mods[n.replace("base_model.model.", "")]
                for a in ("lang/sw", "task/x"):
                    if a in m.lora_A:
                        target.weight += m.scaling[a] * m.lora_B[a].weight @ m.lora_A[a].weight
    assert torch.allclose(stacked, _logits(plain), atol=1e-5)
    assert not torch.allclose(stacked, _logits(base), atol=1e-3)
    exact_composite(pm, ["lang/sw", "task/x"], "task/x@sw")
    pm.base_model.set_adapter("task/x@sw")
    assert torch.allclose(_logits(pm), stacked, atol=1e-6)
    with pytest.raises(XltError, match=r"adapter\(s\) \['lang/de'\] are not loaded") as e:
        stack_lora(pm, ["lang/de", "task/x"])
    assert "lang/sw" in e.value.fix


def test_stack_training_freezes_the_language_adapter():
    pm = _two_loras(_model())
    stack_lora(pm, ["lang/sw", "task/x"], trainable=["task/x"])
    pm.train()
    pm(input_ids=IDS, labels=IDS).loss.backward()
    for n, p in pm.named_parameters():
        assert (p.grad is not None) == ("task/x" in n and "lora_" in n), n


def test_loading_a_stack_checks_the_base_model(tmp_path):
    base, other = _model(1), _model(2)
    base.save_pretrained(tmp_path / "base")
    meth = get_method("lora", {"r": 2, "target_modules": ["q_proj"]})
    for name, b in (("lang_sw", base), ("task_x", base), ("alien", other)):
        lm = meth.prepare(copy.deepcopy(b))
        with torch.no_grad():
            for n, p in lm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.1)
        meth.save(lm, tmp_path / name, str(tmp_path / "base"), fingerprint(b))
    pm = load_lora_stack([tmp_path / "lang_sw", tmp_path / "task_x"])
    assert set(pm.peft_config) == {"lang_sw", "task_x"}
    with pytest.raises(XltError, match="trained on different base models"):
        load_lora_stack([tmp_path / "lang_sw", tmp_path / "alien"])


def test_zero_initialised_adapters_leave_outputs_unchanged_and_stacks_swap():
    m = _model()
    ref = _logits(m)
    st = AdapterStack(m)
    st.add("lang/en", invertible=True, seed=1)
    st.add("lang/sw", invertible=True, seed=2)
    st.add("task/x", seed=3)
    st.set_active(Stack("lang/sw", "task/x"))
    assert torch.equal(_logits(m), ref)  # zero up-projections, zero coupling outputs: identity
    with torch.no_grad():
        for p in st.parameters():
            p.normal_(0, 0.1)
    out_sw = _logits(m)
    st.set_active(Stack("lang/en", "task/x"))
    out_en = _logits(m)
    assert not torch.allclose(out_sw, ref, atol=1e-4) and not torch.allclose(out_sw, out_en, atol=1e-4)
    with pytest.raises(XltError, match=r"\['lang/de'\] are not in the stack"):
        st.set_active(Stack("lang/de", "task/x"))
    st.set_active(None)
    assert torch.equal(_logits(m), ref)  # the base weights were never touched
    # only adapter parameters get gradients when the base is frozen
    for p in m.parameters():
        p.requires_grad_(False)
    st.set_active(Stack("lang/sw", "task/x"))
    m(input_ids=IDS, labels=IDS).loss.backward()
    assert all(p.grad is not None for p in st.parameters_of("lang/sw") + st.parameters_of("task/x"))
    assert all(p.grad is None for p in st.parameters_of("lang/en"))
    st.detach()
    assert torch.equal(_logits(m), ref)


def test_invertible_adapter_inverts_and_adapters_save_and_load(tmp_path):
    inv = InvertibleAdapter(32)
    with torch.no_grad():
        for p in inv.parameters():
            p.normal_(0, 0.2)
    x = torch.randn(4, 7, 32, generator=torch.Generator().manual_seed(0))
    y = inv(x)
    assert (y - x).abs().mean() > 0.05  # a real transformation
    assert (inv.inverse(y) - x).abs().max() <= 1e-6  # float32
    inv64, x64 = inv.double(), x.double()
    assert (inv64.inverse(inv64(x64)) - x64).abs().max() <= 1e-12
    m = _model()
    st = AdapterStack(m)
    st.add("lang/sw", invertible=True)
    with torch.no_grad():
        for p in st.parameters():
            p.normal_(0, 0.1)
    st.set_active("lang/sw")
    ref = _logits(m)
    st.save(tmp_path / "ad")
    st.detach()
    m2 = _model()
    st2 = AdapterStack(m2)
    st2.load(tmp_path / "ad", "lang/sw")
    st2.set_active("lang/sw")
    assert torch.equal(_logits(m2), ref)
