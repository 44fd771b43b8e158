"""The adapter modules xlt attaches with hooks: one bottleneck adapter and the invertible (NICE) adapter.

:class:`Bottleneck` computes the modification ``Δh = s · W_up ReLU(W_down x)``; its up-projection starts at zero,
so a model with adapters starts as the model without them. The unified view (:mod:`xlt.adapt.methods.unified`)
adds it in parallel or sequentially to a sublayer's output; MAD-X stacks (:mod:`xlt.adapt.compose`) add it after
each layer's FFN (``h + Δh(h)``, Pfeiffer placement).
"""

from __future__ import annotations

import torch
from torch import nn

from xlt.errors import XltError


class Bottleneck(nn.Module):
    """``scale · up(ReLU(down(x)))`` with a ``size``-wide bottleneck; zero at initialisation."""

    def __init__(self, d: int, size: int, scale: float = 1.0):
        super().__init__()
        self.down, self.up, self.scale = nn.Linear(d, size), nn.Linear(size, d), scale
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x):
        return self.scale * self.up(torch.relu(self.down(x)))


class InvertibleAdapter(nn.Module):
    """NICE additive coupling: ``y₁ = x₁ + F(x₂)``, ``y₂ = x₂ + G(y₁)``; :meth:`inverse` undoes it exactly
    (up to float rounding). F and G are small MLPs whose last layers start at zero (identity at init)."""

    def __init__(self, d: int, reduction: int = 2):
        super().__init__()
        if d % 2:
            raise XltError(f"the invertible adapter splits the hidden size in halves; {d} is odd", "use an even hidden size")
        h, r = d // 2, max(1, d // (2 * reduction))
        self.F = nn.Sequential(nn.Linear(h, r), nn.ReLU(), nn.Linear(r, h))
        self.G = nn.Sequential(nn.Linear(h, r), nn.ReLU(), nn.Linear(r, h))
        for m in (self.F[2], self.G[2]):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=-1)
        y1 = x1 + self.F(x2)
        y2 = x2 + self.G(y1)
        return torch.cat([y1, y2], dim=-1)

    def inverse(self, y):
        y1, y2 = y.chunk(2, dim=-1)
        x2 = y2 - self.G(y1)
        x1 = y1 - self.F(x2)
        return torch.cat([x1, x2], dim=-1)


def output_hook(fn):
    """A forward hook that replaces a module's hidden-state output ``h`` (first element of a tuple output) by
    ``fn(h, module_input)``."""
    def hook(module, args, kwargs, out):
        h = out[0] if isinstance(out, tuple) else out
        x = args[0] if args else kwargs.get("hidden_states")
        h = fn(h, x)
        return (h, *out[1:]) if isinstance(out, tuple) else h
    return hook
