"""Self-knowledge distillation for cross-lingual extractive QA (Carrino, Escolano, Fonollosa 2023; arXiv 2309.17134).

The student is trained on cross-lingual QA examples (question and context in different languages) with

    L = α_ce · CE(start, end) + α_KL · KL_T,
    CE   = ½ [CE(start logits, gold start) + CE(end logits, gold end)]                (as a HF QA head computes it)
    KL_T = ½ [KL(p_T^start ‖ q_T^start) + KL(p_T^end ‖ q_T^end)] · T²                  (forward KL, batch mean)

with p_T = softmax(teacher logits / T), q_T = softmax(student logits / T); the teacher is a copy of the student
(self-distillation; the authors refresh it at each epoch). With ``use_map`` the weight α_KL is the batch's
:func:`map_at_k_coefficient`, otherwise 1.

The coefficient follows the authors' ``compute_kl_map_at_k_coefficients`` (``src/utils.py``) exactly, quirks included:

- a top-k position is *relevant* when it lies in ``range(gold − window, gold + window)``, i.e. gold−5 … gold+4
  (the end is excluded);
- their AP@k (the Kaggle ``apk`` on 0/1 hit lists with ``actual = [1]``) counts only the *first* hit, so AP@k is
  1 / (rank of the first relevant top-k position) and 0 when none of the top k is relevant.

α_KL = ½ (mean_batch AP@k(start) + mean_batch AP@k(end)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from xlt.errors import XltError
from xlt.options import option, positive
from xlt.tasks.registry import register_loss

PAPER = "Carrino, Escolano, Fonollosa 2023, arXiv 2309.17134 (self-knowledge distillation for G-XLT QA)"


@dataclass
class SelfKDOptions:
    temperature: float = option(2.0, "softmax temperature T of the KL term (the KL is scaled by T²)", check=positive)
    alpha_ce: float = option(1.0, "weight of the cross-entropy on the gold start/end positions")
    use_map: bool = option(True, "weight the KL term by the teacher's mAP@k coefficient (else by 1)")
    k: int = option(10, "teacher top-k positions scored by the mAP@k coefficient", check=positive)
    window: int = option(5, "a top-k position is relevant in gold−window … gold+window−1", check=positive)


def average_precision_at_k(hits: list[int], k: int) -> float:
    """The authors' AP@k of a ranked 0/1 hit list against ``actual = [1]``: only the first hit counts, so this is
    1 / (rank of the first hit among the first ``k``), or 0 without one."""
    for i, h in enumerate(hits[:k]):
        if h:
            return 1.0 / (i + 1.0)
    return 0.0


def _map_one_side(gold: torch.Tensor, teacher_logits: torch.Tensor, k: int, window: int, temperature: float) -> float:
    kk = min(k, teacher_logits.shape[-1])  # a sequence shorter than k: every position is ranked
    top = F.softmax(teacher_logits.detach().float() / temperature, dim=-1).topk(k=kk).indices.tolist()
    aps = []
    for idx, pos in zip(top, gold.tolist()):
        relevant = range(pos - window, pos + window)  # the authors' window: pos−window … pos+window−1
        aps.append(average_precision_at_k([1 if i in relevant else 0 for i in idx], kk))
    return float(sum(aps) / len(aps))


def _check_gold(gold_start: torch.Tensor, gold_end: torch.Tensor, length: int, batch: int) -> None:
    gs, ge = torch.as_tensor(gold_start).reshape(-1), torch.as_tensor(gold_end).reshape(-1)
    if gs.numel() != batch or ge.numel() != batch:
        raise XltError(f"{gs.numel()} gold starts and {ge.numel()} gold ends for a batch of {batch} examples",
                       "give one gold start and one gold end position per example")
    bad = [i for i in range(batch) if not (0 <= int(gs[i]) <= int(ge[i]) < length)]
    if bad:
        i = bad[0]
        raise XltError(f"example {i}: the answer span {int(gs[i])}…{int(ge[i])} is not inside its context of "
                       f"{length} positions (start ≤ end < length)",
                       "give answer positions within the tokenised context (see xlt.tasks.selfkd.encode_qa)")


def map_at_k_coefficient(gold_start: torch.Tensor, gold_end: torch.Tensor, teacher_start_logits: torch.Tensor,
                         teacher_end_logits: torch.Tensor, k: int = 10, window: int = 5,
                         temperature: float = 2.0) -> float:
    """α_KL = ½ (mAP@k of the teacher's top-k start positions + the same for end positions) over the batch
    (module docstring; the teacher logits are (batch, length), the gold positions (batch,))."""
    if teacher_start_logits.shape != teacher_end_logits.shape or teacher_start_logits.dim() != 2:
        raise XltError(f"teacher start/end logits of shapes {tuple(teacher_start_logits.shape)} and "
                       f"{tuple(teacher_end_logits.shape)}", "give two (batch, length) tensors of the same shape")
    b, n = teacher_start_logits.shape
    _check_gold(gold_start, gold_end, n, b)
    return 0.5 * (_map_one_side(torch.as_tensor(gold_start), teacher_start_logits, k, window, temperature)
                  + _map_one_side(torch.as_tensor(gold_end), teacher_end_logits, k, window, temperature))


def kl_t(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Forward KL(softmax(teacher/T) ‖ softmax(student/T)) · T², averaged over the batch (``batchmean``)."""
    return F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                    F.softmax(teacher_logits.detach() / temperature, dim=-1),
                    reduction="batchmean") * temperature ** 2


