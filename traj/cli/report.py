"""``traj report``: one self-contained page showing a run from every angle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import (
    BlockOption,
    LogToOption,
    Stages,
    StepsOption,
    StrideOption,
    engine_options,
    err_console,
    handle_errors,
    open_selected,
    out_console,
    output_dir,
    print_json,
    progress_bar,
    report_tracker,
)


def report(
    ctx: typer.Context,
    store: Annotated[Path, typer.Argument(help="A run store.")],
    peers: Annotated[list[Path] | None, typer.Option("--peers", help="Other runs to compare by conjugacy (repeatable).")] = None,
    null: Annotated[list[Path] | None, typer.Option("--null", help="Runs of STORE's configuration from other seeds: the "
                                                    "conjugacy verdicts' seed null (repeatable; without it the "
                                                    "conjugacy section gives distances, no verdict).")] = None,
    recipe_spec: Annotated[str | None, typer.Option("--recipe", help="Recipe for evaluation: a built-in name or module:function.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report directory (default traj-out/report-STORE).")] = None,
    steps: StepsOption = None,
    stride: StrideOption = 1,
    evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Score weights with the run's recipe.")] = True,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON to stdout.")] = False,
    log_to: LogToOption = None,
    block_mb: BlockOption = 64.0,
) -> None:
    """Run info, dmd, cmd, prune (when it applies) and conjugacy (with --peers) and write one
    report.html with the key figures at the top, plus report.md and summary.json.

    Examples:

        traj report sample_data/digits-cnn.zarr

        traj report run.zarr --peers lr10x.zarr --peers wide.zarr --null seed1.zarr --null seed2.zarr --out traj-out/run
    """
    with handle_errors(ctx):
        from ..analysis.overview import overview
        from ..display import markup as m
        from ..recipes import resolve_recipe
        from ..report.run import overview_report

        engine = engine_options("numpy", "cpu", "threads", block_mb)
        # one selection for every store: the report's conjugacy compares them on the same snapshots
        opened = open_selected(store, steps, stride)
        chosen_recipe = resolve_recipe(recipe_spec, opened) if evaluate else None
        others = [open_selected(p, steps, stride) for p in peers or []]
        seeds = [open_selected(p, steps, stride) for p in null or []]
        tracker = report_tracker(log_to)  # checked before any work
        target = output_dir(out, f"report-{opened.path.name.removesuffix('.zarr')}", opened, *others, *seeds)
        with progress_bar() as bar:  # a line per analysis: its passes' blocks, then the recipe's evaluations
            line = Stages(bar, "info")
            result = overview(opened, peers=others, null=seeds, evaluate=evaluate, recipe=chosen_recipe,
                              engine=engine, stage=line.stage, progress=line.progress)
            line.stage("writing the report")
            path = overview_report(result, target, inputs=[opened.path, *(p.path for p in others + seeds)])
        if tracker is not None:
            tracker.log("report", result.to_dict(), target)
        if json_:
            summary = result.to_dict()
            if opened.selections:
                summary["selection"] = [s.to_dict() for s in opened.selections]
            print_json(summary)
            return
        for name, reason in result.skipped.items():
            out_console.print(f"  {m(name)}: skipped ({m(reason)})")
        err_console.print(f"[green]report[/green] {m(path)}/report.html")
