"""What ``traj watch`` shows of a store that is still being written: read only, committed rows only.

:func:`watch_state` opens the store afresh (a reader sees only committed snapshots and never takes
the writer's lock) and returns a :class:`WatchState`: the steps, the loss, the live monitor's
series (``live.*`` metrics, NaN between fits) and whether the run has closed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..store import RunStore

__all__ = ["LIVE_SERIES", "WatchState", "sparkline", "watch_state"]

#: The live monitor's series, in the order they are shown.
LIVE_SERIES = ("leading_modulus", "unstable", "timescale", "forecast_error", "transition", "rank")

_BARS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class WatchState:
    """A store as it stands now.

    Attributes
    ----------
    path : str
    n_snapshots : int
    steps : ndarray of int
    loss : ndarray of float (NaN where none was logged)
    live : dict of str to ndarray
        The live series present, by name without the ``live.`` prefix (NaN where no fit).
    closed : bool
        The writer closed the store cleanly.
    writing : bool
        A writer holds the store now; once it does not, the run has ended (closed or crashed).
    """

    path: str
    n_snapshots: int
    steps: np.ndarray
    loss: np.ndarray
    live: dict[str, np.ndarray] = field(default_factory=dict)
    closed: bool = False
    writing: bool = False

    @property
    def fitted(self) -> np.ndarray:
        """Indices of the snapshots a live fit was written with."""
        series = self.live.get("leading_modulus")
        return np.flatnonzero(np.isfinite(series)) if series is not None else np.zeros(0, dtype=int)

    def latest(self) -> dict[str, float]:
        """The last live fit's numbers (empty before the first fit)."""
        fitted = self.fitted
        if not fitted.size:
            return {}
        k = int(fitted[-1])
        return {"step": float(self.steps[k]), **{name: float(v[k]) for name, v in self.live.items()}}


def watch_state(path: str | os.PathLike[str]) -> WatchState:
    """The store at ``path`` as it stands now (opened afresh: new commits are seen)."""
    store = RunStore(path)
    names = store.metric_names
    live = {name.removeprefix("live."): np.asarray(store.metric(name), dtype=np.float64)
            for name in names if name.startswith("live.")}
    live = {name: live[name] for name in LIVE_SERIES if name in live}
    loss = store.loss if store.loss is not None else np.full(store.n_snapshots, np.nan)
    return WatchState(path=str(path), n_snapshots=store.n_snapshots, steps=np.asarray(store.steps),
                      loss=np.asarray(loss, dtype=np.float64), live=live, closed=store.closed_cleanly,
                      writing=store.writer_active)


def sparkline(values: np.ndarray, width: int = 40) -> str:
    """The last ``width`` finite values as a line of block characters (empty when there are none)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)][-width:]
    if not finite.size:
        return ""
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return _BARS[0] * finite.size
    return "".join(_BARS[int(round((v - lo) / (hi - lo) * (len(_BARS) - 1)))] for v in finite)
