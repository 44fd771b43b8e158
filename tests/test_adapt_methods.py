"""Stage-2 adaptation methods (``xlt adapt --method``): the registry, ``full`` and ``lora``, save/load, resume."""

import copy
import json

import numpy as np
import pytest
import torch

from xlt.adapt import PackedBlocks, TrainConfig, Trainer, TrainingInterrupted, run
from xlt.adapt.methods import fingerprint, get_method, load_adapted, parse_methods
from xlt.errors import XltError
from xlt.models import tiny_model

CFG = dict(steps=6, stage1_steps=2, batch_size=3, seq_len=16, eval_every=3, save_every=3, seed=3, lr=1e-2)


def _model(**kw):
    return tiny_model("llama", **{"vocab_size": 64, "hidden": 32, "layers": 2, "heads": 2, "seed": 1, **kw})


@pytest.fixture()
def blocks():
    return PackedBlocks(np.random.default_rng(0).integers(0, 64, 3000).astype(np.int32), seq_len=16, seed=3)


def _logits(m, ids=None):
    ids = torch.arange(20).view(2, 10) if ids is None else ids
    with torch.no_grad():
        return m(input_ids=ids).logits


def test_registry_and_bad_names():
    assert {"full", "lora"} <= set(parse_methods("full,lora"))
    with pytest.raises(XltError, match="unknown adaptation method 'lorra'") as e:
        parse_methods("full,lorra")
    assert "lora" in e.value.fix
    with pytest.raises(XltError, match="unknown option"):
        get_method("lora", {"rank": 4})


def test_lora_prepare_leaves_outputs_unchanged_and_counts_parameters():
    m = _model()
    ref = _logits(m)
    lm = get_method("lora", {"r": 4, "target_modules": ["q_proj", "v_proj"]}).prepare(copy.deepcopy(m))
    assert torch.equal(_logits(lm), ref)  # B = 0 at init
    # q_proj and v_proj are 32x32: r * (32 + 32) each, two layers
    assert get_method("lora").trainable_parameters(lm) == 2 * 2 * 4 * (32 + 32)


def test_lora_bad_targets_and_rank():
    with pytest.raises(XltError, match=r"target modules \['qkv'\] match no linear layer") as e:
        get_method("lora", {"target_modules": ["qkv", "q_proj"]}).prepare(_model())
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert name in e.value.fix
    with pytest.raises(XltError, match=r"rank 40 is larger than layer .*q_proj's dimensions \(32 in, 32 out\)"):
        get_method("lora", {"r": 40}).prepare(_model())


def test_lora_stage2_trains_only_lora_and_resumes_exactly(tmp_path, blocks):
    base = _model(tied=False)
    meth = get_method("lora", {"r": 2})

    def fresh():
        return meth.prepare(copy.deepcopy(base))

    full = Trainer(fresh(), blocks, TrainConfig(**CFG), tmp_path / "a", show_progress=False, method=meth)
    h_full = full.train()
    m = full.accelerator.unwrap_model(full.model)
    # the body never moves; the embeddings move in stage 1; the LoRA factors in stage 2
    body = dict(base.named_parameters())
    for n, p in m.named_parameters():
        plain = n.replace("base_model.model.", "").replace(".base_layer", "")
        if "lora_" in n:
            continue
        if "embed_tokens" in plain or "lm_head" in plain:
            assert not torch.equal(p, body[plain]), n
        else:
            assert torch.equal(p, body[plain]), n
    assert any(p.abs().sum() > 0 for n, p in m.named_parameters() if "lora_B" in n)
    # frozen parameters get no gradient in stage 2
    m.train()
    ids = blocks.batch(0, 0, 1, 2)
    for n, p in m.named_parameters():
        p.grad = None
    m(input_ids=ids, labels=ids).loss.backward()
    for n, p in m.named_parameters():
        assert (p.grad is not None) == ("lora_" in n), n
    # interrupted mid stage 2 and resumed in a fresh process: the same losses and weights
    t = Trainer(fresh(), blocks, TrainConfig(**CFG), tmp_path / "b", show_progress=False, method=meth)
    with pytest.raises(TrainingInterrupted):
        t.train(interrupt_at=4)
    r = Trainer(fresh(), blocks, TrainConfig(**CFG), tmp_path / "b", show_progress=False, method=meth)
    h_res = r.train()
    assert [x["loss"] for x in h_res["train"]] == [x["loss"] for x in h_full["train"]]
    for (n, p), (_, q) in zip(m.state_dict().items(), r.accelerator.unwrap_model(r.model).state_dict().items()):
        assert torch.equal(p, q), n


