"""Bring existing runs into a run store: checkpoints of every common layout, or a (T, N) ``.npy``.

:func:`import_source` detects what a source is (:mod:`traj.record.sources`: Hugging Face
Trainer output and model folders, torch.distributed.checkpoint directories, Lightning
checkpoints, ``torch.save`` state_dicts, safetensors files), checks every checkpoint's tensor
names and shapes before anything is written, and then copies the weights in step order, one
piece at a time: memory stays near ``block_bytes`` (plus one chunk of the store) whatever the
size of a checkpoint. Checkpoint files are data and never run code: ``torch.save`` files are
loaded with ``weights_only=True``, and DCP metadata through an allow-list unpickler.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import check_every
from ..errors import ImportSourceError
from ..progress import Progress
from ..store import Layout, RunStore, StoreWriter
from ..store.run_store import DEFAULT_BLOCK_BYTES
from .sources import CHECKPOINT_SUFFIXES, KINDS, Snapshot, SourceScan, scan_source
from .sources.files import check_regular_file

__all__ = ["import_checkpoints", "import_npy", "import_scan", "import_source", "scan_source", "CHECKPOINT_SUFFIXES", "KINDS",
           "SourceScan"]


def import_source(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    exclude: Iterable[str] = (),
    every: int = 1,
    dtype: str | None = None,
    overwrite: bool = False,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: Progress | None = None,
    on_found: Callable[[SourceScan | str], None] | None = None,
) -> RunStore:
    """Import checkpoints of any layout :func:`scan_source` detects, or a ``.npy`` array of shape (T, N).

    Parameters
    ----------
    source : path
        A folder of checkpoints, one checkpoint (file or folder), or a ``.npy`` file.
    exclude : globs of parameter names to leave out (checkpoints).
    every : steps between rows (``.npy`` only; checkpoints carry their own steps).
    dtype : {"float32", "float64", "bfloat16", "float16"}, optional
        Default: the tensors' own dtype when they all share one (bfloat16 safetensors stay
        bfloat16, 2 bytes per value), float64 when any is float64, else float32.
    block_bytes : memory for the pieces of one checkpoint in flight (and for buffered rows).
    on_found : called once with the :class:`SourceScan` (or a one-line description for a
        ``.npy``) before anything is written; the CLI prints what it found.
    """
    path = Path(source)
    if not path.exists():
        raise ImportSourceError(f"{path}: no such file or directory")
    every = check_every(every)  # a checkpoint folder takes its steps from the files, but a bad value is still refused
    check_import_target(path, out, overwrite=overwrite)  # before reading anything
    if path.is_file() and path.suffix == ".npy":
        if on_found is not None:
            shape = _open_npy(path).shape
            on_found(f"a (T, N) .npy array: {path.name}, T = {shape[0]}, N = {shape[1]}")
        return import_npy(path, out, every=every, dtype=dtype, overwrite=overwrite, progress=progress)
    scan = scan_source(path, exclude=exclude)
    if on_found is not None:
        on_found(scan)
    return import_scan(scan, out, dtype=dtype, overwrite=overwrite, block_bytes=block_bytes, progress=progress)


def import_checkpoints(
    directory: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    exclude: Iterable[str] = (),
    dtype: str | None = None,
    overwrite: bool = False,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: Progress | None = None,
) -> RunStore:
    """Build a run store from checkpoints (any layout :func:`scan_source` detects), ordered by step.

    The step of each checkpoint is the one it records (``global_step``/``step``/``iteration``,
    ``trainer_state.json``, Lightning's ``global_step``), else the last number in its name.
    Floating-point tensors are recorded, except BatchNorm running statistics and names
    matching an ``exclude`` glob. Prunable: :mod:`traj.prunable` (weights of rank >= 2, not embeddings).
    """
    scan = scan_source(directory, exclude=exclude)
    return import_scan(scan, out, dtype=dtype, overwrite=overwrite, block_bytes=block_bytes, progress=progress)


def import_scan(
    scan: SourceScan,
    out: str | os.PathLike[str],
    *,
    dtype: str | None = None,
    overwrite: bool = False,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: Progress | None = None,
) -> RunStore:
    """Write the snapshots of a checked :class:`SourceScan` to a new store at ``out``."""
    if block_bytes < 1:
        raise ImportSourceError(f"block_bytes must be >= 1, got {block_bytes}")
    layout = scan.layout
    source = {"kind": scan.kind, "path": str(scan.path)}
    writer = _new_writer(out, layout, dtype or scan.dtype, {"unit": "checkpoint"}, source, overwrite)
    with _removed_on_failure(writer, out):
        row_bytes = layout.n_params * writer.dtype.itemsize
        buffered = 0
        for i, snap in enumerate(scan.snapshots):
            pieces = _pieces(snap, layout, writer.stored_dtype, block_bytes)
            values = {"step": snap.step, "epoch": snap.epoch, "loss": snap.loss, "metrics": dict(snap.metrics)}
            if row_bytes > block_bytes:
                writer.append_streamed(pieces, **values)
            else:
                theta = np.empty(layout.n_params, dtype=writer.dtype)
                at = 0
                for piece in pieces:
                    theta[at : at + piece.size] = piece
                    at += piece.size
                writer.append(theta, **values)
                buffered += row_bytes
                if buffered >= block_bytes:
                    writer.commit()
                    buffered = 0
            if progress is not None:
                progress(i + 1, len(scan.snapshots))
    return RunStore(out)


def _pieces(snap: Snapshot, layout: Layout, dtype: str, budget: int) -> Iterator[np.ndarray]:
    """θ of one snapshot in layout order, as pieces of the store's dtype (bfloat16 as its uint16 bit
    patterns); checks every tensor's size."""
    import torch

    target = getattr(torch, dtype)
    names = [e.name for e in layout.entries]
    expected = iter(layout.entries)
    entry = next(expected)
    seen = 0
    for name, piece in snap.reader.pieces(names, budget):
        while name != entry.name:
            if seen != entry.size:
                raise ImportSourceError(f"{snap.label}: parameter {entry.name!r} has {seen} values, expected {entry.size}")
            entry, seen = next(expected), 0
        seen += piece.numel()
        if seen > entry.size:
            raise ImportSourceError(f"{snap.label}: parameter {entry.name!r} has more than {entry.size} values")
        piece = piece.detach().to(target)
        yield piece.view(torch.int16).numpy().view(np.uint16) if target == torch.bfloat16 else piece.numpy()
    if seen != entry.size or next(expected, None) is not None:
        raise ImportSourceError(f"{snap.label}: fewer values than its layout promised (was a file replaced?)")


