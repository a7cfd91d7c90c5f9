"""``traj convert``: rewrite a run store in the current format (version 2), in one pass."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..display import markup
from ._common import err_console, fail, handle_errors, print_json, progress_bar, sigterm_as_interrupt


def convert(
    store: Annotated[Path, typer.Argument(help="A run store (directory) to rewrite.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the converted store here (a new path) instead of replacing STORE.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Store the snapshots as float32, float64, bfloat16 or float16 (default: as they are). A narrower dtype rounds them; traj info then says the store is a lossy copy.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON summary to stdout.")] = False,
) -> None:
    """Rewrite a store in format version 2 (sharded: column blocks read each byte once).

    Without --out the store is replaced in place: the new one is built beside it and swapped
    in by one rename when complete, so a conversion killed at any moment leaves the old store
    as it was. A store a recorder is writing is refused. A store already in version 2 is left
    alone (with --out it is copied).

    Examples:

        traj convert run.zarr

        traj convert old-run.zarr --out run-v2.zarr
    """
    with handle_errors(), sigterm_as_interrupt():
        from ..store import open_store
        from ..store.convert import convert_store
        from ..store.dtypes import SNAPSHOT_DTYPES
        from ..store.schema import FORMAT_VERSION

        before = open_store(store)
        if dtype is not None and dtype not in SNAPSHOT_DTYPES:
            raise fail(f"--dtype must be one of {', '.join(SNAPSHOT_DTYPES)}, not {dtype!r}")
        if out is None and before.format_version == FORMAT_VERSION and dtype in (None, before.stored_dtype):
            message = f"{store} is already in format version {FORMAT_VERSION}; nothing to do"
            if json_:
                print_json({"store": str(store), "from_version": FORMAT_VERSION, "version": FORMAT_VERSION, "converted": False})
            else:
                err_console.print(markup(message), highlight=False)
            return
        with progress_bar() as bar:
            task = bar.add_task("convert", total=before.n_snapshots)
            after = convert_store(store, out, dtype=dtype,
                                  progress=lambda done, total: bar.update(task, completed=done, total=total))
        converted = after.attrs.get("converted")
        kept = converted.get("kept") if isinstance(converted, dict) and out is None else None
        kept = [str(name) for name in kept] if isinstance(kept, list) else []
        if json_:
            print_json({"store": str(after.path), "from_version": before.format_version, "version": after.format_version,
                        "converted": True, "n_snapshots": after.n_snapshots, "n_params": after.n_params,
                        "from_dtype": before.stored_dtype, "dtype": after.stored_dtype,
                        "chunks": list(after.chunks), "shards": list(after.shards or ()), "kept": kept})
        else:
            err_console.print(
                f"[green]converted[/green] {after.n_snapshots} snapshots of {after.n_params} parameters to "
                f"{markup(after.path)} (format version {before.format_version} -> {after.format_version}, "
                f"{before.stored_dtype}" + ("" if after.stored_dtype == before.stored_dtype else f" -> {after.stored_dtype}")
                + ", "
                f"shards {after.shards}, inner chunks {after.chunks})", highlight=False)
            if kept:
                err_console.print(f"kept what else was in the store: {markup(', '.join(kept))}", highlight=False)
