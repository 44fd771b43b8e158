"""The lm-eval bridge: run lm-evaluation-harness tasks on a model offline and read back one score per metric.

:func:`check_tasks` runs before any model loads: every task must be known to lm-eval (its own tasks, or YAML files
in ``include_path``) and its data must be on this machine (local files, a local folder, or a Hugging Face dataset
already in the local cache), because evaluation runs with ``HF_HUB_OFFLINE=1`` and ``HF_DATASETS_OFFLINE=1``.
:func:`score_choices` is an independent multiple-choice scorer (lm-eval's ``acc`` definition), used as an oracle.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

from xlt.errors import XltError

#: ``dataset_path`` values that name a ``datasets`` file builder (their data come from ``data_files``)
FILE_BUILDERS = frozenset({"json", "csv", "parquet", "arrow", "text", "pandas"})
_SCRIPT = re.compile(r"^[A-Z][a-z]{3}$")  # an ISO 15924 script tag (belebele_swh_Latn)
_HOW = ("give it as a task YAML (output_type, doc_to_text/choice/target; local data with dataset_path: json and "
        "dataset_kwargs: {data_files: {test: FILE}}) in a folder passed as include_path (--task-dir)")


@dataclass(frozen=True)
class TaskScore:
    """One metric of one lm-eval task: value, standard error (None where lm-eval gives none), items and direction."""

    task: str
    metric: str
    value: float
    stderr: float | None
    n: int
    higher_is_better: bool
    language: str | None
    signature: str

    def as_dict(self) -> dict:
        return asdict(self)


def task_language(task: str) -> str | None:
    """The ISO 639-3 code in a task name: the last ``_`` part (after dropping a script tag such as ``Latn``), when
    :func:`xlt.languages.resolve` knows it (``xlt_bible_next_swh`` -> swh, ``xnli_sw`` -> swh); else None."""
    from xlt.languages import resolve

    parts = task.split("_")
    if len(parts) > 2 and _SCRIPT.match(parts[-1]):
        parts = parts[:-1]
    if len(parts) < 2 or not re.fullmatch(r"[A-Za-z]{2,3}", parts[-1]):
        return None
    try:
        return resolve(parts[-1]).code
    except XltError:
        return None


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Hugging Face hub and datasets offline for the duration (environment and the already-imported constants)."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    old_env = {k: os.environ.get(k) for k in names}
    patched = []
    for mod, attrs in (("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
                       ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))):
        try:
            m = __import__(mod, fromlist=["_"])
        except ImportError:
            continue
        for a in attrs:
            if hasattr(m, a):
                patched.append((m, a, getattr(m, a)))
                setattr(m, a, True)
    os.environ.update({k: "1" for k in names})
    try:
        yield
    finally:
        for m, a, v in patched:
            setattr(m, a, v)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _need_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise XltError("evaluation with lm-eval needs the 'lm-eval' package, which is not installed",
                       "pip install -e .[eval]   (lm-eval==0.4.13)") from None


def _paths(include_path) -> list[str]:
    if include_path is None:
        return []
    items = include_path if isinstance(include_path, (list, tuple)) else [include_path]
    out = []
    for p in items:
        if not Path(p).is_dir():
            raise XltError(f"task folder {p} does not exist", "give a folder of lm-eval task YAML files")
        out.append(str(p))
    return out


def _leaves(name: str, index: dict, seen: set) -> list[str]:
    """The tasks a name stands for (a task itself; a group's or a tag's members, recursively)."""
    from lm_eval.tasks._index import Kind

    if name in seen:
        return []
    seen.add(name)
    e = index[name]
    if e.kind in (Kind.TASK, Kind.PY_TASK):
        return [name]
    members = sorted(e.tags) if e.kind == Kind.TAG else []
    if e.kind == Kind.GROUP:
        for t in (e.cfg or {}).get("task", []):
            members.append(t if isinstance(t, str) else t.get("task") or t.get("group"))
    out = []
    for m in members:
        if isinstance(m, str) and m in index:
            out += _leaves(m, index, seen)
    return out


def _data_problem(name: str, cfg: dict) -> str | None:
    """Why the data of task ``name`` cannot be read offline, or None when they can (or cannot be checked)."""
    path = cfg.get("dataset_path")
    kwargs = dict(cfg.get("dataset_kwargs") or {})
    if path is None or cfg.get("custom_dataset") is not None:
        return None  # a Python task or a custom loader: lm-eval reads its data itself
    if path in FILE_BUILDERS:
        files = kwargs.get("data_files")
        if not files:
            return f"task {name} reads {path} files but names none (dataset_kwargs.data_files)"
        flat = files.values() if isinstance(files, dict) else [files]
        for f in flat:
            for one in (f if isinstance(f, list) else [f]):
                if not glob.glob(str(one)):
                    return f"task {name} reads the data file {one}, which does not exist"
        return None
    if Path(str(path)).expanduser().is_dir():
        return None
    import datasets
    from packaging.version import parse

    if parse(datasets.__version__) >= parse("4.0.0"):
        kwargs.pop("trust_remote_code", None)
    try:
        with offline():
            datasets.load_dataset_builder(path, cfg.get("dataset_name"), **kwargs)
    except Exception:
        sub = f" ({cfg['dataset_name']})" if cfg.get("dataset_name") else ""
        return (f"task {name} reads the Hugging Face dataset {path}{sub}, which is not in the local cache "
                f"(evaluation runs offline)")
    return None


def check_tasks(tasks: Sequence[str], include_path=None):
    """Check that lm-eval knows every task and that their data are local; return the ``TaskManager`` it built.

    An unknown task or one whose data are not on this machine raises one :class:`XltError` naming all of them and
    how to give them. When every name is in ``include_path``, lm-eval's own tasks are not indexed (faster)."""
    _need_lm_eval()
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._index import TaskIndex

    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = list(dict.fromkeys(tasks))
    if not tasks:
        raise XltError("no task given", "name one or more lm-eval tasks, e.g. xlt_bible_next_eng or xnli_sw")
    paths = _paths(include_path)
    own = TaskIndex.build([Path(p) for p in paths]) if paths else {}
    defaults = not all(t in own for t in tasks)
    tm = TaskManager(include_path=paths or None, include_defaults=defaults)
    index = tm.task_index
    problems = []
    unknown = [t for t in tasks if t not in index]
    for t in unknown:
        close = difflib.get_close_matches(t, list(index), n=3)
        problems.append(f"lm-eval has no task {t!r}" + (f" (close: {', '.join(close)})" if close else ""))
    seen: set = set()
    for t in tasks:
        if t in index:
            for leaf in _leaves(t, index, seen):
                p = _data_problem(leaf, index[leaf].cfg or {})
                if p:
                    problems.append(p)
    if problems:
        where = f" (task folders: {', '.join(paths)})" if paths else ""
        raise XltError("; ".join(problems) + where,
                       f"{_HOW}; xlt's Bible tasks are built by xlt.eval.bible_tasks.build_bible_tasks; a Hugging "
                       "Face dataset can also be downloaded once into the local cache where there is a network")
    return tm


