"""``traj cmd``: Correlation Mode Decomposition."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
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
    modes: Annotated[int, typer.Option(help="Number of modes M.")] = 10,
    threshold: Annotated[float | None, typer.Option(help="Cut the dendrogram at t (0 < t <= 1) times the largest distance instead of M (with --distance corr: at 1-|corr| = t).")] = None,
    samples: Annotated[int | None, typer.Option(help="Weights sampled for the clustering (K; default: every weight of "
                                                     "a model of at most 4096, else 1000).")] = None,
    window: Annotated[str | None, typer.Option(help="Snapshots a:b, both included.")] = None,
    steps: StepsOption = None,
    stride: StrideOption = 1,
    subsample: Annotated[int, typer.Option(help="Use every s-th snapshot.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the weight sample.")] = 0,
    drop_nonfinite: Annotated[bool, typer.Option("--drop-nonfinite", help="Skip NaN/Inf snapshots instead of refusing.")] = False,
    distance: Annotated[str, typer.Option(help="Clustering distance: rows (Euclidean between rows of |corr|) or corr (1-|corr|).")] = "rows",
    sweep: Annotated[str | None, typer.Option(help="Also run M = 1,2,5,...: accuracy, MSE and the agreement of 5 sampling seeds (ARI) against M.")] = None,
    sweep_window: Annotated[str | None, typer.Option(help="Also fit CMD on the histories a:end for these starts a (e.g. 0,20,40): accuracy and error against the history length.")] = None,
    sweep_subsample: Annotated[str | None, typer.Option(help="Also fit CMD on every s-th snapshot (counted back from the end) for these s (e.g. 1,2,4,8).")] = None,
    evaluate: Annotated[bool, typer.Option("--evaluate/--no-evaluate", help="Score CMD weights with the store's recipe.")] = True,
    eval_points: Annotated[int, typer.Option(help="Snapshots scored by --evaluate.")] = 40,
    ema: Annotated[str | None, typer.Option(help="Also score the weight EMA of decays β = 0.99,0.999 (per recorded snapshot: a store recorded every k steps stands for a per-step β_s with β = β_s^k), in the same pass.")] = None,
    compare_dmd: Annotated[str | None, typer.Option(help="Also draw the run beside DMD at these ranks (5,10,20) and CMD at --compare-modes, at the same snapshots (needs a recipe).")] = None,
    compare_modes: Annotated[str, typer.Option(help="CMD modes M drawn by --compare-dmd.")] = "2,5,10",
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
                                        "eval_points", "drop_nonfinite", "distance", "ema", "sweep_window", "sweep_subsample",
                                        "warmup", ranks="--compare-dmd",
                                        cmd_modes="--compare-modes", compare_modes="--compare-modes"):
        import numpy as np

        from ..analysis.cmd import CMDParams, compare_models, fit_cmd
        from ..analysis.cmd_online import fit_cmd_online
        from ..atomic import staged_output
        from ..display import markup as m

        # every option (the evaluation's and the sweep's too) is checked before the first pass
        from ..errors import NotApplicableError, ParameterError
        from ..recipes import resolve_recipe
        from ..report.cmd import cmd_report_files

        given = given_options(ctx, "modes", "compare_modes", "warmup")
        if "warmup" in given and not online:
            raise ParameterError("warmup", "is the warm-up of online CMD: it needs --online")
        if threshold is not None and "modes" in given:
            raise ParameterError("modes", "and --threshold both cut the dendrogram: give one of them")
        if "compare_modes" in given and not compare_dmd:
            raise ParameterError("compare_modes", "draws CMD beside DMD: it needs --compare-dmd RANKS")
        params = CMDParams.checked(modes=None if threshold is not None else modes, threshold=threshold,
                                   samples=samples, window=window, subsample=subsample, seed=seed,
                                   drop_nonfinite=drop_nonfinite, eval_points=eval_points,
                                   sweep=number_list("--sweep", sweep, int) if sweep else (), distance=distance,
                                   ema=number_list("--ema", ema, float) if ema else (),
                                   sweep_window=number_list("--sweep-window", sweep_window, int) if sweep_window else (),
                                   sweep_subsample=number_list("--sweep-subsample", sweep_subsample, int)
                                   if sweep_subsample else ())
        ranks = number_list("--compare-dmd", compare_dmd, int) if compare_dmd else ()
        compared_modes = number_list("--compare-modes", compare_modes, int)
        engine = engine_options(backend, device, scheduler, block_mb)
        opened = open_selected(store, steps, stride)
        tracker = report_tracker(log_to)  # checked before any work
        target = output_dir(out, f"cmd-{opened.path.name.removesuffix('.zarr')}", opened)
        recipe = resolve_recipe(recipe_spec, opened) if evaluate else None
        # the model is written straight into the report's staging directory
        with staged_output(target, inputs=[opened.path]) as staging:
            with progress_bar() as bar:
                line = Stages(bar, "CMD pass")
                fit = fit_cmd if not online else partial(fit_cmd_online, warmup=warmup)
                result = fit(opened, params, out=staging / "cmd.zarr", recipe=recipe, engine=engine,
                             progress=line.progress, stage=line.stage)
                if ranks:
                    if recipe is None:
                        raise NotApplicableError("--compare-dmd scores the models with a recipe: this run has none")
                    line.stage("DMD and CMD models")
                    result = replace(result, comparison=compare_models(
                        opened, recipe, ranks=ranks, modes=compared_modes, window=result.window,
                        max_points=params.eval_points, samples=params.samples, seed=params.seed, engine=engine,
                        progress=line.progress))
                result = replace(result, model_path=str(target / "cmd.zarr"))
                line.stage("writing the report")
                cmd_report_files(result, staging)
        for t in result.evaluation.ema if result.evaluation else ():
            if t.stale:
                err_console.print(f"[yellow]EMA {t.beta:g} still puts {t.first_weight:.2f} of its weight on the "
                                  f"window's first snapshot at the last (β^T > 0.05): β is too close to 1 for "
                                  f"{result.snapshots.size} snapshots[/yellow]")
        if tracker is not None:
            tracker.log("cmd", result.to_dict(), target)
        if json_:
            summary = result.to_dict()
            if opened.selections:
                summary["selection"] = [s.to_dict() for s in opened.selections]
            print_json(summary)
            return
        out_console.print(
            f"[bold]{m(opened.path.name)}[/bold]{m(selection_note(opened))}: {result.modes} modes over {result.n_params} weights, sizes "
            f"{result.mode_sizes.tolist()[:10]}; MSE {result.mse:.3g}, relative error {result.relative_error:.3g}, "
            f"compression {result.compression_ratio:.1f}x"
        )
        if (ev := result.evaluation) is not None:
            metric = ev.metric
            emas = "".join(f", EMA {t.beta:g} {t.metrics[metric][-1]:.4g}" for t in ev.ema)
            out_console.print(f"  last snapshot {metric}: original {ev.original[metric][-1]:.4g}, "
                              f"CMD {ev.cmd[metric][-1]:.4g}{emas}")

        for row in result.sweep:
            line = f"  M = {row.modes}: relative error {row.relative_error:.4g}"
            if (st := row.stability) is not None:
                line += (f", ARI over {len(st.seeds)} sampling seeds min {st.ari.min():.3f} / median "
                         f"{np.median(st.ari):.3f} / max {st.ari.max():.3f}")
            if row.metric:
                line += f", best {row.metric} {row.best_cmd:.4g} (original {row.best_original:.4g})"
            out_console.print(line)
        for sweep in result.history:
            cells = "; ".join(
                f"{'start' if sweep.kind == 'window' else 's ='} {r.setting} M {r.modes}: error {r.relative_error:.4g}"
                + (f", {sweep.metric} {r.metric_mean:.4g}" if sweep.metric else "") for r in sweep.rows)
            base = f" (original {sweep.original_mean:.4g})" if sweep.metric else ""
            out_console.print(f"  {sweep.kind} sweep, mean over {sweep.scored.size} shared snapshots{base}: {cells}")
        if evaluate and recipe is None:
            err_console.print("[yellow]no recipe in this store: --evaluate skipped[/yellow]")
        err_console.print(f"[green]report[/green] {m(target)}/report.html")
