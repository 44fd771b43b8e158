"""bench/peft.py's table: the "vs LoRA" column says fewer or more, never "0.0x fewer"."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "peft.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("xlt_bench_peft", BENCH)  # not "peft": that is the package
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_vs_lora_says_fewer_or_more(bench):
    assert bench.vs_lora(305_280, 2_442_240) == "8.0x fewer"
    assert bench.vs_lora(110_811_456, 2_442_240) == "45.4x more"  # full vs LoRA r=8 on SmolLM2, 8,000-token vocabulary
    assert bench.vs_lora(2_442_240, 2_442_240) == "same"
    assert bench.vs_lora(1_000, None) == "—"


def _row(method, n):
    return {"method": method, "trainable_parameters_stage2": n, "model_parameters": 10 * n, "peak_rss_mib": 1000.0,
            "tokens_per_s_stage2": 500.0, "dev_bpb_step0": 3.0, "dev_bpb_final": 2.0, "test_bpb_final": 2.1,
            "source_test_bpb": 4.0}


def test_rendered_table(bench):
    settings = dict(source="smollm2", target="sw", corpus="bible", init="overlap", steps=40, stage1_steps=10, batch_size=4,
                    seq_len=128)
    rows = [_row("recursive", 60_000_000), _row("mos", 305_280), _row("lora", 2_442_240), _row("full", 110_811_456),
            {"method": "sft", "error": "boom"}]
    md = bench.render(settings, "CPU, 2 threads, fp32", rows)
    body = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ") and "---" not in line}
    assert list(body) == ["method", "full", "lora", "mos", "recursive"]  # fixed order, failed rows left out
    assert "| 45.4x more |" in body["full"] and "| — |" in body["lora"] and "| 8.0x fewer |" in body["mos"]
    assert "| 24.6x more |" in body["recursive"]
    assert "0.0x" not in md and "GPU throughput: not measured" in md
    without_lora = bench.render(settings, "GPU H200 (bf16 autocast)", [_row("full", 10), _row("mos", 5)])
    assert "x fewer" not in without_lora and "x more" not in without_lora and "GPU throughput" not in without_lora
