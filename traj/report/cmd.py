"""The report of ``traj cmd``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..analysis.cmd import CMDResult, CMDRun
from ..plots import figure_png
from ..plots.cmd import (
    plot_corr_matrix,
    plot_evaluation,
    plot_history_sweep,
    plot_mode_bands,
    plot_model_comparison,
    plot_modes_per_layer,
    plot_references,
    plot_sample_fits,
    plot_sweep,
)
from .writer import Report, write_report, write_report_files


def cmd_report(run: CMDRun | CMDResult, out_dir: str | os.PathLike[str], extra: Callable[[Path], None] | None = None,
               *, inputs: Iterable[str | os.PathLike[str]] = (), model: str | os.PathLike[str] | None = None) -> Path:
    report, d = cmd_report_content(run, model=model)
    return write_report(out_dir, report, d, extra=extra, inputs=inputs)


def cmd_report_files(run: CMDRun | CMDResult, directory: str | os.PathLike[str], *,
                     model: str | os.PathLike[str] | None = None) -> None:
    """Write the report's files into an existing (staging) directory; ``model``: where cmd.zarr ends up."""
    write_report_files(directory, *cmd_report_content(run, model=model))


def cmd_report_content(run: CMDRun | CMDResult, *, model: str | os.PathLike[str] | None = None
                       ) -> tuple[Report, dict[str, Any]]:
    """The report of a CMD fit and of what was scored beside it (a :class:`CMDRun`)."""
    run = run if isinstance(run, CMDRun) else CMDRun(run)
    result = run.fit
    d = run.to_dict(model=model)
    report = Report(f"traj cmd: {Path(result.store).name}")
    report.paragraph(
        f"{result.n_params} weights over snapshots {result.window[0]}..{result.window[1]} (every {result.subsample}) "
        f"in {result.modes} correlation modes from {result.sample_indices.size} sampled weights: weight MSE "
        f"{result.mse:.3g}, relative error {result.relative_error:.3g}, compression {result.compression_ratio:.1f}x "
        f"(N·T numbers -> M·T + 2N). Backend {result.backend}, {result.seconds:.2f} s."
    )
    if (online := d.get("online")) is not None:  # traj cmd --online (docs/methods.md §2.6)
        report.paragraph(f"Online CMD: references picked on the warm-up, snapshots {online['warmup'][0]}.."
                         f"{online['warmup'][1]}; each weight's mode, a and b from running sums over every snapshot; "
                         f"{online['relabelled']} weights changed mode after the warm-up.")
    if run.evaluation:
        ev = run.evaluation
        what = "the CMD-reconstructed weights and the weight EMAs" if ev.ema else "the CMD-reconstructed weights"
        report.figure("evaluation.png", figure_png(plot_evaluation(run)),
                      f"Validation metric of the original, {what} per snapshot")
        for track in ev.ema:
            line = (f"EMA β = {track.beta:g} (θ̄₀ = the window's first snapshot, no bias correction): last snapshot "
                    f"{ev.metric} {track.metrics[ev.metric][-1]:.4f} against CMD {ev.cmd[ev.metric][-1]:.4f}; "
                    f"weight left on the first snapshot β^T = {track.first_weight:.3g}")
            report.paragraph(line + (" — more than 0.05: β is too close to 1 for this run." if track.stale else "."))
    if (comparison := run.comparison) is not None:
        report.figure("models.png", figure_png(plot_model_comparison(comparison)),
                      "The original run beside DMD-reconstructed weights (ranks) and CMD-reconstructed weights (M), "
                      "scored at the same snapshots; motion error = ‖D − D̂‖/‖D − mean‖")
    for sweep in run.history:
        name = "history length" if sweep.kind == "window" else "snapshot spacing"
        report.figure(f"sweep_{sweep.kind}.png", figure_png(plot_history_sweep(sweep)),
                      f"CMD against the {name} it is fitted on, scored on the snapshots every setting shares")
    if run.sweep:
        report.figure("sweep.png", figure_png(plot_sweep(run)), "Best metric and weight MSE against the number of modes")
    report.figure("corr_matrix.png", figure_png(plot_corr_matrix(result)),
                  "|corr| of the sampled weights, clustered (complete linkage), with mode boundaries")
    report.figure("references.png", figure_png(plot_references(result)), "Reference profile of every mode")
    report.figure("mode_bands.png", figure_png(plot_mode_bands(result)),
                  "Sampled members of each mode (normalised, sign-aligned): 95 % band and the reference")
    report.figure("modes_per_layer.png", figure_png(plot_modes_per_layer(result)), "Weights of each layer in each mode")
    report.figure("sample_fits.png", figure_png(plot_sample_fits(result)), "Sampled weights beside their CMD reconstruction")
    report.heading("Modes")
    report.table(["mode", "weights", "mean |corr| to reference", "reference θ index"],
                 [[m, int(result.mode_sizes[m]), f"{result.mode_mean_corr[m]:.4f}", int(result.reference_indices[m])]
                  for m in range(result.modes)])
    if run.sweep:
        report.heading("Sweep over M")
        rows = [row.to_dict() for row in run.sweep]
        keys = list(rows[0])
        report.table(keys, [[f"{r[k]:.4g}" if isinstance(r[k], float) else r[k] for k in keys] for r in rows])
    return report, d
