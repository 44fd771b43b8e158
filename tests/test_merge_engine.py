"""`xlt merge` end to end on tiny random Llama checkpoints: outputs, invariants, layer maps, LoRA sources,
provenance, the CLI, and one clear error (with nothing written) for each bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from merge_fixtures import finetune, lora_adapter, one_torch_thread, save_tiny, tensors, write_config  # noqa: F401
from xlt.errors import XltError
from xlt.merge import merge_tensors, plan, register_merge, run

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(show_progress=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("merge_models")
    base = save_tiny(d / "base", seed=0, vocab=64, hidden=32, layers=4)
    fts = [finetune(base, d / f"ft{i}", seed=10 + i, scale=0.02) for i in (1, 2, 3)]
    same = d / "same"
    shutil.copytree(base, same)
    return {"dir": d, "base": base, "ft": fts, "same": same}


def cfg(tmp_path, data, name="merge.yml") -> Path:
    return write_config(tmp_path / name, data)


def ties_config(models, **params):
    return {"merge_method": "ties", "base_model": str(models["base"]),
            "models": [{"model": str(m), "parameters": {"weight": w, "density": d}}
                       for m, w, d in zip(models["ft"], (1.0, 0.5, 0.8), (0.3, 0.5, 0.7))],
            "parameters": {"normalize": True, **params}, "dtype": "float32"}


def test_ties_output_equals_per_tensor_math(models, tmp_path):
    res = run(cfg(tmp_path, ties_config(models)), tmp_path / "out", **QUIET)
    got, base = tensors(tmp_path / "out"), tensors(models["base"])
    fts = [tensors(m) for m in models["ft"]]
    assert set(got) == set(base)
    for n, b in base.items():
        want = merge_tensors("ties", b, [f[n] for f in fts], weight=[1.0, 0.5, 0.8], density=[0.3, 0.5, 0.7])
        assert torch.equal(got[n], want), n
    assert res.tensors == len(base) and res.merged == len(base) and res.bytes > 0 and res.peak_rss > 0


def test_chunked_execution_equals_whole_tensors(models, tmp_path):
    for method, extra in (("ties", {}), ("ties", {"trim_scope": "global"}), ("dare_ties", {}), ("pcb", {})):
        c = ties_config(models, **extra)
        c["merge_method"] = method
        if method == "pcb":
            c["models"] = [{"model": str(m)} for m in models["ft"]]
            c["parameters"] = {"density": 0.3}
        path = cfg(tmp_path, c, f"{method}.yml")
        run(path, tmp_path / f"{method}-a", chunk_elems=1 << 22, **QUIET)
        run(path, tmp_path / f"{method}-b", chunk_elems=300, **QUIET)  # rows split into many chunks
        a, b = tensors(tmp_path / f"{method}-a"), tensors(tmp_path / f"{method}-b")
        for n in a:
            assert torch.equal(a[n], b[n]), (method, extra, n)
        shutil.rmtree(tmp_path / f"{method}-a")
        shutil.rmtree(tmp_path / f"{method}-b")


def test_ties_trim_scope_global_keeps_k_over_the_whole_model(models, tmp_path):
    """With one model, TIES leaves base + trimmed δ: exactly ⌊density·n⌋ changed entries over the whole model
    (global) or in every tensor (per tensor)."""
    for scope in ("tensor", "global"):
        c = {"merge_method": "ties", "base_model": str(models["base"]),
             "models": [{"model": str(models["ft"][0]), "parameters": {"weight": 1.0, "density": 0.25}}],
             "parameters": {"trim_scope": scope}}
        run(cfg(tmp_path, c, f"{scope}.yml"), tmp_path / scope, **QUIET)
        out, base = tensors(tmp_path / scope), tensors(models["base"])
        changed = {n: int((out[n] != base[n]).sum()) for n in base}
        if scope == "tensor":
            assert all(changed[n] == max(1, int(0.25 * base[n].numel())) for n in base)
        else:
            total = sum(t.numel() for t in base.values())
            assert sum(changed.values()) == int(0.25 * total)
            assert len({round(changed[n] / base[n].numel(), 2) for n in base}) > 1  # not 25 % per tensor


def test_pcb_is_computed_over_the_whole_model(models, tmp_path):
    from test_merge_methods import pcb_oracle

    c = {"merge_method": "pcb", "base_model": str(models["base"]), "models": [{"model": str(m)} for m in models["ft"]],
         "parameters": {"density": 0.2, "clamp_ratio": 0.01, "lambda": 1.2}}
    p = plan(cfg(tmp_path, c))
    run(cfg(tmp_path, c), tmp_path / "out", **QUIET)
    out, base = tensors(tmp_path / "out"), tensors(models["base"])
    fts = [tensors(m) for m in models["ft"]]
    names = [t.name for t in p.tensors]
    taus = torch.stack([torch.cat([(f[n] - base[n]).reshape(-1) for n in names]) for f in fts])
    merged = pcb_oracle(taus, 0.2, 0.01)
    off = 0
    for n in names:
        k = base[n].numel()
        assert torch.allclose(out[n], base[n] + 1.2 * merged[off: off + k].reshape(base[n].shape), atol=1e-6), n
        off += k


def test_output_loads_with_transformers_and_gives_expected_logits(models, tmp_path):
    from transformers import AutoModelForCausalLM

    c = {"merge_method": "linear", "models": [{"model": str(models["ft"][0]), "parameters": {"weight": 1.0}},
                                              {"model": str(models["ft"][1]), "parameters": {"weight": 3.0}}]}
    run(cfg(tmp_path, c), tmp_path / "out", shard_size="40KB", **QUIET)
    assert len(list((tmp_path / "out").glob("*.safetensors"))) > 1  # sharded, with an index
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tensors(models["base"]))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ref = AutoModelForCausalLM.from_pretrained(models["ft"][0]).eval()
    a, b = tensors(models["ft"][0]), tensors(models["ft"][1])
    ref.load_state_dict({n: (a[n] + 3 * b[n]) / 4 for n in a}, strict=False)
    ids = torch.tensor([[1, 5, 9, 33, 2, 17]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, ref(ids).logits, atol=1e-5)


def test_layer_swap_layers_are_bit_identical_and_transitions_blend(models, tmp_path):
    outer, inner = models["ft"][0], models["ft"][1]
    c = {"merge_method": "layer_swap", "models": [{"model": str(outer)}, {"model": str(inner)}],
         "parameters": {"bottom": 1, "top": 1, "transition_bottom": 1, "transition_top": 0, "alpha": 0.3,
                        "embeddings_from": str(inner), "head_from": str(outer)}}
    res = run(cfg(tmp_path, c), tmp_path / "out", **QUIET)
    got, o, i = tensors(tmp_path / "out"), tensors(outer), tensors(inner)
    for n in got:
        if ".layers.0." in n or ".layers.3." in n:
            assert torch.equal(got[n], o[n]), n
        elif ".layers.2." in n:
            assert torch.equal(got[n], i[n]), n
        elif ".layers.1." in n:
            assert torch.equal(got[n], 0.3 * o[n] + (1 - 0.3) * i[n]), n
    assert torch.equal(got["model.embed_tokens.weight"], i["model.embed_tokens.weight"])
    assert torch.equal(got["lm_head.weight"], o["lm_head.weight"])
    assert torch.equal(got["model.norm.weight"], o["model.norm.weight"])
    assert "OBIO" in " ".join(res.provenance["notes"])


def test_slices_stack_layers_and_update_the_layer_count(models, tmp_path):
    from transformers import AutoModelForCausalLM

    a, b = models["ft"][0], models["ft"][1]
    c = {"merge_method": "passthrough", "slices": [{"sources": [{"model": str(a), "layer_range": [0, 3]}]},
                                                   {"sources": [{"model": str(b), "layer_range": [1, 4]}]}]}
    run(cfg(tmp_path, c), tmp_path / "out", **QUIET)
    out, ta, tb = tensors(tmp_path / "out"), tensors(a), tensors(b)
    conf = json.loads((tmp_path / "out" / "config.json").read_text())
    assert conf["num_hidden_layers"] == 6
    for j, (src, k) in enumerate([(ta, 0), (ta, 1), (ta, 2), (tb, 1), (tb, 2), (tb, 3)]):
        n = f"model.layers.{j}.mlp.up_proj.weight"
        assert torch.equal(out[n], src[f"model.layers.{k}.mlp.up_proj.weight"])
    assert torch.equal(out["model.embed_tokens.weight"], ta["model.embed_tokens.weight"])  # first slice
    assert torch.equal(out["lm_head.weight"], tb["lm_head.weight"])  # last slice
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out").config.num_hidden_layers == 6


def test_lora_source_is_read_as_lazy_delta(models, tmp_path):
    base = models["base"]
    ad = lora_adapter(base, tmp_path / "lora", r=4, alpha=8.0, seed=1)
    c = {"merge_method": "task_arithmetic", "base_model": str(base),
         "models": [{"model": f"{base}+{ad}", "parameters": {"weight": 0.5}}]}
    run(cfg(tmp_path, c), tmp_path / "out", **QUIET)
    out, b = tensors(tmp_path / "out"), tensors(base)
    from safetensors.torch import load_file

    lw = load_file(ad / "adapter_model.safetensors")
    for n in b:
        key = "base_model.model." + n[: -len(".weight")]
        if key + ".lora_A.weight" in lw:
            want = b[n] + 0.5 * (8.0 / 4) * (lw[key + ".lora_B.weight"] @ lw[key + ".lora_A.weight"])
            assert torch.allclose(out[n], want, atol=1e-6), n
        else:
            assert torch.equal(out[n], b[n]), n


def test_provenance_hashes_and_tokenizer(models, tmp_path, source_tokenizer):
    from xlt.util import sha256_file

    d = tmp_path / "with_tok"
    shutil.copytree(models["ft"][0], d)
    source_tokenizer.save_pretrained(d)
    c = {"merge_method": "linear", "models": [{"model": str(d)}, {"model": str(models["ft"][1])}]}
    run(cfg(tmp_path, c), tmp_path / "out", **QUIET)
    prov = json.loads((tmp_path / "out" / "xlt_merge.json").read_text())
    assert prov["merge_method"] == "linear" and prov["config"]["merge_method"] == "linear"
    ref = os.path.relpath(d, tmp_path / "out")  # the file names inputs relative to the output folder
    assert prov["input_sha256"][ref]["model.safetensors"] == sha256_file(d / "model.safetensors")
    assert (tmp_path / "out" / "tokenizer.json").is_file() and "tokenizer.json" in prov["tokenizer_files"]
    assert not any(p.name.startswith(".out.tmp") for p in tmp_path.iterdir())


def test_provenance_signature_and_resolved_options(models, tmp_path):
    """The signature names method, dtypes and seed and hashes the config as written, the inputs (their SHA-256, or
    their paths when not hashed) and the options as resolved: a default written out changes the config hash only."""
    from xlt.signature import Signature, json_hash

    def merged(name, c, **kw):
        run(cfg(tmp_path, c, f"{name}.yml"), tmp_path / name, **QUIET, **kw)
        prov = json.loads((tmp_path / name / "xlt_merge.json").read_text())
        return prov, Signature.parse(prov["signature"])

    c = ties_config(models)
    prov, sig = merged("a", c)
    assert {k: sig[k] for k in ("kind", "method", "dtype", "out_dtype", "seed")} == \
        {"kind": "merge", "method": "ties", "dtype": "float32", "out_dtype": "float32", "seed": "0"}
    assert sig["config"] == json_hash(c)
    assert sig["inputs"] == "sha256-" + json_hash([list(f.values()) for f in prov["input_sha256"].values()])
    assert prov["options"] == {"weight": [1.0, 0.5, 0.8], "density": [0.3, 0.5, 0.7], "normalize": True,
                               "lambda": 1.0, "trim_scope": "tensor", "tie_break": "index"}
    assert merged("again", c)[1] == sig
    moved = {"base": shutil.copytree(models["base"], tmp_path / "moved" / "base"),
             "ft": [shutil.copytree(m, tmp_path / "moved" / m.name) for m in models["ft"]]}
    _, elsewhere = merged("elsewhere", ties_config(moved))
    assert elsewhere["inputs"] == sig["inputs"] and elsewhere["config"] != sig["config"]
    _, unhashed = merged("unhashed", c, hash_inputs=False)
    assert unhashed["inputs"].startswith("path-") and {**unhashed, "inputs": sig["inputs"]} == sig
    _, explicit = merged("explicit", ties_config(models, trim_scope="tensor", tie_break="index"))
    assert explicit["config"] != sig["config"] and explicit["options"] == sig["options"]
    _, other = merged("other", ties_config(models, **{"lambda": 0.5}))
    assert other["options"] != sig["options"]
    conditional = ties_config(models, **{"lambda": [{"filter": "mlp", "value": 0.5}, {"value": 1.0}]})
    assert merged("conditional", conditional)[0]["options"]["lambda"] == "varies by tensor"


def test_cli_lists_methods_with_their_options():
    from typer.testing import CliRunner

    from xlt.cli.main import app
    from xlt.merge import MERGES

    listing = CliRunner().invoke(app, ["merges"], env={"COLUMNS": "240"})
    assert listing.exit_code == 0, listing.output
    for name in MERGES.names():
        assert name in listing.output
        for s in MERGES.get(name).specs():
            assert s.name in listing.output and s.help.split()[0] in listing.output, (name, s.name)
    assert "weight (per model)" in listing.output and "one of tensor, global" in listing.output
    assert "int8_mask" not in listing.output
    help_ = CliRunner().invoke(app, ["merge", "--help"], env={"COLUMNS": "240"})
    assert help_.exit_code == 0 and all(n in help_.output for n in MERGES.names()), help_.output


def test_third_party_method_through_the_entry_point_group(models, tmp_path, monkeypatch):
    from xlt.merge import MERGES, MergeMethod

    class EP:
        name = "halfway"

        def load(self):
            register_merge(MergeMethod(name="halfway_test", merge=lambda b, ts, p, ctx: (b + ts[0]) / 2,
                                       description="midpoint to the base", needs_base=True))

    monkeypatch.setattr(MERGES, "_loaded", False)
    monkeypatch.setattr("xlt.registry.entry_points", lambda group: [EP()] if group == "xlt.merges" else [])
    monkeypatch.delitem(MERGES.entries, "halfway_test", raising=False)
    try:
        assert "halfway_test" in MERGES.names()
        c = {"merge_method": "halfway_test", "base_model": str(models["base"]), "models": [{"model": str(models["ft"][0])}]}
        run(cfg(tmp_path, c), tmp_path / "out", **QUIET)
        out, b, f = tensors(tmp_path / "out"), tensors(models["base"]), tensors(models["ft"][0])
        assert all(torch.equal(out[n], (b[n] + f[n]) / 2) for n in b)
    finally:
        MERGES.entries.pop("halfway_test", None)


def test_cli_merges_and_reports_errors(models, tmp_path):
    c = cfg(tmp_path, {"merge_method": "linear", "models": [{"model": str(m)} for m in models["ft"][:2]]})
    cmd = [sys.executable, "-m", "xlt.cli.main", "merge"]
    ok = subprocess.run(cmd + [str(c), str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "tensors" in ok.stderr and "peak memory" in ok.stderr and (tmp_path / "out" / "config.json").is_file()
    bad = cfg(tmp_path, {"merge_method": "frankenstein", "models": [{"model": str(models["base"])}]}, "bad.yml")
    r = subprocess.run(cmd + [str(bad), str(tmp_path / "out2")], capture_output=True, text=True)
    assert r.returncode == 2 and "error:" in r.stderr and "fix:" in r.stderr and "ties" in r.stderr
    assert not (tmp_path / "out2").exists()


# -- bad input: one clear error each, nothing written ---------------------------------------------------------
def refused(tmp_path, config, match, **kw):
    before = set(tmp_path.iterdir())
    out = tmp_path / "refused_out"
    with pytest.raises(XltError, match=match) as e:
        run(config if isinstance(config, (dict, Path)) else cfg(tmp_path, config), out, **QUIET, **kw)
    assert e.value.fix, "every error names a fix"
    assert not out.exists()
    assert set(tmp_path.iterdir()) - before <= {tmp_path / "merge.yml"}  # no temporary folder left behind
    return e.value


def test_bad_different_architectures(models, tmp_path):
    from xlt.models import tiny_model

    g = tmp_path / "gpt2"
    tiny_model("gpt2", vocab_size=64, hidden=32, layers=4, heads=4).save_pretrained(g)
    refused(tmp_path, {"merge_method": "linear", "models": [{"model": str(models["base"])}, {"model": str(g)}]},
            "different architectures")


def test_bad_different_shapes(models, tmp_path):
    wide = save_tiny(tmp_path / "wide", vocab=64, hidden=48, layers=4)
    refused(tmp_path, {"merge_method": "linear", "models": [{"model": str(models["base"])}, {"model": str(wide)}]},
            "different shapes")


def test_bad_missing_and_corrupt_shard(models, tmp_path):
    sharded = tmp_path / "sharded"
    run(cfg(tmp_path, {"merge_method": "passthrough", "models": [{"model": str(models["ft"][0])}]}), sharded,
        shard_size="40KB", **QUIET)
    shards = sorted(sharded.glob("model-*.safetensors"))
    c = {"merge_method": "linear", "models": [{"model": str(models["base"])}, {"model": str(sharded)}]}
    raw = shards[1].read_bytes()
    shards[1].write_bytes(raw[: len(raw) - 100])  # truncated
    refused(tmp_path, c, "corrupt or truncated")
    shards[1].unlink()
    refused(tmp_path, c, "missing shard")


def test_bad_unknown_method_lists_valid_ones(models, tmp_path):
    e = refused(tmp_path, {"merge_method": "tiess", "models": [{"model": str(models["base"])}]}, "unknown merge method")
    for name in ("linear", "ties", "dare_ties", "pcb", "widen", "layer_swap", "slerp", "passthrough"):
        assert name in e.fix


@pytest.mark.parametrize("density", [0, 1.5])
def test_bad_density(models, tmp_path, density):
    c = ties_config(models)
    c["models"][1]["parameters"]["density"] = density
    refused(tmp_path, c, r"density must be in \(0, 1\]")


def test_bad_weights_sum_to_zero_with_normalize(models, tmp_path):
    c = {"merge_method": "linear", "models": [{"model": str(models["ft"][0]), "parameters": {"weight": 1.0}},
                                              {"model": str(models["ft"][1]), "parameters": {"weight": -1.0}}]}
    refused(tmp_path, c, "sum to 0")


def test_bad_layer_range_beyond_depth(models, tmp_path):
    c = {"merge_method": "passthrough", "slices": [{"sources": [{"model": str(models["base"]), "layer_range": [0, 6]}]}]}
    refused(tmp_path, c, "beyond its 4 layers")
    c = {"merge_method": "layer_swap", "models": [{"model": str(models["ft"][0])}, {"model": str(models["ft"][1])}],
         "parameters": {"bottom": 3, "top": 2}}
    refused(tmp_path, c, "more than the model's 4")


def test_bad_existing_output_needs_overwrite(models, tmp_path):
    c = cfg(tmp_path, {"merge_method": "linear", "models": [{"model": str(m)} for m in models["ft"][:2]]})
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(XltError, match="already exists") as e:
        run(c, out, **QUIET)
    assert "--overwrite" in e.value.fix and (out / "keep.txt").is_file() and not (out / "config.json").exists()
    run(c, out, overwrite=True, **QUIET)
    assert (out / "config.json").is_file() and not (out / "keep.txt").exists()


def test_bad_not_enough_disk(models, tmp_path, monkeypatch):
    import collections

    import xlt.merge.engine as eng

    Usage = collections.namedtuple("Usage", "total used free")
    monkeypatch.setattr(eng.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    refused(tmp_path, {"merge_method": "linear", "models": [{"model": str(m)} for m in models["ft"][:2]]},
            "not enough disk")


def test_bad_tensor_missing_in_one_model_unless_dropped(models, tmp_path):
    from safetensors.torch import save_file

    d = tmp_path / "extra"
    shutil.copytree(models["ft"][0], d)
    sd = tensors(d)
    sd["model.extra_scale"] = torch.ones(3)
    save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
    c = {"merge_method": "linear", "models": [{"model": str(d)}, {"model": str(models["ft"][1])}]}
    refused(tmp_path, c, "model.extra_scale is in")
    c["drop"] = ["extra_scale"]
    res = run(cfg(tmp_path, c), tmp_path / "ok", **QUIET)
    assert "model.extra_scale" not in tensors(tmp_path / "ok")
    assert res.provenance["dropped"][str(d)] == ["model.extra_scale"]


def test_bad_config_keys_and_values(models, tmp_path):
    base = str(models["base"])
    refused(tmp_path, {"merge_method": "linear", "models": [{"model": base}], "tokenizer": {"source": "union"}},
            "not support")
    refused(tmp_path, {"merge_method": "linear", "modles": [{"model": base}]}, "unknown key 'modles'")
    refused(tmp_path, {"merge_method": "ties", "models": [{"model": base}]}, "needs a base_model")
    refused(tmp_path, {"merge_method": "linear", "models": [{"model": base, "parameters": {"wieght": 1}}]},
            "no parameter 'wieght'")
    refused(tmp_path, {"merge_method": "linear", "models": [{"model": base, "parameters": {"weight": [0, 0.5, 1]}}]},
            r"models\[0\]\.parameters: weight is a gradient list")
    e = refused(tmp_path, {"merge_method": "linear", "models": [{"model": base}, {"model": base, "paramters": {}}]},
                r"unknown key 'paramters' in models\[1\]")
    assert "did you mean parameters?" in e.fix
    refused(tmp_path, {"merge_method": "passthrough", "slices": [{"sources": [{"model": base, "layer_range": [2, 1]}]}]},
            r"slices\[0\]\.sources\[0\]\.layer_range: \[2, 1\] is not \[start, end\)")
    refused(tmp_path, {"merge_method": "linear", "models": [{"model": base}], "drop": ["(unclosed"]},
            "drop: pattern '\\(unclosed' is not a regular expression")
    refused(tmp_path, {"merge_method": "linear", "models": [{"model": base}], "dtype": "fp8"}, "'fp8' is not a supported")
    refused(tmp_path, {"merge_method": "linear", "models": [{"model": base}], "random_seed": "x"}, "random_seed")
    refused(tmp_path, {"merge_method": "linear", "models": [{"model": base}],
                      "slices": [{"sources": [{"model": base, "layer_range": [0, 1]}]}]},
            "exactly one of `models` and `slices`")
    refused(tmp_path, {"merge_method": "linear", "models": [{"model": base, "parameters": {"normalize": False}}]},
            "normalize is a global parameter of linear, set per model")
    refused(tmp_path, {"merge_method": "linear", "models": [{"model": base, "parameters": {"weight": "heavy"}}]},
            "option weight must be a number, got 'heavy'")


@pytest.mark.parametrize("method", ["ties", "dare_linear", "dare_ties"])
def test_bad_int8_mask_is_refused_by_name(models, tmp_path, method):
    """mergekit's int8_mask only saves memory there; xlt refuses it instead of accepting and ignoring it."""
    c = ties_config(models, int8_mask=True)
    c["merge_method"] = method
    e = refused(tmp_path, c, "int8_mask .* is not an xlt parameter: mergekit stores its masks in int8 .* it does not "
                             "change the result")
    assert e.fix == "remove int8_mask from the config"
    with pytest.raises(XltError, match="int8_mask"):
        merge_tensors(method, torch.zeros(3), [torch.ones(3)], int8_mask=True)


def test_bad_slerp_input_count(models, tmp_path):
    c = {"merge_method": "slerp", "base_model": str(models["base"]), "models": [{"model": str(m)} for m in models["ft"][:2]]}
    e = refused(tmp_path, c, "slerp interpolates two models; the config gives 3")
    assert "base_model and one model" in e.fix


def test_linear_single_model_is_copied_only_when_that_is_its_result(models, tmp_path):
    """One model's weighted average is itself (copied); its weighted sum with weight 2 is not."""
    one = str(models["ft"][0])
    avg = run(cfg(tmp_path, {"merge_method": "linear", "models": [{"model": one, "parameters": {"weight": 2.0}}]}),
              tmp_path / "avg", **QUIET)
    total = run(cfg(tmp_path, {"merge_method": "linear", "parameters": {"normalize": False},
                               "models": [{"model": one, "parameters": {"weight": 2.0}}]}), tmp_path / "sum", **QUIET)
    assert avg.copied == avg.tensors and total.merged == total.tensors
    a, s, f = tensors(tmp_path / "avg"), tensors(tmp_path / "sum"), tensors(models["ft"][0])
    assert all(torch.equal(a[n], f[n]) and torch.equal(s[n], 2 * f[n]) for n in f)


# -- vocabulary-adapted models: xlt adapt, layer swap with the embedding-size rule, bits/byte ---------------------
@pytest.fixture(scope="module")
def adapted(tmp_path_factory, tiny_source_dir, parallel_jsonl):
    from xlt.adapt import run as adapt

    out = tmp_path_factory.mktemp("adapt") / "sw"
    adapt(source=str(tiny_source_dir), corpus=str(parallel_jsonl), out=out, target="sw", init="overlap", steps=4,
          stage1_steps=2, vocab_size=350, batch_size=4, seq_len=32, eval_every=2, eval_max_bytes=2000, samples=1,
          loo_tokens=0, show_progress=False)
    return out / "overlap"


