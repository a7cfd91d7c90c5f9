"""The report of ``traj info --out``: the store summary, its layer table and the run overview plot."""

from __future__ import annotations

import os
from pathlib import Path

from ..analysis.overview import LayerNorms
from ..plots import figure_png
from ..plots.run import plot_run_overview
from ..store import RunStore
from ..store.info import StoreInfo
from ..store.run_store import human_bytes
from .writer import Report, write_report


def info_report(store: RunStore, info: StoreInfo, history: LayerNorms, out_dir: str | os.PathLike[str]) -> Path:
    """Write the info report; ``out_dir`` may not be, lie inside or contain the store."""
    report = Report(f"traj info: {store.path.name}")
    report.paragraph(
        f"{info.n_snapshots} snapshots of {info.n_params} parameters ({info.n_prunable} prunable), {info.dtype}; "
        f"{human_bytes(info.bytes_on_disk)} on disk (compression {info.compression_text})."
    )
    if info.recipe:
        report.paragraph(f"Recorded by the recipe {info.recipe.get('name')} with seed {info.recipe.get('seed')}.")
    report.paragraph("Health: " + ("ok" if info.healthy else "; ".join(info.health)))
    report.figure("run_overview.png", figure_png(plot_run_overview(history)),
                  "Training loss per snapshot, the other logged metrics and the weight norm of each tensor")
    norms = history.to_dict()
    report.heading("Layers")
    report.table(
        ["layer", "shape", "size", "prunable", "‖θ‖ first", "‖θ‖ last"],
        [
            [layer["name"], tuple(layer["shape"]), layer["size"], "yes" if layer["prunable"] else "",
             f"{history.norms[0, j]:.4g}" if norms["first"] else "-",
             f"{history.norms[-1, j]:.4g}" if norms["last"] else "-"]
            for j, layer in enumerate(info.layers)
        ],
    )
    summary = info.to_dict()
    summary["layer_norms"] = norms
    return write_report(out_dir, report, summary, inputs=[store.path])
