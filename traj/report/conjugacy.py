"""The report of ``traj conjugacy``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ..analysis.conjugacy import ConjugacyResult
from ..plots import figure_png
from ..plots.conjugacy import plot_distance_matrix, plot_null, plot_spectra, plot_window_distances
from .writer import Report, write_report


def conjugacy_report(result: ConjugacyResult, out_dir: str | os.PathLike[str],
                     extra: Callable[[Path], None] | None = None, *,
                     inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
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
    for note in [result.k_note, *(s.rank_note for s in result.spectra)]:
        if note:
            report.paragraph(f"Reduced: {note}.")
    if len(result.runs) > 1:
        report.figure("spectra.png", figure_png(plot_spectra(result)), "Koopman eigenvalues of every run")
        report.figure("distance.png", figure_png(plot_distance_matrix(result)), "Distance matrix")
    if result.null_distances.size:
        report.figure("null.png", figure_png(plot_null(result)), "Seed null with every observed distance marked")
    if result.windows:
        report.figure("windows.png", figure_png(plot_window_distances(result)),
                      "Distances between consecutive windows of one run: dynamical transitions")
    if result.verdicts:
        report.heading("Verdicts")
        report.table(["run A", "run B", "W1", "verdict", "decided by"],
                     [[Path(v.a).name, Path(v.b).name, f"{v.distance:.4g}", v.verdict, v.basis or "-"]
                      for v in result.verdicts])
    return write_report(out_dir, report, d, extra=extra, inputs=inputs)
