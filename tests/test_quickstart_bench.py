"""bench/quickstart.py's extrapolation: per-step seconds from the probe's tokens/s, evaluations scaled, shared once."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "quickstart.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("xlt_bench_quickstart", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _probe(tmp_path, batch=8, seq=256):
    # 3 embedding-only steps of 2 s and 6 full steps of 4 s at 2,048 tokens each; 5 s of evaluations (3 of them)
    train = [{"step": i + 1, "stage": 1, "tokens_per_s": 1024.0} for i in range(3)]
    train += [{"step": i + 4, "stage": 2, "tokens_per_s": 512.0} for i in range(6)]
    init = {"history": {"train": train, "eval": [{"step": s} for s in (0, 3, 6)]},
            "seconds": {"train": 3 * 2 + 6 * 4 + 5.0, "total": 3 * 2 + 6 * 4 + 5.0 + 1.0}}
    whole = {"settings": {"eval_max_bytes": 20000, "train": {"batch_size": batch, "seq_len": seq}},
             "wall_seconds": init["seconds"]["total"] + 7.0}
    (tmp_path / "overlap").mkdir()
    (tmp_path / "overlap" / "metrics.json").write_text(json.dumps(init))
    (tmp_path / "metrics.json").write_text(json.dumps(whole))
    return tmp_path


def test_estimate_is_the_documented_arithmetic(bench, tmp_path):
    r = bench.estimate(_probe(tmp_path))
    assert r["probe"]["seconds_per_step_stage1"] == pytest.approx(2.0)
    assert r["probe"]["seconds_per_step_stage2"] == pytest.approx(4.0)
    assert r["probe"]["other_train_seconds"] == pytest.approx(5.0)
    assert r["quick_start"]["stage1_steps"] == 100 and r["quick_start"]["evaluations"] == 11
    per_init = 100 * 2.0 + 200 * 4.0 + 11 / 3 * 5.0 + 1.0
    assert r["estimate_seconds_per_init"] == pytest.approx(per_init)
    assert r["estimate_seconds_total"] == pytest.approx(3 * per_init + 7.0)


def test_a_probe_with_another_batch_is_refused(bench, tmp_path):
    with pytest.raises(SystemExit, match="8 × 256"):
        bench.estimate(_probe(tmp_path, batch=4, seq=128))
