"""The loss landscape in the plane of the trajectory's first two principal directions (the KGA paper, fig. 6b)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..analysis.landscape import LandscapeResult
from ..display import mathtext
from .common import panels

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .common import AxesLike

__all__ = ["plot_landscape"]


def plot_landscape(result: LandscapeResult, *, ax: AxesLike | None = None) -> Figure:
    """Filled contours of the validation loss (log scale) with each run's projected trajectory on top.

    Each axis keeps its own range (PC2's span is often a few % of PC1's): the aspect is not equal.
    """
    fig, (ax,) = panels(ax, 1, (6.5, 5))
    loss = np.where(np.isfinite(result.loss) & (result.loss > 0), result.loss, np.nan)
    if np.isfinite(loss).any():
        levels = np.geomspace(np.nanmin(loss), np.nanmax(loss), 20) if np.nanmax(loss) > np.nanmin(loss) else 20
        filled = ax.contourf(result.x, result.y, loss.T, levels=levels, cmap="viridis",
                             norm=_log_norm() if not isinstance(levels, int) else None)
        fig.colorbar(filled, ax=ax, label="validation loss", format="%.3g")
    colours = ["#ffffff", "#de2d26", "#fd8d3c", "#9ecae1", "#e7298a", "#a1d99b"]
    for k, run in enumerate(result.runs):
        c = run.coordinates
        colour = colours[k % len(colours)]
        ax.plot(c[:, 0], c[:, 1], "-", color=colour, lw=1.2, label=mathtext(run.label))
        ax.plot(c[0, 0], c[0, 1], "o", color=colour, mec="k", ms=6)
        ax.plot(c[-1, 0], c[-1, 1], "*", color=colour, mec="k", ms=11)
    ax.set_xlim(result.x[0], result.x[-1])
    ax.set_ylim(result.y[0], result.y[-1])
    ax.set(xlabel=f"PC1 ({100 * result.share[0]:.1f} % of the motion)",
           ylabel=f"PC2 ({100 * result.share[1]:.1f} % of the motion)",
           title=f"loss landscape ({'through the final weights' if result.params.center == 'final' else 'through the mean'}"
                 "; o start, * end)")
    ax.legend(fontsize=7, loc="best", facecolor="0.85")
    return fig


def _log_norm() -> Any:
    from matplotlib.colors import LogNorm

    return LogNorm()
