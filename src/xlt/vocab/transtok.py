"""``transtok``: trans-tokenization (Remy, Delobelle et al., COLM 2024) with a built-in token aligner.

Both sides of a parallel corpus are tokenised with their own tokenizer, target tokens are aligned to
source tokens with IBM Model 1 (:mod:`xlt.vocab.align`, no external ``fast_align``), and each target
token's row is the alignment-count-weighted mean of the source tokens it aligned to (count / Σcount,
pairs seen fewer than ``min_count`` times dropped). Precedence per target row:

1. special tokens: the source special with the same string or role (evidence ``special``);
2. tokens in both vocabularies (canonical form): the source row, exactly (``overlap``) — so identical
   tokenizers reproduce the source embeddings bit for bit;
3. tokens with alignment evidence: the weighted mean (``alignment``);
4. everything else: the ``overlap`` init's row (mean of source pieces ``pieces``, else ``mean``).

Options: :class:`TranstokOptions` (``xlt inits`` lists them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from xlt.errors import XltError
from xlt.options import option, positive
from xlt.vocab.align import fast_align_links, ibm1_table, parse_translation_table, rows_from_counts
from xlt.vocab.baselines import overlap_init
from xlt.vocab.canon import special_token_ids
from xlt.vocab.mapping import TransferMapping
from xlt.vocab.registry import TransferContext, register_init

DEFAULT_MIN_COUNT = 10
DEFAULT_ITERATIONS = 5


@dataclass
class TranstokOptions:
    transtok_min_count: float = option(DEFAULT_MIN_COUNT, "alignment links a (target, source) pair needs to count "
                                                          "(the reference's 10)", check=positive)
    transtok_iterations: int = option(DEFAULT_ITERATIONS, "IBM Model 1 EM iterations", check=positive)
    transtok_table: str | None = option(None, "a fast_align-style table (source token, target token, ..., count) "
                                              "to use instead of aligning the corpus")
    transtok_aligner: Literal["ibm1", "fast_align"] = option("ibm1", "ibm1 (built in) or fast_align (a user's binary)")
    fast_align_bin: str = option("fast_align", "the fast_align binary for transtok_aligner=fast_align (a path or a "
                                               "name on PATH)")

_PARALLEL_FIX = ("give a parallel corpus with both languages (e.g. --corpus bible), or a JSONL corpus whose records "
                 "share ids across the two languages; or choose an init that needs no parallel text (e.g. overlap)")


@register_init("transtok", "trans-tokenization: new tokens = count-weighted mean of the source tokens they align to "
                           "(IBM Model 1 on a parallel corpus); shared tokens copied, others FVT pieces",
               options=TranstokOptions, identity=True)
def transtok_init(ctx: TransferContext, o: TranstokOptions) -> TransferMapping:
    """Trans-tokenization: align target to source tokens on parallel text, mix source rows by link counts."""
    src, tgt = ctx.source_tokenizer, ctx.target_tokenizer
    n_s, n_t = len(src), len(tgt)
    min_count = int(o.transtok_min_count) if float(o.transtok_min_count).is_integer() else o.transtok_min_count
    if o.transtok_table:
        counts, notes = _table_counts(o.transtok_table, src, tgt, n_s, n_t)
    else:
        counts, notes = _corpus_counts(ctx, o, n_s, n_t)
    # specials are mapped by string/role, never by alignment
    keep_t = np.ones(n_t)
    keep_t[[i for i in special_token_ids(tgt) if i < n_t]] = 0
    keep_s = np.ones(n_s)
    keep_s[[i for i in special_token_ids(src) if i < n_s]] = 0
    counts = sp.csr_matrix(sp.diags(keep_t) @ counts @ sp.diags(keep_s))
    aligned, has_row = rows_from_counts(counts, min_count)

    base = overlap_init(ctx)
    ev = np.array(base.evidence, dtype=object)
    use = has_row & ~np.isin(ev, ["special", "overlap"])  # overlap and specials take precedence
    weights = sp.diags((~use).astype(float)) @ base.weights + sp.diags(use.astype(float)) @ aligned
    ev[use] = "alignment"
    notes.update(min_count=min_count, aligned_tokens=int(use.sum()),
                 tokens_with_links=int(has_row.sum()))
    return TransferMapping(sp.csr_matrix(weights), [str(e) for e in ev], "transtok", notes)


def _corpus_counts(ctx: TransferContext, o: TranstokOptions, n_s: int, n_t: int) -> tuple[sp.csr_matrix, dict]:
    """Viterbi link counts (target × source) of IBM Model 1 on the corpus's aligned train segments."""
    if ctx.corpus is None:
        raise XltError("the transtok init needs a parallel corpus, but no corpus was given", _PARALLEL_FIX)
    if not ctx.source_lang or not ctx.target_lang:
        raise XltError("the transtok init needs the source and target languages to pair up documents",
                       "set source_lang and target_lang in the TransferContext")
    try:
        pairs = ctx.corpus.parallel(ctx.target_lang, ctx.source_lang, "train")
    except XltError as e:
        raise XltError(f"the transtok init found no aligned segments between {ctx.target_lang} and "
                       f"{ctx.source_lang}: {e.problem}", _PARALLEL_FIX) from None
    if not pairs:
        raise XltError(f"the transtok init found no aligned segments between {ctx.target_lang} and "
                       f"{ctx.source_lang} in the train split", _PARALLEL_FIX)
    tgt_ids = ctx.target_tokenizer([p[1] for p in pairs], add_special_tokens=False)["input_ids"]
    src_ids = ctx.source_tokenizer([p[2] for p in pairs], add_special_tokens=False)["input_ids"]
    if o.transtok_aligner == "fast_align":
        return _fast_align_counts(ctx, o.fast_align_bin, src_ids, tgt_ids, n_s, n_t)
    iterations = o.transtok_iterations
    result = ibm1_table(src_ids, tgt_ids, n_s, n_t, iterations=iterations)
    if result.sentence_pairs == 0:
        raise XltError(f"the transtok init found {len(pairs)} aligned segments between {ctx.target_lang} and "
                       f"{ctx.source_lang}, but none has tokens on both sides", _PARALLEL_FIX)
    notes = {"aligner": "ibm1", "sentence_pairs": result.sentence_pairs, "em_iterations": iterations,
             "alignment_links": int(result.links.sum())}
    return result.links, notes


