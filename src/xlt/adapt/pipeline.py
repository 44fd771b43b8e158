"""``xlt adapt``: source model + target-language corpus -> one adapted model per init, evaluated and reported.

Layout of ``out/``::

    run.json              settings and "finished": true once everything is written
    metrics.json          every number of the run (see the report for how each is computed)
    report.html           one self-contained page comparing all inits
    tokenizer/            the target tokenizer
    <init>/               an HF model folder per init (+ metrics.json, transfer_mapping.npz, transfer_summary.json)
    .work/                resume state: cached token ids, per-init checkpoints (removed when finished)

A run that was interrupted is resumed when started again with the same settings (without ``overwrite``);
a finished run is refused unless ``overwrite=True``, which always starts over.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from xlt.adapt.data import PackedBlocks, pack_stream
from xlt.adapt.train import TrainConfig
from xlt.corpora import open_corpus
from xlt.errors import XltError
from xlt.eval import (bits_per_byte, boundary_token_id, greedy_samples, prompts_from, start_token_ids, tokenization_table,
                      truncate_texts)
from xlt.languages import resolve
from xlt.models import check_model_folder, load_model, load_tokenizer, resolve_source
from xlt.util import atomic_dir, portable, write_json_atomic
from xlt.vocab import TransferContext, build_mapping, parse_inits, train_tokenizer, transfer_model
from xlt.vocab.mapping import TransferMapping
from xlt.vocab.compare import leave_one_out
from xlt.vocab.tokenizer import min_vocab_size

log = logging.getLogger("xlt.adapt")


@dataclass
class AdaptSettings:
    """Everything that determines a run's result (saved in ``run.json``; a resume must match it).

    Build it with :meth:`create` (the keyword arguments of :func:`run` and the flags of ``xlt adapt``, with the
    same defaults): names, option keys and values are checked there, before any work."""

    source: str = "smollm2"
    target: str = "sw"
    corpus: str = "bible"
    inits: list[str] = field(default_factory=lambda: ["overlap", "mean", "random"])
    source_lang: str = "en"
    vocab_size: int = 8000
    eval_max_bytes: int = 20000
    eval_window: int = 512
    samples: int = 3
    init_options: dict = field(default_factory=dict)
    loo_tokens: int = 200
    romanize: bool = False
    methods: list[str] = field(default_factory=lambda: ["full"])
    method_options: dict = field(default_factory=dict)
    multihead: bool = False
    precision: str = "auto"  # as asked; train.precision holds what it resolved to on this machine
    eval_precision: str = "fp32"  # resolved: fp32 or bf16
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def create(cls, source: str = "smollm2", target: str = "sw", corpus: str = "bible",
               init: str | list[str] = "overlap,mean,random", steps: int = 300, stage1_steps: int | None = None,
               vocab_size: int = 8000, batch_size: int = 8, grad_accum: int = 1, seq_len: int = 256, lr: float = 2e-4,
               embedding_lr: float = 1e-3, eval_every: int | None = None, eval_max_bytes: int = 20000,
               save_every: int | None = None, seed: int = 0, source_lang: str = "en", samples: int = 3,
               init_options: dict | None = None, loo_tokens: int = 200, romanize: bool = False,
               method: str | list[str] = "full", method_options: dict | None = None,
               multihead: bool = False, precision: str = "auto", eval_precision: str = "fp32",
               compile: str = "no") -> "AdaptSettings":
        """Checked settings: ``stage1_steps`` defaults to a third of ``steps``, ``eval_every`` to a tenth,
        ``save_every`` to ``eval_every``; init and method names, their ``-O``/``-M`` options and the language codes
        are validated (one clear error for a typo). ``precision`` (training) and ``eval_precision`` (bits/byte) are
        ``auto``, ``fp32`` or ``bf16`` (:mod:`xlt.precision`): ``auto`` is resolved here, for this machine.
        ``compile`` (``no``, ``yes``, ``try``) trains through ``torch.compile`` (:class:`xlt.adapt.train.TrainConfig`)."""
        from xlt.precision import resolve_precision

        inits = parse_inits(init)
        from xlt.adapt.methods import parse_methods

        methods = parse_methods(method)
        eval_every = eval_every or max(1, steps // 10)
        cfg = TrainConfig(steps=steps, stage1_steps=steps // 3 if stage1_steps is None else stage1_steps,
                          batch_size=batch_size, grad_accum=grad_accum, seq_len=seq_len, lr=lr,
                          embedding_lr=embedding_lr, eval_every=eval_every, save_every=save_every or eval_every,
                          seed=seed, precision=resolve_precision(precision).used, compile=str(compile))
        settings = cls(source=str(source), target=resolve(target).code, corpus=str(corpus), inits=inits,
                       source_lang=resolve(source_lang).code, vocab_size=vocab_size, eval_max_bytes=eval_max_bytes,
                       samples=samples,
                       init_options={k: (str(v) if isinstance(v, Path) else v) for k, v in (init_options or {}).items()},
                       loo_tokens=loo_tokens, romanize=romanize, methods=methods,
                       method_options=dict(method_options or {}), multihead=multihead, precision=precision,
                       eval_precision=resolve_precision(eval_precision, what="--eval-precision").used, train=cfg)
        settings.check()
        return settings

    def check(self) -> None:
        """Validate names, options and the training configuration (raises :class:`~xlt.errors.XltError`)."""
        self.train.validate()
        self.init_configs()
        self.method_configs()
        if self.multihead and self.methods != ["full"]:
            raise XltError("the multi-head option keeps a second full model head; it works with --method full only",
                           "drop --multihead, or use --method full")

    def init_configs(self) -> dict[str, Any]:
        """Each init's options dataclass, built from the shared ``-O`` pairs (a key no init takes is refused)."""
        from xlt.vocab.registry import INITS

        return INITS.options_for(self.inits, self.init_options, "-O")

    def method_configs(self) -> dict[str, Any]:
        """Each method's options dataclass, built from the shared ``-M`` pairs (a key no method takes is refused)."""
        from xlt.adapt.methods import ADAPTATIONS

        return ADAPTATIONS.options_for(self.methods, self.method_options, "-M")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["train"] = asdict(self.train)
        return d


