"""What ``traj watch`` shows of a store that is still being written: read only, committed rows only.

:func:`watch_state` opens the store afresh (a reader sees only committed snapshots and never takes
the writer's lock) and returns a :class:`WatchState`: the steps, the loss, the live monitor's
series (``live.*`` metrics, NaN between fits), each fit's leading eigenvalues (``live.eig_re.j``,
``live.eig_im.j``) and whether the run has closed. :func:`transition_matrix` is the
window-to-window matrix of the live fits (docs/methods.md §4.6): W₁ between every two fits' stored spectra, by the monitor's
own :func:`~traj.live.monitor.spectral_distance`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..store import RunStore

__all__ = ["LIVE_SERIES", "TransitionMatrix", "WatchState", "sparkline", "transition_matrix", "watch_state"]

#: The live monitor's series, in the order they are shown.
LIVE_SERIES = ("leading_modulus", "unstable", "timescale", "forecast_error", "transition", "rank")
#: The matrix covers at most this many of the latest fits (W₁ of every pair: n²/2 small transports per look).
MATRIX_FITS = 100

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
    spectra : ndarray of complex, shape (n_snapshots, K)
        Each live fit's leading K eigenvalues (|λ| descending), on the fit's row; NaN on rows without a
        fit and past a fit's rank. K = 0 where the run wrote none (``LiveOptions(spectrum=0)``, or a
        run recorded before traj wrote them).
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
    spectra: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.complex128))
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

    def spectrum(self, row: int) -> np.ndarray:
        """The stored eigenvalues of the fit written with snapshot ``row`` (empty where none)."""
        if row >= self.spectra.shape[0] or not self.spectra.shape[1]:
            return np.zeros(0, dtype=np.complex128)
        values = self.spectra[row]
        return values[np.isfinite(values)]


@dataclass(frozen=True)
class TransitionMatrix:
    """W₁ between the stored spectra of every two live fits (the window-to-window matrix of docs/methods.md §4.6, online).

    Attributes
    ----------
    steps : ndarray of int, shape (F,)
        Training step of each fit (its window's last snapshot), oldest first.
    distances : ndarray of shape (F, F)
        Symmetric, zero diagonal; ``distances[i, i - 1]`` is the transition score of fit i where its
        rank is at most the stored K (else the stored spectra are the leading K of each).
    """

    steps: np.ndarray
    distances: np.ndarray

    def to_dict(self) -> dict:
        return {"steps": [int(s) for s in self.steps], "distances": self.distances.tolist()}


def transition_matrix(state: WatchState, *, last: int = MATRIX_FITS) -> TransitionMatrix:
    """The matrix of the latest ``last`` fits that stored a spectrum (empty before the first)."""
    from .monitor import spectral_distance

    rows = [int(k) for k in state.fitted if state.spectrum(int(k)).size][-last:] if last > 0 else []
    spectra = [state.spectrum(k) for k in rows]
    distances = np.zeros((len(rows), len(rows)))
    for i in range(len(rows)):
        for j in range(i):
            distances[i, j] = distances[j, i] = spectral_distance(spectra[i], spectra[j])
    return TransitionMatrix(steps=np.asarray(state.steps)[rows].astype(np.int64), distances=distances)


def watch_state(path: str | os.PathLike[str]) -> WatchState:
    """The store at ``path`` as it stands now (opened afresh: new commits are seen)."""
    store = RunStore(path)
    names = store.metric_names
    live = {name.removeprefix("live."): np.asarray(store.metric(name), dtype=np.float64)
            for name in names if name.startswith("live.")}
    live = {name: live[name] for name in LIVE_SERIES if name in live}
    count = 0  # the spectrum's series: live.eig_re.0, live.eig_im.0, live.eig_re.1, ... while both are there
    while f"live.eig_re.{count}" in names and f"live.eig_im.{count}" in names:
        count += 1
    spectra = np.empty((store.n_snapshots, count), dtype=np.complex128)
    for j in range(count):
        spectra[:, j].real = store.metric(f"live.eig_re.{j}")
        spectra[:, j].imag = store.metric(f"live.eig_im.{j}")
    loss = store.loss if store.loss is not None else np.full(store.n_snapshots, np.nan)
    return WatchState(path=str(path), n_snapshots=store.n_snapshots, steps=np.asarray(store.steps),
                      loss=np.asarray(loss, dtype=np.float64), live=live, spectra=spectra,
                      closed=store.closed_cleanly, writing=store.writer_active)


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
