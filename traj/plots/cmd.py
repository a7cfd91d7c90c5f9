"""Figures of a CMDResult (Turjeman et al. 2022, figures 1-7); every number drawn comes from the result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..analysis.cmd import CMDResult, CMDRun
from ..display import mathtext
from .common import panels

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .common import AxesLike

__all__ = ["plot_corr_matrix", "plot_evaluation", "plot_history_sweep", "plot_mode_bands", "plot_model_comparison",
           "plot_modes_per_layer", "plot_references",
           "plot_sample_fits", "plot_sweep"]


def plot_corr_matrix(result: CMDResult, *, ax: AxesLike | None = None) -> Figure:
    """|corr| of the sampled weights, ordered by the dendrogram, with mode boundaries (fig. 2)."""
    fig, (ax,) = panels(ax, 1, (5.6, 5))
    labels = result.sample_labels[result.sample_order]
    im = ax.imshow(result.ordered_corr, vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
    for e in np.flatnonzero(np.diff(labels)) + 0.5:
        ax.axhline(e, color="w", lw=0.6)
        ax.axvline(e, color="w", lw=0.6)
    fig.colorbar(im, ax=ax, label="|corr|")
    ax.set(title=f"|corr| of {result.sample_order.size} sampled weights, {result.modes} modes", xlabel="sample",
           ylabel="sample")
    return fig


def plot_references(result: CMDResult, *, ax: AxesLike | None = None) -> Figure:
    """Each mode's reference profile (the first 20), normalised to zero mean and unit peak."""
    fig, (ax,) = panels(ax, 1, (7, 3.8))
    for m, r in enumerate(result.model.references[:20]):
        c = r - r.mean()
        peak = np.abs(c).max()
        ax.plot(result.steps, c / peak if peak > 0 else c, lw=1, label=f"mode {m} ({result.mode_sizes[m]})")
    ax.set(xlabel="step", ylabel="normalised reference", title="reference profiles (mode size in brackets)")
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_mode_bands(result: CMDResult, *, ax: AxesLike | None = None) -> Figure:
    """Per mode: the 95 % band of its sampled members (sign-aligned z-scores) and the reference (fig. 3)."""
    bands = result.bands
    n = bands.members.size
    cols = min(4, n)
    fig, axes = panels(ax, n, (3.4 * cols, 2.6 * int(np.ceil(n / cols))), cols=cols)
    for m, a in enumerate(axes):
        a.fill_between(result.steps, bands.low[m], bands.high[m], color="#9ecae1", alpha=0.8, label="95 % of members")
        a.plot(result.steps, bands.reference[m], color="#08519c", lw=1.2, label="reference")
        a.set_title(f"mode {m}: {bands.members[m]} sampled", fontsize=8)
        a.tick_params(labelsize=7)
        if m == 0:
            a.legend(fontsize=7)
    if ax is None:
        fig.tight_layout()
    return fig


def plot_modes_per_layer(result: CMDResult, *, ax: AxesLike | None = None) -> Figure:
    """How many weights of each layer fall in each mode (fig. 4b)."""
    names = list(result.modes_per_layer)
    counts = np.array([result.modes_per_layer[n] for n in names], dtype=float)
    fig, (bars,) = panels(ax, 1, (max(5, 0.6 * len(names) + 2), 3.8))
    bottom = np.zeros(len(names))
    for m in range(counts.shape[1]):
        bars.bar(range(len(names)), counts[:, m], bottom=bottom, label=f"mode {m}")
        bottom += counts[:, m]
    bars.set_xticks(range(len(names)), [mathtext(n) for n in names], rotation=45, ha="right", fontsize=7)
    bars.set(ylabel="weights", title="modes per layer")
    if counts.shape[1] <= 12:
        bars.legend(fontsize=7, ncol=2)
    if ax is None:
        fig.tight_layout()
    return fig