@dataclass
class RunResult:
    out: Path
    metrics: dict
    report: Path


@dataclass
class RunContext:
    """What every (init, method) model of a run shares: settings, folders, tokenizers, data and flags."""

    settings: AdaptSettings
    out: Path
    work: Path
    src_folder: Path
    src_tok: Any
    tgt_tok: Any
    corpus: Any
    src_lang: Any
    tgt: Any
    blocks: PackedBlocks
    dev_texts: list[str]
    test_texts: list[str]
    state: Any  # accelerate's PartialState
    allow_pickle: bool = False
    show_progress: bool = True
    interrupt_at: int | None = None

    @property
    def cfg(self) -> TrainConfig:
        return self.settings.train


def _check_out(out: Path, settings: AdaptSettings, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise XltError(f"--out {out} is a file, not a folder", "give the path of a new or empty folder for the run")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise XltError(f"--out {out} cannot be created: {parent} is a file", "give a folder path whose parents are folders")
    run_json = out / "run.json"
    if run_json.is_file():
        state = json.loads(run_json.read_text())
        if state.get("finished"):
            if not overwrite:
                raise XltError(f"{out} already holds a finished run",
                               "pass --overwrite to replace it, or choose another --out")
            shutil.rmtree(out)
            return
        if overwrite:  # start over, even with the same settings: results of an older version are not reused
            shutil.rmtree(out)
            return
        if state.get("settings") != portable(settings.as_dict(), out):
            raise XltError(f"{out} holds an unfinished run with other settings",
                           "rerun with the same settings to resume it, pass --overwrite to start over, or choose another --out")
    elif out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
        if not overwrite:
            raise XltError(f"{out} exists and is not an xlt run folder", "choose an empty or new --out, or pass --overwrite")
        shutil.rmtree(out)


def run(settings: AdaptSettings | None = None, out: str | Path = "runs/adapt", *, overwrite: bool = False,
        allow_pickle: bool = False, show_progress: bool = True, interrupt_at: int | None = None,
        analyze: bool | dict = False, **kwargs) -> RunResult:
    """Adapt ``settings.source`` to ``settings.target`` with each init and method; what ``xlt adapt`` runs.

    ``settings``: an :class:`AdaptSettings` (from :meth:`AdaptSettings.create`), or leave it out and give the same
    keyword arguments ``create`` takes (``source``, ``target``, ``corpus``, ``init``, ``steps``, ``method``,
    ``init_options``, ``method_options``, ...). ``interrupt_at`` stops after that many steps of an init, as an
    interruption would. ``init_options`` go to the init methods (``xlt inits`` lists each one's options);
    ``loo_tokens`` overlapping tokens are held out for the leave-one-out comparison (0 skips it); ``romanize`` trains
    and evaluates on uroman-romanised target text; held-out documents are chosen by their native-script text and
    every bits/byte is also given per native-script byte, beside the source model reading the native script.
    ``method`` (comma-separated) picks what stage 2 trains (``full``, ``lora``, ``sft``, ...; ``xlt methods``), with
    ``method_options``; each (init, method) pair gives one model, in ``<init>/`` for ``full`` and
    ``<init>+<method>/`` otherwise. Progress is logged to the ``xlt`` logger (the CLI shows it). ``analyze``
    (True, or keyword arguments for :func:`xlt.analyze.analyze`) analyses the source model and every adapted model
    on verse-aligned source- and target-language texts at the end, into ``out/analysis/``, linked from the report.
    """
    if settings is None:
        settings = AdaptSettings.create(**kwargs)
    elif kwargs:
        raise TypeError(f"give either settings or keyword arguments, not both ({', '.join(kwargs)})")
    else:
        settings.check()
    t_start = time.time()
    out = Path(out)
    cfg = settings.train
    tgt, src_lang = resolve(settings.target), resolve(settings.source_lang)
    # -- everything that can be checked cheaply, before any heavy work -------------------------
    if out.exists() and not out.is_dir():
        raise XltError(f"--out {out} is a file, not a folder", "give the path of a new or empty folder for the run")
    corp = open_corpus(settings.corpus, tgt.code)
    corp.language(tgt)
    native = corp
    if settings.romanize:
        from xlt.data import RomanizedCorpus

        corp = RomanizedCorpus(corp, tgt)
    train_texts = corp.texts(tgt, "train")
    (dev_texts, native_dev), (test_texts, native_test) = (
        _eval_texts(corp, native if settings.romanize else None, tgt, split, settings.eval_max_bytes)
        for split in ("dev", "test"))
    if not train_texts:
        raise XltError(f"the {corp.name} corpus has no training text for {tgt.code}", "give a larger corpus")
    if not dev_texts or not test_texts:
        raise XltError(f"the {corp.name} corpus has no held-out (dev/test) text for {tgt.code}",
                       "give more documents so the hash split can hold some out")
    if analyze:  # the analysis needs texts aligned across the two languages: refuse now, not after training
        from xlt.analyze import aligned_texts

        try:
            aligned_texts(native, [src_lang.code, tgt.code], src_lang.code, 4, 0)
        except XltError as e:
            raise XltError(f"--analyze needs {src_lang.code} and {tgt.code} texts aligned in the corpus: {e.problem}",
                           "use a parallel corpus (bible, or jsonl:PATH with ids shared across languages), or "
                           "leave out --analyze") from None
    src_folder = resolve_source(settings.source)
    check_model_folder(src_folder, allow_pickle=allow_pickle)
    src_tok = load_tokenizer(src_folder)
    if settings.vocab_size < min_vocab_size(src_tok):
        train_tokenizer(src_tok, ["x"], settings.vocab_size)  # raises the precise error
    import torch
    from accelerate import PartialState

    # under `accelerate launch` (or torchrun), only the main process writes files; on CPUs the processes talk gloo
    state = PartialState(cpu=not torch.cuda.is_available())
    from xlt.adapt.train import check_parallelism

    check_parallelism(state.distributed_type)  # before any work: a sharded launch would save wrong weights
    main = state.is_main_process
    work = out / ".work"
    if main:
        _check_out(out, settings, overwrite)
        work.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "run.json", {"finished": False, "settings": portable(settings.as_dict(), out)})
    state.wait_for_everyone()

    # -- target tokenizer (reused on resume) ------------------------------------------------------
    tok_dir = out / "tokenizer"
    if main and not (tok_dir / "tokenizer.json").is_file():
        log.info("training a %s-token target tokenizer on %s %s documents", f"{settings.vocab_size:,}",
                 f"{len(train_texts):,}", tgt.name)
        with atomic_dir(tok_dir, overwrite=True) as tmp:
            train_tokenizer(src_tok, train_texts, settings.vocab_size).save_pretrained(tmp)
    state.wait_for_everyone()
    tgt_tok = load_tokenizer(tok_dir)

    # -- the no-transfer reference (cached) and the tokenization table ----------------------------
    ref_path = work / "reference.json"
    window = settings.eval_window
    bpb = partial(bits_per_byte, precision=settings.eval_precision)
    if main and not ref_path.is_file():
        log.info("evaluating the source model with its own tokenizer (no-transfer reference)")
        src_model = load_model(src_folder, allow_pickle=allow_pickle)
        write_json_atomic(ref_path, {
            "dev": bpb(src_model, src_tok, dev_texts, window, split="dev").as_dict(),
            "test": bpb(src_model, src_tok, test_texts, window, split="test").as_dict(),
            "samples": greedy_samples(src_model, src_tok, prompts_from(test_texts, settings.samples)),
            **({"native_script_dev": bpb(src_model, src_tok, native_dev, window, split="dev").as_dict(),
                "native_script_test": bpb(src_model, src_tok, native_test, window, split="test").as_dict()}
               if settings.romanize else {}),
        })
        del src_model
    ids_path = work / "train_ids.npy"
    if main and not ids_path.is_file():
        np.save(ids_path, pack_stream(tgt_tok, train_texts, boundary_token_id(tgt_tok)))
    state.wait_for_everyone()
    reference = json.loads(ref_path.read_text())
    stream = np.load(ids_path)
    ctx = RunContext(settings, out, work, src_folder, src_tok, tgt_tok, corp, src_lang, tgt,
                     PackedBlocks(stream, cfg.seq_len, cfg.seed, start_token_ids(tgt_tok)), dev_texts, test_texts,
                     state, allow_pickle, show_progress, interrupt_at)

    # -- one model per (init, method) -------------------------------------------------------------
    results = {}
    for name in settings.inits:
        for meth in settings.methods:
            results[run_name(name, meth)] = _run_init(ctx, name, meth)

    report = out / "report.html"
    metrics = {}
    if main:
        tokenization = _tokenization(corp, tgt, src_lang, src_tok, tgt_tok)
        metrics = _metrics(settings, corp, tgt, reference, tokenization, results, len(stream), time.time() - t_start)
        metrics["source_model"] = describe_source(settings.source, src_folder)
        metrics["precision"] = precision_record(settings)
        metrics = portable(metrics, out)  # paths relative to the run folder, packaged models by name
        write_json_atomic(out / "metrics.json", metrics)
        for key in results:  # the cards again, now with the no-transfer reference and the tokenizer premium
            write_adapt_card(out / key, key, metrics["inits"][key], metrics, src_folder)
        from xlt.report import write_report

        report = write_report(out, metrics)
        shutil.rmtree(work, ignore_errors=True)
        write_json_atomic(out / "run.json", {"finished": True, "settings": portable(settings.as_dict(), out)})
        if analyze:
            from xlt.analyze import analyze as run_analysis

            kw = dict(analyze) if isinstance(analyze, dict) else {}
            kw.setdefault("n", 100)
            kw.setdefault("heldout", 20)
            run_analysis([out], f"{src_lang.code},{tgt.code}", kw.pop("analyses", None), out / "analysis",
                         corpus=native, ref=src_lang.code, allow_pickle=allow_pickle, overwrite=True,
                         show_progress=show_progress, **kw)
        log.info("report: %s", report.resolve())
    state.wait_for_everyone()
    return RunResult(out, metrics, report)