def task_leaves(tasks: Sequence[str], tm) -> list[str]:
    """The single tasks that ``tasks`` (names or groups, as checked by :func:`check_tasks`) expand to."""
    seen: set = set()
    out: list[str] = []
    for t in dict.fromkeys([tasks] if isinstance(tasks, str) else tasks):
        out += [leaf for leaf in _leaves(t, tm.task_index, seen) if leaf not in out]
    return out


def _load(model, tokenizer):
    from transformers import PreTrainedModel

    get_base = getattr(model, "get_base_model", None)
    if callable(get_base) and not isinstance(model, PreTrainedModel):  # a PEFT model: its base carries the adapters
        model = get_base()
    if isinstance(model, PreTrainedModel):
        if tokenizer is None:
            raise XltError("an in-memory model was given without its tokenizer", "pass tokenizer=...")
        return model, tokenizer
    if isinstance(model, (str, os.PathLike)):
        from xlt.models import load_source, load_tokenizer

        m, tok, folder = load_source(model)
        return m, tokenizer if tokenizer is not None else load_tokenizer(folder)
    raise XltError(f"cannot evaluate a {type(model).__name__}",
                   "give a transformers causal LM, a model folder or a packaged model name")


def _number(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def scores_from_results(results: dict, limit: int | float | None = None, extra: dict | None = None) -> list[TaskScore]:
    """One :class:`TaskScore` per task and metric of ``simple_evaluate``'s result (tasks only, not groups)."""
    from importlib.metadata import version

    from xlt.signature import Signature

    out = []
    res, hib = results["results"], results.get("higher_is_better", {})
    for task in sorted(results.get("n-samples", {})):
        n = int(results["n-samples"][task]["effective"])
        meta = (results.get("configs", {}).get(task) or {}).get("metadata") or {}
        sig = str(Signature("lm-eval", task=task, version=results.get("versions", {}).get(task),
                            fewshot=results.get("n-shot", {}).get(task), limit=limit if limit is not None else "none",
                            data=meta.get("xlt_build"), **(extra or {}), lm_eval=version("lm-eval")))
        for k, v in res.get(task, {}).items():
            if "," not in k or "_stderr," in k or _number(v) is None:
                continue
            metric, filt = k.split(",", 1)
            se = _number(res[task].get(f"{metric}_stderr,{filt}"))
            out.append(TaskScore(task=task, metric=metric if filt == "none" else f"{metric},{filt}", value=float(v),
                                 stderr=se, n=n, higher_is_better=bool(hib.get(task, {}).get(metric, True)),
                                 language=task_language(task), signature=sig))
    return out


def _quiet(cls):
    """``cls`` (lm-eval's HFLM) with its request-level progress bars turned off."""

    class Quiet(cls):
        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood(requests, disable_tqdm=True)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood_rolling(requests, disable_tqdm=True)

        def generate_until(self, requests, disable_tqdm: bool = False):
            return super().generate_until(requests, disable_tqdm=True)

    return Quiet


def run_tasks(model, tokenizer, tasks: Sequence[str], include_path=None, limit: int | float | None = None,
              batch_size: int = 8, device: str = "cpu", seed: int = 0, num_fewshot: int | None = None,
              samples_out: dict | None = None, show_progress: bool = True) -> list[TaskScore]:
    """Run lm-eval ``tasks`` on ``model`` offline and return every task's metrics.

    ``model`` is a transformers causal LM (with ``tokenizer``; it is moved to ``device``), a model folder or a
    packaged model name (loaded after the tasks are checked). ``limit`` is lm-eval's (first items of each task).
    ``samples_out``, when given, is filled with lm-eval's logged samples per task; ``show_progress=False`` silences
    lm-eval's per-request progress bars."""
    tasks = [tasks] if isinstance(tasks, str) else list(dict.fromkeys(tasks))
    tm = check_tasks(tasks, include_path)
    model, tokenizer = _load(model, tokenizer)
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from xlt.signature import model_hash, tokenizer_hash

    if str(model.device) != str(device):
        model.to(device)
    model.eval()
    with offline():
        lm = (HFLM if show_progress else _quiet(HFLM))(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                                                        device=device)
        results = lm_eval.simple_evaluate(
            model=lm, tasks=tasks, task_manager=tm, limit=limit, num_fewshot=num_fewshot,
            log_samples=samples_out is not None, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
            fewshot_random_seed=seed)
    if results is None:
        raise XltError("lm-eval returned no results", "run on a single process (rank 0 returns the results)")
    if samples_out is not None:
        samples_out.update(results.get("samples", {}))
    return scores_from_results(results, limit, {"model": model_hash(model), "tok": tokenizer_hash(tokenizer)})


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split of a (context, continuation) pair into tokens: trailing context spaces move to the
    continuation, the whole text is encoded and the context's tokens are cut off its front."""
    from xlt.eval.bpb import document_tokens, prefix_token_id

    if not context:
        cont = tokenizer.encode(continuation, add_special_tokens=False)
        p = prefix_token_id(tokenizer)
        return ([p], cont) if p != cont[0] else (cont[:1], cont[1:])
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole, ctx = document_tokens(tokenizer, context + continuation), document_tokens(tokenizer, context)
    return ctx, whole[len(ctx):]


def choice_logprobs(model, tokenizer, context: str, choices: Sequence[str], delimiter: str = " ") -> list[float]:
    """Sum of the log-probabilities of each choice's tokens after ``context`` (and ``delimiter``), one sequence at a
    time, cut from the left to the model's context length as lm-eval does."""
    import torch

    from xlt.eval.bpb import max_length

    max_len = max_length(model, tokenizer)
    device = next(model.parameters()).device
    out = []
    for c in choices:
        ctx, cont = _encode_pair(tokenizer, context, f"{delimiter}{c}")
        ids = (ctx + cont)[-(max_len + 1):][:-1]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0].float()
        logp = torch.log_softmax(logits[-len(cont):], dim=-1)
        out.append(float(logp.gather(1, torch.tensor(cont, device=device)[:, None]).sum()))
    return out


def score_choices(model, tokenizer, items: Sequence[dict], delimiter: str = " ") -> list[int]:
    """The predicted choice of each item (``{"context", "choices"}``): the argmax of :func:`choice_logprobs`.

    lm-eval's ``acc`` of an item is 1 exactly when this equals the item's gold index."""
    import numpy as np

    was_training = model.training
    model.eval()
    try:
        return [int(np.argmax(choice_logprobs(model, tokenizer, it["context"], it["choices"], delimiter)))
                for it in items]
    finally:
        model.train(was_training)
