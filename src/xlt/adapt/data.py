"""Packing: one token stream cut into fixed-length blocks, visited in a seeded order fixed by step number.

Because batch ``g`` is a pure function of ``(seed, g)``, a resumed run sees exactly the batches the
uninterrupted run would have seen, with no data-loader state to save.
"""

from __future__ import annotations

import numpy as np
import torch

from xlt.errors import XltError


def pack_stream(tokenizer, texts: list[str], boundary_id: int) -> np.ndarray:
    """``[b] doc1 [b] doc2 ...`` as one int32 array (``b`` = document boundary token)."""
    out: list[int] = []
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for ids in enc:
        if ids:
            out.append(boundary_id)
            out.extend(ids)
    return np.asarray(out, dtype=np.int32)


class PackedBlocks:
    def __init__(self, stream: np.ndarray, seq_len: int, seed: int, start: tuple[int, ...] | list[int] = ()):
        """Blocks of ``seq_len`` tokens; each begins with ``start`` (the tokenizer's start token, e.g. Gemma's
        ``<bos>``, which such models expect at the start of every sequence), the stream fills the rest."""
        body = seq_len - len(start)
        if body < 1:
            raise XltError(f"--seq-len {seq_len} leaves no room after the {len(start)} start token(s)",
                           "pass a larger --seq-len")
        n = len(stream) // body
        if n < 1:
            raise XltError(f"the training text has only {len(stream)} tokens, fewer than one sequence of {seq_len}",
                           "give more training text or a smaller --seq-len")
        self.blocks = torch.from_numpy(stream[: n * body].astype(np.int64)).view(n, body)
        self.start = torch.tensor(list(start), dtype=torch.int64)
        self.seed = seed
        self._perm: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm:
            self._perm = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self))}
        return self._perm[epoch]

    def sample(self, k: int) -> torch.Tensor:
        """The ``k``-th block in the global seeded order (epochs reshuffled)."""
        epoch, pos = divmod(k, len(self))
        block = self.blocks[self._order(epoch)[pos]]
        return torch.cat([self.start, block]) if len(self.start) else block

    def batch(self, step: int, micro: int, micro_batches: int, batch_size: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """Micro-batch ``micro`` of optimizer step ``step`` for process ``rank``."""
        per_step = batch_size * micro_batches * world
        first = step * per_step + (micro * world + rank) * batch_size
        return torch.stack([self.sample(first + j) for j in range(batch_size)])
