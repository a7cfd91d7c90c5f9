"""The report of ``traj conjugacy``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ..analysis.conjugacy import ConjugacyResult, verdict_label
from ..plots import figure_png
from ..plots.conjugacy import plot_distance_matrix, plot_null, plot_spectra, plot_window_distances
from .writer import Report, write_report


def conjugacy_report(result: ConjugacyResult, out_dir: str | os.PathLike[str],
                     extra: Callable[[Path], None] | None = None, *,
                     inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    d = result.to_dict()
    report = Report("traj conjugacy")
    # rule "reproducible": the seed null's bound is for one more run of the first run's family (parametric
    # bootstrap), the reparametrisation null's a conformal bound, both on the standardised distance
    bound = ("conformal {q:g} % bound of the standardised distances" if result.rule == "reproducible"
             else "{q:g} % quantile of the distances").format(q=100 * result.quantile)
    seed_bound = (f"{100 * result.quantile:g} % bound for the standardised distance of one more run of the first run's "
                  f"system (drawn from the family's own covariance)" if result.rule == "reproducible" else bound)
    seed = (f"Seed null: {len(result.null_runs)} run(s) differing from the first only in seed; the "
            f"{seed_bound} is {result.null_threshold:.3g}."
            if result.null_threshold is not None else "No seed null (no runs given with --null).")
    rep = result.reparam
    bent = ("the first run" if not result.null_runs else
            f"the first run and its {len(result.null_runs)} seed-null run(s), the maps split among them,")
    reparam = (f" Reparametrisation null: {bent} seen through {rep.size} random smooth monotone "
               f"coordinate-wise maps (on each coordinate's range scaled to [−1, 1], bending its ends, g(u) = u + "
               f"b u² + c u³ with |b| + |c| = {rep.strength:g}, or its inside, g(u) = tanh(a u)/tanh(a) or "
               f"sinh(a u)/sinh(a) moving it by up to {rep.strength:g}, each map drawing its share of inside bends: "
               f"each coordinate moves by at most {100 * rep.strength:g} % of its half-range over the window; seed "
               f"{rep.seed}); the {bound} of each bent spectrum to its own "
               f"run's is "
               f"{rep.threshold:.3g}."
               if rep is not None and rep.threshold is not None else " No reparametrisation null.")
    margin = (f" Equivalence margin stated by the user: {result.margin:.3g} (distances up to it count as conjugate)."
              if result.margin else "")
    words = {"seed-null": "seed null", "reparam-null": "reparametrisation null", "margin": "margin",
             "tolerance": "eigenvalues' precision"}
    what = "standardised distance" if result.rule == "reproducible" else "W1"
    verdict = (f" A pair is conjugate when its {what} is at most {result.threshold:.3g}, set by the "
               f"{words.get(result.basis or '', result.basis)}."
               if result.threshold is not None else
               (" No seed null (--null): the distances and the reparametrisation null's bound are reported, and no "
                "verdict (seed runs of one configuration lie further apart than that bound alone allows)."
                if not result.null_runs else
                " Rule plain: W1 beside the nulls' bounds, and no verdict (W1 over every compared eigenvalue cannot "
                "tell grokking from norm-constrained dynamics); the default rule reproducible gives one."))
    spectra = result.spectra[0]
    report.paragraph(
        f"Wasserstein distance W1 between the {result.k} Koopman eigenvalues of each run (docs/methods.md §4.2); "
        f"observable {result.observable}, {spectra.delays} delay(s), "
        f"{spectra.n_trajectories} stacked trajector{'y' if spectra.n_trajectories == 1 else 'ies'}, "
        f"rank rule {result.rank}. {seed}{reparam}{margin}{verdict}"
    )
    if result.rule == "reproducible" and result.scales is not None:
        report.paragraph(
            f"Rule reproducible: the {result.k} compared eigenvalues are those every seed-null run reproduces (mutual "
            "nearest neighbours), and each run's eigenvalues are matched onto the first run's. The first run and its "
            "seed runs are the family: a sample of the first run's system. A run's standardised distance to the first "
            "is the mean over eigenvalues of |λ_i − m_i|² / s_i², m_i being the family's mean and s_i the spread of one "
            "more run of the system about it ((1 + 1/n) times the family's variance plus the reparametrisation null's "
            f"mean square move; s_i = {', '.join(f'{x:.2g}' for x in result.scales)}); between two other runs, "
            "|λ_i − μ_i|² / (2 × (variance + move)). The seed null's bound is the quantile of that distance for one "
            "more run, drawn (Gaussian) from the family's own sample covariance with the family's mean and variance "
            "re-estimated in every draw, so the few seeds and the eigenvalues' correlations both widen it; the "
            "reparametrisation null's is the conformal bound of its bent spectra (with n values, the ⌈q(n+1)⌉-th "
            "smallest, capped at the largest).")
    for note in result.notes:
        report.paragraph(f"Reduced: {note}.")
    if result.rule_note:
        report.paragraph(f"Rule: {result.rule_note}.")
    if result.null_note:
        report.paragraph(f"Seed null: {result.null_note}.")
    if len(result.runs) > 1:
        report.figure("spectra.png", figure_png(plot_spectra(result)), "Koopman eigenvalues of every run")
        report.figure("distance.png", figure_png(plot_distance_matrix(result)), "Distance matrix")
    if result.null_distances.size or (result.reparam is not None and result.reparam.distances.size):
        report.figure("null.png", figure_png(plot_null(result)), "The nulls with every observed distance marked")
    if result.windows:
        report.figure("windows.png", figure_png(plot_window_distances(result)),
                      "Distances between consecutive windows of one run: dynamical transitions")
    if result.verdicts:
        report.heading("Verdicts")
        verdict_table(report, result)
    return write_report(out_dir, report, d, extra=extra, inputs=inputs)


def verdict_table(report: Report, result: ConjugacyResult) -> None:
    """One row per pair: W1, the statistic over the threshold, the verdict and the null (or margin) that decided it."""
    what = "standardised" if result.rule == "reproducible" else "W1"
    report.table(["run A", "run B", "W1", f"{what} / threshold", "verdict", "decided by"],
                 [[Path(v.a).name, Path(v.b).name, f"{v.distance:.4g}",
                   f"{q:.3g}" if (q := result.ratio(v)) is not None else "-",
                   verdict_label(v), v.basis or "-"]
                  for v in result.verdicts])
