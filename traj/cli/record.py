"""``traj record`` and ``traj recipes``: run a built-in recipe and record its trajectory."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from ..display import markup
from ._common import (
    INTERRUPTS,
    err_console,
    fail,
    handle_errors,
    out_console,
    print_json,
    progress_bar,
    sigterm_as_interrupt,
)


def _kept(target: Path, overwrite: bool) -> str:
    """What an interrupted ``traj record`` left at ``target``, in one line."""
    from ..errors import TrajError
    from ..store import RunStore

    if overwrite and target.exists():
        return f"{target} holds the store it held before; the interrupted recording was discarded"
    try:
        store = RunStore(target)
    except TrajError:  # nothing was created, or nothing readable: say so rather than guess
        return f"no snapshots were kept at {target}"
    if not store.n_snapshots:
        return f"no snapshots were kept at {target}"
    return (f"kept {store.n_snapshots} snapshot(s), steps {int(store.steps[0])} to {int(store.steps[-1])}, "
            f"in {target} (closed; usable as it is)")


def record(
    ctx: typer.Context,
    recipe: Annotated[str, typer.Argument(help="Built-in recipe name (see `traj recipes`).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Store to write (default ./RECIPE.zarr).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of weights, data split and batch order.")] = None,
    every: Annotated[str | None, typer.Option(help="Snapshot every K optimizer steps, or 'epoch'.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd, adam or adamw.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Recipe option KEY=VALUE (repeatable).")] = None,
    grads: Annotated[bool, typer.Option("--grads/--no-grads", help="Also record gradients.")] = False,
    dtype: Annotated[str | None, typer.Option(help="float32, float64, bfloat16 or float16 (default: the model's own dtype).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing store at --out.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON summary to stdout.")] = False,
) -> None:
    """Train a built-in recipe and record its weight trajectory.

    Examples:

        traj record quadratic-mlp --out quad.zarr

        traj record digits-cnn --epochs 30 --every 1 --out digits.zarr

        traj record mirror-descent --set algorithm=ogd --out ogd.zarr
    """
    with handle_errors(ctx), sigterm_as_interrupt():  # SIGTERM: keep every snapshot taken, close, exit 143
        from ..recipes import get_recipe, parse_set_option

        config = parse_set_option(set_ or [])
        for key, value in (("epochs", epochs), ("seed", seed), ("every", every), ("lr", lr), ("optimizer", optimizer)):
            if value is not None:
                config[key] = value
        runner = get_recipe(recipe, config)
        target = out or Path(f"{recipe}.zarr")
        if target.exists() and not overwrite:
            raise fail(f"{target} already exists; choose another --out or pass --overwrite")
        from ..store.dtypes import SNAPSHOT_DTYPES

        if dtype is not None and dtype not in SNAPSHOT_DTYPES:
            raise fail(f"--dtype must be one of {', '.join(SNAPSHOT_DTYPES)}, not {dtype!r}")
        diverged: list[int] = []  # the first epoch whose mean training loss is not finite
        with progress_bar("loss", "metric", transient=False) as bar:
            task = bar.add_task(f"{recipe}", total=runner.epochs, loss="", metric="")

            def on_epoch(report):
                if not diverged and not math.isfinite(report.loss):
                    diverged.append(report.epoch)
                metric = " ".join(f"val {k} {v:.4g}" for k, v in report.metrics.items())
                bar.update(task, completed=report.epoch, loss=f"loss {report.loss:.4g}", metric=metric)

            try:
                store = runner.record(target, overwrite=overwrite, grads=grads, dtype=dtype, progress=on_epoch)
            except INTERRUPTS:  # the Recorder has closed the store (or discarded a replacement)
                err_console.print(f"[yellow]{markup(_kept(target, overwrite))}[/yellow]")
                raise
        final = None if store.loss is None else float(store.loss[-1])
        summary = {
            "store": str(store.path),
            "recipe": runner.name,
            "config": runner.config,
            "n_snapshots": store.n_snapshots,
            "n_params": store.n_params,
            # a diverged run has no final loss: null, and the epoch it diverged in says why
            "final_loss": final if final is not None and math.isfinite(final) else None,
            "diverged_epoch": diverged[0] if diverged else None,
        }
        if diverged:
            err_console.print(f"[yellow]training diverged: the loss is not finite from epoch {diverged[0]} on "
                              f"(lr {runner.config['lr']:g}); the store records the run as it went[/yellow]")
        if json_:
            print_json(summary)
        else:
            err_console.print(
                f"[green]recorded[/green] {store.n_snapshots} snapshots of {store.n_params} parameters to {markup(store.path)}"
            )


def recipes(
    json_: Annotated[bool, typer.Option("--json", help="Print the recipes and their options as JSON.")] = False,
) -> None:
    """List the built-in recipes and their options (set any with `--set key=value`)."""
    from rich.table import Table

    from ..recipes import RECIPES

    if json_:
        print_json({name: {"summary": cls.summary, "options": cls.all_defaults()} for name, cls in RECIPES.items()})
        return
    table = Table(title="traj recipes", show_lines=True)
    table.add_column("recipe", style="bold cyan", no_wrap=True)
    table.add_column("what it trains")
    table.add_column("options (defaults)")
    for name, cls in RECIPES.items():
        options = ", ".join(f"{k}={v}" for k, v in cls.all_defaults().items())
        table.add_row(name, cls.summary, options)
    out_console.print(table)
