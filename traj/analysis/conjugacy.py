"""``traj conjugacy``: are two training runs the same dynamics? (methods.md §4, seed 002)

Topologically conjugate systems share Koopman eigenvalues. For each run: the Koopman
eigenvalues of an observable over a window (exact DMD, §1), optionally with d time delays
(Hankel DMD) and with several trajectories of one system stacked; then the Wasserstein
distance W1 between every pair of eigenvalue sets (POT ``ot.emd2``, uniform mass, cost
|λ − μ|). A verdict needs a null: the distances between runs that differ only in seed.

Two ways to the spectrum, same numbers: a large observable (all weights of a network) goes
through the streaming Gram, whose delay embedding is a sum of shifted diagonal sub-blocks
of G (no extra pass); a small observable (a layer, an optimiser's iterate) is read into
memory, where trajectories can be stacked (pairs never cross trajectories).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checks import check_float, check_int
from ..engine import Engine, ReducedOperator
from ..engine.operator import check_rank
from ..errors import ParameterError, TrajError
from ..store import RunStore
from .dmd import check_gram_finite, parse_window

__all__ = ["ConjugacyResult", "Spectrum", "conjugacy", "koopman_spectrum", "wasserstein", "SMALL_OBSERVABLE"]

ProgressCallback = Callable[[int, int], None]
#: Observables up to this many coordinates (times delays+1) are decomposed in memory.
SMALL_OBSERVABLE = 2048


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """W1 between two eigenvalue sets as point clouds in the complex plane (uniform mass, cost |λ − μ|)."""
    import ot

    a = np.asarray(a, dtype=np.complex128).ravel()
    b = np.asarray(b, dtype=np.complex128).ravel()
    if not a.size or not b.size:
        raise TrajError("an eigenvalue set is empty")
    p = np.c_[a.real, a.imag]
    q = np.c_[b.real, b.imag]
    cost = ot.dist(p, q, metric="euclidean")
    return float(ot.emd2(ot.unif(len(p)), ot.unif(len(q)), cost))


@dataclass(frozen=True)
class Spectrum:
    """Koopman eigenvalues of one run's observable over one window (largest modulus first)."""

    run: str
    window: tuple[int, int]
    eigenvalues: np.ndarray
    rank: int
    n_observables: int
    n_trajectories: int
    delays: int
    method: str


def _defaults(store: RunStore) -> dict[str, Any]:
    """The authors' setting for the mirror-descent validation case: stacked ICs, 4 delays."""
    recipe = store.recipe or {}
    if recipe.get("name") == "mirror-descent":
        return {"stack": True, "delays": 4}
    return {"stack": False, "delays": 0}


def _columns(store: RunStore, layer: str | None) -> tuple[slice, tuple[int, ...]]:
    if layer is None:
        if len(store.layout) == 1:  # one tensor: keep its shape (its first axis may index trajectories)
            return slice(0, store.n_params), store.layout.entries[0].shape
        return slice(0, store.n_params), (store.n_params,)
    entry = store.layout.select([layer])[0]
    return entry.columns, entry.shape


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


def _in_memory_operator(data: np.ndarray, *, n_traj: int, delays: int, rank: int | str | None,
                        dtype: np.dtype) -> ReducedOperator:
    """Hankel DMD with stacked trajectories (see ``stacked_hankel``), by an SVD of X."""
    return ReducedOperator.from_pairs(*stacked_hankel(data, n_traj, delays), rank=rank, dtype=dtype, excess="reduce")


def _hankel_gram(gram: np.ndarray, delays: int) -> np.ndarray:
    """Gram of the delay-embedded snapshots: H[j, k] = Σ_s G[j+s, k+s] (shifted diagonal sub-blocks)."""
    m = gram.shape[0] - delays
    return sum(gram[s : s + m, s : s + m] for s in range(delays + 1))