def plot_sample_fits(result: CMDResult, *, ax: AxesLike | None = None) -> Figure:
    """A few sampled weights (``result.fit_samples``) beside their CMD reconstruction (fig. 1 / 23)."""
    picks = result.fit_samples
    fig, axes = panels(ax, picks.size, (3.6 * 3, 2.5 * int(np.ceil(picks.size / 3))), cols=3)
    for a, j in zip(axes, picks, strict=True):
        a.plot(result.steps, result.sample_trajectories[:, j], color="0.2", lw=1.2, label="recorded")
        a.plot(result.steps, result.sample_reconstruction[:, j], color="#de2d26", lw=1, ls="--", label="CMD")
        a.set_title(f"θ[{result.sample_indices[j]}], mode {result.sample_labels[j]}", fontsize=8)
        a.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    if ax is None:
        fig.tight_layout()
    return fig


def plot_evaluation(run: CMDRun, *, ax: AxesLike | None = None) -> Figure:
    """The recipe's metric of the original, CMD-reconstructed and EMA weights per snapshot (figs. 5a, 7, 19-21):
    a :class:`~traj.analysis.cmd.CMDRun` with its evaluation (``run_cmd`` with an evaluator)."""
    ev, result = run.evaluation, run.fit
    if ev is None:
        raise ValueError("the run holds no evaluation (run_cmd with an evaluator)")
    metric = ev.metric
    fig, (ax,) = panels(ax, 1, (6.5, 3.8))
    ax.plot(ev.steps, ev.original[metric], "o-", ms=3, color="0.2", label="original")
    ax.plot(ev.steps, ev.cmd[metric], "o--", ms=3, color="#de2d26", label=f"CMD, {result.modes} modes")
    for track, color in zip(ev.ema, ("#31a354", "#756bb1", "#fd8d3c", "#636363", "#9ecae1"), strict=False):
        stale = f", {track.first_weight:.2f} on the first snapshot" if track.stale else ""
        ax.plot(ev.steps, track.metrics[metric], "s:", ms=3, color=color, label=f"EMA β = {track.beta:g}{stale}")
    vs = "CMD and EMA weights" if ev.ema else "CMD weights"
    ax.set(xlabel="step", ylabel=f"validation {metric}", title=f"validation {metric}: original vs {vs}")
    ax.legend(fontsize=8)
    return fig


def plot_sweep(run: CMDRun, *, ax: AxesLike | None = None) -> Figure:
    """Best reconstructed accuracy (or loss), MSE, and the agreement of sampling seeds against M (figs. 6, 9):
    a :class:`~traj.analysis.cmd.CMDRun`'s sweep over M."""
    rows = run.sweep
    fig, (ax1, ax2, ax3) = panels(ax, 3, (13, 3.6))
    modes = [r.modes for r in rows]
    metric = rows[0].metric if rows else None
    if metric:
        ax1.plot(modes, [r.best_cmd for r in rows], "o-", color="#de2d26", label="CMD")
        ax1.axhline(rows[0].best_original, color="0.3", ls="--", label="original")
        ax1.set(xlabel="modes M", ylabel=f"best {metric}", title=f"best {metric} vs M")
        ax1.legend(fontsize=8)
    else:
        ax1.axis("off")
    ax2.semilogy(modes, [r.mse for r in rows], "o-", color="#08519c")
    ax2.set(xlabel="modes M", ylabel="weight MSE", title="reconstruction MSE vs M")
    stable = [r for r in rows if r.stability is not None]
    if stable:
        median = np.array([np.median(r.stability.ari) for r in stable])
        low = median - np.array([r.stability.ari.min() for r in stable])
        high = np.array([r.stability.ari.max() for r in stable]) - median
        ax3.errorbar([r.modes for r in stable], median, yerr=[low, high], fmt="o-", color="#31a354", capsize=3)
        ax3.set(xlabel="modes M", ylabel="adjusted Rand index", ylim=(min(0.0, float((median - low).min())), 1.02),
                title=f"partitions of {len(stable[0].stability.seeds)} sampling seeds: median, min-max")
    else:
        ax3.axis("off")
    if ax is None:
        fig.tight_layout()
    return fig


