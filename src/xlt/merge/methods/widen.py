"""``widen``: WIDEN, weight disentanglement (Yu et al., 2024, arXiv 2408.03092), per tensor.

For a 2-D weight W (out × in; token embeddings are transposed first so that a column is a token):
magnitude m = ‖W‖₂ over dim 0 (one value per column) and direction D = W/m. For each model k against the
base: ΔM_k = |m_k − m_0| and ΔD_k = 1 − cos(W_k[:, j], W_0[:, j]) per column j. Each is turned into a
within-model rank r_k(j) = (position of column j in the stable ascending order)/in. Importance
s = softmax over the models of r; where r_k(j) > t·mean_j r_k(j) (``above_average_value_ratio`` t), s_k(j)
is overwritten with c (``score_calibration_value``). The weight is ½(s_mag + s_dir) and
W = W_0 + Σ_k (W_k − W_0) ⊙ weight_k (broadcast over rows). For 1-D and other tensors (norms, biases)
the importance is computed the same way directly from |θ_k − θ_0|, without ranking.
This follows the authors' ``widen_merging`` (yule-BUAA/MergeLLM); no code was reused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xlt.merge.registry import MergeMethod, register_merge
from xlt.options import option


@dataclass
class WidenOptions:
    above_average_value_ratio: float = option(1.0, "t: ranks above t·mean get the calibration score")
    score_calibration_value: float = option(1.0, "c: the score given to important columns")


def within_model_rank(diff: torch.Tensor) -> torch.Tensor:
    """(K, in) differences -> (K, in) ranks position/in of each column in its model's stable ascending order."""
    k, n = diff.shape
    order = torch.argsort(diff, dim=1, descending=False, stable=True)
    pos = (torch.arange(n, dtype=diff.dtype) / n).expand(k, n)
    return torch.zeros_like(diff).scatter(1, order, pos)


def importance(sig: torch.Tensor, ratio: float, calib: float) -> torch.Tensor:
    s = torch.softmax(sig, dim=0)
    mask = sig > sig.mean(dim=1, keepdim=True) * ratio
    s[mask] = calib
    return s


def merge(base, tensors, p, ctx):
    ratio, calib = p["above_average_value_ratio"], p["score_calibration_value"]
    deltas = [t - base for t in tensors]
    if base.dim() == 2:
        tr = ctx.is_embedding
        W0 = base.T if tr else base
        Ws = [t.T if tr else t for t in tensors]
        m0 = W0.norm(p=2, dim=0)
        dm = torch.stack([(w.norm(p=2, dim=0) - m0).abs() for w in Ws])
        dd = torch.stack([1.0 - torch.cosine_similarity(w, W0, dim=0) for w in Ws])
        weight = 0.5 * (importance(within_model_rank(dm), ratio, calib) + importance(within_model_rank(dd), ratio, calib))
        if tr:
            weight = weight.unsqueeze(2)  # (K, vocab, 1): one weight per token row
        else:
            weight = weight.unsqueeze(1)  # (K, 1, in)
        out = base.clone()
        for k, d in enumerate(deltas):
            out += d * weight[k]
        return out
    flat = [d.reshape(1, -1) for d in deltas]
    diff = torch.cat([d.abs() for d in flat])
    s = importance(diff, ratio, calib)
    return base + sum(d * s[k].reshape(base.shape) for k, d in enumerate(deltas))


register_merge(MergeMethod(
    name="widen", merge=merge, options=WidenOptions, needs_base=True, elementwise=False, idempotent=True,
    description="WIDEN: magnitude/direction disentangled importance per column",
    paper="https://arxiv.org/abs/2408.03092", reference="yule-BUAA/MergeLLM widen_merging (read, not copied)",
    deviations="every 2-D tensor is treated as a linear weight (the authors assert Llama/Qwen names)",
))