def _example(g: torch.Generator):
    b, n = 3, 16
    ss, se = (torch.randn(b, n, generator=g).requires_grad_(True) for _ in range(2))
    ts, te = torch.randn(b, n, generator=g), torch.randn(b, n, generator=g)
    gs = torch.tensor([1, 4, 9])
    ge = torch.tensor([3, 4, 12])
    # the teacher ranks near the gold first for two examples, so α_KL is neither 0 nor 1
    ts[0, 2] += 10.0
    te[1, 6] += 10.0
    return ((ss, se), (ts, te), (gs, ge)), {"temperature": 2.0, "alpha_ce": 1.0, "use_map": True}


@register_loss("qa_self_distillation", description="extractive-QA cross-entropy + mAP@k-weighted self-distillation "
               "KL between student and teacher start/end distributions", options=SelfKDOptions,
               example=_example, paper=PAPER)
def qa_self_distillation_loss(student_logits, teacher_logits, gold, temperature: float = 2.0, alpha_ce: float = 1.0,
                              use_map: bool = True, k: int = 10, window: int = 5) -> torch.Tensor:
    """``alpha_ce · CE + α_KL · KL_T`` (module docstring). ``student_logits`` and ``teacher_logits`` are
    ``(start, end)`` pairs of (batch, length) tensors, ``gold`` is ``(start_positions, end_positions)``; the teacher
    gets no gradient."""
    (ss, se), (ts, te), (gs, ge) = student_logits, teacher_logits, gold
    if not (ss.shape == se.shape == ts.shape == te.shape) or ss.dim() != 2:
        raise XltError(f"student/teacher start/end logits of shapes {[tuple(t.shape) for t in (ss, se, ts, te)]}",
                       "give four (batch, length) tensors of the same shape")
    if temperature <= 0:
        raise XltError(f"temperature must be positive, not {temperature}", "pass temperature=2.0 (the paper's)")
    b, n = ss.shape
    _check_gold(gs, ge, n, b)
    gs, ge = torch.as_tensor(gs).reshape(-1).long(), torch.as_tensor(ge).reshape(-1).long()
    ce = 0.5 * (F.cross_entropy(ss, gs) + F.cross_entropy(se, ge))
    kl = 0.5 * (kl_t(ss, ts, temperature) + kl_t(se, te, temperature))
    alpha_kl = map_at_k_coefficient(gs, ge, ts, te, k, window, temperature) if use_map else 1.0
    return alpha_ce * ce + alpha_kl * kl


# -- examples: the answer span in token positions ------------------------------------------------------------
def locate_answer(context: str, answer: str, answer_start: int | None = None) -> int:
    """The character offset of ``answer`` in ``context`` (``answer_start`` is checked when given); an answer that is
    not in its context raises one :class:`XltError`."""
    if not answer.strip():
        raise XltError("an empty answer", "give the answer text, a span of its context")
    if answer_start is None:
        at = context.find(answer)
        if at < 0:
            raise XltError(f"the answer {answer[:60]!r} is not in its context ({context[:60]!r}…)",
                           "give an answer that is a span of the context (extractive QA)")
        return at
    if not (0 <= answer_start and context[answer_start:answer_start + len(answer)] == answer):
        raise XltError(f"the answer {answer[:60]!r} is not at character {answer_start} of its context "
                       f"(found {context[answer_start:answer_start + len(answer)][:60]!r})",
                       "give the answer's character offset in the context, or omit answer_start")
    return answer_start