def import_npy(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    every: int = 1,
    name: str = "theta",
    dtype: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RunStore:
    """Build a run store from a ``.npy`` array of shape (T, N) (row k = θ at step k·every)."""
    path = Path(path)
    data = _open_npy(path)
    every = check_every(every)
    if dtype is None:
        dtype = "float64" if data.dtype == np.float64 else "float32"
    # a bare (T, N) array has no names or shapes for the rule of traj.prunable: all of it is prunable
    layout = Layout.from_shapes([(name, (data.shape[1],))], prunable=[name])
    writer = _new_writer(out, layout, dtype, {"every": every, "unit": "step"}, {"kind": "npy", "path": str(path)}, overwrite)
    with _removed_on_failure(writer, out):
        # A batch is bounded in bytes and in rows: each buffered row costs the writer a dict of its
        # step, epoch and time (~1 KB), so 4M rows of one column must not be buffered at once.
        batch = max(1, min((32 << 20) // max(1, data.shape[1] * 8), _NPY_ROWS_PER_COMMIT))
        for start in range(0, data.shape[0], batch):
            rows = np.asarray(data[start : start + batch])
            for k in range(rows.shape[0]):
                writer.append(rows[k], step=(start + k) * every, epoch=-1)  # rounded to the store's dtype by the writer
            writer.commit()
            del rows
            if progress is not None:
                progress(min(start + batch, data.shape[0]), data.shape[0])
    return RunStore(out)


#: rows of a ``.npy`` buffered per commit (with at most 32 MiB of values)
_NPY_ROWS_PER_COMMIT = 16384


def _open_npy(path: Path) -> np.ndarray:
    """The (T, N) numeric array of a ``.npy`` file, memory-mapped; never unpickled."""
    check_regular_file(path, path.name)  # np.load would block on a FIFO
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        if "pickle" in str(exc):  # not an .npy header, or an object array: never unpickled
            raise ImportSourceError(f"{path.name}: not a numeric .npy array (traj never loads pickled data)") from None
        raise ImportSourceError(f"{path.name}: not a readable .npy array ({exc})") from None
    if data.ndim != 2 or data.shape[0] < 1 or data.shape[1] < 1:
        raise ImportSourceError(f"{path.name}: expected shape (T, N), got {data.shape}")
    if np.issubdtype(data.dtype, np.complexfloating):  # numeric, but a run store holds real coordinates
        raise ImportSourceError(f"{path.name}: complex arrays are not supported (dtype {data.dtype}): save the real "
                                "and imaginary parts as coordinates of their own, np.concatenate([a.real, a.imag], axis=1)")
    if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
        raise ImportSourceError(f"{path.name}: dtype {data.dtype} is not numeric")
    return data


def check_import_target(source: str | os.PathLike[str], out: str | os.PathLike[str], *, overwrite: bool) -> None:
    """Refuse an ``out`` that would touch the source or something that is not a replaceable store."""
    from ..atomic import is_within

    source, out = Path(source), Path(out)
    if is_within(out, source) or is_within(source, out):
        raise ImportSourceError(f"--out {out} overlaps the source {source}; write the store elsewhere")
    if os.path.lexists(out) and not overwrite:
        raise ImportSourceError(f"{out} already exists; choose another --out or pass --overwrite")


def _new_writer(out: str | os.PathLike[str], layout: Layout, dtype: str, spacing: dict[str, Any],
                source: dict[str, Any], overwrite: bool) -> StoreWriter:
    check_import_target(source["path"], out, overwrite=overwrite)
    # atomic: built beside --out and moved there whole by close(); a killed import leaves nothing
    return StoreWriter(out, layout, dtype=dtype, spacing=spacing, attrs={"source": source}, overwrite=overwrite,
                       atomic=True)


@contextmanager
def _removed_on_failure(writer: StoreWriter, out: str | os.PathLike[str]) -> Iterator[None]:
    """Close the writer at the end (which moves the store into place); on any failure delete
    the staging copy, so ``out`` keeps what it held before (or stays absent)."""
    try:
        yield
    except BaseException:
        writer.abort()
        raise
    writer.close()
