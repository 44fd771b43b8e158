"""Execute a plan: statistics passes, then the output written tensor by tensor.

:class:`Executor` runs the statistics passes a method asks for (streaming, see :mod:`xlt.merge.stats`) and
writes the output tensor by tensor, in row chunks for element-wise methods, through a
:class:`~xlt.merge.io.ShardedWriter`; the working set is a few chunks (or one tensor) per input, never a model.
:func:`merge_tensors` applies a method to tensors in memory (tests, other modules).
"""

from __future__ import annotations

import resource
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from xlt import arch
from xlt.errors import XltError
from xlt.merge.io import ShardedWriter, iter_chunks
from xlt.merge.planner import Input, OutTensor, Plan
from xlt.merge.registry import MERGES, Context, unknown_parameter
from xlt.merge.stats import RankSelector
from xlt.options import coerce


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return str(n)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class MergeResult:
    out: Path
    tensors: int
    merged: int
    copied: int
    bytes: int
    seconds: float
    peak_rss: int
    shards: int
    provenance: dict

    def summary(self) -> str:
        return (f"{self.tensors} tensors ({self.merged} merged, {self.copied} copied), {human(self.bytes)} in "
                f"{self.shards} shard(s), {self.seconds:.1f} s, peak memory (RSS) {human(self.peak_rss)} -> {self.out}")


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _progress(total: int, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="tensor", disable=not show, leave=False, dynamic_ncols=True)


class Executor:
    def __init__(self, plan: Plan, chunk_elems: int, show_progress: bool, cache_elems: int | None = None):
        self.plan = plan
        self.chunk = chunk_elems
        self.cache_elems = 6 * chunk_elems if cache_elems is None else cache_elems
        self.show = show_progress
        self.m = plan.method
        self.ctx = Context(seed=plan.config.random_seed)
        self.refine_parallel_elems = 1 << 24  # 16.8 M elements: an argsort needs ~17 bytes per element

    def load(self, inp: Input, a, b, dtype=None) -> torch.Tensor:
        return self.plan.sources[inp.model].rows(inp.name, a, b, dtype or self.plan.compute_dtype)

    def chunks(self, t: OutTensor):
        if self.m.elementwise:
            return list(iter_chunks(t.shape, self.chunk))
        return [(None, None)]

    def chunk_ctx(self, t: OutTensor, a) -> None:
        per_row = 1
        for s in t.shape[1:]:
            per_row *= s
        self.ctx.name = t.name
        self.ctx.shape = t.shape
        self.ctx.offset = (a or 0) * per_row
        self.ctx.is_embedding = arch.is_embedding(t.name, self.plan.arch)

    def values(self, stage, t: OutTensor, a, b):
        self.chunk_ctx(t, a)
        base = self.load(t.base, a, b) if t.base else None
        ins = [self.load(i, a, b) for i in t.inputs]
        return stage.values(base, ins, t.params, self.ctx)

    def run_stage(self, si: int, stage, tensors: list[OutTensor], bar_desc: str, loaded=None) -> None:
        """Two streaming passes over ``tensors`` for stage ``si``; results into ctx.stats[si].

        For one tensor whose values fit in ``cache_elems`` (all models together), pass 1 keeps the values
        so pass 2 does not read and recompute them.
        """
        n_models = len(tensors[0].inputs)
        sels = [RankSelector(nonneg=stage.nonneg) for _ in range(n_models)]
        numel = sum(_numel(t.shape) for t in tensors)
        cache: list | None = [] if len(tensors) == 1 and numel * n_models <= self.cache_elems else None
        if loaded is not None:  # one tensor, already read whole
            self.chunk_ctx(tensors[0], None)
            cache = [stage.values(loaded[0], loaded[1], tensors[0].params, self.ctx)]
        for pass_no in (1, 2):
            with _progress(len(tensors), f"{bar_desc} pass {pass_no}", self.show and len(tensors) > 1) as bar:
                if cache and (pass_no == 2 or loaded is not None):
                    for vals in cache:
                        for i, v in enumerate(vals):
                            sels[i].add(v)
                else:
                    for t in tensors:
                        for a, b in self.chunks(t):
                            vals = self.values(stage, t, a, b)
                            for i, v in enumerate(vals):
                                sels[i].add(v)
                            if cache is not None:
                                cache.append(vals)
                            del vals
                        if len(tensors) > 1:
                            for i in t.inputs + ([t.base] if t.base else []):
                                self.plan.sources[i.model].release(i.name)
                        bar.update(1)
            if pass_no == 1:
                for i, s in enumerate(sels):
                    s.next_pass(stage.ranks(s.total, i, tensors[0].params))
        while len(self.ctx.stats) <= si:
            self.ctx.stats.append(None)
        self.ctx.stats[si] = [s.result() for s in sels]
        return cache

    def refine_stage(self, si: int, stage, t: OutTensor, cache) -> None:
        """``StatStage.refine`` for the models whose selection asks for it (``whole``), on each such model's
        values over the whole tensor: from ``cache`` (pass 1's values) when it holds them, else one more
        streaming pass per model. Models are refined in parallel (up to torch's thread count, one thread each:
        mergekit's argsort is single-threaded) when their values are cached and the tensor has at most
        ``refine_parallel_elems`` elements, so that the concurrent argsorts stay within a few hundred MB."""
        sels = self.ctx.stats[si]
        out = [None] * len(sels)
        while len(self.ctx.refined) <= si:
            self.ctx.refined.append(None)
        self.ctx.refined[si] = out
        if stage.refine is None or stage.whole is None:
            return
        need = [i for i in range(len(sels)) if stage.whole(sels[i], i, t.params)]
        if not need:
            return
        numel = _numel(t.shape)

        def whole(i: int) -> torch.Tensor:
            if cache:
                parts = [c[i].reshape(-1) for c in cache]
                return parts[0] if len(parts) == 1 else torch.cat(parts)
            buf = None
            pos = 0
            for a, b in self.chunks(t):
                self.chunk_ctx(t, a)
                base = self.load(t.base, a, b) if t.base else None
                v = stage.values(base, [self.load(t.inputs[i], a, b)], t.params, self.ctx)[0].reshape(-1)
                if buf is None:
                    buf = torch.empty(numel, dtype=v.dtype)
                buf[pos:pos + v.numel()] = v
                pos += v.numel()
                del base, v
            return buf

        def job(i: int):
            return stage.refine(whole(i), sels[i], i, t.params)

        workers = min(len(need), max(1, torch.get_num_threads()))
        if cache and workers > 1 and numel <= self.refine_parallel_elems:
            with ThreadPoolExecutor(max_workers=workers) as ex:
                results = list(ex.map(job, need))
        else:
            results = [job(i) for i in need]
        for i, r in zip(need, results):
            out[i] = r

    def execute(self, writer: ShardedWriter) -> dict:
        stages = self.m.stats(self.plan.merged[0].params) if (self.m.stats and self.plan.merged) else []
        global_stats = {}
        scopes = {s.scope for s in stages}
        if "global" in scopes:
            for si, st in enumerate(stages):
                if st.scope != "global":
                    raise RuntimeError("a method mixes tensor and global statistics stages")
                if st.refine is not None:
                    raise RuntimeError(f"{self.m.name}: a global statistics stage cannot refine per tensor")
                self.run_stage(si, st, self.plan.merged, f"statistics {si + 1}/{len(stages)}")
            global_stats = {f"stage{si}": [[{"rank": x.rank, "value": x.value, "equal": x.equal, "total": x.total}
                                            for x in model] for model in self.ctx.stats[si]]
                            for si in range(len(stages))}
        with _progress(len(self.plan.tensors), f"merging ({self.m.name})", self.show) as bar:
            for t in self.plan.tensors:
                writer.begin(t.name)
                if t.copy:
                    for a, b in iter_chunks(t.shape, self.chunk):
                        writer.write(self.plan.sources[t.inputs[0].model].rows(t.inputs[0].name, a, b, t.dtype))
                else:
                    chunks = self.chunks(t)
                    tensor_stats = bool(stages) and "global" not in scopes
                    loaded = None
                    n_in = len(t.inputs) + (t.base is not None)
                    if tensor_stats and _numel(t.shape) * n_in <= self.cache_elems:
                        # small enough: read the inputs once for the statistics and the merge
                        chunks = [(None, None)]
                        loaded = (self.load(t.base, None, None) if t.base else None,
                                  [self.load(i, None, None) for i in t.inputs])
                    if tensor_stats:
                        self.ctx.counters = {}
                        self.ctx.refined = []
                        for si, st in enumerate(stages):
                            cache = self.run_stage(si, st, [t], "", loaded=loaded)
                            self.refine_stage(si, st, t, cache)
                            del cache
                    for a, b in chunks:
                        self.chunk_ctx(t, a)
                        if loaded is not None:
                            (base, ins), loaded = loaded, None
                        else:
                            base = self.load(t.base, a, b) if t.base else None
                            ins = [self.load(i, a, b) for i in t.inputs]
                        out = self.m.merge(base, ins, t.params, self.ctx)
                        del base, ins
                        if tuple(out.shape) != (tuple(t.shape) if a is None else (b - a, *t.shape[1:])):
                            raise RuntimeError(f"{self.m.name} returned shape {tuple(out.shape)} for {t.name}")
                        writer.write(out.to(t.dtype))
                        del out
                writer.end()
                for i in t.inputs + ([t.base] if t.base else []):
                    self.plan.sources[i.model].release(i.name)
                bar.update(1)
        return global_stats



