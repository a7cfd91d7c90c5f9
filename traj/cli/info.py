"""``traj info``: a store at a glance."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import handle_errors, out_console, output_dir, print_json, progress_bar


def info(
    ctx: typer.Context,
    store: Annotated[Path, typer.Argument(help="A run store (directory).")],
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON to stdout.")] = False,
    scan: Annotated[bool, typer.Option("--scan/--no-scan", help="Read every snapshot to look for NaN/Inf.")] = True,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write summary.json, report.md, report.html and a plot here.")] = None,
) -> None:
    """Layers, size, steps covered, recipe and health of a run store.

    Examples:

        traj info sample_data/digits-cnn.zarr

        traj info run.zarr --json --no-scan

        traj info run.zarr --out traj-out/info-run
    """
    with handle_errors(ctx):
        from rich.table import Table

        from ..display import markup as m
        from ..store import open_store
        from ..store.info import describe
        from ..store.run_store import human_bytes

        opened = open_store(store, allow_damaged=True)  # describing a damaged store is what info is for
        if out is not None:
            output_dir(out, "", opened)  # refused before the scan, not after
        history = None
        with progress_bar() as bar:
            task = bar.add_task("scan", total=None)
            bind = lambda d, t: bar.update(task, completed=d, total=t)  # noqa: E731
            if out is not None:  # the report's layer norms find the non-finite snapshots too: one pass
                from ..analysis.overview import layer_norms

                history = layer_norms(opened, progress=bind)
            summary = describe(opened, scan=scan, progress=bind,
                               nonfinite_rows=history.nonfinite_rows if history is not None else None)
        if out is not None and history is not None:
            from ..report.info import info_report

            info_report(opened, summary, history, out)
        if json_:
            print_json(summary.to_dict())
            return
        s = summary
        # Everything below came from the store: escaped (m) so it is shown, never interpreted.
        out_console.print(f"[bold]{m(s.path)}[/bold]  traj run store v{s.format_version}")
        out_console.print(f"  snapshots T = {s.n_snapshots}, parameters N = {s.n_params} ({s.n_prunable} prunable), {s.dtype}")
        if s.lossy_from:
            out_console.print(f"  [yellow]a lossy copy[/yellow]: values rounded from {m(', '.join(s.lossy_from))} to "
                              f"{s.dtype}; analyses see the rounded values")
        if s.steps:
            out_console.print(f"  steps {s.steps[0]}..{s.steps[1]}" + (f", epochs {s.epochs[0]}..{s.epochs[1]}" if s.epochs else ""))
        out_console.print(f"  spacing {m(s.spacing or 'unknown')}; series: {m(', '.join(s.series))}" + ("; gradients" if s.has_grads else ""))
        out_console.print(
            f"  on disk {human_bytes(s.bytes_on_disk)}, raw {human_bytes(s.bytes_raw)} "
            f"(compression {s.compression_text}), chunks {tuple(s.chunks)}"
        )
        if s.recipe:
            out_console.print(f"  recipe {m(s.recipe.get('name'))} (seed {m(s.recipe.get('seed'))})")
        out_console.print(f"  created {m(s.created)}, traj {m(s.versions.get('traj', '?'))}, torch {m(s.versions.get('torch', '-'))}")
        table = Table(show_header=True, header_style="bold")
        for column in ("layer", "shape", "size", "prunable"):
            table.add_column(column)
        for layer in s.layers[:50]:
            table.add_row(m(layer["name"]), str(tuple(layer["shape"])), str(layer["size"]), "yes" if layer["prunable"] else "")
        if len(s.layers) > 50:
            table.add_row(f"... {len(s.layers) - 50} more", "", "", "")
        out_console.print(table)
        if s.writer_active:
            out_console.print("  [yellow]a recorder is writing this store now[/yellow]")
        if s.healthy:
            out_console.print("  health: [green]ok[/green]" + ("" if scan else " (not scanned for NaN/Inf)"))
        for line in s.health:
            out_console.print(f"  health: [yellow]{m(line)}[/yellow]")
        if out is not None:
            out_console.print(f"  report written to {m(out)}/report.html")
