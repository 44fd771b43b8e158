"""``qa``: users' own question-answering predictions scored the MultiLoKo way (Hupkes & Bogoychev 2025).

Input (``inputs["qa"]``, ``xlt evaluate --qa preds.jsonl``): JSON lines ``{"lang": ..., "prediction": str or list,
"answers": [...], "system": ..., "asked_in": ..., "source": ...}``; ``system`` defaults to ``predictions``,
``asked_in`` (the language the question was put in) to ``lang`` (the language the question comes from), ``source``
to ``local`` (``translated``: an English-sourced question translated into ``lang``). Scores per system and language
on local questions asked in their own language: ``em`` and ``f1`` (× 100; normalised answers, the best pairing of
prediction and answer variants). Details: the mother-tongue effect (EM asked in the local language − EM of the same
questions asked in English) and the locality effect (EM on local − EM on translated questions), each the mean over
languages ± 2·SE, where the records allow them.
"""

from __future__ import annotations

import json
from pathlib import Path

from xlt.errors import XltError
from xlt.eval.parity import best_score, exact_match, paired_effect, token_f1
from xlt.eval.registry import SuiteOutput, register_suite
from xlt.eval.scores import LangScores, Score, mean_stderr
from xlt.languages import resolve


def _records(source) -> list[dict]:
    """The records of a JSON-lines file, or of a list of dicts given in memory."""
    if isinstance(source, (list, tuple)):
        p, items = "the QA predictions", [json.dumps(r) for r in source]
    else:
        p = Path(source)
        try:
            items = p.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise XltError(f"cannot read QA predictions {p}: {e}", "give a UTF-8 JSON-lines file") from None
    out = []
    for i, line in enumerate(items, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise XltError(f"{p} line {i} is not valid JSON ({e.msg})", "fix or remove that line") from None
        missing = [k for k in ("lang", "prediction", "answers") if k not in r]
        if missing:
            raise XltError(f"{p} line {i} lacks {', '.join(missing)}",
                           'each line needs {"lang": ..., "prediction": ..., "answers": [...]}')
        pred, answers = r["prediction"], r["answers"]
        preds = [pred] if isinstance(pred, str) else pred
        if not isinstance(preds, list) or not all(isinstance(x, str) for x in preds):
            raise XltError(f"{p} line {i}: prediction must be a string or a list of strings",
                           'write e.g. "prediction": "Nairobi"')
        if not isinstance(answers, list) or not answers or not all(isinstance(x, str) for x in answers):
            raise XltError(f"{p} line {i}: answers must be a non-empty list of strings",
                           'write e.g. "answers": ["Nairobi", "Nairobi city"]')
        if r.get("source", "local") not in ("local", "translated"):
            raise XltError(f"{p} line {i}: source {r.get('source')!r} is not local or translated",
                           "leave it out for locally sourced questions, or write translated")
        lang = resolve(r["lang"]).code
        out.append({"system": str(r.get("system", "predictions")), "lang": lang,
                    "asked_in": resolve(r.get("asked_in", lang)).code, "source": r.get("source", "local"),
                    "prediction": r["prediction"], "answers": r["answers"]})
    if not out:
        raise XltError(f"{p} holds no prediction", "give one JSON object per line")
    return out


def prepare(ctx, opts) -> None:
    if not ctx.inputs.get("qa"):
        raise XltError("the qa suite needs predictions", "pass --qa preds.jsonl")
    ctx.inputs["qa_records"] = _records(ctx.inputs["qa"])


def _mean(recs, fn) -> tuple[float, float, int]:
    vals = [100 * best_score(fn, r["prediction"], r["answers"], r["asked_in"]) for r in recs]
    m, se = mean_stderr(vals)
    return m, se, len(vals)


def combine(ctx, scores: LangScores, opts) -> SuiteOutput:
    recs = ctx.inputs["qa_records"]
    out, details = LangScores(), {}
    for system in dict.fromkeys(r["system"] for r in recs):
        mine = [r for r in recs if r["system"] == system]
        em_by = {}
        for (lang, asked, source) in sorted({(r["lang"], r["asked_in"], r["source"]) for r in mine}):
            group = [r for r in mine if (r["lang"], r["asked_in"], r["source"]) == (lang, asked, source)]
            em, em_se, n = _mean(group, exact_match)
            em_by[lang, asked, source] = em
            if asked == lang and source == "local":
                f1, f1_se, _ = _mean(group, token_f1)
                for metric, v, se in (("em", em, em_se), ("f1", f1, f1_se)):
                    out.add(Score(system, lang, metric, v, n=n, stderr=se, suite="qa",
                                  signature=f"qa|{metric}|normalize:multiloko|best-of-variants|n:{n}"))
        own = {l: v for (l, a, s), v in em_by.items() if a == l and s == "local"}
        in_en = {l: v for (l, a, s), v in em_by.items() if a == "eng" and s == "local" and l != "eng"}
        translated = {l: v for (l, a, s), v in em_by.items() if a == l and s == "translated"}
        d = {}
        if set(own) & set(in_en):
            d["mother_tongue_effect"] = paired_effect(own, in_en)
        if set(own) & set(translated):
            d["locality_effect"] = paired_effect(own, translated)
        details[system] = d
    return SuiteOutput(out, details)


register_suite("qa", "exact match and token F1 of QA predictions (MultiLoKo normalisation), mother-tongue and "
               "locality effects", prepare=prepare, combine=combine, needs_corpus=False, model_free=True,
               example={"inputs": {"qa": [
                   {"lang": "sw", "prediction": "Nairobi", "answers": ["Nairobi"]},
                   {"lang": "sw", "prediction": "Mombasa", "answers": ["Dodoma"]},
                   {"lang": "sw", "asked_in": "en", "prediction": "Dodoma", "answers": ["Dodoma"]},
                   {"lang": "sw", "asked_in": "en", "prediction": "the Nairobi", "answers": ["nairobi"]},
                   {"lang": "en", "prediction": "The Thames.", "answers": ["Thames"]},
                   {"lang": "en", "prediction": "London", "answers": ["Paris"]}]}})
