"""Rewrite a run store in the current format (``traj convert``): one pass, nothing lost if killed.

A version-1 store (unsharded chunks) is read once, in its own chunk order, and written as a
version-2 store (shards, :func:`~traj.store.schema.choose_shards`) with the same snapshots,
series, gradients and attributes. The new store is built beside its destination by the store
writer's staged mode and moved into place in one rename when complete: converted in place, the
old store is swapped out only then (and deleted after the swap; whatever else the user kept in
the store's directory, a README or an array of their own, is carried into the new one); into
``out``, nothing appears
there before the end. A conversion killed at any moment leaves the old store as it was, plus a
staging sibling that the next write of the same path removes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import TrajError
from .dtypes import lossy_from
from .run_store import RunStore
from .schema import FORMAT_VERSION, check_dtype
from .writer import StoreWriter, foreign_entries

__all__ = ["convert_store"]

ProgressCallback = Callable[[int, int], None]

#: Attributes the writer sets itself; every other attribute of the old store is carried over.
_OWN_ATTRS = ("traj", "layout", "n_params", "dtype", "n_snapshots", "n_snapshots_closed", "state")
#: Columns read at a time from a store whose rows are one chunk tall (memory per piece).
_PIECE_BYTES = 16 << 20


def convert_store(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    dtype: str | None = None,
    progress: ProgressCallback | None = None,
) -> RunStore:
    """Rewrite the store at ``source`` in format version 2, in place or into a new store ``out``.

    Parameters
    ----------
    source : path
        A run store of any readable version. A store another process is writing is refused
        (in place); a damaged one (rows lost) is refused.
    out : path, optional
        Where the new store goes; it must not exist. Default: ``source`` itself, replaced in
        one rename once the new store is complete.
    dtype : {"float32", "float64", "bfloat16", "float16"}, optional
        Store the snapshots in this dtype (default: as they are). A narrower one rounds them
        (to nearest, ties to even): the new store records that it is a lossy copy, and of what.
    progress : callable, optional
        ``progress(done, total)`` in snapshots.

    Returns
    -------
    RunStore
        The converted store, opened.
    """
    source = Path(source)
    old = RunStore(source)
    target_dtype = old.stored_dtype if dtype is None else check_dtype(dtype)
    if out is not None:
        from ..atomic import is_within

        out = Path(out)
        if os.path.lexists(out):
            raise TrajError(f"{out} already exists; choose a new --out (or convert {source} in place)")
        if is_within(out, source) or is_within(source, out):
            raise TrajError(f"--out {out} overlaps {source}; write the converted store elsewhere")
    elif old.format_version == FORMAT_VERSION and target_dtype == old.stored_dtype:
        return old
    attrs = {k: v for k, v in old.attrs.items() if k not in _OWN_ATTRS}
    attrs["converted"] = {"from_version": old.format_version, "traj": __version__,
                          "at": datetime.now(UTC).isoformat(timespec="seconds")}
    if target_dtype != old.stored_dtype:
        attrs["converted"]["from_dtype"] = old.stored_dtype
        previous = old.lossy_from
        attrs.pop("lossy", None)
        lossy = lossy_from(previous or [old.stored_dtype], target_dtype)
        if lossy:
            attrs["lossy"] = lossy
        elif previous:  # widening a rounded copy does not bring the digits back
            attrs["lossy"] = old.attrs["lossy"]
    if out is None:  # in place: what the user keeps in the store (a README, an array of their own) stays
        attrs["converted"]["kept"] = [entry.name for entry in foreign_entries(source)]
    # In place: the writer holds the old store's lock (no recorder may append meanwhile) and swaps at close.
    writer = StoreWriter(out if out is not None else source, old.layout, dtype=target_dtype, attrs=attrs,
                         overwrite=out is None, atomic=True)
    try:
        _copy_rows(old, writer, progress)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return RunStore(out if out is not None else source)


def _copy_rows(old: RunStore, writer: StoreWriter, progress: ProgressCallback | None) -> None:
    """Every committed snapshot of ``old`` into ``writer``, reading each stored chunk once."""
    t = old.n_snapshots
    loss = old.loss
    metrics = {name: old.metric(name) for name in old.metric_names}

    def values(k: int) -> dict[str, Any]:
        return {
            "step": int(old.steps[k]),
            "epoch": int(old.epochs[k]),
            "time": float(old.times[k]),
            "loss": None if loss is None else float(loss[k]),
            "metrics": {name: float(v[k]) for name, v in metrics.items()},
        }

    t_chunk = old.chunks[0] if old.shards is None else old.shards[0]
    if t_chunk == 1:  # wide rows: stream each row in column pieces that follow the old chunks
        width = _piece_width(old)
        for k in range(t):
            rows = slice(k, k + 1)
            grads = _pieces(old, rows, width, "grads") if old.has_grads else None
            writer.append_streamed(_pieces(old, rows, width, "params"), grads=grads, **values(k))
            if progress is not None:
                progress(k + 1, t)
        return
    for start in range(0, t, t_chunk):  # small rows, stacked: one old chunk row at a time
        rows = slice(start, min(t, start + t_chunk))
        block = old.read(rows=rows)
        grads = old.read(rows=rows, array="grads") if old.has_grads else None
        for i, k in enumerate(range(rows.start, rows.stop)):
            writer.append(block[i], grads=None if grads is None else grads[i], **values(k))
        writer.commit()
        if progress is not None:
            progress(rows.stop, t)


def _piece_width(store: RunStore) -> int:
    """Columns per piece: whole old chunks, about 16 MiB."""
    chunk = store.chunks[1] if store.shards is None else store.shards[1]
    per_piece = max(1, _PIECE_BYTES // max(1, chunk * store.dtype.itemsize))
    return min(store.n_params, per_piece * chunk)


def _pieces(store: RunStore, rows: slice, width: int, array: str) -> Iterator[np.ndarray]:
    for start in range(0, store.n_params, width):
        yield store.read(rows=rows, columns=slice(start, min(store.n_params, start + width)), array=array)[0]
