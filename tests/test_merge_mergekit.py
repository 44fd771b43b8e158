"""`xlt merge` equals mergekit's output tensor by tensor (max |Δ| ≤ 1e-6) where both define the same merge.

Needs mergekit (``make ref`` installs it into .venv with --no-deps); skipped cleanly without it. The inputs are
tiny float32 Llama checkpoints whose deltas have no exact ties at TIES's trim threshold (mergekit breaks those
with an unstable argsort, xlt in stream order; bench/merge.py shows the two differ only there).
"""

from __future__ import annotations

import pytest
import torch
import yaml

from merge_fixtures import finetune, save_tiny, tensors

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
