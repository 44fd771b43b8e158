"""``tokenizer``: what each model's tokenizer charges each language (Petrov et al. 2023), on parallel text.

On the held-out documents that every language and the reference language share (same keys): ``premium`` = the
language's corpus token total / the reference language's (documents joined with spaces, tokenised once; 1 is parity),
``fertility`` = tokens per whitespace word and ``strr`` = the share of word occurrences kept as one token (neither for
languages written without spaces, :data:`xlt.languages.UNSPACED`), ``bytes_per_token``, ``unk_share`` = the share of characters that fall in UNK tokens (above 10 % the language counts as invalid for
this tokenizer: listed under ``invalid`` in the details).
"""

from __future__ import annotations

from dataclasses import dataclass

from xlt.eval.registry import SuiteOutput, register_suite
from xlt.eval.scores import LangScores, Score
from xlt.eval.tokenization import corpus_tokens, single_token_retention, token_premium, unk_share
from xlt.languages import UNSPACED, resolve
from xlt.options import option
from xlt.signature import Signature, tokenizer_hash

#: Petrov et al.'s threshold
INVALID_UNK = 0.10


@dataclass
class TokenizerOptions:
    premium_ref: str = option("eng", "the language premiums are relative to")


def per_model(ctx, m, opts: TokenizerOptions) -> LangScores:
    tok = m.tokenizer
    ref = resolve(opts.premium_ref)
    langs = [ref] + [lang for lang in ctx.langs if lang.code != ref.code]
    texts = ctx.parallel_texts(langs)
    counts = {code: corpus_tokens(tok, t) for code, t in texts.items()}
    prem = token_premium(counts, ref.code)
    out = LangScores()
    sig = Signature("tokenizer", ref=ref.code, docs=len(texts[ref.code]), join="space", split=ctx.split,
                    tok=tokenizer_hash(tok))
    for lang in ctx.langs:
        t = texts[lang.code]
        nbytes = sum(len(x.encode("utf-8")) for x in t)
        words = sum(len(x.split()) for x in t)
        n = counts[lang.code]
        rows = {"premium": (prem[lang.code], False), "bytes_per_token": (nbytes / max(n, 1), True),
                "unk_share": (unk_share(tok, t), False)}
        if lang.code not in UNSPACED:
            rows.update(fertility=(n / max(words, 1), False), strr=(single_token_retention(tok, t), True))
        for metric, (v, hib) in rows.items():
            out.add(Score(m.name, lang.code, metric, v, n=len(t), n_unit="documents", higher_is_better=hib,
                          suite="tokenizer", signature=str(sig)))
    return out


def combine(ctx, scores: LangScores, opts: TokenizerOptions) -> SuiteOutput:
    bad = [{"model": s.model, "lang": s.lang, "unk_share": s.value}
           for s in scores.select(metric="unk_share", suite="tokenizer") if s.value > INVALID_UNK]
    return SuiteOutput(details={"invalid": bad, "invalid_rule": f"unk_share > {INVALID_UNK}",
                                "no_word_measures": sorted(lang.code for lang in ctx.langs if lang.code in UNSPACED)})


register_suite("tokenizer", "token premium vs a reference language, fertility, bytes/token, single-token retention "
               "and UNK share on parallel held-out text", TokenizerOptions, per_model=per_model, combine=combine)
