"""The report renders in headless Chromium with non-empty plots (skipped where Chromium is absent)."""

import shutil
import subprocess

import pytest

from test_pipeline import finished_run  # noqa: F401  (module-scoped fixture reused)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_with_plots(finished_run, tmp_path):  # noqa: F811
    from PIL import Image

    out, _ = finished_run
    shot = tmp_path / "report.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1100,1400",
           f"--screenshot={shot}", (out / "report.html").resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    img = Image.open(shot).convert("RGB")
    assert img.size == (1100, 1400)
    px = list(img.getdata())
    # matplotlib's first two line colours (#1f77b4 blue, #ff7f0e orange) must be on screen: the plot was drawn
    def near(c, ref, tol=40):
        return all(abs(a - b) <= tol for a, b in zip(c, ref))
    blue = sum(near(c, (31, 119, 180)) for c in px)
    orange = sum(near(c, (255, 127, 14)) for c in px)
    assert blue > 200 and orange > 200, (blue, orange)
    non_white = sum(1 for c in px if sum(c) < 700)
    assert non_white > 0.03 * len(px)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_evaluation_report_renders_its_heatmaps(tiny_source_dir, parallel_jsonl, tmp_path):
    from PIL import Image

    from xlt.eval.evaluate import evaluate

    evaluate([str(tiny_source_dir)], "en,sw", "bpb,tokenizer,parity", tmp_path / "ev",
             corpus=f"jsonl:{parallel_jsonl}", max_bytes=1500, show_progress=False)
    shot = tmp_path / "eval.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1100,1400",
           f"--screenshot={shot}", (tmp_path / "ev" / "report.html").resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    px = list(Image.open(shot).convert("RGB").getdata())
    # the RdYlGn heatmap cells (saturated reds, yellows or greens) are on screen
    coloured = sum(1 for r, g, b in px if max(r, g, b) - min(r, g, b) > 60)
    assert coloured > 0.01 * len(px), coloured
