"""Which of a store's snapshots an analysis sees: ``--steps a:b[:s]`` (by training step) and ``--stride k``.

A selection is resolved once, when a store is opened (:func:`~traj.store.open_store` with ``steps=`` /
``stride=``, or :meth:`RunStore.select`), into a :class:`~traj.store.RunStore` that holds only the
selected snapshots: its ``n_snapshots``, ``steps``, series and every read are those of the selection,
so every analysis, its window rule (``--window a:b`` counts selected snapshots), its spacing checks and
the engine's reads see the selection and nothing else. Two stores recorded at different spacings are
made comparable by selecting a common grid: ``--steps ::100`` on a store recorded every 10 steps keeps
steps 0, 100, 200, … (or ``--stride 10`` on it, counted from its first snapshot).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checks import check_int
from ..errors import ParameterError

__all__ = ["SnapshotSelection", "StepRange"]


@dataclass(frozen=True)
class StepRange:
    """Training steps ``first..last`` (both included; None: open), every ``every`` steps counted from
    ``first`` (from step 0 when ``first`` is open): the snapshots ``--steps first:last:every`` keeps."""

    first: int | None = None
    last: int | None = None
    every: int | None = None

    @classmethod
    def parse(cls, text: str | tuple[int | None, ...] | StepRange) -> StepRange:
        """``"a:b"`` or ``"a:b:s"`` (either end may be omitted: ``"1000:"``, ``"::100"``), or a tuple."""
        if isinstance(text, StepRange):
            return text
        if isinstance(text, str):
            parts = text.split(":")
            if len(parts) not in (2, 3):
                raise ParameterError("steps", f"must look like a:b or a:b:s (training steps, both ends included; "
                                              f"s: every s steps), got {text!r}")
            try:
                values = [int(p) if p.strip() else None for p in parts]
            except ValueError:
                raise ParameterError("steps", f"must look like a:b or a:b:s with integers (training steps), "
                                              f"got {text!r}") from None
        else:
            try:
                values = list(text)
            except TypeError:
                raise ParameterError("steps", f"must be 'a:b', 'a:b:s' or a tuple of steps, got {text!r}") from None
            if len(values) not in (2, 3):
                raise ParameterError("steps", f"must be 'a:b', 'a:b:s' or a tuple of 2 or 3 steps, got {text!r}")
            values = [None if v is None else check_int("steps", v) for v in values]
        first, last, every = (values + [None])[:3]
        if first is not None and first < 0 or last is not None and last < 0:
            raise ParameterError("steps", f"{_shown(values)}: training steps are at least 0")
        if first is not None and last is not None and last < first:
            raise ParameterError("steps", f"{_shown(values)}: the last step {last} comes before the first {first}")
        if every is not None and every < 1:
            raise ParameterError("steps", f"{_shown(values)}: every s steps needs s >= 1, got {every}")
        return cls(first, last, every)

    def __str__(self) -> str:
        return _shown([self.first, self.last] + ([self.every] if self.every is not None else []))

    def keeps(self, steps: np.ndarray) -> np.ndarray:
        """Which of ``steps`` lie in the range and on its grid (a boolean mask)."""
        steps = np.asarray(steps, dtype=np.int64)
        keep = np.ones(steps.shape, dtype=bool)
        if self.first is not None:
            keep &= steps >= self.first
        if self.last is not None:
            keep &= steps <= self.last
        if self.every is not None:
            keep &= (steps - (self.first or 0)) % self.every == 0
        return keep


def _shown(values: list[int | None]) -> str:
    return ":".join("" if v is None else str(v) for v in values)


@dataclass(frozen=True)
class SnapshotSelection:
    """The snapshots of a store an analysis uses: those at ``steps`` (a :class:`StepRange`; None: all),
    then every ``stride``-th of them counted from the first.

    Build it with :meth:`checked`; :meth:`indices` resolves it against a store's steps.
    """

    steps: StepRange | None = None
    stride: int = 1

    @classmethod
    def checked(cls, *, steps: str | tuple[int | None, ...] | StepRange | None = None,
                stride: int = 1) -> SnapshotSelection:
        return cls(None if steps is None else StepRange.parse(steps), check_int("stride", stride, low=1))

    @property
    def is_all(self) -> bool:
        """True when the selection keeps every snapshot whatever the store (no steps, stride 1)."""
        return self.steps is None and self.stride == 1

    def indices(self, steps: np.ndarray, *, name: str = "the store") -> np.ndarray:
        """The store indices of the selected snapshots, increasing; :class:`ParameterError` when none is."""
        steps = np.asarray(steps, dtype=np.int64)
        kept = np.arange(steps.size) if self.steps is None else np.flatnonzero(self.steps.keeps(steps))
        if self.steps is not None and not kept.size:
            held = f"steps {int(steps[0])}..{int(steps[-1])}" if steps.size else "no snapshots"
            raise ParameterError("steps", f"{self.steps} selects no snapshot of {name}, which holds {held}")
        return kept[:: self.stride]

    def describe(self) -> str:
        """``steps 100:500, stride 2`` (empty for a selection of everything)."""
        parts = ([f"steps {self.steps}"] if self.steps is not None else []) + (
            [f"stride {self.stride}"] if self.stride != 1 else [])
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": None if self.steps is None else str(self.steps), "stride": self.stride}
