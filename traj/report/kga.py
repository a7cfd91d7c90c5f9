"""The report of ``traj kga-replay``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..plots import figure_png
from ..plots.kga import plot_alpha_sweep, plot_losses, plot_masked_fraction
from ..training.replay import ReplayResult
from .writer import Report, write_report, write_report_files


def loss_text(value: float | None, diverged_epoch: int | None) -> str:
    """A final loss as text; a diverged run has none (null in summary.json)."""
    if value is None or value != value or abs(value) == float("inf"):
        return f"n/a (diverged at epoch {diverged_epoch})" if diverged_epoch else "n/a"
    return f"{value:.4g}"


def kga_report(result: ReplayResult, out_dir: str | os.PathLike[str]) -> Path:
    return write_report(out_dir, *kga_report_content(result))


def kga_report_files(result: ReplayResult, directory: str | os.PathLike[str]) -> None:
    """Write the report's files into ``directory`` (created; inside a staging directory)."""
    Path(directory).mkdir(exist_ok=True)
    write_report_files(directory, *kga_report_content(result))


def kga_report_content(result: ReplayResult) -> tuple[Report, dict[str, Any]]:
    report = Report(f"traj kga-replay: {result.recipe}")
    report.paragraph(
        f"The recipe {result.recipe} re-run with its seed and data order, plainly and with KGA "
        f"(options {result.options}); every run is recorded beside this report."
    )
    report.figure("losses.png", figure_png(plot_losses(result)), "Loss per epoch and the difference to the plain run")
    if len(result.accelerated) > 1:
        report.figure("alpha_sweep.png", figure_png(plot_alpha_sweep(result)), "Final train loss against α")
    if result.options.get("mask", "none") != "none":
        report.figure("masked_fraction.png", figure_png(plot_masked_fraction(result)), "Masked fraction over time")
    plain = result.plain
    report.heading("Runs")
    report.table(
        ["run", "final train loss", "final val loss", "epochs to plain's final loss", "added s/epoch", "DMD s total"],
        [["plain", loss_text(plain.train_loss[-1], plain.diverged_epoch),
          loss_text(plain.val_loss[-1], plain.diverged_epoch), "-", "-", "-"]]
        + [[r.label, loss_text(r.final_train_loss, r.diverged_epoch), loss_text(r.final_val_loss, r.diverged_epoch),
            r.epochs_to_plain_final_loss or "never", f"{r.added_seconds_per_epoch:+.4f}", f"{r.dmd_seconds_total:.3f}"]
           for r in result.comparison],
    )
    return report, result.to_dict()
