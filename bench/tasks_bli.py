"""Benchmark: BLI with CSLS both ways, ``xlt.tasks.bli.bli`` against vecmap's formula in numpy (issue 18).

    OMP_NUM_THREADS=1 python bench/tasks_bli.py [--words 20000] [--k 10] [--out-dir bench/results]

Data: e5 (multilingual-e5-small) word vectors (:func:`xlt.tasks.babelbert.word_vectors`: the word alone, mean over
subwords, no special tokens) of ``--words`` words per side. Swahili (target): the most frequent distinct words of
its Bible. English (source): the most frequent distinct words of its four Bible versions together (17,457), filled
up to ``--words`` with English word-start tokens of SmolLM2's tokenizer in its merge order (lower-case ASCII
letters; some are word pieces, which only add distractors); the JSON says how many came from each. Gold = FreeDict
eng-swh (when installed) merged with the pairs induced from the whole Bible, kept where both words are in the two
lists. The vectors are cached in the xlt cache (``bench/``) so a rerun skips the encoding.

Sides (one thread each, ``time.perf_counter``, best of ``--repeat``, the two sides alternating):

- ``xlt``: one call ``bli(X, Y, gold, "csls", k)``: P@1 and MRR en→sw and sw→en from one similarity matrix (its
  product through NumPy's BLAS, like vecmap's, so the ratio is the method's, not the library's).
- ``vecmap``: vecmap's ``eval_translation.py`` CSLS in numpy, run once per direction: ``topk_mean`` by k rounds of
  ``argmax`` (each found maximum overwritten by the matrix minimum), backward k-NN means over batches of 500
  target rows (kept in a float64 vector, as vecmap's ``xp.zeros`` makes it, so the query scores are float64 too),
  then per query batch ``2·cos − r_y`` and its ``argmax`` (the ``− r_x`` term is constant per row); the gold rank
  for MRR is read from the same batch (count of higher scores, ties before the gold index). Reported beside it,
  not the goal's reference: the same loop with the means in float32 (faster than vecmap as published).

Checks: the same top-1 neighbour for every query (count of differences), equal P@1, MRR within 1e-6. Goal:
xlt ≥ 2× vecmap. Prints a table and writes ``<out-dir>/tasks_bli.json`` atomically (settings, machine, figures,
checks; no path of this machine).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # bench/peft.py would shadow peft

GOAL = 2.0
BATCH_SIZE = 500  # vecmap eval_translation.py


# ---------------------------------------------------------------------------------------------------------
# vecmap's CSLS (numpy), one direction
# ---------------------------------------------------------------------------------------------------------
def topk_mean(m: np.ndarray, k: int, inplace: bool = False) -> np.ndarray:
    """vecmap's ``topk_mean``: mean of each row's k largest values, by k rounds of argmax."""
    n = m.shape[0]
    ans = np.zeros(n, dtype=m.dtype)
    if k <= 0:
        return ans
    if not inplace:
        m = np.array(m)
    ind0 = np.arange(n)
    ind1 = np.empty(n, dtype=int)
    minimum = m.min()
    for _ in range(k):
        m.argmax(axis=1, out=ind1)
        ans += m[ind0, ind1]
        m[ind0, ind1] = minimum
    return ans / k


def vecmap_csls(x: np.ndarray, z: np.ndarray, src2trg: dict[int, set[int]], k: int, r_dtype=np.float64) -> dict:
    """P@1, MRR and top-1 of each query (sorted source rows with gold) for x → z, vecmap's way (unit rows).
    ``r_dtype``: vecmap keeps the backward means in float64 (``xp.zeros``'s default), so its query scores are
    float64 too; ``np.float32`` is the faster variant reported beside it."""
    src = sorted(src2trg)
    knn_sim_bwd = np.zeros(z.shape[0], dtype=r_dtype)
    for i in range(0, z.shape[0], BATCH_SIZE):
        j = min(i + BATCH_SIZE, z.shape[0])
        knn_sim_bwd[i:j] = topk_mean(z[i:j].dot(x.T), k=k, inplace=True)
    top1 = np.empty(len(src), dtype=np.int64)
    ranks = np.empty(len(src), dtype=np.int64)
    cols = np.arange(z.shape[0])
    for i in range(0, len(src), BATCH_SIZE):
        j = min(i + BATCH_SIZE, len(src))
        sims = 2 * x[src[i:j]].dot(z.T) - knn_sim_bwd
        top1[i:j] = sims.argmax(axis=1)
        for r in range(j - i):
            gold = np.fromiter(sorted(src2trg[src[i + r]]), dtype=np.int64)
            row = sims[r]
            g = row[gold]
            best = gold[np.lexsort((gold, -g))[0]]
            ranks[i + r] = 1 + int((row > row[best]).sum()) + int(((row == row[best]) & (cols < best)).sum())
    return {"p_at_1": float(np.mean(ranks == 1)), "mrr": float(np.mean(1.0 / ranks)), "top1": top1,
            "queries": len(src)}


# ---------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------
def frequent_words(texts, n: int) -> tuple[list[str], int]:
    from xlt.vocab.dictionary import tokenize_words

    c = Counter(w for t in texts for w in tokenize_words(t))
    return [w for w, _ in c.most_common(n)], len(c)


def english_words(n: int) -> tuple[list[str], int, int]:
    """``n`` English words: the four English Bibles' most frequent, then SmolLM2's word-start tokens (see above);
    returns the words, how many distinct Bible words there are and how many of the list came from the tokenizer."""
    from transformers import AutoTokenizer

    from xlt.corpora.bible import VERSIONS, BibleCorpus
    from xlt.models.loading import resolve_source

    texts = (t for v in VERSIONS["eng"] for t in BibleCorpus(versions={"en": v[0]}).texts("en"))
    words, distinct = frequent_words(texts, n)
    if len(words) < n:
        tok = AutoTokenizer.from_pretrained(resolve_source("smollm2"))
        seen = set(words)
        for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]):
            w = t[1:]
            if t.startswith("Ġ") and w.isascii() and w.isalpha() and w.islower() and w not in seen:
                words.append(w)
                seen.add(w)
                if len(words) == n:
                    break
    return words, distinct, len(words) - min(distinct, n)


def vectors(words: list[str], batch_size: int = 256) -> np.ndarray:
    """e5 word vectors, cached by the word list's hash."""
    from xlt.infer.embed import _load_encoder
    from xlt.tasks.babelbert import word_vectors
    from xlt.util import cache_dir

    h = hashlib.sha256("\n".join(["e5-word-vectors-v1"] + words).encode()).hexdigest()[:20]
    path = cache_dir() / "bench" / f"bli_vectors_{h}.npy"
    if path.is_file():
        return np.load(path)
    model, tok, _ = _load_encoder("e5", "cpu")
    v = word_vectors(model, tok, words, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path.with_suffix(".tmp.npy"), v)
    path.with_suffix(".tmp.npy").replace(path)
    return v


def gold_pairs(src_words: list[str], tgt_words: list[str]) -> tuple[list[tuple[int, int]], list[str]]:
    from xlt.tasks.bli import gold_from_pairs
    from xlt.vocab.dictionary import freedict_dictionary, induce_from_parallel, merge_dictionaries

    parts, sources = [induce_from_parallel("bible", "en", "sw", split=None)], []
    try:
        parts.insert(0, freedict_dictionary("en", "sw"))
    except Exception as e:  # FreeDict not installed: the induced pairs alone
        sources.append(f"freedict unavailable: {getattr(e, 'problem', e)}")
    d = merge_dictionaries(*parts)
    lower = [(s.lower(), t.lower()) for s, t in d.pairs]
    return gold_from_pairs(lower, src_words, tgt_words), [p.source for p in parts] + sources


# ---------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description="BLI CSLS: xlt vs vecmap's numpy formula")
    ap.add_argument("--words", type=int, default=20000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    a = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from xlt.corpora import open_corpus
    from xlt.tasks.bli import bli
    from xlt.util import machine_info, write_json_atomic

    bible = open_corpus("bible")
    t0 = time.perf_counter()
    en, en_distinct, en_from_tokenizer = english_words(a.words)
    sw, sw_distinct = frequent_words(bible.texts("sw"), a.words)
    x, z = vectors(en), vectors(sw)
    gold, gold_sources = gold_pairs(en, sw)
    prep = time.perf_counter() - t0
    print(f"{len(en)} en words ({en_distinct} distinct in 4 Bibles, {en_from_tokenizer} from SmolLM2's tokenizer) x "
          f"{len(sw)} sw words (of {sw_distinct}); "
          f"{len(gold)} gold pairs; vectors + gold {prep:.0f} s", flush=True)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)

    s2t: dict[int, set[int]] = {}
    t2s: dict[int, set[int]] = {}
    for i, j in gold:
        s2t.setdefault(i, set()).add(j)
        t2s.setdefault(j, set()).add(i)
    t_xlt, t_ref, t_f32 = [], [], []
    for _ in range(a.repeat):  # interleaved, so a slow spell of the machine hits every side
        t = time.perf_counter()
        ours = bli(xn, zn, gold, method="csls", k=a.k)
        t_xlt.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = {"src_to_tgt": vecmap_csls(xn, zn, s2t, a.k), "tgt_to_src": vecmap_csls(zn, xn, t2s, a.k)}
        t_ref.append(time.perf_counter() - t)
        t = time.perf_counter()
        f32 = {"src_to_tgt": vecmap_csls(xn, zn, s2t, a.k, np.float32),
               "tgt_to_src": vecmap_csls(zn, xn, t2s, a.k, np.float32)}
        t_f32.append(time.perf_counter() - t)
    checks = {}
    for d in ("src_to_tgt", "tgt_to_src"):
        diff = int((ours[d]["top1"] != ref[d]["top1"]).sum())
        checks[d] = {"queries": ours[d]["queries"], "top1_differences": diff,
                     "p_at_1_equal": ours[d]["p_at_1"] == ref[d]["p_at_1"],
                     "mrr_abs_diff": abs(ours[d]["mrr"] - ref[d]["mrr"])}
        checks[d]["ok"] = diff == 0 and checks[d]["p_at_1_equal"] and checks[d]["mrr_abs_diff"] <= 1e-6
    speedup = min(t_ref) / min(t_xlt)
    res = {
        "part": "bli_csls", "source_words": len(en), "target_words": len(sw), "source_distinct_in_bibles": en_distinct,
        "source_words_from_smollm2_tokenizer": en_from_tokenizer,
        "target_distinct_in_bible": sw_distinct, "gold_pairs": len(gold), "gold_sources": gold_sources, "k": a.k,
        "threads": 1, "repeat": a.repeat, "goal_speedup": GOAL,
        "sides": {"xlt": {"seconds": min(t_xlt), "all_seconds": t_xlt},
                  "vecmap_numpy": {"seconds": min(t_ref), "all_seconds": t_ref},
                  "vecmap_numpy_float32_means": {"seconds": min(t_f32), "all_seconds": t_f32}},
        "speedup": speedup,
        "speedup_vs_float32_variant": min(t_f32) / min(t_xlt),
        "results": {side: {d: {"p_at_1": r[d]["p_at_1"], "mrr": r[d]["mrr"], "queries": r[d]["queries"]}
                           for d in ("src_to_tgt", "tgt_to_src")}
                    for side, r in (("xlt", ours), ("vecmap", ref), ("vecmap_float32_means", f32))},
        "checks": checks, "ok": all(c["ok"] for c in checks.values()) and speedup >= GOAL,
        "command": f"OMP_NUM_THREADS=1 python bench/tasks_bli.py --words {a.words} --k {a.k} --repeat {a.repeat}",
        "machine": machine_info(), "date": time.strftime("%Y-%m-%d"),
    }
    lines = [f"BLI CSLS k={a.k}, {len(en)} en x {len(sw)} sw e5 word vectors, {len(gold)} gold pairs, 1 thread",
             f"{'side':<14}{'seconds':>9}{'en→sw P@1':>11}{'MRR':>8}{'sw→en P@1':>11}{'MRR':>8}"]
    for side, key, sk in (("xlt", "xlt", "xlt"), ("vecmap numpy", "vecmap", "vecmap_numpy"),
                          ("  r_y float32", "vecmap_float32_means", "vecmap_numpy_float32_means")):
        r = res["results"][key]
        sec = res["sides"][sk]["seconds"]
        lines.append(f"{side:<14}{sec:>9.2f}{r['src_to_tgt']['p_at_1']:>11.4f}{r['src_to_tgt']['mrr']:>8.4f}"
                     f"{r['tgt_to_src']['p_at_1']:>11.4f}{r['tgt_to_src']['mrr']:>8.4f}")
    lines.append(f"speedup {speedup:.2f}x (goal >= {GOAL:.0f}x; {res['speedup_vs_float32_variant']:.2f}x against "
                 f"the float32 variant); top-1 differences "
                 f"{checks['src_to_tgt']['top1_differences']} / {checks['tgt_to_src']['top1_differences']}; ok {res['ok']}")
    print("\n".join(lines))
    out = Path(a.out_dir) / "tasks_bli.json"
    write_json_atomic(out, res)
    print(f"-> {out.name}")


if __name__ == "__main__":
    main()
