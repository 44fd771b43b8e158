"""``xlt predict``: URIEL+ distances, a LangRank ranker fitted on the user's transfer results, ranked sources with
reasons, scaling-law fits. Thin layer over :mod:`xlt.predict.pipeline` and :mod:`xlt.predict.scaling`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

predict_app = typer.Typer(help="Rank source languages for a target, say why; distances; scaling laws.",
                          no_args_is_help=True)


@predict_app.command("distances")
def distances_cmd(
    langs: str = typer.Option("bible", help="Comma-separated languages (ISO 639-1/3), or 'bible' for its 23."),
    kinds: Optional[str] = typer.Option(None, help="Comma-separated kinds (default: all 7: syntactic, phonological, "
                                                   "inventory, genetic, geographic, featural, script)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder: distances.json, distances.csv, report.html."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
):
    """URIEL+ distances of every pair of languages (urielplus' values, all pairs at once), with heatmaps."""
    from xlt.cli.common import out as console
    from xlt.predict.pipeline import distance_table

    res = distance_table(langs, out, kinds.split(",") if kinds else None, overwrite=overwrite)
    console.print(f"{len(res['langs'])} languages × {len(res['kinds'])} kinds in {res['seconds']:.2f} s -> "
                  f"{out}/report.html")


@predict_app.command("fit")
def fit_cmd(
    tables: List[Path] = typer.Argument(..., help="Transfer tables: CSV/JSON, or xlt study matrix / adapt / evaluate "
                                                  "folders."),
    out: Path = typer.Option(..., "--out", "-o", help="Predictor folder: ranker/, metrics.json, report.html."),
    task: Optional[str] = typer.Option(None, help="Task to fit when the tables hold several."),
    features: str = typer.Option("uriel,typology", help="Feature groups: uriel, typology, dataset."),
    corpus: str = typer.Option("bible", help="Corpus of the dataset features."),
    k: int = typer.Option(3, help="NDCG@k of the leave-one-target-out evaluation."),
    seed: int = typer.Option(0, help="LightGBM seed."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
):
    """Fit LangRank (LightGBM LambdaRank) on transfer results; leave-one-target-out NDCG beside baselines; OLS."""
    from rich.table import Table

    from xlt.cli.common import out as console
    from xlt.predict.pipeline import fit

    m = fit([str(t) for t in tables], out, task, features, corpus, k, seed, overwrite=overwrite)
    t = Table(title=f"leave-one-target-out NDCG@{k}, task {m['task']} ({m['seconds']:.0f} s) -> {out}/report.html")
    t.add_column("method")
    t.add_column(f"NDCG@{k}", justify="right")
    for meth, v in m["loto_ndcg"].items():
        t.add_row(meth, f"{v:.3f}")
    console.print(t)


@predict_app.command("rank")
def rank_cmd(
    target: str = typer.Option(..., help="Target language (ISO 639-1/3)."),
    predictor: Path = typer.Option(..., help="A folder written by `xlt predict fit`."),
    candidates: Optional[str] = typer.Option(None, help="Comma-separated candidate sources (default: the "
                                                        "predictor's training sources)."),
    n_target: Optional[int] = typer.Option(None, help="Target-language training examples (log_n_target)."),
    reasons: int = typer.Option(3, help="Top contributions shown per source."),
):
    """Rank candidate source languages for TARGET, each with its score and the features that decided it."""
    from rich.table import Table

    from xlt.cli.common import out as console
    from xlt.predict.pipeline import rank

    why = rank(target, predictor, candidates.split(",") if candidates else None, n_target)
    feats = [c for c in why.columns if c not in ("target", "source", "score", "rank", "bias")]
    t = Table(title=f"sources for {why['target'].iloc[0]} (score: LambdaRank raw score, higher is better)")
    for c in ("rank", "source", "score", "reasons (feature: contribution)"):
        t.add_column(c, justify="right" if c in ("rank", "score") else "left")
    for _, r in why.iterrows():
        top = sorted(feats, key=lambda f: -abs(r[f]))[:reasons]
        t.add_row(str(r["rank"]), r["source"], f"{r['score']:.3f}", ", ".join(f"{f}: {r[f]:+.3f}" for f in top))
    console.print(t)


@predict_app.command("scaling")
def scaling_cmd(
    points: Path = typer.Argument(..., help="CSV with the law's columns (power: N,L; joint: N,p,L; parallel: N,y; "
                                            "data: x,ppl)."),
    law: str = typer.Option("power", help="power | joint | parallel | data."),
    f_form: Optional[str] = typer.Option(None, help="joint: fernandes | power (the form of f(p))."),
    bootstrap: int = typer.Option(1000, help="Bootstrap refits for the CIs (0: none)."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write fit.json and report.html (plot) here."),
):
    """Fit a scaling law; print its parameters with bootstrap CIs."""
    from xlt.cli.common import out as console
    from xlt.predict.scaling import fit_law, read_points
    from xlt.util import write_json_atomic

    fit = fit_law(law, read_points(points, law), **({"f_form": f_form} if f_form else {}))
    if bootstrap:
        fit.bootstrap(bootstrap, seed)
    console.print(f"{fit.formula}  (R² {fit.r2:.4f}, {fit.n_points} points)")
    for k, v in fit.params.items():
        ci = fit.intervals.get(k)
        console.print(f"  {k} = {v:.6g}" + (f"  [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""))
    if out is not None:
        from xlt.report.predict import render_scaling
        from xlt.util import atomic_dir

        with atomic_dir(out, overwrite=True) as tmp:
            write_json_atomic(tmp / "fit.json", fit.to_json())
            (tmp / "report.html").write_text(render_scaling(fit), encoding="utf-8")
        console.print(f"-> {out}/fit.json, {out}/report.html")
