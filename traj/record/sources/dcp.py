"""torch.distributed.checkpoint (DCP) directories: ``.metadata`` + ``__<rank>_<i>.distcp``, read without a process group.

FSDP, torchtitan and Lightning's distributed strategies write these. torch's own reader
(``FileSystemReader.read_metadata``) unpickles ``.metadata`` with plain ``pickle.load`` and its
planner loads non-tensor entries with ``weights_only=False``: either runs whatever code the
file names. traj reads the same format itself: ``.metadata`` through an unpickler that
accepts only DCP's metadata classes, torch dtypes and ``torch.Size``, and every stored item
(a ``torch.save`` of one tensor chunk or one value at an offset of a ``.distcp`` file) with
``torch.load(weights_only=True)``. A tensor sharded across ranks is assembled from its
chunks, so memory is about one tensor at a time.

Which entries are the model: DCP flattens nested dicts and keeps each key's original path
(``planner_data``). When the checkpoint has a top-level ``model`` (or ``state_dict``, ...)
dict, as FSDP recipes and Lightning's ``{"model": ..., "optimizer_0": ...}`` do, its tensors are
the state_dict, named without the prefix; otherwise the top-level tensors are. Optimizer
states are never read.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ImportSourceError
from .base import (
    STEP_KEYS,
    WRAPPER_KEYS,
    Snapshot,
    TensorSpec,
    WeightsReader,
    check_name_is_plain,
    first_line,
    number_in_name,
    whole_number,
)
from .files import check_regular_file
from .lightning import is_lightning, lightning_meta

__all__ = ["DcpReader", "dcp_snapshot", "is_dcp_dir", "LIGHTNING_META"]

METADATA_FILE = ".metadata"
#: the file Lightning's FSDP/ModelParallel strategies write beside the DCP files of a sharded ``.ckpt/``
LIGHTNING_META = "meta.pt"

_METADATA_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in ("Metadata", "MetadataIndex", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
                 "TensorProperties", "StorageMeta", "_MEM_FORMAT_ENCODING")
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("collections", "OrderedDict"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PureWindowsPath"),
}


def is_dcp_dir(path: Path) -> bool:
    return path.is_dir() and (path / METADATA_FILE).is_file()


class _MetadataUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, where: Path) -> None:
        super().__init__(file)
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        import torch

        if (module, name) in _METADATA_CLASSES or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise ImportSourceError(
            f"{self._where}: names {module}.{name}, which is not DCP checkpoint metadata; refusing to load it"
        )


def _read_metadata(folder: Path) -> Any:
    import torch.distributed.checkpoint.filesystem  # noqa: F401  (registers the classes the unpickler accepts)
    import torch.distributed.checkpoint.metadata as md

    where = folder / METADATA_FILE
    check_regular_file(where)
    try:
        with open(where, "rb") as f:
            metadata = _MetadataUnpickler(f, where).load()
    except ImportSourceError:
        raise
    except Exception as exc:  # truncated, or not a pickle
        raise ImportSourceError(f"{where}: not readable DCP metadata ({type(exc).__name__}: {first_line(exc, 160)})") from None
    if not isinstance(metadata, md.Metadata) or not isinstance(metadata.state_dict_metadata, Mapping):
        raise ImportSourceError(f"{where}: not DCP metadata")
    return metadata


class DcpReader(WeightsReader):
    """The model tensors of one DCP checkpoint directory."""

    def __init__(self, folder: Path, label: str) -> None:
        self.folder = folder
        self.label = label
        self._metadata = _read_metadata(folder)
        self._fqns: dict[str, str] = {}  # state_dict name -> DCP fqn
        self._specs = self._model_specs()

    # ------------------------------------------------------------------ which entries are the model
    def _paths(self) -> dict[str, tuple[Any, ...]]:
        planner = self._metadata.planner_data if isinstance(self._metadata.planner_data, Mapping) else {}
        out = {}
        for fqn in self._metadata.state_dict_metadata:
            path = planner.get(fqn)
            out[fqn] = tuple(path) if isinstance(path, tuple | list) and path else (fqn,)
        return out

    def _model_specs(self) -> list[TensorSpec]:
        import torch.distributed.checkpoint.metadata as md

        entries = self._metadata.state_dict_metadata
        paths = self._paths()
        tensors = {fqn: meta for fqn, meta in entries.items() if isinstance(meta, md.TensorStorageMetadata)}
        chosen: dict[str, str] = {}
        for key in WRAPPER_KEYS:
            under = {fqn: ".".join(str(p) for p in paths[fqn][1:]) for fqn in tensors
                     if paths[fqn][0] == key and len(paths[fqn]) > 1}
            if under:
                chosen = {name: fqn for fqn, name in under.items()}
                break
        if not chosen:
            chosen = {str(paths[fqn][0]): fqn for fqn in tensors if len(paths[fqn]) == 1}
        if not chosen:
            tops = sorted({str(p[0]) for p in paths.values()})
            raise ImportSourceError(
                f"{self.label}: no state_dict found in the DCP checkpoint (top-level keys: {', '.join(tops[:8])}; expected "
                f"model tensors at the top or under {', '.join(repr(k) for k in WRAPPER_KEYS)})"
            )
        specs = []
        for name, fqn in chosen.items():
            props = tensors[fqn].properties
            if props.dtype.is_floating_point:
                size = tuple(int(s) for s in tensors[fqn].size)
                self._check_chunks(fqn, size, tensors[fqn].chunks)  # before anything is allocated or written
                specs.append(TensorSpec(name, size, props.dtype))
                self._fqns[name] = fqn
        return specs

    def specs(self) -> list[TensorSpec]:
        return list(self._specs)

    # ------------------------------------------------------------------ reading items
    def _item(self, index: Any) -> Any:
        import torch

        info = self._metadata.storage_data.get(index) if isinstance(self._metadata.storage_data, Mapping) else None
        if info is None:
            raise ImportSourceError(f"{self.label}: the DCP metadata lists {index.fqn!r} but not where it is stored")
        if getattr(info, "transform_descriptors", None):
            raise ImportSourceError(
                f"{self.label}: {index.fqn!r} is stored with transforms {list(info.transform_descriptors)} "
                "(a DCP extension such as compression), which traj does not read"
            )
        check_name_is_plain(str(info.relative_path), self.folder / METADATA_FILE)
        path = self.folder / str(info.relative_path)
        size = check_regular_file(path, f"{self.label}/{info.relative_path}")  # a FIFO would block the read
        offset, length = whole_number(info.offset), whole_number(info.length)
        if offset is None or length is None or offset < 0 or length < 0 or offset + length > size:
            raise ImportSourceError(f"{self.label}: {index.fqn!r} is stored at bytes {info.offset}..+{info.length} of "
                                    f"{info.relative_path}, which has {size} bytes")
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(length)
            item = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except OSError as exc:
            raise ImportSourceError(f"{self.label}: cannot read {info.relative_path} ({exc.strerror or exc})") from None
        except Exception as exc:  # torch's message may advise weights_only=False: never quoted here
            raise ImportSourceError(
                f"{self.label}: {index.fqn!r} in {info.relative_path} is not a loadable tensor or value "
                f"({type(exc).__name__})"
            ) from None
        if isinstance(item, torch.Tensor) and (item.layout != torch.strided or item.is_meta
                                               or item.numel() > item.untyped_storage().nbytes() // item.element_size()):
            raise ImportSourceError(f"{self.label}: {index.fqn!r} in {info.relative_path} is not a dense tensor "
                                    "holding its own values")
        return item

    def tensor(self, name: str) -> Any:
        """The whole tensor ``name``, assembled from its chunks (one per rank that held a shard).

        The chunks' boxes are checked before anything is allocated: each inside the tensor, no
        two overlapping, and together exactly as many values as the tensor, hence every value
        covered once (a gap or an overlap would leave uninitialised memory in the store).
        """
        import torch
        import torch.distributed.checkpoint.metadata as md

        fqn = self._fqns[name]
        meta = self._metadata.state_dict_metadata[fqn]
        size = tuple(int(s) for s in meta.size)
        self._check_chunks(fqn, size, meta.chunks)
        try:
            full = torch.empty(size, dtype=meta.properties.dtype)
        except (RuntimeError, MemoryError):
            nbytes = math.prod(size) * meta.properties.dtype.itemsize
            raise ImportSourceError(f"{self.label}: {fqn!r} needs {nbytes / 2**30:.1f} GiB in memory, more than "
                                    "there is") from None
        for chunk in meta.chunks:
            part = self._item(md.MetadataIndex(fqn, chunk.offsets))
            if not isinstance(part, torch.Tensor) or tuple(part.shape) != tuple(chunk.sizes):
                raise ImportSourceError(f"{self.label}: a chunk of {fqn!r} does not have the shape its metadata gives")
            region = tuple(slice(o, o + s) for o, s in zip(chunk.offsets, chunk.sizes, strict=True))
            full[region] = part
        return full

    def _check_stored(self, fqn: str, chunk: Any) -> None:
        """A chunk's file holds at least its values' bytes: the tensor's declared size is bounded by the
        files before anything is allocated (a 4 KB folder must not ask for terabytes)."""
        import torch.distributed.checkpoint.metadata as md

        index = md.MetadataIndex(fqn, chunk.offsets)
        info = self._metadata.storage_data.get(index) if isinstance(self._metadata.storage_data, Mapping) else None
        if info is None:
            raise ImportSourceError(f"{self.label}: the DCP metadata lists {fqn!r} but not where it is stored")
        check_name_is_plain(str(info.relative_path), self.folder / METADATA_FILE)
        path = self.folder / str(info.relative_path)
        size = check_regular_file(path, f"{self.label}/{info.relative_path}")
        offset, length = whole_number(info.offset), whole_number(info.length)
        nbytes = math.prod(chunk.sizes) * self._metadata.state_dict_metadata[fqn].properties.dtype.itemsize
        if offset is None or length is None or offset < 0 or length < nbytes or offset + length > size:
            raise ImportSourceError(
                f"{self.label}: a chunk of {fqn!r} of {nbytes} bytes is stored at bytes {info.offset}..+{info.length} "
                f"of {info.relative_path}, which has {size} bytes")

    def _check_chunks(self, fqn: str, size: tuple[int, ...], chunks: Any) -> None:
        """Every value of a tensor of shape ``size`` in exactly one chunk, every chunk inside it."""
        boxes = []
        for chunk in chunks:
            offsets, sizes = tuple(chunk.offsets), tuple(chunk.sizes)
            if len(offsets) != len(size) or len(sizes) != len(size) or not all(
                    isinstance(v, int) and 0 <= v for v in offsets + sizes) or any(
                    o + s > n for o, s, n in zip(offsets, sizes, size, strict=True)):
                raise ImportSourceError(f"{self.label}: a chunk of {fqn!r} at offsets {list(offsets)} with sizes "
                                        f"{list(sizes)} lies outside its shape {list(size)}")
            boxes.append((offsets, sizes))
            self._check_stored(fqn, chunk)
        total, covered = math.prod(size), sum(math.prod(s) for _, s in boxes)
        if covered != total:
            raise ImportSourceError(f"{self.label}: the chunks of {fqn!r} hold {covered} values, its shape "
                                    f"{list(size)} has {total}: they leave a gap or overlap")
        if len(boxes) > 1 and size:
            lo = np.array([o for o, _ in boxes], dtype=np.int64)
            hi = lo + np.array([s for _, s in boxes], dtype=np.int64)
            nonempty = (hi > lo).all(axis=1)
            for i in np.flatnonzero(nonempty)[:-1]:
                later = np.arange(i + 1, len(boxes))
                later = later[nonempty[later]]
                hit = ((lo[later] < hi[i]) & (lo[i] < hi[later])).all(axis=1)
                if hit.any():
                    j = int(later[np.argmax(hit)])
                    raise ImportSourceError(f"{self.label}: two chunks of {fqn!r} overlap (at offsets "
                                            f"{list(boxes[i][0])} and {list(boxes[j][0])}), leaving others uncovered")

    def scalar_entry(self, key: str) -> Any:
        """A top-level non-model value (``step``, ``epoch``): a 0-d tensor or a plain number, else None."""
        import torch.distributed.checkpoint.metadata as md

        for fqn, path in self._paths().items():
            if path != (key,):
                continue
            meta = self._metadata.state_dict_metadata[fqn]
            if isinstance(meta, md.BytesStorageMetadata):
                return self._item(md.MetadataIndex(fqn))
            if isinstance(meta, md.TensorStorageMetadata) and len(meta.size) == 0 and len(meta.chunks) == 1:
                return self._item(md.MetadataIndex(fqn, meta.chunks[0].offsets))
        return None

    def pieces(self, names: Sequence[str], budget: int) -> Iterator[tuple[str, Any]]:
        for name in names:
            flat = self.tensor(name).reshape(-1)
            step = max(1, budget // max(1, flat.element_size()))
            for a in range(0, max(flat.numel(), 1), step):
                yield name, flat[a : a + step]
            del flat


def _as_int(value: Any) -> int | None:
    return whole_number(value)  # exact: scan_source refuses one outside a step's range


def dcp_snapshot(folder: Path, *, label: str | None = None) -> Snapshot:
    """One DCP directory; step and metrics from Lightning's ``meta.pt`` when present, else from the
    checkpoint's own ``step``/``global_step``/``epoch`` entries, else from the folder's name."""
    from .torch_files import load_torch

    label = label or folder.name
    reader = DcpReader(folder, label)
    step = epoch = None
    metrics: dict[str, float] = {}
    if (folder / LIGHTNING_META).is_file():
        meta = load_torch(folder / LIGHTNING_META)
        if isinstance(meta, Mapping):
            step, epoch = _as_int(meta.get("global_step")), _as_int(meta.get("epoch"))
            if is_lightning(meta):
                metrics = lightning_meta(meta)
    if step is None:
        step = next((s for s in (_as_int(reader.scalar_entry(k)) for k in STEP_KEYS) if s is not None), None)
    if epoch is None:
        epoch = _as_int(reader.scalar_entry("epoch"))
    step_from = "file"
    if step is None:
        step, step_from = number_in_name(folder.name), "name"
    return Snapshot(reader, label, step, -1 if epoch is None else epoch, metrics=metrics, step_from=step_from)
