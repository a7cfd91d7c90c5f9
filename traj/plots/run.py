"""The overview of a recorded run: loss over steps and each layer's weight norm."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..display import mathtext
from .common import new_figure


def plot_run_overview(steps: np.ndarray, loss: np.ndarray | None, names: list[str], norms: np.ndarray) -> Any:
    """Two panels: training loss per snapshot, and ‖θ_layer‖ per layer over steps."""
    fig = new_figure(figsize=(10, 3.6))
    ax_loss, ax_norm = fig.subplots(1, 2)
    if loss is not None and np.isfinite(loss).any():
        ok = np.isfinite(loss)
        ax_loss.plot(steps[ok], loss[ok], lw=1)
        if (loss[ok] > 0).all():
            ax_loss.set_yscale("log")
    else:
        ax_loss.text(0.5, 0.5, "no loss recorded", ha="center", va="center", transform=ax_loss.transAxes)
    ax_loss.set(xlabel="step", ylabel="loss", title="training loss per snapshot")
    shown = min(len(names), 12)
    for j in range(shown):
        ax_norm.plot(steps, norms[:, j], lw=1, label=mathtext(names[j]))
    ax_norm.set(xlabel="step", ylabel="‖θ_layer‖₂", title="weight norm per layer")
    ax_norm.legend(fontsize=7, ncol=2 if shown > 6 else 1)
    fig.tight_layout()
    return fig
