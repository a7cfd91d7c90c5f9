"""The report of ``traj prune``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ..analysis.prune import PruneResult, compression_key
from ..plots import figure_png
from ..plots.prune import plot_accuracy, plot_epoch_overlap, plot_overlap, plot_spectrum
from .writer import Report, write_report


def prune_report(result: PruneResult, out_dir: str | os.PathLike[str], extra: Callable[[Path], None] | None = None, *,
                 inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
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
    keys = [compression_key(c) for c in result.compressions]
    report.heading("Overlap")
    report.table(["pair", *[f"c={k}" for k in keys]],
                 [[f"{a}-{b}".upper(), *[f"{v:.3f}" for v in values]] for (a, b), values in result.overlap.items()])
    if result.accuracy:
        report.heading(f"Validation {result.metric} (after pruning / after refinement)")
        if not result.accuracy_refined:
            report.paragraph("No refinement was run (refine epochs 0): the second number is n/a.")
        rows = []
        for m in result.methods:
            after = result.accuracy[m].mean
            tuned = result.accuracy_refined[m].mean if result.accuracy_refined else None
            rows.append([m.upper(), *[f"{after[i]:.3f} / {f'{tuned[i]:.3f}' if tuned is not None else 'n/a'}"
                                      for i in range(len(keys))]])
        report.table(["method", *[f"c={k}" for k in keys]], rows)
    return write_report(out_dir, report, d, extra=extra, inputs=inputs)