def plot_model_comparison(comparison: Any, *, ax: AxesLike | None = None) -> Figure:
    """The original run beside DMD at each rank and CMD at each M, one panel each (Turjeman et al. 2022 figs. 1, 5, 22)."""
    ev = comparison.dmd
    metric = comparison.metric
    n = len(ev.ranks) + len(comparison.cmd_modes)
    cols = min(3, n)
    fig, axes = panels(ax, n, (3.8 * cols, 2.9 * int(np.ceil(n / cols))), cols=cols)
    curves = [(f"DMD rank {r}", v, e, "#3182bd") for r, v, e in zip(ev.ranks, ev.reconstructed, ev.motion_errors,
                                                                   strict=True)]
    curves += [(f"CMD M = {m}", v, e, "#de2d26") for m, v, e in zip(comparison.cmd_modes, comparison.cmd,
                                                                    comparison.cmd_motion_errors, strict=True)]
    every = np.concatenate([ev.original[metric], *(c[1][metric] for c in curves)])
    margin = 0.04 * float(np.ptp(every)) or 0.01
    for a, (name, values, err, color) in zip(axes, curves, strict=True):
        a.set_ylim(float(every.min()) - margin, float(every.max()) + margin)
        a.plot(ev.snapshots, ev.original[metric], "-", color="0.3", lw=1.2, label="original")
        a.plot(ev.snapshots, values[metric], "--", color=color, lw=1.2, label=name)
        a.set_title(f"{name}: motion error {err:.3f}", fontsize=8)
        a.tick_params(labelsize=7)
        a.set_xlabel("snapshot", fontsize=7)
    axes[0].set_ylabel(f"validation {metric}", fontsize=8)
    axes[0].legend(fontsize=7)
    if ax is None:
        fig.tight_layout()
    return fig


def plot_history_sweep(sweep: Any, *, ax: AxesLike | None = None) -> Figure:
    """CMD's metric (mean over the shared snapshots, and at the last) and relative error against the history
    length or the snapshot spacing, one line per M (Turjeman et al. 2022 figs. 13-14)."""
    fig, (ax1, ax2) = panels(ax, 2, (10, 3.6))
    what = "history start (snapshot)" if sweep.kind == "window" else "snapshot spacing s"
    modes = sorted({r.modes for r in sweep.rows})
    for m, color in zip(modes, ("#de2d26", "#3182bd", "#31a354", "#756bb1", "#fd8d3c", "#636363") * 4, strict=False):
        rows = [r for r in sweep.rows if r.modes == m]
        x = [r.setting for r in rows]
        if sweep.metric:
            ax1.plot(x, [r.metric_mean for r in rows], "o-", color=color, label=f"CMD M = {m}, mean")
            ax1.plot(x, [r.metric_last for r in rows], "s:", color=color, ms=3, label=f"CMD M = {m}, last")
        ax2.plot(x, [r.relative_error for r in rows], "o-", color=color, label=f"M = {m}")
    if sweep.metric:
        ax1.axhline(sweep.original_mean, color="0.3", ls="--", lw=1, label="original, mean")
        ax1.axhline(sweep.original_last, color="0.6", ls=":", lw=1, label="original, last")
        ax1.set(xlabel=what, ylabel=f"validation {sweep.metric}",
                title=f"{sweep.metric} over the {sweep.scored.size} snapshots every setting shares")
        ax1.legend(fontsize=7)
    else:
        ax1.axis("off")
    ax2.set(xlabel=what, ylabel="relative error ‖D − D̂‖/‖D‖", title="weight reconstruction error")
    ax2.legend(fontsize=7)
    if ax is None:
        fig.tight_layout()
    return fig
