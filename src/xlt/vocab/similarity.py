"""WECHSEL and FOCUS: target tokens as similarity-weighted mixtures of source tokens.

Both build the sparse mixing matrix of :class:`~xlt.vocab.mapping.TransferMapping`; the embeddings
themselves come from :func:`~xlt.vocab.transfer.transfer_model`, for input embeddings and untied heads alike.

``wechsel`` (Minixhofer et al., 2022): source and target fastText spaces aligned by orthogonal
Procrustes on a bilingual dictionary; every token embedded as ``fastText(decode(token).strip())``; each
target token = softmax(sim/τ)-weighted mean of its k most similar source tokens (k=10, τ=0.1, as the
reference). xlt copies overlapping tokens by default; ``wechsel_faithful=True`` copies only special
tokens, like the reference package (then identical tokenizers are, correctly, not the identity).

``focus`` (Dobler & de Melo, 2023): overlapping tokens keep their source rows; every other target token
is a sparsemax-weighted combination of the overlapping tokens' rows, by cosine similarity in a fastText
space trained on target text tokenised with the target tokenizer (cbow, dim 100, 3 epochs, minCount 10,
as the reference). Overlapping tokens without a fastText vector are not used as anchors; new tokens
without one get random rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from xlt.errors import XltError
from xlt.options import non_negative, option, positive
from xlt.vocab.baselines import held_out, overlap_pairs, special_map
from xlt.vocab.mapping import TransferMapping
from xlt.vocab.neighbours import normalise_rows, procrustes, softmax_weights, sparsemax_rows, topk_cosine
from xlt.vocab.registry import TransferContext, register_init
from xlt.vocab.wordvec import FastTextConfig, WordVectors, check_same_dim, load_word_vectors, train_fasttext


# -- options ----------------------------------------------------------------------------------------------
@dataclass
class WechselOptions:
    source_vectors: str | None = option(None, "source word vectors (.bin/.vec) [default: fastText trained on the corpus]")
    target_vectors: str | None = option(None, "target word vectors (.bin/.vec) [default: fastText trained on the corpus]")
    dictionary: str | None = option(None, "bilingual dictionary: TSV path or freedict:eng-swh "
                                          "[default: induced from the parallel corpus]")
    fasttext_dim: int = option(100, "dimension of the fastText vectors trained on the corpus", check=positive)
    fasttext_epochs: int = option(5, "fastText training epochs", check=positive)
    fasttext_min_count: int = option(5, "fastText minimum word count", check=positive)
    wechsel_k: int = option(10, "source neighbours mixed per target token", check=positive)
    wechsel_temperature: float = option(0.1, "softmax temperature over cosine similarities", check=positive)
    wechsel_faithful: bool = option(False, "copy only special tokens, as the reference package")


@dataclass
class FocusOptions:
    focus_vectors: str | None = option(None, "token-level fastText model of the target text "
                                             "[default: trained on the corpus tokenised with the target tokenizer]")
    focus_epochs: int = option(3, "fastText training epochs (the reference's 3)", check=positive)
    focus_min_count: int = option(10, "fastText minimum token count (the reference's 10)", check=non_negative)


# -- resources --------------------------------------------------------------------------------------------
def _texts(ctx: TransferContext, lang: str, what: str) -> list[str]:
    if ctx.corpus is None:
        raise XltError(f"{what} needs text in {lang}, but no corpus was given", "pass a corpus (e.g. --corpus bible)")
    return ctx.corpus.texts(lang, "train")


def word_vectors(ctx: TransferContext, side: str, o: WechselOptions | None = None) -> WordVectors:
    """Source or target word vectors: a user file (``{side}_vectors`` option) or fastText trained on the corpus."""
    o = o or WechselOptions()
    path = o.source_vectors if side == "source" else o.target_vectors
    if path:
        return load_word_vectors(path)
    lang = ctx.source_lang if side == "source" else ctx.target_lang
    cfg = FastTextConfig(dim=o.fasttext_dim, epoch=o.fasttext_epochs, min_count=o.fasttext_min_count, minn=5, maxn=5)
    return train_fasttext(_texts(ctx, lang, f"WECHSEL's {side} word vectors"), cfg, label=f"{side} ({lang}) text")


def dictionary_pairs(ctx: TransferContext, spec: str | None = None) -> tuple[list[tuple[str, str]], str]:
    """Bilingual dictionary: ``spec`` (TSV path or ``freedict:eng-swh``) or induced from the parallel corpus."""
    d = _dictionary(ctx, spec)
    return list(d.pairs), d.source


def dictionary_quality(ctx: TransferContext, d) -> dict:
    """Size of an induced dictionary and its precision against FreeDict (all of it held out), where installed."""
    from xlt.vocab import dictionary as dct

    out = {"pairs": len(d)}
    try:
        ref = dct.freedict_dictionary(ctx.source_lang, ctx.target_lang)
    except XltError as e:
        out["precision_vs_freedict"] = f"not measured: {e.problem}"
        return out
    p = d.precision_against(ref)
    out.update({"precision_vs_freedict": p["precision"], "judged_pairs": p["judged_pairs"], "freedict": ref.source})
    return out


def _dictionary(ctx: TransferContext, spec: str | None = None):
    from xlt.vocab import dictionary as dct

    if spec and str(spec).startswith("freedict:"):
        d = dct.read_freedict(str(spec).split(":", 1)[1])
    elif spec:
        d = dct.Dictionary.load_tsv(spec)
    else:
        if ctx.corpus is None:
            raise XltError("WECHSEL needs a bilingual dictionary", "pass dictionary=PATH or a parallel corpus to induce one from")
        d = dct.induce_from_parallel(ctx.corpus, ctx.source_lang, ctx.target_lang)
    return d


def align_spaces(src: WordVectors, tgt: WordVectors, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, int]:
    """Procrustes rotation mapping source vectors onto target vectors, from dictionary pairs found in both
    vocabularies (each side tried as-is, lower-case and title-case, like the reference)."""
    check_same_dim(src, tgt)
    xs, ys = [], []
    for s, t in pairs:
        s_forms = [w for w in (s, s.lower(), s.title()) if w in src]
        if not s_forms:
            continue
        for tw in (t, t.lower(), t.title()):
            if tw in tgt:
                xs.extend(s_forms)
                ys.extend([tw] * len(s_forms))
    if not xs:
        raise XltError("no dictionary pair has both words in the word-vector vocabularies",
                       "give a dictionary for this language pair, or more text for the word vectors")
    return procrustes(src.vectors(xs), tgt.vectors(ys)), len(xs)


def reference_specials(source_tok, target_tok) -> dict[int, int]:
    """WECHSEL's rule: each ``special_tokens_map`` value of the source present in the target vocabulary is copied."""
    src_vocab, tgt_vocab = source_tok.get_vocab(), target_tok.get_vocab()
    out = {}
    for value in source_tok.special_tokens_map.values():
        for t in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(t, str) and t in tgt_vocab and t in src_vocab:
                out[tgt_vocab[t]] = src_vocab[t]
    return out


