"""Shared plotting helpers: figures built directly (``matplotlib.figure.Figure``, never pyplot, no
backend switched), the unit circle and spectra scatters several plots draw, and PNG export.

Every ``plot_*(result, *, ax=None) -> Figure`` draws into ``ax`` when given (one Axes, or a
sequence of them for a figure of several panels) and into a new Figure otherwise.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..display import mathtext

__all__ = ["CLASS_COLOURS", "draw_matrix", "figure_png", "new_figure", "panels", "scatter_spectrum", "unit_circle"]

CLASS_COLOURS = {"neutral": "#2b8cbe", "stable": "#31a354", "unstable": "#de2d26"}


def new_figure(*args: Any, **kwargs: Any) -> Any:
    """A Figure of its own (no pyplot state: nothing global changes, nothing is shown)."""
    from matplotlib.figure import Figure

    return Figure(*args, **kwargs)


def panels(ax: Any, count: int, figsize: tuple[float, float], *, cols: int | None = None) -> tuple[Any, list[Any]]:
    """The figure and ``count`` axes to draw into: the caller's ``ax`` (one Axes, or a sequence of at least
    ``count``), or a new figure with a grid of ``cols`` columns (default one row); spare grid cells are hidden."""
    if ax is not None:
        axes = list(ax) if isinstance(ax, Sequence | np.ndarray) else [ax]
        if len(axes) < count:
            raise ValueError(f"this plot draws {count} panel(s); {len(axes)} Axes given")
        return axes[0].figure, axes[:count]
    cols = count if cols is None else max(1, min(cols, count))
    rows = int(np.ceil(count / cols))
    fig = new_figure(figsize=figsize)
    axes = list(np.atleast_1d(fig.subplots(rows, cols)).ravel())
    for spare in axes[count:]:
        spare.axis("off")
    return fig, axes[:count]


def unit_circle(ax: Any) -> None:
    """The unit circle and the axes of the complex plane, equal aspect (for eigenvalues)."""
    angle = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(angle), np.sin(angle), color="0.6", lw=0.8)
    ax.axhline(0, color="0.85", lw=0.6)
    ax.axvline(0, color="0.85", lw=0.6)
    ax.set_aspect("equal")
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")


def scatter_spectrum(ax: Any, eigenvalues: np.ndarray, amplitudes: np.ndarray, classes: Sequence[str]) -> None:
    """Eigenvalues coloured by class (one scatter per class present), marker area by |amplitude|."""
    size = np.abs(amplitudes)
    size = 20 + 180 * size / size.max() if size.size and size.max() > 0 else np.full(len(eigenvalues), 40.0)
    for cls, colour in CLASS_COLOURS.items():
        idx = [i for i, c in enumerate(classes) if c == cls]
        if idx:
            ax.scatter(eigenvalues.real[idx], eigenvalues.imag[idx], s=size[idx], c=colour, alpha=0.75,
                       edgecolors="k", linewidths=0.4, label=f"{cls} ({len(idx)})")


def draw_matrix(ax: Any, matrix: np.ndarray, labels: Sequence[str], title: str, *, colorbar: str | None = None) -> Any:
    """A labelled square matrix of numbers, each cell annotated (distance matrices)."""
    im = ax.imshow(matrix, cmap="magma_r")
    shown = [mathtext(label) for label in labels]
    ax.set_xticks(range(len(shown)), shown, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(shown)), shown, fontsize=7)
    top = matrix.max() if matrix.size else 0.0
    for i in range(len(shown)):
        for j in range(len(shown)):
            ax.text(j, i, f"{matrix[i, j]:.2g}", ha="center", va="center", fontsize=6,
                    color="w" if matrix[i, j] > top / 2 else "k")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, label=colorbar)
    ax.set_title(mathtext(title))
    return im


def figure_png(fig: Any, *, dpi: int = 110) -> bytes:
    """The figure as PNG bytes, drawn without LaTeX whatever the user's matplotlibrc says.

    Store text in a figure is data (see :mod:`traj.display`): with ``text.usetex`` on it would
    be handed to LaTeX. A glyph missing from the font (a layer name in an unusual script) is
    drawn as a box without a warning.
    """
    import warnings

    import matplotlib
    from matplotlib.text import Text

    buf = io.BytesIO()
    with matplotlib.rc_context({"text.usetex": False}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from", category=UserWarning)
        for text in fig.findobj(Text):
            text.set_usetex(False)
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()
