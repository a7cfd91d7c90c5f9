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
import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

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
    scalar,
)
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
                specs.append(TensorSpec(name, tuple(int(s) for s in tensors[fqn].size), props.dtype))
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
        try:
            with open(self.folder / str(info.relative_path), "rb") as f:
                f.seek(int(info.offset))
                data = f.read(int(info.length))
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except OSError as exc:
            raise ImportSourceError(f"{self.label}: cannot read {info.relative_path} ({exc.strerror or exc})") from None
        except Exception as exc:
            raise ImportSourceError(
                f"{self.label}: {index.fqn!r} in {info.relative_path} is not a loadable tensor ({first_line(exc, 160)})"
            ) from None

    def tensor(self, name: str) -> Any:
        """The whole tensor ``name``, assembled from its chunks (one per rank that held a shard)."""
        import torch
        import torch.distributed.checkpoint.metadata as md

        fqn = self._fqns[name]
        meta = self._metadata.state_dict_metadata[fqn]
        full = torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
        covered = 0
        for chunk in meta.chunks:
            part = self._item(md.MetadataIndex(fqn, chunk.offsets))
            if not isinstance(part, torch.Tensor) or tuple(part.shape) != tuple(chunk.sizes):
                raise ImportSourceError(f"{self.label}: a chunk of {fqn!r} does not have the shape its metadata gives")
            region = tuple(slice(o, o + s) for o, s in zip(chunk.offsets, chunk.sizes, strict=True))
            full[region] = part
            covered += part.numel()
        if covered != full.numel():
            raise ImportSourceError(f"{self.label}: the chunks of {fqn!r} cover {covered} of its {full.numel()} values")
        return full

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
    number = scalar(value)
    return int(number) if number is not None and float(number).is_integer() else None


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
