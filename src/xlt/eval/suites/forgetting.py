"""``forgetting``: what adapting a model cost its source language (seed §15, Kinyarwanda→Kirundi).

For each adapted model and each metric scored on its source language by the other suites, against its source model:
``Forget% = (before − after) / before × 100`` for higher-is-better metrics, with the sign flipped for lower-is-better
ones (bits/byte), so a positive value always means the source language lost. The target language's zero-shot score
(the source model) and adapted score are listed beside it.
"""

from __future__ import annotations

from xlt.errors import XltError
from xlt.eval.registry import SuiteOutput, register_suite
from xlt.eval.scores import LangScores, Score
from xlt.languages import resolve


def forget_percent(before: float, after: float, higher_is_better: bool = True) -> float:
    """Share of ``before`` lost, in percent (positive = worse after, whatever the metric's direction)."""
    if before == 0:
        return float("nan")
    lost = (before - after) if higher_is_better else (after - before)
    return lost / abs(before) * 100


def languages(ctx, opts) -> list[str]:
    """The source language (and the target) of every adapted model: the other suites must score them."""
    return [code for m in ctx.models if m.role == "adapted" for code in (m.source_lang, m.target) if code]


def prepare(ctx, opts) -> None:
    if not any(m.role == "adapted" for m in ctx.models):
        raise XltError("the forgetting suite needs an adapted model and its source",
                       "evaluate a run folder of `xlt adapt` (it brings both)")


def combine(ctx, scores: LangScores, opts) -> SuiteOutput:
    out, rows, undefined = LangScores(), [], []
    base = LangScores([s for s in scores if s.suite != "forgetting"])
    for m in (m for m in ctx.models if m.role == "adapted"):
        src_lang, tgt = resolve(m.source_lang).code, resolve(m.target).code if m.target else None
        for metric in base.metrics():
            before, after = base.get(m.source, src_lang, metric), base.get(m.name, src_lang, metric)
            if before is None or after is None:
                continue
            if before.value == 0:  # a share of nothing: Forget% is undefined (an off-target rate that starts at 0)
                undefined.append({"model": m.name, "metric": metric, "before": 0.0, "after": after.value})
                continue
            f = forget_percent(before.value, after.value, before.higher_is_better)
            out.add(Score(m.name, src_lang, f"forget%:{metric}", f, n=after.n, n_unit=after.n_unit,
                          higher_is_better=False, suite="forgetting",
                          signature=f"forgetting|before:{m.source}|metric:{metric}|{after.signature}"))
            row = {"model": m.name, "source": m.source, "metric": metric, "source_lang": src_lang,
                   "before": before.value, "after": after.value, "forget_percent": f}
            if tgt:
                zs, ad = base.get(m.source, tgt, metric), base.get(m.name, tgt, metric)
                row.update(target=tgt, target_zero_shot=zs.value if zs else None, target_adapted=ad.value if ad else None)
            rows.append(row)
    if not rows and not undefined:
        raise XltError("no metric was scored on the source language of both an adapted model and its source",
                       "add a per-model suite such as bpb (--suite bpb,forgetting)")
    return SuiteOutput(out, {"table": rows, "undefined": undefined,
                             "undefined_rule": "Forget% is not defined where the source model scored 0"})


register_suite("forgetting", "Forget% of each adapted model on its source language (positive = lost), beside the "
               "target's zero-shot and adapted scores", languages=languages, prepare=prepare, combine=combine)