def _eval_texts(corp, native, tgt, split: str, max_bytes: int) -> tuple[list[str], list[str] | None]:
    """Held-out texts of ``split`` (whole documents up to ``max_bytes``). For a romanised corpus (``native`` given),
    the documents are chosen by their native-script text and returned in both scripts, same documents in the same
    order, so bits per native-script byte compare with a run on the native script."""
    if native is None:
        return truncate_texts(corp.texts(tgt, split), max_bytes), None
    roman = {d.key: d.text for d in corp.documents(tgt, split)}
    docs = [d for d in native.documents(tgt, split) if d.key in roman]
    kept = truncate_texts([d.text for d in docs], max_bytes)
    return [roman[d.key] for d in docs[:len(kept)]], kept


def _tokenization(corp, tgt, src_lang, src_tok, tgt_tok) -> dict:
    dev = corp.documents(tgt, "dev")
    toks = {"source": src_tok, "target": tgt_tok}
    try:
        par = corp.parallel(tgt, src_lang, "dev")
    except XltError:
        par = []
    if par:
        table = tokenization_table(toks, [p[1] for p in par], src_tok, [p[2] for p in par])
        table[f"source on {src_lang.code}"] = tokenization_table({"s": src_tok}, [p[2] for p in par])["s"]
        return {"split": "dev", "parallel_with": src_lang.code, "documents": len(par), "table": table}
    return {"split": "dev", "parallel_with": None, "documents": len(dev),
            "table": tokenization_table(toks, [d.text for d in dev])}


