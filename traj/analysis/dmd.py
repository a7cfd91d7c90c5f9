"""``traj dmd``: the Koopman spectrum of a recorded trajectory by streaming exact DMD (docs/methods.md §1).

One pass over the store gives the Gram matrix of the window (and of every layer, with
``per_layer``); eigenvalues, amplitudes, reconstruction error and forecasts then come from
small matrices. Modes are materialised (a second pass, D·C) only when asked.

The method is chosen by a cost model (:func:`choose_method`): a window that fits
:data:`IN_MEMORY_BYTES` (and the memory budget) as float64 is read once and decomposed by an SVD of the data ("svd":
an SVD's accuracy, not the Gram's squared condition number); otherwise the cheaper of the
streamed Gram (one read, N·T² flops, (T+1)² matrices held) and the randomized range finder
(q + 3 reads, a few N·T·(r+p) flops each, T×(r+p) matrices) where both apply, the Gram only
where its matrices fit the memory budget (:data:`MEMORY_BYTES`). Rank "auto" works on both:
the Gram path with Gavish–Donoho's median rule over every σ, the range finder with their
known-noise rule and σ̂ from the sketch's tail. The result says which and why.

The shape of every analysis: :class:`DMDParams` checks the options once (:meth:`DMDParams.checked`),
:func:`fit_dmd` fits them to a store through the engine, and the result is a frozen
:class:`DMDResult` with ``to_dict()`` for JSON; :func:`dmd` does all three.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..checks import check_choice, check_float, check_int, check_ints, check_seed
from ..engine import Engine, ReducedOperator
from ..engine.operator import RESOLVED, ModeClass, check_rank
from ..engine.randomized import SKETCH_BLOCK, randomized_operator
from ..errors import DataLimitError, NotApplicableError, ParameterError, RankUnavailableError
from ..progress import Progress, counter
from ..store import RunStore
from ..store.schema import ParamEntry
from .scratch import ScratchArrays
from .windows import (
    Window,
    check_even_spacing,
    check_gram_finite,
    hankel_gram,
    parse_window,
    raise_nonfinite,
    resolve_window,
)

__all__ = ["DMDEvaluation", "DMDParams", "DMDResult", "LayerSpectrum", "MethodChoice", "MethodCost",
           "check_gram_finite", "choose_method", "dmd", "evaluate_dmd", "fit_dmd", "memory_bytes", "parse_window",
           "save_modes"]

#: Most time delays of a Hankel DMD (``delays``): each one adds N coordinates to every snapshot.
MAX_DELAYS = 10_000
#: Above this many snapshots in a window, "auto" uses the randomized range finder (docs/methods.md §1.7).
MAX_GRAM_SNAPSHOTS = 20_001
#: Snapshots a forecast may reach past the window (the sampled coordinates only; r x K numbers).
MAX_FORECAST = 100_000
#: Power iterations of the randomized range finder (each one reads the data twice; Halko et al. use q <= 2-7).
MAX_POWER_ITERATIONS = 50
#: A window whose float64 copy is at most this is read into memory and decomposed by an SVD of the data.
IN_MEMORY_BYTES = 128 << 20
#: Sketch columns the randomized range finder adds to the rank (p).
OVERSAMPLES = 10
#: The cost model's machine: decoded bytes read per second (guarded, lz4; measured: 2.4 GB in 8 s)
#: and float64 flops per second of BLAS-3 (dsyrk: N·T² = 1.8e12 in 28 s on 2 cores).
READ_BYTES_PER_S = 300e6
FLOPS_PER_S = 60e9
#: The (T+1)² eigendecomposition (~9T³ flops) is BLAS-2 bound: eigh of 3001² took 37-46 s on this
#: machine under load (~6.6e9 flop/s), so it is charged at this rate, not FLOPS_PER_S.
EIGH_FLOPS_PER_S = 10e9
#: The range finder's thin products (a T×width block times width ≈ 32-136 columns) run far below dsyrk's
#: rate: 10-20e9 flop/s measured on this machine for widths 34-136 (tall-skinny GEMMs are memory bound).
SKETCH_FLOPS_PER_S = 15e9
#: Working memory a DMD may hold besides the streamed blocks. Measured on T = 10 001 x N = 50k: the
#: interpreter with numpy and zarr ~100 MiB, the engine's blocks at the default 64 MiB block ~400 MiB
#: (float32 bands read ahead, the float64 block, products), so a process stays within ~1 GiB.
#: "auto" takes the Gram path only where its (T+1)² matrices fit; the range finder's basis stays within it.
MEMORY_BYTES = 512 << 20
#: (T+1)² float64 matrices the Gram path holds at its peak: the Gram, its symmetrised copy, the
#: pairs' XᵀX and the eigendecomposition's eigenvectors and LAPACK dsyevd's 2T² workspace.
GRAM_COPIES = 5
#: T×width float64 matrices the range finder holds (basis, A·basis, their stacked copies, V).
SKETCH_COPIES = 6
#: Copies of the window's float64 (T+1)×N the svd path holds at its peak: the window itself, LAPACK's copy of
#: it, U and dgesdd's workspace. Measured (peak RSS) on 201 x 100 000: 2.3 copies beyond the window.
SVD_COPIES = 3.5
Method = Literal["auto", "gram", "randomized", "svd"]


def memory_bytes(memory_mb: float) -> int:
    """Bytes of a memory budget given in MiB (``--memory-mb``): at least 1 MiB, finite."""
    return int(check_float("memory_bytes", memory_mb, low=1.0, high=float(1 << 30)) * (1 << 20))


@dataclass(frozen=True)
class DMDParams:
    """The options of a DMD, checked (see :func:`dmd` for their meaning)."""

    rank: int | str | None = "auto"
    window: Window = None
    layers: tuple[str, ...] | None = None
    per_layer: bool = False
    eps: float = 0.01
    forecast: int = 0
    n_samples: int = 6
    method: Method = "auto"
    drop_nonfinite: bool = False
    max_gram: int = MAX_GRAM_SNAPSHOTS
    n_iter: int = 4
    random_state: int = 0
    in_memory_bytes: int = IN_MEMORY_BYTES
    memory_bytes: int = MEMORY_BYTES
    delays: int = 0

    @classmethod
    def checked(cls, *, rank: int | str | None = "auto", window: Window = None, layers: Sequence[str] | None = None,
                per_layer: bool = False, eps: float = 0.01, forecast: int = 0, n_samples: int = 6,
                method: str = "auto", drop_nonfinite: bool = False, max_gram: int = MAX_GRAM_SNAPSHOTS,
                n_iter: int = 4, random_state: int = 0, in_memory_bytes: int = IN_MEMORY_BYTES,
                memory_bytes: int = MEMORY_BYTES, delays: int = 0) -> DMDParams:
        """The options checked once, at the door; a bad one raises :class:`ParameterError` naming it."""
        delays = check_int("delays", delays, low=0, high=MAX_DELAYS)
        if delays:  # a delay-embedded run is one Hankel trajectory, decomposed whole by its Gram or an SVD
            if per_layer or drop_nonfinite:
                raise ParameterError("per_layer" if per_layer else "drop_nonfinite", "cannot be given with delays")
            if method == "randomized":
                raise ParameterError("method", "randomized does not embed delays: use auto, gram or svd")
        return cls(
            rank=check_rank(rank),
            window=window,
            layers=tuple(layers) if layers else None,
            per_layer=bool(per_layer),
            eps=check_float("eps", eps, low=0),
            forecast=check_int("forecast", forecast, low=0, high=MAX_FORECAST),
            n_samples=check_int("n_samples", n_samples, low=1, high=1000),
            method=check_choice("method", method, ("auto", "gram", "randomized", "svd")),  # type: ignore[arg-type]
            drop_nonfinite=bool(drop_nonfinite),
            max_gram=check_int("max_gram", max_gram, low=3),
            n_iter=check_int("n_iter", n_iter, low=0, high=MAX_POWER_ITERATIONS),
            random_state=check_seed("random_state", random_state),
            in_memory_bytes=check_int("in_memory_bytes", in_memory_bytes, low=0),
            memory_bytes=check_int("memory_bytes", memory_bytes, low=1 << 20),
            delays=delays,
        )


@dataclass(frozen=True)
class MethodCost:
    """What one method would cost on a window: passes over the data, bytes and flops, and the time they predict."""

    method: str
    reads: int
    bytes: float
    flops: float
    eigh_flops: float = 0.0
    memory: float = 0.0
    flops_per_s: float = FLOPS_PER_S

    @property
    def seconds(self) -> float:
        return (self.reads * self.bytes / READ_BYTES_PER_S + self.flops / self.flops_per_s
                + self.eigh_flops / EIGH_FLOPS_PER_S)

    def describe(self) -> str:
        eigh = f" + {self.eigh_flops:.2g} eigh flop" if self.eigh_flops else ""
        return (f"{self.reads} read{'s' if self.reads != 1 else ''} of {self.bytes / 1e9:.3g} GB + "
                f"{self.flops:.2g} flop{eigh} ≈ {self.seconds:.3g} s, holding {self.memory / 2**20:.0f} MiB")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "reads": self.reads, "bytes": self.bytes, "flops": self.flops,
                "eigh_flops": self.eigh_flops, "memory_bytes": self.memory, "seconds": self.seconds}


@dataclass(frozen=True)
class MethodChoice:
    """The method a DMD used, why, and the costs the choice compared."""

    method: str
    reason: str
    costs: tuple[MethodCost, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "reason": self.reason, "costs": [c.to_dict() for c in self.costs]}


def method_costs(n_snapshots: int, n_features: int, itemsize: int, *, rank: int | str | None, n_iter: int,
                 randomized: bool = True) -> dict[str, MethodCost]:
    """The cost model of docs/methods.md §1.7 for a window of T+1 snapshots of N coordinates.

    gram: one read; the Gram N·T² flops (dsyrk) and its eigendecomposition ~9T³; it holds
    :data:`GRAM_COPIES` (T+1)² float64 matrices. randomized (rank r, q power iterations, p
    oversamples; rank "auto" sketches :data:`~traj.engine.randomized.SKETCH_BLOCK` columns per pass):
    q + 3 reads; each pass applies XᵀX to T×(r+p) columns, 4·N·T·(r+p) flops at the thin products'
    rate :data:`SKETCH_FLOPS_PER_S`; it holds a few T×(q+1)(r+p) matrices. svd: one read, an SVD of
    the N×T data ~4·N·T·k + 9k³ (k = min(N, T)), holding :data:`SVD_COPIES` copies of the window as float64
    (measured) and its T×k factor: no T² matrix, so a long window of few coordinates takes it.
    """
    t = n_snapshots
    data = float(t) * n_features * itemsize
    square = 8.0 * t * t
    thin = min(t, n_features)  # the thin SVD of the N×T data: factors T×k and k×N, k = min(N, T)
    costs = {"gram": MethodCost("gram", 1, data, float(n_features) * t * t, 9.0 * t**3, GRAM_COPIES * square),
             "svd": MethodCost("svd", 1, data, 4.0 * n_features * t * thin, 9.0 * float(thin) ** 3,
                               SVD_COPIES * 8.0 * t * n_features + 2 * 8.0 * t * thin)}
    if randomized:
        width = min(t - 1, rank + OVERSAMPLES if isinstance(rank, int) else SKETCH_BLOCK)
        costs["randomized"] = MethodCost("randomized", n_iter + 3, data, 4.0 * n_features * t * width * (n_iter + 3),
                                         memory=SKETCH_COPIES * 8.0 * t * min(t - 1, width * (n_iter + 1)),
                                         flops_per_s=SKETCH_FLOPS_PER_S)
    return costs


def choose_method(params: DMDParams, n_snapshots: int, n_features: int, itemsize: int) -> MethodChoice:
    """The method for a window (``params.method`` unless "auto"), and why (docs/methods.md §1.7).

    ``memory_bytes`` is the budget of every method (:func:`method_costs`'s ``memory``); ``in_memory_bytes`` is only
    auto's preference for the SVD path. "auto": a window whose float64 copy fits min(``in_memory_bytes``,
    ``memory_bytes``) takes "svd" (where all it holds fits ``memory_bytes``); otherwise the cheaper by
    :func:`method_costs` of "gram" (at most ``max_gram`` snapshots, and only where its (T+1)² matrices fit
    ``memory_bytes``) and "randomized" (neither ``per_layer`` nor ``drop_nonfinite``). Where neither the memory
    budget nor ``max_gram`` admits the Gram and the range finder cannot serve, the Gram is used and the reason says so.
    An explicit "svd" over ``memory_bytes`` is refused (:class:`ParameterError` on ``memory_bytes``: it would
    allocate it); an explicit "gram" or "randomized" over it runs, and the reason says it exceeds the budget.
    """
    rank = params.rank
    randomized_ok = not params.per_layer and not params.drop_nonfinite and not params.delays
    costs = method_costs(n_snapshots, n_features, itemsize, rank=rank, n_iter=params.n_iter, randomized=randomized_ok)
    in_memory = float(n_snapshots) * n_features * 8
    svd, budget = costs["svd"], params.memory_bytes
    if params.method != "auto":
        chosen = costs.get(params.method)
        if params.method == "svd" and svd.memory > budget:  # it would really allocate it: refuse
            raise ParameterError("memory_bytes", f"of {_mib(budget)} MiB is less than the svd method needs: "
                                                 f"{_mib(svd.memory)} MiB (the window as float64, "
                                                 f"{_mib(in_memory)} MiB, {SVD_COPIES:g} times at the SVD's peak, "
                                                 f"and its thin SVD factor); allow "
                                                 f"at least {math.ceil(svd.memory / 2**20)} MiB or use gram or randomized")
        why = "asked for" + (f": {chosen.describe()}" if chosen else "")
        if chosen is not None and chosen.memory > budget:
            why += (f"; this exceeds the memory budget of {_mib(budget)} MiB: run only because "
                    f"{params.method} was asked for explicitly")
        return MethodChoice(params.method, why, tuple(costs.values()))
    # auto prefers an SVD of the data (its accuracy) for a window whose float64 copy fits in_memory_bytes, and
    # only where everything the SVD holds fits the hard budget memory_bytes
    if in_memory <= min(params.in_memory_bytes, budget) and svd.memory <= budget:
        return MethodChoice("svd", f"the window fits in memory ({in_memory / 2**20:.3g} MiB as float64 ≤ "
                                   f"{min(params.in_memory_bytes, budget) / 2**20:.0f} MiB): one read and an SVD of the "
                                   f"data, whose accuracy is an SVD's ({svd.describe()})", tuple(costs.values()))
    gram_ok = n_snapshots <= params.max_gram
    gram = costs["gram"]
    gram_fits = gram.memory <= budget
    over = (f"the Gram path would hold {gram.memory / 2**20:.0f} MiB, over the memory budget of "
            f"{budget / 2**20:.0f} MiB")
    compared = [c for c in costs.values() if c.method == "randomized" or
                (c.method == "gram" and gram_ok and (gram_fits or not randomized_ok))]
    shown = tuple(c for c in costs.values() if c.method != "svd")
    if not compared:
        raise ParameterError("per_layer" if params.per_layer else "drop_nonfinite",
                             f"needs the Gram method (windows of at most {params.max_gram} snapshots)")
    best = min(compared, key=lambda c: c.seconds)
    others = [c for c in compared if c is not best]
    if others:
        why = f"{best.describe()}, cheaper than {others[0].method}: {others[0].describe()}"
    elif best.method == "gram":
        why = f"{best.describe()}; randomized does not do per_layer or drop_nonfinite"
        if not gram_fits:
            why += f" ({over})"
    elif not gram_ok:
        why = f"{best.describe()}; the window holds {n_snapshots} snapshots, too many for a Gram (max {params.max_gram})"
    else:
        why = f"{best.describe()}; {over} (gram: {gram.describe()})"
    if best.method == "randomized" and not isinstance(rank, int):
        why += ("; rank auto by Gavish–Donoho's known-noise threshold with the noise level from the energy outside "
                "the sketch (tr XᵀX − Σ kept σ²)")
    return MethodChoice(best.method, why, shown)


def _mib(n_bytes: float) -> str:
    """Bytes as MiB for a message: whole MiB, two decimals below 10 MiB (1.22, not 1)."""
    return f"{n_bytes / 2**20:.0f}" if n_bytes >= 10 << 20 else f"{n_bytes / 2**20:.2f}"


@dataclass(frozen=True)
class LayerSpectrum:
    """The DMD spectrum of one layer's coordinates over the same window."""

    name: str
    n_params: int
    rank: int
    eigenvalues: np.ndarray
    amplitudes: np.ndarray
    classes: tuple[ModeClass, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_params": self.n_params,
            "rank": self.rank,
            "eigenvalues": complex_pairs(self.eigenvalues),
            "abs_eigenvalues": np.abs(self.eigenvalues).tolist(),
            "amplitudes": complex_pairs(self.amplitudes),
            "classes": list(self.classes),
        }


