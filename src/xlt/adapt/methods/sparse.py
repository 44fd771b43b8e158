"""``sft``: composable sparse fine-tuning (LT-SFT, Ansell et al. 2022) stored as a sparse delta.

LT-SFT in stage 2: a full fine-tuning phase, then the ``k`` body entries that moved most (global top-k of
``|θ_ft − θ₀|``, exactly ``k``, ties broken by parameter name then flat index) are kept, the body is rewound
to ``θ₀`` and retrained with only those entries free. The result is a :class:`SparseDelta`: per parameter,
sorted flat int64 indices and the values ``θ[idx] − θ₀[idx]``, saved as safetensors.

- ``apply`` writes ``θ₀[idx] + v`` and keeps ``θ₀[idx]``, so ``revert`` restores the exact original bits
  (composable-sft subtracts, which is not exact in floating point).
- :func:`compose` adds deltas (language ⊕ task) on the union of their indices; the deltas are summed in a
  canonical order (by content hash), so the result does not depend on the order they are given in.
- :meth:`SparseDelta.dense` gives a dense task vector for the merge engine, :meth:`SparseDelta.from_dense`
  takes one back (top-k).
- Masked training: gradients outside the mask are zeroed by hooks, and :class:`MaskedAdamW` applies the
  decoupled weight decay only inside the mask, so entries outside it do not move at all (plain AdamW would
  shrink them every step).

Deviation from the paper: the embeddings (replaced by vocabulary transfer) are trained densely in stage 1
and stay frozen in stage 2; the sparse delta covers the transformer body. The stage-2 budget is split
between the full phase and the sparse phase (``full_share``), so the total number of steps is the same as
for the other methods.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from xlt.adapt.methods.base import Method, body_parameters, register_adaptation
from xlt.errors import XltError
from xlt.options import option, positive


def _canon(name: str) -> str:
    """Parameter name without wrappers (PEFT / accelerate prefixes), so deltas move between wrapped and plain models."""
    return name.replace("base_model.model.", "").replace("module.", "")


def _named_body(model) -> dict[str, torch.nn.Parameter]:
    return {_canon(n): p for n, p in body_parameters(model).items()}


@dataclass
class SparseDelta:
    indices: dict[str, torch.Tensor]  # name -> sorted unique flat int64 indices
    values: dict[str, torch.Tensor]  # name -> delta values at those indices
    shapes: dict[str, tuple] = field(default_factory=dict)
    base_fingerprint: str | None = None

    @property
    def nnz(self) -> int:
        return sum(int(i.numel()) for i in self.indices.values())

    def _params(self, model) -> dict[str, torch.nn.Parameter]:
        params = _named_body(model)
        for n in self.indices:
            if n not in params:
                raise XltError(f"the sparse delta changes {n}, which the model does not have",
                               "apply it to the architecture it was trained on")
            if self.shapes.get(n) and tuple(params[n].shape) != tuple(self.shapes[n]):
                raise XltError(f"the sparse delta expects {n} of shape {tuple(self.shapes[n])}, the model has "
                               f"{tuple(params[n].shape)}", "apply it to the model it was trained on")
        return params

    @torch.no_grad()
    def apply(self, model) -> dict[str, torch.Tensor]:
        """Add the delta to ``model`` in place; returns the original values, for :meth:`revert`."""
        params = self._params(model)
        saved = {}
        for n, idx in self.indices.items():
            flat = params[n].data.view(-1)
            saved[n] = flat[idx].clone()
            flat[idx] = saved[n] + self.values[n].to(flat.dtype)
        return saved

    @torch.no_grad()
    def revert(self, model, saved: dict[str, torch.Tensor]) -> None:
        """Restore the values :meth:`apply` replaced (bit-identical)."""
        params = self._params(model)
        for n, idx in self.indices.items():
            params[n].data.view(-1)[idx] = saved[n]

    def dense(self) -> dict[str, torch.Tensor]:
        """The delta as dense tensors (a task vector for the merge engine); zeros outside the indices."""
        out = {}
        for n, idx in self.indices.items():
            t = torch.zeros(int(torch.tensor(self.shapes[n]).prod()), dtype=self.values[n].dtype)
            t[idx] = self.values[n]
            out[n] = t.view(self.shapes[n])
        return out

    @classmethod
    def from_dense(cls, deltas: dict[str, torch.Tensor], k: int, base_fingerprint: str | None = None) -> "SparseDelta":
        """The ``k`` largest-magnitude entries of dense deltas (e.g. a merged task vector) as a sparse delta."""
        idx = topk_indices({n: d.abs() for n, d in deltas.items()}, k)
        return cls({n: i for n, i in idx.items()}, {n: deltas[n].reshape(-1)[i].clone() for n, i in idx.items()},
                   {n: tuple(deltas[n].shape) for n in idx}, base_fingerprint)

    def digest(self) -> str:
        h = hashlib.sha256()
        for n in sorted(self.indices):
            h.update(n.encode())
            h.update(self.indices[n].numpy().tobytes())
            h.update(self.values[n].float().numpy().tobytes())
        return h.hexdigest()

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        tensors = {}
        for n in self.indices:
            tensors[f"{n}::indices"] = self.indices[n].contiguous()
            tensors[f"{n}::values"] = self.values[n].contiguous()
        save_file(tensors, str(path), metadata={"format": "xlt-sparse-delta-1",
                                                "shapes": json.dumps({n: list(s) for n, s in self.shapes.items()}),
                                                "base_fingerprint": self.base_fingerprint or ""})

    @classmethod
    def load(cls, path: str | Path) -> "SparseDelta":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != "xlt-sparse-delta-1":
                raise XltError(f"{path} is not an xlt sparse delta", "give a sparse_delta.safetensors written by xlt")
            t = {k: f.get_tensor(k) for k in f.keys()}
        names = sorted({k.rsplit("::", 1)[0] for k in t})
        shapes = {n: tuple(s) for n, s in json.loads(meta["shapes"]).items()}
        return cls({n: t[f"{n}::indices"] for n in names}, {n: t[f"{n}::values"] for n in names}, shapes,
                   meta.get("base_fingerprint") or None)


def compose(deltas: list[SparseDelta]) -> SparseDelta:
    """The sum of sparse deltas on the union of their indices (language ⊕ task); independent of the order given."""
    if not deltas:
        raise XltError("nothing to compose", "give at least one sparse delta")
    fps = {d.base_fingerprint for d in deltas if d.base_fingerprint}
    if len(fps) > 1:
        raise XltError("the sparse deltas were trained on different base models", "compose deltas of the same base model")
    ordered = sorted(deltas, key=lambda d: d.digest())  # canonical summation order
    names = sorted({n for d in ordered for n in d.indices})
    idx, val, shapes = {}, {}, {}
    for n in names:
        parts = [(d.indices[n], d.values[n]) for d in ordered if n in d.indices]
        shape = next(d.shapes[n] for d in ordered if n in d.indices)
        if any(n in d.shapes and tuple(d.shapes[n]) != tuple(shape) for d in ordered):
            raise XltError(f"the deltas disagree on the shape of {n}", "compose deltas of the same architecture")
        all_idx = torch.cat([i for i, _ in parts])
        u, inv = torch.unique(all_idx, sorted=True, return_inverse=True)
        acc = torch.zeros(len(u), dtype=parts[0][1].dtype)
        off = 0
        for i, v in parts:  # one index_add per delta, in canonical order
            acc.index_add_(0, inv[off:off + len(i)], v.to(acc.dtype))
            off += len(i)
        idx[n], val[n], shapes[n] = u, acc, tuple(shape)
    return SparseDelta(idx, val, shapes, next(iter(fps), None))


def topk_indices(scores: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Exactly ``k`` (name, flat index) pairs with the largest scores over all tensors.

    The threshold is the exact k-th largest value (``torch.kthvalue`` on the concatenated scores, one
    float32 copy of the scores); entries above it are all kept, ties at it are taken in (name, index) order.
    """
    total = sum(s.numel() for s in scores.values())
    if not 0 < k <= total:
        raise XltError(f"k = {k} entries asked for, but the selectable parameters have {total:,} entries",
                       f"choose k between 1 and {total:,} (or a density between 0 and 1)")
    names = sorted(scores)
    flat = torch.cat([scores[n].detach().reshape(-1).float() for n in names])
    thr = torch.kthvalue(flat, total - k + 1).values  # the k-th largest
    del flat
    out, need_ties = {}, k - sum(int((scores[n].reshape(-1).float() > thr).sum()) for n in names)
    for n in names:
        s = scores[n].detach().reshape(-1).float()
        above = torch.nonzero(s > thr).view(-1)
        ties = torch.nonzero(s == thr).view(-1)
        take = ties[:max(0, need_ties)]
        need_ties -= len(take)
        sel = torch.sort(torch.cat([above, take])).values
        if len(sel):
            out[n] = sel.to(torch.int64)
    return out


