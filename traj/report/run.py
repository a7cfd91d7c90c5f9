"""``traj report``: one page that shows a run from every angle (info, dmd, cmd, prune, conjugacy).

Each analysis runs with defaults suited to an overview; one that does not apply to the run
(no iteration-level snapshots for pruning, no peers for conjugacy, too few snapshots) gets a
line saying why instead of failing the page. The key figures come first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..engine import Engine
from ..errors import TrajError
from ..plots import figure_png
from ..store import RunStore
from .writer import Report, write_report

__all__ = ["run_report"]


def _section(name: str, work: Callable[[], Any], skipped: dict[str, str]) -> Any:
    try:
        return work()
    except TrajError as exc:
        skipped[name] = str(exc)
        return None


def run_report(
    store: RunStore,
    out_dir: str | os.PathLike[str],
    *,
    peers: Sequence[RunStore] = (),
    engine: Engine | None = None,
    modes: int = 5,
    evaluate: bool = True,
    recipe: Any = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Run every analysis that applies to ``store`` and write one self-contained report."""
    from ..analysis.cmd import cmd, sample_reconstruction
    from ..analysis.cmd import evaluate as cmd_evaluate
    from ..analysis.conjugacy import conjugacy
    from ..analysis.dmd import dmd
    from ..analysis.prune import prune
    from ..plots.cmd import plot_corr_matrix, plot_evaluation, plot_sample_fits
    from ..plots.conjugacy import _names, plot_distance_matrix, plot_spectra
    from ..plots.dmd import plot_eigenvalues, plot_reconstruction, plot_singular_values
    from ..plots.prune import plot_accuracy, plot_overlap
    from ..plots.run import plot_run_overview
    from ..recipes import recipe_from_store
    from ..store.info import describe, layer_norms

    t0 = time.perf_counter()
    engine = engine or Engine()
    say = progress or (lambda _: None)
    skipped: dict[str, str] = {}
    if recipe is None and evaluate:
        recipe = recipe_from_store(store)

    say("info")
    info = describe(store)
    norms = layer_norms(store)
    say("dmd")
    dmd_result = _section("dmd", lambda: dmd(store, rank="auto", forecast=10, engine=engine), skipped)
    say("cmd")
    cmd_result = _section("cmd", lambda: cmd(store, modes=min(modes, max(1, store.n_params // 4)),
                                             samples=min(1000, store.n_params), engine=engine), skipped)
    if cmd_result is not None and recipe is not None:
        from dataclasses import replace

        evaluation = _section("cmd evaluation", lambda: cmd_evaluate(cmd_result, store, recipe, max_points=12), skipped)
        cmd_result = replace(cmd_result, evaluation=evaluation)
    say("prune")
    prune_result = None
    if not store.layout.prunable_entries:
        skipped["prune"] = "no prunable weights (linear/conv layers) in this run"
    elif store.spacing.get("unit") != "step" or store.spacing.get("every", 1) != 1:
        skipped["prune"] = "Koopman pruning needs snapshots at every step (record with --every 1)"
    else:
        prune_result = _section("prune", lambda: prune(store, methods=["kmp", "gmp", "lsp"], compressions=[2, 4, 8, 16],
                                                       seeds=1, recipe=recipe, evaluate=recipe is not None,
                                                       engine=engine), skipped)
    say("conjugacy")
    conj_result = None
    if peers:
        conj_result = _section("conjugacy", lambda: conjugacy([store, *peers], engine=engine), skipped)
    else:
        skipped["conjugacy"] = "no peers given (traj report STORE --peers OTHER.zarr ...)"

    report = Report(f"traj report: {store.path.name}")
    report.paragraph(
        f"{info.n_snapshots} snapshots of {info.n_params} parameters ({info.n_prunable} prunable), steps "
        f"{info.steps[0] if info.steps else '-'}..{info.steps[1] if info.steps else '-'}"
        + (f", recorded by {info.recipe.get('name')} (seed {info.recipe.get('seed')})" if info.recipe else "")
        + ". Health: " + ("ok." if info.healthy else "; ".join(info.health))
    )
    # key figures first
    report.heading("Key figures")
    report.figure("overview.png", figure_png(plot_run_overview(store.steps, store.loss, store.layout.names, norms)),
                  "Loss per snapshot and weight norm per layer")
    if dmd_result is not None:
        report.figure("dmd_eigenvalues.png", figure_png(plot_eigenvalues(dmd_result)), "Koopman (DMD) eigenvalues")
    if cmd_result is not None and cmd_result.evaluation:
        report.figure("cmd_evaluation.png", figure_png(plot_evaluation(cmd_result)), "Original vs CMD-reconstructed weights")
    if prune_result is not None and prune_result.accuracy:
        report.figure("prune_accuracy.png", figure_png(plot_accuracy(prune_result)), "Pruning: KMP vs GMP vs LSP")
    if conj_result is not None:
        report.figure("conjugacy_spectra.png", figure_png(plot_spectra(conj_result)), "Koopman spectra of this run and its peers")

    report.heading("DMD (Koopman spectrum)")
    if dmd_result is not None:
        d = dmd_result.to_dict()
        c = d["class_counts"]
        report.paragraph(f"Rank {dmd_result.rank} (Gavish–Donoho): {c['neutral']} neutral, {c['stable']} stable, "
                         f"{c['unstable']} unstable modes; reconstruction error {dmd_result.reconstruction_error:.3g}.")
        report.figure("dmd_singular_values.png", figure_png(plot_singular_values(dmd_result)), "Singular values")
        report.figure("dmd_reconstruction.png", figure_png(plot_reconstruction(dmd_result)),
                      "Sampled weights, DMD reconstruction and a 10-snapshot forecast")
    else:
        report.paragraph(f"Skipped: {skipped.get('dmd')}")

    report.heading("CMD (correlation modes)")
    if cmd_result is not None:
        report.paragraph(f"{cmd_result.modes} modes, sizes {cmd_result.mode_sizes.tolist()}; relative error "
                         f"{cmd_result.relative_error:.3g}; compression {cmd_result.compression_ratio:.1f}x.")
        report.figure("cmd_corr.png", figure_png(plot_corr_matrix(cmd_result)), "Clustered |corr| of sampled weights")
        report.figure("cmd_fits.png", figure_png(plot_sample_fits(cmd_result, sample_reconstruction(cmd_result))),
                      "Sampled weights and their CMD reconstruction")
    else:
        report.paragraph(f"Skipped: {skipped.get('cmd')}")

    report.heading("Pruning")
    if prune_result is not None:
        over = ", ".join(f"{v:.3f}" for v in prune_result.overlap.get("kmp-gmp", []))
        report.paragraph(f"Epoch {prune_result.epoch}: λ1 = {prune_result.lambda1.real:.5f}{prune_result.lambda1.imag:+.5f}i; "
                         f"KMP-GMP overlap at c = 2, 4, 8, 16: {over}.")
        report.figure("prune_overlap.png", figure_png(plot_overlap(prune_result)), "Mask overlap between methods")
    else:
        report.paragraph(f"Skipped: {skipped.get('prune')}")

    report.heading("Conjugacy")
    if conj_result is not None:
        report.figure("conjugacy_distance.png", figure_png(plot_distance_matrix(conj_result.distance, _names(conj_result.runs),
                                                                                 "W1 between runs")), "Distances")
    else:
        report.paragraph(f"Skipped: {skipped.get('conjugacy')}")

    summary = {
        "store": str(store.path),
        "info": info.to_dict(),
        "dmd": dmd_result.to_dict() if dmd_result else None,
        "cmd": cmd_result.to_dict() if cmd_result else None,
        "prune": prune_result.to_dict() if prune_result else None,
        "conjugacy": conj_result.to_dict() if conj_result else None,
        "skipped": skipped,
        "seconds": time.perf_counter() - t0,
    }
    return write_report(out_dir, report, summary, inputs=[store.path, *(p.path for p in peers)]), summary