def _fast_align_counts(ctx: TransferContext, binary: str, src_ids, tgt_ids, n_s: int, n_t: int) -> tuple[sp.csr_matrix, dict]:
    try:
        counts, n_pairs = fast_align_links(src_ids, tgt_ids, n_s, n_t, binary)
    except FileNotFoundError:
        raise XltError(f"the fast_align binary {binary!r} was not found",
                       "pass its path with -O fast_align_bin=PATH, or drop transtok_aligner to use the built-in aligner") from None
    except RuntimeError as e:
        raise XltError(f"fast_align failed: {e}", "check the binary (fast_align -h), or use the built-in aligner") from None
    if n_pairs == 0:
        raise XltError(f"the transtok init found no segment with tokens on both sides between {ctx.target_lang} and "
                       f"{ctx.source_lang}", _PARALLEL_FIX)
    return counts, {"aligner": f"fast_align:{binary}", "sentence_pairs": n_pairs, "alignment_links": int(counts.sum())}


def _table_counts(path: str, src, tgt, n_s: int, n_t: int) -> tuple[sp.csr_matrix, dict]:
    """Counts from a user's ``fast_align``-style translation table (source token, target token, …, count)."""
    from xlt.corpora.files import read_utf8

    try:
        counts, skipped = parse_translation_table(read_utf8(path).splitlines(), src.get_vocab(), tgt.get_vocab(),
                                                  n_s, n_t)
    except ValueError as e:
        raise XltError(f"cannot read translation table {path}: {e}", "give lines "
                       "'source_token<TAB>target_token<TAB>...<TAB>count' with vocabulary token strings") from None
    return counts, {"aligner": f"table:{path}", "table_rows_skipped": skipped, "alignment_links": float(counts.sum())}
