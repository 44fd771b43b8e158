"""``xlt predict``'s commands as Python: pair features, ``fit`` a ranker on transfer tables, ``rank`` sources for a
new target with per-feature reasons, the ``distances`` table. The pieces are :mod:`xlt.predict.table`,
:mod:`~xlt.predict.distances`, :mod:`~xlt.predict.features`, :mod:`~xlt.predict.ranker` and
:mod:`~xlt.predict.regression`; this module only joins them and writes the outputs (through a temporary folder).

Feature groups (``features``, comma-separated): ``uriel`` — the 7 URIEL+ distances (``uriel_<kind>``); ``typology``
— ``same_script`` and ``word_order_overlap`` (Zubillaga et al.); ``dataset`` — LangRank's dataset features from the
corpus's train split (sizes, TTRs, TTR distance, word and subword overlap, ``log_n_target``). Columns that are NaN for
every training pair are left out (and said so).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from xlt.errors import XltError

GROUPS = ("uriel", "typology", "dataset")


def parse_groups(spec: str | Sequence[str]) -> list[str]:
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    bad = [n for n in names if n not in GROUPS]
    if bad or not names:
        raise XltError(f"unknown feature group(s) {', '.join(bad) or '(none given)'}",
                       f"choose from {', '.join(GROUPS)}, comma-separated")
    return names


def pair_frame(pairs: Sequence[tuple[str, str]], groups: Sequence[str] = GROUPS, corpus: str = "bible",
               n_target: dict | int | None = None, max_docs: int | None = None):
    """One row per (source, target) with the features of ``groups``; returns ``(frame, reasons)``."""
    import pandas as pd

    from xlt.languages import resolve

    pairs = [(resolve(s).code, resolve(t).code) for s, t in pairs]
    frame = pd.DataFrame({"source": [s for s, _ in pairs], "target": [t for _, t in pairs]})
    reasons: dict[str, str] = {}
    if "uriel" in groups:
        from xlt.predict.distances import ALL_KINDS, distances

        langs = sorted({x for p in pairs for x in p})
        d = distances(langs, ALL_KINDS)
        for kind in ALL_KINDS:
            frame[f"uriel_{kind}"] = [d.get(kind, s, t) for s, t in pairs]
        for (kind, a, b), why in list(d.reasons.items())[:20]:
            reasons[f"uriel_{kind} {a}-{b}"] = why
    if "typology" in groups:
        from xlt.predict.distances import typology_overlaps

        ov = [typology_overlaps(s, t) for s, t in pairs]
        for key in ("same_script", "word_order_overlap"):
            frame[key] = [float(o[key]) if o.get(key) is not None else np.nan for o in ov]
    if "dataset" in groups:
        from xlt.predict.features import FEATURES, dataset_features

        ds, why = dataset_features(pairs, corpus, max_docs=max_docs, n_target=n_target)
        for f in FEATURES:
            frame[f] = ds[f].to_numpy()
        for (s, t), w in list(why.items())[:20]:
            for f, text in w.items():
                reasons[f"{f} {s}-{t}"] = text
    return frame, reasons


def usable_features(feats) -> tuple[list[str], list[str], list[str]]:
    """The feature columns of ``feats`` (all but source/target) a ranker can learn from: ``(kept, all_nan,
    constant)``; none kept is an error."""
    names = [c for c in feats.columns if c not in ("source", "target")]
    dropped = [c for c in names if feats[c].isna().all()]
    constant = [c for c in names if c not in dropped and feats[c].nunique(dropna=True) <= 1]
    names = [c for c in names if c not in dropped and c not in constant]
    if not names:
        raise XltError("no feature varies over the training pairs", "use more languages or other --features")
    return names, dropped, constant


def fit(tables: Sequence[str | Path], out: str | Path, task: str | None = None, features: str = "uriel,typology",
        corpus: str = "bible", k: int = 3, seed: int = 0, max_docs: int | None = None,
        overwrite: bool = False) -> dict:
    """Read transfer tables (CSV/JSON, ``xlt study matrix`` / ``xlt adapt`` / ``xlt evaluate`` folders), fit the
    LangRank ranker on ``task``, evaluate it leave-one-target-out against the baselines, fit the OLS regression, and
    write ``out/ranker/``, ``out/metrics.json``, ``out/transfer_table.csv`` and ``out/report.html``."""
    from xlt.predict.ranker import Ranker, RankerOptions, loto_ndcg
    from xlt.predict.regression import fit_regression
    from xlt.predict.table import TransferTable
    from xlt.util import atomic_dir, write_json_atomic

    out = Path(out)
    if out.exists() and not overwrite:
        raise XltError(f"{out} already exists", "choose another --out or pass --overwrite")
    groups = parse_groups(features)
    if not tables:
        raise XltError("no transfer table given", "give CSV/JSON tables or xlt study/adapt/evaluate folders")
    t0 = time.time()
    table = TransferTable()
    for path in tables:
        table = table.merge(TransferTable.read(path))
    tasks = table.tasks()
    if task is None:
        if len(tasks) != 1:
            raise XltError(f"the tables hold {len(tasks)} tasks ({', '.join(tasks)})", "choose one with --task")
        task = tasks[0]
    elif task not in tasks:
        raise XltError(f"task {task!r} is not in the tables", f"choose one of {', '.join(tasks)}")
    table.check_rankable(task)
    frame = table.oriented(task)
    frame = frame[frame["source"] != frame["target"]].reset_index(drop=True)
    n_target = {t: (int(v) if v is not None and v == v else None)
                for t, v in frame.groupby("target")["n_target"].first().items()}
    feats, reasons = pair_frame(list(zip(frame["source"], frame["target"])), groups, corpus,
                                n_target=n_target, max_docs=max_docs)
    names, dropped, constant = usable_features(feats)
    data = frame.join(feats[names])
    ranker = Ranker(RankerOptions(seed=seed)).fit(data, names)
    loto = loto_ndcg(data, names, k=k, options=RankerOptions(seed=seed))
    summary = loto.groupby("method")["ndcg"].mean().sort_values(ascending=False)
    try:
        reg = _regression_json(fit_regression(data, names))
    except XltError as e:
        reg = {"skipped": e.problem, "fix": e.fix}
    importance = dict(zip(names, ranker.booster.feature_importance("gain").tolist()))
    from importlib.metadata import version

    meta = {"task": task, "metric": table.metric(task), "groups": groups, "corpus": corpus, "max_docs": max_docs,
            "features": names, "table_sha256": table.sha256(), "sources": sorted(set(frame["source"])),
            "targets": sorted(set(frame["target"])), "urielplus": version("urielplus")}
    metrics = {"command": "xlt predict fit", **meta, "k": k, "seed": seed,
               "loto_ndcg": {m: float(v) for m, v in summary.items()},
               "loto_per_target": loto.to_dict(orient="records"), "feature_importance_gain": importance,
               "regression": reg, "features_left_out": {"all NaN": dropped, "constant": constant},
               "nan_reasons": reasons, "seconds": round(time.time() - t0, 1),
               "definition": f"NDCG@{k} of each held-out target's sources ranked by a model fit on the other targets "
                             "(relevance: top 10 by score get 10..1, n < 10 sources n..1); random = its exact "
                             "expectation"}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        ranker.save(tmp / "ranker", metadata=meta)
        write_json_atomic(tmp / "metrics.json", metrics)
        table.to_csv(tmp / "transfer_table.csv")
        from xlt.report.predict import render_fit

        (tmp / "report.html").write_text(render_fit(metrics, data, ranker), encoding="utf-8")
    return metrics


def _regression_json(res) -> dict:
    coef = res.coefficients.reset_index().rename(columns={"index": "term"})
    d = {"method": f"OLS on standardised features, {res.cov_type} errors, {100 * (1 - res.alpha):g} % CIs",
         "coefficients": coef.to_dict(orient="records"), "r2": res.r2, "r2_adj": res.r2_adj, "n": res.n,
         "n_dropped": res.n_dropped, "binary": res.binary.reset_index().to_dict(orient="records")}
    return json.loads(json.dumps(d, default=lambda x: x.item() if hasattr(x, "item") else str(x)))


def rank(target: str, predictor: str | Path, candidates: Sequence[str] | None = None, n_target: int | None = None,
         corpus: str | None = None) -> "object":
    """Rank ``candidates`` (default: the predictor's training sources) as sources for ``target``; returns the
    reasons frame (``target, source, score, rank``, one contribution per feature, ``bias``)."""
    from xlt.languages import resolve
    from xlt.predict.ranker import Ranker

    ranker = Ranker.load(Path(predictor) / "ranker")
    meta = ranker.metadata
    tgt = resolve(target).code
    cands = [resolve(c).code for c in (candidates or meta["sources"])]
    cands = [c for c in dict.fromkeys(cands) if c != tgt]
    if not cands:
        raise XltError("no candidate source other than the target", "give --candidates")
    try:
        feats, _ = pair_frame([(c, tgt) for c in cands], meta["groups"], corpus or meta["corpus"],
                              n_target=n_target, max_docs=meta.get("max_docs"))
    except XltError as e:
        raise XltError(f"cannot compute the predictor's features for {tgt}: {e.problem}",
                       "fit a predictor on features every language has: --features uriel") from None
    missing = [f for f in meta["features"] if f not in feats.columns]
    if missing:
        raise XltError(f"the predictor needs features {', '.join(missing)} that cannot be computed for {tgt}",
                       "fit it with --features uriel")
    return ranker.reasons(tgt, feats[["source", "target", *meta["features"]]])


def distance_table(langs: Sequence[str] | str, out: str | Path, kinds: Sequence[str] | None = None,
                   overwrite: bool = False) -> dict:
    """URIEL+ distances of every pair of ``langs`` (or ``"bible"``: the corpus's languages): ``distances.json``,
    ``distances.csv`` (long), ``report.html`` with one heatmap per kind."""
    from xlt.predict.distances import ALL_KINDS, distances
    from xlt.util import atomic_dir, write_json_atomic

    out = Path(out)
    if out.exists() and not overwrite:
        raise XltError(f"{out} already exists", "choose another --out or pass --overwrite")
    if isinstance(langs, str):
        if langs in ("bible",):
            from xlt.corpora import open_corpus

            langs = [l.code for l in open_corpus(langs).languages()]
        else:
            langs = [x.strip() for x in langs.split(",") if x.strip()]
    t0 = time.time()
    d = distances(langs, tuple(kinds or ALL_KINDS))
    seconds = time.time() - t0
    from xlt.report.predict import render_distances

    with atomic_dir(out, overwrite=overwrite) as tmp:
        data = d.to_dict()
        data["seconds"] = round(seconds, 3)
        write_json_atomic(tmp / "distances.json", data)
        d.to_frame().to_csv(tmp / "distances.csv", index=False)
        (tmp / "report.html").write_text(render_distances(d), encoding="utf-8")
    return {"langs": list(d.langs), "kinds": list(d.kinds), "seconds": seconds}
