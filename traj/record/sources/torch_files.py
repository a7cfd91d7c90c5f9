"""``torch.save`` checkpoints (.pt, .pth, .bin, .tar, Lightning's .ckpt), loaded with ``weights_only=True``.

A checkpoint file is data and must never be able to run code, so every load is
``torch.load(weights_only=True)``. Zip-format files (everything torch has written since 1.6)
are memory-mapped: reading one group of tensors touches only their pages, and the mapping is
dropped after each group, so a checkpoint larger than RAM streams through.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ImportSourceError
from .base import STEP_KEYS, WRAPPER_KEYS, Snapshot, TensorSpec, WeightsReader, first_line, number_in_name
from .files import check_regular_file
from .lightning import is_lightning, lightning_meta

__all__ = ["TORCH_SUFFIXES", "TorchFileReader", "load_torch", "state_dict_of", "torch_file_snapshot"]

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")


def load_torch(path: Path, *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)``; any failure is one :class:`ImportSourceError` line."""
    import torch

    check_regular_file(path, path.name)  # a FIFO would block torch.load, /dev/zero never end
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for a bad file
        text = str(exc)
        if isinstance(exc, pickle.UnpicklingError) and re.search(r"GLOBAL|allowlisted|unrecognized function", text):
            # weights_only refused a global (e.g. an argparse.Namespace or OmegaConf config in Lightning's
            # hyper_parameters): the file holds pickled code. Never repeat torch's advice to re-run with
            # weights_only=False, which would run it.
            found = re.search(r"GLOBAL ([A-Za-z_][\w.]{0,120})", text)
            what = f"a class or function: {found.group(1)}" if found else "a class or function"
            raise ImportSourceError(f"{path.name}: holds pickled code ({what}), which traj never runs; "
                                    "save a plain state_dict of tensors") from None
        if isinstance(exc, pickle.UnpicklingError):
            raise ImportSourceError(f"{path.name}: not a loadable PyTorch checkpoint (not written by torch.save, "
                                    "or damaged)") from None
        raise ImportSourceError(f"{path.name}: not a loadable PyTorch checkpoint ({first_line(exc)})") from None


def state_dict_of(obj: Any, label: str) -> dict[str, Any]:
    """The state_dict inside a loaded checkpoint: the object itself, or under a common wrapper key."""
    import torch

    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        # a flat state_dict, possibly with scalar bookkeeping beside it ({"w": ..., "step": 10})
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and all(isinstance(v, torch.Tensor | int | float | str) for v in obj.values()):
            return tensors
    raise ImportSourceError(
        f"{label}: no state_dict found (expected a dict of tensors, or one under "
        f"{', '.join(repr(k) for k in WRAPPER_KEYS)})"
    )


def _floating_without_aliases(state: Mapping[str, Any], label: str) -> dict[str, Any]:
    """Floating-point tensors; a tensor saved under two names (tied weights) is kept under the first.

    Every tensor is checked against the bytes the file holds for it before anything reads it:
    a sparse or meta tensor is refused, and so are views that declare more values than their
    storage holds (``expand``, overlapping ``as_strided``), alone or together: a 4 KB file
    of such views would otherwise become a store of gigabytes.
    """
    seen: set[tuple[Any, ...]] = set()
    kept = {}
    declared: dict[int, int] = {}  # values the kept views of each storage declare
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            continue
        if tensor.layout != _strided():
            raise ImportSourceError(f"{label}: parameter {str(name)!r} is a sparse tensor ({tensor.layout}); "
                                    "traj records dense tensors only")
        if tensor.is_meta:
            raise ImportSourceError(f"{label}: parameter {str(name)!r} is a meta tensor: the file holds no values for it")
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()))
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        held = storage.nbytes() // tensor.element_size()
        numel = tensor.numel()
        if numel:
            end = tensor.storage_offset() + sum((s - 1) * st for s, st in zip(tensor.shape, tensor.stride(), strict=True))
            if numel > held or end >= held or min(tensor.stride(), default=1) < 0:
                raise ImportSourceError(
                    f"{label}: parameter {str(name)!r} declares {numel} values over {held} stored in the file "
                    "(an expanded or overlapping view); save tensors with .contiguous()")
            total = declared.get(storage.data_ptr(), 0) + numel
            if total > held:
                raise ImportSourceError(
                    f"{label}: parameter {str(name)!r} and the tensors before it view one storage of {held} values "
                    f"as {total} (overlapping views); save tensors with .contiguous()")
            declared[storage.data_ptr()] = total
        kept[str(name)] = tensor
    return kept


