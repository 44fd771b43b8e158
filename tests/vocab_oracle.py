"""Plain dense implementations of WECHSEL and FOCUS, straight from the papers' definitions: test oracles.

Nothing here is shared with xlt's optimised path (``xlt.vocab.similarity``, ``neighbours``, ``canon``): the
fastText models are queried directly, every similarity is a float64 dot product of L2-normalised vectors (all
target × source pairs), the top-k orders every token at least as similar as the k-th by (similarity, id) and
sparsemax is the sort-based formula of Martins & Astudillo (2016). Only
byte-level BPE tokenizers (SmolLM2's family) are handled; their token bytes come from the GPT-2 byte table
written out below.

A mapping is returned as :class:`Rows`: for each target id either ``("copy", source id)``, ``("mix", source ids,
weights)`` or ``("random",)``.

Tie rule (WECHSEL's top-k): source tokens with equal float64 similarity rank by ascending source id. Equal
similarities come from equal vectors, i.e. (almost always) from equal ``decode(t).strip()`` strings; every
distinct string is embedded, rotated and compared once, so such ties are exact by construction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

#: max |ΔW| per row between xlt and the oracles. WECHSEL: both rank float64 cosines of the same float32 fastText
#: vectors; they differ by float64 round-off in the rotation and the normalisation (~1e-15), times 1/τ = 10 in the
#: softmax, plus the rotation's sensitivity to round-off (κ(XᵀY)·1e-16: 3e-9 relative on the Korean Bible's
#: dictionary), so the neighbour ids must be the same and the weights equal to 1e-9. FOCUS: xlt's cosines are
#: float32 products (error ~1e-7 for d = 100) and sparsemax, the Euclidean projection onto the simplex, is
#: 1-Lipschitz, so |ΔW| ≤ ‖Δcos‖₂: 1e-6 (a weight that small may be in one support and not the other).
WECHSEL_TOL, FOCUS_TOL = 1e-9, 1e-6

ROLES = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


@dataclass
class Rows:
    """Per target id: ``("copy", s)``, ``("mix", ids, weights)`` or ``("random",)``."""

    n_source: int
    rows: list = field(default_factory=list)
    ties: list = field(default_factory=list)  # WECHSEL: target ids whose k-th and (k+1)-th cosines are equal
    anchors: list = field(default_factory=list)  # FOCUS: the anchors' target ids
    cosine: Callable | None = None  # WECHSEL: cosine(target id, source ids) -> similarities

    def kind(self, i: int) -> str:
        return self.rows[i][0]

    def weights(self, i: int) -> dict[int, float]:
        r = self.rows[i]
        if r[0] == "copy":
            return {int(r[1]): 1.0}
        out: dict[int, float] = {}
        if r[0] == "mix":  # several anchors may copy one source token: their weights add up
            for s, w in zip(r[1], r[2]):
                out[int(s)] = out.get(int(s), 0.0) + float(w)
        return out

    def embed(self, E: np.ndarray, rows=None) -> np.ndarray:
        """``W · E`` for ``rows`` (default all; random rows are NaN)."""
        rows = range(len(self.rows)) if rows is None else rows
        out = np.full((len(rows), E.shape[1]), np.nan)
        for o, i in enumerate(rows):
            w = self.weights(i)
            if w:
                out[o] = sum(v * E[s].astype(np.float64) for s, v in w.items())
        return out


# -- tokens --------------------------------------------------------------------------------------------------
def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte -> printable character table, inverted (bytes 33-126, 161-172, 174-255 are themselves)."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def special_ids(tok) -> set[int]:
    return {i for i, t in tok.added_tokens_decoder.items() if t.special}


def token_bytes(tok) -> list[bytes | None]:
    """The bytes each non-special token of a byte-level BPE tokenizer stands for (``None`` for specials)."""
    table = _byte_of_char()
    specials = special_ids(tok)
    out: list[bytes | None] = []
    for i, t in enumerate(tok.convert_ids_to_tokens(list(range(len(tok))))):
        if i in specials:
            out.append(None)
        else:
            if any(c not in table for c in t):
                raise ValueError(f"token {t!r} is not in the byte-level alphabet: the oracle handles byte-level BPE only")
            out.append(bytes(table[c] for c in t))
    return out


def byte_overlap(source_tok, target_tok) -> dict[int, int]:
    """Target id -> source id of the non-special token with the same bytes (the paper's "overlapping tokens")."""
    by_bytes: dict[bytes, int] = {}
    for s, b in enumerate(token_bytes(source_tok)):
        if b is not None and b not in by_bytes:
            by_bytes[b] = s
    return {t: by_bytes[b] for t, b in enumerate(token_bytes(target_tok)) if b is not None and b in by_bytes}


def special_pairs(source_tok, target_tok) -> dict[int, int]:
    """Target special id -> source special id: the same string, else the same role (bos, eos, ...)."""
    src_vocab, src_special = source_tok.get_vocab(), special_ids(source_tok)
    out = {}
    for t in sorted(special_ids(target_tok)):
        s = src_vocab.get(target_tok.convert_ids_to_tokens(t))
        if s is not None and s in src_special:
            out[t] = s
    for role in ROLES:
        a, b = getattr(target_tok, role, None), getattr(source_tok, role, None)
        if a is not None and b is not None:
            out.setdefault(target_tok.convert_tokens_to_ids(a), source_tok.convert_tokens_to_ids(b))
    return out


def wechsel_specials(source_tok, target_tok) -> dict[int, int]:
    """The WECHSEL package's rule: each ``special_tokens_map`` value of the source found, as a string, in both
    vocabularies."""
    src_vocab, tgt_vocab = source_tok.get_vocab(), target_tok.get_vocab()
    out = {}
    for v in source_tok.special_tokens_map.values():
        for t in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(t, str) and t in src_vocab and t in tgt_vocab:
                out[tgt_vocab[t]] = src_vocab[t]
    return out


# -- synthetic text in non-Latin scripts (test fixtures) ----------------------------------------------------
SCRIPTS = {  # syllable inventories, large enough that rare syllables stay split into partial-UTF-8 tokens
    "hangul": [chr(0xAC00 + 37 * i) for i in range(80)],  # 3-byte syllables
    "cjk": [chr(0x4E00 + 13 * i) for i in range(120)],  # 3-byte ideographs
    "devanagari": [chr(c) + m for c in [*range(0x0905, 0x093A), *range(0x0958, 0x0960)]  # letter + sign, 3 bytes each
                   for m in ("", "ा", "ि", "ी", "ु", "े", "ो", "ं", "ृ", "्")],
    "cyrillic": [c + v for c in "бвгджзклмнпрстфхцчшщ" for v in "аеёиоуыэюя"],  # 2-byte letters
}


def lexicon(seed: int, syllables: list[str], n_words: int = 120) -> list[str]:
    """``n_words`` distinct words of 1-3 syllables."""
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < n_words:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))))
    return sorted(words)


