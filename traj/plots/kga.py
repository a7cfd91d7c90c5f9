"""Figures of a kga-replay (the KGA paper, figs. 4, 9 and table 1); a diverged run's losses (not finite) are left out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..training.replays import ReplayResult
from .common import panels

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .common import AxesLike

__all__ = ["plot_alpha_sweep", "plot_losses", "plot_masked_fraction", "plot_validation"]


def plot_losses(result: ReplayResult, *, ax: AxesLike | None = None) -> Figure:
    """Train and validation loss per epoch of the plain run and each KGA run, and the difference."""
    plain = result.plain
    epochs = np.arange(1, len(plain.train_loss) + 1)
    fig, (ax1, ax2, ax3) = panels(ax, 3, (11, 3.8))
    with np.errstate(invalid="ignore"):
        ax1.plot(epochs, _finite(plain.train_loss), "k-", lw=1.5, label="plain")
        ax2.plot(epochs, _finite(plain.val_loss), "k-", lw=1.5, label="plain")
        for run, row in zip(result.runs, result.comparison, strict=True):
            ax1.plot(epochs, _finite(run.train_loss), lw=1, label=run.name)
            ax2.plot(epochs, _finite(run.val_loss), lw=1, label=run.name)
            ax3.plot(epochs, _finite(row.loss_difference), lw=1, label=run.name)
    for a, title in ((ax1, "train loss"), (ax2, "validation loss")):
        a.set_yscale("log")
        a.set(xlabel="epoch", title=title)
        a.legend(fontsize=7)
    ax3.axhline(0, color="k", lw=0.8)
    ax3.set(xlabel="epoch", title="train loss − plain (below 0: ahead of plain)")
    if ax is None:
        fig.tight_layout()
    return fig


def plot_alpha_sweep(result: ReplayResult, *, ax: AxesLike | None = None) -> Figure:
    """Final train loss against the acceleration rate α (the KGA paper, fig. 9)."""
    rows = [r for r in result.comparison if r.method == "kga"]
    fig, (ax,) = panels(ax, 1, (5.5, 3.8))
    ax.plot([r.alpha for r in rows], _finite([r.final_train_loss for r in rows]), "o-", color="#de2d26",
            label="KGA (diverged runs left out)")
    if result.plain_final_train_loss is not None:
        ax.axhline(result.plain_final_train_loss, color="k", ls="--", label="plain")
    ax.set_yscale("log")
    ax.set(xlabel="α", ylabel="final train loss", title="acceleration rate sweep")
    ax.legend(fontsize=8)
    return fig


def plot_validation(result: ReplayResult, *, ax: AxesLike | None = None) -> Figure:
    """Validation loss and accuracy per epoch of every run (the KGA paper, fig. 6a), jumps marked.

    The per-epoch values are measured before an epoch's jump; a taken jump is a dotted vertical
    line in its run's colour and its value right after the jump a hollow marker (× for a jump that
    bootstrap tried and rejected).
    """
    plain = result.plain
    epochs = np.arange(1, len(plain.val_loss) + 1)
    accuracy = plain.val_accuracy is not None
    fig, axes = panels(ax, 2 if accuracy else 1, (10, 3.8))
    series = [("val_loss", "val_loss_after", axes[0])] + ([("val_accuracy", "val_accuracy_after", axes[1])]
                                                          if accuracy else [])
    with np.errstate(invalid="ignore"):
        for field, after_field, a in series:
            a.plot(epochs, _finite(getattr(plain, field)), "k-", lw=1.5, label="plain")
            for run in result.runs:
                values = getattr(run, field)
                if values is None:
                    continue
                (line,) = a.plot(epochs, _finite(values), lw=1, label=run.name)
                jumps = run.jumps
                if jumps is None:
                    continue
                after = _finite(getattr(jumps, after_field))
                for epoch, taken, value in zip(jumps.epochs, jumps.taken, after, strict=True):
                    if taken:
                        a.axvline(epoch, color=line.get_color(), ls=":", lw=0.8)
                    a.plot([epoch], [value], "o" if taken else "x", mfc="none", color=line.get_color(), ms=6)
    axes[0].set_yscale("log")
    axes[0].set(xlabel="epoch", title="validation loss (o: right after a jump, x: rejected)")
    if accuracy:
        axes[1].set(xlabel="epoch", title="validation accuracy")
    axes[0].legend(fontsize=7)
    if ax is None:
        fig.tight_layout()
    return fig


def plot_masked_fraction(result: ReplayResult, *, ax: AxesLike | None = None) -> Figure:
    """The fraction of weights masked from acceleration at each DMD refit of every KGA run."""
    fig, (ax,) = panels(ax, 1, (5.5, 3.5))
    for run in result.accelerated:
        if run.masked_fraction:
            ax.plot(np.arange(1, len(run.masked_fraction) + 1), run.masked_fraction, marker="o", ms=3,
                    label=f"α = {run.alpha:g}")
    ax.set_ylim(0, 1)
    ax.set(xlabel="DMD refit", ylabel="masked fraction", title="weights masked from acceleration")
    if ax.lines:
        ax.legend(fontsize=7)
    return fig


def _finite(values: Any) -> np.ndarray:
    """Values as floats with the non-finite ones NaN (matplotlib leaves NaN out)."""
    array = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(array), array, np.nan)
