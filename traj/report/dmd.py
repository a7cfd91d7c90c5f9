"""The report of ``traj dmd``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..analysis.dmd import DMDResult, DMDRun
from ..plots import figure_png
from ..plots.dmd import (
    plot_dmd_evaluation,
    plot_eigenvalues,
    plot_layer_spectra,
    plot_reconstruction,
    plot_singular_values,
)
from .writer import Report, write_report


def dmd_report(run: DMDRun | DMDResult, out_dir: str | os.PathLike[str], extra: Callable[[Path], None] | None = None, *,
               inputs: Iterable[str | os.PathLike[str]] = (), modes: str | os.PathLike[str] | None = None) -> Path:
    """The report of a DMD fit (and its evaluation, beside it in a :class:`DMDRun`); ``modes``: where ``extra``
    writes the modes, as summary.json names them."""
    run = run if isinstance(run, DMDRun) else DMDRun(run)
    result = run.fit
    d = run.to_dict(modes=modes)
    report = Report(f"traj dmd: {Path(result.store).name}")
    counts = result.class_counts
    report.paragraph(
        f"Exact DMD of snapshots {result.window[0]}..{result.window[1]} (steps {d['steps'][0]}..{d['steps'][1]}) "
        f"of {result.n_params} parameters" + (f" in {', '.join(result.layers)}" if result.layers else "")
        + f": rank {result.rank}, {counts['neutral']} neutral, {counts['stable']} stable and {counts['unstable']} "
        f"unstable modes (ε = {result.eps:g}); relative reconstruction error {result.reconstruction_error:.3g}. "
        f"Backend {result.backend}, {result.seconds:.2f} s."
    )
    if result.choice is not None:
        report.paragraph(f"Method {result.choice.method}: {result.choice.reason}.")
    report.figure("eigenvalues.png", figure_png(plot_eigenvalues(result)),
                  "DMD eigenvalues on the unit circle (colour = class, size = |amplitude|)")
    report.figure("singular_values.png", figure_png(plot_singular_values(result)),
                  "Singular values of the snapshot matrix with the kept rank and the Gavish–Donoho threshold")
    caption = "Sampled weights: recorded trajectory and DMD reconstruction"
    if result.forecast_steps:
        caption += f", with a forecast of {result.forecast_steps} snapshots"
    report.figure("reconstruction.png", figure_png(plot_reconstruction(result)), caption)
    if run.evaluation:
        report.figure("evaluation.png", figure_png(plot_dmd_evaluation(run.evaluation)),
                      "Validation metric of the original and of the DMD-reconstructed weights at several ranks "
                      "(b = Φ⁺θ₀); dotted past the window: the DMD forecast")
    if result.per_layer:
        report.figure("layer_spectra.png", figure_png(plot_layer_spectra(result)), "Per-layer DMD spectra over the same window")
    report.heading("Eigenvalues")
    errors = d["eigenvalue_errors"]
    report.table(
        ["#", "λ", "|λ|", "class", "rate per step", "|amplitude|", "rounding error (est.)"],
        [
            [j + 1, f"{lam.real:.6f} {lam.imag:+.6f}i", f"{abs(lam):.6f}", cls,
             f"{rate.real:.3g} {rate.imag:+.3g}i" if np.isfinite(rate) else "n/a (λ = 0)", f"{abs(amp):.4g}",
             f"{err:.2g}" if err is not None and np.isfinite(err) else "n/a"]
            for j, (lam, cls, rate, amp, err) in enumerate(zip(result.eigenvalues, result.classes, result.rates,
                                                               result.amplitudes, errors, strict=True))
        ][:50],
    )
    report.paragraph(f"Rounding error (est.): {result.eigenvalue_errors_cover}.")
    if result.rank > 50:
        report.paragraph(f"The {result.rank - 50} other eigenvalues are in dmd.json.")
    if result.per_layer:
        report.heading("Per layer")
        report.table(
            ["layer", "N", "rank", "max |λ|", "neutral", "stable", "unstable"],
            [[s.name, s.n_params, s.rank, f"{np.abs(s.eigenvalues).max():.4f}", s.classes.count("neutral"),
              s.classes.count("stable"), s.classes.count("unstable")] for s in result.per_layer],
        )
    return write_report(out_dir, report, d, extra=extra, inputs=inputs)
