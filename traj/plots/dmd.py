"""Figures of a DMDResult: spectrum on the unit circle, singular values, reconstructions, layers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..analysis.dmd import DMDEvaluation, DMDResult
from ..display import mathtext
from .common import panels, scatter_spectrum, unit_circle

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .common import AxesLike

__all__ = ["plot_dmd_evaluation", "plot_eigenvalues", "plot_layer_spectra", "plot_reconstruction",
           "plot_singular_values"]


def plot_eigenvalues(result: DMDResult, *, ax: AxesLike | None = None) -> Figure:
    """Eigenvalues on the unit circle; colour = class, marker size = |amplitude|."""
    fig, (ax,) = panels(ax, 1, (5.2, 5.2))
    unit_circle(ax)
    scatter_spectrum(ax, result.eigenvalues, result.amplitudes, result.classes)
    lim = max(1.1, float(np.abs(result.eigenvalues).max()) * 1.1)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_title(f"DMD eigenvalues (rank {result.rank}, ε = {result.eps:g})")
    ax.legend(loc="lower left", fontsize=8)
    return fig


def plot_singular_values(result: DMDResult, *, ax: AxesLike | None = None) -> Figure:
    """Singular values of X (relative to σ1), the kept rank and the Gavish–Donoho threshold."""
    op = result.operator
    sigma = op.singular_values / op.singular_values[0]
    fig, (ax,) = panels(ax, 1, (6, 3.6))
    k = np.arange(1, sigma.size + 1)
    ax.semilogy(k, np.clip(sigma, 1e-18, None), "o-", ms=3, lw=0.8, color="0.3", label="σ_k / σ_1")
    ax.semilogy(k[: op.rank], np.clip(sigma[: op.rank], 1e-18, None), "o", ms=5, color="#de2d26",
                label=f"kept (r = {op.rank})")
    if op.threshold is not None:
        ax.axhline(op.threshold / op.singular_values[0], color="#2b8cbe", ls="--", lw=1, label="Gavish–Donoho threshold")
    ax.axhline(op.floor / op.singular_values[0], color="0.6", ls=":", lw=1, label="precision floor")
    ax.set(xlabel="k", ylabel="σ_k / σ_1", title="singular values of the snapshot matrix")
    ax.legend(fontsize=8)
    return fig


def plot_reconstruction(result: DMDResult, *, ax: AxesLike | None = None) -> Figure:
    """Sampled weights: recorded trajectory, DMD reconstruction and forecast past the window (a panel each)."""
    n = len(result.sample_names)
    cols = 3 if n > 4 else max(1, n)
    fig, axes = panels(ax, n, (3.6 * cols, 2.6 * int(np.ceil(n / cols))), cols=cols)
    t_rec = result.sample_trajectories.shape[0]
    times = result.reconstruction_steps
    for j, a in enumerate(axes):
        a.plot(times[:t_rec], result.sample_trajectories[:, j], color="0.2", lw=1.2, label="recorded")
        a.plot(times[:t_rec], result.sample_reconstruction[:t_rec, j], color="#de2d26", lw=1, ls="--", label="DMD")
        if times.size > t_rec:
            a.plot(times[t_rec - 1 :], result.sample_reconstruction[t_rec - 1 :, j], color="#2b8cbe", lw=1.2,
                   label="forecast")
            a.axvline(times[t_rec - 1], color="0.7", lw=0.6)
        a.set_title(mathtext(result.sample_names[j]), fontsize=8)
        a.tick_params(labelsize=7)
        if j == 0:
            a.legend(fontsize=7)
    if ax is None:
        fig.supxlabel("training step")
        fig.tight_layout()
    return fig


def plot_layer_spectra(result: DMDResult, *, ax: AxesLike | None = None, max_layers: int = 12) -> Figure:
    """One unit-circle panel per layer (per-layer DMD over the same window)."""
    spectra = result.per_layer[:max_layers]
    n = len(spectra)
    cols = min(4, n)
    fig, axes = panels(ax, n, (3.2 * cols, 3.2 * int(np.ceil(n / cols))), cols=cols)
    for a, spec in zip(axes, spectra, strict=True):
        unit_circle(a)
        scatter_spectrum(a, spec.eigenvalues, spec.amplitudes, spec.classes)
        a.set_title(f"{mathtext(spec.name)} (r = {spec.rank})", fontsize=8)
        a.set_xlim(-1.15, 1.15)
        a.set_ylim(-1.15, 1.15)
        a.tick_params(labelsize=7)
    if ax is None:
        fig.tight_layout()
    return fig


def plot_dmd_evaluation(ev: DMDEvaluation, *, ax: AxesLike | None = None) -> Figure:
    """The recipe's metric of the original and of DMD-reconstructed weights per snapshot, one line per
    rank, the forecast dashed past the window (Turjeman et al. 2022 figs. 1, 5, 22): a
    :class:`~traj.analysis.dmd.DMDEvaluation` (``traj dmd --evaluate``; ``DMDRun.evaluation``)."""
    metric = ev.metric
    fig, (ax,) = panels(ax, 1, (7, 3.8))
    ax.plot(ev.snapshots, ev.original[metric], "o-", ms=3, color="0.2", label="original")
    ahead = ev.window[1] + ev.forecast_offsets
    if ahead.size and np.isfinite(ev.forecast_original[metric]).any():
        ax.plot(ahead, ev.forecast_original[metric], "o-", ms=3, color="0.6", label="original, past the window")
    colors = ("#de2d26", "#3182bd", "#31a354", "#756bb1", "#fd8d3c")
    for i, (rank, values, err) in enumerate(zip(ev.ranks, ev.reconstructed, ev.motion_errors, strict=True)):
        color = colors[i % len(colors)]
        ax.plot(ev.snapshots, values[metric], "s--", ms=3, color=color, label=f"DMD rank {rank} (motion err {err:.3f})")
        if ahead.size:
            ax.plot(ahead, ev.forecast[i][metric], ":", color=color, lw=1.5)
    if ahead.size:
        ax.axvline(ev.window[1], color="0.5", lw=0.8, ls=":")
    ax.set(xlabel="snapshot", ylabel=f"validation {metric}",
           title=f"validation {metric}: original vs DMD-reconstructed weights" + (" (dotted: forecast)" if ahead.size else ""))
    ax.legend(fontsize=7)
    return fig
