"""The report of ``traj report``: renders an :class:`~traj.analysis.overview.Overview` on one page.

The analyses ran in :func:`traj.analysis.overview.overview`; this module only draws and writes
them, key figures first, a skipped section saying why.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..analysis.overview import Overview
from ..plots import figure_png
from ..plots.cmd import plot_corr_matrix, plot_evaluation, plot_model_comparison, plot_sample_fits
from ..plots.conjugacy import plot_distance_matrix, plot_spectra
from ..plots.dmd import plot_eigenvalues, plot_reconstruction, plot_singular_values
from ..plots.prune import plot_accuracy, plot_overlap
from ..plots.run import plot_run_overview
from .conjugacy import verdict_table
from .writer import Report, write_report

__all__ = ["overview_report"]


def overview_report(overview: Overview, out_dir: str | os.PathLike[str], *,
                    inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Write the overview's report.html, report.md and summary.json (``overview.to_dict()``) into ``out_dir``."""
    info = overview.info
    report = Report(f"traj report: {Path(overview.store).name}")
    report.paragraph(
        f"{info.n_snapshots} snapshots of {info.n_params} parameters ({info.n_prunable} prunable), steps "
        f"{info.steps[0] if info.steps else '-'}..{info.steps[1] if info.steps else '-'}"
        + (f", recorded by {info.recipe.get('name')} (seed {info.recipe.get('seed')})" if info.recipe else "")
        + ". Health: " + ("ok." if info.healthy else "; ".join(info.health))
    )
    _key_figures(report, overview)
    _sections(report, overview)
    return write_report(out_dir, report, overview.to_dict(), inputs=inputs)


def _key_figures(report: Report, overview: Overview) -> None:
    report.heading("Key figures")
    report.figure("overview.png", figure_png(plot_run_overview(overview.history)),
                  "Loss per snapshot, the other logged metrics and the weight norm per tensor")
    if overview.dmd is not None:
        report.figure("dmd_eigenvalues.png", figure_png(plot_eigenvalues(overview.dmd)), "Koopman (DMD) eigenvalues")
    if overview.cmd_run is not None and overview.cmd_evaluation is not None:
        report.figure("cmd_evaluation.png", figure_png(plot_evaluation(overview.cmd_run)),
                      "Original vs CMD-reconstructed weights")
    if overview.prune is not None and overview.prune.accuracy:
        report.figure("prune_accuracy.png", figure_png(plot_accuracy(overview.prune)), "Pruning: KMP vs GMP vs LSP")
    if overview.conjugacy is not None:
        report.figure("conjugacy_spectra.png", figure_png(plot_spectra(overview.conjugacy)),
                      "Koopman spectra of this run and its peers")


def _sections(report: Report, overview: Overview) -> None:
    skipped = overview.skipped
    report.heading("DMD (Koopman spectrum)")
    if (dmd := overview.dmd) is not None:
        c = dmd.class_counts
        report.paragraph(f"Rank {dmd.rank} (Gavish–Donoho): {c['neutral']} neutral, {c['stable']} stable, "
                         f"{c['unstable']} unstable modes; reconstruction error {dmd.reconstruction_error:.3g}.")
        report.figure("dmd_singular_values.png", figure_png(plot_singular_values(dmd)), "Singular values")
        report.figure("dmd_reconstruction.png", figure_png(plot_reconstruction(dmd)),
                      f"Sampled weights, DMD reconstruction and a {dmd.forecast_steps}-snapshot forecast")
    else:
        report.paragraph(f"Skipped: {skipped.get('dmd')}")

    report.heading("CMD (correlation modes)")
    if (cmd := overview.cmd) is not None:
        report.paragraph(f"{cmd.modes} modes, sizes {cmd.mode_sizes.tolist()}; relative error "
                         f"{cmd.relative_error:.3g}; compression {cmd.compression_ratio:.1f}x.")
        report.figure("cmd_corr.png", figure_png(plot_corr_matrix(cmd)), "Clustered |corr| of sampled weights")
        report.figure("cmd_fits.png", figure_png(plot_sample_fits(cmd)), "Sampled weights and their CMD reconstruction")
        if (models := overview.models) is not None:
            ev = models.dmd
            report.paragraph("DMD and CMD as models of training: the recipe's "
                             f"{ev.metric} of the original weights and of each model's reconstruction, at the same "
                             f"{len(ev.snapshots)} snapshots (motion error ‖D − D̂‖/‖D − mean‖ in each title).")
            report.figure("models.png", figure_png(plot_model_comparison(models)), "Original, DMD ranks and CMD modes")
        elif "models" in skipped:
            report.paragraph(f"DMD vs CMD as models skipped: {skipped['models']}")
    else:
        report.paragraph(f"Skipped: {skipped.get('cmd')}")

    report.heading("Pruning")
    if (prune := overview.prune) is not None:
        over = ", ".join(f"{v:.3f}" for v in prune.overlap.get(("kmp", "gmp"), []))
        report.paragraph(f"Epoch {prune.epoch}: λ1 = {prune.lambda1.real:.5f}{prune.lambda1.imag:+.5f}i; "
                         f"KMP-GMP overlap at c = {', '.join(f'{c:g}' for c in prune.compressions)}: {over}.")
        report.figure("prune_overlap.png", figure_png(plot_overlap(prune)), "Mask overlap between methods")
    else:
        report.paragraph(f"Skipped: {skipped.get('prune')}")

    report.heading("Conjugacy")
    if (conj := overview.conjugacy) is not None:
        if conj.threshold is not None:
            report.paragraph(f"A pair is conjugate when its {'standardised distance' if conj.rule == 'reproducible' else 'W1'} "
                             f"is at most {conj.threshold:.3g} (set by the "
                             f"{conj.basis}); `traj conjugacy` gives the nulls and spectra in full.")
        elif not conj.null_runs:
            report.paragraph("No seed null: distances only, no verdict. Give runs of this configuration from other "
                             "seeds with `traj report --null SEED_RUN` for verdicts.")
        verdict_table(report, conj)
        report.figure("conjugacy_distance.png", figure_png(plot_distance_matrix(conj)), "Distances")
    else:
        report.paragraph(f"Skipped: {skipped.get('conjugacy')}")