def test_lora_folder_loads_back_exactly_and_checks_the_base(tmp_path):
    src = _model()
    src.save_pretrained(tmp_path / "src")
    fp = fingerprint(src)
    m = copy.deepcopy(src)
    m.resize_token_embeddings(80, mean_resizing=False)  # a "transferred" vocabulary
    meth = get_method("lora", {"r": 4})
    lm = meth.prepare(m)
    with torch.no_grad():
        for n, p in lm.named_parameters():
            if "lora_B" in n or "embed" in n:
                p.normal_(0, 0.05)
    ids = torch.randint(0, 80, (2, 12), generator=torch.Generator().manual_seed(0))
    ref = _logits(lm, ids)
    meth.save(lm, tmp_path / "ad", str(tmp_path / "src"), fp)
    back = load_adapted(tmp_path / "ad")
    assert torch.equal(_logits(back, ids), ref)
    other = _model(seed=7)
    with pytest.raises(XltError, match="hashes to") as e:
        load_adapted(tmp_path / "ad", base=other)
    assert "exact base model" in e.value.fix



def test_a_method_writes_and_reads_only_its_own_weights(tmp_path):
    """The base class's save/load template: embeddings, metadata and the base check are done for every method."""
    from xlt.adapt.methods import EMBEDDINGS, META, Method

    class Scaled(Method):  # a third-party method: a trainable scale on the final norm, nothing else
        name = "scaled-norm-test"

        def prepare(self, model):
            model.register_parameter("xlt_scale", torch.nn.Parameter(torch.ones(())))
            model.model.norm.register_forward_hook(lambda mod, args, out: out * model.xlt_scale)
            return model

        def stage2_parameters(self, model):
            return [model.xlt_scale]

        def save_weights(self, model, folder):
            torch.save(model.xlt_scale.detach(), folder / "scale.pt")
            return {"scale": float(model.xlt_scale.detach())}

        @classmethod
        def load_weights(cls, model, folder, meta):
            m = cls().prepare(model)
            with torch.no_grad():
                m.xlt_scale.copy_(torch.load(folder / "scale.pt"))
            return m

    src = _model()
    src.save_pretrained(tmp_path / "src")
    m = copy.deepcopy(src)
    m.resize_token_embeddings(80, mean_resizing=False)
    meth = Scaled()
    m = meth.prepare(m)
    with torch.no_grad():
        m.xlt_scale.fill_(0.5)
        m.get_input_embeddings().weight.normal_(0, 0.05)
    ids = torch.randint(0, 80, (2, 12), generator=torch.Generator().manual_seed(0))
    ref = _logits(m, ids)
    meth.save(m, tmp_path / "f", str(tmp_path / "src"), fingerprint(src))
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == sorted([EMBEDDINGS, META, "scale.pt"])
    meta = json.loads((tmp_path / "f" / META).read_text())
    assert meta["scale"] == 0.5 and meta["base_fingerprint"] == fingerprint(src) and meta["method"] == "scaled-norm-test"
    back = Scaled.load(tmp_path / "f", meta)
    assert not back.training and torch.equal(_logits(back, ids), ref)
    with pytest.raises(XltError, match="hashes to"):
        Scaled.load(tmp_path / "f", meta, base=_model(seed=7))

    assert not Scaled.whole_model and get_method("full").whole_model and not get_method("par-adapter-ffn").whole_model
    with pytest.raises(TypeError, match="implements save_weights but not load_weights"):
        class Incomplete(Method):
            def save_weights(self, model, folder):
                return None

ARGS = dict(target="sw", init="overlap", steps=4, stage1_steps=2, vocab_size=350, batch_size=4, seq_len=32, eval_every=2,
            eval_max_bytes=3000, samples=1, show_progress=False, loo_tokens=0)