class MaskedAdamW(torch.optim.AdamW):
    """AdamW whose decoupled weight decay acts only inside each parameter's mask (outside: multiplied by exactly 1).

    With gradients zeroed outside the mask, Adam's moments stay exactly 0 there, so the update is exactly 0:
    masked-out entries keep their bits.
    """

    def __init__(self, params, masks: dict[int, torch.Tensor], **kw):
        super().__init__(params, **kw)
        self.masks = masks  # id(param) -> bool mask of its shape

    @torch.no_grad()
    def step(self, closure=None):
        saved = []
        for g in self.param_groups:
            wd = g["weight_decay"]
            if wd:
                for p in g["params"]:
                    m = self.masks.get(id(p))
                    if p.grad is None:
                        continue
                    if m is None:
                        p.mul_(1 - g["lr"] * wd)
                    else:
                        p.mul_(torch.where(m, torch.tensor(1 - g["lr"] * wd, dtype=p.dtype), torch.tensor(1.0, dtype=p.dtype)))
            saved.append(wd)
            g["weight_decay"] = 0.0
        try:
            return super().step(closure)
        finally:
            for g, wd in zip(self.param_groups, saved):
                g["weight_decay"] = wd


class MaskedTraining:
    """Trainer hooks for stage-2 training of the masked entries only (the ``method`` of a :class:`Trainer`)."""

    def __init__(self, model, indices: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter] | None = None):
        params = _named_body(model) if params is None else params
        self.masks: dict[int, torch.Tensor] = {}
        self.params = []
        self.handles = []
        for n, idx in indices.items():
            p = params[n]
            m = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
            m[idx.to(p.device)] = True
            m = m.view(p.shape)
            self.masks[id(p)] = m
            self.params.append(p)
            p.requires_grad_(True)
            self.handles.append(p.register_hook(lambda g, m=m: g * m))

    def stage2_parameters(self, model):
        return self.params

    def make_optimizer(self, groups, **kw):
        return MaskedAdamW(groups, self.masks, **kw)

    def remove(self):
        for h in self.handles:
            h.remove()


