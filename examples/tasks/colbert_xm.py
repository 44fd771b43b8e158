"""ColBERT-XM on the Bible: train the shared encoder on English, add a Swahili adapter, evaluate with and without it.

1. ``run_train``: multilingual-e5-small + an English adapter (untrained: the identity) + a 128-d projection; the
   shared layers learn from BBE → KJV verse triples (pairwise + in-batch softmax CE; embeddings and adapters frozen).
2. ``run_adapter``: a Swahili adapter, trained alone by masked LM over the Swahili Bible's tokens.
3. ``run_eval``: test-book verses as queries, exact MaxSim over ``--n-docs`` documents, MRR@10 and recall@k for
   en-en (BBE → KJV) and en-sw (English query → Swahili verse), documents through their language's adapter and
   through none.

The defaults are a small CPU run (a few steps, 100 queries, 400 documents: about 3 min on 2 cores); the CLI does the
same at full size (``xlt retrieve train|adapter|eval``, 5,000 documents by default).

    OMP_NUM_THREADS=2 .venv/bin/python examples/tasks/colbert_xm.py [--steps 8] [--n-docs 400] [--out runs/xm-demo]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="retrieval training steps (batch 4)")
    ap.add_argument("--adapter-steps", type=int, default=8, help="Swahili adapter MLM steps (batch 8)")
    ap.add_argument("--n-docs", type=int, default=400)
    ap.add_argument("--n-queries", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    args = ap.parse_args()
    torch.set_num_threads(2)

    from xlt.tasks.colbert_xm import run_adapter, run_eval, run_train

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.out or Path(tmp) / "xm"
        tr = run_train(run, "e5", steps=args.steps, batch_size=4, seed=0, overwrite=True)["training"]
        print(f"train: {tr['steps']} steps, loss {tr['losses'][0]:.3f} -> {tr['losses'][-1]:.3f} ({tr['seconds']:.0f} s)")
        ad = run_adapter(run, "sw", steps=args.adapter_steps, batch_size=8, seed=0, overwrite=True)["training"]
        print(f"adapter swh: {ad['steps']} steps, MLM loss {ad['losses'][0]:.3f} -> {ad['losses'][-1]:.3f}, "
              f"softmax over {ad['vocabulary']} tokens ({ad['seconds']:.0f} s)")
        m = run_eval(run, ["en-en", "en-sw"], "test", args.n_docs, args.n_queries, overwrite=True)
        print(f"{'pair':6} {'adapters':8} {'MRR@10':>7} {'R@1':>6} {'R@10':>6} {'R@100':>6}")
        for p, res in m["results"].items():
            for mode, r in res.items():
                print(f"{p:6} {mode:8} {r['mrr@10']:7.3f} {r['recall@1']:6.3f} {r['recall@10']:6.3f} "
                      f"{r['recall@100']:6.3f}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
