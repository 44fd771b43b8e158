"""Continued training of a transferred model: stage 1 embeddings only, stage 2 the whole model.

Runs through ``accelerate`` (``accelerate launch`` spreads it over several GPUs unchanged). ``precision`` is fp32 or
bf16 autocast with fp32 master weights and optimizer state (:mod:`xlt.precision` resolves ``auto``). AdamW
with linear warmup and cosine decay per stage, gradient accumulation, packed sequences, evaluation every N steps,
checkpoints, and exact resume: a run interrupted and resumed produces the same loss curve and weights as one that
was not (checkpoints hold the weights, the optimizer and scheduler states and every random generator's state: torch
CPU and CUDA, numpy, Python).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from xlt.adapt.data import PackedBlocks
from xlt.precision import autocast
from xlt.errors import XltError


@dataclass
class TrainConfig:
    steps: int = 300  # optimizer steps in all (stage 1 + stage 2)
    stage1_steps: int = 100  # embeddings-only steps at the start
    batch_size: int = 8  # sequences per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step
    seq_len: int = 256
    lr: float = 2e-4  # stage 2 (whole model) peak learning rate
    embedding_lr: float = 1e-3  # stage 1 (embeddings) peak learning rate
    warmup: float = 0.1  # share of each stage spent warming up
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    eval_every: int = 50
    save_every: int = 50
    seed: int = 0
    precision: str = "fp32"  # "fp32" or "bf16" (autocast; weights and optimizer state stay fp32)
    compile: str = "no"  # "no", "yes" (torch.compile; an error if it cannot) or "try" (eager where it cannot)

    def validate(self) -> None:
        if self.steps < 1:
            raise XltError(f"--steps must be at least 1 (got {self.steps})", "pass a positive number of steps")
        if not 0 <= self.stage1_steps <= self.steps:
            raise XltError(f"--stage1-steps {self.stage1_steps} is not between 0 and --steps {self.steps}",
                           "pick the number of embedding-only steps within the total")
        for name in ("batch_size", "grad_accum", "seq_len", "eval_every", "save_every"):
            if getattr(self, name) < 1:
                raise XltError(f"--{name.replace('_', '-')} must be at least 1", "pass a positive value")
        if self.compile not in ("no", "yes", "try"):
            raise XltError(f"--compile {self.compile!r} is not no, yes or try",
                           "no: eager; yes: torch.compile, an error if it cannot run; try: fall back to eager")
        if self.precision not in ("fp32", "bf16"):
            raise XltError(f"training precision {self.precision!r} is not fp32 or bf16",
                           "resolve 'auto' with xlt.precision.resolve_precision first")


#: accelerate's sharded modes, which xlt's checkpoints do not handle yet
SHARDED = ("FSDP", "DEEPSPEED", "MEGATRON_LM")


def check_parallelism(distributed_type) -> None:
    """Refuse the sharded modes of ``accelerate launch`` (FSDP, DeepSpeed, Megatron-LM): xlt's checkpoints and saved
    models gather the weights with ``unwrap_model``, which holds a shard, not the model, under those modes, so a run
    would save wrong weights. DDP (and one process) are supported."""
    name = getattr(distributed_type, "value", str(distributed_type)).upper()
    if name in SHARDED:
        raise XltError(f"xlt adapt does not support accelerate's {name} mode yet: its checkpoints and saved models "
                       "are written from unwrapped, unsharded parameters",
                       "launch with DDP (accelerate launch --config_file examples/accelerate/ddp.yaml ...) or one "
                       "process")


class _RedoStep(Exception):
    """Internal: compute this step again (the compiled backward failed and training fell back to eager)."""


class TrainingInterrupted(Exception):
    """Raised after a checkpoint was saved because training was interrupted (Ctrl-C or ``interrupt_at``)."""

    def __init__(self, step: int, checkpoint: Path):
        self.step, self.checkpoint = step, checkpoint
        super().__init__(f"training interrupted at step {step}; checkpoint saved in {checkpoint}")


def embedding_parameters(model) -> list[torch.nn.Parameter]:
    """What stage 1 trains: the input embeddings and an untied head (:func:`xlt.arch.embedding_parameters`)."""
    from xlt import arch

    return arch.embedding_parameters(model)


def rng_state() -> dict:
    """Every random generator a training step may draw from: torch's CPU (and each CUDA device's), numpy's global
    and Python's ``random`` — as tensors, lists and numbers, so ``torch.load(weights_only=True)`` reads it back."""
    import random

    import numpy as np

    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {"cpu": torch.get_rng_state(),
             "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
             "python": [py_state[0], list(py_state[1]), py_state[2]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved (an older checkpoint may hold only ``cpu``)."""
    import random

    import numpy as np

    torch.set_rng_state(state["cpu"])
    if "numpy" in state:
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _schedule(stage_steps: int, warmup: float) -> Callable[[int], float]:
    w = max(1, int(round(stage_steps * warmup))) if stage_steps > 1 else 0

    def f(i: int) -> float:
        if i < w:
            return (i + 1) / (w + 1)
        rest = max(1, stage_steps - w)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (i - w) / rest)))

    return f


class Trainer:
    """Train ``model`` on ``blocks`` according to ``cfg``; checkpoints live in ``ckpt_dir``."""

    def __init__(self, model, blocks: PackedBlocks, cfg: TrainConfig, ckpt_dir: str | Path,
                 eval_fn: Callable[[object, int], dict] | None = None, show_progress: bool = True,
                 label: str = "train", method=None):
        from accelerate import Accelerator

        cfg.validate()
        self.cfg = cfg
        self.blocks = blocks
        self.ckpt_dir = Path(ckpt_dir)
        self.eval_fn = eval_fn
        self.show_progress = show_progress
        self.label = label
        # optional: an object with stage2_parameters(model) -> trainable params of stage 2 (None: all),
        # make_optimizer(groups, **adamw_kwargs) and after_step(model); see xlt.adapt.methods
        self.method = method
        cuda = torch.cuda.is_available()
        # mixed precision is our own autocast around the forward pass (accelerate's would also wrap the forward of the
        # model handed back, so evaluation would run in bf16 too)
        self.accelerator = Accelerator(mixed_precision="no", cpu=not cuda)
        check_parallelism(self.accelerator.distributed_type)
        self.model = model
        self.history: dict[str, list] = {"train": [], "eval": []}
        self.step = 0
        self.opt = None
        self.sched = None
        self._stage = None
        self._forward = model
        self._compiled = False

    # -- stages ---------------------------------------------------------------------------------
    def _stage_of(self, step: int) -> int:
        return 1 if step < self.cfg.stage1_steps else 2

    def _setup_stage(self, stage: int) -> None:
        acc = self.accelerator
        model = acc.unwrap_model(self.model)
        emb = embedding_parameters(model)
        emb_ids = {id(p) for p in emb}
        chosen = self.method.stage2_parameters(model) if stage == 2 and self.method is not None else None
        if chosen is not None:
            emb_ids = {id(p) for p in chosen}
        for p in model.parameters():
            p.requires_grad_((stage == 2 and chosen is None) or id(p) in emb_ids)
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        lr = self.cfg.embedding_lr if stage == 1 else self.cfg.lr
        groups = [{"params": decay, "weight_decay": self.cfg.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        make = getattr(self.method, "make_optimizer", None) if stage == 2 else None
        # bf16 runs use the fused AdamW kernel (measured: 0.13 s instead of 0.24 s per step for SmolLM2 on 2 cores); fp32
        # keeps the for-each kernel, whose results fp32 runs have always had (the two differ in the last bits)
        fused = {"fused": True} if make is None and self.cfg.precision == "bf16" else {}
        opt = (make or torch.optim.AdamW)(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, **fused)
        n = self.cfg.stage1_steps if stage == 1 else self.cfg.steps - self.cfg.stage1_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(n, self.cfg.warmup))
        acc.free_memory()
        # the scheduler stays ours: accelerate's would advance it once per process at every step, so N processes
        # would run the schedule N times too fast (the per-process batch is fixed; the global batch grows with N)
        self.model, self.opt = acc.prepare(model, opt)
        self.sched = sched
        self._stage = stage
        self._forward = self.model
        if self.cfg.compile != "no":
            # the compiled wrapper shares the model's parameters; checkpoints and evaluation use the model itself
            self._forward = torch.compile(self.model)
            self._compiled = False

    # -- checkpoints ----------------------------------------------------------------------------
    def latest_checkpoint(self) -> Path | None:
        ckpts = sorted(self.ckpt_dir.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
        done = [c for c in ckpts if (c / "trainer.json").is_file()]
        return done[-1] if done else None

    def save_checkpoint(self) -> Path:
        from safetensors.torch import save_model

        acc = self.accelerator
        acc.wait_for_everyone()
        path = self.ckpt_dir / f"step-{self.step:07d}"
        if acc.is_main_process:
            tmp = self.ckpt_dir / f".tmp-step-{self.step:07d}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_model(acc.unwrap_model(self.model), str(tmp / "model.safetensors"))
            torch.save({"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                        "rng": rng_state()}, tmp / "optimizer.pt")
            (tmp / "trainer.json").write_text(json.dumps(
                {"step": self.step, "stage": self._stage, "config": asdict(self.cfg), "history": self.history,
                 "processes": acc.num_processes}))
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
            for old in self.ckpt_dir.glob("step-*"):
                if old != path:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return path

    def load_checkpoint(self, path: Path) -> None:
        from safetensors.torch import load_model

        meta = json.loads((path / "trainer.json").read_text())
        saved = TrainConfig(**meta["config"])
        if asdict(saved) != asdict(self.cfg):
            diff = {k: (v, getattr(self.cfg, k)) for k, v in asdict(saved).items() if getattr(self.cfg, k) != v}
            raise XltError(f"checkpoint {path} was made with other training settings: {diff}",
                           "resume with the same settings, or start over with --overwrite")
        n = meta.get("processes", 1)
        if n != self.accelerator.num_processes:
            raise XltError(f"checkpoint {path} was made by {n} process(es), this run has "
                           f"{self.accelerator.num_processes}: the data each process reads depends on their number",
                           f"resume with {n} process(es) (accelerate launch --num_processes {n}), or start over with "
                           "--overwrite")
        self.step = meta["step"]
        self.history = meta["history"]
        self._setup_stage(self._stage_of(self.step) if self.step < self.cfg.steps else 2)
        load_model(self.accelerator.unwrap_model(self.model), str(path / "model.safetensors"))
        state = torch.load(path / "optimizer.pt", weights_only=True)
        if meta["stage"] == self._stage:
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"] if "rng" in state else {"cpu": state["cpu_rng"]})

    def _step_forward(self, batch):
        """The training loss of ``batch``, through ``torch.compile`` when asked: its first call compiles (a failure
        is one clear error under ``compile="yes"``, a warning and the eager model under ``"try"``)."""
        if self._forward is self.model or self._compiled:
            return self._forward(input_ids=batch, labels=batch).loss
        try:
            loss = self._forward(input_ids=batch, labels=batch).loss
        except Exception as e:  # inductor raises many kinds: no C compiler, unsupported op, ...
            reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            if self.cfg.compile == "yes":
                raise XltError(f"torch.compile cannot compile this model here ({reason})",
                               "pass --compile try to fall back to eager, or --compile no") from None
            import logging

            logging.getLogger("xlt").warning("torch.compile failed (%s); training eagerly (--compile try)", reason)
            self._forward = self.model
            return self.model(input_ids=batch, labels=batch).loss
        self._compiled = True
        return loss

    def _compiled_backward(self, loss) -> None:
        """The first backward pass through the compiled model, where the backward graph compiles: a failure is handled
        as in :meth:`_step_forward` (under ``try`` the step's gradient is computed again by the eager model)."""
        try:
            self.accelerator.backward(loss)
        except XltError:
            raise
        except Exception as e:
            reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            if self.cfg.compile == "yes":
                raise XltError(f"torch.compile cannot compile this model's backward pass here ({reason})",
                               "pass --compile try to fall back to eager, or --compile no") from None
            import logging

            logging.getLogger("xlt").warning("torch.compile failed in the backward pass (%s); training eagerly "
                                             "(--compile try)", reason)
            self._forward = self.model
            self.opt.zero_grad(set_to_none=True)
            raise _RedoStep() from None

    # -- the loop -------------------------------------------------------------------------------
    def _evaluate(self) -> None:
        if self.eval_fn is None or not self.accelerator.is_main_process:
            return
        if self.history["eval"] and self.history["eval"][-1]["step"] == self.step:
            return
        res = self.eval_fn(self.accelerator.unwrap_model(self.model), self.step)
        self.history["eval"].append({"step": self.step, **res})

    def train(self, interrupt_at: int | None = None) -> dict:
        """Train to ``cfg.steps``, resuming from the latest checkpoint if there is one.

        ``interrupt_at`` stops (as Ctrl-C would) after that step, with a checkpoint: for tests and
        time-boxed jobs. Returns the history: per-step train loss and the evaluations.
        """
        from tqdm.auto import tqdm

        cfg, acc = self.cfg, self.accelerator
        ckpt = self.latest_checkpoint()
        if ckpt is not None:
            self.load_checkpoint(ckpt)
        else:
            # every generator a step may draw from (dropout, methods' own draws) starts from the seed, so two runs
            # with one seed are the same run; a resume restores their saved states instead
            from accelerate.utils import set_seed

            set_seed(cfg.seed)
            self._setup_stage(self._stage_of(0))
            self._evaluate()
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.label, disable=not self.show_progress or not acc.is_local_main_process,
                   dynamic_ncols=True)
        try:
            while self.step < cfg.steps:
                stage = self._stage_of(self.step)
                if stage != self._stage:
                    self._setup_stage(stage)
                t0 = time.perf_counter()
                self.model.train()
                total = torch.zeros((), device=acc.device)
                try:
                    for micro in range(cfg.grad_accum):
                        batch = self.blocks.batch(self.step, micro, cfg.grad_accum, cfg.batch_size,
                                                  acc.process_index, acc.num_processes).to(acc.device)
                        sync = nullcontext() if micro == cfg.grad_accum - 1 else acc.no_sync(self.model)
                        with sync:
                            first_compiled = self._forward is not self.model and not self._compiled
                            with autocast(cfg.precision, acc.device.type):
                                loss = self._step_forward(batch) / cfg.grad_accum
                            if first_compiled and self._compiled:  # the backward graph compiles on its first call
                                self._compiled_backward(loss)
                            else:
                                acc.backward(loss)
                        total += loss.detach()
                except _RedoStep:  # the compiled backward failed under --compile try: this step again, eagerly
                    continue
                params = [p for p in self.model.parameters() if p.requires_grad]
                if cfg.max_grad_norm:
                    acc.clip_grad_norm_(params, cfg.max_grad_norm)
                lr = self.opt.param_groups[0]["lr"]
                self.opt.step()
                if self.method is not None and hasattr(self.method, "after_step"):
                    self.method.after_step(acc.unwrap_model(self.model))
                self.sched.step()
                self.opt.zero_grad(set_to_none=True)
                loss_val = acc.reduce(total, "mean").item()
                self.step += 1
                dt = time.perf_counter() - t0
                tokens = cfg.batch_size * cfg.grad_accum * cfg.seq_len * acc.num_processes
                self.history["train"].append({"step": self.step, "loss": loss_val, "lr": lr, "stage": stage,
                                              "tokens_per_s": tokens / dt})
                bar.update(1)
                bar.set_postfix(stage=stage, loss=f"{loss_val:.3f}", tok_s=f"{tokens / dt:.0f}")
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    self._evaluate()
                if self.step % cfg.save_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
                if interrupt_at is not None and self.step >= interrupt_at and self.step < cfg.steps:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            bar.close()
            path = self.save_checkpoint()
            raise TrainingInterrupted(self.step, path) from None
        bar.close()
        return self.history