def test_pipeline_runs_every_method_and_folders_load_back(tmp_path, tiny_source_dir, parallel_jsonl):
    res = run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=tmp_path / "o", method="full,lora,sft,mos,recursive",
              method_options={"r": 4, "k": 500}, **ARGS)
    s = res.metrics["summary"]
    assert set(s) == {"overlap", "overlap+lora", "overlap+sft", "overlap+mos", "overlap+recursive"}
    # 2 layers looped as 1 shared layer: one layer's linear weights fewer, plus the per-position LoRAs
    lin = 4 * 64 * 64 + 3 * 64 * 128
    assert s["overlap"]["model_parameters"] - s["overlap+recursive"]["model_parameters"] == lin - 2 * 4 * (4 * 128 + 3 * 192)
    assert s["overlap+mos"]["trainable_parameters_stage2"] < s["overlap+lora"]["trainable_parameters_stage2"]
    assert s["overlap+sft"]["trainable_parameters_stage2"] == 500
    assert s["overlap"]["method"] == "full" and s["overlap+lora"]["method"] == "lora"
    # 2 layers of d=64: 4 attention 64x64 + gate/up 64->128 + down 128->64, rank 4
    assert s["overlap+lora"]["trainable_parameters_stage2"] == 2 * 4 * (4 * 128 + 3 * 192)
    # both start from the same embeddings and the same stage 1
    ev_f = res.metrics["inits"]["overlap"]["history"]["eval"]
    ev_l = res.metrics["inits"]["overlap+lora"]["history"]["eval"]
    bpb = lambda ev: [e["bits_per_byte"] for e in ev]  # noqa: E731  (signatures differ: LoRA adds tensors)
    assert bpb(ev_f[:2]) == bpb(ev_l[:2]) and bpb(ev_f)[-1] != bpb(ev_l)[-1]
    from transformers import AutoTokenizer

    from xlt.eval import bits_per_byte

    from xlt.corpora import open_corpus
    from xlt.eval import truncate_texts
    from xlt.languages import resolve

    test = truncate_texts(open_corpus(str(parallel_jsonl)).texts(resolve("sw"), "test"), 3000)
    for name in ("overlap+lora", "overlap+sft", "overlap+mos", "overlap+recursive"):  # the saved folders load back to the same model
        folder = tmp_path / "o" / name
        model, tok = load_adapted(folder), AutoTokenizer.from_pretrained(folder)
        assert bits_per_byte(model, tok, test, 512).bits_per_byte == s[name]["test_bpb_final"], name
    folder = tmp_path / "o" / "overlap+lora"
    meta = json.loads((folder / "xlt_method.json").read_text())
    assert meta["method"] == "lora" and meta["options"]["r"] == 4
    assert "Adaptation methods" in (tmp_path / "o" / "report.html").read_text()
    with pytest.raises(XltError, match=r"unknown option 'density' for the adaptation methods lora"):
        run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=tmp_path / "x", method="lora",
            method_options={"density": 0.1}, **ARGS)


def _cli(monkeypatch, capsys, *args):
    import sys

    from xlt.cli.main import main

    monkeypatch.setattr(sys, "argv", ["xlt", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    cap = capsys.readouterr()
    return e.value.code, cap.out + cap.err


def test_cli_method_option_and_listing(tmp_path, monkeypatch, capsys, tiny_source_dir, parallel_jsonl):
    code, text = _cli(monkeypatch, capsys, "methods")
    assert code == 0
    for name in ("full", "lora", "sft", "mos", "recursive", "unified", "par-adapter-ffn"):
        assert name in text
    base = ["adapt", "--source", tiny_source_dir, "--corpus", parallel_jsonl, "--out", tmp_path / "o", "--steps", "2",
            "--vocab-size", "350", "--no-progress"]
    code, text = _cli(monkeypatch, capsys, *base, "--method", "full,lorra")
    assert code == 2 and "unknown adaptation method 'lorra'" in text and "fix:" in text and "Traceback" not in text
    code, text = _cli(monkeypatch, capsys, *base, "--method", "lora", "-M", "rank=4")
    assert code == 2 and "unknown option 'rank' for the adaptation methods lora" in text and "alpha" in text
    code, text = _cli(monkeypatch, capsys, *base, "--method", "lora", "-M", "rr=4")
    assert code == 2 and "did you mean r?" in text
    code, text = _cli(monkeypatch, capsys, *base, "--method", "sft", "-M", "density=3")
    assert code == 2 and "density 3.0 is not in (0, 1]" in text
    code, text = _cli(monkeypatch, capsys, *base, "--init", "overlap,wechsel", "-O", "wechsel_kk=5")
    assert code == 2 and "unknown option 'wechsel_kk'" in text and "did you mean wechsel_k?" in text
    assert "Traceback" not in text
    assert not (tmp_path / "o").exists()
