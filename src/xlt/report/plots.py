"""Plots for reports, rendered to PNG bytes with matplotlib (no display needed)."""

from __future__ import annotations

import io


def _axes(figsize: tuple[float, float]):
    """A new figure and axes on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)


def _fig_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def bpb_curves(curves: dict[str, list[tuple[int, float]]], reference: float | None, stage1_steps: int | None) -> bytes:
    """Bits/byte against steps, one line per init, with the no-transfer reference as a dashed line."""
    fig, ax = _axes((7.5, 4.2))
    for name, pts in curves.items():
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", ms=3, label=name)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label="source model, no transfer")
    if stage1_steps:
        ax.axvline(stage1_steps, color="grey", ls=":", lw=1)
        ax.text(stage1_steps, ax.get_ylim()[1], " stage 2 (whole model)", va="top", fontsize=8, color="grey")
    ax.set_xlabel("training step")
    ax.set_ylabel("dev bits per byte (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _fig_bytes(fig)


def loss_curves(curves: dict[str, list[tuple[int, float]]]) -> bytes:
    fig, ax = _axes((7.5, 3.2))
    for name, pts in curves.items():
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, lw=1, label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel("train loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _fig_bytes(fig)


def bpb_vs_parameters(points: dict[str, tuple[int, float, float | None]], reference: float | None) -> bytes:
    """Bits/byte at the end against the parameters trained in stage 2 (log scale), one labelled point per run:
    ``points[name] = (trainable parameters, dev bits/byte, test bits/byte or None)``."""
    fig, ax = _axes((7.5, 4.6))
    pts = {n: p for n, p in points.items() if p[0]}
    if pts:
        xs = [p[0] for p in pts.values()]
        ax.scatter(xs, [p[1] for p in pts.values()], marker="o", s=28, label="dev", zorder=3)
        tests = [(p[0], p[2]) for p in pts.values() if p[2] is not None]
        if tests:
            ax.scatter(*zip(*tests), marker="x", s=28, color="tab:orange", label="test", zorder=3)
        ys = [p[1] for p in pts.values()] + [p[2] for p in pts.values() if p[2] is not None] + (
            [reference] if reference is not None else [])
        gap = 0.04 * ((max(ys) - min(ys)) or 1.0)  # runs with the same parameter count: labels stacked, not overlaid
        by_x: dict[int, list[tuple[float, str]]] = {}
        for n, (x, y, _) in pts.items():
            by_x.setdefault(x, []).append((y, n))
        for x, group in by_x.items():
            last = None
            for y, n in sorted(group):
                ly = y if last is None else max(y, last + gap)
                last = ly
                ax.annotate(n, (x, y), xytext=(x * 1.05, ly), textcoords="data", fontsize=7, va="center",
                            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "grey"} if ly != y else None)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label="source model, no transfer (dev)")
    ax.set_xscale("log")
    ax.margins(x=0.12)  # room for the labels of the outermost points
    ax.set_xlabel("parameters trained in stage 2 (log scale)")
    ax.set_ylabel("bits per byte at the end (lower is better)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _fig_bytes(fig)


def heatmap(table: dict[str, dict[str, float]], title: str, higher_is_better: bool) -> bytes:
    """A language × model heatmap of one metric, each cell labelled with its value (greener = better)."""
    import numpy as np

    models = list(table)
    langs = sorted({lang for row in table.values() for lang in row})
    data = np.array([[table[m].get(lang, np.nan) for lang in langs] for m in models], dtype=float)
    fig, ax = _axes((max(4.0, 0.75 * len(langs) + 2.5), max(2.0, 0.45 * len(models) + 1.2)))
    im = ax.imshow(data, cmap="RdYlGn" if higher_is_better else "RdYlGn_r", aspect="auto")
    ax.set_xticks(range(len(langs)), langs)
    ax.set_yticks(range(len(models)), models)
    for i in range(len(models)):
        for j in range(len(langs)):
            if not np.isnan(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.3g}", ha="center", va="center", fontsize=8)
    ax.set_title(f"{title} ({'higher' if higher_is_better else 'lower'} is better)")
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _fig_bytes(fig)


def range_bars(rows: list[tuple[str, float, float, float, float]], title: str, xlabel: str) -> bytes:
    """One horizontal bar per (label, mean, 2·SE, min, max): the mean with ± 2·SE error bars, min and max as ticks."""
    fig, ax = _axes((7.0, max(1.8, 0.45 * len(rows) + 1.0)))
    ys = list(range(len(rows)))
    ax.barh(ys, [r[1] for r in rows], xerr=[r[2] for r in rows], color="#8fb3d9", capsize=3)
    ax.scatter([r[3] for r in rows], ys, marker="|", s=200, color="#c0392b", label="min")
    ax.scatter([r[4] for r in rows], ys, marker="|", s=200, color="#27ae60", label="max")
    ax.set_yticks(ys, [r[0] for r in rows])
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return _fig_bytes(fig)


def grouped_bars(groups: dict[str, dict[str, float]], title: str, ylabel: str, ref_line: float | None = None) -> bytes:
    """Bars grouped by the outer key (one colour per inner key), with an optional horizontal reference line."""
    import numpy as np

    outer = list(groups)
    inner = sorted({k for g in groups.values() for k in g})
    fig, ax = _axes((max(5.0, 0.6 * len(outer) * max(1, len(inner)) / 2 + 3), 3.6))
    w = 0.8 / max(1, len(inner))
    for i, k in enumerate(inner):
        vals = [groups[o].get(k) for o in outer]
        ax.bar(np.arange(len(outer)) + i * w - 0.4 + w / 2, [np.nan if v is None else v for v in vals], w, label=k)
    if ref_line is not None:
        ax.axhline(ref_line, color="#555", ls="--", lw=1)
    ax.set_xticks(range(len(outer)), outer, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(inner) > 1:
        ax.legend(fontsize=8)
    return _fig_bytes(fig)


def layer_curves(series: dict[str, list[float | None]], title: str, ylabel: str,
                 baselines: dict[str, list[float | None]] | None = None, xlabel: str = "layer") -> bytes:
    """One line per series against the layer index; each series' baseline (chance level), where given, dotted in
    the same colour."""
    import numpy as np

    fig, ax = _axes((7.5, 3.8))
    for name, ys in series.items():
        vals = [np.nan if v is None else v for v in ys]
        (line,) = ax.plot(range(len(vals)), vals, marker=".", label=name)
        if baselines and name in baselines:
            base = [np.nan if v is None else v for v in baselines[name]]
            ax.plot(range(len(base)), base, ls=":", color=line.get_color())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8, ncol=2)
    return _fig_bytes(fig)
