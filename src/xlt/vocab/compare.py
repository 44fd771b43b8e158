"""Comparing initialisations without training: leave-one-out reconstruction of overlapping tokens.

A sample of target tokens that exist in the source vocabulary is held out: each method must build their
rows from its other evidence (as if they were new tokens), and the score is the mean cosine between the
reconstructed row and the token's true source row. No method may use the token's own source row: the
held-out tokens are not copied (``overlap``/FVT splits them as if they were missing from the source
vocabulary: into the two tokens of the BPE merge that makes them), and any weight a method still puts on
the token's own row (a neighbour search finding the same string, an alignment to itself, FVT on a
non-BPE source) is removed and the rest of the row renormalised (mean row if nothing remains). So the number says how well a method's
evidence predicts embeddings of *new* tokens.
"""

from __future__ import annotations

import numpy as np
import torch

from xlt.vocab.baselines import overlap_pairs
from xlt.vocab.mapping import TransferMapping, mix_rows
from xlt.vocab.registry import TransferContext
from xlt.vocab.transfer import build_mapping


def holdout_sample(ctx: TransferContext, n: int = 200, seed: int = 0) -> dict[int, int]:
    """``n`` overlapping (target id -> source id) pairs, drawn with a local seeded generator."""
    pairs = sorted(overlap_pairs(ctx.source_tokenizer, ctx.target_tokenizer).items())
    if not pairs:
        return {}
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(pairs), size=min(n, len(pairs)), replace=False)
    return dict(pairs[i] for i in sorted(pick))


def leave_one_out(method: str, ctx: TransferContext, source_embeddings: torch.Tensor, n: int = 200,
                  options=None) -> dict:
    """Mean (and spread of) cosine between reconstructed and true source rows of held-out overlapping tokens."""
    from dataclasses import replace

    sample = holdout_sample(ctx, n, ctx.seed)
    if not sample:
        return {"tokens": 0, "mean_cosine": None}
    held = replace(ctx, holdout=frozenset(sample))
    mapping = build_mapping(method, held, options)
    w = mapping.weights.tolil()
    ev = list(mapping.evidence)
    for t, s in sample.items():
        if w[t, s] != 0:
            w[t, s] = 0
            total = w[t].sum()
            if total > 0:
                w[t] = w[t] / total
            else:
                ev[t] = "mean"
    mapping = TransferMapping(w.tocsr(), ev, mapping.method)
    new = mix_rows(mapping, source_embeddings, ctx.seed).double()
    t_ids = torch.tensor(list(sample))
    s_ids = torch.tensor(list(sample.values()))
    cos = torch.nn.functional.cosine_similarity(new[t_ids], source_embeddings.detach().double()[s_ids], dim=1)
    ev = [mapping.evidence[t] for t in sample]
    mapping.check()
    return {"tokens": len(sample), "mean_cosine": float(cos.mean()), "std_cosine": float(cos.std()),
            "evidence": {e: ev.count(e) for e in sorted(set(ev))}}
