"""Matplotlib figures rendered to PNG bytes (Agg, no pyplot state), shared by the widgets and notebooks."""
from __future__ import annotations

import io


# Text, axes and grid in a mid grey on a transparent background: the figure takes the notebook's own background
# and reads on a light theme and a dark one alike (a white box stood out on JupyterLab's dark theme).
INK = "#808080"


def _png(fig) -> bytes:
    for ax in fig.axes:
        ax.set_facecolor("none")
        ax.tick_params(colors=INK)
        ax.xaxis.label.set_color(INK)
        ax.yaxis.label.set_color(INK)
        ax.title.set_color(INK)
        for spine in ax.spines.values():
            spine.set_color(INK)
        legend = ax.get_legend()
        if legend is not None:
            legend.get_frame().set_alpha(0)
            for text in legend.get_texts():
                text.set_color(INK)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight", transparent=True)
    return buf.getvalue()


def loss_curve_png(losses, eval_losses=(), title: str = "Loss") -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.0))
    ax = fig.add_subplot()
    if losses:
        steps, values = zip(*losses)
        ax.plot(steps, values, label="train", color="#1f77b4", linewidth=1.2)
    if eval_losses:
        steps, values = zip(*eval_losses)
        ax.plot(steps, values, "o-", label="eval", color="#d62728", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if losses or eval_losses:
        ax.legend(loc="upper right")
    return _png(fig)


def bars_png(labels, values, ylabel: str, title: str) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 3.0))
    ax = fig.add_subplot()
    ax.bar(labels, values, color=["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"][: len(values)])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    for i, v in enumerate(values):
        ax.annotate(f"{v:,.0f}" if v >= 100 else f"{v:.2f}", (i, v), ha="center", va="bottom", color=INK)
    return _png(fig)


def loss_curves_png(curves: dict, title: str = "Loss, run by run") -> bytes:
    """Several runs' training losses on one plot, each labelled."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.0))
    ax = fig.add_subplot()
    for label, losses in curves.items():
        if losses:
            steps, values = zip(*losses)
            ax.plot(steps, values, label=label, linewidth=1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    return _png(fig)
