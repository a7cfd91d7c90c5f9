"""A live Koopman monitor: DMD of the last snapshots while the run trains (docs/methods.md §7).

:class:`Monitor` keeps a :class:`~traj.live.sketch.Sketch` of each snapshot (p numbers) for the
last ``window`` snapshots and, every ``every`` snapshots, fits exact DMD on them through the one
operator factory (:meth:`ReducedOperator.from_data`). Each fit (:class:`LiveFit`) gives the
leading |λ|, the number of unstable modes, the slowest decay's timescale in training steps, the
forecast error of the last snapshots by a fit that did not see them, and a transition score: W1
between this window's eigenvalues and the previous fit's (a dynamical transition shows as a peak).

The Recorder runs it on its writer thread (``Recorder(..., live=LiveOptions(...))``), off the
training thread, and writes each fit's numbers with the snapshot as metrics ``live.*``, so
``traj info``, ``traj report`` and a plain Zarr reader see them as series; trackers
(:mod:`traj.live.trackers`) get the same numbers. Memory: ``window`` sketches of p float64.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..checks import check_int, check_seed
from ..engine.backends.base import blas_threads
from ..engine.operator import ReducedOperator
from ..engine.truncation import check_rank
from ..errors import ParameterError, TrajError
from .sketch import Sketch

__all__ = ["LiveFit", "LiveOptions", "Monitor", "Tracker", "spectral_distance"]

#: A mode is unstable above |λ| = 1 + this (the same ε as dmd's classes).
UNSTABLE_EPS = 0.01
#: At most this many eigenvalues per fit go to the store (2 series each; a store holds at most 256 metrics).
MAX_SPECTRUM = 64


class Tracker(Protocol):
    """Where a fit's numbers go besides the store (TensorBoard, ...): :mod:`traj.live.trackers`."""

    def log(self, fit: LiveFit) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class LiveOptions:
    """What the live monitor keeps and how often it fits.

    Parameters
    ----------
    window : int
        Snapshots per fit (the last ``window`` recorded), at least 4.
    every : int
        Fit after every ``every`` snapshots (once ``window`` of them are held; before that, on
        the snapshots there are once there are 4).
    sketch : int
        Numbers kept per snapshot (p). A model with at most p values is kept whole.
    seed : int
        Fixes the sketch (the same seed sketches two runs alike).
    rank : int, "auto" or "all"
        The rank rule of each fit, as ``traj dmd --rank``.
    forecast : int
        Snapshots held out at the end of each window to measure the forecast error (0: none).
    tensorboard : str or None
        A TensorBoard log directory to write each fit's numbers to (needs the ``tensorboard``
        extra).
    cmd_modes : int or None
        Also keep online CMD with this many modes (docs/methods.md §2.6): references picked on the
        first ``cmd_warmup`` snapshots, then each weight's mode, a and b from running sums, (M + 3)·N
        float64 in memory; at the end of training the model is written to ``cmd_out``/cmd.zarr.
    cmd_warmup : int
        Snapshots of the warm-up that picks the CMD references (at least 3).
    cmd_samples : int or None
        K, the weights sampled in the warm-up (as ``traj cmd --samples``).
    cmd_out : str or None
        The output directory of the online CMD (``cmd.zarr`` and ``summary.json``); default ``RUN-cmd``
        beside the store ``RUN.zarr``. Replaced only when traj wrote it.
    log_to : str or None
        A tracker to send each fit's numbers to, as ``--log-to`` names it: ``tensorboard:DIR``,
        ``wandb[:PROJECT]`` or ``mlflow:URI`` (each needs its extra; :mod:`traj.live.trackers`).
    spectrum : int
        Leading eigenvalues (|λ| descending) written to the store with each fit, as metrics
        ``live.eig_re.j`` and ``live.eig_im.j`` for j < ``spectrum`` (NaN past the fit's rank): what
        ``traj watch`` draws the live spectrum and the window-to-window matrix from. 0 writes none.
    """

    window: int = 50
    every: int = 10
    sketch: int = 512
    seed: int = 0
    rank: int | str = "auto"
    forecast: int = 5
    tensorboard: str | None = None
    log_to: str | None = None
    spectrum: int = 16
    trackers: tuple[Any, ...] = field(default=(), compare=False)
    cmd_modes: int | None = None
    cmd_warmup: int = 20
    cmd_samples: int | None = None
    cmd_out: str | None = None

    def __post_init__(self) -> None:
        check_int("window", self.window, low=4, high=100_000)
        check_int("every", self.every, low=1)
        check_int("sketch", self.sketch, low=1, high=1 << 20)
        check_seed("seed", self.seed)
        check_rank(self.rank)
        check_int("forecast", self.forecast, low=0, high=max(0, self.window // 2 - 1))
        check_int("spectrum", self.spectrum, low=0, high=MAX_SPECTRUM)
        if self.tensorboard is not None and not isinstance(self.tensorboard, str | bytes) and \
                not hasattr(self.tensorboard, "__fspath__"):
            raise ParameterError("tensorboard", f"must be a directory path, got {type(self.tensorboard).__name__}")
        if self.cmd_modes is not None:  # LiveCMD's own checks, made before training starts
            from ..analysis.cmd import MAX_SAMPLES

            check_int("cmd_modes", self.cmd_modes, low=1, high=MAX_SAMPLES)
            check_int("cmd_warmup", self.cmd_warmup, low=3)
            if self.cmd_samples is not None:
                check_int("cmd_samples", self.cmd_samples, low=2, high=MAX_SAMPLES)
        if self.log_to is not None:
            from .trackers import parse_tracker

            parse_tracker(self.log_to)  # an unknown tracker or a missing package, named now

    def start(self, n_params: int, dtype: str, *, layout: Any = None, path: Any = None) -> Monitor:
        """The monitor for a run of ``n_params`` values stored as ``dtype`` (what the Recorder calls; it
        passes the store's ``layout`` and ``path``, which online CMD samples by and writes beside)."""
        trackers = list(self.trackers)
        if self.tensorboard is not None:
            from .trackers import TensorBoardTracker

            trackers.append(TensorBoardTracker(self.tensorboard))
        if self.log_to is not None:
            from .trackers import LiveTracker

            trackers.append(LiveTracker(self.log_to))
        cmd = None
        if self.cmd_modes is not None:
            from ..analysis.cmd_live import LiveCMD, live_output
            from ..store import Layout

            if self.cmd_out is None and path is None:
                raise ParameterError("cmd_out", "is needed where the monitor knows no store to write beside")
            cmd = LiveCMD(n_params, layout or Layout.from_shapes([("theta", (n_params,))]), dtype,
                          modes=self.cmd_modes, warmup=self.cmd_warmup, samples=self.cmd_samples, seed=self.seed,
                          out=self.cmd_out if self.cmd_out is not None else live_output(path), store=path)
        return Monitor(n_params, self, dtype=dtype, trackers=trackers, cmd=cmd)


@dataclass(frozen=True)
class LiveFit:
    """One fit of the live monitor.

    Attributes
    ----------
    step : int
        Training step of the window's last snapshot.
    first_step : int
        Training step of the window's first snapshot.
    snapshots : int
        Snapshots in the window.
    rank : int
    eigenvalues : ndarray of complex, shape (rank,)
        In the operator's order (|λ| descending).
    leading_modulus : float
        max |λ|.
    unstable : int
        Modes with |λ| > 1 + 0.01.
    timescale : float
        The slowest decay's e-folding time in training steps, −Δ/ln|λ| for the largest |λ| < 1
        (Δ: the steps between snapshots); its distance to the optimum shrinks by e every
        ``timescale`` steps. NaN when no mode decays.
    forecast_error : float
        ‖Ŷ − Y‖/‖Y − y_last‖ over the last ``forecast`` snapshots, Ŷ forecast by a fit of the window
        without them, y_last the last snapshot that fit saw: below 1, DMD forecasts better than
        "the weights stay where they are". NaN without a forecast.
    transition : float
        W1 between this fit's eigenvalues and the previous fit's (NaN for the first fit).
    spectrum : int
        Leading eigenvalues written to the store with the fit (:attr:`LiveOptions.spectrum`).
    """

    step: int
    first_step: int
    snapshots: int
    rank: int
    eigenvalues: np.ndarray
    leading_modulus: float
    unstable: int
    timescale: float
    forecast_error: float
    transition: float
    spectrum: int = 0

    def summary(self) -> dict[str, float]:
        """The fit's numbers, as metrics ``live.*`` (what trackers get)."""
        return {"live.leading_modulus": self.leading_modulus, "live.unstable": float(self.unstable),
                "live.timescale": self.timescale, "live.forecast_error": self.forecast_error,
                "live.transition": self.transition, "live.rank": float(self.rank)}

    def metrics(self) -> dict[str, float]:
        """What is written with the snapshot, as metrics ``live.*``: :meth:`summary` and the leading
        ``spectrum`` eigenvalues as ``live.eig_re.j``, ``live.eig_im.j`` (NaN past the rank)."""
        metrics = self.summary()
        for j in range(self.spectrum):
            z = complex(self.eigenvalues[j]) if j < self.eigenvalues.size else complex(math.nan, math.nan)
            metrics[f"live.eig_re.{j}"], metrics[f"live.eig_im.{j}"] = z.real, z.imag
        return metrics

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "first_step": self.first_step, "snapshots": self.snapshots, "rank": self.rank,
                "eigenvalues": [[float(z.real), float(z.imag)] for z in self.eigenvalues],
                **{k.removeprefix("live."): _json_number(v) for k, v in self.summary().items()}}


def _json_number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def spectral_distance(a: np.ndarray, b: np.ndarray) -> float:
    """W1 between two eigenvalue sets as point clouds in the complex plane (uniform mass, cost |λ − μ|).

    The same number as conjugacy's ``wasserstein`` (POT's exact transport), computed with scipy so
    that the writer thread never imports POT (seconds, holding the interpreter lock while training
    runs): sets of one size by an optimal assignment (W1 is its mean cost there), sets of two sizes
    by the transport linear program (HiGHS).
    """
    a = np.asarray(a, dtype=np.complex128).ravel()
    b = np.asarray(b, dtype=np.complex128).ravel()
    cost = np.abs(a[:, None] - b[None, :])
    if a.size == b.size:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(cost)
        return float(cost[rows, cols].mean())
    from scipy.optimize import linprog
    from scipy.sparse import eye, kron, vstack

    n, m = cost.shape
    ones_n, ones_m = np.ones((1, n)), np.ones((1, m))
    constraints = vstack([kron(eye(n), ones_m), kron(ones_n, eye(m))]).tocsr()  # row sums, column sums
    limits = np.concatenate([np.full(n, 1.0 / n), np.full(m, 1.0 / m)])
    done = linprog(cost.ravel(), A_eq=constraints, b_eq=limits, bounds=(0, None), method="highs")
    return float(done.fun)


class Monitor:
    """Sketches snapshots as they come (:meth:`observe`) and fits DMD on the last window of them."""

    def __init__(self, n_params: int, options: LiveOptions, *, dtype: str = "float32",
                 trackers: Sequence[Tracker] = (), cmd: Any = None) -> None:
        self.options = options
        #: online CMD (traj.analysis.cmd_live.LiveCMD) when ``cmd_modes`` is set; its summary after close
        self.cmd = cmd
        self.dtype = dtype
        self.sketch = Sketch(n_params, options.sketch, seed=options.seed)
        self.trackers = list(trackers)
        self.fits: list[LiveFit] = []
        self.seconds = 0.0  # spent sketching and fitting
        self._window: deque[tuple[int, np.ndarray]] = deque(maxlen=options.window)
        self._count = 0

    def observe(self, values: np.ndarray, step: int) -> LiveFit | None:
        """Sketch a snapshot (as stored: ``dtype``'s representation) taken at training step ``step``;
        the fit made now, if one was due and the window could be fitted, else None."""
        import time

        t0 = time.perf_counter()
        self._window.append((int(step), self.sketch.apply(values, self.dtype)))
        self._count += 1
        if self.cmd is not None:
            self.cmd.observe(values, step)
        fit = None
        if self._count % self.options.every == 0 and len(self._window) >= 4:
            with blas_threads():  # small matrices: threads would only take the training's cores
                fit = self.fit()
        self.seconds += time.perf_counter() - t0
        if fit is not None:
            for tracker in self.trackers:
                tracker.log(fit)
        return fit

    def fit(self) -> LiveFit | None:
        """DMD of the snapshots held now (None when the window cannot be fitted: too short, no motion)."""
        steps = np.array([s for s, _ in self._window])
        data = np.stack([y for _, y in self._window])
        try:
            op = ReducedOperator.from_data(data, rank=self.options.rank, dtype=np.float32, excess="reduce")
        except TrajError:
            return None
        lam = op.eigenvalues
        modulus = np.abs(lam)
        spacing = float(np.median(np.diff(steps))) if steps.size > 1 else 1.0
        decaying = modulus[(modulus < 1.0) & (modulus > 0.0)]
        timescale = -spacing / math.log(float(decaying.max())) if decaying.size else float("nan")
        previous = self.fits[-1] if self.fits else None
        fit = LiveFit(
            step=int(steps[-1]), first_step=int(steps[0]), snapshots=int(steps.size), rank=op.rank, eigenvalues=lam,
            leading_modulus=float(modulus.max()) if modulus.size else float("nan"),
            unstable=int(np.sum(modulus > 1.0 + UNSTABLE_EPS)), timescale=timescale,
            forecast_error=self._forecast_error(data),
            transition=spectral_distance(lam, previous.eigenvalues) if previous is not None and lam.size
            and previous.eigenvalues.size else float("nan"), spectrum=self.options.spectrum,
        )
        self.fits.append(fit)
        return fit

    def _forecast_error(self, data: np.ndarray) -> float:
        h = self.options.forecast
        if h == 0 or data.shape[0] - h < 4:
            return float("nan")
        seen, held = data[:-h], data[-h:]
        try:
            op = ReducedOperator.from_data(seen, rank=self.options.rank, dtype=np.float32, excess="reduce")
            with np.errstate(over="ignore", invalid="ignore"):
                forecast = op.reconstruct(seen, np.arange(seen.shape[0], data.shape[0]))
        except TrajError:
            return float("nan")
        change = np.linalg.norm(held - seen[-1])
        error = float(np.linalg.norm(forecast - held) / change) if change > 0 else float("nan")
        return error if math.isfinite(error) else float("nan")

    def close(self) -> None:
        if self.cmd is not None:  # the online CMD model is written at the end of training
            self.cmd.close()
        for tracker in self.trackers:
            tracker.close()