@dataclass(frozen=True)
class DMDResult:
    """Exact DMD of a store's window.

    ``sample_*`` hold a few coordinates' recorded trajectories (shape (T_w, K)), their DMD
    reconstruction and forecast (shape (T_w + forecast, K)), for the report's plot.
    """

    store: str
    operator: ReducedOperator
    window: tuple[int, int]
    steps: np.ndarray
    dt: float
    eps: float
    n_params: int
    layers: tuple[str, ...] | None
    reconstruction_error: float
    backend: str
    seconds: float
    forecast_steps: int
    sample_indices: np.ndarray
    sample_names: tuple[str, ...]
    sample_trajectories: np.ndarray
    sample_reconstruction: np.ndarray
    per_layer: tuple[LayerSpectrum, ...] = field(default_factory=tuple)
    modes_path: str | None = None
    choice: MethodChoice | None = None
    evaluation: DMDEvaluation | None = None
    delays: int = 0

    @property
    def rank(self) -> int:
        return self.operator.rank

    @property
    def eigenvalues(self) -> np.ndarray:
        return self.operator.eigenvalues

    @property
    def amplitudes(self) -> np.ndarray:
        assert self.operator.amplitudes is not None  # a trajectory's DMD always has them
        return self.operator.amplitudes

    @property
    def classes(self) -> list[ModeClass]:
        return self.operator.classes(self.eps)

    @property
    def class_counts(self) -> dict[ModeClass, int]:
        classes = self.classes
        return {c: classes.count(c) for c in ("neutral", "stable", "unstable")}

    @property
    def rates(self) -> np.ndarray:
        """log(λ)/Δt per snapshot spacing (not finite where λ = 0)."""
        return self.operator.rates(self.dt)

    @property
    def n_snapshots(self) -> int:
        return self.window[1] - self.window[0] + 1

    @property
    def reconstruction_steps(self) -> np.ndarray:
        """The training step of each row of ``sample_reconstruction``: the window's steps, then the forecast's,
        ``dt`` apart past the last (the window is evenly spaced)."""
        steps = np.asarray(self.steps, dtype=np.float64)
        ahead = self.sample_reconstruction.shape[0] - steps.size
        return np.concatenate([steps, steps[-1] + self.dt * np.arange(1, ahead + 1)])

    @property
    def eigenvalue_errors_cover(self) -> str:
        """What :meth:`ReducedOperator.eigenvalue_errors` estimates, and what it leaves out (report and JSON)."""
        if self.operator.source == "svd":
            path = "svd path (an SVD of the data, backward stable)"
        elif self.choice is not None and self.choice.method == "randomized":
            path = "randomized path (σ² from XᵀX products, which square the condition number)"
        else:
            path = "gram path (the Gram's eigendecomposition, which squares the condition number)"
        return (f"the first-order rounding error of each eigenvalue by the {path}, only (docs/methods.md §1.5); "
                f"it does not cover truncation to rank {self.rank} (the directions left out), noise in the run, or "
                f"the data's own rounding (float32 storage): the true error can be far larger")

    def to_dict(self) -> dict[str, Any]:
        op = self.operator
        rates = self.rates
        return {
            "store": self.store,
            "rank": op.rank,
            "rank_threshold": op.threshold,
            "rank_rule": op.truncation.rule,
            # σ̂, the noise level the tail rule estimated (null for the other rules)
            "noise_level": op.truncation.noise,
            "rank_note": op.rank_note,
            "singular_values": op.singular_values.tolist(),
            "eigenvalues": complex_pairs(op.eigenvalues),
            # first-order rounding error of each eigenvalue by the path used (docs/methods.md §1.5): not the
            # total error; "eigenvalue_errors_cover" says what it covers and what it does not
            "eigenvalue_errors": op.eigenvalue_errors().tolist(),
            "eigenvalue_errors_cover": self.eigenvalue_errors_cover,
            "abs_eigenvalues": np.abs(op.eigenvalues).tolist(),
            # log λ is undefined at λ = 0 (a mode gone after one step): null there
            "rates_per_step": [pair if np.isfinite(rate) else None
                               for pair, rate in zip(complex_pairs(rates), rates, strict=True)],
            "classes": self.classes,
            "class_counts": self.class_counts,
            "eps": self.eps,
            "amplitudes": complex_pairs(self.amplitudes),
            "reconstruction_error": self.reconstruction_error,
            "n_params": self.n_params,
            "n_snapshots": self.n_snapshots,
            "window": list(self.window),
            "steps": [int(self.steps[0]), int(self.steps[-1])],
            "snapshot_spacing_steps": self.dt,
            "layers": list(self.layers) if self.layers else None,
            "backend": self.backend,
            "method": self.choice.method if self.choice else None,
            "method_reason": self.choice.reason if self.choice else None,
            "method_costs": [c.to_dict() for c in self.choice.costs] if self.choice else [],
            "seconds": self.seconds,
            "forecast_steps": self.forecast_steps,
            # d time delays (Hankel DMD): the operator, amplitudes and reconstruction error are the embedded run's
            "delays": self.delays,
            "per_layer": [layer.to_dict() for layer in self.per_layer],
            "modes": self.modes_path,
            "evaluation": self.evaluation.to_dict() if self.evaluation else None,
        }


    def to_dataframe(self) -> Any:
        """One row per mode (pandas): eigenvalue λ, |λ|, rate log(λ)/Δt per step, amplitude, |amplitude|, class."""
        from ..tables import dataframe

        with np.errstate(divide="ignore", invalid="ignore"):
            rates = self.rates
        return dataframe({"mode": np.arange(self.rank), "eigenvalue": self.eigenvalues,
                          "abs_eigenvalue": np.abs(self.eigenvalues), "rate_per_step": rates,
                          "amplitude": self.amplitudes, "abs_amplitude": np.abs(self.amplitudes),
                          "class": self.classes}, index="mode")


def complex_pairs(values: np.ndarray) -> list[list[float]]:
    """Complex numbers as [re, im] pairs (JSON has no complex type)."""
    values = np.asarray(values, dtype=np.complex128)
    return [[float(v.real), float(v.imag)] for v in values]


# ---------------------------------------------------------------------- the analysis
def dmd(
    store: RunStore | str | os.PathLike[str],
    *,
    rank: int | str | None = "auto",
    window: Window = None,
    layers: Sequence[str] | None = None,
    per_layer: bool = False,
    eps: float = 0.01,
    forecast: int = 0,
    n_samples: int = 6,
    engine: Engine | None = None,
    method: str = "auto",
    drop_nonfinite: bool = False,
    max_gram: int = MAX_GRAM_SNAPSHOTS,
    n_iter: int = 4,
    random_state: int = 0,
    in_memory_bytes: int = IN_MEMORY_BYTES,
    memory_bytes: int = MEMORY_BYTES,
    delays: int = 0,
    progress: Progress | None = None,
) -> DMDResult:
    """Exact DMD of a store's trajectory over a window (docs/methods.md §1).

    Parameters
    ----------
    store : RunStore or path
    rank : int or "auto"
        Modes kept; "auto" uses the Gavish–Donoho threshold (the median rule over every σ on the
        gram and svd paths; the known-noise rule with σ̂ from the sketch's tail on the randomized
        path; the JSON's ``rank_rule`` says which). An integer above the directions the window
        resolves is refused (:class:`~traj.errors.RankUnavailableError`).
    window : "a:b" or (a, b), optional
        Snapshot indices, both included (default the whole run).
    layers : list of str, optional
        Restrict the observable to these parameter tensors (default all of θ).
    per_layer : bool
        Also decompose every layer on its own (its Gram comes from the same pass); a layer
        with fewer directions than ``rank`` gets its own Gavish–Donoho rank.
    eps : float
        Tolerance of the neutral class.
    forecast : int
        Snapshots to forecast past the window for the sampled coordinates.
    n_samples : int
        Coordinates sampled (``random_state``) to show beside their reconstruction.
    engine : Engine, optional
        Backend of the streaming pass (default numpy).
    method : {"auto", "gram", "randomized", "svd"}
        "gram" forms the (T+1)² Gram in one pass; "randomized" uses the randomized range
        finder (n_iter + 3 passes, a few T×(r+10) matrices); "svd" reads the window into memory
        and takes an SVD of the data; "auto" chooses by :func:`choose_method` (svd where the
        window's float64 copy fits min(``in_memory_bytes``, ``memory_bytes``), else the cheaper of gram and randomized, gram only
        where it fits ``memory_bytes``). On the gram and randomized paths "auto" rank keeps only
        modes whose eigenvalues the path resolves to ~1e-6 (both square the condition number).
    drop_nonfinite : bool
        Skip snapshots holding NaN/Inf (every pair touching one leaves XᵀX and XᵀY) instead of
        refusing the window; found from the Gram's diagonal, no extra pass.
    in_memory_bytes : int
        Largest float64 window "auto" prefers to read into memory for an SVD of the data (0: never);
        only a preference: the SVD path must also fit ``memory_bytes``.
    memory_bytes : int
        Working memory the method may hold (:data:`MEMORY_BYTES`), the budget of every path: "auto"
        takes the SVD and Gram paths only where they fit, and the range finder's basis never outgrows it.
        An explicit "svd" that does not fit is refused; an explicit "gram" (or "randomized" with a rank
        whose sketch does not fit) runs, and ``choice.reason`` says it exceeds the budget.
    delays : int
        d time delays (Hankel DMD, as ``traj conjugacy`` embeds them): the snapshots become
        h_k = [θ_k; θ_{k+1}; …; θ_{k+d}], k = 0..T−d, and exact DMD runs on that trajectory (its Gram is a
        sum of d+1 shifted blocks of G: no extra pass). PyDMD's ``HankelDMD(d=m)`` stacks m snapshots, so
        it is ``delays = m − 1``. Amplitudes and reconstruction error are the embedded trajectory's; the
        sampled coordinates' reconstruction and forecast, and saved modes, are the delay-0 block's. Not with
        ``per_layer``, ``drop_nonfinite`` or the randomized method.
    """
    params = DMDParams.checked(rank=rank, window=window, layers=layers, per_layer=per_layer, eps=eps,
                               forecast=forecast, n_samples=n_samples, method=method, drop_nonfinite=drop_nonfinite,
                               max_gram=max_gram, n_iter=n_iter, random_state=random_state,
                               in_memory_bytes=in_memory_bytes, memory_bytes=memory_bytes, delays=delays)
    return fit_dmd(store, params, engine=engine, progress=progress)