def test_layer_swap_example_on_an_adapted_model_and_bits_per_byte(adapted, tiny_source_dir, tmp_path, target_texts):
    from xlt.eval.bpb import bits_per_byte
    from xlt.models.loading import load_model, load_tokenizer

    data = yaml.safe_load((ROOT / "examples" / "layer_swap.yml").read_text())
    text = json.dumps(data).replace("runs/demo-sw/overlap", str(adapted)).replace('"smollm2"', json.dumps(str(tiny_source_dir)))
    data = json.loads(text)
    data["parameters"].update(bottom=1, top=0, transition_bottom=0, transition_top=1)  # the tiny model has 2 layers
    res = run(cfg(tmp_path, data), tmp_path / "swap", **QUIET)
    out, sw, en = tensors(tmp_path / "swap"), tensors(adapted), tensors(tiny_source_dir)
    assert out["model.embed_tokens.weight"].shape[0] == 350 != en["model.embed_tokens.weight"].shape[0]
    assert torch.equal(out["model.embed_tokens.weight"], sw["model.embed_tokens.weight"])
    assert torch.equal(out["model.layers.0.mlp.up_proj.weight"], sw["model.layers.0.mlp.up_proj.weight"])
    n = "model.layers.1.mlp.up_proj.weight"
    assert torch.equal(out[n], 0.5 * sw[n] + 0.5 * en[n])
    assert "model.embed_tokens.weight" in res.provenance["dropped"][str(tiny_source_dir)]
    tok = load_tokenizer(tmp_path / "swap")
    assert len(tok) == 350
    texts = target_texts[-40:]
    merged = bits_per_byte(load_model(tmp_path / "swap"), tok, texts, window=64).bits_per_byte
    own = bits_per_byte(load_model(adapted), load_tokenizer(adapted), texts, window=64).bits_per_byte
    assert 0 < merged < 3 * own and merged != own
    # merging without the rule is refused: the vocabularies differ
    c = {"merge_method": "linear", "models": [{"model": str(adapted)}, {"model": str(tiny_source_dir)}]}
    refused(tmp_path, c, "different vocabulary sizes")
    c["tokenizer_source"] = str(adapted)
    run(cfg(tmp_path, c), tmp_path / "lin", **QUIET)
    lin = tensors(tmp_path / "lin")
    assert torch.equal(lin["model.embed_tokens.weight"], sw["model.embed_tokens.weight"])
    assert torch.allclose(lin[n], (sw[n] + en[n]) / 2)


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    from merge_fixtures import tied_bf16_models

    return tied_bf16_models(tmp_path_factory.mktemp("tied_models"))


