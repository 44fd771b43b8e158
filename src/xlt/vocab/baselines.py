"""Baseline initialisations: ``random``, ``mean`` and ``overlap`` (fast vocabulary transfer)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from xlt.vocab.canon import backend_json, canonical_vocab, special_token_ids, to_model_form, tokenizer_kind, tokenizer_memo
from xlt.vocab.mapping import TransferMapping
from xlt.vocab.registry import TransferContext, register_init

ROLES = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


def special_map(source_tok, target_tok) -> dict[int, int]:
    """Target special-token id -> source id: same string first, then the same role (bos, eos, …)."""
    src_vocab = source_tok.get_vocab()
    src_special = special_token_ids(source_tok)
    out: dict[int, int] = {}
    for tid in special_token_ids(target_tok):
        s = target_tok.convert_ids_to_tokens(tid)
        if s in src_vocab and src_vocab[s] in src_special:
            out[tid] = src_vocab[s]
    for role in ROLES:
        t, s = getattr(target_tok, role, None), getattr(source_tok, role, None)
        if t is not None and s is not None:
            tid, sid = target_tok.convert_tokens_to_ids(t), source_tok.convert_tokens_to_ids(s)
            if tid is not None and sid is not None:
                out.setdefault(tid, sid)
    return out


def overlap_pairs(source_tok, target_tok, exclude: frozenset[int] | set[int] = frozenset()) -> dict[int, int]:
    """Target id -> source id for non-special tokens with the same canonical byte form.

    When several source tokens share a form (SentencePiece's byte token ``<0x41>`` and the piece ``A``), the source
    token with the target token's own string wins, else the first source id; so identical tokenizers map every token
    to itself. Target ids in ``exclude`` are treated as not overlapping (used to hold tokens out for evaluation)."""
    src_forms = canonical_vocab(source_tok)
    by_form: dict[bytes, int] = {}
    for i, f in enumerate(src_forms):
        if f is not None:
            by_form.setdefault(f, i)
    src_vocab = source_tok.get_vocab()
    tgt_strings = {i: s for s, i in target_tok.get_vocab().items()}
    out = {}
    for t, f in enumerate(canonical_vocab(target_tok)):
        if f is None or f not in by_form or t in exclude:
            continue
        same = src_vocab.get(tgt_strings.get(t))
        out[t] = same if same is not None and same < len(src_forms) and src_forms[same] == f else by_form[f]
    return out


def held_out(ctx: TransferContext) -> frozenset[int]:
    """Target ids a comparison asks methods to reconstruct instead of copying (``ctx.holdout``)."""
    return frozenset(ctx.holdout)


def _n(tok) -> int:
    return len(tok)


def _rows(ctx: TransferContext, fill: str) -> TransferMapping:
    n_t, n_s = _n(ctx.target_tokenizer), _n(ctx.source_tokenizer)
    specials = special_map(ctx.source_tokenizer, ctx.target_tokenizer)
    rows, cols = list(specials), list(specials.values())
    w = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_t, n_s))
    evidence = ["special" if i in specials else fill for i in range(n_t)]
    return TransferMapping(w, evidence, fill)


@register_init("random", "normal draws with the source embeddings' per-dimension mean and std; specials copied")
def random_init(ctx: TransferContext, options=None) -> TransferMapping:
    return _rows(ctx, "random")


@register_init("mean", "every new row is the mean of the source rows; specials copied")
def mean_init(ctx: TransferContext, options=None) -> TransferMapping:
    return _rows(ctx, "mean")


@register_init("overlap", "shared tokens keep their source row; others the mean of their source-tokenizer pieces (FVT)",
               identity=True)
def overlap_init(ctx: TransferContext, options=None) -> TransferMapping:
    """Fast vocabulary transfer: copy tokens present in both vocabularies (by canonical form); embed
    every other target token as the mean of the rows of the pieces the *source* tokenizer splits its
    text into; fall back to the mean source row when it cannot be split.

    A shared token held out for the leave-one-out comparison is split as if it were missing from the source
    vocabulary: for a BPE source, into the two tokens of the merge that makes it (what BPE yields without that
    merge); other source models have no such split and get the mean row."""
    src, tgt = ctx.source_tokenizer, ctx.target_tokenizer
    n_t, n_s = _n(tgt), _n(src)
    held = held_out(ctx)
    copies = overlap_pairs(src, tgt, held)
    src_kind = tokenizer_kind(src)
    src_model = src.backend_tokenizer.model
    unk = src.unk_token_id
    specials = special_map(src, tgt)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    evidence: list[str] = []
    for tid, form in enumerate(canonical_vocab(tgt) + [None] * (n_t - len(canonical_vocab(tgt)))):
        if tid in specials:
            rows.append(tid), cols.append(specials[tid]), vals.append(1.0)
            evidence.append("special")
            continue
        if tid in copies:
            rows.append(tid), cols.append(copies[tid]), vals.append(1.0)
            evidence.append("overlap")
            continue
        pieces = _pieces(form, src_kind, src_model, n_s, unk)
        if tid in held and len(pieces) == 1:  # a held-out shared token splits into itself: use its last merge
            pieces = _last_merge_parts(src, pieces[0])
        if pieces:
            for pid in pieces:  # repeated pieces count as often as they occur (mean over the piece list)
                rows.append(tid), cols.append(pid), vals.append(1.0 / len(pieces))
            evidence.append("pieces")
        else:
            evidence.append("mean")
    w = sp.csr_matrix((vals, (rows, cols)), shape=(n_t, n_s))  # duplicates are summed
    return TransferMapping(w, evidence, "overlap")


def _last_merge_parts(tokenizer, token_id: int) -> list[int]:
    """The ids of the two tokens whose BPE merge produces ``token_id`` (empty if none, or not a BPE model)."""
    parts = tokenizer_memo(tokenizer, "merge_parts", lambda: _merge_table(tokenizer))
    return list(parts.get(token_id, ()))


def _merge_table(tokenizer) -> dict[int, tuple[int, int]]:
    model = backend_json(tokenizer)["model"]
    if model.get("type") != "BPE":
        return {}
    vocab = model["vocab"]
    out: dict[int, tuple[int, int]] = {}
    for m in model.get("merges", []):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        merged = vocab.get(a + b)
        if merged is not None and a in vocab and b in vocab:
            out.setdefault(merged, (vocab[a], vocab[b]))
    return out


def _pieces(form: bytes | None, kind, model, n_source: int, unk: int | None) -> list[int]:
    if not form:
        return []
    s = to_model_form(form, kind)
    if not s:
        return []
    try:
        ids = [t.id for t in model.tokenize(s)]
    except Exception:  # the tokenizers library refuses some inputs (e.g. no unk token for a char)
        return []
    if not ids or any(i >= n_source or i == unk for i in ids):
        return []
    return ids
