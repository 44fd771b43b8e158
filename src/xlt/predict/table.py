"""One transfer-table format: (source, target, task) → score, what ``xlt predict`` learns to rank sources from.

A :class:`TransferRow` is one transfer result: a model whose *source* language is ``source`` was scored on
*target* language ``target`` on ``task`` with ``metric`` (``score``). Both languages are canonical ISO 639-3 codes
(:func:`xlt.languages.resolve`, so ``sw``, ``swa`` and ``swh`` are one language). ``direction`` says which way the
metric is better (``higher`` or ``lower``); metrics this module knows (:data:`KNOWN_DIRECTIONS`: bits/byte,
perplexity, loss, error rates are lower-is-better; accuracy, F1, chrF, BLEU higher-is-better) get it
automatically, any other metric must state it. ``n_target`` is the number of target-language training examples
(``None`` when unknown, 0 for zero-shot); ``provenance`` says where the row came from (a file, a run folder's file,
a name), never an absolute path of this machine.

A :class:`TransferTable` holds the rows and refuses, with one :class:`~xlt.errors.XltError` each:

- a NaN or infinite score, an unknown language code, a metric of unknown direction given none (or a direction
  that contradicts a known metric's);
- two metrics, or two directions, within one task (scores of one task must be comparable);
- two rows of the same (source, target, task) that disagree on the score or on ``n_target`` (identical repeats,
  e.g. the same run read twice, are kept once, with the first provenance);
- for fitting a ranker (:meth:`TransferTable.check_rankable`): a task with fewer than 2 targets, or a target with
  fewer than 2 sources.

:meth:`TransferTable.oriented` turns scores so that higher is always better (``-score`` for ``lower``), which is
what a ranker sorts by. :meth:`TransferTable.sha256` hashes the canonical content (every field but
``provenance``, rows sorted), so it does not depend on row order or on where the rows were read from.

Readers (:meth:`TransferTable.read`, which dispatches on what the path is):

- a CSV file with the columns :data:`COLUMNS` (``source, target, task, metric, score`` required; ``direction``,
  ``n_target`` and ``provenance`` optional; other columns are ignored). A row without provenance gets
  ``FILE:LINE``.
- an ``xlt adapt`` run folder (``run.json``): source = the run's ``source_lang``, target = its ``target``, metric
  ``bits_per_byte`` (lower), score = the final dev bits/byte (``bpb_final``) of each (init, method) model, read
  from ``<key>/metrics.json``. Each model is its own task, ``lm:<key>`` (``lm:overlap``, ``lm:random``,
  ``lm:overlap+lora``): different inits of one run are different ways to transfer, not different sources, so they
  are compared across runs (sources), never with each other. ``n_target`` = the run's ``train_tokens`` (tokens of
  the target-language training split under the run's target tokenizer, from the run's ``metrics.json``; ``None``
  while the run is unfinished). Models not finished yet are left out; a run with none finished is refused.
- an ``xlt evaluate`` output (``metrics.json`` with ``"kind": "xlt-evaluate"``, or its folder): one row per
  (model, metric, language) score whose model's source language is known. It is known for a run's adapted models
  (``source_lang`` recorded by ``xlt evaluate``), for a model folder evaluated on its own whose parent folder is an
  ``xlt adapt`` run (its ``run.json``), or from the ``source=`` argument for every other model. The run's
  unadapted source model (role ``source``) is the no-transfer reference and gives no row. For a model with a known
  target language (an adapted model) only its scores in that language are transfer results (its scores elsewhere
  measure forgetting); for other models every language but the source is a target. Task = the score's metric, with
  ``:<model folder>`` for an adapted model (``bpb:overlap``), so that each init is its own task as above. The
  direction is the one the score records.
- a folder holding several ``xlt adapt`` runs and ``xlt evaluate`` outputs (searched recursively; hidden folders
  skipped; CSV and JSON tables in it are not read, give those one by one), merged into one table.
  Outputs in it that give no row (an unfinished run, an evaluation of models with no known source) are skipped and
  logged; a folder where nothing gives a row is refused, with the reasons.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from xlt.errors import XltError

log = logging.getLogger("xlt.predict")

#: the columns of a transfer table, in file order
COLUMNS = ("source", "target", "task", "metric", "score", "direction", "n_target", "provenance")
#: columns a CSV must have
REQUIRED_COLUMNS = ("source", "target", "task", "metric", "score")
DIRECTIONS = ("higher", "lower")

_LOWER = ("bits_per_byte", "bpb", "bits_per_char", "bpc", "bits_per_token", "ppl", "perplexity", "word_perplexity",
          "byte_perplexity", "loss", "nll", "cross_entropy", "xent", "wer", "cer", "ter", "off_target")
_HIGHER = ("accuracy", "acc", "acc_norm", "f1", "macro_f1", "micro_f1", "span_f1", "exact_match", "em", "chrf",
           "chrf++", "bleu", "spbleu", "comet", "las", "uas", "precision", "recall", "ndcg", "mrr", "map", "rouge1",
           "rouge2", "rougel", "mcc")
#: direction of metrics known by name (lower-cased; for ``name,filter`` names of lm-eval the part before the comma)
KNOWN_DIRECTIONS: dict[str, str] = {**{m: "lower" for m in _LOWER}, **{m: "higher" for m in _HIGHER}}

#: task prefix and metric of the rows read from ``xlt adapt`` runs
ADAPT_TASK = "lm"
ADAPT_METRIC = "bits_per_byte"
_NOT_LANGUAGES = frozenset({"und", "mul", "zxx", "mis"})


def known_direction(metric: str) -> str | None:
    """``"higher"``/``"lower"`` for a metric this module knows by name (case-insensitive), else None."""
    key = str(metric).strip().lower()
    return KNOWN_DIRECTIONS.get(key) or KNOWN_DIRECTIONS.get(key.split(",")[0].strip())


def _where(provenance: str) -> str:
    return f" (from {provenance})" if provenance else ""


@dataclass(frozen=True)
class TransferRow:
    """One transfer result; see the module docstring. Built rows are normalised: ISO 639-3 codes, a float score,
    a direction, an int or None ``n_target``, a portable provenance."""

    source: str
    target: str
    task: str
    metric: str
    score: float
    direction: str | None = None
    n_target: int | None = None
    provenance: str = ""

    def __post_init__(self) -> None:
        from xlt.languages import resolve
        from xlt.util import portable_path

        prov = "" if self.provenance is None else str(self.provenance).strip()
        if prov and os.path.isabs(prov):  # never an absolute path of this machine in a table
            prov = portable_path(prov)
        set_ = object.__setattr__
        set_(self, "provenance", prov)
        for name in ("task", "metric"):
            value = "" if getattr(self, name) is None else str(getattr(self, name)).strip()
            if not value:
                raise XltError(f"a transfer row has no {name}{_where(prov)}", f"give every row a {name}")
            set_(self, name, value)
        for name in ("source", "target"):
            code = str(getattr(self, name) or "").strip()
            try:
                lang = resolve(code)
            except XltError as e:
                raise XltError(f"{name} language of a {self.task} row: {e.problem}{_where(prov)}", e.fix) from None
            set_(self, name, lang.code)
        try:
            score = float(self.score)
        except (TypeError, ValueError):
            raise XltError(f"score {self.score!r} of {self.source}→{self.target} ({self.task}) is not a number"
                           f"{_where(prov)}", "give every score as a number") from None
        if not math.isfinite(score):
            raise XltError(f"score of {self.source}→{self.target} ({self.task}) is {score}{_where(prov)}",
                           "drop the row, or give the result it should hold; a table of scores has no missing cells")
        set_(self, "score", score)
        known = known_direction(self.metric)
        direction = None if self.direction is None else str(self.direction).strip().lower() or None
        if direction is None:
            if known is None:
                raise XltError(f"metric {self.metric!r} of task {self.task} has no direction{_where(prov)}",
                               f"say which way it is better: direction 'higher' or 'lower' (known metrics: "
                               f"{', '.join(sorted(KNOWN_DIRECTIONS))})")
            direction = known
        if direction not in DIRECTIONS:
            raise XltError(f"direction {self.direction!r} of task {self.task}{_where(prov)} is not higher or lower",
                           "write direction as 'higher' (higher is better) or 'lower'")
        if known is not None and direction != known:
            raise XltError(f"task {self.task}: metric {self.metric} is {known}-is-better, but the row says "
                           f"{direction}{_where(prov)}", f"give direction {known}, or leave it empty")
        set_(self, "direction", direction)
        n = self.n_target
        if not _missing(n):
            try:
                f = float(n)
            except (TypeError, ValueError):
                f = math.nan
            if not math.isfinite(f) or f != int(f) or f < 0:
                raise XltError(f"n_target {n!r} of {self.source}→{self.target} ({self.task}) is not a count"
                               f"{_where(prov)}", "give the number of target-language training examples (0 for "
                                                  "zero-shot), or leave it empty when unknown")
            n = int(f)
        else:
            n = None
        set_(self, "n_target", n)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.source, self.target, self.task)

    @property
    def oriented(self) -> float:
        """The score turned so that higher is better."""
        return self.score if self.direction == "higher" else -self.score

    def as_dict(self) -> dict:
        return asdict(self)


class TransferTable:
    """A validated list of :class:`TransferRow` (see the module docstring for the rules)."""

    def __init__(self, rows: Iterable[TransferRow | Mapping[str, Any]] = ()):
        kept: dict[tuple[str, str, str], TransferRow] = {}
        for r in rows:
            row = r if isinstance(r, TransferRow) else TransferRow(**_row_kwargs(r))
            old = kept.get(row.key)
            if old is None:
                kept[row.key] = row
                continue
            if (old.score, old.n_target, old.metric, old.direction) != (row.score, row.n_target, row.metric,
                                                                         row.direction):
                raise XltError(
                    f"two results for {row.source}→{row.target} on task {row.task} disagree: {old.metric} "
                    f"{old.score!r} (n_target {old.n_target}){_where(old.provenance)} and {row.metric} {row.score!r} "
                    f"(n_target {row.n_target}){_where(row.provenance)}",
                    "keep one result per (source, target, task): drop one, or give them different task names "
                    "(e.g. a suffix per model or setting)")
        self.rows: list[TransferRow] = list(kept.values())
        by_task: dict[str, tuple[str, str, str]] = {}
        for row in self.rows:
            first = by_task.setdefault(row.task, (row.metric, row.direction, row.provenance))
            if (row.metric, row.direction) != first[:2]:
                raise XltError(
                    f"task {row.task} mixes {first[0]} ({first[1]} is better){_where(first[2])} with {row.metric} "
                    f"({row.direction} is better){_where(row.provenance)}",
                    "use one metric and direction per task, or give the rows of each metric their own task name")

    # -- reading the table --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TransferTable) and self.sha256() == other.sha256()

    def __repr__(self) -> str:
        return f"TransferTable({len(self.rows)} rows, tasks: {', '.join(self.tasks()) or 'none'})"

    def tasks(self) -> list[str]:
        return sorted({r.task for r in self.rows})

    def _task_rows(self, task: str) -> list[TransferRow]:
        rows = [r for r in self.rows if r.task == task]
        if not rows:
            raise XltError(f"the transfer table has no task {task!r}",
                           f"choose one of: {', '.join(self.tasks()) or '(the table is empty)'}")
        return rows

    def targets(self, task: str) -> list[str]:
        return sorted({r.target for r in self._task_rows(task)})

    def sources(self, task: str, target: str) -> list[str]:
        from xlt.languages import resolve

        code = resolve(target).code
        out = sorted({r.source for r in self._task_rows(task) if r.target == code})
        if not out:
            raise XltError(f"task {task} has no result for target {code}",
                           f"choose one of its targets: {', '.join(self.targets(task))}")
        return out

    def metric(self, task: str) -> tuple[str, str]:
        """(metric, direction) of ``task``."""
        r = self._task_rows(task)[0]
        return r.metric, r.direction

    def check_rankable(self, task: str, min_targets: int = 2, min_sources: int = 2) -> None:
        """Refuse a task a ranker cannot be fitted on: fewer than ``min_targets`` targets (one query group per
        target; leave-one-target-out needs two), or a target with fewer than ``min_sources`` sources (nothing to
        rank)."""
        rows = self._task_rows(task)
        targets = sorted({r.target for r in rows})
        if len(targets) < min_targets:
            raise XltError(f"task {task} has results for {len(targets)} target language(s) ({', '.join(targets)}); "
                           f"ranking needs at least {min_targets}",
                           "add results of the same task for more target languages")
        few = {t: sorted({r.source for r in rows if r.target == t}) for t in targets}
        few = {t: s for t, s in few.items() if len(s) < min_sources}
        if few:
            listed = "; ".join(f"{t}: {', '.join(s)}" for t, s in few.items())
            raise XltError(f"task {task}: target(s) with fewer than {min_sources} source languages ({listed})",
                           "add results from more source languages for those targets, or drop them")

    def to_records(self) -> list[dict]:
        return [r.as_dict() for r in self.rows]

    def to_frame(self):
        """The rows as a pandas DataFrame with the columns :data:`COLUMNS` (``n_target`` nullable)."""
        pd = _pandas()
        frame = pd.DataFrame(self.to_records(), columns=list(COLUMNS))
        frame["n_target"] = frame["n_target"].astype("Int64")
        frame["score"] = frame["score"].astype(float)
        return frame

    def oriented(self, task: str):
        """``task``'s rows as a DataFrame (source, target, n_target, score, raw_score), sorted by target then
        source: ``score`` turned so that higher is better (``-raw_score`` where lower is better), the input
        :mod:`xlt.predict.ranker` expects; ``raw_score`` as measured."""
        pd = _pandas()
        rows = sorted(self._task_rows(task), key=lambda r: (r.target, r.source))
        frame = pd.DataFrame([{"source": r.source, "target": r.target, "n_target": r.n_target, "score": r.oriented,
                               "raw_score": r.score} for r in rows],
                             columns=["source", "target", "n_target", "score", "raw_score"])
        frame["n_target"] = frame["n_target"].astype("Int64")
        return frame

    def merge(self, other: "TransferTable | Iterable[TransferRow]") -> "TransferTable":
        """A new table with the rows of both (validated again: conflicting duplicates are refused)."""
        return TransferTable([*self.rows, *(other.rows if isinstance(other, TransferTable) else other)])

    def sha256(self) -> str:
        """SHA-256 of the canonical content: every field but provenance, rows sorted (order-independent)."""
        canon = sorted([r.task, r.target, r.source, r.metric, r.direction, r.score, r.n_target] for r in self.rows)
        text = json.dumps(canon, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # -- files --------------------------------------------------------------------------------------------------
    def to_csv(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(COLUMNS)
            for r in self.rows:
                w.writerow([r.source, r.target, r.task, r.metric, repr(r.score), r.direction,
                            "" if r.n_target is None else r.n_target, r.provenance])
        return path

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> "TransferTable":
        path = Path(path)
        try:
            fh = open(path, encoding="utf-8-sig", newline="")
        except OSError as e:
            raise XltError(f"cannot read transfer table {path.name}: {e.strerror}",
                           "give an existing CSV file") from None
        with fh:
            reader = csv.DictReader(fh)
            header = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise XltError(f"transfer table {path.name} lacks the column(s) {', '.join(missing)} "
                               f"(it has: {', '.join(header) or 'no header'})",
                               f"write a header line with {', '.join(COLUMNS)} (direction, n_target and provenance "
                               "may be left out)")
            rows = []
            for raw in reader:
                rec = {(k or "").strip(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items()}
                rows.append(TransferRow(
                    rec["source"], rec["target"], rec["task"], rec["metric"], _number(rec["score"]),
                    rec.get("direction") or None, rec.get("n_target") or None,
                    rec.get("provenance") or f"{path.name}:{reader.line_num}"))
        return cls(rows)

    def to_dict(self) -> dict:
        return {"kind": "xlt-transfer-table", "version": 1, "columns": list(COLUMNS), "rows": self.to_records(),
                "sha256": self.sha256()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TransferTable":
        if not isinstance(data, Mapping) or data.get("kind") != "xlt-transfer-table":
            raise XltError("this JSON is not an xlt transfer table (no \"kind\": \"xlt-transfer-table\")",
                           "give a file written by TransferTable.to_json")
        return cls(data.get("rows") or [])

    def to_json(self, path: str | os.PathLike) -> Path:
        from xlt.util import write_json_atomic

        write_json_atomic(path, self.to_dict())
        return Path(path)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "TransferTable":
        data = _read_json(Path(path))
        if isinstance(data, Mapping) and data.get("kind") == "xlt-evaluate":
            return read_evaluation(path)
        return cls.from_dict(data)

    @classmethod
    def read(cls, path: str | os.PathLike, source: str | None = None) -> "TransferTable":
        """Read a CSV, a transfer-table JSON, a folder with a ``transfer_table.csv`` (``xlt study matrix``), an ``xlt
        adapt`` run folder, an ``xlt evaluate`` output (folder or ``metrics.json``) or a folder of several (see the
        module docstring). ``source`` is the source language of evaluated models whose source is not recorded."""
        p = Path(path)
        if not p.exists():
            raise XltError(f"no such file or folder: {p}", "give a transfer CSV, an `xlt adapt` run folder, an "
                                                           "`xlt evaluate` output folder or a folder of them")
        if p.is_file():
            if p.suffix.lower() == ".csv":
                return cls.from_csv(p)
            if p.suffix.lower() == ".json":
                data = _read_json(p)
                if isinstance(data, Mapping) and data.get("kind") == "xlt-evaluate":
                    return read_evaluation(p, source=source)
                return cls.from_dict(data)
            raise XltError(f"cannot read a transfer table from {p.name}", "give a .csv or .json file, or a folder")
        if (p / "run.json").is_file():
            return read_adapt_run(p)
        if (p / "transfer_table.csv").is_file():  # an `xlt study matrix` output or an `xlt predict fit` folder
            return cls.from_csv(p / "transfer_table.csv")
        if _is_evaluation(p / "metrics.json"):
            return read_evaluation(p, source=source)
        return read_folder(p, source=source)


# -- readers -----------------------------------------------------------------------------------------------------
def read_adapt_run(folder: str | os.PathLike, label: str | None = None) -> TransferTable:
    """Rows of one ``xlt adapt`` run folder (module docstring). ``label`` is how provenance names the folder
    (default: its name)."""
    from xlt.adapt.pipeline import run_name

    folder = Path(folder)
    label = label or _label(folder)
    run = _read_json(folder / "run.json")
    settings = run.get("settings") if isinstance(run, Mapping) else None
    if not isinstance(settings, Mapping) or "target" not in settings:
        raise XltError(f"{label}/run.json has no settings with a target language",
                       "give the folder of an `xlt adapt` run (its run.json is written at the start)")
    source = settings.get("source_lang", "eng")  # runs made before source_lang was recorded: English (as evaluate)
    run_metrics = _read_json(folder / "metrics.json") if (folder / "metrics.json").is_file() else {}
    n_target = run_metrics.get("train_tokens") if isinstance(run_metrics, Mapping) else None
    keys = [run_name(i, m) for i in settings.get("inits", []) for m in settings.get("methods", ["full"])]
    rows, missing = [], []
    for key in keys:
        f = folder / key / "metrics.json"
        if not f.is_file():
            missing.append(key)
            continue
        m = _read_json(f)
        if not isinstance(m, Mapping) or "bpb_final" not in m:
            raise XltError(f"{label}/{key}/metrics.json has no bpb_final", "give a run written by `xlt adapt`")
        rows.append(TransferRow(source, settings["target"], f"{ADAPT_TASK}:{key}", ADAPT_METRIC, m["bpb_final"],
                                "lower", n_target, f"{label}/{key}/metrics.json"))
    if not rows:
        raise XltError(f"run {label} has no finished model (no {', '.join(f'{k}/metrics.json' for k in keys)})",
                       "let the run finish (run the same `xlt adapt` command again to resume it)")
    if missing:
        log.warning("run %s: %s not finished yet, left out of the transfer table", label, ", ".join(missing))
    return TransferTable(rows)


def read_evaluation(path: str | os.PathLike, source: str | None = None, label: str | None = None) -> TransferTable:
    """Rows of one ``xlt evaluate`` output (its folder or its ``metrics.json``; module docstring). ``source``:
    the source language of models whose source is not recorded."""
    from xlt.languages import resolve

    path = Path(path)
    file = path / "metrics.json" if path.is_dir() else path
    folder = file.parent
    label = label or _label(folder)
    data = _read_json(file)
    if not isinstance(data, Mapping) or data.get("kind") != "xlt-evaluate":
        raise XltError(f"{label}/{file.name} is not an `xlt evaluate` output (no \"kind\": \"xlt-evaluate\")",
                       "give the --out folder of `xlt evaluate`")
    given = resolve(source).code if source else None
    models: dict[str, tuple[str, str | None, str | None]] = {}  # name -> (source, target, task suffix)
    unknown = []
    for m in data.get("models", []):
        if m.get("role") == "source":
            continue  # the run's unadapted source model: the no-transfer reference, not a transfer result
        src, tgt, suffix = m.get("source_lang"), m.get("target"), None
        if m.get("role") == "adapted":
            suffix = Path(str(m.get("path") or m["name"])).name
        elif src is None:
            settings = _run_settings_of(folder, m.get("path"))
            if settings is not None:
                src, tgt = settings.get("source_lang", "eng"), settings.get("target")
                suffix = Path(str(m["path"])).name
        if src is None:
            src = given
        elif given is not None and resolve(src).code != given:
            raise XltError(f"model {m['name']} of {label} was adapted from {resolve(src).code}, but source={given} "
                           "was given", "leave out source= (it is for models whose source is not recorded)")
        if src is None:
            unknown.append(m["name"])
            continue
        models[m["name"]] = (resolve(src).code, resolve(tgt).code if tgt else None, suffix)
    if unknown:
        log.warning("%s: source language of %s not known, their scores are left out (give source=)", label,
                    ", ".join(unknown))
    rows = []
    for s in data.get("scores", []):
        info = models.get(s.get("model"))
        if info is None or str(s.get("lang", "")).lower() in _NOT_LANGUAGES:
            continue
        src, tgt, suffix = info
        lang = resolve(s["lang"]).code
        if (tgt is not None and lang != tgt) or (tgt is None and lang == src):
            continue  # an adapted model's scores in other languages measure forgetting, not transfer
        rows.append(TransferRow(src, lang, s["metric"] + (f":{suffix}" if suffix else ""), s["metric"], s["value"],
                                "higher" if s.get("higher_is_better", True) else "lower", None,
                                f"{label}/{file.name}#{s['model']}"))
    if not rows:
        why = (f"the source language of {', '.join(unknown)} is not recorded" if unknown
               else "it has no score of a model in a language other than its source")
        raise XltError(f"evaluation {label} gives no transfer result: {why}",
                       "pass source=LANG (the language the evaluated models were trained in)" if unknown
                       else "evaluate models in their target languages")
    return TransferTable(rows)


def read_folder(folder: str | os.PathLike, source: str | None = None) -> TransferTable:
    """Every ``xlt adapt`` run and ``xlt evaluate`` output under ``folder`` (recursively), merged."""
    folder = Path(folder)
    root = _label(folder)
    tables, skipped = [], []
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        p = Path(here)
        rel = p.relative_to(folder).as_posix()
        label = root if rel == "." else f"{root}/{rel}"
        readers = []
        if "run.json" in files:
            readers.append(lambda p=p, label=label: read_adapt_run(p, label))
        if "metrics.json" in files and _is_evaluation(p / "metrics.json"):
            readers.append(lambda p=p, label=label: read_evaluation(p, source, label))
        for read in readers:
            try:
                tables.append(read())
            except XltError as e:
                skipped.append(e.problem)
                log.warning("skipped: %s", e.problem)
    if not tables:
        raise XltError(f"folder {root} holds no transfer result" + (f" ({'; '.join(skipped)})" if skipped else
                                                                   " (no run.json, no `xlt evaluate` metrics.json)"),
                       "give `xlt adapt` run folders or `xlt evaluate` outputs (or a folder of them), or a CSV")
    out = TransferTable()
    for t in tables:
        out = out.merge(t)
    return out


# -- helpers -----------------------------------------------------------------------------------------------------
def _row_kwargs(rec: Mapping[str, Any]) -> dict:
    names = {f.name for f in fields(TransferRow)}
    unknown = [k for k in rec if k not in names]
    if unknown:
        raise XltError(f"a transfer row has unknown field(s) {', '.join(map(str, unknown))}",
                       f"use the fields {', '.join(COLUMNS)}")
    missing = [k for k in REQUIRED_COLUMNS if k not in rec]
    if missing:
        raise XltError(f"a transfer row lacks {', '.join(missing)}", f"give {', '.join(REQUIRED_COLUMNS)}")
    return dict(rec)


def _missing(value: Any) -> bool:
    """None, an empty cell, NaN or pandas' NA: an unknown ``n_target``."""
    if value is None or (isinstance(value, str) and not value.strip()) or repr(value) == "<NA>":
        return True
    return isinstance(value, float) and math.isnan(value)


