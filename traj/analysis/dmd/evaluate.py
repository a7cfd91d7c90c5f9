"""DMD as a model of training (Turjeman et al. 2022 figs. 1, 5, 22): the weights DMD reconstructs at
several ranks, and its forecast, scored by an :class:`~traj.analysis.evaluator.Evaluator`.

Apart from the fit: :func:`evaluate_fit` takes a fitted :class:`~traj.analysis.dmd.DMDResult` (its window,
its method, its operator where a rank asked is the fit's) and returns its own frozen :class:`DMDEvaluation`;
:func:`evaluate_dmd` does the same from a store and a window, without a fit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...engine import Engine, ReducedOperator
from ...errors import DataLimitError, ParameterError
from ...options import Params, integer, integers
from ...progress import Progress, counter
from ...store import RunStore
from ..evaluator import Evaluator
from ..scratch import ScratchArrays
from ..windows import Window, check_even_spacing, check_gram_finite, resolve_window
from .params import IN_MEMORY_BYTES, MAX_FORECAST
from .result import DMDResult

#: DMD-reconstructed θ's scored by :func:`evaluate_fit` are written to scratch files (float32) before scoring:
#: at most this many bytes of them.
MAX_EVAL_BYTES = 2 << 30


@dataclass(frozen=True)
class DMDEvaluationParams(Params):
    """The options of DMD's evaluation (``traj dmd --evaluate``), each checked when the class is built."""

    ranks: tuple[int, ...] = integers((5, 10, 20), low=1, empty=False, help="Ranks scored by --evaluate (each reduced to what "
                                                                "the window resolves).")
    eval_points: int = integer(40, low=1, help="Snapshots scored by --evaluate (in the window, and in the forecast).")


@dataclass(frozen=True)
class WindowData:
    """A window as a fit read it, for the evaluation to reuse: its (T+1)×N snapshots (float64, the svd path)
    or only its (T+1)² Gram DᵀD (the gram path)."""

    window: tuple[int, int]
    data: np.ndarray | None = None
    gram: np.ndarray | None = None

    @property
    def source(self) -> str:
        return "svd" if self.data is not None else "gram"


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
        from ...tables import dataframe

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


def evaluate_fit(result: DMDResult, store: RunStore | str | os.PathLike[str], evaluator: Evaluator,
                 params: DMDEvaluationParams | None = None, *, engine: Engine | None = None,
                 progress: Progress | None = None, window_data: WindowData | None = None) -> DMDEvaluation:
    """Score ``evaluator``'s metrics on the weights the fitted DMD ``result`` reconstructs at ``params.ranks``,
    and on its forecast (``result.forecast_steps`` snapshots past the window).

    The fit's window and method are reused (an svd fit's window is read into memory again, a gram or randomized
    fit's Gram is formed), and its operator serves the rank it kept; ``window_data`` (what the fit read,
    :func:`~traj.analysis.dmd.run_dmd` passes it) saves that read. The fit must cover every weight without delays.
    """
    store = store if isinstance(store, RunStore) else RunStore(store)
    engine = engine or Engine()
    params = params or DMDEvaluationParams()
    if result.delays:
        raise ParameterError("delays", "cannot be given with --evaluate (it scores DMD of the weights themselves)")
    if result.layers is not None:
        raise ParameterError("layers", "cannot be given with --evaluate (it scores DMD of all the weights)")
    if window_data is None:
        in_memory = result.choice is not None and result.choice.method == "svd"
        window_data = read_window(store, engine, result.window, in_memory=in_memory, progress=progress)
    return _evaluate(store, evaluator, window_data, params.ranks, params.eval_points, result.forecast_steps, engine,
                     progress, fitted=result.operator)


def evaluate_dmd(store: RunStore | str | os.PathLike[str], evaluator: Evaluator, *,
                 ranks: Sequence[int] = (5, 10, 20), window: Window = None, max_points: int = 40, forecast: int = 0,
                 engine: Engine | None = None, progress: Progress | None = None) -> DMDEvaluation:
    """Score the evaluator's metrics on DMD-reconstructed weights at several ranks, and on the forecast, without
    a fit: the window is read into memory where its float64 copy fits :data:`IN_MEMORY_BYTES`, else its Gram.

    One read gives every rank's operator (a rank above what the window resolves is reduced to
    it, as KGA does); since Φ = D C and D is real, θ̂ at any snapshot k is D · Re(C diag(b) λ^k), so
    every rank's every scored snapshot (up to ``max_points`` in the window, the last included, and up
    to ``max_points`` of the ``forecast`` snapshots past it) comes from ONE D·W pass with a real
    (T+1)×K matrix W. The θ̂ are then scored one by one with ``evaluator.evaluate``.

    ``progress(done, total)`` counts the blocks of the read, then the evaluator's evaluations.
    """
    store = store if isinstance(store, RunStore) else RunStore(store)
    engine = engine or Engine()
    params = DMDEvaluationParams(ranks=tuple(ranks), eval_points=max_points)
    forecast = _check_forecast(forecast)
    lo, hi = resolve_window(store, window, spaced=True)
    check_even_spacing(store, lo, hi)
    in_memory = (hi - lo + 1) * store.n_params * 8 <= IN_MEMORY_BYTES
    window_data = read_window(store, engine, (lo, hi), in_memory=in_memory, progress=progress)
    return _evaluate(store, evaluator, window_data, params.ranks, params.eval_points, forecast, engine, progress)