def fit_dmd(store: RunStore | str | os.PathLike[str], params: DMDParams, *, engine: Engine | None = None,
            progress: Progress | None = None) -> DMDResult:
    """Fit checked :class:`DMDParams` to a store: the operator, the per-layer spectra and the samples."""
    t0 = time.perf_counter()
    store = store if isinstance(store, RunStore) else RunStore(store)
    engine = engine or Engine()
    lo, hi = resolve_window(store, params.window, spaced=True)
    spacing = check_even_spacing(store, lo, hi)
    if hi - lo + 1 < params.delays + 3:
        raise ParameterError("delays", f"{params.delays} leave fewer than 3 embedded snapshots in the window {lo}:{hi} "
                                       f"(at most {max(0, hi - lo - 2)} delays there)")
    rows = slice(lo, hi + 1)
    entries = store.layout.select(params.layers) if params.layers else list(store.layout.entries)
    # d delays: T+1-d embedded snapshots of (d+1)·N coordinates each
    choice = choose_method(params, hi - lo + 1 - params.delays, sum(e.size for e in entries) * (params.delays + 1),
                           store.dtype.itemsize)
    if choice.method == "svd":
        operator, spectra = _from_data(store, engine, rows, entries, params, progress)
    elif choice.method == "gram":
        operator, spectra = _from_gram(store, engine, rows, entries, params, progress)
    else:
        operator, spectra = _from_range_finder(store, engine, rows, entries, params, progress), ()
    picks, trajectories, reconstruction = _samples(store, engine, rows, entries, operator, params)
    steps = store.steps[lo : hi + 1]
    return DMDResult(
        store=str(store.path),
        operator=operator,
        window=(lo, hi),
        steps=steps,
        dt=float(spacing) if spacing > 0 else 1.0,
        eps=params.eps,
        n_params=sum(e.size for e in entries),
        layers=tuple(e.name for e in entries) if params.layers else None,
        reconstruction_error=operator.reconstruction_error(),
        backend=engine.label,
        seconds=time.perf_counter() - t0,
        forecast_steps=params.forecast,
        sample_indices=picks,
        sample_names=tuple(coordinate_name(store, int(i)) for i in picks),
        sample_trajectories=trajectories,
        sample_reconstruction=reconstruction,
        per_layer=spectra,
        choice=choice,
        delays=params.delays,
    )


