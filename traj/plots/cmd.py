"""Figures of a CMDResult (seed 001's figures 1-7)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..display import mathtext
from .common import new_figure


def plot_corr_matrix(result: Any) -> Any:
    """|corr| of the sampled weights, ordered by the dendrogram, with mode boundaries (fig. 2)."""
    order = result.sample_order
    corr = result.sample_corr[np.ix_(order, order)]
    labels = result.sample_labels[order]
    fig = new_figure(figsize=(5.6, 5))
    ax = fig.subplots()
    im = ax.imshow(corr, vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
    edges = np.flatnonzero(np.diff(labels)) + 0.5
    for e in edges:
        ax.axhline(e, color="w", lw=0.6)
        ax.axvline(e, color="w", lw=0.6)
    fig.colorbar(im, ax=ax, label="|corr|")
    ax.set(title=f"|corr| of {order.size} sampled weights, {result.modes} modes", xlabel="sample", ylabel="sample")
    return fig


def plot_references(result: Any) -> Any:
    """Each mode's reference profile, normalised to zero mean and unit peak."""
    refs = result.model.references
    fig = new_figure(figsize=(7, 3.8))
    ax = fig.subplots()
    for m, r in enumerate(refs[:20]):
        c = r - r.mean()
        peak = np.abs(c).max()
        ax.plot(result.steps, c / peak if peak > 0 else c, lw=1, label=f"mode {m} ({result.mode_sizes[m]})")
    ax.set(xlabel="step", ylabel="normalised reference", title="reference profiles (mode size in brackets)")
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_mode_bands(result: Any, max_modes: int = 12) -> Any:
    """Per mode: the sampled members normalised (sign-aligned z-scores), their 95 % band and
    the reference (fig. 3)."""
    traj = result.sample_trajectories
    z = traj - traj.mean(axis=0)
    std = z.std(axis=0)
    z = np.divide(z, std, out=np.zeros_like(z), where=std > 0)
    modes = min(result.modes, max_modes)
    cols = min(4, modes)
    rows = int(np.ceil(modes / cols))
    fig = new_figure(figsize=(3.4 * cols, 2.6 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    ref_pos = {int(i): j for j, i in enumerate(result.sample_indices)}
    for m, ax in enumerate(axes):
        if m >= modes:
            ax.axis("off")
            continue
        members = np.flatnonzero(result.sample_labels == m)
        ref = z[:, ref_pos[int(result.reference_indices[m])]]
        signs = np.sign(ref @ z[:, members])
        aligned = z[:, members] * np.where(signs == 0, 1, signs)
        lo, hi = np.percentile(aligned, [2.5, 97.5], axis=1)
        ax.fill_between(result.steps, lo, hi, color="#9ecae1", alpha=0.8, label="95 % of members")
        ax.plot(result.steps, ref, color="#08519c", lw=1.2, label="reference")
        ax.set_title(f"mode {m}: {members.size} sampled", fontsize=8)
        ax.tick_params(labelsize=7)
        if m == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_modes_per_layer(result: Any) -> Any:
    """How many weights of each layer fall in each mode (fig. 4b)."""
    names = list(result.modes_per_layer)
    counts = np.array([result.modes_per_layer[n] for n in names], dtype=float)
    fig = new_figure(figsize=(max(5, 0.6 * len(names) + 2), 3.8))
    ax = fig.subplots()
    bottom = np.zeros(len(names))
    for m in range(counts.shape[1]):
        ax.bar(range(len(names)), counts[:, m], bottom=bottom, label=f"mode {m}")
        bottom += counts[:, m]
    ax.set_xticks(range(len(names)), [mathtext(n) for n in names], rotation=45, ha="right", fontsize=7)
    ax.set(ylabel="weights", title="modes per layer")
    if counts.shape[1] <= 12:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_sample_fits(result: Any, reconstruction: np.ndarray, n: int = 6) -> Any:
    """A few sampled weights beside their CMD reconstruction (fig. 1 / 23)."""
    rng = np.random.default_rng(0)
    picks = np.sort(rng.choice(result.sample_indices.size, size=min(n, result.sample_indices.size), replace=False))
    cols = 3
    rows = int(np.ceil(picks.size / cols))
    fig = new_figure(figsize=(3.6 * cols, 2.5 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, j in zip(axes, picks, strict=False):
        ax.plot(result.steps, result.sample_trajectories[:, j], color="0.2", lw=1.2, label="recorded")
        ax.plot(result.steps, reconstruction[:, j], color="#de2d26", lw=1, ls="--", label="CMD")
        ax.set_title(f"θ[{result.sample_indices[j]}], mode {result.sample_labels[j]}", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    for ax in axes[picks.size :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_evaluation(result: Any) -> Any:
    """The recipe's metric of the original and CMD-reconstructed weights per snapshot (fig. 5a, 7)."""
    ev = result.evaluation
    metric = "accuracy" if "cmd_accuracy" in ev[0] else "loss"
    steps = [r["step"] for r in ev]
    fig = new_figure(figsize=(6.5, 3.8))
    ax = fig.subplots()
    ax.plot(steps, [r[f"original_{metric}"] for r in ev], "o-", ms=3, color="0.2", label="original")
    ax.plot(steps, [r[f"cmd_{metric}"] for r in ev], "o--", ms=3, color="#de2d26", label=f"CMD, {result.modes} modes")
    ax.set(xlabel="step", ylabel=f"validation {metric}", title=f"validation {metric}: original vs CMD weights")
    ax.legend(fontsize=8)
    return fig


def plot_sweep(sweep: list[dict[str, Any]]) -> Any:
    """Best reconstructed accuracy (or loss) and MSE against the number of modes (fig. 6)."""
    modes = [r["modes"] for r in sweep]
    fig = new_figure(figsize=(9, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    metric = next((k.removeprefix("best_cmd_") for k in sweep[0] if k.startswith("best_cmd_")), None)
    if metric:
        ax1.plot(modes, [r[f"best_cmd_{metric}"] for r in sweep], "o-", color="#de2d26", label="CMD")
        ax1.axhline(sweep[0][f"best_original_{metric}"], color="0.3", ls="--", label="original")
        ax1.set(xlabel="modes M", ylabel=f"best {metric}", title=f"best {metric} vs M")
        ax1.legend(fontsize=8)
    else:
        ax1.axis("off")
    ax2.semilogy(modes, [r["mse"] for r in sweep], "o-", color="#08519c")
    ax2.set(xlabel="modes M", ylabel="weight MSE", title="reconstruction MSE vs M")
    fig.tight_layout()
    return fig
