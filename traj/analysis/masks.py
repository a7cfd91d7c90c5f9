"""``masks.zarr``, the pruning masks ``traj prune`` writes, and how they go back into PyTorch.

The file (format ``traj-masks`` version 1, a Zarr v3 group; its schema is
:data:`traj.store.derived.MASKS`, and every read goes through the store guard) holds, over the N
coordinates of θ in the store's layout:

``<method>/c<c>``   (N,) bool     True = kept, one array per method and compression c
``prunable``        (N,) bool     True where a weight may be pruned (the store's layout, decided by
                                  :mod:`traj.prunable`); everything else (biases, norms, embedding
                                  tables) is False and is always kept, so it is True in every mask
``scores/<method>`` (N,) float64  the score each mask ranks

and in its attributes the store's ``layout`` (names, shapes, offsets), the epoch or window,
the scope and the compressions. The overlap of two masks at compression c counts kept
*prunable* weights only: o = Σ(mᴬ ∧ mᴮ ∧ prunable) / ⌈Σ prunable / c⌉ (docs/methods.md §3.3); counted
over all N it would include every bias and exceed 1.

:func:`apply_masks` puts a mask on a model through ``torch.nn.utils.prune.custom_from_mask``
(names from the layout); :func:`write_exports` writes each pruned θ as a safetensors
state_dict.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import (
    LayoutMismatchError,
    NotApplicableError,
    ParameterError,
)
from ..prunable import prunable_mask
from ..store import Layout
from ..store.derived import EVERY_CHUNK, MASKS, DerivedFile, write_attrs

if TYPE_CHECKING:  # pragma: no cover
    from ..store import RunStore
    from .scratch import ScratchArrays

__all__ = ["MASKS_FORMAT", "MaskSource", "apply_masks", "load_mask", "mask_overlap_from_file", "pruned_theta",
           "read_masks", "write_exports", "write_masks"]

MASKS_FORMAT = MappingProxyType(MASKS.marker)


class MaskSource(Protocol):
    """What :func:`write_masks` and :func:`write_exports` read of a pruning result
    (:class:`~traj.analysis.prune.PruneResult` is one): the masks and scores in scratch arrays, and their names."""

    @property
    def store(self) -> str: ...
    @property
    def epoch(self) -> int | None: ...
    @property
    def window(self) -> tuple[int, int]: ...
    @property
    def steps(self) -> tuple[int, int]: ...
    @property
    def scope(self) -> str: ...
    @property
    def methods(self) -> tuple[str, ...]: ...
    @property
    def compressions(self) -> np.ndarray: ...
    @property
    def score_names(self) -> tuple[str, ...]: ...
    @property
    def kept(self) -> Mapping[str, np.ndarray]: ...
    @property
    def arrays(self) -> ScratchArrays: ...

    def mask_name(self, method: str, index: int, seed: int = 0) -> str: ...


def _key(compression: float) -> str:
    return f"{float(compression):g}"


def _number_first(key: str) -> tuple[float, str]:
    try:
        return float(key), key
    except ValueError:
        return math.inf, key


def pruned_theta(theta: np.ndarray, mask: np.ndarray, dtype: Any) -> np.ndarray:
    """θ with the weights a mask drops set to zero, in the store's dtype (what prune evaluates)."""
    return (np.asarray(theta, dtype=np.float64) * mask).astype(dtype)


#: Coordinates per chunk of a masks.zarr array (2 MiB of bool, 16 MiB of float64: within the guard's chunk bound).
CHUNK = 1 << 21


def write_masks(result: MaskSource, path: str | os.PathLike[str], layout: Layout) -> str:
    """Write a :class:`~traj.analysis.prune.PruneResult`'s masks and scores as ``masks.zarr``, chunk by chunk
    from the result's scratch arrays (memory: a chunk, whatever N)."""
    import zarr

    arrays = result.arrays
    n = arrays.n
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    write_attrs(group, MASKS, {"store": result.store, "epoch": result.epoch, "window": list(result.window),
                               "steps": list(result.steps), "scope": result.scope,
                               "compressions": [float(c) for c in result.compressions], "layout": layout.to_attrs()})
    chunks = (max(1, min(n, CHUNK)),)
    prunable = [e.columns for e in layout.prunable_entries if e.size]

    def write(parent: Any, name: str, dtype: Any, piece: Callable[[int, int], np.ndarray]) -> None:
        target = parent.create_array(name, shape=(n,), dtype=dtype, chunks=chunks, dimension_names=("param",),
                                     config=dict(EVERY_CHUNK))
        for lo in range(0, n, chunks[0]):
            hi = min(n, lo + chunks[0])
            target[lo:hi] = piece(lo, hi)

    def prunable_piece(lo: int, hi: int) -> np.ndarray:
        piece = np.zeros(hi - lo, dtype=bool)
        for s in prunable:
            if s.start < hi and s.stop > lo:
                piece[max(s.start, lo) - lo : min(s.stop, hi) - lo] = True
        return piece

    write(group, "prunable", bool, prunable_piece)
    for method in result.methods:
        sub = group.require_group(method)
        for i, c in enumerate(result.compressions):
            name = result.mask_name(method, i)
            write(sub, f"c{_key(c)}", bool, lambda lo, hi, name=name: arrays.read(name, lo, hi))
    scores = group.require_group("scores")
    for method in result.score_names:
        write(scores, method, np.float64, lambda lo, hi, method=method: arrays.read(f"score-{method}", lo, hi))
    return str(path)


