"""Contracts every registered merge method keeps, on tiny saved models of every family xlt supports.

Parametrised over :data:`xlt.merge.MERGES` and over :data:`xlt.models.tiny.FAMILIES` (tied heads, plus an untied
Llama): a method or a family added later is tested here without new test code. Each method's config is built from
its declaration (``min_models``/``max_models``, ``check_inputs``, ``needs_base``/``uses_base``, ``example``):

- the output folder loads with transformers with no missing, unexpected or mismatched weights, and its logits are
  finite;
- identical inputs give the input back bit for bit, on every tensor, for every method that declares
  ``idempotent``;
- a refused config (an unknown parameter) and a write interrupted part-way leave nothing behind: no output
  folder, no temporary folder beside it.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from merge_fixtures import finetune, input_count, one_torch_thread, tensors  # noqa: F401
from xlt import arch
from xlt.errors import XltError
from xlt.merge import MERGES, run
from xlt.models.tiny import FAMILIES, tiny_model

CASES = [(f, True) for f in FAMILIES] + [("llama", False)]
METHODS = MERGES.names()
QUIET = dict(show_progress=False, hash_inputs=False)


def case_id(case) -> str:
    return f"{case[0]}-{'tied' if case[1] else 'untied'}"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Per case: a base, three different "fine-tunes" of it and three byte-identical copies of it."""
    root = tmp_path_factory.mktemp("merge_zoo")
    out = {}
    for family, tied in CASES:
        d = root / case_id((family, tied))
        tiny_model(family, vocab_size=64, hidden=32, layers=2, heads=4, tied=tied, seed=1).save_pretrained(d / "base")
        out[(family, tied)] = {
            "base": d / "base",
            "ft": [finetune(d / "base", d / f"ft{i}", seed=30 + i, scale=0.02) for i in range(3)],
            "same": [shutil.copytree(d / "base", d / f"same{i}") for i in range(3)],
        }
    return out


def config(name: str, models: dict, identical: bool = False, **params) -> dict:
    m = MERGES.get(name)
    has_base = m.needs_base or m.uses_base
    pool = models["same" if identical else "ft"]
    c = {"merge_method": name, "models": [{"model": str(p)} for p in pool[:input_count(m, has_base)]],
         "parameters": {**m.example, **params}}
    if has_base:
        c["base_model"] = str(models["base"])
    return c


def leftovers(folder, out) -> list[str]:
    """Whatever a run left of ``out`` in ``folder``: the folder itself or temporary folders beside it."""
    return sorted(p.name for p in folder.iterdir() if p.name == out.name or p.name.startswith(f".{out.name}."))


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("method", METHODS)
def test_output_loads_and_gives_finite_logits(zoo, tmp_path, method, case):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    models = zoo[case]
    out = tmp_path / "out"
    run(config(method, models), out, **QUIET)
    auto = AutoModelForCausalLM if arch.for_config(json.loads((out / "config.json").read_text())).causal \
        else AutoModelForMaskedLM
    model, info = auto.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        logits = model.eval()(torch.tensor([[1, 5, 9, 33, 2, 17]])).logits
    assert logits.shape[-1] == 64 and bool(torch.isfinite(logits).all())


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("method", [n for n in METHODS if MERGES.get(n).idempotent])
def test_identical_inputs_give_the_input_back(zoo, tmp_path, method, case):
    models = zoo[case]
    run(config(method, models, identical=True), tmp_path / "out", **QUIET)
    got, want = tensors(tmp_path / "out"), tensors(models["base"])
    assert set(got) == set(want)
    for n, w in want.items():
        assert got[n].dtype == w.dtype and torch.equal(got[n].view(torch.uint8), w.view(torch.uint8)), n


@pytest.mark.parametrize("method", METHODS)
def test_refused_config_leaves_nothing_behind(zoo, tmp_path, method):
    out = tmp_path / "out"
    with pytest.raises(XltError, match="no parameter 'no_such_option'") as e:
        run(config(method, zoo[("llama", True)], no_such_option=1), out, **QUIET)
    assert e.value.fix and leftovers(tmp_path, out) == []


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("method", METHODS)
def test_interrupted_write_leaves_nothing_behind(zoo, tmp_path, method, monkeypatch):
    from xlt.merge.io import ShardedWriter

    write, calls, during = ShardedWriter.write, [], []
    out = tmp_path / "out"

    def failing(self, data):
        calls.append(1)
        if len(calls) == 3:  # part-way: two chunks are in a shard of the temporary folder
            during.extend(leftovers(tmp_path, out))
            raise Interrupted("stopped while writing")
        return write(self, data)

    monkeypatch.setattr(ShardedWriter, "write", failing)
    with pytest.raises(Interrupted):
        run(config(method, zoo[("llama", True)]), out, **QUIET)
    assert len(calls) == 3 and during and leftovers(tmp_path, out) == []