def decoded_tokens(tok) -> list[str]:
    """``decode(id).strip()`` for every id: the word-like string a token stands for (what WECHSEL embeds)."""
    ids = [[i] for i in range(len(tok))]
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None and not getattr(tok, "clean_up_tokenization_spaces", False):
        return [s.strip() for s in backend.decode_batch(ids, skip_special_tokens=False)]  # one call into Rust
    return [s.strip() for s in tok.batch_decode(ids)]


# -- the maths, given vectors -----------------------------------------------------------------------------
def wechsel_mapping(source_tok, target_tok, src_vecs: WordVectors, tgt_vecs: WordVectors, rotation: np.ndarray | None,
                    k: int = 10, temperature: float = 0.1, copy_overlap: bool = True,
                    exclude: frozenset[int] = frozenset(), float64: bool = True) -> TransferMapping:
    """WECHSEL's mixing matrix from word vectors. ``copy_overlap=False`` is the reference's behaviour (only
    special tokens copied).

    Token vectors are rotated and normalised in float64 and ranked by float64 cosines
    (:func:`~xlt.vocab.neighbours.topk_cosine`); equal cosines (tokens with the same ``decode(t).strip()``)
    rank by source id. ``float64=False`` rounds the vectors to float32 first, which swaps neighbours whose
    cosines differ by less than float32 resolution (570 rows of an 8,000-token Korean vocabulary, at gaps ≤ 2.4e-9)."""
    dt = np.float64 if float64 else np.float32
    n_t, n_s = len(target_tok), len(source_tok)
    s_emb = src_vecs.vectors(decoded_tokens(source_tok)).astype(dt)
    if rotation is not None:
        s_emb = s_emb @ rotation.astype(dt)
    t_emb = tgt_vecs.vectors(decoded_tokens(target_tok)).astype(dt)
    s_emb, t_emb = normalise_rows(s_emb, dtype=dt), normalise_rows(t_emb, dtype=dt)
    evidence = ["neighbours"] * n_t
    # the reference copies only the source's special_tokens_map entries, by string; xlt maps every special by role too
    fixed: dict[int, int] = dict(special_map(source_tok, target_tok) if copy_overlap else reference_specials(source_tok, target_tok))
    for t in fixed:
        evidence[t] = "special"
    if copy_overlap:
        for t, s in overlap_pairs(source_tok, target_tok, exclude).items():
            if t not in fixed:
                fixed[t] = s
                evidence[t] = "overlap"
    zero = ~np.any(t_emb != 0, axis=1)
    todo = np.array([i for i in range(n_t) if i not in fixed and not zero[i]], dtype=np.int64)
    for i in range(n_t):
        if i not in fixed and zero[i]:
            evidence[i] = "random"
    sims, idx = topk_cosine(t_emb[todo], s_emb, k, dtype=dt)
    w = softmax_weights(sims, temperature)
    rows = np.concatenate([np.repeat(todo, idx.shape[1]), np.array(list(fixed), dtype=np.int64)])
    cols = np.concatenate([idx.ravel(), np.array(list(fixed.values()), dtype=np.int64)])
    vals = np.concatenate([w.ravel(), np.ones(len(fixed))])
    W = sp.csr_matrix((vals, (rows, cols)), shape=(n_t, n_s))
    return TransferMapping(W, evidence, "wechsel", {"neighbours": k, "temperature": temperature,
                                                    "copy_overlap": copy_overlap})


