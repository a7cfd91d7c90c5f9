"""``traj landscape``: the loss landscape in the plane of the trajectory's first two principal directions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..analysis.landscape import LandscapeParams
from ..options import cli_option
from ._common import (
    Stages,
    StepsOption,
    StrideOption,
    err_console,
    fail,
    flag_names,
    handle_errors,
    open_selected,
    out_console,
    output_dir,
    print_json,
    progress_bar,
)


def landscape(
    ctx: typer.Context,
    stores: Annotated[list[Path], typer.Argument(help="A run store; more stores of the same model share its plane "
                                                      "(e.g. a kga-replay's plain.zarr and kga-alpha0.25.zarr).")],
    grid: Annotated[int, cli_option(LandscapeParams, "grid")] = LandscapeParams.grid,
    steps: StepsOption = None,
    stride: StrideOption = 1,
    margin: Annotated[float, cli_option(LandscapeParams, "margin")] = LandscapeParams.margin,
    center: Annotated[str, cli_option(LandscapeParams, "center")] = LandscapeParams.center,
    max_seconds: Annotated[float, cli_option(LandscapeParams, "max_seconds")] = LandscapeParams.max_seconds,
    recipe: Annotated[str | None, typer.Option(help="Recipe: a built-in name or module:function (default the store's).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report directory (default traj-out/landscape-STORE).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON to stdout.")] = False,
) -> None:
    """Project the trajectory onto its first two principal directions (from the Gram) and evaluate the
    recipe's validation loss on a grid in that plane (the KGA paper, fig. 6b): contours with the trajectory on top.

    Examples:

        traj landscape sample_data/digits-cnn.zarr

        traj landscape kga/plain.zarr kga/kga-alpha0.25.zarr --grid 15 --center final
    """
    with handle_errors(ctx), flag_names("grid", "margin", "center", "max_seconds"):
        from ..analysis.landscape import fit_landscape
        from ..display import markup as m
        from ..recipes import resolve_recipe
        from ..report.landscape import landscape_report

        params = LandscapeParams(grid=grid, margin=margin, center=center, max_seconds=max_seconds)
        opened = [open_selected(s, steps, stride) for s in stores]
        runner = resolve_recipe(recipe, opened[0])
        if runner is None:
            raise fail(f"{opened[0].path} records no recipe; pass --recipe NAME (built-in) or --recipe module:function")
        target = output_dir(out, f"landscape-{opened[0].path.name.removesuffix('.zarr')}", *opened)
        with progress_bar() as bar:
            line = Stages(bar, "landscape")
            result = fit_landscape(opened, runner, params, progress=line.progress)
            line.stage("writing the report")
            landscape_report(result, target, inputs=[s.path for s in opened])
        if json_:
            summary = result.to_dict()
            if opened[0].selections:
                summary["selection"] = [s.to_dict() for s in opened[0].selections]
            print_json(summary)
            return
        out_console.print(f"[bold]{m(runner.name)}[/bold]: the plane holds {100 * result.explained:.1f} % of the motion; "
                          f"loss {result.loss.min():.4g} to {result.loss.max():.4g} on the {grid}×{grid} grid "
                          f"({result.evaluation_seconds:.1f} s)")
        err_console.print(f"[green]report[/green] {m(target)}/report.html")
