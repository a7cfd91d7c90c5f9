"""The report of ``traj conjugacy``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..plots import figure_png
from ..plots.conjugacy import _names, plot_distance_matrix, plot_null, plot_spectra
from .writer import Report, write_report


def conjugacy_report(result, out_dir: str | os.PathLike[str], extra=None, *, inputs=()) -> Path:
    d = result.to_dict()
    report = Report("traj conjugacy")
    null = (f"; its {100 * result.quantile:g} % quantile is {result.null_threshold:.3g}"
            if result.null_threshold is not None else "")
    margin = (f" Equivalence margin stated by the user: {result.margin:.3g} (distances up to it count as conjugate)."
              if result.margin else "")
    verdict = (f" A pair is conjugate when its W1 is at most {result.threshold:.3g}." if result.threshold is not None
               else " Without a null or a margin every verdict is undetermined.")
    report.paragraph(
        f"Wasserstein distance W1 between the {result.k} largest-modulus Koopman eigenvalues of each run "
        f"(methods.md §4). Null: {len(result.null_runs)} run(s) differing from the first only in seed{null}.{margin}{verdict}"
    )
    if len(result.runs) > 1:
        report.figure("spectra.png", figure_png(plot_spectra(result)), "Koopman eigenvalues of every run")
        report.figure("distance.png", figure_png(plot_distance_matrix(result.distance, _names(result.runs), "W1 between runs")),
                      "Distance matrix")
    if result.null_distances:
        report.figure("null.png", figure_png(plot_null(result)), "Seed null with every observed distance marked")
    if result.windows:
        labels = [f"{a}-{b}" for a, b in result.windows["steps"]]
        report.figure("windows.png", figure_png(plot_distance_matrix(np.array(result.windows["distance"]), labels,
                                                                     "W1 between windows (steps)")),
                      "Distances between consecutive windows of one run: dynamical transitions")
    if result.verdicts:
        report.heading("Verdicts")
        report.table(["run A", "run B", "W1", "verdict", "decided by"],
                     [[Path(v["a"]).name, Path(v["b"]).name, f"{v['distance']:.4g}", v["verdict"], v["basis"] or "-"]
                      for v in result.verdicts])
    return write_report(out_dir, report, d, extra=extra, inputs=inputs)
