"""Reports of ``xlt predict``: distance heatmaps; the fitted ranker's leave-one-target-out NDCG table, feature
importance, OLS coefficients with CIs and each training target's contributions."""

from __future__ import annotations

import html


from xlt.report.html import _img, _table
from xlt.report.plots import _axes, _fig_bytes
from xlt.report.study import _page, heatmap


def render_distances(d) -> str:
    parts = [f"<p>URIEL+ (urielplus {html.escape(str(d.urielplus_version))}) distances of {len(d.langs)} languages: "
             "angular distance on the features both languages have, as urielplus' <code>new_distance</code> "
             "computes it; blank cells: URIEL+ cannot compute the pair (the reasons are in distances.json).</p>"]
    for kind in d.kinds:
        parts += [f"<h2>{html.escape(kind)}</h2>",
                  _img(heatmap(d.matrix(kind), list(d.langs), list(d.langs), f"{kind} distance", fmt="{:.2f}"),
                       f"{kind} distances")]
    return _page("xlt predict distances", parts, {"options": {"langs": list(d.langs), "kinds": list(d.kinds)}})


def _bars(values: dict[str, float], title: str, xlabel: str) -> bytes:
    names = list(values)
    fig, ax = _axes((7, 0.3 * len(names) + 1.5))
    ax.barh(range(len(names)), [values[n] for n in names], color="#4477aa")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    return _fig_bytes(fig)


def _coef_plot(coefs: list[dict]) -> bytes:
    rows = [c for c in coefs if c["term"] != "intercept"]
    fig, ax = _axes((7, 0.35 * len(rows) + 1.5))
    for i, c in enumerate(rows):
        ax.plot([c["ci_low"], c["ci_high"]], [i, i], color="#4477aa")
        ax.plot(c["coef"], i, "o", color="#4477aa")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)), [c["term"] for c in rows])
    ax.invert_yaxis()
    ax.set_xlabel("coefficient per standard deviation of the feature (score units), 95 % CI")
    return _fig_bytes(fig)


def render_fit(metrics: dict, data, ranker) -> str:
    k = metrics["k"]
    parts = [f"<p>Task <b>{html.escape(metrics['task'])}</b> ({html.escape(' '.join(metrics['metric']))}): "
             f"{len(metrics['targets'])} targets, {len(metrics['sources'])} sources, {len(data)} pairs; features "
             f"{html.escape(', '.join(metrics['features']))} (groups {html.escape(', '.join(metrics['groups']))}).</p>",
             f"<h2>Leave-one-target-out NDCG@{k}</h2>",
             _table(["method", f"mean NDCG@{k}"], [[m, v] for m, v in metrics["loto_ndcg"].items()]),
             f"<p class='how'>{html.escape(metrics['definition'])}.</p>",
             "<h2>Feature importance (LightGBM total gain)</h2>",
             _img(_bars(dict(sorted(metrics["feature_importance_gain"].items(), key=lambda kv: -kv[1])),
                        "ranker feature importance", "total gain of the splits on the feature"), "importance")]
    reg = metrics["regression"]
    if "coefficients" in reg:
        parts += ["<h2>Regression (OLS)</h2>",
                  f"<p>{html.escape(reg['method'])}; R² {reg['r2']:.3f} (adjusted {reg['r2_adj']:.3f}), n = "
                  f"{reg['n']}.</p>",
                  _table(["term", "coef", "CI low", "CI high", "p"],
                         [[c["term"], c["coef"], c["ci_low"], c["ci_high"], c["p"]] for c in reg["coefficients"]]),
                  _img(_coef_plot(reg["coefficients"]), "coefficients")]
    else:
        parts.append(f"<h2>Regression</h2><p>not fitted: {html.escape(reg.get('skipped', ''))}</p>")
    target = metrics["targets"][0]
    why = ranker.reasons(target, data[data["target"] == target][["source", "target", *metrics["features"]]])
    contrib = {f"{r['source']} (rank {r['rank']})": float(r["score"]) for _, r in why.iterrows()}
    parts += [f"<h2>Why: the ranker's scores for {html.escape(target)} (a training target)</h2>",
              _table(["source", "rank", "score", *metrics["features"]],
                     [[r["source"], int(r["rank"]), float(r["score"]), *[float(r[f]) for f in metrics["features"]]]
                      for _, r in why.iterrows()]),
              "<p class='how'>Each feature's contribution (TreeSHAP, LightGBM pred_contrib); contributions plus the "
              "bias give the score.</p>", _img(_bars(contrib, f"ranker score per source for {target}", "score"),
                                                   "scores")]
    return _page("xlt predict fit", parts, {"options": {k_: metrics[k_] for k_ in ("task", "groups", "corpus", "k",
                                                                                  "seed", "table_sha256")}})


def scaling_plot(fit) -> bytes:
    """The points and the fitted law over their input range (log x), with the bootstrap's pointwise band when there
    is one; for the joint law, one curve (and band) per weight p."""
    import numpy as np

    X, y = fit.X, fit.y
    fig, ax = _axes((7, 4.2))
    grid = np.geomspace(X[0].min(), X[0].max(), 200)
    banded = fit.draws is not None
    level = f"{100 * fit.bootstrap_info['level']:g} % bootstrap band" if banded else ""
    if fit.law == "joint":
        for p in sorted(set(X[1].tolist())):
            sel = X[1] == p
            line, = ax.plot(grid, fit.predict(grid, np.full_like(grid, p)), lw=1, label=f"p = {p:g}")
            ax.plot(X[0][sel], y[sel], "o", color=line.get_color())
            if banded:
                ax.fill_between(grid, *fit.band(grid, np.full_like(grid, p)), color=line.get_color(), alpha=0.15,
                                lw=0)
        if banded:
            ax.fill_between([], [], [], color="grey", alpha=0.15, lw=0, label=level)
    else:
        ax.plot(X[0], y, "ko", label="points")
        ax.plot(grid, fit.predict(grid), "k-", lw=1, label=fit.formula)
        if banded:
            ax.fill_between(grid, *fit.band(grid), color="k", alpha=0.15, lw=0, label=level)
    ax.set_xscale("log")
    ax.set_xlabel(fit.spec.columns[0])
    ax.set_ylabel(fit.spec.columns[-1])
    ax.legend(fontsize=7)
    return _fig_bytes(fig)


def render_scaling(fit) -> str:
    rows = [[k, v, *(fit.intervals.get(k) or (None, None))] for k, v in fit.params.items()]
    parts = [f"<p>{html.escape(fit.formula)} fitted to {fit.n_points} points by bounded least squares; R² "
             f"{fit.r2:.4f}.{' Provisional: ' + html.escape(fit.to_json()['note']) if fit.to_json()['note'] else ''}"
             "</p>", _table(["parameter", "value", "CI low", "CI high"], rows),
             f"<p class='how'>Intervals: {html.escape(str(fit.bootstrap_info or 'none (no bootstrap)'))}.</p>",
             _img(scaling_plot(fit), "fit")]
    return _page(f"xlt predict scaling ({fit.law})", parts, {"options": fit.to_json()["options"]})