def run_name(init: str, method: str) -> str:
    """Folder and summary key of one (init, method) pair: the init's name for ``full``, ``<init>+<method>`` otherwise."""
    return init if method == "full" else f"{init}+{method}"


def precision_record(settings: AdaptSettings) -> dict:
    """What training and evaluation ran in, and why (``auto`` resolved on this machine)."""
    from xlt.precision import bf16_support, device_type

    ok, why = bf16_support()
    return {"requested": settings.precision, "train": settings.train.precision, "eval": settings.eval_precision,
            "device": device_type(), "bf16_supported": ok, "reason": why,
            "note": "bf16 = autocast of the forward pass to bfloat16; weights and optimizer state stay fp32"}


def describe_source(name: str, folder: Path) -> dict:
    """The source model as the report names it: for a prepared package model, what it really is (e.g. SmolLM2-135M-
    Instruct de-quantised from a Q4_1 GGUF), from ``xlt_prepared.json``."""
    info = {"name": str(name), "folder": str(Path(folder).resolve())}
    prepared = Path(folder) / "xlt_prepared.json"
    if prepared.is_file():
        info["description"] = json.loads(prepared.read_text()).get("description", "")
    return info


def mapping_signature(mapping, ctx: RunContext) -> str:
    """How a transfer mapping was made: method, options, tokenizers, corpus, languages, seed."""
    from xlt.signature import Signature, json_hash, tokenizer_hash

    return str(Signature("mapping", init=mapping.method, options=json_hash(mapping.options),
                         src_tok=tokenizer_hash(ctx.src_tok), tgt_tok=tokenizer_hash(ctx.tgt_tok),
                         corpus=portable(ctx.settings.corpus, ctx.out), langs=f"{ctx.src_lang.code}-{ctx.tgt.code}",
                         seed=ctx.cfg.seed))


