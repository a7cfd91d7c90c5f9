"""The report of ``traj kga-replay``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..plots import figure_png
from ..plots.kga import plot_alpha_sweep, plot_losses, plot_masked_fraction, plot_validation
from ..training.replays import ReplayComparison, ReplayResult
from .landscape import landscape_section
from .writer import Report, write_report, write_report_files


def loss_text(value: float | None, diverged_epoch: int | None) -> str:
    """A final loss as text; a diverged run has none (null in summary.json)."""
    if value is None or value != value or abs(value) == float("inf"):
        return f"n/a (diverged at epoch {diverged_epoch})" if diverged_epoch else "n/a"
    return f"{value:.4g}"


def row_name(row: ReplayComparison) -> str:
    """A compared run as the text output names it: "α = 0.25", "predict", "bootstrap"."""
    return f"α = {row.alpha:g}" if row.method == "kga" else row.method


def _number(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if value == value and abs(value) != float("inf") else "n/a"


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
        f"({_options_text(result.options)}); every run is recorded beside this report."
    )
    if result.baselines:
        report.paragraph(
            "Prediction-based baselines (the KGA paper, fig. 6a): at an epoch end, exact DMD of the last epoch-end "
            "snapshots forecasts the weights some epochs ahead and the run jumps there, then trains on "
            "(predict: Dogra & Redman 2020); bootstrap keeps a jump only when the validation loss falls "
            "(Tano et al. 2020). The per-epoch validation values are measured before each jump."
        )
    report.figure("losses.png", figure_png(plot_losses(result)), "Loss per epoch and the difference to the plain run")
    report.figure("validation.png", figure_png(plot_validation(result)),
                  "Validation loss and accuracy per epoch; jumps marked")
    if len(result.accelerated) > 1:
        report.figure("alpha_sweep.png", figure_png(plot_alpha_sweep(result)), "Final train loss against α")
    if result.options.get("mask", "none") != "none":
        report.figure("masked_fraction.png", figure_png(plot_masked_fraction(result)), "Masked fraction over time")
    plain = result.plain
    report.heading("Runs")
    report.table(
        ["run", "final train loss", "final val loss", "epochs to plain's final loss", "added s/epoch",
         "DMD s total", "final val accuracy"],
        [["plain", loss_text(plain.train_loss[-1], plain.diverged_epoch),
          loss_text(plain.val_loss[-1], plain.diverged_epoch), "-", "-", "-", _accuracy(plain)]]
        + [[r.label, loss_text(r.final_train_loss, r.diverged_epoch), loss_text(r.final_val_loss, r.diverged_epoch),
            r.epochs_to_plain_final_loss or "never", f"{r.added_seconds_per_epoch:+.4f}",
            f"{r.dmd_seconds_total:.3f}", _accuracy(run)]
           for r, run in zip(result.comparison, result.runs, strict=True)],
    )
    for row in result.comparison:
        if row.note:
            report.paragraph(f"{row.label}: {row.note}.")
    if result.landscape is not None:
        report.heading("Loss landscape")
        landscape_section(report, result.landscape)
    jumping = [r for r in result.baselines if r.jumps is not None]
    if jumping:
        report.heading("Jumps")
        rows = []
        for run in jumping:
            j = run.jumps
            assert j is not None
            for k, epoch in enumerate(j.epochs):
                rows.append([run.label, epoch, "yes" if j.taken[k] else "no", _number(j.val_loss_before[k]),
                             _number(j.val_loss_after[k]), _number(j.val_accuracy_after[k], 3),
                             _number(j.relative_size[k], 3), _number(j.max_abs_eigenvalue[k], 5)])
            for epoch in j.skipped:
                rows.append([run.label, epoch, "fit failed", "-", "-", "-", "-", "-"])
        report.table(["run", "epoch", "taken", "val loss before", "val loss after", "val accuracy after",
                      "‖Δ‖/‖θ‖", "max |λ|"], rows)
    return report, result.to_dict()


def _accuracy(run: Any) -> str:
    return "-" if run.val_accuracy is None else _number(run.val_accuracy[-1], 3)


def _options_text(options: dict[str, Any]) -> str:
    """The replay's options as prose: ``window 5, interval epoch, ...; baselines predict (window 3, ...)``."""
    def items(mapping: dict[str, Any]) -> str:
        return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in mapping.items())

    kga = {k: v for k, v in options.items() if k not in ("baselines", "jump")}
    text = items(kga) or "default options"
    if options.get("baselines"):
        text += f"; baselines {', '.join(options['baselines'])} ({items(options.get('jump', {}))})"
    return text
