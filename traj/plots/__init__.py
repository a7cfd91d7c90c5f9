"""Plots: each ``plot_*`` draws a result it is given and returns a Figure; none computes anything."""

from .common import figure_png
from .run import plot_run_overview

__all__ = ["figure_png", "plot_run_overview"]
