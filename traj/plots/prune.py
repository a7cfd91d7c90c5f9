"""Figures of a PruneResult (Redman et al. 2022 figs. 1-5)."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from ..analysis.prune import PruneResult
from ..display import mathtext
from .common import panels, scatter_spectrum, unit_circle

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .common import AxesLike

__all__ = ["COLOURS", "plot_accuracy", "plot_epoch_overlap", "plot_overlap", "plot_spectrum"]

COLOURS = MappingProxyType({"kmp": "#de2d26", "kgp": "#fd8d3c", "gmp": "#08519c", "jgp": "#31a354", "ggp": "#74c476",
                            "lsp": "#636363"})


def plot_accuracy(result: PruneResult, *, ax: AxesLike | None = None) -> Figure:
    """Compression vs metric per method: dashed right after pruning, solid after refinement."""
    if result.accuracy is None or result.metric is None or result.baseline is None:
        raise ValueError("the result holds no accuracy (prune with a recipe)")
    fig, (ax,) = panels(ax, 1, (6.8, 4.2))
    cs = result.compressions
    for m in result.methods:
        after = result.accuracy[m]
        ax.errorbar(cs, after.mean, yerr=after.std, ls="--", marker="o", ms=3, color=COLOURS.get(m), alpha=0.8,
                    capsize=2)
        if result.accuracy_refined:
            tuned = result.accuracy_refined[m]
            ax.errorbar(cs, tuned.mean, yerr=tuned.std, ls="-", marker="o", ms=3, color=COLOURS.get(m), capsize=2,
                        label=m.upper())
        else:
            ax.plot([], [], color=COLOURS.get(m), label=m.upper())
    ax.axhline(result.baseline[result.metric], color="0.5", ls=":", lw=1, label="unpruned")
    ax.set_xscale("log", base=2)
    metric = mathtext(result.metric)
    ax.set(xlabel="compression c (keep 1/c of the prunable weights)", ylabel=f"validation {metric}",
           title=f"{metric} after pruning (dashed) and after {result.refine_epochs} refining epoch(s) (solid)")
    ax.legend(fontsize=8)
    return fig


def plot_overlap(result: PruneResult, *, ax: AxesLike | None = None) -> Figure:
    """Mask overlap between pairs of methods against compression (Redman et al. 2022 fig. 3)."""
    fig, (ax,) = panels(ax, 1, (6.5, 4))
    for (a, b), values in result.overlap.items():
        highlight = (a, b) in (("kmp", "gmp"), ("kgp", "jgp"))
        ax.plot(result.compressions, values, marker="o", ms=3, lw=2 if highlight else 0.8,
                alpha=1 if highlight else 0.5, label=f"{a}-{b}".upper())
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, 1.02)
    ax.set(xlabel="compression c", ylabel="overlap Σ mᴬmᴮ / (N/c)", title="overlap of kept weights")
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_spectrum(result: PruneResult, *, ax: AxesLike | None = None) -> Figure:
    """The epoch's Koopman eigenvalues with λ1 and the KGP modes marked (Redman et al. 2022 fig. 4)."""
    fig, (ax,) = panels(ax, 1, (5.2, 5.2))
    unit_circle(ax)
    scatter_spectrum(ax, result.eigenvalues, np.ones(len(result.eigenvalues)), result.classes)
    ax.scatter([result.lambda1.real], [result.lambda1.imag], s=160, facecolors="none", edgecolors="k", lw=1.5,
               label=f"λ1 = {result.lambda1.real:.4f}{result.lambda1.imag:+.4f}i (KMP)")
    if result.kgp_modes:
        z = np.array([m.eigenvalue for m in result.kgp_modes])
        ax.scatter(z.real, z.imag, marker="s", s=90, facecolors="none", edgecolors="#fd8d3c", lw=1.5, label="KGP modes")
    ax.set_title("Koopman eigenvalues of the epoch")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def plot_epoch_overlap(result: PruneResult, *, ax: AxesLike | None = None) -> Figure:
    """Overlap of one method's masks across epochs, and KMP-GMP overlap per epoch (Redman et al. 2022 figs. 3, 5)."""
    info = result.epoch_overlap
    if info is None:
        raise ValueError("the result compares no epochs (prune with epochs=[...])")
    fig, (ax1, ax2) = panels(ax, 2, (10, 4))
    shown = min(1, len(info.compressions) - 1)  # the second compression: the first keeps half of everything
    label = f"{info.compressions[shown]:g}"
    im = ax1.imshow(info.overlap[shown], vmin=0, vmax=1, cmap="viridis")
    ax1.set_xticks(range(len(info.epochs)), info.epochs)
    ax1.set_yticks(range(len(info.epochs)), info.epochs)
    ax1.set(xlabel="epoch", ylabel="epoch", title=f"{info.method.upper()} masks across epochs (c = {label})")
    fig.colorbar(im, ax=ax1)
    for c, values in zip(info.compressions, info.kmp_gmp, strict=True):
        ax2.plot(info.epochs, values, marker="o", ms=3, label=f"c = {c:g}")
    ax2.set_ylim(0, 1.02)
    ax2.set(xlabel="epoch", ylabel="KMP-GMP overlap", title="KMP vs GMP overlap per epoch")
    ax2.legend(fontsize=7)
    if ax is None:
        fig.tight_layout()
    return fig
