"""``off-target``: how often a model, prompted in a language, continues in another one (§5.2).

For each language: ``off_target_n`` held-out documents are cut after their first ``off_target_words`` words; the
model continues each prompt greedily (``off_target_tokens`` new tokens, no repeated 3-grams); py3langid labels each
continuation. ``off_target`` = the share not labelled as the prompt's language (lower is better). The same
identifier's rate on the documents' true continuations is the floor (what the identifier itself gets wrong),
reported beside it. A language py3langid has no model for is refused before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from xlt.eval.registry import SuiteOutput, register_suite
from xlt.eval.scores import LangScores, Score
from xlt.options import option, positive


@dataclass
class OffTargetOptions:
    off_target_n: int = option(20, "prompts per language", check=positive)
    off_target_words: int = option(6, "words of each held-out document given as the prompt", check=positive)
    off_target_tokens: int = option(32, "new tokens generated per prompt (greedy)", check=positive)


def _prompts(ctx, lang, opts) -> list[tuple[str, str]]:
    """(prompt, true continuation) pairs spread evenly over the language's held-out documents; in a language written
    without spaces the prompt is the first 2 × ``off_target_words`` characters."""
    from xlt.languages import UNSPACED

    if lang.code in UNSPACED:
        n = 2 * opts.off_target_words
        cut = lambda t: (t[:n], t[n:])  # noqa: E731
        docs = [t for t in ctx.texts(lang) if len(t) > n + 4]
    else:
        cut = lambda t: (" ".join(t.split()[: opts.off_target_words]),  # noqa: E731
                         " ".join(t.split()[opts.off_target_words:]))
        docs = [t for t in ctx.texts(lang) if len(t.split()) > opts.off_target_words + 2]
    if not docs:
        return []
    step = max(1, len(docs) // opts.off_target_n)
    return [cut(t) for t in docs[::step][: opts.off_target_n]]


def prepare(ctx, opts: OffTargetOptions) -> None:
    from xlt.eval.offtarget import py3langid_label

    for lang in ctx.langs:
        py3langid_label(lang)  # one clear error for a language the identifier lacks


def per_model(ctx, m, opts: OffTargetOptions) -> LangScores:
    from xlt.eval.generate import greedy_samples
    from xlt.eval.offtarget import off_target_rate

    model, tok = m.load()
    out = LangScores()
    for lang in ctx.langs:
        pairs = _prompts(ctx, lang, opts)
        if not pairs:
            continue
        gen = greedy_samples(model, tok, [p for p, _ in pairs], max_new_tokens=opts.off_target_tokens)
        floors = ctx.inputs.setdefault("off_target_floor", {})
        r = off_target_rate([g["continuation"] for g in gen], lang.code,
                            references=None if lang.code in floors else [c for _, c in pairs])
        floors.setdefault(lang.code, r.floor)
        out.add(Score(m.name, lang.code, "off_target", r.rate, n=r.n, n_unit="continuations",
                      higher_is_better=False, suite="off-target",
                      signature=f"{r.signature}|prompt_words:{opts.off_target_words}|new_tokens:{opts.off_target_tokens}"
                                f"|floor:{floors[lang.code]:.4f}"))
    return out


def combine(ctx, scores: LangScores, opts: OffTargetOptions) -> SuiteOutput:
    """The floor per language (the identifier on the true continuations), as the first model's pass measured it."""
    floors = dict(ctx.inputs.get("off_target_floor", {}))
    return SuiteOutput(details={"floor": floors, "how": "py3langid on the held-out documents' true continuations"})


register_suite("off-target", "share of greedy continuations of held-out prompts that py3langid labels as another "
               "language, beside the identifier's floor on the true continuations", OffTargetOptions,
               prepare=prepare, per_model=per_model, combine=combine, example={"options": {"off_target_n": 3,
                                                                                        "off_target_tokens": 8}})
