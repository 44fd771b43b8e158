"""``bpb``: bits per UTF-8 byte of every model on every language's held-out text (lower is better)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from xlt.eval.bpb import bits_per_byte
from xlt.eval.registry import register_suite
from xlt.eval.scores import LangScores, Score
from xlt.options import option, positive


@dataclass
class BpbOptions:
    bpb_mode: Literal["stream", "documents"] = option(
        "stream", "stream: documents joined and scored in windows (xlt adapt's definition); documents: lm-eval's "
                  "loglikelihood_rolling bits_per_byte (each document alone after its prefix token)")
    bpb_window: int = option(512, "stream mode's window in tokens (documents mode uses the model's context length)",
                             check=positive)


def per_model(ctx, m, opts: BpbOptions) -> LangScores:
    from xlt.signature import model_hash

    model, tok = m.load()
    out = LangScores()
    mh = model_hash(model)  # the weights do not change between languages: hash them once
    for lang in ctx.langs:
        r = bits_per_byte(model, tok, ctx.texts(lang), window=opts.bpb_window, split=ctx.split,
                          precision=ctx.precision, mode=opts.bpb_mode, model_hash=mh)
        out.add(Score(m.name, lang.code, "bpb", r.bits_per_byte, n=r.bytes, n_unit="bytes",
                      higher_is_better=False, suite="bpb", signature=r.signature))
    return out


register_suite("bpb", "bits per UTF-8 byte on each language's held-out text (tokenizer-independent)", BpbOptions,
               per_model=per_model)