def _check_forecast(forecast: int) -> int:
    from ...checks import check_int

    return check_int("forecast", forecast, low=0, high=MAX_FORECAST)


def read_window(store: RunStore, engine: Engine, window: tuple[int, int], *, in_memory: bool,
                progress: Progress | None = None) -> WindowData:
    """Every weight of the window: its snapshots in memory (``in_memory``), else its Gram, in one pass."""
    lo, hi = window
    rows = slice(lo, hi + 1)
    if in_memory:
        return WindowData(window, data=engine.collect(store, slice(0, store.n_params), rows=rows, progress=progress))
    gram = engine.gram(store, rows=rows, groups={"all": [slice(0, store.n_params)]}, progress=progress)["all"]
    return WindowData(window, gram=gram)


def _evaluate(store: RunStore, evaluator: Evaluator, window_data: WindowData, ranks: Sequence[int], max_points: int,
              forecast: int, engine: Engine, progress: Progress | None,
              fitted: ReducedOperator | None = None) -> DMDEvaluation:
    """The operators at ``ranks`` (``fitted`` where it is one of them) from ``window_data``, their θ̂ by one D·W
    pass, and the scores."""
    lo, hi = window_data.window
    n_window = hi - lo + 1
    data, gram = window_data.data, window_data.gram
    if gram is None:
        with np.errstate(invalid="ignore", over="ignore"):
            gram = data @ data.T
    check_gram_finite(gram, store, lo)
    inside = np.unique(np.linspace(n_window - 1, 0, min(max_points, n_window)).round().astype(int))
    ahead = (np.unique(np.linspace(n_window, n_window - 1 + forecast, min(max_points, forecast)).round().astype(int))
             if forecast else np.zeros(0, dtype=int))
    times = np.concatenate([inside, ahead])
    operators, columns = [], []
    for rank in ranks:
        if fitted is not None and fitted.rank == rank and fitted.source == window_data.source:
            op = fitted  # the fit's own operator: the same numbers, no second decomposition
        elif data is not None:
            op = ReducedOperator.from_data(data, rank=rank, dtype=store.dtype, excess="reduce")
        else:
            op = ReducedOperator.from_gram(gram, rank=rank, n_features=store.n_params, dtype=store.dtype,
                                           excess="reduce")
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
    del data, window_data  # the θ̂ pass below needs only W
    weights = np.concatenate(columns, axis=1)  # (T+1, n_ranks·K)
    if (need := weights.shape[1] * store.n_params * 4) > MAX_EVAL_BYTES:
        raise DataLimitError("eval_points", f"the {weights.shape[1]} reconstructed θ's need {need / 2**30:.1f} GiB "
                                            f"(limit {MAX_EVAL_BYTES / 2**30:.0f} GiB): fewer points or ranks")
    # the θ̂ go to scratch files (float32, as they are scored) block by block, and are read back one at a time
    thetas = ScratchArrays(store.n_params)
    try:
        return _scored_evaluation(store, evaluator, engine, gram, operators, weights, thetas, lo, hi, inside, ahead,
                                  times, progress)
    finally:
        thetas.close()


def _scored_evaluation(store: RunStore, evaluator: Evaluator, engine: Engine, gram: np.ndarray,
                       operators: list[ReducedOperator], weights: np.ndarray, thetas: ScratchArrays, lo: int, hi: int,
                       inside: np.ndarray, ahead: np.ndarray, times: np.ndarray,
                       progress: Progress | None) -> DMDEvaluation:
    """:func:`_evaluate` from its D·W pass on: θ̂_j = column j of D·W, written to ``thetas`` and scored."""
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
        for name, value in evaluator.evaluate(np.asarray(theta).astype(store.dtype)).items():
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
