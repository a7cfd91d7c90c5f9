"""Figures of a DMDResult: spectrum on the unit circle, singular values, reconstructions, layers."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..display import mathtext
from .common import new_figure

CLASS_COLOURS = {"neutral": "#2b8cbe", "stable": "#31a354", "unstable": "#de2d26"}


def _unit_circle(ax: Any) -> None:
    angle = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(angle), np.sin(angle), color="0.6", lw=0.8)
    ax.axhline(0, color="0.85", lw=0.6)
    ax.axvline(0, color="0.85", lw=0.6)
    ax.set_aspect("equal")
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")


def _scatter_spectrum(ax: Any, eigenvalues: np.ndarray, amplitudes: np.ndarray, classes: list[str]) -> None:
    size = np.abs(amplitudes)
    size = 20 + 180 * size / size.max() if size.size and size.max() > 0 else np.full(len(eigenvalues), 40.0)
    for cls, colour in CLASS_COLOURS.items():
        idx = [i for i, c in enumerate(classes) if c == cls]
        if idx:
            ax.scatter(eigenvalues.real[idx], eigenvalues.imag[idx], s=size[idx], c=colour, alpha=0.75,
                       edgecolors="k", linewidths=0.4, label=f"{cls} ({len(idx)})")


def plot_eigenvalues(result: Any) -> Any:
    """Eigenvalues on the unit circle; colour = class, marker size = |amplitude|."""
    fig = new_figure(figsize=(5.2, 5.2))
    ax = fig.subplots()
    _unit_circle(ax)
    _scatter_spectrum(ax, result.eigenvalues, result.amplitudes, result.classes)
    lim = max(1.1, float(np.abs(result.eigenvalues).max()) * 1.1)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_title(f"DMD eigenvalues (rank {result.rank}, ε = {result.eps:g})")
    ax.legend(loc="lower left", fontsize=8)
    return fig


def plot_singular_values(result: Any) -> Any:
    """Singular values of X (relative to σ1), the kept rank and the Gavish–Donoho threshold."""
    op = result.operator
    sigma = op.singular_values / op.singular_values[0]
    fig = new_figure(figsize=(6, 3.6))
    ax = fig.subplots()
    k = np.arange(1, sigma.size + 1)
    ax.semilogy(k, np.clip(sigma, 1e-18, None), "o-", ms=3, lw=0.8, color="0.3", label="σ_k / σ_1")
    ax.semilogy(k[: op.rank], np.clip(sigma[: op.rank], 1e-18, None), "o", ms=5, color="#de2d26", label=f"kept (r = {op.rank})")
    if op.threshold is not None:
        ax.axhline(op.threshold / op.singular_values[0], color="#2b8cbe", ls="--", lw=1, label="Gavish–Donoho threshold")
    ax.axhline(op.floor / op.singular_values[0], color="0.6", ls=":", lw=1, label="precision floor")
    ax.set(xlabel="k", ylabel="σ_k / σ_1", title="singular values of the snapshot matrix")
    ax.legend(fontsize=8)
    return fig


def plot_reconstruction(result: Any) -> Any:
    """Sampled weights: recorded trajectory, DMD reconstruction and forecast past the window."""
    n = len(result.sample_names)
    cols = 3 if n > 4 else max(1, n)
    rows = int(np.ceil(n / cols))
    fig = new_figure(figsize=(3.6 * cols, 2.6 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    t_rec = result.sample_trajectories.shape[0]
    times = np.arange(result.sample_reconstruction.shape[0])
    for j, ax in enumerate(axes):
        if j >= n:
            ax.axis("off")
            continue
        ax.plot(np.arange(t_rec), result.sample_trajectories[:, j], color="0.2", lw=1.2, label="recorded")
        ax.plot(times[:t_rec], result.sample_reconstruction[:t_rec, j], color="#de2d26", lw=1, ls="--", label="DMD")
        if times.size > t_rec:
            ax.plot(times[t_rec - 1 :], result.sample_reconstruction[t_rec - 1 :, j], color="#2b8cbe", lw=1.2, label="forecast")
            ax.axvline(t_rec - 1, color="0.7", lw=0.6)
        ax.set_title(mathtext(result.sample_names[j]), fontsize=8)
        ax.tick_params(labelsize=7)
        if j == 0:
            ax.legend(fontsize=7)
    fig.supxlabel("snapshot in window")
    fig.tight_layout()
    return fig


def plot_layer_spectra(result: Any, max_layers: int = 12) -> Any:
    """One unit-circle panel per layer (per-layer DMD over the same window)."""
    spectra = result.per_layer[:max_layers]
    n = len(spectra)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig = new_figure(figsize=(3.2 * cols, 3.2 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, spec in zip(axes, spectra, strict=False):
        _unit_circle(ax)
        _scatter_spectrum(ax, spec.eigenvalues, spec.amplitudes, spec.classes)
        ax.set_title(f"{mathtext(spec.name)} (r = {spec.rank})", fontsize=8)
        ax.set_xlim(-1.15, 1.15)
        ax.set_ylim(-1.15, 1.15)
        ax.tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig
