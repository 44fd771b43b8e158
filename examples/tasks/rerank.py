"""A ranking adapter on multilingual-e5-small reranking MaxSim candidates on the Bible (Litschko et al. 2022, §4).

1. First stage: an untrained ColBERT-XM encoder on e5 (MaxSim over e5's last hidden states through a random 128-d
   projection; no retrieval training) gives each test-book query its top ``--k`` verses among ``--n-docs``.
2. A cross-encoder over the same frozen e5 with an English adapter (untrained: the identity) trains only its
   ranking adapter and head, point-wise BCE on BBE → KJV train-book pairs, ``--batch-size`` a step (positive: the
   same verse; negative: a neighbouring verse of the chapter).
3. MRR@10 and recall@1/10 before and after reranking, for en-en (BBE query → KJV verse) and en-sw (English query →
   Swahili verse, ``split`` mode: query tokens through en's adapter, document tokens through sw's).

``--kind sparse``: the paper's sparse variant instead (:mod:`xlt.tasks.sparse_rerank`): English and Swahili language
deltas by LT-SFT of masked LM (``--lang-steps`` full + as many sparse steps each), a ranking delta by LT-SFT of the
BCE on top of θ₀ + φ_en, composed as θ₀ + φ_en + φ_rank (en-en) and θ₀ + φ_en + φ_sw + φ_rank (en-sw, mode
``both``).

    OMP_NUM_THREADS=2 .venv/bin/python examples/tasks/rerank.py [--kind adapter|sparse] [--steps 40] [--n-docs 200]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="ranking training steps")
    ap.add_argument("--batch-size", type=int, default=8, help="pairs per ranking step")
    ap.add_argument("--n-docs", type=int, default=200)
    ap.add_argument("--n-queries", type=int, default=40)
    ap.add_argument("--k", type=int, default=10, help="first-stage candidates reranked per query")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kind", choices=("adapter", "sparse"), default="adapter",
                    help="ranking adapter + language adapters, or composed LT-SFT sparse deltas")
    ap.add_argument("--lang-steps", type=int, default=10, help="sparse: LT-SFT steps per phase of each language delta")
    ap.add_argument("--density", type=float, default=0.01, help="sparse: share of the body's entries per delta")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from xlt.tasks.colbert_xm import LanguageModularEncoder, bible_eval_set, bible_triples, rank_metrics
    from xlt.tasks.rerank import CrossEncoderReranker, RerankerOptions, pointwise_examples, rerank, \
        train_ranking_adapter

    t0 = time.perf_counter()
    enc = LanguageModularEncoder.from_pretrained_encoder("e5", ["en", "sw"], seed=0).eval()
    examples = pointwise_examples(bible_triples(400, seed=0))
    if args.kind == "adapter":
        rr = CrossEncoderReranker(enc, RerankerOptions(reduction=16, query_length=64, max_length=160), seed=0)
        res = train_ranking_adapter(rr, examples, "en", steps=args.steps, batch_size=args.batch_size, lr=1e-3,
                                    seed=0)
        losses = res["losses"]
        what = f"ranking adapter: {res['trainable_parameters']:,} parameters, {res['steps']} steps"
        modes = {"en-en": "qlang", "en-sw": "split"}
    else:
        from xlt.corpora import open_corpus
        from xlt.tasks.sparse_rerank import SparseDeltaReranker, SparseRerankerOptions, train_language_sft, \
            train_ranking_sft

        rr = SparseDeltaReranker.from_pretrained_encoder("e5", SparseRerankerOptions(query_length=64, max_length=160))
        bible = open_corpus("bible")
        for lang, code in (("en", "eng"), ("sw", "swh")):
            r = train_language_sft(rr, bible.texts(code, "train"), lang, density=args.density,
                                   full_steps=args.lang_steps, sparse_steps=args.lang_steps, batch_size=8, seed=0)
            print(f"language delta {code}: {r['nnz']:,} entries, MLM {r['losses_full'][0]:.3f} -> "
                  f"{r['losses_sparse'][-1]:.3f} ({r['seconds']:.0f} s)")
        half = max(1, args.steps // 2)
        res = train_ranking_sft(rr, examples, "en", density=args.density, full_steps=half, sparse_steps=half,
                                batch_size=args.batch_size, lr=3e-5, head_lr=1e-3, seed=0)
        losses = res["losses_sparse"]
        what = f"ranking delta: {res['nnz']:,} entries, {half} full + {half} sparse steps"
        modes = {"en-en": "qlang", "en-sw": "both"}
    first, last = sum(losses[:5]) / len(losses[:5]), sum(losses[-5:]) / len(losses[-5:])
    print(f"{what}, BCE (mean of 5) {first:.3f} -> {last:.3f} ({res['seconds']:.0f} s)")
    print(f"{'pair':6} {'mode':6} {'MRR@10':>15} {'R@1':>13} {'R@10':>13}")
    for pair, mode in modes.items():
        queries, gold, docs, ids = bible_eval_set(pair, "test", args.n_docs, args.n_queries, seed=0)
        enc.set_language(None)  # both adapters are the identity here: one index serves both
        _, cand = enc.search(queries, enc.build_index(docs, ids), k=args.k)
        ql, dl = pair.split("-")
        new = rerank(rr, queries, docs, cand, k=args.k, query_lang=ql, doc_lang=dl, mode=mode)
        b, a = rank_metrics(cand, gold, (1, 10)), rank_metrics(new, gold, (1, 10))
        print(f"{pair:6} {mode:6} {b['mrr@10']:6.3f} -> {a['mrr@10']:5.3f} {b['recall@1']:5.3f} -> "
              f"{a['recall@1']:5.3f} {b['recall@10']:5.3f} -> {a['recall@10']:5.3f}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
