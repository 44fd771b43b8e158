"""``parity``: how unequal each model is across languages, on every metric the other suites scored (MultiLoKo):
average, min, max, gap = max − min, 2·SE across languages, and against ``parity_ref`` the relative gap and the
transfer ratio per language (:func:`xlt.eval.parity.parity`)."""

from __future__ import annotations

from dataclasses import dataclass

from xlt.eval.parity import parity
from xlt.eval.registry import SuiteOutput, register_suite
from xlt.eval.scores import LangScores
from xlt.languages import resolve
from xlt.options import option


@dataclass
class ParityOptions:
    parity_ref: str = option("eng", "the language gaps and transfer ratios are measured against ('none': skip)")


def prepare(ctx, opts: ParityOptions) -> None:
    from xlt.errors import XltError

    if len(ctx.langs) < 2:
        raise XltError(f"parity needs at least two languages, got {', '.join(l.code for l in ctx.langs)}",
                       "evaluate more languages (--langs)")
    if opts.parity_ref != "none":
        ref = resolve(opts.parity_ref).code
        if all(lang.code != ref for lang in ctx.langs):
            raise XltError(f"the gap to {ref} needs {ref} among --langs",
                           f"add {ref} to --langs, or pass -O parity_ref=none")


def combine(ctx, scores: LangScores, opts: ParityOptions) -> SuiteOutput:
    ref = None if opts.parity_ref == "none" else resolve(opts.parity_ref).code
    table = []
    for metric in scores.metrics():
        if metric.startswith("forget%"):
            continue
        for model, vals in scores.table(metric).items():
            if len(vals) >= 2:
                table.append({"model": model, "metric": metric, "higher_is_better": scores.direction(metric),
                              **parity(vals, ref if ref in vals else None)})
    return SuiteOutput(details={"table": table, "ref": ref})


register_suite("parity", "average, min, max, gap and 2·SE across languages, gap and transfer ratio to a reference, "
               "for every metric", ParityOptions, prepare=prepare, combine=combine)
