"""Figures of a ConjugacyResult (seed 002 figs. 1-4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..display import mathtext
from .common import new_figure
from .dmd import _unit_circle


def _names(paths: list[str]) -> list[str]:
    return [Path(p).name.removesuffix(".zarr") for p in paths]


def plot_spectra(result: Any) -> Any:
    """The kept eigenvalues of every run, overlaid on the unit circle."""
    fig = new_figure(figsize=(5.4, 5.4))
    ax = fig.subplots()
    _unit_circle(ax)
    markers = "osD^v<>ph*"
    for i, name in enumerate(_names(result.runs)):
        z = result.eigenvalues(i)
        ax.scatter(z.real, z.imag, marker=markers[i % len(markers)], s=45, alpha=0.7, label=mathtext(name))
    ax.set_title(f"Koopman eigenvalues (k = {result.k} per run)")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def plot_distance_matrix(matrix: np.ndarray, labels: list[str], title: str) -> Any:
    fig = new_figure(figsize=(1.2 * len(labels) + 3, 1.0 * len(labels) + 2.5))
    ax = fig.subplots()
    im = ax.imshow(matrix, cmap="magma_r")
    labels = [mathtext(label) for label in labels]
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{matrix[i, j]:.2g}", ha="center", va="center", fontsize=6,
                    color="w" if matrix[i, j] > matrix.max() / 2 else "k")
    fig.colorbar(im, ax=ax, label="W1")
    ax.set_title(mathtext(title))
    fig.tight_layout()
    return fig


def plot_null(result: Any) -> Any:
    """The null's distances (runs differing only in seed) with every observed distance marked.

    Log-spaced bins over every distance and threshold shown (zeros drawn at the left edge), so
    a null of 1e-6 and a distance of 0.6 both stay on the axis.
    """
    fig = new_figure(figsize=(8.5, 3.8))
    ax = fig.subplots()
    null = np.asarray(result.null_distances, dtype=float)
    observed = np.array([v["distance"] for v in result.verdicts], dtype=float)
    shown = np.concatenate([null, observed, [result.null_threshold, result.margin]])
    positive = shown[shown > 0]
    lo = positive.min() / 2 if positive.size else 1e-12
    hi = max(positive.max() * 2 if positive.size else 1.0, lo * 10)
    bins = np.geomspace(lo, hi, max(5, min(30, null.size)) + 1)
    ax.hist(np.clip(null, lo, hi), bins=bins, color="0.7", label="seed null")
    ax.axvline(max(result.null_threshold, lo), color="k", ls="--", lw=1, label=f"{100 * result.quantile:g} % quantile")
    if result.margin:
        ax.axvline(result.margin, color="k", ls=":", lw=1, label="equivalence margin")
    for v, (a, b) in zip(result.verdicts, [_names([v["a"], v["b"]]) for v in result.verdicts], strict=True):
        colour = "#31a354" if v["verdict"] == "conjugate" else "#de2d26"
        ax.axvline(max(v["distance"], lo), color=colour, lw=1.5, label=f"{mathtext(a)} vs {mathtext(b)}: {v['verdict']}")
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set(xlabel="W1 between Koopman spectra", ylabel="count", title="observed distances against the seed null")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig
