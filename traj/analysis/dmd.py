"""``traj dmd``: the Koopman spectrum of a recorded trajectory by streaming exact DMD (methods.md §1).

One pass over the store gives the Gram matrix of the window (and of every layer, with
``per_layer``); eigenvalues, amplitudes, reconstruction error and forecasts then come from
small matrices. Modes are materialised (a second pass, D·C) only when asked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..checks import check_choice, check_float, check_int, check_seed
from ..engine import Engine, ReducedOperator
from ..engine.operator import check_rank
from ..engine.randomized import randomized_operator
from ..errors import ParameterError, RankUnavailableError, TrajError
from ..store import RunStore

__all__ = ["DMDResult", "LayerSpectrum", "check_gram_finite", "dmd", "parse_window", "save_modes"]

ProgressCallback = Callable[[int, int], None]
#: Above this many snapshots in a window, "auto" uses the randomized range finder (methods.md §1).
MAX_GRAM_SNAPSHOTS = 20_001
#: Snapshots a forecast may reach past the window (the sampled coordinates only; r x K numbers).
MAX_FORECAST = 100_000
#: Power iterations of the randomized range finder (each one reads the data twice; Halko et al. use q <= 2-7).
MAX_POWER_ITERATIONS = 50


def parse_window(text: str | Sequence[int] | None, n_snapshots: int) -> tuple[int, int]:
    """A window ``"a:b"`` of snapshot indices, both ends included (methods.md: θa … θb).

    Either end may be omitted (``"10:"``, ``":50"``) or negative (counted from the end).
    """
    if text is None:
        return 0, n_snapshots - 1
    if isinstance(text, str):
        lo_text, sep, hi_text = text.partition(":")
        if not sep:
            raise ParameterError("window", f"must look like a:b (snapshot indices, both included), got {text!r}")
        try:
            lo = int(lo_text) if lo_text.strip() else 0
            hi = int(hi_text) if hi_text.strip() else n_snapshots - 1
        except ValueError:
            raise ParameterError("window", f"must look like a:b with integers, got {text!r}") from None
    else:
        try:
            lo, hi = (check_int("window", x) for x in text)
        except (TypeError, ValueError):
            raise ParameterError("window", f"must be 'a:b' or a pair of integers, got {text!r}") from None
    given = (lo, hi)
    lo = lo + n_snapshots if lo < 0 else lo
    hi = hi + n_snapshots if hi < 0 else hi
    if not (0 <= lo < n_snapshots and 0 <= hi < n_snapshots):
        raise ParameterError("window", f"{given[0]}:{given[1]} lies outside the run's snapshots 0:{n_snapshots - 1}")
    if hi - lo + 1 < 3:
        raise ParameterError("window", f"{given[0]}:{given[1]} holds {max(0, hi - lo + 1)} snapshot(s); "
                                       "DMD needs at least 3")
    return lo, hi


@dataclass(frozen=True)
class LayerSpectrum:
    """The DMD spectrum of one layer's coordinates over the same window."""

    name: str
    n_params: int
    rank: int
    eigenvalues: np.ndarray
    amplitudes: np.ndarray
    classes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_params": self.n_params,
            "rank": self.rank,
            "eigenvalues": _pairs(self.eigenvalues),
            "abs_eigenvalues": np.abs(self.eigenvalues).tolist(),
            "amplitudes": _pairs(self.amplitudes),
            "classes": self.classes,
        }


@dataclass(frozen=True)
class DMDResult:
    """Exact DMD of a store's window.

    ``sample_*`` hold a few coordinates' recorded trajectories, their DMD reconstruction and
    forecast, for the report's plot.
    """

    store: str
    operator: ReducedOperator
    window: tuple[int, int]
    steps: np.ndarray
    dt: float
    eps: float
    n_params: int
    layers: list[str] | None
    reconstruction_error: float
    backend: str
    seconds: float
    forecast_steps: int
    sample_indices: np.ndarray
    sample_names: list[str]
    sample_trajectories: np.ndarray
    sample_reconstruction: np.ndarray
    per_layer: list[LayerSpectrum] = field(default_factory=list)
    modes_path: str | None = None

    @property
    def rank(self) -> int:
        return self.operator.rank

    @property
    def eigenvalues(self) -> np.ndarray:
        return self.operator.eigenvalues

    @property
    def amplitudes(self) -> np.ndarray:
        return self.operator.amplitudes

    @property
    def classes(self) -> list[str]:
        return self.operator.classes(self.eps)

    @property
    def n_snapshots(self) -> int:
        return self.window[1] - self.window[0] + 1

    def to_dict(self) -> dict[str, Any]:
        op = self.operator
        rates = op.rates(self.dt)
        return {
            "store": self.store,
            "rank": op.rank,
            "rank_threshold": op.threshold,
            "singular_values": op.singular_values.tolist(),
            "eigenvalues": _pairs(op.eigenvalues),
            "abs_eigenvalues": np.abs(op.eigenvalues).tolist(),
            # log λ is undefined at λ = 0 (a mode gone after one step): null there
            "rates_per_step": [pair if np.isfinite(rate) else None for pair, rate in zip(_pairs(rates), rates, strict=True)],
            "classes": self.classes,
            "class_counts": {c: self.classes.count(c) for c in ("neutral", "stable", "unstable")},
            "eps": self.eps,
            "amplitudes": _pairs(op.amplitudes),
            "reconstruction_error": self.reconstruction_error,
            "n_params": self.n_params,
            "n_snapshots": self.n_snapshots,
            "window": list(self.window),
            "steps": [int(self.steps[0]), int(self.steps[-1])],
            "snapshot_spacing_steps": self.dt,
            "layers": self.layers,
            "backend": self.backend,
            "seconds": self.seconds,
            "forecast_steps": self.forecast_steps,
            "per_layer": [layer.to_dict() for layer in self.per_layer],
            "modes": self.modes_path,
        }


def _pairs(values: np.ndarray) -> list[list[float]]:
    values = np.asarray(values, dtype=np.complex128)
    return [[float(v.real), float(v.imag)] for v in values]


def dmd(
    store: RunStore | str,
    *,
    rank: int | str | None = "auto",
    window: str | Sequence[int] | None = None,
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
    progress: ProgressCallback | None = None,
) -> DMDResult:
    """Exact DMD of a store's trajectory over a window (methods.md §1).

    Parameters
    ----------
    store : RunStore or path
    rank : int or "auto"
        Modes kept; "auto" uses the Gavish–Donoho threshold.
    window : "a:b" or (a, b), optional
        Snapshot indices, both included (default the whole run).
    layers : list of str, optional
        Restrict the observable to these parameter tensors (default all of θ).
    per_layer : bool
        Also decompose every layer on its own (its Gram comes from the same pass).
    eps : float
        Tolerance of the neutral class.
    forecast : int
        Snapshots to forecast past the window for the sampled coordinates.
    engine : Engine, optional
        Backend of the streaming pass (default numpy).
    drop_nonfinite : bool
        Skip snapshots holding NaN/Inf (every pair touching one leaves XᵀX and XᵀY) instead of
        refusing the window; found from the Gram's diagonal, no extra pass.
    method : {"auto", "gram", "randomized"}
        "gram" forms the (T+1)² Gram in one pass; "randomized" uses the randomized range
        finder (n_iter + 3 passes, a few T×(r+10) matrices); "auto" picks "gram" up to
        ``max_gram`` snapshots.
    """
    t0 = time.perf_counter()
    rank = check_rank(rank)
    eps = check_float("eps", eps, low=0)
    forecast = check_int("forecast", forecast, low=0, high=MAX_FORECAST)
    n_samples = check_int("n_samples", n_samples, low=1, high=1000)
    method = check_choice("method", method, ("auto", "gram", "randomized"))
    max_gram = check_int("max_gram", max_gram, low=3)
    n_iter = check_int("n_iter", n_iter, low=0, high=MAX_POWER_ITERATIONS)
    random_state = check_seed("random_state", random_state)
    store = store if isinstance(store, RunStore) else RunStore(store)
    engine = engine or Engine()
    if store.n_snapshots < 3:
        raise TrajError(f"{store.path}: {store.n_snapshots} snapshot(s); DMD needs at least 3")
    lo, hi = parse_window(window, store.n_snapshots)
    rows = slice(lo, hi + 1)
    entries = store.layout.select(layers) if layers else list(store.layout.entries)
    columns = [e.columns for e in entries]
    n_features = sum(e.size for e in entries)
    if method == "auto":
        method = "gram" if hi - lo + 1 <= max_gram else "randomized"
    grams: dict[str, np.ndarray] = {}
    if method == "gram":
        groups: dict[str, list[slice]] = {"__all__": columns}
        if per_layer:
            for e in entries:
                groups[e.name] = [e.columns]
        grams = engine.gram(store, rows=rows, groups=groups, progress=progress)
        finite = np.isfinite(np.diag(grams["__all__"]))
        if finite.all() or not drop_nonfinite:
            check_gram_finite(grams["__all__"], store, lo)
            operator = ReducedOperator.from_gram(grams["__all__"], rank=rank, n_features=n_features,
                                                 dtype=store.dtype)
        else:
            operator = ReducedOperator.from_gram(grams["__all__"], rank=rank, n_features=n_features,
                                                 dtype=store.dtype, valid=finite)
    else:
        if not isinstance(rank, int):
            raise TrajError(
                f"the window holds {hi - lo + 1} snapshots, too many for a Gram (max {max_gram}); the randomized "
                "range finder needs an explicit --rank"
            )
        if per_layer or drop_nonfinite:
            raise TrajError(f"--per-layer and --drop-nonfinite need the Gram method (at most {max_gram} snapshots)")
        operator = randomized_operator(engine, store, rank, rows=rows, columns=columns, n_iter=n_iter,
                                       random_state=random_state, dtype=store.dtype, progress=progress)
        if not np.isfinite(operator.gram_trace):
            bad = store.nonfinite_rows(rows=rows)
            _raise_nonfinite(store, bad)
    error = operator.reconstruction_error()

    spectra = []
    for e in entries if per_layer else []:
        layer_rank: int | str = "auto" if rank in (None, "auto") else rank
        g = grams[e.name]
        if not np.isfinite(np.trace(g)) or np.trace(g) <= 0:
            continue
        try:
            op = ReducedOperator.from_gram(g, rank=layer_rank, n_features=e.size, dtype=store.dtype)
        except RankUnavailableError:  # a layer with fewer directions than the rank asked: its own rank
            op = ReducedOperator.from_gram(g, rank="auto", n_features=e.size, dtype=store.dtype)
        spectra.append(LayerSpectrum(e.name, e.size, op.rank, op.eigenvalues, op.amplitudes, op.classes(eps)))

    # A few coordinates to show beside their reconstruction: spread over the selected layers.
    rng = np.random.default_rng(random_state)
    pool = np.concatenate([np.arange(c.start, c.stop) for c in columns])
    picks = np.sort(rng.choice(pool, size=min(n_samples, pool.size), replace=False))
    traj_block = store.read(rows=rows, columns=picks).astype(np.float64)
    times = np.arange(hi - lo + 1 + forecast)
    with np.errstate(over="ignore", invalid="ignore"):
        recon = operator.reconstruct(traj_block, times)
    _check_forecast(recon, operator, hi - lo + 1, forecast)
    names = [_coordinate_name(store, int(i)) for i in picks]
    steps = store.steps[lo : hi + 1]
    dt = float(np.median(np.diff(steps))) if steps.size > 1 else 1.0
    return DMDResult(
        store=str(store.path),
        operator=operator,
        window=(lo, hi),
        steps=steps,
        dt=dt if dt > 0 else 1.0,
        eps=eps,
        n_params=n_features,
        layers=[e.name for e in entries] if layers else None,
        reconstruction_error=error,
        backend=engine.label,
        seconds=time.perf_counter() - t0,
        forecast_steps=forecast,
        sample_indices=picks,
        sample_names=names,
        sample_trajectories=traj_block,
        sample_reconstruction=recon,
        per_layer=spectra,
    )


def _check_forecast(recon: np.ndarray, operator: ReducedOperator, n_window: int, forecast: int) -> None:
    """An unstable mode (|λ| > 1) grows without bound: far enough ahead, λᵏ leaves float64 and the
    forecast is not a number. Known only once the eigenvalues are; the error says how far is safe."""
    bad = np.flatnonzero(~np.isfinite(recon).all(axis=1))
    if bad.size:
        safe = max(0, int(bad[0]) - n_window)
        top = float(np.abs(operator.eigenvalues).max())
        raise ParameterError("forecast", f"{forecast} overflows: the mode with |λ| = {top:.6g} grows past float64 "
                                         f"after {safe} snapshot(s) beyond the window; forecast at most {safe}")


def check_gram_finite(gram: np.ndarray, store: RunStore, offset: int) -> None:
    """A NaN/Inf anywhere in snapshot k makes G[k, k] non-finite: found without another pass.

    ``offset`` is the window's first snapshot; the error names the first bad snapshot and its step.
    """
    _raise_nonfinite(store, np.flatnonzero(~np.isfinite(np.diag(gram))) + offset)


def _raise_nonfinite(store: RunStore, bad: np.ndarray) -> None:
    if bad.size:
        k = int(bad[0])
        raise TrajError(
            f"{store.path.name}: snapshot {k} (step {int(store.steps[k])}) holds NaN or Inf; "
            f"{bad.size} snapshot(s) in the window are not finite"
        )


def _coordinate_name(store: RunStore, index: int) -> str:
    for e in store.layout.entries:
        if e.offset <= index < e.stop:
            local = np.unravel_index(index - e.offset, e.shape) if e.shape else ()
            return f"{e.name}[{', '.join(str(int(i)) for i in local)}]"
    return f"θ[{index}]"


def save_modes(result: DMDResult, store: RunStore, path: Any, *, engine: Engine | None = None,
               progress: ProgressCallback | None = None) -> str:
    """Write the N×r exact DMD modes Φ = D C to a Zarr array at ``path`` (a second pass)."""
    import zarr

    engine = engine or Engine()
    lo, hi = result.window
    entries = store.layout.select(result.layers) if result.layers else list(store.layout.entries)
    n = sum(e.size for e in entries)
    r = result.rank
    chunk_rows = max(1, min(n, (8 << 20) // (16 * r)))
    modes = zarr.create_array(str(path), shape=(n, r), chunks=(chunk_rows, r), dtype="complex128",
                              dimension_names=("param", "mode"), overwrite=True)
    modes.attrs.update({"eigenvalues": _pairs(result.eigenvalues), "window": list(result.window),
                        "layers": result.layers, "store": result.store})
    offset = 0
    for e in entries:
        for cols, part in engine.project_blocks(store, result.operator.coefficients, rows=slice(lo, hi + 1),
                                                columns=e.columns, progress=progress):
            a = offset + cols.start - e.offset
            modes[a : a + part.shape[0]] = part
        offset += e.size
    return str(path)