def encode_qa(tokenizer, questions: list[str], contexts: list[str], answers: list[str],
              answer_starts: list[int | None] | None = None, max_length: int = 384) -> dict:
    """Tokenise (question, context) pairs and map each answer to token positions.

    Returns ``input_ids``, ``attention_mask``, ``token_type_ids`` (when the tokenizer gives them),
    ``start_positions``, ``end_positions``, ``context_mask`` (1 on context tokens) and ``offsets``. Every answer
    is checked before anything is tokenised: one not in its context, or cut off by ``max_length``, raises
    :class:`XltError`."""
    n = len(questions)
    if not (n == len(contexts) == len(answers)) or n == 0:
        raise XltError(f"{len(questions)} questions, {len(contexts)} contexts, {len(answers)} answers",
                       "give one context and one answer per question")
    starts = answer_starts or [None] * n
    chars = [locate_answer(c, a, s) for c, a, s in zip(contexts, answers, starts)]
    enc = tokenizer(questions, contexts, truncation="only_second", max_length=max_length, padding=True,
                    return_offsets_mapping=True, return_tensors="pt")
    sp, ep, cmask = [], [], torch.zeros_like(enc["input_ids"])
    for i in range(n):
        seq = enc.sequence_ids(i)
        offs = enc["offset_mapping"][i].tolist()
        a0, a1 = chars[i], chars[i] + len(answers[i])
        ctx = [j for j, s in enumerate(seq) if s == 1]
        cmask[i, ctx] = 1
        s = next((j for j in ctx if offs[j][1] > a0), None)
        e = next((j for j in reversed(ctx) if offs[j][0] < a1), None)
        if s is None or e is None or offs[ctx[-1]][1] < a1:
            raise XltError(f"example {i}: the answer ends at character {a1} but the context is cut at "
                           f"{offs[ctx[-1]][1] if ctx else 0} by max_length={max_length}",
                           "raise max_length or shorten the context")
        sp.append(s)
        ep.append(e)
    out = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    out.update(start_positions=torch.tensor(sp), end_positions=torch.tensor(ep), context_mask=cmask,
               offsets=enc["offset_mapping"])
    return out


def best_span(start_logits: torch.Tensor, end_logits: torch.Tensor, context_mask: torch.Tensor,
              max_answer_tokens: int = 64) -> list[tuple[int, int]]:
    """Per example, the context span (s ≤ e < s + max_answer_tokens) with the largest start + end logit."""
    out = []
    neg = torch.finfo(start_logits.dtype).min / 4
    for sl, el, m in zip(start_logits, end_logits, context_mask):
        sl = sl.masked_fill(m == 0, neg)
        el = el.masked_fill(m == 0, neg)
        score = sl[:, None] + el[None, :]
        n = score.shape[0]
        i = torch.arange(n)
        ok = (i[None, :] >= i[:, None]) & (i[None, :] < i[:, None] + max_answer_tokens)
        flat = score.masked_fill(~ok, float("-inf")).argmax()
        out.append((int(flat // n), int(flat % n)))
    return out


def span_text(context: str, offsets, start: int, end: int) -> str:
    """The context text of token positions ``start … end`` (``offsets`` from :func:`encode_qa`), without the leading
    or trailing whitespace SentencePiece offsets include."""
    return context[int(offsets[start][0]):int(offsets[end][1])].strip()


def _normalize(text: str) -> list[str]:
    import re
    import string
    import unicodedata

    text = "".join(ch for ch in unicodedata.normalize("NFC", text.lower()) if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return text.split()


def exact_match_f1(prediction: str, gold: str) -> tuple[float, float]:
    """SQuAD v1.1 exact match and token F1 (lower-cased, punctuation and articles removed)."""
    p, g = _normalize(prediction), _normalize(gold)
    em = float(p == g)
    gc: dict[str, int] = {}
    for t in g:
        gc[t] = gc.get(t, 0) + 1
    pc: dict[str, int] = {}
    for t in p:
        pc[t] = pc.get(t, 0) + 1
    same = sum(min(c, gc.get(t, 0)) for t, c in pc.items())
    if same == 0:
        return em, 0.0
    prec, rec = same / len(p), same / len(g)
    return em, 2 * prec * rec / (prec + rec)
