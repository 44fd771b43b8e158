"""``mt``: machine-translation scores (BLEU, chrF, chrF++, TER with sacrebleu's signatures) and paired significance
tests of every system against a baseline (:mod:`xlt.eval.mt`; seed §14).

Systems come from files (``inputs["refs"]``: one reference per line; ``inputs["hyps"]``: ``{name: path}``; ``xlt
evaluate --refs ref.txt --hyps base=a.txt,bt=b.txt``) or from the evaluated models themselves with ``translate=
eng-swh``: each model translates ``translate_n`` held-out documents of the source language greedily after
``translate_shots`` example pairs (``<Source>: ...\\n<Target>: ...``), and the documents' translations in the corpus are
the references. Paired tests (``mt_test``: bs, ar or both) compare every system with ``mt_baseline`` (the first
system by default), p-values corrected by ``mt_correction`` across systems; p = 1 when two systems are identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xlt.errors import XltError
from xlt.eval.registry import SuiteOutput, register_suite
from xlt.eval.scores import LangScores, Score
from xlt.languages import resolve
from xlt.options import option, positive


@dataclass
class MTOptions:
    translate: str = option("", "SRC-TGT: the models translate held-out documents (e.g. eng-swh); empty: score the "
                                "--hyps files")
    translate_n: int = option(40, "documents each model translates", check=positive)
    translate_shots: int = option(2, "example pairs before each document (from the training split)")
    translate_tokens: int = option(96, "new tokens at most per translation (greedy; stops at the line's end)",
                                   check=positive)
    mt_lang: str = option("", "the language of the references, for the tables (files only; default: und)")
    mt_test: str = option("bs,ar", "paired tests: bs (paired bootstrap), ar (approximate randomisation), both, or none")
    mt_bs: int = option(1000, "bootstrap resamples", check=positive)
    mt_ar: int = option(10000, "approximate-randomisation trials", check=positive)
    mt_baseline: str = option("", "the system the others are tested against (default: the first)")
    mt_correction: str = option("holm", "multiple-comparison correction across systems: holm, bonferroni or none")
    mt_seed: int = option(12345, "the tests' random seed (sacrebleu's SACREBLEU_SEED default)")


def _read_lines(path, what: str) -> list[str]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        lines = text.split("\n")
        return lines[:-1] if text.endswith("\n") else lines  # a final newline ends the last line; "" is a segment
    except (OSError, UnicodeDecodeError) as e:
        raise XltError(f"cannot read {what} {p}: {e}", f"give a UTF-8 text file, one segment per line") from None


def _pair(spec: str) -> tuple[str, str]:
    try:
        src, tgt = spec.split("-")
        return resolve(src).code, resolve(tgt).code
    except ValueError:
        raise XltError(f"translate={spec!r} is not SRC-TGT", "write it like eng-swh") from None


def prepare(ctx, opts: MTOptions) -> None:
    tests = [t for t in opts.mt_test.split(",") if t and t != "none"]
    for t in tests:
        if t not in ("bs", "ar"):
            raise XltError(f"unknown paired test {t!r}", "use bs, ar, bs,ar or none")
    if opts.mt_correction not in ("holm", "bonferroni", "none"):
        raise XltError(f"unknown correction {opts.mt_correction!r}", "use holm, bonferroni or none")
    if opts.translate:
        src, tgt = _pair(opts.translate)
        if ctx.corpus is None:
            raise XltError("translate needs a parallel corpus", "pass --corpus bible")
        ctx.corpus.language(src), ctx.corpus.language(tgt)
        if not ctx.models:
            raise XltError("translate needs models that translate", "give model names or folders")
        return
    refs, hyps = ctx.inputs.get("refs"), ctx.inputs.get("hyps") or {}
    if not refs or not hyps:
        raise XltError("the mt suite needs references and systems",
                       "pass --refs ref.txt --hyps name=sys.txt,... , or -O translate=SRC-TGT with models")
    ref_lines = _read_lines(refs, "references")
    systems = {name: _read_lines(path, f"system {name}") for name, path in hyps.items()}
    for name, lines in systems.items():
        if len(lines) != len(ref_lines):
            raise XltError(f"system {name} has {len(lines)} lines, the references {len(ref_lines)}",
                           "give one hypothesis per reference line, in the same order")
    if tests and len(systems) < 2:
        raise XltError(f"a paired test needs at least two systems, got {len(systems)}",
                       "give a baseline and at least one other system (--hyps base=a.txt,new=b.txt), or -O "
                       "mt_test=none")
    ctx.inputs["mt"] = {"refs": ref_lines, "systems": systems,
                        "lang": resolve(opts.mt_lang).code if opts.mt_lang else "und"}


def _examples(ctx, src, tgt, n_shots: int):
    if n_shots <= 0:
        return []
    train = {d.key: d.text for d in ctx.corpus.documents(tgt, "train")}
    shots = []
    for d in ctx.corpus.documents(src, "train"):
        if d.key in train and 3 <= len(d.text.split()) <= 25:
            shots.append((d.text, train[d.key]))
        if len(shots) == n_shots:
            break
    return shots


def per_model(ctx, m, opts: MTOptions) -> LangScores:
    if not opts.translate:
        return LangScores()
    import torch

    src, tgt = _pair(opts.translate)
    pairs = ctx.inputs.get("mt_pairs")
    if pairs is None:
        par = ctx.parallel_texts([resolve(src), resolve(tgt)])
        step = max(1, len(par[src]) // opts.translate_n)
        pairs = list(zip(par[src][::step], par[tgt][::step]))[: opts.translate_n]
        ctx.inputs["mt_pairs"] = pairs
    sname, tname = resolve(src).name, resolve(tgt).name
    head = "".join(f"{sname}: {a}\n{tname}: {b}\n" for a, b in _examples(ctx, src, tgt, opts.translate_shots))
    model, tok = m.load()
    from xlt.eval.bpb import first_token_ids

    model.eval()
    hyps = []
    with torch.no_grad():
        for s, _ in pairs:
            ids = first_token_ids(tok) + tok(f"{head}{sname}: {s}\n{tname}:", add_special_tokens=False)["input_ids"]
            x = torch.tensor([ids], device=next(model.parameters()).device)
            y = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=opts.translate_tokens,
                               do_sample=False, pad_token_id=tok.eos_token_id or 0, stop_strings=["\n"],
                               tokenizer=tok)  # the translation is one line: stop there, not after all the tokens
            text = tok.decode(y[0, len(ids):], skip_special_tokens=True)
            hyps.append(text.strip().split("\n")[0].strip())
    ctx.inputs.setdefault("mt_generated", {})[m.name] = hyps
    return LangScores()


def combine(ctx, scores: LangScores, opts: MTOptions) -> SuiteOutput:
    from xlt.eval.mt import mt_scores, paired_test

    if opts.translate:
        src, tgt = _pair(opts.translate)
        refs = [t for _, t in ctx.inputs["mt_pairs"]]
        systems, lang = ctx.inputs["mt_generated"], tgt
    else:
        mt = ctx.inputs["mt"]
        refs, systems, lang = mt["refs"], mt["systems"], mt["lang"]
    out = LangScores()
    for name, hyps in systems.items():
        for metric, s in mt_scores(hyps, refs).items():
            out.add(Score(name, lang, metric, s.score, n=len(refs), n_unit="segments",
                          higher_is_better=s.higher_is_better, suite="mt", signature=s.signature))
    details = {"segments": len(refs), "systems": list(systems), "tests": {}}
    if opts.translate:
        details["translations"] = {name: [{"source": s, "reference": r, "hypothesis": h}
                                          for (s, r), h in zip(ctx.inputs["mt_pairs"][:5], hyps[:5])]
                                   for name, hyps in systems.items()}
    tests = [t for t in opts.mt_test.split(",") if t and t != "none"]
    if len(systems) >= 2:
        baseline = opts.mt_baseline or next(iter(systems))
        for t in tests:
            res = paired_test(refs, systems, baseline, t, n_samples=opts.mt_bs if t == "bs" else opts.mt_ar,
                              seed=opts.mt_seed, correction=None if opts.mt_correction == "none" else opts.mt_correction)
            details["tests"][t] = res.as_dict()
    return SuiteOutput(out, details)


register_suite("mt", "BLEU, chrF, chrF++ and TER with sacrebleu's signatures, and paired bootstrap / approximate "
               "randomisation tests against a baseline, on files or on the models' own translations", MTOptions,
               prepare=prepare, per_model=per_model, combine=combine, needs_corpus=False, model_free=True,
               example={"options": {"translate": "en-sw", "translate_n": 3, "translate_tokens": 8, "mt_bs": 50,
                                    "mt_ar": 50}})
