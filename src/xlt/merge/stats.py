"""Exact order statistics over streams of tensors, in O(65,536) memory: radix select on float32 bits.

Float32 values are mapped to 32-bit keys whose unsigned order is the numeric order (positive floats:
bits + 2³¹; negative floats: bitwise NOT). Pass 1 histograms the high 16 bits of every key over the
whole stream (one tensor, or every tensor of a model), which locates the bin holding each wanted rank;
pass 2 histograms the low 16 bits of the keys inside those bins, which gives the exact value. Nothing
but two 65,536-bin histograms per statistic is kept, so "the 80th percentile of |δ| over a whole 7B
model" costs two streaming reads, not a sort of the model.

Tie handling is explicit: each :class:`Selection` reports how many elements are below, equal to and
above the selected value, so a caller can keep exactly *k* elements (see :func:`topk_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BINS = 1 << 16
_SIGN = 1 << 31


def sortable_keys(x: torch.Tensor) -> torch.Tensor:
    """int64 keys in [0, 2³²) whose order is the float order of ``x`` (−0 and +0 give the same key)."""
    x = x.detach().reshape(-1).to(torch.float32) + 0.0  # + 0.0 turns -0.0 into +0.0
    bits = x.view(torch.int32).to(torch.int64)
    return torch.where(bits >= 0, bits + _SIGN, ~bits)


def key_to_float(key: int) -> float:
    bits = key - _SIGN if key >= _SIGN else ~key
    return torch.tensor([bits], dtype=torch.int64).to(torch.int32).view(torch.float32).item()


@dataclass(frozen=True)
class Selection:
    """The value at an ascending 0-based ``rank`` of a stream of ``total`` values, with its tie counts."""

    rank: int
    value: float
    less: int
    equal: int
    total: int

    @property
    def greater(self) -> int:
        return self.total - self.less - self.equal


class RankSelector:
    """Exact values at given ascending ranks of a stream: call :meth:`add` over the stream in pass 1,
    :meth:`next_pass`, :meth:`add` over the same stream again, then :meth:`result`.
    ``nonneg=True`` promises values ≥ 0 (magnitudes), whose float32 bits are already ordered as int32:
    that path needs no key conversion.
    """

    def __init__(self, nonneg: bool = False):
        self.nonneg = nonneg
        self.pass_no = 1
        self.hist1 = torch.zeros(BINS, dtype=torch.int64)
        self.total = 0
        self.ranks: list[int] = []
        self.bins: dict[int, torch.Tensor] = {}

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        if self.nonneg:
            x = x.detach().reshape(-1)
            if x.dtype != torch.float32:
                x = x.to(torch.float32)
            return x.view(torch.int32)
        return sortable_keys(x)

    def add(self, x: torch.Tensor) -> None:
        if x.numel() == 0:
            return
        keys = self.keys(x)
        hi = keys >> 16
        if self.pass_no == 1:
            self.hist1 += torch.bincount(hi, minlength=BINS)
            self.total += keys.numel()
        else:
            for b, h in self.bins.items():
                sel = keys[hi == b]
                if sel.numel():
                    h += torch.bincount(sel & 0xFFFF, minlength=BINS)

    def next_pass(self, ranks: list[int]) -> None:
        """End pass 1; ``ranks`` (0-based, ascending order statistics) are the ones :meth:`result` gives."""
        for r in ranks:
            if not 0 <= r < self.total:
                raise ValueError(f"rank {r} outside a stream of {self.total} values")
        self.ranks = list(ranks)
        self.cum1 = torch.cumsum(self.hist1, 0)
        for r in ranks:
            b = int(torch.searchsorted(self.cum1, torch.tensor(r), right=True))
            self.bins.setdefault(b, torch.zeros(BINS, dtype=torch.int64))
        self.pass_no = 2

    def result(self) -> list[Selection]:
        out = []
        for r in self.ranks:
            b = int(torch.searchsorted(self.cum1, torch.tensor(r), right=True))
            before_bin = int(self.cum1[b - 1]) if b > 0 else 0
            h = self.bins[b]
            cum2 = torch.cumsum(h, 0)
            low = int(torch.searchsorted(cum2, torch.tensor(r - before_bin), right=True))
            less = before_bin + (int(cum2[low - 1]) if low > 0 else 0)
            key = (b << 16) | low
            out.append(Selection(r, key_to_float(key + _SIGN if self.nonneg else key), less, int(h[low]), self.total))
        return out


def topk_mask(a: torch.Tensor, sel: Selection, keep_equal: int, seen_equal: int) -> tuple[torch.Tensor, int]:
    """Mask of the elements of ``a`` kept by a top-k whose threshold is ``sel``: all above ``sel.value``,
    and among the elements equal to it only the first ``keep_equal`` of the whole stream, in stream order
    (``seen_equal`` counts those met in earlier chunks). Returns the mask and the new ``seen_equal``.
    """
    v = sel.value
    mask = a > v
    eq = a == v
    n_eq = int(torch.count_nonzero(eq))
    if n_eq:
        if seen_equal + n_eq <= keep_equal:
            mask |= eq
        elif seen_equal < keep_equal:
            first = torch.nonzero(eq.reshape(-1)).reshape(-1)[: keep_equal - seen_equal]
            mask.reshape(-1)[first] = True
    return mask, seen_equal + n_eq


def tie_bits_mask(a: torch.Tensor, sel: Selection, bits: torch.Tensor, seen_equal: int) -> tuple[torch.Tensor, int]:
    """Like :func:`topk_mask`, but which elements equal to ``sel.value`` are kept is given: ``bits[j]`` says
    whether the j-th of them in stream order is (``seen_equal`` counts those met in earlier chunks).
    Returns the mask and the new ``seen_equal``.
    """
    v = sel.value
    mask = a > v
    eq = a == v
    n_eq = int(torch.count_nonzero(eq))
    if n_eq:
        if seen_equal + n_eq > bits.numel():
            raise RuntimeError(f"{seen_equal + n_eq} elements equal the threshold, the tie bits cover {bits.numel()}")
        mask.masked_scatter_(eq, bits[seen_equal:seen_equal + n_eq])
    return mask, seen_equal + n_eq


def argsort_tie_bits(values: torch.Tensor, sel: Selection, k: int) -> torch.Tensor:
    """Which elements equal to ``sel.value`` (in stream order) ``torch.argsort(values, descending=True)[:k]``
    keeps: mergekit's top-k (``mergekit/sparsify.py: magnitude``), an unstable sort, reproduced by running it.
    ``values``: the whole stream, flat, float32 (the values mergekit sorts on CPU). Bool tensor of
    ``sel.equal`` entries, of which ``k - sel.greater`` are true.
    """
    w = values.reshape(-1)
    if w.dtype != torch.float32:
        w = w.float()
    top = torch.argsort(w, descending=True)[:k]
    keep = torch.zeros(w.numel(), dtype=torch.bool)
    keep[top] = True
    del top
    bits = keep[w == sel.value]
    del keep
    if bits.numel() != sel.equal or int(torch.count_nonzero(bits)) != k - sel.greater:
        raise RuntimeError(f"argsort top-{k} disagrees with the selection ({bits.numel()} ties, "
                           f"{int(torch.count_nonzero(bits))} kept; expected {sel.equal}, {k - sel.greater})")
    return bits