class _Masks:
    """An open ``masks.zarr``: its attributes and its arrays, every byte read through the store guard
    (:class:`~traj.store.derived.DerivedFile` with the :data:`~traj.store.derived.MASKS` schema: the marker,
    the attributes' types, each array's metadata and its declared shape against the layout's N, checked
    before anything is allocated; chunk files only regular files inside the folder, each bounded by its codec).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self.file = DerivedFile(path, MASKS)
        self.attrs: dict[str, Any] = self.file.attrs

    def members(self) -> dict[str, list[str]]:
        """``{method: [array names]}`` of the masks it holds (directory listing only; nothing is read)."""
        out: dict[str, list[str]] = {}
        for name in self.file.names():
            method, _, array = name.partition("/")
            if method not in ("scores", "prunable") and len(array) > 1 and array.startswith("c"):
                out.setdefault(method, []).append(array)
        return out

    def read(self, name: str, n: int, dtype: str = "bool") -> np.ndarray:
        """Array ``name`` of shape (n,), checked against its metadata and the layout before it is read."""
        values = self.file.read(name)  # the schema bound its shape to the layout's N and its dtype to bool
        if values.shape != (n,):  # pragma: no cover - a layout other than the file's
            raise LayoutMismatchError(f"{self.path}: '{name}' holds {values.shape[0]} values, not {n}")
        return values

    def layout(self) -> Layout:
        return Layout.from_attrs(self.attrs.get("layout"))


def _open(path: str | os.PathLike[str]) -> _Masks:
    return _Masks(path)


def read_masks(path: str | os.PathLike[str]) -> dict[str, dict[str, np.ndarray]]:
    """Every mask of a ``masks.zarr``, as ``{method: {"c": mask}}``."""
    masks = _open(path)
    n = masks.layout().n_params
    return {method: {name.removeprefix("c"): masks.read(f"{method}/{name}", n) for name in names}
            for method, names in masks.members().items()}


def load_mask(path: str | os.PathLike[str], method: str, compression: float, *,
              layout_check: Callable[[Layout], None] | None = None) -> tuple[np.ndarray, Layout, np.ndarray]:
    """One mask of a ``masks.zarr`` with the layout it is over and the prunable columns.

    ``layout_check`` is called with the layout before any mask is read (``apply_masks``
    compares it with the model first). Returns ``(mask, layout, prunable)``: (N,) bool, the
    store's :class:`Layout`, (N,) bool.
    """
    masks = _open(path)
    layout = masks.layout()
    if layout_check is not None:
        layout_check(layout)
    method = method.strip().lower()
    name = f"{method}/c{_key(compression)}"
    have = masks.members()
    if method == "scores" or f"c{_key(compression)}" not in have.get(method, ()):
        listed = {m: sorted((k.removeprefix("c") for k in keys), key=_number_first) for m, keys in have.items()}
        available = "; ".join(f"{m} at c = {', '.join(keys)}" for m, keys in sorted(listed.items()))
        raise ParameterError("method", f"{method}: {path} has no {method} mask at compression {_key(compression)} "
                                       f"(it has {available})")
    mask = masks.read(name, layout.n_params)
    has_prunable = os.path.lexists(os.path.join(str(path), "prunable"))
    prunable = masks.read("prunable", layout.n_params) if has_prunable else prunable_mask(layout)
    return mask, layout, prunable


def mask_overlap_from_file(path: str | os.PathLike[str], method_a: str, method_b: str, compression: float) -> float:
    """o = Σ(mᴬ ∧ mᴮ ∧ prunable) / ⌈Σ prunable / c⌉, the overlap ``traj prune`` reports, from the file."""
    a, _, prunable = load_mask(path, method_a, compression)
    b, _, _ = load_mask(path, method_b, compression)
    return float(np.count_nonzero(a & b & prunable) / math.ceil(prunable.sum() / float(compression)))


def _check_model(model: Any, layout: Layout, path: str | os.PathLike[str]) -> None:
    """Refuse a model whose parameters are not the layout's (names and shapes; order is free)."""
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for entry in layout.entries:
        tensor = params.get(entry.name)
        if tensor is None and not entry.prunable:
            tensor = buffers.get(entry.name)  # an imported state_dict may record a floating-point buffer
        if tensor is None:
            if f"{entry.name}_orig" in params:
                raise LayoutMismatchError(f"the model's {entry.name!r} is already pruned; "
                                          "call torch.nn.utils.prune.remove on it first")
            raise LayoutMismatchError(f"the model has no parameter {entry.name!r}, which {path} masks; "
                                      "the masks were computed for another model")
        if tuple(tensor.shape) != entry.shape:
            raise LayoutMismatchError(f"the model's {entry.name!r} has shape {list(tensor.shape)}, "
                                      f"{path} has {list(entry.shape)}")
    extra = [n for n in params if n not in layout]
    if extra:
        raise LayoutMismatchError(f"the model's parameter {extra[0]!r} is not in the layout of {path}; "
                                  "the masks were computed for another model")


