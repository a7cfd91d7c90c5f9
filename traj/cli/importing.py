"""``traj import``: bring checkpoints of any common layout, or a (T, N) .npy array, into a run store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..display import markup
from ._common import err_console, fail, flag_names, handle_errors, print_json, progress_bar


def import_(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="Checkpoints (a folder of them, or one) or a .npy of shape (T, N).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Store to write.")],
    exclude: Annotated[list[str] | None, typer.Option(help="Glob of parameter names to leave out (repeatable).")] = None,
    every: Annotated[int, typer.Option(help="(.npy) steps between rows.")] = 1,
    dtype: Annotated[str | None, typer.Option(help="float32, float64, bfloat16 or float16 (default: the source's own, e.g. bfloat16 safetensors stay bfloat16; float32 when tensors differ).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing store at --out.")] = False,
    block_mb: Annotated[float, typer.Option(help="Memory for the pieces of one checkpoint in flight, MiB.")] = 64.0,
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON summary to stdout.")] = False,
) -> None:
    """Build a run store from existing checkpoints or an array.

    The layout is detected and printed: a Hugging Face Trainer output (checkpoint-N/
    folders) or one checkpoint/model folder, torch.distributed.checkpoint directories (FSDP,
    Lightning sharded), Lightning .ckpt files, torch.save state_dicts, .safetensors files.
    Checkpoints are ordered by the step each records (trainer_state.json, global_step,
    step, iteration), else by the last number in the name. Files are data: torch.load runs
    with weights_only=True and optimizer, scheduler and RNG states are never opened.

    Examples:

        traj import hf-output/ --out run.zarr

        traj import lightning_logs/version_0/checkpoints/ --out run.zarr

        traj import trajectory.npy --out run.zarr --every 10
    """
    with handle_errors(ctx), flag_names("every"):
        from ..record.importers import import_source
        from ..store.dtypes import SNAPSHOT_DTYPES

        if dtype is not None and dtype not in SNAPSHOT_DTYPES:
            raise fail(f"--dtype must be one of {', '.join(SNAPSHOT_DTYPES)}, not {dtype!r}")
        if not block_mb > 0:
            raise fail(f"--block-mb must be > 0, got {block_mb}")
        found: dict[str, object] = {}

        with progress_bar() as bar:
            task = bar.add_task("import", total=None)

            def show(scan: object) -> None:  # printed once the import succeeded: an error stays one line
                found.update(kind=getattr(scan, "kind", "npy"), description=getattr(scan, "description", scan),
                             notes=list(getattr(scan, "notes", ())))
                bar.update(task, description=f"import {found['kind']}")

            store = import_source(
                source, out, exclude=exclude or [], every=every, dtype=dtype, overwrite=overwrite,
                block_bytes=max(1, int(block_mb * (1 << 20))), on_found=show,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        err_console.print(f"[bold]found[/bold] {markup(found['description'])}", highlight=False)
        for note in found["notes"]:  # type: ignore[attr-defined]
            err_console.print(f"  [dim]{markup(note)}[/dim]", highlight=False)
        if json_:
            print_json({"store": str(store.path), "n_snapshots": store.n_snapshots, "n_params": store.n_params,
                        "steps": [int(store.steps[0]), int(store.steps[-1])], "source": found})
        else:
            err_console.print(f"[green]imported[/green] {store.n_snapshots} snapshots of {store.n_params} parameters to {markup(store.path)}")
