"""``xlt study clone`` (Schäfer et al. 2024): the sampling of languages per row, token accounting, equal budgets,
rows that decode to the original text, the tiny-LM training pieces, the whole study on a toy corpus, bad input. (The
defaults on the English Bible take about 5 minutes on 2 cores: measured in docs/predict.md, not a test.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binomtest

from xlt.data.builders.clone import clone_map, unclone
from xlt.errors import XltError
from xlt.study.clone import CloneStudyOptions, Setting, languages_of_rows, run_clone_study, training_rows
from xlt.study.lm import TinyLMOptions, new_model, perplexity, rows_from_ids, train_rows


def test_shares_follow_p_clone_within_binomial_bounds():
    n = 20000
    for k, p in [(2, 0.5), (2, 0.9), (10, 0.5)]:
        langs = languages_of_rows(n, k, Setting("x", p=p), seed=0)
        counts = np.bincount(langs, minlength=k)
        assert binomtest(int(counts[0]), n, 1 - p).pvalue > 0.01
        for c in range(1, k):
            assert binomtest(int(counts[c]), n, p / (k - 1)).pvalue > 0.01
    # the paper's 10-language accounting: 50 % original, 50/9 = 5.6 % per clone
    langs = languages_of_rows(n, 10, Setting("x", p=0.5), seed=0)
    share = np.bincount(langs, minlength=10) / n
    assert abs(share[0] - 0.5) < 0.02 and np.all(np.abs(share[1:] - 0.5 / 9) < 0.01)


def test_schedule_is_a_curriculum_and_settings_share_their_random_numbers():
    n = 10000
    langs = languages_of_rows(n, 2, Setting("s", schedule=[0.1, 0.9]), seed=3)
    first, second = langs[: n // 2], langs[n // 2:]
    assert abs(first.mean() - 0.1) < 0.02 and abs(second.mean() - 0.9) < 0.02
    lo = languages_of_rows(n, 2, Setting("a", p=0.3), seed=3)
    hi = languages_of_rows(n, 2, Setting("b", p=0.6), seed=3)
    assert np.all(hi[lo == 1] == 1)  # common random numbers: every row cloned at 0.3 is cloned at 0.6
    assert not np.array_equal(languages_of_rows(n, 2, Setting("b", p=0.6), seed=4), hi)
    assert np.all(languages_of_rows(n, 3, Setting("m", p=0.0), seed=0) == 0)


def test_training_rows_repeat_reshuffled_and_rendered_rows_decode_to_the_original():
    content = np.arange(50, dtype=np.int64).reshape(10, 5) % 7 + 3  # ids 3..9, specials 0..2
    rows = training_rows(content, 25, seed=0)
    assert rows.shape == (25, 5)
    # every content row once per pass: the first 10 and the next 10 are permutations of it
    for a in (rows[:10], rows[10:20]):
        assert sorted(map(tuple, a)) == sorted(map(tuple, content))
    assert not np.array_equal(rows[:10], rows[10:20])
    table = clone_map(10, 3, 1.0, seed=0, special_ids=[0, 1, 2])
    langs = languages_of_rows(25, 3, Setting("x", p=0.7), seed=0)
    rendered = table[langs[:, None], rows]
    assert np.array_equal(unclone(rendered, table), rows)
    assert np.all((rendered >= 10) == (langs[:, None] > 0))  # clones use only their own ids here (frac 1)


def test_rows_from_ids_packs_with_bos_and_eos():
    rows = rows_from_ids([[5, 6, 7], [8, 9]], seq_len=4, bos=1, eos=2)
    # stream 5 6 7 2 8 9 2 -> bodies of 3: [5 6 7] [2 8 9], tail [2] dropped
    assert rows.tolist() == [[1, 5, 6, 7], [1, 2, 8, 9]]
    with pytest.raises(XltError):
        rows_from_ids([[1]], seq_len=1, bos=1, eos=2)


def test_training_lowers_perplexity_and_is_deterministic():
    rng = np.random.default_rng(0)
    rows = np.concatenate([np.ones((64, 1), np.int64), rng.integers(3, 12, (64, 15)) // 3 * 3], axis=1)
    o = TinyLMOptions(hidden=32, layers=1, heads=2, batch_size=8, lr=1e-2)
    m1 = new_model(16, o, seed=0, max_positions=32)
    before = perplexity(m1, rows)
    losses = train_rows(m1, rows, o, seed=0)
    assert len(losses) == 8 and perplexity(m1, rows) < before
    m2 = new_model(16, o, seed=0, max_positions=32)
    assert train_rows(m2, rows, o, seed=0) == losses
    assert perplexity(m1, rows) == perplexity(m2, rows)
    # perplexity is exp(mean cross-entropy): a uniform model over V gives V
    import torch

    with torch.no_grad():
        for p in m2.parameters():
            p.zero_()
    assert perplexity(m2, rows) == pytest.approx(16.0, rel=1e-6)


@pytest.fixture
def toy_text(tmp_path):
    from xlt.data.toy import toy_parallel

    path = tmp_path / "toy.jsonl"
    toy_parallel(path, ("eng",), n=3000)
    return f"jsonl:{path}"


def _tiny(toy_text, **kw):
    return dict(corpus=toy_text, lang="eng", vocab_size=300, token_budget=12000, seq_len=32, eval_rows=16,
                hidden=32, layers=1, heads=2, batch_size=8, mono_fractions=[0.25, 0.5, 0.75, 1.0], **kw)


def test_study_on_a_toy_corpus(tmp_path, toy_text):
    out = tmp_path / "study"
    m = run_clone_study(out, show_progress=False, **_tiny(toy_text))
    names = [s["name"] for s in m["settings"]]
    assert names == ["mono 0.25", "mono 0.5", "mono 0.75", "mono 1", "p=0.5", "p=0.9", "schedule 0.1_0.9"]
    budget_rows = 12000 // 32
    for s in m["settings"]:
        if not s["mono"]:  # the same token budget in every mixed setting, accounted per language
            assert s["tokens"] == budget_rows * 32 and sum(s["tokens_per_language"]) == s["tokens"]
            assert set(s["ppl"]) == {"0", "1"} and all(np.isfinite(v) for v in s["ppl"].values())
        else:
            assert s["tokens_per_language"][1] == 0 and set(s["ppl"]) == {"0"}
    p9 = next(s for s in m["settings"] if s["name"] == "p=0.9")
    assert 0.8 < p9["share_per_language"][1] < 0.97
    assert m["symmetry"]["setting"] == "p=0.5" and "relative_difference" in m["symmetry"]
    assert set(json.loads((out / "metrics.json").read_text())) >= {"settings", "law", "symmetry", "options"}
    assert (out / "report.html").read_text().count("<img") == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    with pytest.raises(XltError) as err:
        run_clone_study(out, show_progress=False, **_tiny(toy_text))
    assert "already exists" in err.value.problem


@pytest.mark.parametrize("bad, says", [({"p_clone": [0.5, 1.5]}, "p_clone"), ({"schedule": ["0.1_x"]}, "schedule"),
                                       ({"k": 1}, "k"), ({"mono_fractions": [0.5, 1.0]}, "mono_fractions"),
                                       ({"token_budget": 64}, "token budget")])
def test_bad_input(tmp_path, toy_text, bad, says):
    opts = _tiny(toy_text)
    opts.update(bad)
    with pytest.raises(XltError) as err:
        run_clone_study(tmp_path / "o", show_progress=False, **opts)
    assert says in str(err.value) and err.value.fix
    assert not (tmp_path / "o").exists()


def test_options_defaults_are_the_documented_ones():
    o = CloneStudyOptions()
    assert (o.vocab_size, o.k, o.p_clone, o.schedule, o.hidden, o.layers) == (2000, 2, [0.5, 0.9], ["0.1_0.9"], 64, 2)


def test_a_law_that_cannot_be_fitted_leaves_teff_missing_with_why(tmp_path, toy_text, monkeypatch):
    import xlt.predict.scaling as scaling

    def refuse(*a, **k):
        raise XltError("the data law did not converge on these 4 points", "give more points")

    monkeypatch.setattr(scaling, "fit_law", refuse)
    m = run_clone_study(tmp_path / "s", show_progress=False, **_tiny(toy_text))
    assert m["law"]["skipped"].startswith("the data law did not converge")
    assert all(v is None for s in m["settings"] for v in s["teff"].values())
    assert "not fitted" in (tmp_path / "s" / "report.html").read_text()
