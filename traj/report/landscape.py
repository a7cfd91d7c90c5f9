"""The report of ``traj landscape`` (and its section in a kga-replay report)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.landscape import LandscapeResult
from ..display import printable
from ..plots import figure_png
from ..plots.landscape import plot_landscape
from .writer import Report, write_report

__all__ = ["landscape_report", "landscape_section"]


def landscape_section(report: Report, result: LandscapeResult) -> None:
    """The landscape figure, what it shows and a table of the runs' ends in the plane."""
    p = result.params
    report.paragraph(
        f"The validation loss of {printable(result.recipe)} on a {p.grid}×{p.grid} grid in the plane of the first "
        f"two principal directions of the trajectory ({'all runs together' if len(result.runs) > 1 else 'one run'}), "
        f"through the {'final weights of the first run' if p.center == 'final' else 'mean snapshot'}; the plane holds "
        f"{100 * result.explained:.1f} % of the motion about the mean (PC1 {100 * result.share[0]:.1f} %, "
        f"PC2 {100 * result.share[1]:.1f} %). The grid covers the projected snapshots with a margin of "
        f"{p.margin:g} of their span on each axis (each axis in its own range). {result.loss.size} evaluations "
        f"took {result.evaluation_seconds:.1f} s."
    )
    report.figure("landscape.png", figure_png(plot_landscape(result)),
                  "Validation loss in the plane of the first two principal directions, the trajectories on top")
    loss = result.loss
    finite = np.isfinite(loss)
    i, j = np.unravel_index(np.nanargmin(np.where(finite, loss, np.nan)), loss.shape) if finite.any() else (0, 0)
    report.table(["run", "snapshots", "start (PC1, PC2)", "end (PC1, PC2)"],
                 [[printable(r.label), len(r.coordinates), _point(r.coordinates[0]), _point(r.coordinates[-1])]
                  for r in result.runs]
                 + [["grid minimum", "-", f"loss {loss[i, j]:.4g}" if finite.any() else "n/a",
                     _point(np.array([result.x[i], result.y[j]]))]])


def landscape_report(result: LandscapeResult, out_dir: str | os.PathLike[str], *,
                     inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    report = Report(f"traj landscape: {printable(', '.join(r.label for r in result.runs))}")
    landscape_section(report, result)
    return write_report(out_dir, report, result.to_dict(), inputs=inputs)


def _point(c: Any) -> str:
    return f"({c[0]:.4g}, {c[1]:.4g})"
