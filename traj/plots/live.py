"""The figure of ``traj watch --html``: loss and the live monitor's series against the training step."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..live.watch import WatchState
from .common import panels

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .common import AxesLike

__all__ = ["plot_live"]


def plot_live(state: WatchState, *, ax: AxesLike | None = None) -> Figure:
    """Loss per snapshot, and at each live fit the leading |λ| and the transition score (W₁ to the previous fit)."""
    fig, (ax1, ax2, ax3) = panels(ax, 3, (12, 3.4))
    steps = state.steps
    finite = np.isfinite(state.loss)
    if finite.any():
        ax1.plot(steps[finite], state.loss[finite], "k-", lw=1)
    else:
        ax1.text(0.5, 0.5, "no loss logged", ha="center", va="center", transform=ax1.transAxes)
    ax1.set(title="loss", xlabel="step")
    for axis, name, title in ((ax2, "leading_modulus", "leading |λ| (live fit)"),
                              (ax3, "transition", "transition: W₁ to the previous fit")):
        series = state.live.get(name)
        if series is not None and np.isfinite(series).any():
            shown = np.isfinite(series)
            axis.plot(steps[shown], series[shown], "o-", ms=3, lw=1)
        else:
            axis.text(0.5, 0.5, "no live fit yet", ha="center", va="center", transform=axis.transAxes)
        axis.set(title=title, xlabel="step")
    ax2.axhline(1.0, color="0.6", lw=0.8, ls="--")
    fig.tight_layout()
    return fig
