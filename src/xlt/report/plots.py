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
