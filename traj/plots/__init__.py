"""Plots: each ``plot_*(result, *, ax=None)`` draws a result it is given and returns its Figure;
none computes anything (the analyses put what is drawn into their results)."""

from .common import figure_png

__all__ = ["figure_png"]
