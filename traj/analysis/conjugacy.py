"""``traj conjugacy``: are two training runs the same dynamics? (methods.md §4, seed 002)

Topologically conjugate systems share Koopman eigenvalues. For each run: the Koopman
eigenvalues of an observable over a window (exact DMD, §1), optionally with d time delays
(Hankel DMD) and with several trajectories of one system stacked; then the Wasserstein
distance W1 between every pair of eigenvalue sets (POT ``ot.emd2``, uniform mass, cost
|λ − μ|). A verdict needs a null: the distances between runs that differ only in seed.

Two ways to the spectrum, same numbers: a large observable (all weights of a network) goes
through the streaming Gram, whose delay embedding is a sum of shifted diagonal sub-blocks
of G (no extra pass); a small observable (a layer, an optimiser's iterate, up to
``small_observable`` coordinates times delays + 1) is collected into memory by the engine,
where trajectories can be stacked (pairs never cross trajectories). Both go through the one
operator factory (:mod:`traj.engine.operator`): a rank above what a run resolves, or a k above
the smallest rank, is reduced and the result says so (``Spectrum.rank_note``, ``k_note``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..checks import check_float, check_int
from ..engine import Engine, ReducedOperator
from ..engine.operator import check_rank
from ..errors import ParameterError, WindowTooShortError
from ..progress import Progress
from ..store import RunStore
from .dmd import complex_pairs
from .windows import Window, check_gram_finite, parse_window, raise_nonfinite

__all__ = ["ConjugacyParams", "ConjugacyResult", "PairVerdict", "SMALL_OBSERVABLE", "Spectrum", "WindowTransitions",
           "conjugacy", "fit_conjugacy", "hankel_gram", "koopman_spectrum", "stacked_hankel", "wasserstein"]

#: Default of ``small_observable``: observables up to this many coordinates (times delays+1) are decomposed in memory.
SMALL_OBSERVABLE = 2048
Verdict = Literal["conjugate", "non-conjugate", "undetermined"]
#: What set a verdict's threshold: the null's quantile, the stated margin, or the eigenvalues' precision.
Basis = Literal["null", "margin", "tolerance"]
SpectrumMethod = Literal["memory", "gram"]


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """W1 between two eigenvalue sets as point clouds in the complex plane (uniform mass, cost |λ − μ|)."""
    import ot

    a = np.asarray(a, dtype=np.complex128).ravel()
    b = np.asarray(b, dtype=np.complex128).ravel()
    if not a.size or not b.size:
        raise ParameterError("eigenvalues", "holds an empty set: W1 needs at least one eigenvalue on each side")
    p = np.c_[a.real, a.imag]
    q = np.c_[b.real, b.imag]
    cost = ot.dist(p, q, metric="euclidean")
    return float(ot.emd2(ot.unif(len(p)), ot.unif(len(q)), cost))


# ---------------------------------------------------------------------- spectra
@dataclass(frozen=True)
class Spectrum:
    """Koopman eigenvalues of one run's observable over one window (largest modulus first).

    ``rank_requested`` is what was asked; ``rank_note`` says why fewer were kept (None when not).
    """

    run: str
    window: tuple[int, int]
    eigenvalues: np.ndarray
    rank: int
    n_observables: int
    n_trajectories: int
    delays: int
    method: SpectrumMethod
    rank_requested: int | str = "auto"
    rank_note: str | None = None


def stacked_hankel(data: np.ndarray, n_traj: int, delays: int) -> tuple[np.ndarray, np.ndarray]:
    """Snapshot pairs (X, Y) of d-delay embedded trajectories, stacked without crossing trajectories.

    data (T, n_traj·state): trajectory i is columns i·state..(i+1)·state.
    """
    t, n = data.shape
    state = n // n_traj
    xs, ys = [], []
    for i in range(n_traj):
        traj = data[:, i * state : (i + 1) * state].T  # (state, T)
        hankel = np.concatenate([traj[:, s : t - delays + s] for s in range(delays + 1)], axis=0)
        xs.append(hankel[:, :-1])
        ys.append(hankel[:, 1:])
    return np.concatenate(xs, axis=1), np.concatenate(ys, axis=1)


def hankel_gram(gram: np.ndarray, delays: int) -> np.ndarray:
    """Gram of the delay-embedded snapshots: H[j, k] = Σ_s G[j+s, k+s] (shifted diagonal sub-blocks)."""
    m = gram.shape[0] - delays
    return sum(gram[s : s + m, s : s + m] for s in range(delays + 1))


def recipe_defaults(store: RunStore) -> tuple[bool, int]:
    """(stack, delays) by default: the authors' setting for the mirror-descent case (stacked ICs, 4 delays)."""
    recipe = store.recipe or {}
    return (True, 4) if recipe.get("name") == "mirror-descent" else (False, 0)