def lt_sft(params: dict[str, torch.nn.Parameter], loss_at, k: int, full_steps: int, sparse_steps: int,
           lr: float = 1e-4, dense=(), dense_lr: float | None = None, weight_decay: float = 0.0,
           log=None) -> tuple[SparseDelta, dict]:
    """LT-SFT on any module (an encoder, a cross-encoder): the training loop of :class:`SparseFineTuning` without
    the causal-LM trainer.

    ``params``: the selectable tensors by name (e.g. ``_named_body(bert)``); ``loss_at(step)``: the loss of global
    step ``step`` (the full phase runs steps ``0…full_steps−1``, the sparse phase the next ``sparse_steps``, so each
    sees fresh batches); ``dense``: parameters trained densely in both phases (a new head; learning rate
    ``dense_lr``, default ``lr``). The full phase trains
    everything, the ``k`` entries of ``params`` that moved most are kept (:func:`topk_indices`), ``params`` and
    ``dense`` are rewound to where they started and trained again with only those entries free (hooks +
    :class:`MaskedAdamW`). Returns ``(delta, record)``; ``params`` are left **exactly** as they started (the delta
    is applied when needed), ``dense`` keeps its trained values. Raises if an entry outside the mask moved."""
    import time

    if full_steps < 1 or sparse_steps < 1:
        raise XltError(f"LT-SFT needs a full and a sparse phase (got {full_steps} and {sparse_steps} steps)",
                       "give at least one step to each phase")
    dense = list(dense)
    theta0 = {n: p.detach().clone() for n, p in params.items()}
    dense0 = [p.detach().clone() for p in dense]
    wanted = {id(p): p.requires_grad for p in [*params.values(), *dense]}
    record = {"losses_full": [], "losses_sparse": [], "k": k}
    t0 = time.perf_counter()
    try:
        for p in [*params.values(), *dense]:
            p.requires_grad_(True)

        def groups(body):
            return [{"params": body}] + ([{"params": dense, "lr": dense_lr or lr}] if dense else [])

        def phase(name, opt, steps):
            for step in steps:
                loss = loss_at(step)
                opt.zero_grad()
                loss.backward()
                opt.step()
                record[f"losses_{name}"].append(float(loss.detach()))
                if log:
                    log(name, step, record[f"losses_{name}"][-1])

        phase("full", torch.optim.AdamW(groups(list(params.values())), lr=lr, weight_decay=weight_decay),
              range(full_steps))
        indices = topk_indices({n: (p.detach() - theta0[n]).abs() for n, p in params.items()}, k)
        with torch.no_grad():  # rewind
            for n, p in params.items():
                p.copy_(theta0[n])
            for p, p0 in zip(dense, dense0):
                p.copy_(p0)
        for n, p in params.items():
            p.requires_grad_(n in indices)
        hooks = MaskedTraining(None, indices, params)
        try:
            phase("sparse", hooks.make_optimizer(groups(hooks.params), lr=lr, weight_decay=weight_decay),
                  range(full_steps, full_steps + sparse_steps))
        finally:
            hooks.remove()
        with torch.no_grad():
            for n, p in params.items():  # every entry outside the mask is exactly θ₀ (checked, not assumed)
                outside = (p.detach() != theta0[n]).reshape(-1)
                if n in indices:
                    outside[indices[n]] = False
                if outside.any():
                    raise RuntimeError(f"sparse training moved {int(outside.sum())} entries of {n} outside the mask")
            delta = SparseDelta({n: i for n, i in indices.items()},
                                {n: params[n].detach().reshape(-1)[i] - theta0[n].reshape(-1)[i]
                                 for n, i in indices.items()},
                                {n: tuple(params[n].shape) for n in indices})
            for n, p in params.items():
                p.copy_(theta0[n])
    finally:
        for p in [*params.values(), *dense]:
            p.requires_grad_(wanted[id(p)])
            p.grad = None
    record.update(nnz=delta.nnz, seconds=time.perf_counter() - t0, full_steps=full_steps,
                  sparse_steps=sparse_steps, lr=lr, dense_lr=(dense_lr or lr) if dense else None)
    return delta, record


