"""What every checkpoint format gives the importer: tensor specs, tensors piece by piece, and a step.

A :class:`WeightsReader` knows the floating-point tensors of one checkpoint (names, shapes,
dtypes, in the file's order) and reads them back as 1-D pieces whose concatenation, in the
order asked, is the flattened tensors: a reader never holds much more than ``budget`` bytes
of one checkpoint at a time (about one tensor, or a slice of a larger one where the format
allows it). A :class:`Snapshot` is one checkpoint with its step, epoch, loss and metrics.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ImportSourceError

__all__ = ["TensorSpec", "WeightsReader", "Snapshot", "number_in_name", "natural_key", "metric_name", "scalar",
           "WRAPPER_KEYS", "STEP_KEYS", "MAX_STEP", "epoch_of_fraction", "first_line", "check_name_is_plain", "whole_number",
           "check_counter"]

#: Keys under which a checkpoint commonly holds the model's state_dict.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "params", "weights")
#: Keys that hold the global optimizer step, in order of preference.
STEP_KEYS = ("global_step", "step", "iteration", "iter")
#: the largest step or epoch a store holds (they are int64)
MAX_STEP = 2**63 - 1


@dataclass(frozen=True)
class TensorSpec:
    """One floating-point tensor of a checkpoint: its name as in the file, shape and torch dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: Any  # torch.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


class WeightsReader(ABC):
    """The tensors of one checkpoint (a file, a set of shard files, or a DCP directory)."""

    #: short name for messages, e.g. ``checkpoint-8/model.safetensors``
    label: str

    @abstractmethod
    def specs(self) -> list[TensorSpec]:
        """Every floating-point tensor, in the file's order, each name once (aliases dropped)."""

    @abstractmethod
    def pieces(self, names: Sequence[str], budget: int) -> Iterator[tuple[str, Any]]:
        """Yield ``(name, piece)`` in the order of ``names``: 1-D torch tensors that concatenate to
        each tensor flattened (row-major). A piece is valid only until the next one is asked for."""


@dataclass(frozen=True)
class Snapshot:
    """One checkpoint to import and what it says about itself."""

    reader: WeightsReader
    label: str
    step: int | None
    epoch: int = -1
    loss: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    #: where the step came from, for messages ("trainer_state.json", "file", "name", ...)
    step_from: str = "file"


def number_in_name(name: str) -> int | None:
    """The last integer in a file or folder name (``epoch=1-step=16.ckpt`` -> 16), or None.

    A number too long for a step is refused here, naming the file (``int()`` of thousands of
    digits raises, and one of 40 digits would overflow the store's int64 steps).
    """
    stem = name
    for suffix in (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".tar", ".distcp"):
        stem = stem.removesuffix(suffix)
    numbers = re.findall(r"\d+", stem)
    if not numbers:
        return None
    digits = numbers[-1].lstrip("0") or "0"
    if len(digits) > len(str(MAX_STEP)) or int(digits) > MAX_STEP:
        shown = digits if len(digits) <= 40 else f"{digits[:20]}...({len(digits)} digits)"
        raise ImportSourceError(f"{name}: the step in its name, {shown}, is beyond {MAX_STEP} (steps are 64-bit integers)")
    return int(digits)


def whole_number(value: Any) -> int | None:
    """An integer from a recorded value (int, integral float, 0-d tensor), else None; bools are not numbers.

    Python ints of any size pass through exactly (:func:`check_counter` refuses those out of
    range); a float counts only below 2**53, where it is still exact: two steps of 1e30 that
    round to one float must not become one step.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "dtype", None) is not None:
        try:
            if int(getattr(value, "numel", lambda: getattr(value, "size", 0))()) != 1:
                return None
            value = item()
        except (TypeError, ValueError, RuntimeError):
            return None
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return None


def check_counter(value: int, what: str, label: str, *, low: int = 0) -> int:
    """``value`` when ``low <= value <= MAX_STEP``; else one line naming the file (steps and epochs are int64)."""
    if not low <= value <= MAX_STEP:
        shown = str(value) if abs(value) < 10**40 else f"a number of {len(str(abs(value)))} digits"
        bound = f"{low}..{MAX_STEP}" if value > 0 else f">= {low}"
        raise ImportSourceError(f"{label}: {what} {shown} is out of range ({bound})")
    return value


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders ``h.2`` before ``h.10`` (layer indices as numbers)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part)


def metric_name(name: str) -> str:
    """A logged name as a store metric name (``val/loss`` -> ``val_loss``: '/' would nest groups)."""
    cleaned = str(name).replace("/", "_").lstrip(".")
    while cleaned.startswith("__"):
        cleaned = cleaned[1:]
    return cleaned or "metric"


def scalar(value: Any) -> float | None:
    """A real number from a logged value (int, float, 0-d tensor or array), else None; bools are not numbers."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return value
    if isinstance(value, int):  # an int beyond float range is an infinite value, not an OverflowError
        return float(value) if abs(value) < 2**1023 else (math.inf if value > 0 else -math.inf)
    numel = getattr(value, "numel", None) or getattr(value, "size", None)
    try:
        if callable(numel):
            numel = numel()
        if numel == 1 and hasattr(value, "item"):
            item = value.item()
            return None if isinstance(item, bool) else scalar(item)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return None
    return None


def epoch_of_fraction(epoch: float) -> int:
    """The 0-based epoch a step was taken in, from a fractional epoch count (Hugging Face's ``state.epoch``).

    ``state.epoch`` counts completed epochs: 0.5 halfway through the first, 1.0 at its last
    step. traj numbers epochs from 0 as the Recorder does, so 0.5 and 1.0 are both epoch 0
    and 1.5 is epoch 1.
    """
    if not math.isfinite(epoch) or epoch <= 0:
        return 0
    return max(0, math.ceil(round(epoch, 6)) - 1)


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line for an error message (its first line, or its type)."""
    text = str(exc).strip()
    line = text.splitlines()[0][:limit] if text else type(exc).__name__
    return "".join(ch for ch in line if ch.isprintable())  # never a terminal escape from a file's bytes


def check_name_is_plain(relative: str, where: Path) -> None:
    """Refuse a file name from untrusted metadata that would leave its folder."""
    if not relative or Path(relative).name != relative or relative in (".", ".."):
        raise ImportSourceError(f"{where}: refers to the file {relative!r} outside its folder; refusing to read it")