def loanword_texts() -> list[str]:
    """60 sentences in each script over a 40-word lexicon: what a Latin-script source corpus borrows."""
    from conftest import sentences

    return [s for n, syl in enumerate(SCRIPTS.values()) for s in sentences(100 + n, 60, lexicon(50 + n, syl, 40))]


def script_texts(script: str) -> tuple[list[str], list[str]]:
    """A language in ``script``: its 120-word lexicon and 540 sentences (40 with the source's loanwords)."""
    from conftest import sentences

    n, syl = list(SCRIPTS).index(script), SCRIPTS[script]
    lex = lexicon(7, syl)
    return lex, sentences(30, 500, lex) + sentences(31, 40, lexicon(50 + n, syl, 40))


def train_ft(tmp, name: str, lines: list[str], **kw):
    """fastText (cbow, one thread: deterministic) on whitespace-split lines, trained in folder ``tmp``."""
    import fasttext

    path = tmp / f"{name}.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = dict(model="cbow", dim=16, epoch=5, minCount=2, minn=3, maxn=5, bucket=5000, thread=1, verbose=0) | kw
    return fasttext.train_unsupervised(str(path), **cfg)


def words_only(texts: list[str]) -> list[str]:
    """Sentences with the full stop split off (a word-level fastText corpus)."""
    return [t.replace(".", " .") for t in texts]