def _from_gram(store: RunStore, engine: Engine, rows: slice, entries: list[ParamEntry], params: DMDParams,
               progress: Progress | None) -> tuple[ReducedOperator, tuple[LayerSpectrum, ...]]:
    """The window's operator from its Gram (one pass, which also gives every layer's Gram)."""
    groups: dict[str, list[slice]] = {"__all__": [e.columns for e in entries]}
    if params.per_layer:
        groups.update({e.name: [e.columns] for e in entries})
    grams = engine.gram(store, rows=rows, groups=groups, progress=progress)
    n_features = sum(e.size for e in entries)
    finite = np.isfinite(np.diag(grams["__all__"]))
    if finite.all() or not params.drop_nonfinite:
        check_gram_finite(grams["__all__"], store, rows.start)
        valid = None
    else:
        valid = finite
    # d delays: the Hankel snapshots' Gram is a sum of shifted blocks of G (conjugacy's embedding, no extra pass)
    operator = ReducedOperator.from_gram(hankel_gram(grams["__all__"], params.delays), rank=params.rank,
                                         n_features=n_features * (params.delays + 1), dtype=store.dtype, valid=valid,
                                         resolve=RESOLVED)
    spectra = tuple(s for e in entries if params.per_layer and (s := _layer(store, e, grams[e.name], params)))
    return operator, spectra