def test_ties_tie_break_mergekit_streams_like_whole_tensors(tied, tmp_path):
    """tie_break: mergekit through the engine (cached, and chunked with an extra whole-tensor pass) equals
    the in-memory per-tensor math, and differs from the default only at elements tied with a threshold."""
    from merge_fixtures import threshold_ties

    c = {"merge_method": "ties", "base_model": str(tied["base"]), "dtype": "float32",
         "models": [{"model": str(m), "parameters": {"density": 0.3}} for m in tied["ft"]],
         "parameters": {"tie_break": "mergekit"}}
    path = cfg(tmp_path, c)
    run(path, tmp_path / "a", **QUIET)
    run(path, tmp_path / "b", chunk_elems=300, **QUIET)
    a, b = tensors(tmp_path / "a"), tensors(tmp_path / "b")
    base, fts = tensors(tied["base"]), [tensors(m) for m in tied["ft"]]
    changed = 0
    for n in base:
        ins = [f[n].float() for f in fts]
        want = merge_tensors("ties", base[n].float(), ins, density=0.3, tie_break="mergekit", name=n)
        assert torch.equal(a[n], want) and torch.equal(b[n], want), n
        default = merge_tensors("ties", base[n].float(), ins, density=0.3, name=n)
        diff = default != want
        changed += int(diff.sum())
        assert not bool((diff & ~threshold_ties(base, fts, n, 0.3)).any()), n
    assert changed > 0


def test_bad_tie_break_mergekit_with_global_trim(models, tmp_path):
    e = refused(tmp_path, ties_config(models, trim_scope="global", tie_break="mergekit"),
                "tie_break: mergekit .* cannot be combined with trim_scope: global")
    assert "trim_scope: tensor" in e.fix
