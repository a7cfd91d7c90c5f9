"""``traj dmd``: the Koopman spectrum of a trajectory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..analysis.dmd.evaluate import DMDEvaluationParams
from ..analysis.dmd.params import DMDParams, memory_bytes
from ..display import markup as m
from ..options import cli_option
from ._common import (
    BackendOption,
    BlockOption,
    DeviceOption,
    LogToOption,
    SchedulerOption,
    Stages,
    StepsOption,
    StrideOption,
    engine_options,
    err_console,
    flag_names,
    handle_errors,
    number_list,
    open_selected,
    out_console,
    output_dir,
    parse_rank,
    print_json,
    progress_bar,
    report_tracker,
    selection_note,
)


def dmd(
    ctx: typer.Context,
    store: Annotated[Path, typer.Argument(help="A run store.")],
    rank: Annotated[str, cli_option(DMDParams, "rank")] = DMDParams.rank,
    window: Annotated[str | None, cli_option(DMDParams, "window")] = DMDParams.window,
    steps: StepsOption = None,
    stride: StrideOption = 1,
    layer: Annotated[list[str] | None, cli_option(DMDParams, "layers")] = DMDParams.layers,
    per_layer: Annotated[bool, cli_option(DMDParams, "per_layer", "--per-layer")] = DMDParams.per_layer,
    delays: Annotated[int, cli_option(DMDParams, "delays")] = DMDParams.delays,
    eps: Annotated[float, cli_option(DMDParams, "eps")] = DMDParams.eps,
    forecast: Annotated[int, cli_option(DMDParams, "forecast")] = DMDParams.forecast,
    drop_nonfinite: Annotated[bool, cli_option(DMDParams, "drop_nonfinite", "--drop-nonfinite")] = DMDParams.drop_nonfinite,
    evaluate: Annotated[bool, typer.Option("--evaluate", help="Score the recipe's metrics on DMD-reconstructed weights at --eval-ranks (and on the --forecast).")] = False,
    eval_ranks: Annotated[str, cli_option(DMDEvaluationParams, "ranks")] = ",".join(map(str, DMDEvaluationParams.ranks)),
    eval_points: Annotated[int, cli_option(DMDEvaluationParams, "eval_points")] = DMDEvaluationParams.eval_points,
    recipe_spec: Annotated[str | None, typer.Option("--recipe", help="Recipe for --evaluate: a built-in name or module:function.")] = None,
    save_modes: Annotated[bool, typer.Option("--save-modes", help="Write the N×r modes to OUT/modes.zarr (a second pass).")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report directory (default traj-out/dmd-STORE).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON to stdout.")] = False,
    log_to: LogToOption = None,
    method: Annotated[str, cli_option(DMDParams, "method")] = DMDParams.method,
    power_iterations: Annotated[int, cli_option(DMDParams, "n_iter")] = DMDParams.n_iter,
    memory_mb: Annotated[float, typer.Option(help="Working memory the method may hold (MiB), the budget of every path: auto takes svd only where the window's float64 copy fits min(128, this) and gram only where its (T+1)² matrices fit; an explicit --method svd over it is refused, an explicit gram over it runs and says it exceeds the budget.")] = DMDParams.memory_bytes / 2**20,
    backend: BackendOption = "numpy",
    device: DeviceOption = "cpu",
    scheduler: SchedulerOption = "threads",
    block_mb: BlockOption = 64.0,
) -> None:
    """Exact DMD / Koopman spectrum of a recorded trajectory, streamed from the store.

    Examples:

        traj dmd sample_data/digits-cnn.zarr

        traj dmd run.zarr --window 100:400 --rank 20 --forecast 50 --json

        traj dmd run.zarr --per-layer --backend dask --scheduler tcp://10.0.0.5:8786

        traj dmd run.zarr --evaluate --eval-ranks 5,10,20 --window 0:600 --forecast 90
    """
    with handle_errors(ctx), flag_names("rank", "eps", "forecast", "window", "method", "per_layer", "drop_nonfinite", "delays",
                                        "eval_points", ranks="--eval-ranks", memory_bytes="--memory-mb", layers="--layer",
                                        n_iter="--power-iterations", evaluator="--recipe"):
        from ..analysis.dmd import run_dmd
        from ..analysis.dmd import save_modes as save_modes_to
        from ..report.dmd import dmd_report

        params = DMDParams(rank=parse_rank(rank), window=window, layers=layer, per_layer=per_layer, eps=eps,
                           forecast=forecast, method=method, n_iter=power_iterations,  # type: ignore[arg-type]
                           drop_nonfinite=drop_nonfinite, memory_bytes=memory_bytes(memory_mb), delays=delays)
        evaluation = (DMDEvaluationParams(ranks=number_list("--eval-ranks", eval_ranks, int), eval_points=eval_points)
                      if evaluate else None)
        engine = engine_options(backend, device, scheduler, block_mb)
        opened = open_selected(store, steps, stride)
        tracker = report_tracker(log_to)  # checked before any work
        target = output_dir(out, f"dmd-{opened.path.name.removesuffix('.zarr')}", opened)
        recipe = _recipe(recipe_spec, opened) if evaluate else None
        modes = target / "modes.zarr" if save_modes else None  # summary.json and --json say the same
        with progress_bar() as bar:
            line = Stages(bar, "Gram pass")
            run = run_dmd(opened, params, evaluation=evaluation, evaluator=recipe, engine=engine,
                          progress=line.progress, stage=line.stage)
            extra = None
            if save_modes:

                def extra(staging: Path) -> None:
                    line.stage("modes pass")
                    save_modes_to(run.fit, opened, staging / "modes.zarr", engine=engine, progress=line.progress)
                    line.stage("writing the report")

            line.stage("writing the report")
            dmd_report(run, target, extra=extra, inputs=[opened.path], modes=modes)
        summary = run.to_dict(modes=modes)
        if opened.selections:
            summary["selection"] = [s.to_dict() for s in opened.selections]
        if tracker is not None:
            tracker.log("dmd", summary, target)
        if json_:
            print_json(summary)
            return
        _print(run, opened)
        err_console.print(f"[green]report[/green] {m(target)}/report.html")


def _recipe(spec: str | None, opened):
    """The recipe --evaluate scores with: --recipe, else the store's."""
    from ..errors import NotApplicableError
    from ..recipes import resolve_recipe

    recipe = resolve_recipe(spec, opened)
    if recipe is None:
        raise NotApplicableError("--evaluate needs a recipe: this store names none (give --recipe)")
    return recipe