def _window_and_delays(store: RunStore, window: str | Sequence[int] | None, delays: int | None
                       ) -> tuple[int, int, int]:
    """A run's window (default: all of it) and delays (default: the recipe's), long enough for each other."""
    if window is None:
        if store.n_snapshots < 3:
            raise TrajError(f"{store.path}: {store.n_snapshots} snapshot(s); DMD needs at least 3")
        lo, hi = 0, store.n_snapshots - 1
    else:
        lo, hi = parse_window(window, store.n_snapshots)
    delays = _defaults(store)["delays"] if delays is None else check_int("delays", delays, low=0)
    if hi - lo + 1 < delays + 3:
        raise ParameterError("window", f"{lo}:{hi} of {store.path.name} is too short for {delays} delays "
                                       f"(needs at least {delays + 3} snapshots)")
    return lo, hi, delays


def _window_edges(store: RunStore, count: int, window: str | Sequence[int] | None, delays: int | None) -> np.ndarray:
    """Bounds of ``count`` consecutive windows of one run, each long enough for the delays."""
    lo, hi, d = _window_and_delays(store, window, delays)
    most = (hi - lo + 1) // (d + 3)
    edges = np.linspace(lo, hi + 1, count + 1).round().astype(int) if count <= most else None
    if edges is None or np.min(np.diff(edges)) < d + 3:
        raise ParameterError("windows", f"{count}: windows of snapshots {lo}:{hi} would be too short "
                                        f"(each needs {d + 3} snapshots: at most {most} windows)")
    return edges


def koopman_spectrum(
    store: RunStore,
    *,
    window: tuple[int, int] | None = None,
    layer: str | None = None,
    stack: bool | None = None,
    delays: int | None = None,
    rank: int | str = "auto",
    engine: Engine | None = None,
    gram: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
) -> Spectrum:
    """Koopman eigenvalues of a store's observable (all weights or one layer) over a window.

    ``stack`` splits the observable tensor along its first axis into independent trajectories
    of one system (default: on for mirror-descent stores, with 4 delays). ``gram`` may pass a
    precomputed Gram of exactly this window and observable.
    """
    defaults = _defaults(store)
    stack = defaults["stack"] if stack is None else stack
    rank = check_rank(rank)
    lo, hi, delays = _window_and_delays(store, window, delays)
    cols, shape = _columns(store, layer)
    n_obs = cols.stop - cols.start
    n_traj = shape[0] if stack and len(shape) > 1 else 1
    if stack and len(shape) < 2:
        raise TrajError("stacking trajectories needs a parameter tensor with a trajectory axis (e.g. shape (25, 2))")
    if stack or n_obs * (delays + 1) <= SMALL_OBSERVABLE:
        data = store.read(rows=slice(lo, hi + 1), columns=cols).astype(np.float64)
        if not np.isfinite(data).all():
            bad = lo + int(np.flatnonzero(~np.isfinite(data).all(axis=1))[0])
            raise TrajError(f"{store.path}: snapshot {bad} holds NaN or Inf")
        op = _in_memory_operator(data, n_traj=n_traj, delays=delays, rank=rank, dtype=store.dtype)
        method = "memory"
    else:
        if gram is None:
            engine = engine or Engine()
            gram = engine.gram(store, rows=slice(lo, hi + 1), groups={"obs": [cols]}, progress=progress)["obs"]
        check_gram_finite(gram, store, lo)
        op = ReducedOperator.from_gram(_hankel_gram(gram, delays), rank=rank, n_features=n_obs * (delays + 1),
                                       dtype=store.dtype, excess="reduce")
        method = "gram"
    return Spectrum(str(store.path), (lo, hi), op.eigenvalues, op.rank, n_obs, n_traj, delays, method)