def apply_masks(model: Any, path: str | os.PathLike[str], *, method: str = "kmp", compression: float = 8,
                permanent: bool = False) -> Any:
    """Prune ``model`` in place with one mask of a ``masks.zarr``.

    Every prunable tensor of the layout (and any other the mask drops weights of) gets
    ``torch.nn.utils.prune.custom_from_mask``: the module keeps ``<name>_orig`` and a
    ``<name>_mask`` buffer, and ``<name>`` is their product, so the dropped weights stay zero
    through further training. ``permanent=True`` then calls ``prune.remove``, leaving plain
    parameters with zeros. The model's parameters must be the layout's, by name and shape
    (any order); otherwise :class:`~traj.errors.LayoutMismatchError`.

    Returns the model.
    """
    import torch
    from torch.nn.utils import prune as torch_prune

    if not isinstance(method, str):
        raise ParameterError("method", f"must be a method name such as 'kmp', got {method!r}")
    try:
        compression = float(compression)
    except (TypeError, ValueError):
        raise ParameterError("compression", f"must be a number, got {compression!r}") from None
    mask, layout, prunable = load_mask(path, method, compression,
                                       layout_check=lambda layout: _check_model(model, layout, path))
    params = dict(model.named_parameters())
    for entry in layout.entries:
        keep = mask[entry.columns]
        if not prunable[entry.columns].any() and keep.all():
            continue
        if entry.name not in params:  # a floating-point buffer an imported state_dict recorded
            raise LayoutMismatchError(f"{path} drops values of {entry.name!r}, which is a buffer of the model, not a "
                                      "parameter: only parameters can be pruned")
        owner, _, attr = entry.name.rpartition(".")
        try:
            module = model.get_submodule(owner)
            current = getattr(module, attr)
            tensor_mask = torch.from_numpy(np.ascontiguousarray(keep.reshape(entry.shape))).to(device=current.device,
                                                                                                dtype=current.dtype)
            torch_prune.custom_from_mask(module, attr, tensor_mask)
            if permanent:
                torch_prune.remove(module, attr)
        except (ValueError, TypeError, AttributeError, AssertionError, RuntimeError) as exc:
            text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise LayoutMismatchError(f"cannot put the mask of {path} on the model's {entry.name!r} "
                                      f"({type(exc).__name__}: {text})") from None
    return model


#: safetensors' names of the store dtypes.
_SAFETENSORS_DTYPES = MappingProxyType({"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16"})


def write_exports(result: MaskSource, store: RunStore, directory: str | os.PathLike[str]) -> list[Path]:
    """One safetensors state_dict per method and compression: ``<method>-c<c>.safetensors``.

    Each holds θ of the snapshot the masks were scored at (``result.theta``, ``result.window[1]``) with the
    dropped weights set to zero, under the layout's names in the store's dtype: exactly the
    weights whose accuracy ``traj prune`` reports (LSP: its first mask seed). Load it with
    ``safetensors.torch.load_model(model, path)``: a tied tensor is stored once, under the name
    ``named_parameters`` gives it (GPT-2: ``transformer.wte.weight``), and ``load_model`` fills the names
    tied to it (``lm_head.weight``), which a plain ``model.load_state_dict(load_file(path))`` reports
    missing. The file is written piece by piece
    (the safetensors layout: a JSON header, then each tensor's bytes in name order), never whole in memory.
    """
    import json

    dtype = np.dtype(store.dtype)
    code = _SAFETENSORS_DTYPES.get(dtype.name)
    if code is None:  # pragma: no cover - every store dtype has a code
        raise NotApplicableError(f"exports cannot hold {dtype.name} weights")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    step = int(store.steps[int(result.window[1])])
    arrays = result.arrays
    entries = sorted(store.layout.entries, key=lambda e: e.name)  # safetensors' order: by name
    written = []
    for method in result.methods:
        for i, c in enumerate(result.compressions):
            key = _key(c)
            name = result.mask_name(method, i)
            metadata = {"format": "pt", "traj_method": method, "traj_compression": key, "traj_step": str(step),
                        "traj_kept": str(int(result.kept[method][i]))}
            header: dict[str, Any] = {"__metadata__": metadata}
            offset = 0
            for e in entries:
                header[e.name] = {"dtype": code, "shape": list(e.shape), "data_offsets": [offset,
                                                                                           offset + e.size * dtype.itemsize]}
                offset += e.size * dtype.itemsize
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)
            path = directory / f"{method}-c{key}.safetensors"
            with open(path, "wb") as f:
                f.write(len(raw).to_bytes(8, "little"))
                f.write(raw)
                for e in entries:
                    for lo, hi in arrays.pieces(e.offset, e.stop):
                        pruned = pruned_theta(arrays.read("theta", lo, hi), arrays.read(name, lo, hi), dtype)
                        f.write(np.ascontiguousarray(pruned).tobytes())  # little-endian, as safetensors writes
            written.append(path)
    return written
