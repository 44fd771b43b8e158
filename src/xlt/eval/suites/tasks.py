"""``tasks``: lm-evaluation-harness tasks on every model, offline (:mod:`xlt.eval.harness`).

``tasks=bible`` (the default) builds xlt's own multiple-choice tasks from the installed Bibles for every evaluated
language (:mod:`xlt.eval.bible_tasks`: ``xlt_bible_next_<lang>``, a verse then its next verse among 4, and
``xlt_bible_cloze_<lang>``, a verse's first half then its second half among 4; the same verse keys and answer
positions in every language). Other names are lm-eval tasks, from lm-eval itself when their data is on this machine or
from YAML files in ``task_dir``; each task is checked before any model loads. A task's language comes from its name
(``xnli_sw`` → swh), or from ``task_langs`` for names that carry none (``hellaswag:eng``): English-only tasks are then
scored as English, so ``forgetting`` sees them. Its metric is named ``<task without the language>/<metric>``
(``bible_next/acc``), or ``<task>/<metric>`` for a task whose language ``task_langs`` gives.
"""

from __future__ import annotations

from dataclasses import dataclass

from xlt.errors import XltError
from xlt.eval.registry import register_suite
from xlt.eval.scores import LangScores, Score
from xlt.options import option, positive


@dataclass
class TasksOptions:
    tasks: str = option("bible", "comma-separated lm-eval tasks; 'bible' = xlt's Bible next-verse and cloze tasks in "
                                 "every evaluated language")
    task_dir: str = option("", "a folder of lm-eval task YAML files (local data) to add to lm-eval's own")
    task_n: int = option(40, "items per Bible task", check=positive)
    task_limit: int = option(0, "score only the first N items of each task (0: all)")
    task_batch: int = option(8, "lm-eval batch size", check=positive)
    task_langs: str = option("", "TASK:LANG pairs for tasks whose name carries no language, e.g. "
                                 "'hellaswag:eng,arc_easy:eng' (else such tasks are labelled 'und')")


def task_langs(opts: TasksOptions) -> dict[str, str]:
    """``task_langs`` parsed: task name -> ISO 639-3 code (one error naming a malformed pair or unknown language)."""
    from xlt.languages import resolve

    out = {}
    for pair in (x.strip() for x in opts.task_langs.split(",") if x.strip()):
        task, sep, lang = pair.partition(":")
        if not sep or not task.strip() or not lang.strip():
            raise XltError(f"task_langs entry {pair!r} is not TASK:LANG", "write e.g. -O task_langs=hellaswag:eng")
        out[task.strip()] = resolve(lang.strip()).code
    return out


def _task_list(ctx, opts: TasksOptions) -> tuple[list[str], list[str]]:
    """The task names and include folders (the Bible tasks built into the cache first)."""
    names, paths = [], []
    for t in (x.strip() for x in opts.tasks.split(",") if x.strip()):
        if t == "bible":
            from xlt.corpora.bible import BibleCorpus
            from xlt.eval.bible_tasks import build_bible_tasks

            corpus = ctx.corpus if isinstance(ctx.corpus, BibleCorpus) else None
            built = build_bible_tasks([lang.code for lang in ctx.langs], n=opts.task_n, seed=ctx.seed,
                                      corpus=corpus)
            names += built.tasks
            paths.append(str(built.path))
        else:
            names.append(t)
    if opts.task_dir:
        paths.append(opts.task_dir)
    if not names:
        raise XltError("no lm-eval task given", "pass -O tasks=bible or -O tasks=NAME,NAME")
    return names, paths


def prepare(ctx, opts: TasksOptions) -> None:
    from xlt.eval.harness import check_tasks

    from xlt.eval.harness import task_leaves

    names, paths = _task_list(ctx, opts)
    tm = check_tasks(names, paths or None)  # before any model loads
    unknown = sorted(set(task_langs(opts)) - set(task_leaves(names, tm)))
    if unknown:
        raise XltError(f"task_langs names tasks that are not evaluated: {', '.join(unknown)}",
                       f"name tasks among: {', '.join(task_leaves(names, tm))}")
    ctx.inputs["tasks"] = (names, paths)


def metric_name(task: str, lang: str | None, metric: str) -> str:
    from xlt.eval.harness import _SCRIPT

    base = task
    if lang:
        parts = task.split("_")
        if len(parts) > 2 and _SCRIPT.match(parts[-1]):  # a script tag: belebele_swh_Latn
            parts = parts[:-1]
        base = "_".join(parts[:-1]) if len(parts) > 1 else task
    if base.startswith("xlt_"):
        base = base[4:]
    return f"{base}/{metric}"


def per_model(ctx, m, opts: TasksOptions) -> LangScores:
    from xlt.eval.harness import run_tasks

    names, paths = ctx.inputs.get("tasks") or _task_list(ctx, opts)
    given = task_langs(opts)
    model, tok = m.load()
    out = LangScores()
    for s in run_tasks(model, tok, names, include_path=paths or None, limit=opts.task_limit or None,
                       batch_size=opts.task_batch, device=ctx.device, seed=ctx.seed,
                       show_progress=ctx.show_progress):
        lang = given.get(s.task) or s.language
        metric = metric_name(s.task, None if s.task in given else s.language, s.metric)
        out.add(Score(m.name, lang or "und", metric, s.value, n=s.n,
                      stderr=s.stderr, higher_is_better=s.higher_is_better, suite="tasks", signature=s.signature))
    return out


register_suite("tasks", "lm-eval tasks offline: xlt's Bible next-verse and cloze tasks in every language, or any "
               "lm-eval task whose data is local", TasksOptions, prepare=prepare, per_model=per_model,
               example={"options": {"task_n": 8}})