def observable(store: RunStore, layer: str | None) -> tuple[slice, tuple[int, ...]]:
    """The columns of the observable (one layer, or all of θ) and the shape of its tensor."""
    if layer is None:
        if len(store.layout) == 1:  # one tensor: keep its shape (its first axis may index trajectories)
            return slice(0, store.n_params), store.layout.entries[0].shape
        return slice(0, store.n_params), (store.n_params,)
    entry = store.layout.select([layer])[0]
    return entry.columns, entry.shape


def window_and_delays(store: RunStore, window: Window, delays: int | None) -> tuple[int, int, int]:
    """A run's window (default: all of it) and delays (default: the recipe's), long enough for each other."""
    d = recipe_defaults(store)[1] if delays is None else check_int("delays", delays, low=0)
    if window is None:
        if store.n_snapshots < d + 3:
            raise WindowTooShortError(f"{store.path}: {store.n_snapshots} snapshot(s) are too short for {d} delays "
                                      f"(DMD needs at least {d + 3})")
        return 0, store.n_snapshots - 1, d
    lo, hi = parse_window(window, store.n_snapshots)
    if hi - lo + 1 < d + 3:
        raise ParameterError("window", f"{lo}:{hi} of {store.path.name} is too short for {d} delays "
                                       f"(needs at least {d + 3} snapshots)")
    return lo, hi, d


def koopman_spectrum(
    store: RunStore,
    *,
    window: Window = None,
    layer: str | None = None,
    stack: bool | None = None,
    delays: int | None = None,
    rank: int | str | None = "auto",
    small_observable: int = SMALL_OBSERVABLE,
    engine: Engine | None = None,
    gram: np.ndarray | None = None,
    progress: Progress | None = None,
) -> Spectrum:
    """Koopman eigenvalues of a store's observable (all weights or one layer) over a window.

    ``stack`` splits the observable tensor along its first axis into independent trajectories
    of one system (default: on for mirror-descent stores, with 4 delays). ``gram`` may pass a
    precomputed Gram of exactly this window and observable. An explicit ``rank`` above the
    directions the run resolves is reduced (``Spectrum.rank_note`` says so).
    """
    stack = recipe_defaults(store)[0] if stack is None else stack
    rank = check_rank(rank)
    lo, hi, delays = window_and_delays(store, window, delays)
    cols, shape = observable(store, layer)
    n_obs = cols.stop - cols.start
    n_traj = shape[0] if stack and len(shape) > 1 else 1
    if stack and len(shape) < 2:
        raise ParameterError("stack", "needs a parameter tensor with a trajectory axis (e.g. shape (25, 2))")
    engine = engine or Engine()
    rows = slice(lo, hi + 1)
    method: SpectrumMethod
    if stack or n_obs * (delays + 1) <= small_observable:
        data = engine.collect(store, cols, rows=rows, progress=progress)
        raise_nonfinite(store, lo + np.flatnonzero(~np.isfinite(data).all(axis=1)))
        x, y = stacked_hankel(data, n_traj, delays)
        op = ReducedOperator.from_pairs(x, y, rank=rank, dtype=store.dtype, excess="reduce")
        method = "memory"
    else:
        if gram is None:
            gram = engine.gram(store, rows=rows, groups={"obs": [cols]}, progress=progress)["obs"]
        check_gram_finite(gram, store, lo)
        op = ReducedOperator.from_gram(hankel_gram(gram, delays), rank=rank, n_features=n_obs * (delays + 1),
                                       dtype=store.dtype, excess="reduce")
        method = "gram"
    return Spectrum(str(store.path), (lo, hi), op.eigenvalues, op.rank, n_obs, n_traj, delays, method,
                    op.rank_requested, op.rank_note)


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class PairVerdict:
    """Whether two runs are conjugate: their W1, the verdict and what decided it."""

    a: str
    b: str
    distance: float
    verdict: Verdict
    basis: Basis | None

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "distance": self.distance, "verdict": self.verdict, "basis": self.basis}