def _run_init(ctx: RunContext, name: str, meth: str = "full") -> dict:
    from xlt.adapt.methods import ADAPTATIONS, fingerprint

    settings, cfg, state, tgt_tok = ctx.settings, ctx.cfg, ctx.state, ctx.tgt_tok
    key = run_name(name, meth)
    final = ctx.out / key
    if (final / "metrics.json").is_file():
        if state.is_main_process:
            log.info("[%s] already finished, reusing %s", key, final)
        return json.loads((final / "metrics.json").read_text())
    t0 = time.time()
    model = load_model(ctx.src_folder, allow_pickle=ctx.allow_pickle)
    method = ADAPTATIONS.get(meth)(settings.method_configs()[meth])
    init_options = settings.init_configs()[name]
    fp = None if method.whole_model else fingerprint(model)
    tctx = TransferContext(ctx.src_tok, tgt_tok, seed=cfg.seed, corpus=ctx.corpus, source_lang=ctx.src_lang.code,
                           target_lang=ctx.tgt.code)
    t_loaded = time.time()
    source_head = model.get_output_embeddings().weight.detach().clone() if settings.multihead else None
    n_loo = settings.loo_tokens
    # the mapping (fastText, alignments, ...) is computed once, by the main process; the others read it
    shared = ctx.work / key / "shared_mapping.npz"
    loo, t_loo = None, 0.0
    if state.is_main_process:
        loo = leave_one_out(name, tctx, model.get_input_embeddings().weight, n_loo, init_options) if n_loo else None
        t_loo = time.time() - t_loaded
        mapping = build_mapping(name, tctx, init_options)
        mapping.signature = mapping_signature(mapping, ctx)
        if state.num_processes > 1:
            shared.parent.mkdir(parents=True, exist_ok=True)
            mapping.save(shared)
    state.wait_for_everyone()
    if not state.is_main_process:
        mapping = TransferMapping.load(shared)
    transfer_model(model, tgt_tok, mapping, seed=cfg.seed)
    t_map = time.time() - t_loaded - t_loo
    if state.is_main_process:
        log.info("[%s] embeddings initialised in %.1fs: %s", key, t_map, mapping.summary()["rows_by_evidence"])

    def evaluate(m, step):
        r = bits_per_byte(m, tgt_tok, ctx.dev_texts, settings.eval_window, split="dev", precision=settings.eval_precision)
        return {"bits_per_byte": r.bits_per_byte, "signature": r.signature}

    n_stage1 = sum(p.numel() for p in _emb(model))
    model = method.prepare(model)
    t1 = time.time()
    model, history = method.train(model, ctx.blocks, cfg, ctx.work / key, evaluate, ctx.show_progress, key,
                                  ctx.interrupt_at)
    t_train = time.time() - t1
    model.eval()
    if not state.is_main_process:
        state.wait_for_everyone()
        return {}
    test = bits_per_byte(model, tgt_tok, ctx.test_texts, settings.eval_window, split="test",
                         precision=settings.eval_precision).as_dict()
    samples = greedy_samples(model, tgt_tok, prompts_from(ctx.test_texts, settings.samples))
    from xlt.options import as_dict

    res = {
        "init": name,
        "method": meth,
        "method_options": as_dict(method.config),
        "transfer": mapping.summary(),
        "leave_one_out": loo,
        "history": history,
        "bpb_step0": history["eval"][0]["bits_per_byte"],
        "bpb_final": history["eval"][-1]["bits_per_byte"],
        "test": test,
        "samples": samples,
        "seconds": {"init": t_map, "leave_one_out": t_loo, "train": t_train, "total": time.time() - t0},
        "trainable_parameters": {"stage1": n_stage1, "stage2": method.trainable_parameters(model)},
        "model_parameters": sum(p.numel() for p in model.parameters()),  # shared tensors counted once
    }
    with atomic_dir(final, overwrite=True) as tmp:
        method.save(model, tmp, settings.source, fp)  # the source as given: a prepared name or a folder
        tgt_tok.save_pretrained(tmp)
        mapping.save(tmp / "transfer_mapping.npz")
        res = portable(res, ctx.out)  # paths relative to the run folder, packaged models by name
        write_json_atomic(tmp / "transfer_summary.json", portable(mapping.summary(), ctx.out))
        write_json_atomic(tmp / "metrics.json", res)
        if source_head is not None:  # Hydra-style: keep the source head and tokenizer beside the new one
            from xlt.vocab.multihead import save_extra_head

            save_extra_head(tmp, ctx.src_lang.code, source_head, ctx.src_tok)
        # the model card, after save (it replaces PEFT's template); written again at the run's end with the
        # no-transfer reference and the tokenizer premium
        known = {"settings": portable(settings.as_dict(), ctx.out), "corpus": ctx.corpus.describe(),
                 "target_language": {"code": ctx.tgt.code, "name": ctx.tgt.name},
                 "source_model": portable(describe_source(settings.source, ctx.src_folder), ctx.out)}
        write_adapt_card(tmp, key, res, known, ctx.src_folder)
    shutil.rmtree(ctx.work / key, ignore_errors=True)
    log.info("[%s] done in %.0fs: %s parameters trained in stage 2, dev bits/byte %.3f, test %.3f", key,
             res["seconds"]["total"], f"{res['trainable_parameters']['stage2']:,}", res["bpb_final"],
             test["bits_per_byte"])
    state.wait_for_everyone()
    return res


