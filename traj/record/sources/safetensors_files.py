"""safetensors checkpoints: one file, or the shards of a ``*.safetensors.index.json``.

Tensors are read with ``safetensors.safe_open``, a group of about ``budget`` bytes per
opening (a tensor larger than the budget in slices along its first axis). ``safe_open`` maps
the file: every page read stays resident (and counted in RSS) until the file is closed, so
the file is closed after each group. The layout lists the names in natural order
(``h.2`` before ``h.10``): a safetensors header keeps no order of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import ImportSourceError
from .base import (
    MAX_STEP,
    STEP_KEYS,
    Snapshot,
    TensorSpec,
    WeightsReader,
    check_name_is_plain,
    first_line,
    natural_key,
    number_in_name,
)
from .files import check_regular_file, read_json

__all__ = ["SafetensorsReader", "safetensors_snapshot", "sharded_safetensors_reader"]

_FLOAT_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                 "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _safe_open(path: Path) -> Any:
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - safetensors is a dependency of traj
        raise ImportSourceError("reading .safetensors needs the safetensors package: pip install safetensors") from None
    check_regular_file(path, path.name)  # a FIFO would block, a device never end
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # a truncated or foreign file
        raise ImportSourceError(f"{path.name}: not a readable safetensors file ({first_line(exc)})") from None


def _header(path: Path) -> tuple[list[TensorSpec], dict[str, str], set[str]]:
    """Floating-point tensors, the ``__metadata__`` and every tensor name of one file."""
    import torch

    specs = []
    with _safe_open(path) as f:
        metadata = dict(f.metadata() or {})
        names = set(f.keys())
        for name in f.keys():
            view = f.get_slice(name)
            dtype = _FLOAT_DTYPES.get(view.get_dtype())
            if dtype is not None and hasattr(torch, dtype):
                specs.append(TensorSpec(name, tuple(int(s) for s in view.get_shape()), getattr(torch, dtype)))
    return specs, metadata, names


class SafetensorsReader(WeightsReader):
    """Tensors spread over one or more safetensors files (``files`` maps each name to its file)."""

    def __init__(self, specs: list[TensorSpec], files: Mapping[str, Path], label: str) -> None:
        self._specs = sorted(specs, key=lambda s: natural_key(s.name))
        self._files = dict(files)
        self.label = label

    def specs(self) -> list[TensorSpec]:
        return list(self._specs)

    def pieces(self, names: Sequence[str], budget: int) -> Iterator[tuple[str, Any]]:
        specs = {s.name: s for s in self._specs}

        def sliced(spec: TensorSpec) -> bool:
            return spec.nbytes > budget and len(spec.shape) >= 1 and spec.shape[0] > 1

        i = 0
        while i < len(names):
            first = specs[names[i]]
            path = self._files[first.name]
            if sliced(first):
                yield from self._slices(first, path, budget)
                i += 1
                continue
            # consecutive tensors of one file, about ``budget`` bytes, in one opening
            group: list[TensorSpec] = []
            size = 0
            while i < len(names):
                spec = specs[names[i]]
                if self._files[spec.name] != path or sliced(spec) or (group and size + spec.nbytes > budget):
                    break
                group.append(spec)
                size += spec.nbytes
                i += 1
            with _safe_open(path) as f:
                for spec in group:
                    yield spec.name, _tensor(f, spec, self.label)

    def _slices(self, spec: TensorSpec, path: Path, budget: int) -> Iterator[tuple[str, Any]]:
        row_bytes = max(1, spec.nbytes // spec.shape[0])
        rows = max(1, budget // row_bytes)
        for a in range(0, spec.shape[0], rows):
            with _safe_open(path) as f:
                part = f.get_slice(spec.name)[a : a + rows]
                yield spec.name, part.reshape(-1)
                del part


def _tensor(f: Any, spec: TensorSpec, label: str) -> Any:
    try:
        tensor = f.get_tensor(spec.name)
    except Exception:  # the file changed under us
        raise ImportSourceError(f"{label}: parameter {spec.name!r} is gone (was the file replaced during the import?)") from None
    if tuple(tensor.shape) != spec.shape:
        raise ImportSourceError(f"{label}: parameter {spec.name!r} changed shape during the import")
    return tensor.reshape(-1)


def _metadata_int(metadata: Mapping[str, str], key: str, label: str) -> int | None:
    value = metadata.get(key)
    text = str(value).strip() if value is not None else ""
    if not re.fullmatch(r"[+-]?\d+", text):
        return None
    if len(text.lstrip("+-0")) > len(str(MAX_STEP)):  # int() of thousands of digits raises; scan_source refuses
        raise ImportSourceError(f"{label}: {key} in its metadata is a number of {len(text)} digits, beyond "
                                f"{MAX_STEP} (steps are 64-bit integers)")
    return int(text)


def safetensors_snapshot(path: Path, *, label: str | None = None) -> Snapshot:
    """One ``.safetensors`` file; step from its metadata (``global_step``/``step``/...) or its name."""
    label = label or path.name
    specs, metadata, _ = _header(path)
    step = next((s for s in (_metadata_int(metadata, k, label) for k in STEP_KEYS) if s is not None), None)
    step_from = "file"
    if step is None:
        step, step_from = number_in_name(path.name), "name"
    epoch = _metadata_int(metadata, "epoch", label)
    reader = SafetensorsReader(specs, {s.name: path for s in specs}, label)
    return Snapshot(reader, label, step, -1 if epoch is None else epoch, step_from=step_from)


def sharded_safetensors_reader(index: Path, label: str) -> SafetensorsReader:
    """The shards listed by ``model.safetensors.index.json`` (``weight_map``: name -> shard file)."""
    content = read_json(index, f"{label.rsplit('/', 1)[0]}/{index.name}")  # bounded in size and depth
    weight_map = content.get("weight_map") if isinstance(content, Mapping) else None
    if not isinstance(weight_map, Mapping):
        raise ImportSourceError(f"{label}: {index.name} is not a safetensors index (no 'weight_map')")
    by_file: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        check_name_is_plain(str(shard), index)
        by_file.setdefault(str(shard), []).append(str(name))
    specs: list[TensorSpec] = []
    files: dict[str, Path] = {}
    for shard, names in by_file.items():
        path = index.parent / shard
        if not path.is_file():
            raise ImportSourceError(f"{label}: shard {shard} named in {index.name} is missing")
        shard_specs, _, present = _header(path)
        absent = [n for n in names if n not in present]
        if absent:
            raise ImportSourceError(f"{label}: {index.name} puts {absent[0]!r} in {shard}, which does not hold it")
        wanted = set(names)
        for spec in shard_specs:
            if spec.name in wanted:
                specs.append(spec)
                files[spec.name] = path
    return SafetensorsReader(specs, files, label)