def merge_tensors(method: str, base: torch.Tensor | None, tensors: list[torch.Tensor], seed: int = 0,
                  name: str = "tensor", **params) -> torch.Tensor:
    """Merge in-memory tensors with a registered method (statistics over these tensors only).

    ``params``: the method's parameters; per-model ones as lists (one value per tensor) or a scalar for all.
    """
    m = MERGES.get(method)
    for k in params:
        if m.option(k) is None:
            raise unknown_parameter(m, k, "merge_tensors")
    owner = f"merge method {method}"
    p = {}
    for s in m.specs():
        v = params.get(s.name, s.default)
        if s.required and s.name not in params:
            raise XltError(f"{method} needs parameter {s.name}", f"pass {s.name}=... ({s.help})")
        if s.per_model:
            p[s.name] = [coerce(s, x, owner) for x in (v if isinstance(v, list) else [v] * len(tensors))]
        else:
            p[s.name] = coerce(s, v, owner)
    if m.validate is not None:
        bad = m.validate(p)
        if bad:
            raise XltError(bad[0], bad[1])
    ctx = Context(name=name, shape=tuple(tensors[0].shape), seed=seed, is_embedding=arch.is_embedding(name))
    for st in m.stats(p) if m.stats else []:
        vals = st.values(base, tensors, p, ctx)
        res = []
        for i, v in enumerate(vals):
            s = RankSelector(nonneg=st.nonneg)
            s.add(v)
            s.next_pass(st.ranks(s.total, i, p))
            s.add(v)
            res.append(s.result())
        ctx.stats.append(res)
        ctx.refined.append([st.refine(vals[i].reshape(-1), res[i], i, p)
                            if st.refine is not None and st.whole is not None and st.whole(res[i], i, p) else None
                            for i in range(len(vals))])
    return m.merge(base, tensors, p, ctx)
