"""Figures of a ConjugacyResult (seed 002 figs. 1-4)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..analysis.conjugacy import ConjugacyResult
from ..display import mathtext
from .common import draw_matrix, panels, unit_circle

__all__ = ["plot_distance_matrix", "plot_null", "plot_spectra", "plot_window_distances"]


def plot_spectra(result: ConjugacyResult, *, ax: Any = None) -> Any:
    """The k compared eigenvalues of every run, overlaid on the unit circle."""
    fig, (ax,) = panels(ax, 1, (5.4, 5.4))
    unit_circle(ax)
    markers = "osD^v<>ph*"
    for i, name in enumerate(result.names):
        z = result.eigenvalues(i)
        ax.scatter(z.real, z.imag, marker=markers[i % len(markers)], s=45, alpha=0.7, label=mathtext(name))
    ax.set_title(f"Koopman eigenvalues (k = {result.k} per run)")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def plot_distance_matrix(result: ConjugacyResult, *, ax: Any = None) -> Any:
    """W1 between every pair of runs."""
    n = len(result.runs)
    fig, (matrix,) = panels(ax, 1, (1.2 * n + 3, 1.0 * n + 2.5))
    draw_matrix(matrix, result.distance, result.names, "W1 between runs", colorbar="W1")
    if ax is None:
        fig.tight_layout()
    return fig


def plot_window_distances(result: ConjugacyResult, *, ax: Any = None) -> Any:
    """W1 between consecutive windows of one run: dynamical transitions (seed 002 fig. 4)."""
    if result.windows is None:
        raise ValueError("the result compares no windows (fit with windows=W)")
    labels = [f"{a}-{b}" for a, b in result.windows.steps]
    fig, (matrix,) = panels(ax, 1, (1.2 * len(labels) + 3, 1.0 * len(labels) + 2.5))
    draw_matrix(matrix, result.windows.distance, labels, "W1 between windows (steps)", colorbar="W1")
    if ax is None:
        fig.tight_layout()
    return fig


def plot_null(result: ConjugacyResult, *, ax: Any = None) -> Any:
    """The null's distances (runs differing only in seed) with every observed distance marked.

    Log-spaced bins over every distance and threshold shown (zeros drawn at the left edge), so
    a null of 1e-6 and a distance of 0.6 both stay on the axis.
    """
    if result.null_threshold is None:
        raise ValueError("the result has no null (fit with null runs)")
    fig, (hist,) = panels(ax, 1, (8.5, 3.8))
    null = result.null_distances
    observed = np.array([v.distance for v in result.verdicts], dtype=float)
    shown = np.concatenate([null, observed, [result.null_threshold, result.margin]])
    positive = shown[shown > 0]
    lo = positive.min() / 2 if positive.size else 1e-12
    hi = max(positive.max() * 2 if positive.size else 1.0, lo * 10)
    bins = np.geomspace(lo, hi, max(5, min(30, null.size)) + 1)
    hist.hist(np.clip(null, lo, hi), bins=bins, color="0.7", label="seed null")
    hist.axvline(max(result.null_threshold, lo), color="k", ls="--", lw=1, label=f"{100 * result.quantile:g} % quantile")
    if result.margin:
        hist.axvline(result.margin, color="k", ls=":", lw=1, label="equivalence margin")
    names = dict(zip(result.runs, result.names, strict=True))
    for v in result.verdicts:
        colour = "#31a354" if v.verdict == "conjugate" else "#de2d26"
        hist.axvline(max(v.distance, lo), color=colour, lw=1.5,
                     label=f"{mathtext(names[v.a])} vs {mathtext(names[v.b])}: {v.verdict}")
    hist.set_xscale("log")
    hist.set_xlim(lo, hi)
    hist.set(xlabel="W1 between Koopman spectra", ylabel="count", title="observed distances against the seed null")
    hist.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if ax is None:
        fig.tight_layout()
    return fig