@dataclass(frozen=True)
class WindowTransitions:
    """W1 between the spectra of consecutive windows of one run (seed 002 fig. 4)."""

    run: str
    bounds: tuple[tuple[int, int], ...]
    steps: tuple[tuple[int, int], ...]
    k: int
    distance: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "bounds": [list(b) for b in self.bounds], "steps": [list(s) for s in self.steps],
                "k": self.k, "distance": self.distance.tolist()}


@dataclass(frozen=True)
class ConjugacyResult:
    """Distances between runs' Koopman spectra and verdicts against a seed null (methods.md §4).

    ``k`` eigenvalues of largest modulus are compared per run; ``k_requested`` is what was asked
    and ``k_note`` says why fewer were compared (None when not).
    """

    runs: tuple[str, ...]
    spectra: tuple[Spectrum, ...]
    k: int
    distance: np.ndarray
    null_runs: tuple[str, ...]
    null_distances: np.ndarray
    quantile: float
    threshold: float | None
    verdicts: tuple[PairVerdict, ...]
    windows: WindowTransitions | None
    layer: str | None
    rank: int | str | None
    seconds: float
    null_threshold: float | None = None
    margin: float = 0.0
    k_requested: int | None = None
    k_note: str | None = None

    @property
    def any_nonconjugate(self) -> bool:
        return any(v.verdict == "non-conjugate" for v in self.verdicts)

    @property
    def names(self) -> list[str]:
        """The runs' store names without ``.zarr`` (plot labels)."""
        return [os.path.basename(p).removesuffix(".zarr") for p in self.runs]

    def eigenvalues(self, i: int) -> np.ndarray:
        """The k compared eigenvalues of run ``i``."""
        return self.spectra[i].eigenvalues[: self.k]

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": list(self.runs),
            "eigenvalues": [complex_pairs(self.eigenvalues(i)) for i in range(len(self.runs))],
            "ranks": [s.rank for s in self.spectra],
            "rank_notes": [s.rank_note for s in self.spectra],
            "k": self.k,
            "k_requested": self.k_requested,
            "k_note": self.k_note,
            "distance": self.distance.tolist(),
            "null_runs": list(self.null_runs),
            "null_distances": self.null_distances.tolist(),
            "quantile": self.quantile,
            "threshold": self.threshold,
            "null_threshold": self.null_threshold,
            "margin": self.margin,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "windows": self.windows.to_dict() if self.windows else None,
            "settings": {"layer": self.layer, "rank": self.rank, "stack": [s.n_trajectories > 1 for s in self.spectra],
                         "delays": [s.delays for s in self.spectra], "method": [s.method for s in self.spectra],
                         "windows": [list(s.window) for s in self.spectra]},
            "seconds": self.seconds,
        }


# ---------------------------------------------------------------------- the analysis
@dataclass(frozen=True)
class ConjugacyParams:
    """The options of a conjugacy comparison, checked (see :func:`conjugacy` for their meaning)."""

    window: Window = None
    layer: str | None = None
    rank: int | str | None = "auto"
    k: int | None = 10
    quantile: float = 0.95
    tolerance: float = 1e-8
    margin: float = 0.0
    windows: int | None = None
    stack: bool | None = None
    delays: int | None = None
    small_observable: int = SMALL_OBSERVABLE

    @classmethod
    def checked(cls, *, window: Window = None, layer: str | None = None, rank: int | str | None = "auto",
                k: int | None = 10, quantile: float = 0.95, tolerance: float = 1e-8, margin: float = 0.0,
                windows: int | None = None, stack: bool | None = None, delays: int | None = None,
                small_observable: int = SMALL_OBSERVABLE) -> ConjugacyParams:
        return cls(
            window=window,
            layer=layer,
            rank=check_rank(rank),
            k=None if k is None else check_int("k", k, low=1),
            quantile=check_float("quantile", quantile, low=0, high=1, low_open=True),
            tolerance=check_float("tolerance", tolerance, low=0),
            margin=check_float("margin", margin, low=0),
            windows=None if windows is None else check_int("windows", windows, low=2),
            stack=None if stack is None else bool(stack),
            delays=None if delays is None else check_int("delays", delays, low=0),
            small_observable=check_int("small_observable", small_observable, low=0),
        )


