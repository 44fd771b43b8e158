"""Exact late-interaction (ColBERT MaxSim) scoring over a packed index of document token vectors.

s(q, d) = Σ_i max_j ⟨q_i, d_j⟩ over the query's kept token vectors i and the document's kept token vectors j
(ColBERT, Khattab & Zaharia 2020; ColBERT-XM, Louis et al. 2025, ``seed-papers.md`` §3). No approximation (no PLAID
centroids): every document is scored.

A :class:`DocIndex` stores the documents' token vectors packed into one float tensor ``vectors`` (T, dim) with
``offsets`` (n_docs + 1): document k owns rows ``offsets[k]:offsets[k+1]``. :func:`maxsim` scores queries against it
in blocks of documents taken in order of length, each padded to its longest document by repeating a document's last
token vector (which leaves every maximum unchanged): one matrix product per block, a max over the padded length and
a masked sum over query tokens. :func:`topk` ranks by
score, ties broken by the lower document index. :func:`maxsim_padded` is the same score on padded batches with
masks (training, and the "padded einsum" reference of ``bench/tasks_maxsim.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from xlt.errors import XltError

INDEX_TENSORS = "index.safetensors"
INDEX_META = "index.json"


def _check_queries(Q: torch.Tensor, q_mask: torch.Tensor | None) -> torch.Tensor:
    if Q.dim() != 3:
        raise XltError(f"queries must be a (n_queries, query_length, dim) tensor, not shape {tuple(Q.shape)}",
                       "encode the queries with LanguageModularEncoder.encode_queries")
    if q_mask is None:
        return torch.ones(Q.shape[:2], dtype=Q.dtype, device=Q.device)
    if q_mask.shape != Q.shape[:2]:
        raise XltError(f"the query mask has shape {tuple(q_mask.shape)}, the queries {tuple(Q.shape[:2])}",
                       "give one mask entry per query token")
    return q_mask.to(Q.dtype)


def maxsim_padded(Q: torch.Tensor, q_mask: torch.Tensor | None, D: torch.Tensor, d_mask: torch.Tensor) -> torch.Tensor:
    """(n_q, n_d) MaxSim scores of padded queries ``Q`` (n_q, Lq, dim) against padded documents ``D`` (n_d, Ld, dim);
    masks are 1 for kept tokens. Differentiable (used by the training loss)."""
    qm = _check_queries(Q, q_mask)
    if D.dim() != 3 or d_mask.shape != D.shape[:2] or D.shape[-1] != Q.shape[-1]:
        raise XltError(f"documents of shape {tuple(D.shape)} (mask {tuple(d_mask.shape)}) do not fit queries of "
                       f"shape {tuple(Q.shape)}", "give (n_docs, length, dim) documents with a (n_docs, length) mask")
    sim = torch.einsum("aid,bjd->abij", Q, D)
    sim = sim.masked_fill(~d_mask.bool()[None, :, None, :], float("-inf"))
    best = sim.amax(-1)  # (n_q, n_d, Lq)
    return (best * qm[:, None, :]).sum(-1)


@dataclass
class DocIndex:
    """Packed document token vectors: ``vectors`` (T, dim) float32, ``offsets`` (n_docs + 1) int64, the ``doc_ids``,
    the hash of the encoder (and language adapter) that built it and free-form ``meta``."""

    vectors: torch.Tensor
    offsets: torch.Tensor
    doc_ids: list[str]
    encoder_hash: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.vectors = self.vectors.float().contiguous()
        self.offsets = self.offsets.long().contiguous()
        n = len(self.doc_ids)
        if self.offsets.dim() != 1 or len(self.offsets) != n + 1 or int(self.offsets[0]) != 0 \
                or int(self.offsets[-1]) != self.vectors.shape[0]:
            raise XltError(f"index offsets do not describe {n} documents over {self.vectors.shape[0]} token vectors",
                           "build the index with DocIndex.from_documents or LanguageModularEncoder.build_index")
        lengths = self.offsets[1:] - self.offsets[:-1]
        if n and int(lengths.min()) < 1:
            k = int(torch.nonzero(lengths < 1)[0])
            raise XltError(f"document {self.doc_ids[k]!r} has no token vectors",
                           "drop empty documents before indexing")

    @classmethod
    def from_documents(cls, docs: list[torch.Tensor], doc_ids: list[str], encoder_hash: str, meta: dict | None = None):
        """Pack a list of (length_k, dim) tensors."""
        if len(docs) != len(doc_ids):
            raise XltError(f"{len(docs)} documents but {len(doc_ids)} ids", "give one id per document")
        lengths = torch.tensor([len(d) for d in docs], dtype=torch.long)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        dim = docs[0].shape[-1] if docs else 0
        vectors = torch.cat(list(docs)) if docs else torch.zeros(0, dim)
        return cls(vectors, offsets, list(doc_ids), encoder_hash, dict(meta or {}))

    def __len__(self) -> int:
        return len(self.doc_ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def document(self, k: int) -> torch.Tensor:
        return self.vectors[self.offsets[k]:self.offsets[k + 1]]

    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write ``index.safetensors`` and ``index.json`` into ``folder`` atomically."""
        from safetensors.torch import save_file

        from xlt.util import atomic_dir, write_json_atomic

        with atomic_dir(folder, overwrite=overwrite) as tmp:
            save_file({"vectors": self.vectors, "offsets": self.offsets}, str(tmp / INDEX_TENSORS))
            write_json_atomic(tmp / INDEX_META, {"format": "xlt-maxsim-index/1", "encoder_hash": self.encoder_hash,
                                                 "n_docs": len(self), "n_tokens": int(self.vectors.shape[0]),
                                                 "dim": self.dim, "doc_ids": self.doc_ids, "meta": self.meta})
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path, expect_hash: str | None = None) -> "DocIndex":
        """Load an index; with ``expect_hash``, refuse one built by another encoder (or another language adapter)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / INDEX_META).is_file() or not (folder / INDEX_TENSORS).is_file():
            raise XltError(f"{folder} is not a MaxSim index (no {INDEX_META} / {INDEX_TENSORS})",
                           "build one with LanguageModularEncoder.build_index(...).save(folder)")
        meta = json.loads((folder / INDEX_META).read_text(encoding="utf-8"))
        if expect_hash is not None and meta["encoder_hash"] != expect_hash:
            raise XltError(f"the index in {folder} was built by another encoder (hash {meta['encoder_hash']}, this "
                           f"encoder with its current language adapter: {expect_hash})",
                           "rebuild the index with this encoder and language (token vectors of another encoder are "
                           "not comparable)")
        t = load_file(str(folder / INDEX_TENSORS))
        return cls(t["vectors"], t["offsets"], list(meta["doc_ids"]), meta["encoder_hash"], meta.get("meta", {}))


def maxsim(Q: torch.Tensor, q_mask: torch.Tensor | None, index: DocIndex, block_elements: int = 1 << 24) -> torch.Tensor:
    """Exact (n_q, n_docs) MaxSim scores of queries ``Q`` (n_q, Lq, dim) against every document of ``index``.

    Work is split into query and document blocks so that one block's similarity matrix holds about
    ``block_elements`` floats. Documents are taken in order of length, and a block's documents are padded to its
    longest by repeating each document's last token vector (a repeated vector never changes a maximum): one matrix
    product per block, then a max over the padded length of a (docs, length, query tokens) view, and a masked sum
    over query tokens."""
    qm = _check_queries(Q, q_mask)
    if Q.shape[-1] != index.dim:
        raise XltError(f"{Q.shape[-1]}-d queries cannot be scored against a {index.dim}-d index",
                       "encode queries with the encoder that built the index")
    n_q, Lq, dim = Q.shape
    n_d = len(index)
    out = torch.zeros(n_q, n_d, dtype=torch.float32)
    if n_q == 0 or n_d == 0:
        return out
    Q = Q.float()
    offsets = index.offsets
    lengths = offsets[1:] - offsets[:-1]
    order = torch.argsort(lengths, stable=True)  # documents by length: a block pads little
    sorted_len = lengths[order]
    longest = int(sorted_len[-1])
    q_block = max(1, min(n_q, block_elements // (Lq * longest)))
    for qa in range(0, n_q, q_block):
        qb = min(n_q, qa + q_block)
        rows = (qb - qa) * Lq
        QfT = Q[qa:qb].reshape(rows, dim).T
        tok_budget = max(longest, block_elements // rows)
        a = 0
        while a < n_d:
            # the most documents from a on whose padded block (count × the last one's length) fits the budget
            fits = (torch.arange(1, n_d - a + 1) * sorted_len[a:]) <= tok_budget
            b = a + max(1, int(fits.sum()))
            docs, L = order[a:b], int(sorted_len[b - 1])
            rows_of = offsets[docs, None] + torch.minimum(torch.arange(L)[None, :], lengths[docs, None] - 1)
            S = index.vectors[rows_of.reshape(-1)] @ QfT  # (docs · L, rows)
            best = S.view(b - a, L, rows).amax(1)  # (docs, rows): max over each document's tokens
            out[qa:qb, docs] = (best.T.reshape(qb - qa, Lq, b - a) * qm[qa:qb, :, None]).sum(1)
            a = b
    return out


def topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best documents per query (values, indices), best first; equal scores rank the lower index first."""
    if k < 1:
        raise XltError(f"k must be at least 1, not {k}", "pass k=10")
    values, order = torch.sort(scores, dim=1, descending=True, stable=True)
    return values[:, :k], order[:, :k]


