"""Figures of a ConjugacyResult (seed 002 figs. 1-4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

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
        ax.scatter(z.real, z.imag, marker=markers[i % len(markers)], s=45, alpha=0.7, label=name)
    ax.set_title(f"Koopman eigenvalues (k = {result.k} per run)")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def plot_distance_matrix(matrix: np.ndarray, labels: list[str], title: str) -> Any:
    fig = new_figure(figsize=(1.2 * len(labels) + 3, 1.0 * len(labels) + 2.5))
    ax = fig.subplots()
    im = ax.imshow(matrix, cmap="magma_r")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{matrix[i, j]:.2g}", ha="center", va="center", fontsize=6,
                    color="w" if matrix[i, j] > matrix.max() / 2 else "k")
    fig.colorbar(im, ax=ax, label="W1")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_null(result: Any) -> Any:
    """The null's distances (runs differing only in seed) with every observed distance marked."""
    fig = new_figure(figsize=(6.5, 3.8))
    ax = fig.subplots()
    null = np.asarray(result.null_distances)
    ax.hist(null, bins=max(5, min(30, null.size)), color="0.7", label="seed null")
    ax.axvline(result.null_threshold, color="k", ls="--", lw=1, label=f"{100 * result.quantile:g} % quantile")
    if result.margin:
        ax.axvline(result.margin, color="k", ls=":", lw=1, label="equivalence margin")
    for v in result.verdicts:
        colour = "#31a354" if v["verdict"] == "conjugate" else "#de2d26"
        ax.axvline(v["distance"], color=colour, lw=1.5,
                   label=f"{Path(v['a']).name.removesuffix('.zarr')} vs {Path(v['b']).name.removesuffix('.zarr')}: {v['verdict']}")
    ax.set_xscale("symlog", linthresh=max(1e-12, float(null.min(initial=1.0)) or 1e-12))
    ax.set(xlabel="W1 between Koopman spectra", ylabel="count", title="observed distances against the seed null")
    ax.legend(fontsize=6)
    return fig