def _print(run, opened) -> None:
    """The run in a few lines on stdout."""
    result = run.fit
    c = result.class_counts
    out_console.print(
        f"[bold]{m(opened.path.name)}[/bold]{m(selection_note(opened))} snapshots {result.window[0]}..{result.window[1]}, N = {result.n_params}: "
        f"rank {result.rank}; {c['neutral']} neutral, {c['stable']} stable, {c['unstable']} unstable; "
        f"reconstruction error {result.reconstruction_error:.3g}"
    )
    top = ", ".join(f"{abs(v):.4f}" for v in result.eigenvalues[:6])
    out_console.print(f"  leading |λ|: {top}")
    if result.choice is not None:
        out_console.print(f"  method {result.choice.method}: {m(result.choice.reason)}")
    if result.operator.rank_note:
        out_console.print(f"  {m(result.operator.rank_note)}")
    if (ev := run.evaluation) is not None:
        metric = ev.metric
        cells = ", ".join(f"rank {r} {v[metric][-1]:.4g} (motion error {e:.3f})"
                          for r, v, e in zip(ev.ranks, ev.reconstructed, ev.motion_errors, strict=True))
        out_console.print(f"  last snapshot {metric}: original {ev.original[metric][-1]:.4g}; DMD {cells}")
        if ev.forecast_offsets.size:
            cells = ", ".join(f"rank {r} {v[metric][-1]:.4g}" for r, v in zip(ev.ranks, ev.forecast, strict=True))
            out_console.print(f"  forecast {metric} {int(ev.forecast_offsets[-1])} snapshots ahead: {cells}")