class _Offset:
    """The batches of ``blocks`` from optimizer step ``offset`` on (so each phase sees fresh data)."""

    def __init__(self, blocks, offset: int):
        self.blocks, self.offset = blocks, offset

    def batch(self, step, *a, **kw):
        return self.blocks.batch(step + self.offset, *a, **kw)


@dataclass
class SparseOptions:
    density: float = option(0.01, "share of the body's entries kept in the sparse delta (ignored when k is given)")
    k: int | None = option(None, "exact number of entries kept [default: density × body entries]", check=positive)
    full_share: float = option(0.5, "share of the stage-2 steps spent in the full phase (the rest: sparse phase)")

    def __post_init__(self):
        if self.k is None and not 0 < self.density <= 1:
            raise XltError(f"density {self.density} is not in (0, 1]",
                           "pass -M density=0.01 (a share of the body's entries) or -M k=N")
        if not 0 < self.full_share < 1:
            raise XltError(f"full_share {self.full_share} is not in (0, 1)",
                           "give the share of stage 2 spent on the full phase, e.g. 0.5")


@register_adaptation("sft", options=SparseOptions)
class SparseFineTuning(Method):
    description = "LT-SFT: full phase, keep the top-k moved body entries, rewind, retrain only those; a sparse delta"

    def __init__(self, config=None):
        super().__init__(config)
        self.delta: SparseDelta | None = None

    def k_for(self, model) -> int:
        n = sum(p.numel() for p in body_parameters(model).values())
        o = self.config
        k = o.k if o.k is not None else max(1, int(round(o.density * n)))
        if not 0 < k <= n:
            raise XltError(f"k = {k} is larger than the {n:,} entries of the model's body",
                           f"choose k between 1 and {n:,} (or a density between 0 and 1)")
        return k

    def stage2_parameters(self, model):
        return None

    def trainable_parameters(self, model) -> int:
        return self.delta.nnz if self.delta is not None else self.k_for(model)

    def train(self, model, blocks, cfg, work: Path, evaluate, show_progress, label, interrupt_at):
        from dataclasses import replace

        from safetensors.torch import load_file, save_file

        from xlt.adapt.train import Trainer, TrainingInterrupted

        k = self.k_for(model)
        s1 = cfg.stage1_steps
        n2 = cfg.steps - s1
        if n2 < 2:
            raise XltError(f"sft needs at least 2 stage-2 steps (a full and a sparse phase); got {n2}",
                           "raise --steps or lower --stage1-steps")
        nf = min(n2 - 1, max(1, int(round(n2 * self.config.full_share))))
        ns = n2 - nf
        work.mkdir(parents=True, exist_ok=True)
        history = {"train": [], "eval": []}

        def phase(tag, m, c, offset, method=None):
            sub = None if interrupt_at is None else (interrupt_at - offset if interrupt_at - offset > 0 else None)
            if sub is not None and sub >= c.steps:
                sub = None
            t = Trainer(m, _Offset(blocks, offset), c, work / tag, eval_fn=evaluate, show_progress=show_progress,
                        label=f"{label} {tag}", method=method)
            h = t.train(interrupt_at=sub)
            for e in h["train"]:
                history["train"].append({**e, "step": e["step"] + offset, "phase": tag})
            for e in h["eval"]:
                if history["eval"] and e["step"] == 0:
                    continue  # the same weights as the previous phase's end (or its rewind point)
                history["eval"].append({**e, "step": e["step"] + offset, "phase": tag})
            return t.accelerator.unwrap_model(t.model)

        def boundary(step):  # an interruption asked for exactly where a phase ends (the next phase resumes)
            if interrupt_at is not None and interrupt_at == step < cfg.steps:
                raise TrainingInterrupted(step, work)

        if s1:  # stage 1: embeddings only (not checkpointed at its end: a resume repeats it, seeded, identically)
            model = phase("stage1", model, replace(cfg, steps=s1, stage1_steps=s1), 0)
            boundary(s1)
        theta0 = {n: p.detach().clone() for n, p in _named_body(model).items()}
        emb0 = {n: p.detach().clone() for n, p in model.named_parameters() if _canon(n) not in theta0}
        mask_path = work / "mask.safetensors"
        if mask_path.is_file():  # resumed after the full phase: its history is kept in mask.json
            indices = load_file(str(mask_path))
            history = json.loads((work / "mask.json").read_text())["history"]
        else:
            full = phase("full", model, replace(cfg, steps=nf, stage1_steps=0), s1)
            moved = {n: (p.detach() - theta0[n]).abs() for n, p in _named_body(full).items()}
            indices = topk_indices(moved, k)
            save_file({n: i.contiguous() for n, i in indices.items()}, str(mask_path))
            (work / "mask.json").write_text(json.dumps({"history": history}))
            boundary(s1 + nf)
        with torch.no_grad():  # rewind: body and embeddings as they were when stage 2 began
            for n, p in model.named_parameters():
                p.copy_(theta0[_canon(n)] if _canon(n) in theta0 else emb0[n])
        hooks = MaskedTraining(model, indices)
        try:
            model = phase("sparse", model, replace(cfg, steps=ns, stage1_steps=0), s1 + nf, hooks)
        finally:
            hooks.remove()
        body = _named_body(model)
        self.delta = SparseDelta({n: i for n, i in indices.items()},
                                 {n: (body[n].detach().reshape(-1)[i] - theta0[n].reshape(-1)[i]) for n, i in indices.items()},
                                 {n: tuple(body[n].shape) for n in indices})
        with torch.no_grad():  # θ₀ + (θ − θ₀) may differ from θ by an ulp: the delta defines the model, as it loads
            for n, i in indices.items():
                body[n].data.view(-1)[i] = theta0[n].reshape(-1)[i] + self.delta.values[n]
        # every entry outside the mask is exactly θ₀ (checked, not assumed)
        for n, p in body.items():
            diff = p.detach() != theta0[n]
            outside = diff.reshape(-1).clone()
            if n in indices:
                outside[indices[n]] = False
            if outside.any():
                raise RuntimeError(f"sparse training moved {int(outside.sum())} entries of {n} outside the mask")
        return model, history

    def save(self, model, folder: Path, base_folder, fp) -> None:
        self.delta.base_fingerprint = fp  # the delta file names its base too (it is usable without the folder)
        super().save(model, folder, base_folder, fp)

    def save_weights(self, model, folder: Path) -> dict:
        self.delta.save(folder / "sparse_delta.safetensors")
        return {"nnz": self.delta.nnz}

    @classmethod
    def load_weights(cls, model, folder: Path, meta: dict):
        SparseDelta.load(folder / "sparse_delta.safetensors").apply(model)
        return model