@dataclass(frozen=True)
class ConjugacyResult:
    runs: list[str]
    spectra: list[Spectrum]
    k: int
    distance: np.ndarray
    null_runs: list[str]
    null_distances: list[float]
    quantile: float
    threshold: float | None
    verdicts: list[dict[str, Any]]
    windows: dict[str, Any] | None
    settings: dict[str, Any]
    seconds: float
    null_threshold: float | None = None
    margin: float = 0.0

    @property
    def any_nonconjugate(self) -> bool:
        return any(v["verdict"] == "non-conjugate" for v in self.verdicts)

    def eigenvalues(self, i: int) -> np.ndarray:
        return self.spectra[i].eigenvalues[: self.k]

    def to_dict(self) -> dict[str, Any]:
        pairs = lambda z: [[float(v.real), float(v.imag)] for v in z]  # noqa: E731
        return {
            "runs": self.runs,
            "eigenvalues": [pairs(self.eigenvalues(i)) for i in range(len(self.runs))],
            "ranks": [s.rank for s in self.spectra],
            "k": self.k,
            "distance": self.distance.tolist(),
            "null_runs": self.null_runs,
            "null_distances": self.null_distances,
            "quantile": self.quantile,
            "threshold": self.threshold,
            "null_threshold": self.null_threshold,
            "margin": self.margin,
            "verdicts": self.verdicts,
            "windows": self.windows,
            "settings": self.settings,
            "seconds": self.seconds,
        }


def _open(run: RunStore | str | os.PathLike[str]) -> RunStore:
    return run if isinstance(run, RunStore) else RunStore(run)


def conjugacy(
    stores: Sequence[RunStore | str | os.PathLike[str]],
    *,
    window: str | Sequence[int] | None = None,
    layer: str | None = None,
    rank: int | str = "auto",
    k: int | None = 10,
    null: Sequence[RunStore | str | os.PathLike[str]] = (),
    quantile: float = 0.95,
    tolerance: float = 1e-8,
    margin: float = 0.0,
    windows: int | None = None,
    stack: bool | None = None,
    delays: int | None = None,
    engine: Engine | None = None,
    progress: ProgressCallback | None = None,
) -> ConjugacyResult:
    """Wasserstein distances between the Koopman spectra of runs, and verdicts against a seed null.

    Parameters
    ----------
    stores : runs to compare (different N is fine: only spectra are compared). One run with
        ``windows`` compares its consecutive windows instead.
    window : "a:b"
        Snapshots used in every run (must exist in all).
    k : int
        Eigenvalues of largest modulus kept per run (equal for all runs; capped by the
        smallest rank). None keeps all of the smallest rank.
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
    """
    t0 = time.perf_counter()
    quantile = check_float("quantile", quantile, low=0, high=1, low_open=True)
    k = None if k is None else check_int("k", k, low=1)
    margin = check_float("margin", margin, low=0)
    tolerance = check_float("tolerance", tolerance, low=0)
    rank = check_rank(rank)
    windows = None if windows is None else check_int("windows", windows, low=2)
    runs = [_open(s) for s in stores]
    null_runs = [_open(s) for s in null]
    if not runs:
        raise TrajError("give at least one run")
    if len(runs) < 2 and not windows:
        raise TrajError("give two or more runs to compare, or --windows W to compare windows of one run")
    # every run's window (and the windows of the first) is checked before the first spectrum
    run_windows = {id(s): _window_and_delays(s, window, delays)[:2] for s in runs + null_runs}
    for s in runs + null_runs:
        _columns(s, layer)  # an unknown layer fails here, not after the first spectra
    edges = _window_edges(runs[0], windows, window, delays) if windows else None
    engine = engine or Engine()

    def spectrum(store: RunStore) -> Spectrum:
        return koopman_spectrum(store, window=run_windows[id(store)], layer=layer, stack=stack, delays=delays, rank=rank,
                                engine=engine, progress=progress)

    spectra = [spectrum(s) for s in runs] if len(runs) > 1 else [spectrum(runs[0])]
    null_spectra = [spectrum(s) for s in null_runs]
    ranks = [s.rank for s in spectra + null_spectra]
    k_eff = min(ranks) if k is None else min(k, min(ranks))
    top = lambda s: s.eigenvalues[:k_eff]  # noqa: E731
    n = len(spectra)
    distance = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            distance[i, j] = distance[j, i] = wasserstein(top(spectra[i]), top(spectra[j]))
    family = [spectra[0], *null_spectra]
    null_distances = [wasserstein(top(family[i]), top(family[j]))
                      for i in range(len(family)) for j in range(i + 1, len(family))] if null_spectra else []
    null_threshold = float(np.quantile(null_distances, quantile)) if null_distances else None
    # the verdict's threshold: the larger of the null's quantile and the stated margin, never
    # below the eigenvalues' precision; ``basis`` says which of them set it
    bounds = {name: value for name, value in (("null", null_threshold), ("margin", margin or None)) if value is not None}
    threshold, basis = None, None
    if bounds:
        basis = max(bounds, key=bounds.__getitem__)
        threshold = bounds[basis]
        if threshold < tolerance:
            threshold, basis = tolerance, "tolerance"
    verdicts = []
    for i in range(n):
        for j in range(i + 1, n):
            d = float(distance[i, j])
            verdict = "undetermined" if threshold is None else ("conjugate" if d <= threshold else "non-conjugate")
            verdicts.append({"a": str(runs[i].path), "b": str(runs[j].path), "distance": d, "verdict": verdict,
                             "basis": basis})

    window_info = None
    if windows:
        window_info = _window_transitions(runs[0], edges, layer, stack, delays, rank, k, engine, progress)
    settings = {"layer": layer, "rank": rank, "stack": [s.n_trajectories > 1 for s in spectra],
                "delays": [s.delays for s in spectra], "method": [s.method for s in spectra],
                "windows": [list(s.window) for s in spectra]}
    return ConjugacyResult([str(r.path) for r in runs], spectra, k_eff, distance, [str(r.path) for r in null_runs],
                           null_distances, quantile, threshold, verdicts, window_info, settings,
                           time.perf_counter() - t0, null_threshold=null_threshold, margin=margin)


