"""A ranking adapter on multilingual-e5-small reranking MaxSim candidates on the Bible (Litschko et al. 2022, §4).

1. First stage: an untrained ColBERT-XM encoder on e5 (MaxSim over e5's last hidden states through a random 128-d
   projection; no retrieval training) gives each test-book query its top ``--k`` verses among ``--n-docs``.
2. A cross-encoder over the same frozen e5 with an English adapter (untrained: the identity) trains only its
   ranking adapter and head, point-wise BCE on BBE → KJV train-book pairs (positive: the same verse; negative: a
   neighbouring verse of the chapter).
3. MRR@10 and recall@1/10 before and after reranking, for en-en (BBE query → KJV verse) and en-sw (English query →
   Swahili verse, ``split`` mode: query tokens through en's adapter, document tokens through sw's).

    OMP_NUM_THREADS=1 .venv/bin/python examples/tasks/rerank.py [--steps 40] [--n-docs 200] [--n-queries 40]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="ranking adapter steps (batch 16 pairs)")
    ap.add_argument("--n-docs", type=int, default=200)
    ap.add_argument("--n-queries", type=int, default=40)
    ap.add_argument("--k", type=int, default=20, help="first-stage candidates reranked per query")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from xlt.tasks.colbert_xm import LanguageModularEncoder, bible_eval_set, bible_triples, rank_metrics
    from xlt.tasks.rerank import CrossEncoderReranker, RerankerOptions, pointwise_examples, rerank, \
        train_ranking_adapter

    t0 = time.perf_counter()
    enc = LanguageModularEncoder.from_pretrained_encoder("e5", ["en", "sw"], seed=0).eval()
    rr = CrossEncoderReranker(enc, RerankerOptions(reduction=16, query_length=64, max_length=160), seed=0)
    res = train_ranking_adapter(rr, pointwise_examples(bible_triples(400, seed=0)), "en", steps=args.steps,
                                batch_size=16, lr=1e-3, seed=0)
    first, last = sum(res["losses"][:5]) / 5, sum(res["losses"][-5:]) / 5
    print(f"ranking adapter: {res['trainable_parameters']:,} parameters, {res['steps']} steps, BCE (mean of 5) "
          f"{first:.3f} -> {last:.3f} ({res['seconds']:.0f} s)")
    print(f"{'pair':6} {'mode':6} {'MRR@10':>15} {'R@1':>13} {'R@10':>13}")
    for pair, mode in (("en-en", "qlang"), ("en-sw", "split")):
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
