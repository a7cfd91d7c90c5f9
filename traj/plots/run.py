"""The overview of a recorded run: loss over steps, the other logged metrics, and each layer's weight norm."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..analysis.overview import LayerNorms
from ..display import mathtext
from .common import panels

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .common import AxesLike

__all__ = ["MAX_NORM_LINES", "plot_run_overview"]

#: Up to this many tensors the weight norms are lines with a legend (outside the axes); more are a heatmap
#: (a legend of 28 tensors covers the curves and cannot name them all).
MAX_NORM_LINES = 8


def plot_run_overview(history: LayerNorms, *, ax: AxesLike | None = None) -> Figure:
    """Training loss per snapshot; the run's other logged metrics (``eval_loss``, accuracy, ...), when it has
    any, each at the snapshots that have a value; and the weight norm of every tensor over steps: one line
    each for up to :data:`MAX_NORM_LINES` tensors, else a heatmap of ‖θ_layer‖ over its largest value."""
    # the live spectrum's series (live.eig_re.j, live.eig_im.j) are traj watch's to draw, not "logged metrics"
    metrics = {name: values for name, values in history.metrics.items()
               if np.isfinite(values).any() and not name.startswith(("live.eig_re.", "live.eig_im."))}
    count = 3 if metrics else 2
    fig, axes = panels(ax, count, (5.2 * count, 3.8))
    ax_loss, ax_norm = axes[0], axes[-1]
    steps, loss = history.steps, history.loss
    if loss is not None and np.isfinite(loss).any():
        ok = np.isfinite(loss)
        ax_loss.plot(steps[ok], loss[ok], lw=1)
        if (loss[ok] > 0).all():
            ax_loss.set_yscale("log")
    else:
        ax_loss.text(0.5, 0.5, "no loss recorded", ha="center", va="center", transform=ax_loss.transAxes)
    ax_loss.set(xlabel="step", ylabel="loss", title="training loss per snapshot")
    if metrics:
        _metrics(axes[1], steps, metrics)
    if len(history.names) <= MAX_NORM_LINES:
        for j, name in enumerate(history.names):
            ax_norm.plot(steps, history.norms[:, j], lw=1, label=mathtext(name))
        ax_norm.set(xlabel="step", ylabel="‖θ_layer‖₂", title="weight norm per tensor")
        if history.names:
            ax_norm.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    else:
        _norm_heatmap(ax_norm, history)
    if ax is None:
        fig.tight_layout()
    return fig


def _metrics(ax: Axes, steps: np.ndarray, metrics: dict[str, np.ndarray]) -> None:
    """Each logged metric at the snapshots that have a value (an eval every few hundred steps: markers)."""
    for name, values in metrics.items():
        ok = np.isfinite(values)
        ax.plot(steps[ok], values[ok], lw=1, marker="o" if ok.sum() <= 50 else None, ms=3, label=mathtext(name))
    ax.set(xlabel="step", title="logged metrics")
    ax.legend(fontsize=7)


def _norm_heatmap(ax: Axes, history: LayerNorms) -> None:
    """‖θ_layer(k)‖ / max_k ‖θ_layer(k)‖: one row per tensor, every tensor named (every k-th past 40)."""
    steps, names = history.steps, history.names
    first, last = (float(steps[0]), float(steps[-1])) if steps.size else (0.0, 1.0)
    image = ax.imshow(history.relative_norms.T, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=1,
                      extent=(first, last if last > first else first + 1, len(names) - 0.5, -0.5))
    every = max(1, -(-len(names) // 40))
    ticks = np.arange(0, len(names), every)
    ax.set_yticks(ticks, [mathtext(names[i]) for i in ticks], fontsize=max(4, 8 - len(ticks) // 10))
    ax.set(xlabel="step", title=f"weight norm per tensor ({len(names)}), over its largest")
    ax.figure.colorbar(image, ax=ax, label="‖θ_layer‖ / max ‖θ_layer‖")
