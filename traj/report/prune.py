"""The report of ``traj prune``."""

from __future__ import annotations

import os
from pathlib import Path

from ..plots import figure_png
from ..plots.prune import plot_accuracy, plot_epoch_overlap, plot_overlap, plot_spectrum
from .writer import Report, write_report


def prune_report(result, out_dir: str | os.PathLike[str], extra=None, *, inputs=()) -> Path:
    d = result.to_dict()
    report = Report(f"traj prune: {Path(result.store).name}")
    where = f"epoch {result.epoch}" if result.epoch is not None else "the window"
    report.paragraph(
        f"Koopman decomposition of {where} (snapshots {result.window[0]}..{result.window[1]}, steps "
        f"{result.steps[0]}..{result.steps[1]}); {result.n_prunable} prunable weights, scope {result.scope}. "
        f"λ1 = {result.lambda1.real:.5f}{result.lambda1.imag:+.5f}i; {len(result.kgp_modes)} KGP mode(s)."
    )
    for method, reason in result.unavailable.items():
        report.paragraph(f"{method.upper()} not computed: {reason}.")
    if result.accuracy:
        report.figure("accuracy.png", figure_png(plot_accuracy(result)),
                      "Compression vs validation metric per method (dashed: after pruning; solid: after refinement)")
    report.figure("overlap.png", figure_png(plot_overlap(result)), "Overlap of the kept weights of every pair of methods")
    report.figure("spectrum.png", figure_png(plot_spectrum(result)), "The epoch's Koopman spectrum with λ1 and the KGP modes")
    if result.epoch_overlap:
        report.figure("epoch_overlap.png", figure_png(plot_epoch_overlap(result)), "Mask overlap across epochs")
    keys = [f"{c:g}" for c in result.compressions]
    report.heading("Overlap")
    report.table(["pair", *[f"c={k}" for k in keys]], [[p.upper(), *[f"{v:.3f}" for v in vals]] for p, vals in result.overlap.items()])
    if result.accuracy:
        report.heading(f"Validation {result.metric} (after pruning / after refinement)")
        if not result.accuracy_refined:
            report.paragraph("No refinement was run (refine epochs 0): the second number is n/a.")
        rows = []
        for m in result.methods:
            row = [m.upper()]
            for k in keys:
                a = result.accuracy[m][k]["mean"]
                r = f"{result.accuracy_refined[m][k]['mean']:.3f}" if result.accuracy_refined else "n/a"
                row.append(f"{a:.3f} / {r}")
            rows.append(row)
        report.table(["method", *[f"c={k}" for k in keys]], rows)
    return write_report(out_dir, report, d, extra=extra, inputs=inputs)
