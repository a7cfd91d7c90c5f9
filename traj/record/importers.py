"""Bring existing runs into a run store: a directory of PyTorch checkpoints, or a (T, N) ``.npy``.

Checkpoints are loaded with ``torch.load(weights_only=True)``: a checkpoint file is data and
must never be able to run code.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import check_every
from ..errors import ImportSourceError
from ..store import Layout, RunStore, StoreWriter

__all__ = ["import_checkpoints", "import_npy", "import_source", "CHECKPOINT_SUFFIXES"]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")
#: state_dict entries that are running statistics, not trained parameters
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "params", "weights")
_STEP_KEYS = ("global_step", "step", "iteration", "iter")

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class _Checkpoint:
    path: Path
    step: int
    epoch: int


def import_source(source: str | os.PathLike[str], out: str | os.PathLike[str], **options: Any) -> RunStore:
    """Import a checkpoint directory or a ``.npy`` file, whichever ``source`` is."""
    source = Path(source)
    if not source.exists():
        raise ImportSourceError(f"{source}: no such file or directory")
    if "every" in options:
        check_every(options["every"])  # a checkpoint directory takes its steps from the files, but a bad value is still refused
    if source.is_dir():
        options.pop("every", None)
        return import_checkpoints(source, out, **options)
    if source.suffix == ".npy":
        options.pop("exclude", None)
        return import_npy(source, out, **options)
    raise ImportSourceError(f"{source}: expected a directory of checkpoints or a .npy file of shape (T, N)")


def _load(path: Path) -> Any:
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refused a global: the file holds pickled code. Never repeat torch's advice
        # (re-run with weights_only=False), which would run it.
        text = str(exc)
        if re.search(r"GLOBAL|allowlisted|unrecognized function", text):
            found = re.search(r"GLOBAL ([A-Za-z_][\w.]{0,120})", text)
            what = f"a class or function: {found.group(1)}" if found else "a class or function"
            raise ImportSourceError(f"{path.name}: holds pickled code ({what}), which traj never runs; "
                                    "save a plain state_dict of tensors") from None
        raise ImportSourceError(f"{path.name}: not a loadable PyTorch checkpoint (not written by torch.save, "
                                "or damaged)") from None
    except Exception as exc:  # torch raises many types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = "".join(ch for ch in first if ch.isprintable())
        raise ImportSourceError(f"{path.name}: not a loadable PyTorch checkpoint ({first[:200]})") from None


def _state_dict(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        # a flat state_dict, possibly with scalar bookkeeping beside it ({"w": ..., "step": 10})
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and all(isinstance(v, torch.Tensor | int | float | str) for v in obj.values()):
            return tensors
    raise ImportSourceError(
        f"{path.name}: no state_dict found (expected a dict of tensors, or one under "
        f"{', '.join(repr(k) for k in _WRAPPER_KEYS)})"
    )


def _number_in_name(path: Path) -> int | None:
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


def _meta(obj: Any, path: Path) -> tuple[int, int]:
    step = epoch = None
    if isinstance(obj, Mapping):
        for key in _STEP_KEYS:
            if isinstance(obj.get(key), int | np.integer) and not isinstance(obj.get(key), bool):
                step = int(obj[key])
                break
        if isinstance(obj.get("epoch"), int | np.integer) and not isinstance(obj.get("epoch"), bool):
            epoch = int(obj["epoch"])
    if step is None:
        step = _number_in_name(path)
    if step is None:
        raise ImportSourceError(f"{path.name}: no step in the file (keys {', '.join(_STEP_KEYS)}) or in its name")
    return step, -1 if epoch is None else epoch


def _selected(state: Mapping[str, Any], exclude: Iterable[str]) -> list[tuple[str, Any]]:
    patterns = list(exclude)
    chosen = []
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        if name.endswith(BUFFER_SUFFIXES):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        chosen.append((name, tensor))
    return chosen


def import_checkpoints(
    directory: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    exclude: Iterable[str] = (),
    dtype: str | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> RunStore:
    """Build a run store from a directory of ``state_dict`` checkpoints, ordered by step.

    The step of each file is its ``global_step``/``step``/``iteration`` entry, else the last
    number in its name. Floating-point tensors are recorded, except BatchNorm running
    statistics and names matching an ``exclude`` glob. Weights of rank >= 2 named ``*weight``
    are marked prunable.
    """
    import torch

    directory = Path(directory)
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    if not files:
        raise ImportSourceError(f"{directory}: no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)})")
    # First pass: steps and shapes of every file, so a bad directory fails before anything is written.
    checkpoints = []
    reference: list[tuple[str, Any]] | None = None
    for path in files:
        obj = _load(path)
        step, epoch = _meta(obj, path)
        tensors = _selected(_state_dict(obj, path), exclude)
        if reference is None:
            if not tensors:
                raise ImportSourceError(f"{path.name}: no floating-point tensors to record")
            reference, reference_file = tensors, path
        else:
            _check_same_tensors(tensors, reference, path, reference_file)
        checkpoints.append(_Checkpoint(path, step, epoch))
        del obj, tensors
    assert reference is not None
    checkpoints.sort(key=lambda c: c.step)
    steps = [c.step for c in checkpoints]
    dupes = sorted({s for s in steps if steps.count(s) > 1})
    if dupes:
        same = [c.path.name for c in checkpoints if c.step == dupes[0]]
        raise ImportSourceError(f"two checkpoints have step {dupes[0]}: {', '.join(same)}")
    if steps[0] < 0:
        raise ImportSourceError(f"{checkpoints[0].path.name}: negative step {steps[0]}")

    layout = Layout.from_shapes(
        [(n, tuple(t.shape)) for n, t in reference],
        prunable=[n for n, t in reference if n.endswith("weight") and t.ndim >= 2],
    )
    if dtype is None:
        dtype = "float64" if any(t.dtype == torch.float64 for _, t in reference) else "float32"
    writer = _new_writer(out, layout, dtype, {"unit": "checkpoint"}, {"kind": "checkpoints", "path": str(directory)}, overwrite)
    with _removed_on_failure(writer, out):
        for i, ckpt in enumerate(checkpoints):
            obj = _load(ckpt.path)
            tensors = dict(_selected(_state_dict(obj, ckpt.path), exclude))
            theta = np.empty(layout.n_params, dtype=writer.dtype)
            for entry in layout.entries:
                theta[entry.columns] = tensors[entry.name].detach().reshape(-1).to(torch.float64).numpy()
            writer.append(theta, step=ckpt.step, epoch=ckpt.epoch)
            if (i + 1) % 16 == 0:
                writer.commit()
            if progress is not None:
                progress(i + 1, len(checkpoints))
    return RunStore(out)


def import_npy(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    every: int = 1,
    name: str = "theta",
    dtype: str | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> RunStore:
    """Build a run store from a ``.npy`` array of shape (T, N) (row k = θ at step k·every)."""
    path = Path(path)
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        if "pickle" in str(exc):  # not an .npy header, or an object array: never unpickled
            raise ImportSourceError(f"{path.name}: not a numeric .npy array (traj never loads pickled data)") from None
        raise ImportSourceError(f"{path.name}: not a readable .npy array ({exc})") from None
    if data.ndim != 2 or data.shape[0] < 1 or data.shape[1] < 1:
        raise ImportSourceError(f"{path.name}: expected shape (T, N), got {data.shape}")
    if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
        raise ImportSourceError(f"{path.name}: dtype {data.dtype} is not numeric")
    every = check_every(every)
    if dtype is None:
        dtype = "float64" if data.dtype == np.float64 else "float32"
    layout = Layout.from_shapes([(name, (data.shape[1],))], prunable=[name])
    writer = _new_writer(out, layout, dtype, {"every": every, "unit": "step"}, {"kind": "npy", "path": str(path)}, overwrite)
    with _removed_on_failure(writer, out):
        batch = max(1, (32 << 20) // max(1, data.shape[1] * 8))
        for start in range(0, data.shape[0], batch):
            rows = np.asarray(data[start : start + batch])
            for k, row in enumerate(rows, start=start):
                writer.append(row.astype(writer.dtype, copy=False), step=k * every, epoch=-1)
            writer.commit()
            if progress is not None:
                progress(min(start + batch, data.shape[0]), data.shape[0])
    return RunStore(out)


def _check_same_tensors(tensors: list[tuple[str, Any]], reference: list[tuple[str, Any]], path: Path, first: Path) -> None:
    shapes = {n: tuple(t.shape) for n, t in tensors}
    for name, tensor in reference:
        if name not in shapes:
            raise ImportSourceError(f"{path.name}: parameter {name!r} (in {first.name}) is missing")
        if shapes[name] != tuple(tensor.shape):
            raise ImportSourceError(
                f"{path.name}: parameter {name!r} has shape {list(shapes[name])}, {first.name} has {list(tensor.shape)}"
            )
    extra = sorted(set(shapes) - {n for n, _ in reference})
    if extra:
        raise ImportSourceError(f"{path.name}: parameter {extra[0]!r} is not in {first.name}")


def _new_writer(out: str | os.PathLike[str], layout: Layout, dtype: str, spacing: dict[str, Any],
                source: dict[str, Any], overwrite: bool) -> StoreWriter:
    if Path(out).exists() and (Path(out) / "zarr.json").exists() and not overwrite:
        raise ImportSourceError(f"{out} already exists; choose another --out or pass --overwrite")
    return StoreWriter(out, layout, dtype=dtype, spacing=spacing, attrs={"source": source}, overwrite=overwrite)


@contextmanager
def _removed_on_failure(writer: StoreWriter, out: str | os.PathLike[str]) -> Iterator[None]:
    """Close the writer at the end; on any failure also delete the half-written store."""
    try:
        yield
    except BaseException:
        writer.close()
        shutil.rmtree(out, ignore_errors=True)
        raise
    writer.close()