def write_adapt_card(folder: Path, key: str, model_metrics: dict, run_metrics: dict, src_folder: Path) -> None:
    """Write ``folder/README.md``, the model card of model ``key`` (:mod:`xlt.report.card`)."""
    import inspect

    from xlt.report.card import adapt_card_info, folder_format, render_card, source_license, write_card_text

    lic, note = source_license(str(run_metrics["settings"]["source"]), src_folder)
    defaults = {k: p.default for k, p in inspect.signature(AdaptSettings.create).parameters.items()}
    info = adapt_card_info(run_metrics, key, model_metrics, folder_format(folder), lic, note, defaults)
    write_card_text(folder, render_card(info))


def _emb(model):
    from xlt import arch

    return arch.embedding_parameters(model)


def steps_to_reach(history_eval: list[dict], target: float) -> float | None:
    """First step (linearly interpolated between evaluations) where bits/byte ≤ ``target``; None if never."""
    prev = None
    for e in history_eval:
        if e["bits_per_byte"] <= target:
            if prev is None or prev["bits_per_byte"] == e["bits_per_byte"]:
                return float(e["step"])
            frac = (prev["bits_per_byte"] - target) / (prev["bits_per_byte"] - e["bits_per_byte"])
            return prev["step"] + frac * (e["step"] - prev["step"])
        prev = e
    return None