def _window_transitions(store: RunStore, edges: np.ndarray, layer: str | None, stack: bool | None,
                        delays: int | None, rank: int | str, k: int | None, engine: Engine,
                        progress: ProgressCallback | None) -> dict[str, Any]:
    """Spectra of consecutive windows of one run (bounds ``edges``, from :func:`_window_edges`) and
    their distance matrix (one Gram pass)."""
    lo, hi = int(edges[0]), int(edges[-1]) - 1
    d = _defaults(store)["delays"] if delays is None else delays
    cols, _ = _columns(store, layer)
    full_gram = None
    if not (stack or _defaults(store)["stack"]) and (cols.stop - cols.start) * (d + 1) > SMALL_OBSERVABLE:
        full_gram = engine.gram(store, rows=slice(lo, hi + 1), groups={"obs": [cols]}, progress=progress)["obs"]
    spectra = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        sub = None if full_gram is None else full_gram[a - lo : b - lo, a - lo : b - lo]
        spectra.append(koopman_spectrum(store, window=(int(a), int(b) - 1), layer=layer, stack=stack, delays=delays,
                                        rank=rank, engine=engine, gram=sub))
    k_eff = min(s.rank for s in spectra) if k is None else min(k, min(s.rank for s in spectra))
    matrix = [[wasserstein(s.eigenvalues[:k_eff], t.eigenvalues[:k_eff]) for t in spectra] for s in spectra]
    return {"run": str(store.path), "bounds": [[int(a), int(b) - 1] for a, b in zip(edges[:-1], edges[1:], strict=True)],
            "steps": [[int(store.steps[a]), int(store.steps[b - 1])] for a, b in zip(edges[:-1], edges[1:], strict=True)],
            "k": k_eff, "distance": matrix}
