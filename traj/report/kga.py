"""The report of ``traj kga-replay``."""

from __future__ import annotations

import os
from pathlib import Path

from ..plots import figure_png
from ..plots.kga import plot_alpha_sweep, plot_losses, plot_masked_fraction
from .writer import Report, write_report, write_report_files


def loss_text(value: float | None, diverged_epoch: int | None) -> str:
    """A final loss as text; a diverged run has none (null in summary.json)."""
    if value is None:
        return f"n/a (diverged at epoch {diverged_epoch})" if diverged_epoch else "n/a"
    return f"{value:.4g}"


def kga_report(summary: dict, out_dir: str | os.PathLike[str]) -> Path:
    return write_report(out_dir, *kga_report_content(summary))


def kga_report_files(summary: dict, directory: str | os.PathLike[str]) -> None:
    """Write the report's files into ``directory`` (created; inside a staging directory)."""
    Path(directory).mkdir(exist_ok=True)
    write_report_files(directory, *kga_report_content(summary))


def kga_report_content(summary: dict) -> tuple[Report, dict]:
    report = Report(f"traj kga-replay: {summary['recipe']}")
    report.paragraph(
        f"The recipe {summary['recipe']} re-run with its seed and data order, plainly and with KGA "
        f"(options {summary['options']}); every run is recorded beside this report."
    )
    report.figure("losses.png", figure_png(plot_losses(summary)), "Loss per epoch and the difference to the plain run")
    if len(summary["runs"]) > 1:
        report.figure("alpha_sweep.png", figure_png(plot_alpha_sweep(summary)), "Final train loss against α")
    if summary["options"].get("mask", "none") != "none":
        report.figure("masked_fraction.png", figure_png(plot_masked_fraction(summary)), "Masked fraction over time")
    report.heading("Runs")
    report.table(
        ["run", "final train loss", "final val loss", "epochs to plain's final loss", "added s/epoch", "DMD s total"],
        [["plain", loss_text(summary["plain_final_train_loss"], summary["plain_diverged_epoch"]),
          loss_text(summary["plain"]["val_loss"][-1], summary["plain_diverged_epoch"]), "-", "-", "-"]]
        + [[r["label"], loss_text(r["final_train_loss"], r["diverged_epoch"]),
            loss_text(r["final_val_loss"], r["diverged_epoch"]), r["epochs_to_plain_final_loss"] or "never",
            f"{r['added_seconds_per_epoch']:+.4f}", f"{r['dmd_seconds_total']:.3f}"] for r in summary["comparison"]],
    )
    return report, summary