def _metrics(settings, corp, tgt, reference, tokenization, results, train_tokens, seconds) -> dict:
    summary = {}
    rnd = results.get("random")
    goal = rnd["bpb_final"] if rnd else None
    for name, r in results.items():
        shares = r["transfer"]["share_by_evidence"]
        row = {"bpb_step0": r["bpb_step0"], "bpb_final": r["bpb_final"], "test_bpb_final": r["test"]["bits_per_byte"],
               "loo_cosine": (r.get("leave_one_out") or {}).get("mean_cosine"),
               "overlap_share": shares.get("overlap", 0.0) + shares.get("special", 0.0),
               "fallback_share": shares.get("mean", 0.0) + shares.get("random", 0.0),
               "seconds": r["seconds"]["total"], "init": r["init"], "method": r.get("method", "full"),
               "trainable_parameters_stage2": r.get("trainable_parameters", {}).get("stage2"),
               "model_parameters": r.get("model_parameters")}
        if goal is not None:
            reached = steps_to_reach(r["history"]["eval"], goal)
            row["steps_to_random_final"] = reached
            # reached at step 0: better than random's end result before any training (no finite ratio)
            row["steps_saved_ratio"] = (settings.train.steps / reached) if reached else None
            row["reached_at_step0"] = reached == 0
        if "native_script_dev" in reference:  # romanised run: the same NLL per byte of the native-script documents
            dev_f = reference["dev"]["bytes"] / reference["native_script_dev"]["bytes"]
            test_f = reference["test"]["bytes"] / reference["native_script_test"]["bytes"]
            row.update({"bpb_step0_per_native_byte": row["bpb_step0"] * dev_f, "bpb_final_per_native_byte": row["bpb_final"] * dev_f,
                        "test_bpb_final_per_native_byte": row["test_bpb_final"] * test_f})
        summary[name] = row
    for rank, name in enumerate(sorted(summary, key=lambda n: summary[n]["bpb_final"]), 1):
        summary[name]["rank"] = rank
    comparisons = {}
    if "overlap" in results and "random" in results:
        d = results["random"]["bpb_step0"] - results["overlap"]["bpb_step0"]
        comparisons["overlap_vs_random_step0"] = {
            "bits_per_byte_lower_by": d, "relative": d / results["random"]["bpb_step0"]}
    return {
        "xlt_version": __import__("xlt").__version__,
        "settings": settings.as_dict(),
        "corpus": corp.describe(),
        "target_language": {"code": tgt.code, "name": tgt.name},
        "train_tokens": train_tokens,
        "reference": reference,
        "tokenization": tokenization,
        "summary": summary,
        "comparisons": comparisons,
        "inits": results,
        "wall_seconds": seconds,
        "definitions": {
            "bits_per_byte": "sum of token negative log-likelihoods (nats) / ln 2 / UTF-8 bytes of the held-out text; "
                             "documents joined with newlines, one boundary token first, scored in consecutive windows of "
                             f"{settings.eval_window} tokens, each conditioned on the previous token (and on the tokenizer's "
                             "start token, e.g. Gemma's <bos>, where it starts every text with one)",
            "signature": "how a number was computed, as key:value fields (sacrebleu style): bpb|window|join (how documents "
                         "are joined)|boundary (the token before the first document)|start (the token every window starts with, "
                         "if any)|bytes (the denominator)|split|precision (only where the forward pass ran in bf16)|tok "
                         "(SHA-256 of the tokenizer JSON, 12 hex digits)|model (SHA-256 of the model's tensors)|xlt "
                         "version; a transfer mapping's: init|options hash|source and target tokenizer hashes|corpus|"
                         "languages|seed",
            "bpb_step0": "dev bits/byte right after embedding initialisation, before any training",
            "bpb_final": "dev bits/byte after the last training step",
            "test_bpb_final": "test bits/byte after the last training step",
            "steps_to_random_final": "first training step (linear interpolation between evaluations) at which an init's dev "
                                     "bits/byte is at or below random init's final dev bits/byte",
            "steps_saved_ratio": "total steps / steps_to_random_final (>1: the init reaches random's end result sooner; "
                                 "none when reached at step 0, i.e. before any training)",
            "fertility": "tokens per whitespace-separated word (no special tokens)",
            "per_native_byte": "romanised runs: the same negative log-likelihood (bits) of the romanised held-out documents "
                               "divided by the UTF-8 bytes of the same documents in the native script, so it compares with "
                               "bits/byte of a model reading the native script (the source model's row, or a run without "
                               "--romanize on the same corpus and --eval-max-bytes)",
            "trainable_parameters_stage2": "parameters the method trains in stage 2 (full: every parameter; lora: the "
                                           "LoRA factors; sft: the k selected entries); stage 1 trains the embeddings "
                                           "for every method",
            "model_parameters": "distinct parameters of the adapted model (tensors shared across positions, as in the "
                                "recursive model, counted once; adapters included)",
            "rank": "order of dev bits/byte after the last training step (1 = lowest)",
            "loo_cosine": "leave-one-out reconstruction: overlapping tokens held out from copying (a seeded sample), rebuilt "
                          "from the method's other evidence; mean cosine to their true source rows",
            "overlap_share": "share of target rows copied from an identical source token (overlap or special)",
            "fallback_share": "share of target rows with no evidence (mean or random fill)",
            "premium": "tokens the tokenizer needs for the target text / tokens the source tokenizer needs for the parallel "
                       "source-language text",
        },
    }