def focus_mapping(source_tok, target_tok, token_vecs: WordVectors, exclude: frozenset[int] = frozenset()) -> TransferMapping:
    n_t, n_s = len(target_tok), len(source_tok)
    native = target_tok.convert_ids_to_tokens(list(range(n_t)))
    fixed: dict[int, int] = dict(special_map(source_tok, target_tok))
    evidence = ["random"] * n_t
    for t in fixed:
        evidence[t] = "special"
    overlap = {t: s for t, s in overlap_pairs(source_tok, target_tok, exclude).items() if t not in fixed}
    for t, s in overlap.items():
        fixed[t] = s
        evidence[t] = "overlap"

    def has_vector(i: int) -> bool:
        return native[i] in token_vecs and bool(np.any(token_vecs.vector(native[i]) != 0))

    anchors = np.array([t for t in overlap if has_vector(t)], dtype=np.int64)
    new = np.array([i for i in range(n_t) if i not in fixed and has_vector(i)], dtype=np.int64)
    rows = [np.array(list(fixed), dtype=np.int64)]
    cols = [np.array(list(fixed.values()), dtype=np.int64)]
    vals = [np.ones(len(fixed))]
    if len(anchors) and len(new):
        a = normalise_rows(token_vecs.vectors([native[i] for i in anchors]))
        q = normalise_rows(token_vecs.vectors([native[i] for i in new]))
        r, c, v = sparsemax_rows(q, a)
        rows.append(new[r])
        cols.append(np.array([overlap[int(t)] for t in anchors[c]], dtype=np.int64))
        vals.append(v)
        for i in new:
            evidence[i] = "neighbours"
    W = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_t, n_s))
    return TransferMapping(W, evidence, "focus", {"anchors": int(len(anchors))})


# -- registered methods -----------------------------------------------------------------------------------
@register_init("wechsel", "aligned fastText spaces (Procrustes on a dictionary), top-10 softmax(sim/0.1) source neighbours",
               options=WechselOptions, identity=lambda o: not o.wechsel_faithful)
def wechsel_init(ctx: TransferContext, o: WechselOptions) -> TransferMapping:
    src, tgt = word_vectors(ctx, "source", o), word_vectors(ctx, "target", o)
    d = _dictionary(ctx, o.dictionary)
    pairs, origin = list(d.pairs), d.source
    rotation, used = align_spaces(src, tgt, pairs)
    m = wechsel_mapping(ctx.source_tokenizer, ctx.target_tokenizer, src, tgt, rotation, k=o.wechsel_k,
                        temperature=o.wechsel_temperature, copy_overlap=not o.wechsel_faithful, exclude=held_out(ctx))
    m.notes.update({"dictionary": origin, "dictionary_pairs": len(pairs), "alignment_pairs": used,
                    "faithful": o.wechsel_faithful})
    if origin.startswith("induced") and not ctx.holdout:
        m.notes["dictionary_quality"] = dictionary_quality(ctx, d)
    return m


def token_vectors(ctx: TransferContext, o: FocusOptions | None = None) -> WordVectors:
    """FOCUS's auxiliary space: fastText over target text tokenised with the target tokenizer."""
    o = o or FocusOptions()
    if o.focus_vectors:
        return load_word_vectors(o.focus_vectors)
    tok = ctx.target_tokenizer
    texts = _texts(ctx, ctx.target_lang, "FOCUS")
    id2tok = tok.convert_ids_to_tokens(list(range(len(tok))))
    lines = [" ".join(id2tok[i] for i in ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
    cfg = FastTextConfig(dim=100, epoch=o.focus_epochs, min_count=o.focus_min_count, minn=3, maxn=6)
    return train_fasttext(lines, cfg, label=f"target ({ctx.target_lang}) text for FOCUS", pretokenized=True)


@register_init("focus", "overlap copied; new tokens = sparsemax mix of overlapping tokens by target token-level fastText similarity",
               options=FocusOptions, identity=True)
def focus_init(ctx: TransferContext, o: FocusOptions) -> TransferMapping:
    return focus_mapping(ctx.source_tokenizer, ctx.target_tokenizer, token_vectors(ctx, o), held_out(ctx))
