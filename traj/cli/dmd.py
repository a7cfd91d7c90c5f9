"""``traj dmd``: the Koopman spectrum of a trajectory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    rank: Annotated[str, typer.Option(help="Modes to keep: an integer, or 'auto' (Gavish–Donoho).")] = "auto",
    window: Annotated[str | None, typer.Option(help="Snapshots a:b, both included (negative counts from the end).")] = None,
    steps: StepsOption = None,
    stride: StrideOption = 1,
    layer: Annotated[list[str] | None, typer.Option(help="Use only this parameter tensor (repeatable).")] = None,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="Also decompose every layer on its own.")] = False,
    delays: Annotated[int, typer.Option(help="Time delays d (Hankel DMD): snapshots [θ_k; …; θ_k+d]. PyDMD's HankelDMD(d=m) is --delays m-1.")] = 0,
    eps: Annotated[float, typer.Option(help="Neutral class tolerance: 1-ε <= |λ| <= 1+ε.")] = 0.01,
    forecast: Annotated[int, typer.Option(help="Snapshots to forecast past the window (sampled weights).")] = 0,
    drop_nonfinite: Annotated[bool, typer.Option("--drop-nonfinite", help="Skip NaN/Inf snapshots instead of refusing.")] = False,
    evaluate: Annotated[bool, typer.Option("--evaluate", help="Score the recipe's metrics on DMD-reconstructed weights at --eval-ranks (and on the --forecast).")] = False,
    eval_ranks: Annotated[str, typer.Option(help="Ranks scored by --evaluate (each reduced to what the window resolves).")] = "5,10,20",
    eval_points: Annotated[int, typer.Option(help="Snapshots scored by --evaluate (in the window, and in the forecast).")] = 40,
    recipe_spec: Annotated[str | None, typer.Option("--recipe", help="Recipe for --evaluate: a built-in name or module:function.")] = None,
    save_modes: Annotated[bool, typer.Option("--save-modes", help="Write the N×r modes to OUT/modes.zarr (a second pass).")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report directory (default traj-out/dmd-STORE).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON to stdout.")] = False,
    log_to: LogToOption = None,
    method: Annotated[str, typer.Option(help="auto (by a cost model; the JSON says which and why), gram, randomized (range finder) or svd (in memory).")] = "auto",
    power_iterations: Annotated[int, typer.Option(help="Power iterations of the randomized method.")] = 4,
    memory_mb: Annotated[float, typer.Option(help="Working memory the method may hold (MiB), the budget of every path: auto takes svd only where the window's float64 copy fits min(128, this) and gram only where its (T+1)² matrices fit; an explicit --method svd over it is refused, an explicit gram over it runs and says it exceeds the budget.")] = 512.0,
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
                                        n_iter="--power-iterations"):
        from dataclasses import replace

        from ..analysis.dmd import DMDParams, evaluate_dmd, fit_dmd, memory_bytes
        from ..analysis.dmd import save_modes as save_modes_to
        from ..display import markup as m
        from ..report.dmd import dmd_report
        params = DMDParams.checked(rank=parse_rank(rank), window=window, layers=layer, per_layer=per_layer, eps=eps,
                                   forecast=forecast, method=method, n_iter=power_iterations,
                                   drop_nonfinite=drop_nonfinite, memory_bytes=memory_bytes(memory_mb), delays=delays)
        if evaluate and params.delays:
            from ..errors import ParameterError

            raise ParameterError("delays", "cannot be given with --evaluate (it scores DMD of the weights themselves)")
        ranks = number_list("--eval-ranks", eval_ranks, int)
        engine = engine_options(backend, device, scheduler, block_mb)
        opened = open_selected(store, steps, stride)
        tracker = report_tracker(log_to)  # checked before any work
        target = output_dir(out, f"dmd-{opened.path.name.removesuffix('.zarr')}", opened)
        recipe = None
        if evaluate:
            from ..errors import NotApplicableError
            from ..recipes import resolve_recipe

            recipe = resolve_recipe(recipe_spec, opened)
            if recipe is None:
                raise NotApplicableError("--evaluate needs a recipe: this store names none (give --recipe)")
        with progress_bar() as bar:
            line = Stages(bar, "Gram pass")
            result = fit_dmd(opened, params, engine=engine, progress=line.progress)
            if recipe is not None:
                line.stage("evaluating")
                result = replace(result, evaluation=evaluate_dmd(opened, recipe, ranks=ranks, window=result.window,
                                                                 max_points=eval_points, forecast=forecast,
                                                                 engine=engine, progress=line.progress))
            extra = None
            if save_modes:

                def extra(staging: Path) -> None:
                    line.stage("modes pass")
                    save_modes_to(result, opened, staging / "modes.zarr", engine=engine, progress=line.progress)
                    line.stage("writing the report")

            line.stage("writing the report")
            dmd_report(result, target, extra=extra, inputs=[opened.path])
        summary = result.to_dict()
        if opened.selections:
            summary["selection"] = [s.to_dict() for s in opened.selections]
        if save_modes:
            summary["modes"] = str(target / "modes.zarr")
        if tracker is not None:
            tracker.log("dmd", summary, target)
        if json_:
            print_json(summary)
            return
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
        if (ev := result.evaluation) is not None:
            metric = ev.metric
            cells = ", ".join(f"rank {r} {v[metric][-1]:.4g} (motion error {e:.3f})"
                              for r, v, e in zip(ev.ranks, ev.reconstructed, ev.motion_errors, strict=True))
            out_console.print(f"  last snapshot {metric}: original {ev.original[metric][-1]:.4g}; DMD {cells}")
            if ev.forecast_offsets.size:
                cells = ", ".join(f"rank {r} {v[metric][-1]:.4g}" for r, v in zip(ev.ranks, ev.forecast, strict=True))
                out_console.print(f"  forecast {metric} {int(ev.forecast_offsets[-1])} snapshots ahead: {cells}")
        err_console.print(f"[green]report[/green] {m(target)}/report.html")