def partial_utf8(b: bytes | None) -> bool:
    """Bytes that are not valid UTF-8 on their own (a token that splits a character)."""
    if not b:
        return False
    try:
        b.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


# -- maths ---------------------------------------------------------------------------------------------------
def unit(m: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (all-zero rows stay zero), so dot products are cosines."""
    m = np.asarray(m, np.float64)
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return np.divide(m, n, out=np.zeros_like(m), where=n > 0)


def sparsemax(z: np.ndarray) -> np.ndarray:
    """argmin_{p in simplex} ||p - z||² (Martins & Astudillo 2016, Algorithm 1), for one vector."""
    zs = np.sort(z)[::-1]
    cs = np.cumsum(zs)
    j = np.arange(1, len(z) + 1)
    k = j[1 + j * zs > cs].max()
    tau = (cs[k - 1] - 1) / k
    return np.maximum(z - tau, 0.0)


def _dictionary_vectors(src_ft, tgt_ft, pairs) -> tuple[list, list]:
    """The fastText vectors of the dictionary pairs, each word tried as-is, lower-case and title-case on both sides."""
    xs, ys = [], []
    for s, t in pairs:
        for sw in (s, s.lower(), s.title()):
            for tw in (t, t.lower(), t.title()):
                if src_ft.get_word_id(sw) != -1 and tgt_ft.get_word_id(tw) != -1:
                    xs.append(src_ft.get_word_vector(sw))
                    ys.append(tgt_ft.get_word_vector(tw))
    return xs, ys


def procrustes_rotation(src_ft, tgt_ft, pairs, dtype=np.float64) -> np.ndarray:
    """Orthogonal R minimising ||X R - Y|| over the dictionary pairs present in both fastText vocabularies, each word
    tried as-is, lower-case and title-case on both sides (as WECHSEL does), solved in ``dtype`` (the WECHSEL
    package: float32, the dtype of fastText's vectors)."""
    from scipy.linalg import orthogonal_procrustes

    xs, ys = _dictionary_vectors(src_ft, tgt_ft, pairs)
    return orthogonal_procrustes(np.array(xs, dtype), np.array(ys, dtype))[0]


def _string_vectors(tok, ft):
    """``decode(id).strip()`` for every id, as an index into the distinct strings, and their fastText vectors."""
    strings = [tok.decode([i]).strip() for i in range(len(tok))]
    distinct = sorted(set(strings))
    where = {s: j for j, s in enumerate(distinct)}
    vecs = np.array([ft.get_word_vector(s) for s in distinct], np.float64).reshape(len(distinct), ft.get_dimension())
    return np.array([where[s] for s in strings], np.int64), vecs


def dense_wechsel(source_tok, target_tok, src_ft, tgt_ft, rotation: np.ndarray | None, k: int = 10,
                  temperature: float = 0.1, copy_overlap: bool = False, chunk: int = 256) -> Rows:
    """WECHSEL (Minixhofer et al. 2022): every token embedded as fastText(decode(token).strip()), source vectors
    rotated into the target space, each target token = softmax(cos/τ) over its k most similar source tokens.
    A target token with an all-zero vector gets a random row. ``copy_overlap=False`` copies only the source's
    special tokens found in the target vocabulary (the paper/package); ``True`` copies specials (by string or
    role) and byte-identical tokens (xlt's default)."""
    s_of, s_vec = _string_vectors(source_tok, src_ft)
    t_of, t_vec = _string_vectors(target_tok, tgt_ft)
    if rotation is not None:
        s_vec = s_vec @ rotation
    s_unit, t_unit = unit(s_vec), unit(t_vec)
    zero = ~np.any(t_vec != 0, axis=1)
    fixed = dict(special_pairs(source_tok, target_tok) if copy_overlap else wechsel_specials(source_tok, target_tok))
    if copy_overlap:
        for t, s in byte_overlap(source_tok, target_tok).items():
            fixed.setdefault(t, s)
    out = Rows(len(source_tok), [None] * len(target_tok),
               cosine=lambda t, ids: t_unit[t_of[t]] @ s_unit[s_of[np.asarray(ids, np.int64)]].T)
    todo = []
    for i in range(len(target_tok)):
        if i in fixed:
            out.rows[i] = ("copy", fixed[i])
        elif zero[t_of[i]]:
            out.rows[i] = ("random",)
        else:
            todo.append(i)
    strings_needed = sorted({int(t_of[i]) for i in todo})
    best: dict[int, tuple[np.ndarray, np.ndarray, bool]] = {}
    k = min(k, len(source_tok))
    for c in range(0, len(strings_needed), chunk):
        ids = strings_needed[c: c + chunk]
        sims = (t_unit[ids] @ s_unit.T)[:, s_of]  # (target strings, source tokens)
        kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]  # the k-th largest similarity of each row
        for r, j in enumerate(ids):
            cand = np.flatnonzero(sims[r] >= kth[r])  # everything as similar as the k-th, ties included, by id
            top = cand[np.argsort(-sims[r, cand], kind="stable")[:k]]  # stable: equal sims keep ascending id
            best[j] = (top, sims[r, top], len(cand) > k)
    for i in todo:
        idx, s, tie = best[int(t_of[i])]
        e = np.exp((s - s.max()) / temperature)
        out.rows[i] = ("mix", idx, e / e.sum())
        if tie:
            out.ties.append(i)
    return out


def dense_focus(source_tok, target_tok, token_ft, copies: dict[int, int] | None = None,
                specials: dict[int, int] | None = None) -> Rows:
    """FOCUS (Dobler & de Melo 2023): overlapping tokens copy their source row; every other target token with a
    vector in the token-level fastText model (its native string is a fastText word and the vector is not zero)
    = sparsemax over its cosine similarities to the overlapping tokens that have such a vector (the anchors),
    mixing the anchors' source rows; the rest are random.

    ``copies`` is the overlap (default: byte-identical tokens); ``specials`` are copied but never anchors
    (default: by string or role). Pass another rule (e.g. a reference package's) to emulate it."""
    specials = special_pairs(source_tok, target_tok) if specials is None else specials
    copies = byte_overlap(source_tok, target_tok) if copies is None else copies
    native = target_tok.convert_ids_to_tokens(list(range(len(target_tok))))
    words = set(token_ft.get_words(on_unicode_error="replace"))
    vec = {}

    def has_vector(i: int) -> bool:
        if native[i] not in words:
            return False
        vec[i] = np.asarray(token_ft.get_word_vector(native[i]), np.float64)
        return bool(np.any(vec[i] != 0))

    out = Rows(len(source_tok), [None] * len(target_tok))
    anchors, new = [], []
    for i in range(len(target_tok)):
        if i in specials:
            out.rows[i] = ("copy", specials[i])
        elif i in copies:
            out.rows[i] = ("copy", copies[i])
            if has_vector(i):
                anchors.append(i)
        elif has_vector(i):
            new.append(i)
        else:
            out.rows[i] = ("random",)
    if new and not anchors:
        raise ValueError("FOCUS needs at least one overlapping token with a vector")
    out.anchors = anchors
    a = unit(np.array([vec[i] for i in anchors]).reshape(len(anchors), -1))
    a_src = np.array([copies[i] for i in anchors], np.int64)
    for i in new:
        p = sparsemax(unit(vec[i][None])[0] @ a.T)
        nz = np.flatnonzero(p)
        out.rows[i] = ("mix", a_src[nz], p[nz])
    return out


# -- comparison ----------------------------------------------------------------------------------------------
def compare_mapping(mapping, oracle: Rows) -> dict:
    """Row-by-row comparison of an xlt :class:`TransferMapping` with an oracle, on every row.

    Returns ``kind_mismatch`` (rows whose evidence disagrees: copy/mix/random), ``support_mismatch`` (rows mixing
    other source ids), ``row_diff`` (each row's max |ΔW|), ``max_weight_diff`` and ``worst_row``."""
    W = mapping.weights.tocsr()
    kinds = {"special": "copy", "overlap": "copy", "neighbours": "mix", "random": "random"}
    kind_bad, support_bad = [], []
    row_diff = np.zeros(len(oracle.rows))
    for i in range(len(oracle.rows)):
        ok = oracle.kind(i)
        mine = kinds.get(mapping.evidence[i], mapping.evidence[i])
        if ok != mine and not (ok == "mix" and mine == "copy" and W.indptr[i + 1] - W.indptr[i] == 1):
            kind_bad.append(i)
            row_diff[i] = np.inf
            continue
        a = dict(zip(W.indices[W.indptr[i]:W.indptr[i + 1]].tolist(), W.data[W.indptr[i]:W.indptr[i + 1]].tolist()))
        b = oracle.weights(i)
        a = {s: v for s, v in a.items() if v != 0}
        if set(a) != set(b):
            support_bad.append(i)
        row_diff[i] = max((abs(a.get(s, 0.0) - b.get(s, 0.0)) for s in set(a) | set(b)), default=0.0)
    worst = int(np.argmax(row_diff)) if len(row_diff) else None
    return {"rows": len(oracle.rows), "kind_mismatch": kind_bad, "support_mismatch": support_bad, "row_diff": row_diff,
            "max_weight_diff": float(row_diff[worst]) if worst is not None else 0.0, "worst_row": worst}


def xlt_vs_oracle(mapping, oracle: Rows, E: np.ndarray, tol: float, same_support: bool) -> dict:
    """Every row of an xlt mapping against an oracle: mixing weights and mixed embeddings (float64). A row mismatches
    if its kind (copy/mix/random) differs, its max |ΔW| exceeds ``tol`` or (``same_support``: WECHSEL's top-k) it
    mixes other source tokens."""
    E64 = np.asarray(E, np.float64)
    r = compare_mapping(mapping, oracle)
    rows = [i for i in range(len(oracle.rows)) if oracle.kind(i) != "random"]
    ours = np.asarray(mapping.weights @ E64)
    bad = set(np.flatnonzero(r["row_diff"] > tol).tolist()) | set(r["kind_mismatch"])
    if same_support:
        bad |= set(r["support_mismatch"])
    return {"rows": r["rows"], "rows_compared": r["rows"], "random_rows": r["rows"] - len(rows),
            "kind_mismatch": len(r["kind_mismatch"]), "support_mismatch": len(r["support_mismatch"]),
            "weight_tolerance": tol, "max_abs_weight_diff": r["max_weight_diff"],
            "max_abs_diff": float(np.abs(ours[rows] - oracle.embed(E64, rows)).max()) if rows else 0.0,
            "mismatched_rows": len(bad)}


# -- the reference packages, explained row by row ------------------------------------------------------------
#: a reference package's row and the oracle run with the package's own rules must agree this well (its matrices
#: are float32); xlt's and the package's rows differing by more than REF_TOL need a stated reason
OWN_RULES_TOL, REF_TOL = 1e-6, 1e-4


def _procrustes_inputs(src_ft, tgt_ft, pairs) -> np.ndarray:
    """XᵀY over the dictionary pairs (paired as WECHSEL pairs them), float64: its conditioning decides how far a
    float32 Procrustes solution strays from the float64 one."""
    xs, ys = _dictionary_vectors(src_ft, tgt_ft, pairs)
    return np.array(xs, np.float64).T @ np.array(ys, np.float64)


def wechsel_against_reference(source_tok, target_tok, src_ft, tgt_ft, pairs, E: np.ndarray, ref: np.ndarray,
                              picked: dict[int, list[int]], xlt_faithful, paper: Rows | None = None) -> dict:
    """The ``wechsel`` package's matrix ``ref`` (with the neighbour ids it picked per target id) row by row:

    * against this oracle run with the package's arithmetic: Procrustes solved in float32 (scipy on fastText's
      float32 vectors); its fallback ``RandomState(1234).normal(mean, std)`` by token id; where its
      ``np.argpartition`` picked other tokens than the oracle's tie rule, the picks must tie with the k-th;
    * against xlt's faithful mapping: every row compared, or excluded with its reason."""
    E64 = np.asarray(E, np.float64)
    r64 = procrustes_rotation(src_ft, tgt_ft, pairs)
    r32 = procrustes_rotation(src_ft, tgt_ft, pairs, np.float32)
    paper = paper or dense_wechsel(source_tok, target_tok, src_ft, tgt_ft, r64)
    emu = dense_wechsel(source_tok, target_tok, src_ft, tgt_ft, r32)
    ours = np.asarray(xlt_faithful.weights @ E64)
    fallback = np.random.RandomState(1234).normal(E.mean(0), E.std(0), (len(target_tok.get_vocab()), E.shape[1]))
    sv = np.linalg.svd(_procrustes_inputs(src_ft, tgt_ft, pairs), compute_uv=False)
    stats = {"rotation_max_abs_diff_float32_vs_float64": float(np.abs(r32 - r64).max()),
             "XtY_condition_number": float(sv.max() / sv.min()), "max_abs_cosine_shift": 0.0}
    own = {"rows": len(target_tok), "rows_compared": len(target_tok), "random_rows_reproduced": 0,
           "argpartition_tie_rows": 0, "max_abs_diff": 0.0, "unexplained_rows": 0}
    reasons = {"random fallback (other generators)": 0, "tie at the 10th neighbour (np.argpartition picks one)": 0,
               "near tie at the 10th neighbour, swapped by the float32 rotation": 0, "unexplained": 0}
    compared, near, own_diff = [], [], {}
    for i in range(len(target_tok)):
        kind = emu.kind(i)
        if kind == "random":
            own_diff[i] = float(np.abs(ref[i] - fallback[i]).max())
            own["random_rows_reproduced"] += 1
            reasons["random fallback (other generators)"] += 1
        elif kind == "copy":
            own_diff[i] = float(np.abs(ref[i] - E64[emu.rows[i][1]]).max())
            compared.append(i)
        else:
            mine, theirs, xlt_ids = [int(x) for x in emu.rows[i][1]], picked[i], [int(x) for x in paper.rows[i][1]]
            cos = emu.cosine(i, theirs)
            stats["max_abs_cosine_shift"] = max(stats["max_abs_cosine_shift"],
                                                float(np.abs(cos - paper.cosine(i, theirs)).max()),
                                                float(np.abs(emu.cosine(i, xlt_ids) - paper.cosine(i, xlt_ids)).max()))
            if set(theirs) != set(mine):  # a valid choice only if every pick is as similar as the k-th: a tie
                if cos.min() < emu.cosine(i, mine).min():
                    own["unexplained_rows"] += 1
                    reasons["unexplained"] += 1
                    continue
                own["argpartition_tie_rows"] += 1
            w = np.exp((cos - cos.max()) / 0.1)
            own_diff[i] = float(np.abs(ref[i] - (w / w.sum()) @ E64[theirs]).max())
            if set(xlt_ids) == set(theirs):
                compared.append(i)
            elif set(xlt_ids) == set(mine):
                reasons["tie at the 10th neighbour (np.argpartition picks one)"] += 1
            else:  # the float32 rotation changed the top-10: the pick is at most a rotation error less similar
                near.append(float(paper.cosine(i, xlt_ids).min() - paper.cosine(i, theirs).min()))
    own["max_abs_diff"] = max(own_diff.values(), default=0.0)
    own["unexplained_rows"] += sum(d > OWN_RULES_TOL for d in own_diff.values())
    ok = [g for g in near if g <= 2 * stats["max_abs_cosine_shift"]]
    reasons["near tie at the 10th neighbour, swapped by the float32 rotation"] = len(ok)
    reasons["unexplained"] += len(near) - len(ok)
    stats["max_cosine_gap_of_a_swapped_neighbour"] = max(near, default=0.0)
    d = np.abs(ours[compared] - ref[compared]).max(1) if compared else np.zeros(0)
    # on a compared row both mix the same neighbours; the weights differ by the cosines the float32 rotation moved,
    # which the package's-arithmetic oracle reproduces
    over = [i for i, x in zip(compared, d) if x > REF_TOL]
    by_rotation = [i for i in over if own_diff[i] <= OWN_RULES_TOL]
    return {"reference_vs_oracle_with_its_rules": own, "reference_arithmetic": stats,
            "xlt_faithful_vs_reference": {
                "rows": len(target_tok), "rows_compared": len(compared), "rows_excluded": reasons,
                "max_abs_diff": float(d.max()) if len(d) else 0.0, f"rows_over_{REF_TOL:g}": len(over),
                "of_those_matching_the_float32_rotation_oracle": len(by_rotation),
                "unexplained_rows": reasons["unexplained"] + len(over) - len(by_rotation)}}


def deepfocus_copies(source_tok, target_tok) -> dict[int, int]:
    """deepfocus's overlap (its own function, default options): target id -> source id of the first source token
    with the same decode-based form."""
    from deepfocus.focus import get_overlapping_tokens

    overlap, _ = get_overlapping_tokens(target_tok, source_tok, match_symbols=False, exact_match_all=True,
                                        fuzzy_match_all=False)
    return {v.target.id: v.source[0].id for v in overlap.values()}


def focus_against_reference(source_tok, target_tok, token_ft, E: np.ndarray, ref: np.ndarray, xlt,
                            paper: Rows | None = None) -> dict:
    """The ``deepfocus`` matrix ``ref`` row by row:

    * against this oracle run with deepfocus's rules: its decode-based overlap copied (special tokens included,
      matched like any token) and, with a vector, used as anchors; its fallback ``torch.normal(mean, std)`` from
      a generator seeded 42, in target-id order;
    * against xlt's focus mapping: every row compared, or excluded with its reason."""
    import torch

    E64 = np.asarray(E, np.float64)
    ref = np.asarray(ref, np.float64)
    paper = paper or dense_focus(source_tok, target_tok, token_ft)
    df = dense_focus(source_tok, target_tok, token_ft, copies=deepfocus_copies(source_tok, target_tok), specials={})
    emb = df.embed(E64)
    gen, Et = torch.Generator().manual_seed(42), torch.from_numpy(np.asarray(E))
    rnd = [i for i in range(len(target_tok)) if df.kind(i) == "random"]
    for i in rnd:
        emb[i] = torch.normal(Et.mean(0), Et.std(0), generator=gen).numpy()
    own_diff = np.abs(emb - ref).max(1)
    spurious = [a for a in df.anchors if a not in set(paper.anchors)]
    # anchors the two overlaps disagree on (present in one only, or copied from another source token): a mixed row
    # can differ only through them
    theirs, mine = {a: df.rows[a][1] for a in df.anchors}, {a: paper.rows[a][1] for a in paper.anchors}
    differ = {a for a in theirs.keys() | mine.keys() if theirs.get(a) != mine.get(a)}
    own = {"rows": len(target_tok), "rows_compared": len(target_tok), "random_rows_reproduced": len(rnd),
           "max_abs_diff": float(own_diff.max()), "unexplained_rows": int((own_diff > OWN_RULES_TOL).sum()),
           "anchors": len(df.anchors), "anchors_without_a_byte_identical_source_token": len(spurious),
           "source_tokens_those_anchors_copy": sorted({source_tok.convert_ids_to_tokens(int(df.rows[a][1]))
                                                       for a in spurious}),
           "anchors_the_overlaps_disagree_on": len(differ)}
    mixed = "mixes anchors the overlaps disagree on"
    reasons = {"random fallback (other generators)": 0, "deepfocus copies it, but no source token has its bytes": 0,
               "deepfocus copies it from a source token with other bytes": 0, "xlt copies it, deepfocus mixes it": 0,
               mixed: 0, "unexplained": 0}
    compared = []
    for i in range(len(target_tok)):
        a, b = paper.weights(i), df.weights(i)
        if "random" in (paper.kind(i), df.kind(i)):
            reasons["random fallback (other generators)"] += 1
        elif a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-12 for k in a):
            compared.append(i)
        elif df.kind(i) == "copy":
            reasons["deepfocus copies it from a source token with other bytes" if paper.kind(i) == "copy"
                    else "deepfocus copies it, but no source token has its bytes"] += 1
        elif paper.kind(i) == "copy":
            reasons["xlt copies it, deepfocus mixes it"] += 1
        else:
            reasons[mixed if differ else "unexplained"] += 1
    ours = np.asarray(xlt.weights @ E64)
    d = np.abs(ours[compared] - ref[compared]).max(1) if compared else np.zeros(0)
    return {"reference_vs_oracle_with_its_rules": own,
            "xlt_vs_reference": {"rows": len(target_tok), "rows_compared": len(compared), "rows_excluded": reasons,
                                 "max_abs_diff": float(d.max()) if len(d) else 0.0,
                                 "unexplained_rows": reasons["unexplained"] + int((d > REF_TOL).sum())}}