def _from_data(store: RunStore, engine: Engine, rows: slice, entries: list[ParamEntry], params: DMDParams,
               progress: Progress | None) -> tuple[ReducedOperator, tuple[LayerSpectrum, ...]]:
    """The window's operator from an SVD of the data read into memory (a window within IN_MEMORY_BYTES)."""
    columns = [e.columns for e in entries]
    whole = len(columns) == 1 and columns[0] == slice(0, store.n_params)
    data = engine.collect(store, columns[0] if whole else np.concatenate([np.arange(c.start, c.stop) for c in columns]),
                          rows=rows, progress=progress)  # (T+1, N) float64
    grams: dict[str, np.ndarray] = {}
    offset = 0
    with np.errstate(invalid="ignore", over="ignore"):  # a non-finite snapshot: its Gram row is not finite, as streamed
        for e in entries if params.per_layer else ():
            part = data[:, offset : offset + e.size]
            grams[e.name] = part @ part.T
            offset += e.size
        finite = bool(np.isfinite(data).all())
        gram = None if finite else data @ data.T
    spectra = tuple(s for e in entries if params.per_layer and (s := _layer(store, e, grams[e.name], params)))
    if params.delays:  # the Hankel trajectory h_k = [θ_k; …; θ_{k+d}] (hankel_gram's snapshots), held in memory
        d, m = params.delays, data.shape[0] - params.delays
        data = np.concatenate([data[s : s + m] for s in range(d + 1)], axis=1)
    if gram is not None:
        if not params.drop_nonfinite:
            check_gram_finite(gram, store, rows.start)
        operator = ReducedOperator.from_gram(gram, rank=params.rank, n_features=data.shape[1], dtype=store.dtype,
                                             valid=np.isfinite(np.diag(gram)), resolve=RESOLVED)
        return operator, spectra
    return ReducedOperator.from_data(data, rank=params.rank, dtype=store.dtype), spectra


def _layer(store: RunStore, entry: ParamEntry, gram: np.ndarray, params: DMDParams) -> LayerSpectrum | None:
    """One layer's spectrum (None for a layer that does not move or is not finite)."""
    trace = np.trace(gram)
    if not np.isfinite(trace) or trace <= 0:
        return None
    try:
        # a layer's spectrum reports no rounding errors: no residual to measure
        op = ReducedOperator.from_gram(gram, rank=params.rank, n_features=entry.size, dtype=store.dtype,
                                       estimate_errors=False)
    except RankUnavailableError:  # a layer with fewer directions than the rank asked: its own rank
        op = ReducedOperator.from_gram(gram, rank="auto", n_features=entry.size, dtype=store.dtype,
                                       estimate_errors=False)
    assert op.amplitudes is not None
    return LayerSpectrum(entry.name, entry.size, op.rank, op.eigenvalues, op.amplitudes, tuple(op.classes(params.eps)))


def _from_range_finder(store: RunStore, engine: Engine, rows: slice, entries: list[ParamEntry], params: DMDParams,
                       progress: Progress | None) -> ReducedOperator:
    """The window's operator from the randomized range finder (long windows; rank "auto" by the tail rule)."""
    if params.per_layer or params.drop_nonfinite:
        raise ParameterError("per_layer" if params.per_layer else "drop_nonfinite",
                             f"needs the Gram method (windows of at most {params.max_gram} snapshots)")
    operator = randomized_operator(engine, store, params.rank, rows=rows, columns=[e.columns for e in entries],
                                   n_iter=params.n_iter, random_state=params.random_state, dtype=store.dtype,
                                   max_width=params.memory_bytes // (SKETCH_COPIES * 8 * (rows.stop - rows.start)),
                                   resolve=RESOLVED, progress=progress)
    if not np.isfinite(operator.gram_trace):
        raise_nonfinite(store, engine.nonfinite_rows(store, rows=rows))
    return operator