def brute_force_maxsim(Q, q_mask, docs: list[torch.Tensor]) -> torch.Tensor:
    """The definition, one (query, document) pair and one query token at a time (a test reference; slow)."""
    qm = _check_queries(Q, q_mask)
    out = torch.zeros(Q.shape[0], len(docs), dtype=torch.float64)
    for a in range(Q.shape[0]):
        for b, d in enumerate(docs):
            s = 0.0
            for i in range(Q.shape[1]):
                if qm[a, i]:
                    s += max(float(torch.dot(Q[a, i].double(), d[j].double())) for j in range(len(d)))
            out[a, b] = s
    return out


def rerank(reranker, queries: Sequence[str], docs: Sequence[str], first_stage_topk, k: int = 100,
           batch_size: int = 32, **score_kwargs) -> torch.Tensor:
    """The first ``k`` candidates of each query (row ``i`` of ``first_stage_topk``: document indices, best first)
    reordered by ``reranker.score(query_texts, doc_texts, **score_kwargs)`` (higher first; ties keep the first-stage
    order). Returns (n_queries, min(k, candidates)) document indices: the same set per row, new order."""
    cand = torch.as_tensor(first_stage_topk, dtype=torch.long)
    if cand.dim() != 2 or cand.shape[0] != len(queries):
        raise XltError(f"first_stage_topk has shape {tuple(cand.shape)} for {len(queries)} queries",
                       "give one row of candidate document indices per query (e.g. the indices from search)")
    if k < 1:
        raise XltError(f"k must be ≥ 1, got {k}", "rerank e.g. the top 100 (k=100)")
    cand = cand[:, :k]
    if cand.numel() and (int(cand.min()) < 0 or int(cand.max()) >= len(docs)):
        raise XltError(f"candidate indices must lie in 0…{len(docs) - 1} (got {int(cand.min())}…{int(cand.max())})",
                       "give indices into docs, as search returns them")
    if cand.numel() == 0:
        return cand
    n, c = cand.shape
    flat = cand.reshape(-1).tolist()
    scores = reranker.score([queries[i // c] for i in range(n * c)], [docs[j] for j in flat],
                            batch_size=batch_size, **score_kwargs)
    scores = torch.as_tensor(scores, dtype=torch.float64).reshape(n, c)
    order = torch.sort(-scores, dim=1, stable=True).indices  # stable: ties stay in first-stage order
    return torch.gather(cand, 1, order)


__all__ = ["DocIndex", "brute_force_maxsim", "maxsim", "maxsim_padded", "rerank", "topk"]
