"""``traj cmd``: Correlation Mode Decomposition."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..analysis.cmd.params import CMDParams, CMDScoring
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
    given_options,
    handle_errors,
    number_list,
    open_selected,
    out_console,
    output_dir,
    print_json,
    progress_bar,
    report_tracker,
    selection_note,
)


def cmd(
    ctx: typer.Context,
    store: Annotated[Path, typer.Argument(help="A run store.")],
    modes: Annotated[int, cli_option(CMDParams, "modes")] = CMDParams.modes,
    threshold: Annotated[float | None, cli_option(CMDParams, "threshold")] = CMDParams.threshold,
    samples: Annotated[int | None, cli_option(CMDParams, "samples")] = CMDParams.samples,
    window: Annotated[str | None, cli_option(CMDParams, "window")] = CMDParams.window,
    steps: StepsOption = None,
    stride: StrideOption = 1,
    subsample: Annotated[int, cli_option(CMDParams, "subsample")] = CMDParams.subsample,
    seed: Annotated[int, cli_option(CMDParams, "seed")] = CMDParams.seed,
    drop_nonfinite: Annotated[bool, cli_option(CMDParams, "drop_nonfinite", "--drop-nonfinite")] = CMDParams.drop_nonfinite,
    distance: Annotated[str, cli_option(CMDParams, "distance")] = CMDParams.distance,
    sweep: Annotated[str | None, cli_option(CMDScoring, "sweep")] = None,
    sweep_window: Annotated[str | None, cli_option(CMDScoring, "sweep_window")] = None,
    sweep_subsample: Annotated[str | None, cli_option(CMDScoring, "sweep_subsample")] = None,
    evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Score CMD weights with the store's recipe.")] = True,
    eval_points: Annotated[int, cli_option(CMDScoring, "eval_points")] = CMDScoring.eval_points,
    ema: Annotated[str | None, cli_option(CMDScoring, "ema")] = None,
    compare_dmd: Annotated[str | None, cli_option(CMDScoring, "compare_dmd")] = None,
    compare_modes: Annotated[str, cli_option(CMDScoring, "compare_modes")] = ",".join(map(str, CMDScoring.compare_modes)),
    recipe_spec: Annotated[str | None, typer.Option("--recipe", help="Recipe for evaluation: a built-in name or module:function.")] = None,
    online: Annotated[bool, typer.Option("--online", help="Online CMD: references from the first --warmup snapshots, then each weight's mode, a and b from running sums, in one pass (docs/methods.md §2.6).")] = False,
    warmup: Annotated[int, typer.Option(help="Snapshots of the --online warm-up that picks the references.")] = 20,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report directory (default traj-out/cmd-STORE).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON to stdout.")] = False,
    log_to: LogToOption = None,
    backend: BackendOption = "numpy",
    device: DeviceOption = "cpu",
    scheduler: SchedulerOption = "threads",
    block_mb: BlockOption = 64.0,
) -> None:
    """Correlation Mode Decomposition: weights cluster into a few modes that move as affine
    copies of one reference profile each. The model is written to OUT/cmd.zarr.

    Examples:

        traj cmd sample_data/digits-cnn.zarr --modes 5

        traj cmd run.zarr --threshold 0.1 --samples 2000 --json

        traj cmd run.zarr --sweep 1,2,5,10,20

        traj cmd run.zarr --ema 0.9,0.99 --compare-dmd 5,10,20
    """
    with handle_errors(ctx), flag_names("modes", "threshold", "samples", "window", "subsample", "seed", "sweep",
                                        "eval_points", "drop_nonfinite", "distance", "ema", "sweep_window",
                                        "sweep_subsample", "compare_dmd", "compare_modes", "warmup"):
        from ..analysis.cmd import check_scoring, run_cmd
        from ..atomic import staged_output
        from ..recipes import resolve_recipe
        from ..report.cmd import cmd_report_files

        # every option (the evaluation's, the sweeps' and the comparison's too) is checked before the first pass
        _refuse_conflicts(ctx, threshold, compare_dmd, online)
        params = CMDParams(modes=None if threshold is not None else modes, threshold=threshold, samples=samples,
                           window=window, subsample=subsample, seed=seed, drop_nonfinite=drop_nonfinite,
                           distance=distance)
        lists = {name: number_list(f"--{name.replace('_', '-')}", text, float if name == "ema" else int)
                 for name, text in (("sweep", sweep), ("ema", ema), ("sweep_window", sweep_window),
                                    ("sweep_subsample", sweep_subsample), ("compare_dmd", compare_dmd)) if text}
        scoring = CMDScoring(eval_points=eval_points, compare_modes=number_list("--compare-modes", compare_modes, int),
                             **lists)
        engine = engine_options(backend, device, scheduler, block_mb)
        opened = open_selected(store, steps, stride)
        tracker = report_tracker(log_to)  # checked before any work
        target = output_dir(out, f"cmd-{opened.path.name.removesuffix('.zarr')}", opened)
        recipe = resolve_recipe(recipe_spec, opened) if evaluate else None
        check_scoring(scoring, recipe)
        # the model is written straight into the report's staging directory
        with staged_output(target, inputs=[opened.path]) as staging:
            with progress_bar() as bar:
                line = Stages(bar, "CMD pass")
                run = run_cmd(opened, params, scoring, evaluator=recipe, out=staging / "cmd.zarr",
                              warmup=warmup if online else None, engine=engine,
                              progress=line.progress, stage=line.stage)
                line.stage("writing the report")
                cmd_report_files(run, staging, model=target / "cmd.zarr")
        _warn_stale_ema(run)
        summary = run.to_dict(model=target / "cmd.zarr")
        if tracker is not None:
            tracker.log("cmd", summary, target)
        if json_:
            if opened.selections:
                summary["selection"] = [s.to_dict() for s in opened.selections]
            print_json(summary)
            return
        _print(run, opened)
        if evaluate and recipe is None:
            err_console.print("[yellow]no recipe in this store: --evaluate skipped[/yellow]")
        err_console.print(f"[green]report[/green] {m(target)}/report.html")


def _refuse_conflicts(ctx: typer.Context, threshold: float | None, compare_dmd: str | None, online: bool) -> None:
    """Options that would be silently dropped: refused."""
    from ..errors import ParameterError

    given = given_options(ctx, "modes", "compare_modes", "warmup")
    if "warmup" in given and not online:
        raise ParameterError("warmup", "is the warm-up of online CMD: it needs --online")
    if threshold is not None and "modes" in given:
        raise ParameterError("modes", "and --threshold both cut the dendrogram: give one of them")
    if "compare_modes" in given and not compare_dmd:
        raise ParameterError("compare_modes", "draws CMD beside DMD: it needs --compare-dmd RANKS")


def _warn_stale_ema(run) -> None:
    for t in run.evaluation.ema if run.evaluation else ():
        if t.stale:
            err_console.print(f"[yellow]EMA {t.beta:g} still puts {t.first_weight:.2f} of its weight on the "
                              f"window's first snapshot at the last (β^T > 0.05): β is too close to 1 for "
                              f"{run.fit.snapshots.size} snapshots[/yellow]")


def _print(run, opened) -> None:
    """The run in a few lines on stdout."""
    import numpy as np

    result = run.fit
    out_console.print(
        f"[bold]{m(opened.path.name)}[/bold]{m(selection_note(opened))}: {result.modes} modes over {result.n_params} weights, sizes "
        f"{result.mode_sizes.tolist()[:10]}; MSE {result.mse:.3g}, relative error {result.relative_error:.3g}, "
        f"compression {result.compression_ratio:.1f}x"
    )
    if (ev := run.evaluation) is not None:
        metric = ev.metric
        emas = "".join(f", EMA {t.beta:g} {t.metrics[metric][-1]:.4g}" for t in ev.ema)
        out_console.print(f"  last snapshot {metric}: original {ev.original[metric][-1]:.4g}, "
                          f"CMD {ev.cmd[metric][-1]:.4g}{emas}")
    for row in run.sweep:
        line = f"  M = {row.modes}: relative error {row.relative_error:.4g}"
        if (st := row.stability) is not None:
            line += (f", ARI over {len(st.seeds)} sampling seeds min {st.ari.min():.3f} / median "
                     f"{np.median(st.ari):.3f} / max {st.ari.max():.3f}")
        if row.metric:
            line += f", best {row.metric} {row.best_cmd:.4g} (original {row.best_original:.4g})"
        out_console.print(line)
    for sweep in run.history:
        cells = "; ".join(
            f"{'start' if sweep.kind == 'window' else 's ='} {r.setting} M {r.modes}: error {r.relative_error:.4g}"
            + (f", {sweep.metric} {r.metric_mean:.4g}" if sweep.metric else "") for r in sweep.rows)
        base = f" (original {sweep.original_mean:.4g})" if sweep.metric else ""
        out_console.print(f"  {sweep.kind} sweep, mean over {sweep.scored.size} shared snapshots{base}: {cells}")
