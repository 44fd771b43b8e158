"""`xlt merge` equals mergekit's output tensor by tensor (max |Δ| ≤ 1e-6) where both define the same merge.

Needs mergekit (``make ref`` installs it into .venv with --no-deps); skipped cleanly without it. The inputs are
tiny float32 Llama checkpoints whose deltas have no exact ties at TIES's trim threshold, and (for TIES's
``tie_break``) tiny bf16 ones with many: mergekit breaks those with an unstable argsort, xlt by default in stream
order, and with ``tie_break: mergekit`` exactly as mergekit does.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from merge_fixtures import finetune, save_tiny, tensors, threshold_ties, tied_bf16_models

mergekit = pytest.importorskip("mergekit")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("mk_models")
    base = save_tiny(d / "base", seed=3, vocab=64, hidden=32, layers=3)
    return {"base": base, "ft": [finetune(base, d / f"ft{i}", seed=20 + i, scale=0.02) for i in (1, 2, 3)]}


def run_mergekit(config: dict, out):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(config), str(out),
              options=MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))


CONFIGS = {
    "linear": lambda m: {"merge_method": "linear", "dtype": "float32",
                         "models": [{"model": str(f), "parameters": {"weight": w}} for f, w in zip(m["ft"], (1.0, 0.3, 2.0))]},
    "task_arithmetic": lambda m: {"merge_method": "task_arithmetic", "base_model": str(m["base"]), "dtype": "float32",
                                  "parameters": {"lambda": 0.7},
                                  "models": [{"model": str(f), "parameters": {"weight": w}}
                                             for f, w in zip(m["ft"], (1.0, -0.5, 0.8))]},
    "ties": lambda m: {"merge_method": "ties", "base_model": str(m["base"]), "dtype": "float32",
                       "parameters": {"normalize": True, "lambda": 1.1},
                       "models": [{"model": str(f), "parameters": {"weight": w, "density": d}}
                                  for f, w, d in zip(m["ft"], (1.0, 0.5, 0.8), (0.2, 0.5, 0.9))]},
    "ties_unnormalized": lambda m: {"merge_method": "ties", "base_model": str(m["base"]), "dtype": "float32",
                                    "parameters": {"normalize": False},
                                    "models": [{"model": str(f), "parameters": {"weight": 1.0, "density": 0.3}}
                                               for f in m["ft"]]},
    "slerp": lambda m: {"merge_method": "slerp", "base_model": str(m["base"]), "dtype": "float32",
                        "parameters": {"t": 0.35}, "models": [{"model": str(m["base"])}, {"model": str(m["ft"][0])}]},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_equals_mergekit(models, tmp_path, name):
    from xlt.merge import run

    config = CONFIGS[name](models)
    (tmp_path / "c.yml").write_text(yaml.safe_dump(config))
    run(tmp_path / "c.yml", tmp_path / "xlt", show_progress=False)
    run_mergekit(config, tmp_path / "mk")
    a, b = tensors(tmp_path / "xlt"), tensors(tmp_path / "mk")
    assert set(a) == set(b)
    worst = max(float((a[n].float() - b[n].float()).abs().max()) for n in a)
    assert worst <= 1e-6, f"{name}: max |Δ| = {worst}"


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    return tied_bf16_models(tmp_path_factory.mktemp("mk_tied"))


def tied_ties_config(m: dict, density: float = 0.3, **params) -> dict:
    return {"merge_method": "ties", "base_model": str(m["base"]), "dtype": "float32",
            "parameters": {"normalize": True, **params},
            "models": [{"model": str(f), "parameters": {"weight": 1.0, "density": density}} for f in m["ft"]]}


def test_tie_break_mergekit_equals_mergekit_on_bf16_ties(tied, tmp_path):
    from xlt.merge import run

    run_mergekit(tied_ties_config(tied), tmp_path / "mk")
    mk = tensors(tmp_path / "mk")
    base, fts = tensors(tied["base"]), [tensors(f) for f in tied["ft"]]
    for chunk in (1 << 23, 300):  # whole tensors, and rows in many chunks (the whole-tensor argsort still runs)
        out = tmp_path / f"xlt-mk-{chunk}"
        (tmp_path / "c.yml").write_text(yaml.safe_dump(tied_ties_config(tied, tie_break="mergekit")))
        run(tmp_path / "c.yml", out, show_progress=False, chunk_elems=chunk)
        got = tensors(out)
        assert set(got) == set(mk)
        for n in mk:
            assert torch.equal(got[n].float(), mk[n].float()), (chunk, n)
    # the default (stream order) differs from mergekit, and only where some |δ| equals its threshold exactly
    (tmp_path / "d.yml").write_text(yaml.safe_dump(tied_ties_config(tied)))
    run(tmp_path / "d.yml", tmp_path / "xlt", show_progress=False)
    got = tensors(tmp_path / "xlt")
    differ = 0
    for n in mk:
        diff = got[n].float() != mk[n].float()
        differ += int(diff.sum())
        assert not bool((diff & ~threshold_ties(base, fts, n, 0.3)).any()), n
    assert differ > 0, "the fixture has no straddling ties, so this test could not tell the tie breaks apart"
