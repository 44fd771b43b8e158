"""Plots for reports, rendered to PNG bytes with matplotlib (no display needed)."""

from __future__ import annotations

import io


def _fig_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def bpb_curves(curves: dict[str, list[tuple[int, float]]], reference: float | None, stage1_steps: int | None) -> bytes:
    """Bits/byte against steps, one line per init, with the no-transfer reference as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    for name, pts in curves.items():
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, lw=1, label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel("train loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _fig_bytes(fig)
