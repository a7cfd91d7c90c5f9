"""The figures of ``traj watch --html``: loss and the live monitor's series against the training step, the
latest fit's spectrum on the unit circle, and the window-to-window matrix of the live fits' spectra."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..live.watch import TransitionMatrix, WatchState
from .common import panels, unit_circle

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .common import AxesLike

__all__ = ["plot_live", "plot_live_spectrum", "plot_transition_matrix"]


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


def plot_live_spectrum(state: WatchState, *, ax: AxesLike | None = None) -> Figure:
    """The latest live fit's stored eigenvalues on the unit circle (filled), the fit before it's hollow."""
    fig, (axis,) = panels(ax, 1, (4.6, 4.4))
    unit_circle(axis)
    rows = [int(k) for k in state.fitted if state.spectrum(int(k)).size]
    if rows:
        if len(rows) > 1:
            before = state.spectrum(rows[-2])
            axis.scatter(before.real, before.imag, s=36, facecolors="none", edgecolors="0.55", linewidths=0.8,
                         label=f"step {int(state.steps[rows[-2]])}")
        latest = state.spectrum(rows[-1])
        axis.scatter(latest.real, latest.imag, s=36, c="C0", edgecolors="k", linewidths=0.4,
                     label=f"step {int(state.steps[rows[-1]])}")
        axis.legend(fontsize=7, loc="upper left")
        axis.set_title(f"live spectrum: {latest.size} leading eigenvalues")
    else:
        text = "the run stores no live spectrum" if state.fitted.size else "no live fit yet"
        axis.text(0.5, 0.5, text, ha="center", va="center", transform=axis.transAxes)
        axis.set_title("live spectrum")
    if ax is None:
        fig.tight_layout()
    return fig


def plot_transition_matrix(matrix: TransitionMatrix, *, ax: AxesLike | None = None) -> Figure:
    """W₁ between every two live fits' spectra against the fits' steps (docs/methods.md §4.6): a
    dynamical transition shows as a block edge."""
    fig, (axis,) = panels(ax, 1, (5.2, 4.4))
    steps = matrix.steps
    if steps.size >= 2:
        half = max(float(np.median(np.diff(steps))) / 2, 0.5)
        extent = (float(steps[0]) - half, float(steps[-1]) + half, float(steps[-1]) + half, float(steps[0]) - half)
        image = axis.imshow(matrix.distances, cmap="magma_r", interpolation="nearest", extent=extent)
        fig.colorbar(image, ax=axis, label="W₁ between spectra")
        axis.set(xlabel="step", ylabel="step")
    else:
        axis.text(0.5, 0.5, "fewer than two live fits yet", ha="center", va="center", transform=axis.transAxes)
    axis.set_title("transition matrix: W₁ between live fits")
    if ax is None:
        fig.tight_layout()
    return fig
