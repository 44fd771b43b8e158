"""Hedged sampling pools: which candidates to generate for each prompt.

A pool is a list of members, each a decoding temperature and a number of samples. Following Khairi et al. (2025,
"When Life Gives You Samples"), a *hedged* pool holds the greedy output (τ = 0) next to stochastic samples at one or
more temperatures, so the selector (MBR, a judge) can always fall back on the greedy output.

The pool is written as a comma-separated list (the ``--pool`` option of ``xlt generate``)::

    pool   := item ("," item)*
    item   := "greedy" | TEMP | TEMP "x" COUNT
    TEMP   := a number > 0   (sampling temperature τ)
    COUNT  := an integer ≥ 1 (samples at τ; 1 when omitted)

so ``greedy,0.3x2,0.7x3,1.0x2`` is 8 candidates per prompt: the greedy output, 2 samples at τ = 0.3, 3 at 0.7 and 2
at 1.0. Sampling is plain temperature sampling from the full softmax (``softmax(logits / τ)``, no top-k, top-p or
repetition penalty). A pool holds at most one greedy member of one sample: greedy decoding is deterministic, so
more copies would only repeat it.

Every problem (temperature ≤ 0, an empty pool, a malformed item, a count below 1) raises one
:class:`~xlt.errors.XltError` that names the item and shows the grammar.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterator

from xlt.errors import XltError

GRAMMAR = ("a comma-separated list of items, each `greedy`, a temperature `T` (> 0, one sample) or `TxN` "
           "(N ≥ 1 samples at temperature T), e.g. `greedy,0.3x2,0.7x3,1.0x2`")

_ITEM = re.compile(r"^(?P<temp>[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[-+]?[0-9]+)?)(?:x(?P<count>[^x]*))?$")


@dataclass(frozen=True)
class PoolMember:
    """``count`` candidates decoded at ``temperature`` (``None``: greedy, one candidate)."""

    temperature: float | None
    count: int = 1

    def __post_init__(self):
        t = self.temperature
        if t is not None and (not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t <= 0):
            raise XltError(f"pool temperature {t!r} is not a number above 0",
                           "use `greedy` for deterministic (τ = 0) decoding, or a temperature above 0 such as 0.7")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise XltError(f"pool member count {self.count!r} is not an integer of at least 1",
                           f"write {GRAMMAR}")
        if t is None and self.count != 1:
            raise XltError(f"a pool holds one greedy candidate, not {self.count}",
                           "greedy decoding is deterministic: write `greedy` once, and add samples at temperatures "
                           "above 0 for more candidates")

    @property
    def greedy(self) -> bool:
        return self.temperature is None

    def describe(self) -> str:
        """The member as the pool grammar writes it: ``greedy``, ``0.7`` or ``0.7x3``."""
        if self.temperature is None:
            return "greedy"
        t = repr(float(self.temperature))
        return t if self.count == 1 else f"{t}x{self.count}"


@dataclass(frozen=True)
class PoolRow:
    """One candidate of a pool: its member, its sample index within the member, and its temperature."""

    member: int
    sample: int
    temperature: float | None


@dataclass(frozen=True)
class Pool:
    """The members of a hedged sampling pool, in the order written; candidates come out in that order."""

    members: tuple[PoolMember, ...]

    def __post_init__(self):
        object.__setattr__(self, "members", tuple(self.members))
        if not self.members:
            raise XltError("the sampling pool is empty", f"write {GRAMMAR}")
        if sum(m.greedy for m in self.members) > 1:
            raise XltError("the pool lists `greedy` more than once",
                           "greedy decoding is deterministic: write `greedy` once")

    def __iter__(self) -> Iterator[PoolMember]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def size(self) -> int:
        """Candidates per prompt: the sum of the members' counts."""
        return sum(m.count for m in self.members)

    def rows(self) -> list[PoolRow]:
        """Every candidate of one prompt, member by member and sample by sample (``size`` rows)."""
        return [PoolRow(i, s, m.temperature) for i, m in enumerate(self.members) for s in range(m.count)]

    @property
    def greedy_row(self) -> int | None:
        """The index of the greedy candidate among :meth:`rows` (MBR's tie-break), ``None`` without one."""
        for i, row in enumerate(self.rows()):
            if row.temperature is None:
                return i
        return None

    def describe(self) -> str:
        """The pool in its grammar plus its size, e.g. ``greedy,0.3x2,0.7x3,1.0x2 (8 candidates)``."""
        n = self.size
        return f"{','.join(m.describe() for m in self.members)} ({n} candidate{'s' if n != 1 else ''})"


def _parse_item(item: str) -> PoolMember:
    item = item.lower()
    if item == "greedy":
        return PoolMember(None, 1)
    if item.startswith("greedy"):
        raise XltError(f"pool item {item!r}: greedy decoding takes no count",
                       "greedy decoding is deterministic: write `greedy` once")
    match = _ITEM.match(item)
    if match is None:
        raise XltError(f"cannot read pool item {item!r}", f"write {GRAMMAR}")
    try:
        temperature = float(match["temp"])
    except ValueError:
        raise XltError(f"cannot read the temperature of pool item {item!r}", f"write {GRAMMAR}") from None
    count_text = match["count"]
    if count_text is None:
        count = 1
    elif re.fullmatch(r"[-+]?[0-9]+", count_text.strip()):
        count = int(count_text)
    else:
        raise XltError(f"cannot read the count of pool item {item!r}", f"write {GRAMMAR}")
    return PoolMember(temperature, count)


def parse_pool(spec: str | Pool) -> Pool:
    """The :class:`Pool` that ``spec`` writes (see the module's grammar); a :class:`Pool` is returned as is."""
    if isinstance(spec, Pool):
        return spec
    if not isinstance(spec, str):
        raise XltError(f"a pool is written as text, not {type(spec).__name__}", f"write {GRAMMAR}")
    items = [s.strip() for s in spec.split(",")]
    if not spec.strip():
        raise XltError("the sampling pool is empty", f"write {GRAMMAR}")
    if any(not s for s in items):
        raise XltError(f"pool {spec!r} has an empty item", f"write {GRAMMAR}")
    return Pool(tuple(_parse_item(s) for s in items))