def _strided() -> Any:
    import torch

    return torch.strided


def _int_entry(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)  # any size: scan_source refuses one outside a step's range, naming the file
    return None


class TorchFileReader(WeightsReader):
    """The state_dict of one ``torch.save`` file."""

    def __init__(self, path: Path, specs: list[TensorSpec], *, label: str | None = None) -> None:
        self.path = path
        self.label = label or path.name
        self._specs = specs
        check_regular_file(path, self.label)  # zipfile.is_zipfile would block on a FIFO
        self._mmap = zipfile.is_zipfile(path)

    def specs(self) -> list[TensorSpec]:
        return list(self._specs)

    def _state(self) -> dict[str, Any]:
        return _floating_without_aliases(state_dict_of(load_torch(self.path, mmap=self._mmap), self.label), self.label)

    def pieces(self, names: Sequence[str], budget: int) -> Iterator[tuple[str, Any]]:
        sizes = {s.name: s.nbytes for s in self._specs}
        if not self._mmap:  # a legacy (pre-zip) file cannot be mapped: it is read whole, once
            state = self._state()
            for name in names:
                yield name, _checked(state, name, self.label).reshape(-1)
            return
        # Map the file once per group of about ``budget`` bytes; dropping the mapping releases
        # the pages read (a mapping kept open would count every page touched in RSS).
        i = 0
        while i < len(names):
            group, size = [], 0
            while i < len(names) and (not group or size + sizes[names[i]] <= budget):
                group.append(names[i])
                size += sizes[names[i]]
                i += 1
            state = self._state()
            for name in group:
                flat = _checked(state, name, self.label).reshape(-1)
                step = max(1, budget // max(1, flat.element_size()))
                for a in range(0, max(flat.numel(), 1), step):
                    yield name, flat[a : a + step]
            del state


def _checked(state: Mapping[str, Any], name: str, label: str) -> Any:
    if name not in state:
        raise ImportSourceError(f"{label}: parameter {name!r} is gone (was the file replaced during the import?)")
    return state[name].detach()


def torch_file_snapshot(path: Path, *, label: str | None = None) -> Snapshot:
    """Open one ``torch.save`` file (mapped, tensors untouched): its tensors, step, epoch and metrics."""
    label = label or path.name
    check_regular_file(path, label)  # zipfile.is_zipfile would block on a FIFO
    obj = load_torch(path, mmap=zipfile.is_zipfile(path))
    state = _floating_without_aliases(state_dict_of(obj, label), label)
    specs = [TensorSpec(n, tuple(t.shape), t.dtype) for n, t in state.items()]
    step = epoch = None
    metrics: dict[str, float] = {}
    step_from = "file"
    if isinstance(obj, Mapping):
        step = next((s for s in (_int_entry(obj, k) for k in STEP_KEYS) if s is not None), None)
        epoch = _int_entry(obj, "epoch")
        if is_lightning(obj):
            metrics = lightning_meta(obj)
    if step is None:
        step, step_from = number_in_name(path.name), "name"
    del obj, state
    return Snapshot(TorchFileReader(path, specs, label=label), label, step, -1 if epoch is None else epoch,
                    metrics=metrics, step_from=step_from)
