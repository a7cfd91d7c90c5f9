"""``traj import``: bring checkpoints or a (T, N) .npy array into a run store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..display import markup
from ._common import err_console, fail, handle_errors, print_json, progress_bar


def import_(
    source: Annotated[Path, typer.Argument(help="A directory of state_dict checkpoints, or a .npy of shape (T, N).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Store to write.")],
    exclude: Annotated[list[str] | None, typer.Option(help="Glob of parameter names to leave out (repeatable).")] = None,
    every: Annotated[int, typer.Option(help="(.npy) steps between rows.")] = 1,
    dtype: Annotated[str | None, typer.Option(help="float32 or float64 (default: the source's).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing store at --out.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON summary to stdout.")] = False,
) -> None:
    """Build a run store from existing checkpoints or an array.

    Checkpoints are ordered by the step stored in each file (global_step, step or
    iteration), else by the last number in the file name; they are loaded with
    torch.load(weights_only=True).

    Examples:

        traj import checkpoints/ --out run.zarr

        traj import trajectory.npy --out run.zarr --every 10
    """
    with handle_errors():
        from ..record.importers import import_source

        if every < 1:
            raise fail(f"--every must be >= 1, got {every}")
        if dtype is not None and dtype not in ("float32", "float64"):
            raise fail(f"--dtype must be float32 or float64, not {dtype!r}")
        with progress_bar() as bar:
            task = bar.add_task("import", total=None)
            store = import_source(
                source, out, exclude=exclude or [], every=every, dtype=dtype, overwrite=overwrite,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        if json_:
            print_json({"store": str(store.path), "n_snapshots": store.n_snapshots, "n_params": store.n_params,
                        "steps": [int(store.steps[0]), int(store.steps[-1])]})
        else:
            err_console.print(f"[green]imported[/green] {store.n_snapshots} snapshots of {store.n_params} parameters to {markup(store.path)}")
