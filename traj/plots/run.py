"""The overview of a recorded run: loss over steps and each layer's weight norm."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..analysis.overview import LayerNorms
from ..display import mathtext
from .common import panels

__all__ = ["plot_run_overview"]


def plot_run_overview(history: LayerNorms, *, ax: Any = None) -> Any:
    """Two panels: training loss per snapshot, and ‖θ_layer‖ per layer (the first 12) over steps."""
    fig, (ax_loss, ax_norm) = panels(ax, 2, (10, 3.6))
    steps, loss = history.steps, history.loss
    if loss is not None and np.isfinite(loss).any():
        ok = np.isfinite(loss)
        ax_loss.plot(steps[ok], loss[ok], lw=1)
        if (loss[ok] > 0).all():
            ax_loss.set_yscale("log")
    else:
        ax_loss.text(0.5, 0.5, "no loss recorded", ha="center", va="center", transform=ax_loss.transAxes)
    ax_loss.set(xlabel="step", ylabel="loss", title="training loss per snapshot")
    shown = min(len(history.names), 12)
    for j in range(shown):
        ax_norm.plot(steps, history.norms[:, j], lw=1, label=mathtext(history.names[j]))
    ax_norm.set(xlabel="step", ylabel="‖θ_layer‖₂", title="weight norm per layer")
    ax_norm.legend(fontsize=7, ncol=2 if shown > 6 else 1)
    if ax is None:
        fig.tight_layout()
    return fig