def conjugacy(
    stores: Sequence[RunStore | str | os.PathLike[str]],
    *,
    window: Window = None,
    layer: str | None = None,
    rank: int | str | None = "auto",
    k: int | None = 10,
    null: Sequence[RunStore | str | os.PathLike[str]] = (),
    quantile: float = 0.95,
    tolerance: float = 1e-8,
    margin: float = 0.0,
    windows: int | None = None,
    stack: bool | None = None,
    delays: int | None = None,
    small_observable: int = SMALL_OBSERVABLE,
    engine: Engine | None = None,
    progress: Progress | None = None,
) -> ConjugacyResult:
    """Wasserstein distances between the Koopman spectra of runs, and verdicts against a seed null.

    Parameters
    ----------
    stores : runs to compare (different N is fine: only spectra are compared). One run with
        ``windows`` compares its consecutive windows instead.
    window : "a:b"
        Snapshots used in every run (must exist in all).
    rank : int or "auto"
        DMD rank of every spectrum; a run that resolves fewer directions keeps what it has and
        its spectrum says so (``rank_note``).
    k : int
        Eigenvalues of largest modulus kept per run (equal for all runs; capped by the
        smallest rank, and ``k_note`` says so). None keeps all of the smallest rank.
    null : runs that differ from the first only in seed; their pairwise distances (with the
        first run) form the null, and a pair is conjugate when its distance is within the
        null's ``quantile``.
    tolerance : distances below this count as zero (the eigenvalues' own precision), so runs
        with numerically identical spectra are conjugate whatever the null.
    margin : an equivalence margin: distances up to it are declared immaterial, whatever the
        null (0, the default, leaves the verdict to the null alone). A null built from seeds
        of a deterministic system can be far narrower than the estimator's dependence on the
        observable (OMD vs OGD: W1 0.005 against a seed spread of 1e-6), so a conjugacy that
        holds by construction can only be called with a margin the user states.
    windows : split the (first) run into this many consecutive windows and return the matrix
        of distances between their spectra (seed 002 fig. 4), from one Gram pass.
    small_observable : observables up to this many coordinates (times delays + 1) are
        decomposed in memory by an SVD; larger ones through the streamed Gram.
    """
    params = ConjugacyParams.checked(window=window, layer=layer, rank=rank, k=k, quantile=quantile,
                                     tolerance=tolerance, margin=margin, windows=windows, stack=stack, delays=delays,
                                     small_observable=small_observable)
    return fit_conjugacy(stores, params, null=null, engine=engine, progress=progress)


def fit_conjugacy(stores: Sequence[RunStore | str | os.PathLike[str]], params: ConjugacyParams, *,
                  null: Sequence[RunStore | str | os.PathLike[str]] = (), engine: Engine | None = None,
                  progress: Progress | None = None) -> ConjugacyResult:
    """Fit checked :class:`ConjugacyParams`: every run's spectrum, the distances and the verdicts."""
    t0 = time.perf_counter()
    runs = [_open(s) for s in stores]
    null_runs = [_open(s) for s in null]
    if not runs:
        raise ParameterError("stores", "is empty: give at least one run")
    if len(runs) < 2 and not params.windows:
        raise ParameterError("stores", "holds one run: give two or more runs to compare, or windows=W to compare "
                                       "windows of one run")
    # every run's window (and the windows of the first) is checked before the first spectrum
    run_windows = {id(s): window_and_delays(s, params.window, params.delays)[:2] for s in runs + null_runs}
    for s in runs + null_runs:
        observable(s, params.layer)  # an unknown layer fails here, not after the first spectra
    edges = _window_edges(runs[0], params) if params.windows else None
    engine = engine or Engine()

    def spectrum(store: RunStore) -> Spectrum:
        return koopman_spectrum(store, window=run_windows[id(store)], layer=params.layer, stack=params.stack,
                                delays=params.delays, rank=params.rank, small_observable=params.small_observable,
                                engine=engine, progress=progress)

    spectra = [spectrum(s) for s in runs]
    null_spectra = [spectrum(s) for s in null_runs]
    k, k_note = _compared(params.k, spectra + null_spectra)
    distance = _distances(spectra, k)
    family = [spectra[0], *null_spectra]
    null_distances = _distances(family, k)[np.triu_indices(len(family), 1)] if null_spectra else np.zeros(0)
    null_threshold = float(np.quantile(null_distances, params.quantile)) if null_distances.size else None
    threshold, basis = _threshold(null_threshold, params)
    verdicts = tuple(
        PairVerdict(str(runs[i].path), str(runs[j].path), float(distance[i, j]),
                    "undetermined" if threshold is None else
                    ("conjugate" if distance[i, j] <= threshold else "non-conjugate"), basis)
        for i in range(len(spectra)) for j in range(i + 1, len(spectra)))
    transitions = _window_transitions(runs[0], edges, params, engine, progress) if edges is not None else None
    return ConjugacyResult(tuple(str(r.path) for r in runs), tuple(spectra), k, distance,
                           tuple(str(r.path) for r in null_runs), null_distances, params.quantile, threshold, verdicts,
                           transitions, params.layer, params.rank, time.perf_counter() - t0,
                           null_threshold=null_threshold, margin=params.margin, k_requested=params.k, k_note=k_note)