def _number(text: str) -> float | str:
    try:
        return float(text)
    except (TypeError, ValueError):
        return text  # TransferRow names the bad value


def _label(path: Path) -> str:
    return path.resolve().name or "."


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise XltError(f"cannot read {path.name}: {e.strerror}", "check the path") from None
    except ValueError as e:
        raise XltError(f"{path.parent.name}/{path.name} is not valid JSON ({e})", "give the file xlt wrote") from None


def _is_evaluation(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if "xlt-evaluate" not in head:
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, Mapping) and data.get("kind") == "xlt-evaluate"


def _run_settings_of(eval_folder: Path, model_path: Any) -> dict | None:
    """Settings of the ``xlt adapt`` run a model folder belongs to (the model's parent folder holds run.json)."""
    if not model_path or str(model_path) == "(in memory)":
        return None
    p = Path(str(model_path))
    p = p if p.is_absolute() else eval_folder / p
    run_json = p.parent / "run.json"
    if not run_json.is_file():
        return None
    try:
        settings = json.loads(run_json.read_text(encoding="utf-8")).get("settings")
    except (OSError, ValueError, AttributeError):
        return None
    return settings if isinstance(settings, Mapping) and "target" in settings else None


def _pandas():
    try:
        import pandas as pd
    except ImportError:
        raise XltError("transfer tables as data frames need pandas, which is not installed",
                       "pip install pandas") from None
    return pd


__all__ = ["COLUMNS", "REQUIRED_COLUMNS", "KNOWN_DIRECTIONS", "TransferRow", "TransferTable", "known_direction",
           "read_adapt_run", "read_evaluation", "read_folder"]
