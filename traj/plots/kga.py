"""Figures of a kga-replay (seed 000 figs. 4, 9 and table 1)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import new_figure


def _values(losses: list[float | None]) -> np.ndarray:
    """Losses with null (a diverged run: not finite) as NaN, which matplotlib leaves out."""
    return np.array([np.nan if v is None else v for v in losses], dtype=np.float64)


def plot_losses(summary: dict[str, Any]) -> Any:
    """Train and validation loss per epoch of the plain run and each KGA run, and the difference."""
    plain = summary["plain"]
    epochs = np.arange(1, len(plain["train_loss"]) + 1)
    fig = new_figure(figsize=(11, 3.8))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.plot(epochs, _values(plain["train_loss"]), "k-", lw=1.5, label="plain")
    ax2.plot(epochs, _values(plain["val_loss"]), "k-", lw=1.5, label="plain")
    for run, row in zip(summary["runs"], summary["comparison"], strict=True):
        ax1.plot(epochs, _values(run["train_loss"]), lw=1, label=f"α = {run['alpha']:g}")
        ax2.plot(epochs, _values(run["val_loss"]), lw=1, label=f"α = {run['alpha']:g}")
        ax3.plot(epochs, _values(row["loss_difference"]), lw=1, label=f"α = {run['alpha']:g}")
    for ax, title in ((ax1, "train loss"), (ax2, "validation loss")):
        ax.set_yscale("log")
        ax.set(xlabel="epoch", title=title)
        ax.legend(fontsize=7)
    ax3.axhline(0, color="k", lw=0.8)
    ax3.set(xlabel="epoch", title="train loss − plain (below 0: KGA ahead)")
    fig.tight_layout()
    return fig


def plot_alpha_sweep(summary: dict[str, Any]) -> Any:
    """Final train loss against the acceleration rate α (seed 000 fig. 9)."""
    rows = summary["comparison"]
    fig = new_figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    ax.plot([r["alpha"] for r in rows], _values([r["final_train_loss"] for r in rows]), "o-", color="#de2d26",
            label="KGA (diverged runs left out)")
    if summary["plain_final_train_loss"] is not None:
        ax.axhline(summary["plain_final_train_loss"], color="k", ls="--", label="plain")
    ax.set_yscale("log")
    ax.set(xlabel="α", ylabel="final train loss", title="acceleration rate sweep")
    ax.legend(fontsize=8)
    return fig


def plot_masked_fraction(summary: dict[str, Any]) -> Any:
    fig = new_figure(figsize=(5.5, 3.5))
    ax = fig.subplots()
    for run in summary["runs"]:
        if run["masked_fraction"]:
            ax.plot(np.arange(1, len(run["masked_fraction"]) + 1), run["masked_fraction"], marker="o", ms=3,
                    label=f"α = {run['alpha']:g}")
    ax.set_ylim(0, 1)
    ax.set(xlabel="DMD refit", ylabel="masked fraction", title="weights masked from acceleration")
    if ax.lines:
        ax.legend(fontsize=7)
    return fig