def _open(run: RunStore | str | os.PathLike[str]) -> RunStore:
    return run if isinstance(run, RunStore) else RunStore(run)


def _compared(k: int | None, spectra: Sequence[Spectrum]) -> tuple[int, str | None]:
    """The k compared: what was asked, capped by the smallest rank (and a note saying so)."""
    smallest = min(s.rank for s in spectra)
    if k is None or k <= smallest:
        return smallest if k is None else k, None
    run = next(s.run for s in spectra if s.rank == smallest)
    return smallest, f"k {k} asked for, but {os.path.basename(run)} keeps only {smallest} eigenvalue(s): compared {smallest}"


def _distances(spectra: Sequence[Spectrum], k: int) -> np.ndarray:
    """The symmetric matrix of W1 between the k largest-modulus eigenvalues of every pair."""
    n = len(spectra)
    distance = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            distance[i, j] = distance[j, i] = wasserstein(spectra[i].eigenvalues[:k], spectra[j].eigenvalues[:k])
    return distance


def _threshold(null_threshold: float | None, params: ConjugacyParams) -> tuple[float | None, Basis | None]:
    """The verdicts' threshold: the larger of the null's quantile and the stated margin, never below the
    eigenvalues' precision, and which of them set it."""
    bounds: dict[Basis, float] = {}
    if null_threshold is not None:
        bounds["null"] = null_threshold
    if params.margin:
        bounds["margin"] = params.margin
    if not bounds:
        return None, None
    basis = max(bounds, key=bounds.__getitem__)
    if bounds[basis] < params.tolerance:
        return params.tolerance, "tolerance"
    return bounds[basis], basis


def _window_edges(store: RunStore, params: ConjugacyParams) -> np.ndarray:
    """Bounds of ``params.windows`` consecutive windows of one run, each long enough for the delays."""
    assert params.windows is not None
    lo, hi, d = window_and_delays(store, params.window, params.delays)
    count = params.windows
    most = (hi - lo + 1) // (d + 3)
    edges = np.linspace(lo, hi + 1, count + 1).round().astype(int) if count <= most else None
    if edges is None or np.min(np.diff(edges)) < d + 3:
        raise ParameterError("windows", f"{count}: windows of snapshots {lo}:{hi} would be too short "
                                        f"(each needs {d + 3} snapshots: at most {most} windows)")
    return edges


def _window_transitions(store: RunStore, edges: np.ndarray, params: ConjugacyParams, engine: Engine,
                        progress: Progress | None) -> WindowTransitions:
    """Spectra of consecutive windows of one run (bounds ``edges``) and their distance matrix (one Gram pass)."""
    lo, hi = int(edges[0]), int(edges[-1]) - 1
    stack, default_delays = recipe_defaults(store)
    d = default_delays if params.delays is None else params.delays
    cols, _ = observable(store, params.layer)
    full_gram = None
    if not (params.stack or stack) and (cols.stop - cols.start) * (d + 1) > params.small_observable:
        full_gram = engine.gram(store, rows=slice(lo, hi + 1), groups={"obs": [cols]}, progress=progress)["obs"]
    spectra = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        sub = None if full_gram is None else full_gram[a - lo : b - lo, a - lo : b - lo]
        spectra.append(koopman_spectrum(store, window=(int(a), int(b) - 1), layer=params.layer, stack=params.stack,
                                        delays=params.delays, rank=params.rank,
                                        small_observable=params.small_observable, engine=engine, gram=sub))
    k, _ = _compared(params.k, spectra)
    bounds = tuple((int(a), int(b) - 1) for a, b in zip(edges[:-1], edges[1:], strict=True))
    steps = tuple((int(store.steps[a]), int(store.steps[b])) for a, b in bounds)
    return WindowTransitions(str(store.path), bounds, steps, k, _distances(spectra, k))
