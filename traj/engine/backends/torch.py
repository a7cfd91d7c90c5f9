"""The torch backend: block products on a torch device (``cuda`` runs them on a GPU).

The blocks are read on the CPU and moved to the device in float64; the small results come
back to numpy (small eigenproblems are faster on the CPU than on a device, kernel launches and all).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import ParameterError
from .base import StreamingBackend

__all__ = ["TorchBackend", "TorchOps", "torch_device"]


def torch_device(device: str) -> Any:
    """The torch device named ``device``, refused when it is unknown or not there."""
    import torch

    works = "the torch backend runs on cpu, cuda or cuda:N"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ParameterError("device", f"{device!r}: unknown torch device; {works}") from None
    if dev.type == "meta":
        raise ParameterError("device", f"{device!r} holds no data (shapes only); {works}")
    if dev.type not in ("cpu", "cuda"):
        # the reductions accumulate in float64, which mps (and other accelerators) lack or emulate
        raise ParameterError("device", f"{device!r} is not supported: {works} (the reductions need float64)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device", f"{device} asked for, but torch sees no CUDA device (a CPU build of torch, "
                                       "or no GPU); use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ParameterError("device", f"{device} asked for, but torch sees {torch.cuda.device_count()} CUDA "
                                       f"device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return dev


class TorchOps:
    """:class:`~traj.engine.backends.base.ArrayOps` on torch tensors of one device."""

    def __init__(self, device: Any) -> None:
        self.device = device

    def asarray(self, array: np.ndarray) -> Any:
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(array))
        return tensor.to(device=self.device, dtype=torch.complex128 if tensor.is_complex() else torch.float64)

    def to_numpy(self, array: Any) -> np.ndarray:
        return array.detach().cpu().numpy()

    def take(self, array: Any, index: np.ndarray, axis: int) -> Any:
        import torch

        return array.index_select(axis, torch.as_tensor(index, device=array.device))

    def sum(self, array: Any, axis: int | None = None) -> Any:
        return array.sum() if axis is None else array.sum(dim=axis)

    def mean(self, array: Any, axis: int) -> Any:
        return array.mean(dim=axis)

    def sum_squares(self, array: Any, axis: int) -> Any:
        return (array * array).sum(dim=axis)

    def isfinite(self, array: Any) -> Any:
        import torch

        return torch.isfinite(array)

    def all(self, array: Any, axis: int) -> Any:
        return array.all(dim=axis)

    def where(self, condition: Any, array: Any, other: float) -> Any:
        import torch

        return torch.where(condition, array, torch.as_tensor(other, dtype=array.dtype, device=array.device))


class TorchBackend(StreamingBackend):
    def __init__(self, block_bytes: int, device: str) -> None:
        super().__init__(block_bytes)
        self.device = torch_device(device)  # fail early on a device that is not there
        self.ops = TorchOps(self.device)
        self.label = f"torch:{device}"

    def work(self, array: np.ndarray) -> Any:
        return self.ops.asarray(array)

    def to_numpy(self, array: Any) -> np.ndarray:
        return self.ops.to_numpy(array)

    def zeros(self, shape: tuple[int, int]) -> Any:
        import torch

        return torch.zeros(shape, dtype=torch.float64, device=self.device)

    def like(self, block: Any, other: Any) -> Any:
        return block.to(other.dtype) if other.is_complex() else block
