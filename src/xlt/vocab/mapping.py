"""The shape every embedding-initialisation method produces, and the pure math that applies it.

A :class:`TransferMapping` says, for each target token, how its embedding is made from the source
embeddings: a sparse row of mixing weights over source tokens (``E_t = W · E_s``) or a fill rule
(``mean`` of all source rows, a ``random`` draw with the source's per-dimension mean and std), plus
the *evidence* behind the row (special, overlap, pieces, …). The same mapping is applied to input
embeddings and to an untied output head, so both are transferred alike.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

#: evidence kinds rows can have; methods may add their own names
FILL_RULES = ("mean", "random")


@dataclass
class TransferMapping:
    """Target-vocab × source-vocab mixing matrix with per-row evidence and fill rules."""

    weights: sp.csr_matrix  # (n_target, n_source); rows with a fill rule are empty
    evidence: list[str]  # per target row: "special", "overlap", "pieces", "mean", "random", ...
    method: str
    notes: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # the method's options as it ran (xlt.options.as_dict)
    signature: str = ""  # provenance: method, options, tokenizers, corpus, seed, xlt version (xlt.signature)

    def __post_init__(self):
        self.weights = sp.csr_matrix(self.weights, dtype=np.float64)
        if self.weights.shape[0] != len(self.evidence):
            raise ValueError("one evidence entry per target row is required")

    @property
    def n_target(self) -> int:
        return self.weights.shape[0]

    @property
    def n_source(self) -> int:
        return self.weights.shape[1]

    def check(self, atol: float = 1e-6) -> None:
        """Every row is either a fill rule (empty) or non-negative weights summing to 1."""
        nnz = np.diff(self.weights.indptr)
        sums = np.asarray(self.weights.sum(axis=1)).ravel()
        for i, ev in enumerate(self.evidence):
            if ev in FILL_RULES:
                if nnz[i]:
                    raise ValueError(f"row {i} has fill rule {ev!r} but also weights")
            elif nnz[i] == 0 or abs(sums[i] - 1) > atol:
                raise ValueError(f"row {i} ({ev}) has weights summing to {sums[i]:.6f}, not 1")
        if self.weights.nnz and self.weights.data.min() < 0:
            raise ValueError("negative mixing weights")

    def summary(self) -> dict:
        """Counts and shares of rows per evidence type (``overlap`` share = exact copies)."""
        c = Counter(self.evidence)
        n = self.n_target
        return {
            "method": self.method,
            "options": dict(self.options),
            "signature": self.signature,
            "target_vocab": n,
            "source_vocab": self.n_source,
            "rows_by_evidence": dict(sorted(c.items())),
            "share_by_evidence": {k: v / n for k, v in sorted(c.items())},
            **self.notes,
        }

    def save(self, path: str | Path) -> None:
        """Save as ``.npz`` (CSR arrays + evidence), loadable with :meth:`load`."""
        w = self.weights
        np.savez_compressed(path, data=w.data, indices=w.indices, indptr=w.indptr, shape=np.array(w.shape),
                            evidence=np.array(self.evidence), method=np.array(self.method),
                            options=np.array(json.dumps(self.options, default=str)), signature=np.array(self.signature))

    @classmethod
    def load(cls, path: str | Path) -> "TransferMapping":
        z = np.load(path, allow_pickle=False)
        w = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        return cls(w, [str(e) for e in z["evidence"]], str(z["method"]),
                   options=json.loads(str(z["options"])) if "options" in z else {},
                   signature=str(z["signature"]) if "signature" in z else "")


def mix_rows(mapping: TransferMapping, source: torch.Tensor, seed: int) -> torch.Tensor:
    """Build the target matrix from ``source`` (n_source × d) — the pure math of every method.

    Weighted rows: ``W·E``; ``mean`` rows: the mean source row; ``random`` rows: N(μ_j, σ_j) per
    dimension j, from a local generator seeded with ``seed`` (global RNG state is untouched).
    """
    if source.shape[0] < mapping.n_source:
        raise ValueError(f"source matrix has {source.shape[0]} rows, mapping expects {mapping.n_source}")
    src = source[: mapping.n_source].detach().to(torch.float64).cpu()
    out = torch.from_numpy(np.ascontiguousarray(mapping.weights @ src.numpy()))
    ev = np.array(mapping.evidence)
    mean_rows = np.flatnonzero(ev == "mean")
    if len(mean_rows):
        out[torch.from_numpy(mean_rows)] = src.mean(0)
    rand_rows = np.flatnonzero(ev == "random")
    if len(rand_rows):
        g = torch.Generator().manual_seed(seed)
        mu = src.mean(0)
        sd = torch.from_numpy(np.std(src.numpy(), axis=0, ddof=1))  # numpy's column std: 3x torch's here
        out[torch.from_numpy(rand_rows)] = mu + sd * torch.randn(len(rand_rows), src.shape[1], generator=g, dtype=torch.float64)
    return out.to(source.dtype)
