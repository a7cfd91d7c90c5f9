"""``traj kga-replay``: re-run a recorded recipe with Koopman-based gradient acceleration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..options import cli_option
from ..training.options import JumpOptions, KGAOptions
from ._common import (
    err_console,
    fail,
    flag_names,
    given_options,
    handle_errors,
    int_or_keyword,
    number_list,
    out_console,
    output_dir,
    print_json,
    progress_bar,
)

#: The help panel of the prediction-based baselines' options.
BASELINES = "Prediction-based baselines (--baseline)"


def kga_replay(
    ctx: typer.Context,
    store: Annotated[Path, typer.Argument(help="A run store recorded by a built-in recipe.")],
    alpha: Annotated[str, typer.Option(help="Acceleration rates α, comma-separated (a sweep).")] = "0.25",
    window: Annotated[int, cli_option(KGAOptions, "window")] = KGAOptions.window,
    interval: Annotated[str, cli_option(KGAOptions, "interval")] = KGAOptions.interval,
    eps: Annotated[float, cli_option(KGAOptions, "eps")] = KGAOptions.eps,
    efficient: Annotated[bool, cli_option(KGAOptions, "efficient", "--efficient")] = KGAOptions.efficient,
    project_step: Annotated[bool, cli_option(KGAOptions, "project_step", "--project-step")] = KGAOptions.project_step,
    mask: Annotated[str, cli_option(KGAOptions, "mask")] = KGAOptions.mask,
    mask_eps: Annotated[float, cli_option(KGAOptions, "mask_eps")] = KGAOptions.mask_eps,
    mask_window: Annotated[int, cli_option(KGAOptions, "mask_window")] = KGAOptions.mask_window,
    baseline: Annotated[str, typer.Option(help="Prediction-based runs beside KGA: predict (jump to the DMD forecast, "
                                               "Dogra & Redman), bootstrap (keep a jump only if the validation loss "
                                               "falls, Tano et al.), comma-separated; empty for none.",
                                          rich_help_panel=BASELINES)] = "",
    jump_window: Annotated[int, cli_option(JumpOptions, "window", rich_help_panel=BASELINES)] = JumpOptions.window,
    jump_horizon: Annotated[int, cli_option(JumpOptions, "horizon", rich_help_panel=BASELINES)] = JumpOptions.horizon,
    jump_every: Annotated[int | None, cli_option(JumpOptions, "every", rich_help_panel=BASELINES)] = JumpOptions.every,
    jump_warmup: Annotated[int | None, cli_option(JumpOptions, "warmup", rich_help_panel=BASELINES)] = JumpOptions.warmup,
    epochs: Annotated[int | None, typer.Option(help="Epochs to train (default the recorded run's).")] = None,
    landscape: Annotated[bool, typer.Option("--landscape", help="Also draw every run in one plane of the loss "
                                                              "landscape (as traj landscape).")] = False,
    grid: Annotated[int, typer.Option(help="--landscape: grid points per axis.")] = 25,
    recipe: Annotated[str | None, typer.Option(help="Recipe: a built-in name or module:function (your code).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Directory for the runs and the report.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON to stdout.")] = False,
) -> None:
    """Re-run the store's recipe (same seed, same data order) plainly and with KGA, record both,
    and compare losses, speed-up and time overhead.

    Examples:

        traj kga-replay sample_data/quadratic-mlp.zarr --alpha 0,1,2 --epochs 10

        traj kga-replay run.zarr --interval 50 --mask kwm --json

        traj kga-replay run.zarr --baseline predict,bootstrap --jump-horizon 5
    """
    with handle_errors(ctx), flag_names("window", "interval", "eps", "mask", "mask_eps", "mask_window", "epochs",
                                        "jump_window", "jump_horizon", "jump_every", "jump_warmup",
                                        "grid", alphas="--alpha", baseline="--baseline"):
        from ..analysis.landscape import LandscapeParams
        from ..atomic import staged_output
        from ..display import markup as m
        from ..recipes import resolve_recipe
        from ..report.kga import kga_report_files, loss_text, row_name
        from ..store import open_store
        from ..training import replay

        alphas = number_list("--alpha", alpha, float)
        plane = LandscapeParams.checked(grid=grid) if landscape else None
        baselines = [b.strip().lower() for b in baseline.split(",") if b.strip()]
        jump_options = given_options(ctx, "jump_window", "jump_horizon", "jump_every", "jump_warmup")
        if jump_options and not baselines:
            flags = ", ".join("--" + name.replace("_", "-") for name in sorted(jump_options))
            raise fail(f"{flags} set{'s' if len(jump_options) == 1 else ''} the prediction-based baselines: "
                       "add --baseline predict and/or bootstrap")
        options = {"window": window, "interval": int_or_keyword("--interval", interval, "epoch"), "eps": eps,
                   "efficient": efficient, "project_step": project_step, "mask": mask, "mask_eps": mask_eps,
                   "mask_window": mask_window}
        opened = open_store(store)
        runner = resolve_recipe(recipe, opened, must_fit=False)  # trains the recipe anew: notes below say so
        if runner is None:
            raise fail(f"{opened.path} records no recipe; pass --recipe NAME (built-in) or --recipe module:function")
        recorded = (getattr(opened, "recipe", None) or {}).get("name")
        if recipe is not None and recorded and recorded != runner.name:
            err_console.print(f"[yellow]note[/yellow]: {m(opened.path.name)} was recorded by {m(str(recorded))}; "
                              f"--recipe {m(recipe)} replays {m(runner.name)}'s model and data, not that run")
        elif recipe is not None and not recorded:
            n_model = sum(p.numel() for p in runner.new_model().parameters())
            if n_model != opened.n_params:
                err_console.print(f"[yellow]note[/yellow]: {m(opened.path.name)} records no recipe and holds "
                                  f"{opened.n_params:,} parameters, {m(runner.name)}'s model {n_model:,}: the replay "
                                  f"trains {m(runner.name)} as configured, not the run in the store")
        target = output_dir(out, f"kga-{opened.path.name.removesuffix('.zarr')}", opened, kind="kga-replay")
        # Every run and the report are built in a staging sibling and replace TARGET whole at the end,
        # so no store that this directory did not create (or an input) can be overwritten.
        with staged_output(target, inputs=[opened.path], kind="kga-replay") as staging:
            with progress_bar("label") as bar:
                task = bar.add_task("replay", total=None, label="")
                result = replay(runner, staging, alphas=alphas, baselines=baselines, jump_window=jump_window,
                                jump_horizon=jump_horizon, jump_every=jump_every, jump_warmup=jump_warmup,
                                epochs=epochs, landscape=plane, **options, final_dir=target,
                                progress=lambda done, total: bar.update(task, completed=done, total=total),
                                stage=lambda label: bar.update(task, label=label))
            kga_report_files(result, staging / "report")
        if json_:
            print_json(result.to_dict())
            return
        plain = result.plain
        out_console.print(f"[bold]{m(runner.name)}[/bold]: plain final train loss "
                          f"{loss_text(plain.train_loss[-1], plain.diverged_epoch)}")
        for row in result.comparison:
            reached = row.epochs_to_plain_final_loss
            out_console.print(f"  {m(row_name(row))}: final {loss_text(row.final_train_loss, row.diverged_epoch)}, "
                              "reaches plain's final loss "
                              f"{'at epoch ' + str(reached) if reached else 'never'}, {row.added_seconds_per_epoch:+.3f} s/epoch")
            if row.note:
                out_console.print(f"    [yellow]{m(row.note)}[/yellow]")
        for run in result.baselines:
            jumps = run.jumps
            if jumps is not None:
                out_console.print(f"  {m(run.method)}: {jumps.n_taken} of {len(jumps.taken)} jumps taken"
                                  + (f", epochs {', '.join(str(e) for e, t in zip(jumps.epochs, jumps.taken, strict=True) if t)}"
                                     if jumps.n_taken else ""))
        err_console.print(f"[green]runs and report[/green] {m(target)}")