def _samples(store: RunStore, engine: Engine, rows: slice, entries: list[ParamEntry], operator: ReducedOperator,
             params: DMDParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A few coordinates, spread over the selected layers: their trajectories and DMD reconstruction."""
    rng = np.random.default_rng(params.random_state)
    # positions drawn in the selected layers' columns laid end to end (= choice over their concatenated
    # indices, the same draws), mapped to coordinates without an N-long index array
    sizes = np.array([e.size for e in entries], dtype=np.int64)
    ends = np.cumsum(sizes)
    drawn = rng.choice(int(ends[-1]), size=min(params.n_samples, int(ends[-1])), replace=False)
    layer = np.searchsorted(ends, drawn, side="right")
    offsets = np.array([e.offset for e in entries], dtype=np.int64)
    picks = np.sort(offsets[layer] + drawn - (ends - sizes)[layer])
    trajectories = engine.collect(store, picks, rows=rows)
    n_window = rows.stop - rows.start
    with np.errstate(over="ignore", invalid="ignore"):
        # Φ's rows of these coordinates come from the snapshots C spans (with delays, the first T+1-d: the delay-0 block)
        spanned = operator.coefficients.shape[0] if operator.coefficients is not None else n_window
        reconstruction = operator.reconstruct(trajectories[:spanned],
                                              np.arange(n_window + params.forecast))
    bad = np.flatnonzero(~np.isfinite(reconstruction).all(axis=1))
    if bad.size:
        # an unstable mode (|λ| > 1) grows without bound: far enough ahead λᵏ leaves float64
        safe = max(0, int(bad[0]) - n_window)
        top = float(np.abs(operator.eigenvalues).max())
        raise ParameterError("forecast", f"{params.forecast} overflows: the mode with |λ| = {top:.6g} grows past "
                                         f"float64 after {safe} snapshot(s) beyond the window; forecast at most {safe}")
    return picks, trajectories, reconstruction


def coordinate_name(store: RunStore, index: int) -> str:
    """``layer[i, j]`` for a coordinate of θ."""
    for e in store.layout.entries:
        if e.offset <= index < e.stop:
            local = np.unravel_index(index - e.offset, e.shape) if e.shape else ()
            return f"{e.name}[{', '.join(str(int(i)) for i in local)}]"
    return f"θ[{index}]"


def save_modes(result: DMDResult, store: RunStore, path: str | os.PathLike[str], *, engine: Engine | None = None,
               progress: Progress | None = None) -> str:
    """Write the N×r exact DMD modes Φ = D C to a Zarr array at ``path`` (a second pass); read it back with
    :func:`traj.store.derived.read_modes`."""
    from ..store.derived import create_modes

    engine = engine or Engine()
    coefficients = result.operator.coefficients
    if coefficients is None:
        raise NotApplicableError("this operator has no modes over the store's coordinates")
    lo, hi = result.window
    entries = store.layout.select(result.layers) if result.layers else list(store.layout.entries)
    n = sum(e.size for e in entries)
    r = result.rank
    chunk_rows = max(1, min(n, (8 << 20) // (16 * r)))
    modes = create_modes(path, (n, r), (chunk_rows, r), {
        "eigenvalues": complex_pairs(result.eigenvalues), "window": list(result.window),
        "layers": list(result.layers) if result.layers else None, "store": result.store})
    offset = 0
    for e in entries:
        # with delays Φ's delay-0 block: C spans the first T+1-d snapshots
        for cols, part in engine.project_blocks(store, coefficients, rows=slice(lo, lo + coefficients.shape[0]),
                                                columns=e.columns,
                                                progress=progress):
            a = offset + cols.start - e.offset
            modes[a : a + part.shape[0]] = part
        offset += e.size
    return str(path)


# ---------------------------------------------------------------------- DMD as a model of training (issue 17 item 2)
#: DMD-reconstructed θ's scored by :func:`evaluate_dmd` are written to scratch files (float32) before scoring:
#: at most this many bytes of them.
MAX_EVAL_BYTES = 2 << 30


@dataclass(frozen=True)
class DMDEvaluation:
    """The recipe's metrics of the original weights and of DMD-reconstructed weights at several ranks
    (Turjeman et al. 2022 figs. 1, 5, 22: DMD as a model of training, beside CMD's :class:`~traj.analysis.cmd.CMDEvaluation`).

    ``snapshots``/``steps``: the store snapshots scored inside the window; ``reconstructed[i]`` the
    metrics of θ̂_k = Re Σ_j b_j λ_j^k φ_j at rank ``ranks[i]`` (b = Φ⁺θ₀); ``motion_errors[i]`` its
    ‖D − D̂‖F / ‖D − mean_k D‖F (the share of the motion missed). ``forecast_offsets`` (snapshots past
    the window's end) and ``forecast[i]`` the metrics of the same expansion extrapolated;
    ``forecast_original`` the recorded run's there where the store holds those snapshots (else NaN).
    ``data_norm`` = ‖D‖F and ``motion_norm`` = ‖D − mean_k D‖F of the window (from its Gram).
    """

    window: tuple[int, int]
    snapshots: np.ndarray
    steps: np.ndarray
    original: Mapping[str, np.ndarray]
    ranks: tuple[int, ...]
    reconstructed: tuple[Mapping[str, np.ndarray], ...]
    motion_errors: np.ndarray
    forecast_offsets: np.ndarray
    forecast: tuple[Mapping[str, np.ndarray], ...]
    forecast_original: Mapping[str, np.ndarray]
    data_norm: float = float("nan")
    motion_norm: float = float("nan")

    @property
    def metric(self) -> str:
        """The metric drawn: accuracy when the recipe measures it, else loss."""
        return "accuracy" if "accuracy" in self.original else "loss"

    def to_dataframe(self) -> Any:
        """One row per scored snapshot of the window, by step (pandas): each metric of the original weights
        (``original_loss``, ...) and of the reconstruction at each rank (``rank5_loss``, ...)."""
        from ..tables import dataframe

        n = self.snapshots.size
        columns: dict[str, Any] = {"step": self.steps, "snapshot": self.snapshots}
        columns.update({f"original_{name}": values for name, values in self.original.items()})
        for rank, metrics in zip(self.ranks, self.reconstructed, strict=True):
            columns.update({f"rank{rank}_{name}": np.asarray(values)[:n] for name, values in metrics.items()})
        return dataframe(columns, index="step")

    def to_dict(self) -> dict[str, Any]:
        def listed(metrics: Mapping[str, np.ndarray]) -> dict[str, list[float | None]]:
            return {name: [float(x) if np.isfinite(x) else None for x in v] for name, v in metrics.items()}

        return {
            "window": list(self.window), "snapshots": self.snapshots.tolist(), "steps": self.steps.tolist(),
            "original": listed(self.original), "ranks": list(self.ranks),
            "reconstructed": [listed(m) for m in self.reconstructed], "motion_errors": self.motion_errors.tolist(),
            "forecast_offsets": self.forecast_offsets.tolist(), "forecast": [listed(m) for m in self.forecast],
            "forecast_original": listed(self.forecast_original),
        }


def evaluate_dmd(store: RunStore | str | os.PathLike[str], recipe: Any, *, ranks: Sequence[int] = (5, 10, 20),
                 window: Window = None, max_points: int = 40, forecast: int = 0, engine: Engine | None = None,
                 progress: Progress | None = None) -> DMDEvaluation:
    """Score the recipe's metrics on DMD-reconstructed weights at several ranks, and on the forecast.

    One Gram pass gives every rank's operator (a rank above what the window resolves is reduced to
    it, as KGA does); since Φ = D C and D is real, θ̂ at any snapshot k is D · Re(C diag(b) λ^k), so
    every rank's every scored snapshot (up to ``max_points`` in the window, the last included, and up
    to ``max_points`` of the ``forecast`` snapshots past it) comes from ONE D·W pass with a real
    (T+1)×K matrix W. The θ̂ are then scored one by one with ``recipe.evaluate``.

    ``progress(done, total)`` counts the blocks of the Gram pass, then the recipe's evaluations.
    """
    store = store if isinstance(store, RunStore) else RunStore(store)
    engine = engine or Engine()
    ranks = tuple(check_ints("ranks", ranks, low=1))
    max_points = check_int("eval_points", max_points, low=1)
    forecast = check_int("forecast", forecast, low=0, high=MAX_FORECAST)
    lo, hi = resolve_window(store, window, spaced=True)
    check_even_spacing(store, lo, hi)
    rows = slice(lo, hi + 1)
    n_window = hi - lo + 1
    data = None
    if n_window * store.n_params * 8 <= IN_MEMORY_BYTES:  # as fit_dmd: an SVD of the data where the window fits
        data = engine.collect(store, slice(0, store.n_params), rows=rows, progress=progress)
        with np.errstate(invalid="ignore", over="ignore"):
            gram = data @ data.T
    else:
        gram = engine.gram(store, rows=rows, groups={"all": [slice(0, store.n_params)]}, progress=progress)["all"]
    check_gram_finite(gram, store, lo)
    inside = np.unique(np.linspace(n_window - 1, 0, min(max_points, n_window)).round().astype(int))
    ahead = (np.unique(np.linspace(n_window, n_window - 1 + forecast, min(max_points, forecast)).round().astype(int))
             if forecast else np.zeros(0, dtype=int))
    times = np.concatenate([inside, ahead])
    operators, columns = [], []
    for rank in ranks:
        op = (ReducedOperator.from_data(data, rank=rank, dtype=store.dtype, excess="reduce") if data is not None else
              ReducedOperator.from_gram(gram, rank=rank, n_features=store.n_params, dtype=store.dtype, excess="reduce"))
        if any(o.rank == op.rank for o in operators):
            continue  # reduced to a rank already scored: score it once
        assert op.coefficients is not None and op.amplitudes is not None
        with np.errstate(over="ignore", invalid="ignore"):
            w = np.real(op.coefficients @ (op.amplitudes[:, None] * op.vandermonde(times - op.start)))
        if not np.isfinite(w).all():
            raise ParameterError("forecast", f"{forecast} overflows at rank {op.rank}: a mode with |λ| = "
                                             f"{np.abs(op.eigenvalues).max():.6g} leaves float64; forecast less")
        operators.append(op)
        columns.append(w)
    weights = np.concatenate(columns, axis=1)  # (T+1, n_ranks·K)
    if (need := weights.shape[1] * store.n_params * 4) > MAX_EVAL_BYTES:
        raise DataLimitError("eval_points", f"the {weights.shape[1]} reconstructed θ's need {need / 2**30:.1f} GiB "
                                            f"(limit {MAX_EVAL_BYTES / 2**30:.0f} GiB): fewer points or ranks")
    # the θ̂ go to scratch files (float32, as they are scored) block by block, and are read back one at a time
    thetas = ScratchArrays(store.n_params)
    try:
        return _scored_evaluation(store, recipe, engine, gram, operators, weights, thetas, lo, hi, inside, ahead,
                                  times, progress)
    finally:
        thetas.close()


def _scored_evaluation(store: RunStore, recipe: Any, engine: Engine, gram: np.ndarray,
                       operators: list[ReducedOperator], weights: np.ndarray, thetas: ScratchArrays, lo: int, hi: int,
                       inside: np.ndarray, ahead: np.ndarray, times: np.ndarray,
                       progress: Progress | None) -> DMDEvaluation:
    """:func:`evaluate_dmd` from its D·W pass on: θ̂_j = column j of D·W, written to ``thetas`` and scored."""
    rows = slice(lo, hi + 1)
    n_window = hi - lo + 1
    names = [f"theta{j}" for j in range(weights.shape[1])]
    for name in names:
        thetas.create(name, np.float32)
    for cols, part in engine.project_blocks(store, weights, rows=rows, progress=progress):
        for j, name in enumerate(names):
            thetas.write(name, cols.start, part[:, j])

    recorded = int((lo + ahead < store.n_snapshots).sum())
    tick = counter(progress, inside.size + recorded + len(operators) * times.size)  # the recipe's evaluations

    def scored(theta: np.ndarray, into: dict[str, list[float]]) -> None:
        for name, value in recipe.evaluate(np.asarray(theta).astype(store.dtype)).items():
            into.setdefault(name, []).append(float(value))
        tick()

    original: dict[str, list[float]] = {}
    for k in inside:
        scored(engine.snapshot(store, lo + int(k)), original)
    recorded_ahead: dict[str, list[float]] = {name: [] for name in original}
    for k in ahead:
        if lo + int(k) < store.n_snapshots:
            scored(engine.snapshot(store, lo + int(k)), recorded_ahead)
        else:
            for values in recorded_ahead.values():
                values.append(float("nan"))
    rebuilt, extrapolated = [], []
    for i in range(len(operators)):
        inner: dict[str, list[float]] = {}
        outer: dict[str, list[float]] = {name: [] for name in original} if ahead.size else {}
        for j in range(times.size):
            scored(thetas.read(names[i * times.size + j]), inner if j < inside.size else outer)
        rebuilt.append({k: np.array(v) for k, v in inner.items()})
        extrapolated.append({k: np.array(v) for k, v in outer.items()})
    # ‖D − D̂‖² from the operator (relative to ‖D‖²); ‖D − mean‖² = tr G − 1ᵀG1/(T+1)
    motion = np.trace(gram) - gram.sum() / n_window
    errors = np.array([op.reconstruction_error() * np.sqrt(np.trace(gram) / motion) if motion > 0 else 0.0
                       for op in operators])
    return DMDEvaluation(
        window=(lo, hi), snapshots=lo + inside, steps=store.steps[lo + inside],
        original={k: np.array(v) for k, v in original.items()}, ranks=tuple(op.rank for op in operators),
        reconstructed=tuple(rebuilt), motion_errors=errors, forecast_offsets=ahead - (n_window - 1),
        forecast=tuple(extrapolated), forecast_original={k: np.array(v) for k, v in recorded_ahead.items()},
        data_norm=float(np.sqrt(np.trace(gram))), motion_norm=float(np.sqrt(max(motion, 0.0))),
    )
