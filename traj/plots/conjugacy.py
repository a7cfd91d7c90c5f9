"""Figures of a ConjugacyResult (Redman et al. 2024 figs. 1-4)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..analysis.conjugacy import ConjugacyResult
from ..display import mathtext
from .common import draw_matrix, panels, unit_circle

__all__ = ["plot_distance_matrix", "plot_null", "plot_spectra", "plot_window_distances"]


def plot_spectra(result: ConjugacyResult, *, ax: Any = None) -> Any:
    """The k compared eigenvalues of every run on the unit circle, with an inset around λ = 1.

    Runs are told apart even where their eigenvalues coincide (OMD and OGD): each has its own
    marker, hollow and a size smaller than the previous run's, so coinciding points show as
    concentric rings; the inset magnifies the eigenvalues near λ = 1, where slow modes crowd.
    """
    fig, (ax,) = panels(ax, 1, (5.4, 5.4))
    unit_circle(ax)
    markers = "osD^v<>ph*"
    colours = [f"C{i % 10}" for i in range(len(result.names))]
    sizes = [max(12.0, 110.0 - 22.0 * i) for i in range(len(result.names))]

    def draw(target: Any, labels: bool) -> None:
        for i, name in enumerate(result.names):
            z = result.eigenvalues(i)
            target.scatter(z.real, z.imag, marker=markers[i % len(markers)], s=sizes[i], facecolors="none",
                           edgecolors=colours[i], linewidths=1.3, label=mathtext(name) if labels else None)

    draw(ax, True)
    ax.set_title(f"Koopman eigenvalues (k = {result.k} per run)")
    ax.legend(fontsize=7, loc="lower left")
    near = np.concatenate([result.eigenvalues(i) for i in range(len(result.names))])
    near = near[np.abs(near - 1) < 0.15]
    if near.size:
        pad = max(float(np.ptp(near.real)), float(np.ptp(near.imag)), 2e-3) * 0.15
        inset = ax.inset_axes((0.06, 0.6, 0.42, 0.34))
        theta = np.linspace(-np.pi, np.pi, 4001)
        inset.plot(np.cos(theta), np.sin(theta), color="0.6", lw=0.8)
        draw(inset, False)
        inset.set_xlim(near.real.min() - pad, near.real.max() + pad)
        inset.set_ylim(near.imag.min() - pad, near.imag.max() + pad)
        inset.set_title("near λ = 1 (zoomed)", fontsize=7)
        inset.tick_params(labelsize=6)
        ax.indicate_inset_zoom(inset, edgecolor="0.5")
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
    """W1 between consecutive windows of one run: dynamical transitions (Redman et al. 2024 fig. 4)."""
    if result.windows is None:
        raise ValueError("the result compares no windows (fit with windows=W)")
    labels = [f"{a}-{b}" for a, b in result.windows.steps]
    fig, (matrix,) = panels(ax, 1, (1.2 * len(labels) + 3, 1.0 * len(labels) + 2.5))
    draw_matrix(matrix, result.windows.distance, labels, "W1 between windows (steps)", colorbar="W1")
    if ax is None:
        fig.tight_layout()
    return fig


def plot_null(result: ConjugacyResult, *, ax: Any = None) -> Any:
    """The nulls' distances (seed null: runs differing only in seed; reparametrisation null: the first
    run and its seed-null runs through smooth coordinate maps) with their quantiles and every observed distance marked.

    Log-spaced bins over every distance and threshold shown (zeros drawn at the left edge), so
    a null of 1e-6 and a distance of 0.6 both stay on the axis.
    """
    reparam = result.reparam.distances if result.reparam is not None else np.zeros(0)
    if result.null_threshold is None and not reparam.size:
        raise ValueError("the result has no null (fit with null runs or null_size > 0)")
    fig, (hist,) = panels(ax, 1, (8.5, 3.8))
    null = result.null_distances
    observed = np.array([v.score for v in result.verdicts], dtype=float)  # in the threshold's units
    standardised = result.rule == "reproducible"
    margin = 0.0 if standardised else result.margin  # a W1 margin is not on a standardised axis
    bound = "conformal bound" if standardised else "quantile"
    shown = np.concatenate([null, reparam, observed, [result.threshold or 0.0, result.null_threshold or 0.0, margin]])
    positive = shown[shown > 0]
    lo = positive.min() / 2 if positive.size else 1e-12
    hi = max(positive.max() * 2 if positive.size else 1.0, lo * 10)
    bins = np.geomspace(lo, hi, max(5, min(30, null.size + reparam.size)) + 1)
    if null.size:
        hist.hist(np.clip(null, lo, hi), bins=bins, color="0.7", alpha=0.8,
                  label="seed null: each family run against the others" if standardised else "seed null")
    if result.null_threshold is not None:
        hist.axvline(max(result.null_threshold, lo), color="k", ls="--", lw=1,
                     label=f"seed null {100 * result.quantile:g} % {'bound for a new run' if standardised else bound}")
    if reparam.size and result.reparam is not None:
        hist.hist(np.clip(reparam, lo, hi), bins=bins, color="#9ecae1", alpha=0.8, label="reparametrisation null")
        hist.axvline(max(result.reparam.threshold or lo, lo), color="#3182bd", ls="--", lw=1,
                     label=f"reparametrisation null {100 * result.quantile:g} % {bound}")
    if margin:
        hist.axvline(margin, color="k", ls=":", lw=1, label="equivalence margin")
    names = dict(zip(result.runs, result.names, strict=True))
    for v in result.verdicts:
        colour = "#31a354" if v.verdict == "conjugate" else "#de2d26"
        hist.axvline(max(v.score, lo), color=colour, lw=1.5,
                     label=f"{mathtext(names[v.a])} vs {mathtext(names[v.b])}: {v.verdict}")
    hist.set_xscale("log")
    hist.set_xlim(lo, hi)
    xlabel = ("standardised distance (mean squared, in units of each eigenvalue's null spread)" if standardised
              else "W1 between Koopman spectra")
    hist.set(xlabel=xlabel, ylabel="count", title="observed distances against the nulls")
    hist.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if ax is None:
        fig.tight_layout()
    return fig
