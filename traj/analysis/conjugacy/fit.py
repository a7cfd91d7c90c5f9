"""The analysis: every run's spectrum, both nulls, the distances and the verdicts (:func:`conjugacy`)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence

import numpy as np

from ...engine import Engine
from ...errors import ParameterError, UnevenSpacingError
from ...progress import Progress
from ...store import RunStore
from ..windows import Window, check_even_spacing
from .distances import _distances
from .observe import _observe, _Observed, gram_side
from .params import ConjugacyParams
from .ranks import _fit_all, _reproducible_fit
from .reparam import family_draws
from .results import ConjugacyResult, ReparamNull, Rule, WindowTransitions
from .spectra import SMALL_OBSERVABLE, observable_columns, recipe_defaults, trajectories, window_and_delays
from .verdicts import SCORES, decide, null_note

__all__ = ["conjugacy", "fit_conjugacy"]


#: Memory the reparametrisation null's maps may hold beyond the default 20 maps': each holds about
#: NULL_GRAMS_PER_MAP float64 (T+1)x(T+1) matrices over the window at its peak (measured: quadratic-mlp,
#: T = 321, 0.56 GB at 20 maps, 2.06 GB at 200: 8.3 MB a map, 10 of its 0.82 MB Grams).
NULL_BYTES = 1 << 30
NULL_GRAMS_PER_MAP = 10


def conjugacy(
    stores: Sequence[RunStore | str | os.PathLike[str]],
    *,
    window: Window = None,
    observable: str = "all",
    layer: str | None = None,
    rank: int | str | None = "k",
    k: int | None = 10,
    null: Sequence[RunStore | str | os.PathLike[str]] = (),
    null_size: int = 20,
    null_strength: float = 0.1,
    null_seed: int = 0,
    quantile: float = 0.95,
    tolerance: float = 1e-8,
    margin: float = 0.0,
    windows: int | None = None,
    stack: int | bool | None = None,
    delays: int | None = None,
    small_observable: int = SMALL_OBSERVABLE,
    rule: str = "reproducible",
    center: bool = False,
    engine: Engine | None = None,
    progress: Progress | None = None,
) -> ConjugacyResult:
    """Wasserstein distances between the Koopman spectra of runs, and verdicts against two nulls.

    Parameters
    ----------
    stores : runs to compare (different N is fine: only spectra are compared). One run with
        ``windows`` compares its consecutive windows instead.
    window : "a:b"
        Snapshots used in every run (must exist in all).
    observable : "all", "layer:NAME" or "pca:K"
        What DMD sees: all weights, one parameter tensor (``layer=NAME`` is the same), or the
        scores of the window's K leading principal components (from the Gram alone; with ``stack``,
        one projection fitted to every trajectory's snapshots pooled, Redman et al. 2024's grokking pipeline).
    center : bool
        pca:K only: remove the window's mean from the scores. Default False: Redman et al. 2024's projection
        (axes of the centred snapshots, the snapshots themselves projected): a fixed linear map of
        the weights, like every other observable; centring drops the mean's own motion and moved
        eigenvalues by up to 0.049 against the authors' pipeline (:func:`pca_scores`).
    rank : "k", int or "auto"
        "k" (default): every run at the same rank r = min(k, every run's resolvable rank), all r
        eigenvalues compared. An integer: that rank for every run (reduced, with a note, where a
        run resolves fewer); "auto": Gavish–Donoho per run, the k largest-modulus compared.
    k : int
        Eigenvalues compared per run (equal for all runs; capped by the smallest rank, and
        ``k_note`` says so). None keeps all of the smallest rank.
    null : runs that differ from the first only in seed; their pairwise distances (with the
        first run) form the seed null.
    null_size, null_strength, null_seed : the reparametrisation null: ``null_size`` maps h_i of the
        coordinates (:func:`reparametrise`), each bending a coordinate by up to ``null_strength`` of
        its half-range, split over the first run and the seed-null runs (how far a map moves the
        eigenvalues depends on the trajectory it bends); 0 turns it off.
    quantile : a pair is conjugate when its distance is within this quantile of the wider null.
    tolerance : distances below this count as zero (the eigenvalues' own precision).
    margin : an equivalence margin: distances up to it are declared immaterial, whatever the nulls.
    windows : split the (first) run into this many consecutive windows and return the matrix
        of distances between their spectra (Redman et al. 2024 fig. 4), from one Gram pass.
    stack : trajectories of one system held in θ: an integer N (θ split into N equal parts), True
        (the first axis of the tensor), None (mirror-descent stores: their 25 initial conditions).
    small_observable : observables up to this many coordinates (times delays + 1) are
        decomposed in memory by an SVD; larger ones through the streamed Gram.
    rule : "reproducible" or "plain"
        "reproducible" (default, with a seed null): compare only what the null reproduces. The
        rank is the largest r (at most the rank rule's) at which every eigenvalue of the first run
        has a mutual nearest neighbour (:func:`mutual_nearest`) in every seed-null run's spectrum;
        each run's eigenvalues are matched onto the first run's (:func:`slot_match`). The first run
        and its seed runs are the family, a sample of the first run's system; a run's statistic
        against the first is mean_i |z_i − m_i|² / ((1 + 1/n) v_i + b_i), with m_i and v_i the
        family's mean and variance of eigenvalue i and b_i the mean square move of a bent spectrum
        from its own run's (reparametrisation null); between two other runs,
        mean_i |z_i − w_i|² / (2 (v_i + b_i)). The seed null's bound is that statistic's
        ``quantile`` for one more run of the family (:func:`family_bound`), the reparametrisation
        null's the conformal bound (:func:`conformal_bound`) of its bent spectra. Without a seed
        null, "plain" is used (and a note says so). "plain": W1 of the rank rule's eigenvalues
        and the nulls' ``quantile`` of W1, reported without a verdict (undetermined, reason
        :data:`PLAIN_NO_VERDICT`) except for pairs within ``margin``.
    """
    params = ConjugacyParams(window=window, observable=observable, layer=layer, center=center, rank=rank, k=k,
                             null_size=null_size, null_strength=null_strength, null_seed=null_seed, rule=rule,
                             quantile=quantile, tolerance=tolerance, margin=margin, windows=windows, delays=delays,
                             stack=stack, small_observable=small_observable)
    return fit_conjugacy(stores, params, null=null, engine=engine, progress=progress)


def fit_conjugacy(stores: Sequence[RunStore | str | os.PathLike[str]], params: ConjugacyParams, *,
                  null: Sequence[RunStore | str | os.PathLike[str]] = (), engine: Engine | None = None,
                  progress: Progress | None = None) -> ConjugacyResult:
    """Fit checked :class:`ConjugacyParams`: every run's spectrum, both nulls, the distances and the verdicts."""
    t0 = time.perf_counter()
    runs, null_runs = _open_runs(stores, null, params)
    run_windows = _check_runs(runs, null_runs, params)
    edges = _window_edges(runs[0], params) if params.windows else None
    engine = engine or Engine()
    # the reparametrisation null's maps are split over the first run's family (the first run and every
    # seed-null run): how far a map moves the eigenvalues depends on the trajectory it bends
    draws = family_draws(params.null_size if len(runs) > 1 else 0, 1 + len(null_runs))
    sides = [(run_windows[id(s)][1] - run_windows[id(s)][0] + 1,
              gram_side(s, run_windows[id(s)], observable=params.observed, stack=params.stack, delays=params.delays,
                        small_observable=params.small_observable)) for s in [runs[0], *null_runs]]
    _check_null_memory(params.null_size, max(n for _, n in draws), max(side for _, side in sides),
                       stacked=any(side > n for n, side in sides))

    def observe(store: RunStore, n: tuple[int, int] = (0, 0)) -> _Observed:
        return _observe(store, window=run_windows[id(store)], observable=params.observed, layer=None, stack=params.stack,
                        delays=params.delays, small_observable=params.small_observable, engine=engine, draws=n[1],
                        first_draw=n[0], strength=params.null_strength, seed=params.null_seed, progress=progress,
                        center=params.center)

    observed = ([observe(runs[0], draws[0])] + [observe(s) for s in runs[1:]]
                + [observe(s, n) for s, n in zip(null_runs, draws[1:], strict=True)])
    spectra_all, choice, k_note = _fit_all(observed, params)
    rule: Rule = params.rule
    rule_note = None
    if rule == "reproducible" and not null_runs:
        rule, rule_note = "plain", ("rule 'reproducible' needs a seed null (--null): W1 of the rank rule's "
                                    "eigenvalues compared instead")
    elif rule == "reproducible":
        spectra_all, choice, k_note = _reproducible_fit(observed, spectra_all, choice, k_note, len(runs))
    k = choice.k
    spectra = spectra_all[: len(runs)]
    distance = _distances(spectra, k)
    members = [0, *range(len(runs), len(spectra_all))]  # the first run's family, as indices of spectra_all
    # each member's spectra through its maps, at its own (the common) rank
    bent = {f: [src.fit(spectra_all[f].rank).eigenvalues[:k] for src in observed[f].bent] for f in members}
    scores = SCORES[rule](spectra_all, members, bent, k, params)
    reparam = (ReparamNull(len(scores.reparam), params.null_strength, params.null_seed, scores.reparam,
                           scores.reparam_bound) if scores.reparam.size else None)
    threshold, basis, verdicts = decide(runs, distance, scores, reparam, params, seed_null=bool(null_runs))
    transitions = _window_transitions(runs[0], edges, params, engine, progress) if edges is not None else None
    return ConjugacyResult(tuple(str(r.path) for r in runs), tuple(spectra), k, distance,
                           tuple(str(r.path) for r in null_runs), scores.null_distances, params.quantile, threshold,
                           verdicts, transitions, params.layer_name, params.rank, time.perf_counter() - t0,
                           null_threshold=scores.null_threshold, margin=params.margin, k_requested=params.k,
                           k_note=k_note, reparam=reparam, observable=params.observed, basis=basis, rule=rule,
                           statistic=scores.statistic, scales=scores.scales, rule_note=rule_note, k_choice=choice,
                           null_note=null_note(rule, basis, scores.null_threshold, len(null_runs)),
                           center=params.center)


def _open_runs(stores: Sequence[RunStore | str | os.PathLike[str]], null: Sequence[RunStore | str | os.PathLike[str]],
               params: ConjugacyParams) -> tuple[list[RunStore], list[RunStore]]:
    """The compared runs and the seed-null runs, opened; refused when too few, repeated or of another model."""
    runs = [_open(s) for s in stores]
    null_runs = [_open(s) for s in null]
    if not runs:
        raise ParameterError("stores", "is empty: give at least one run")
    if len(runs) < 2 and not params.windows:
        raise ParameterError("stores", "holds one run: give two or more runs to compare, or windows=W to compare "
                                       "windows of one run")
    compared = {os.path.realpath(r.path) for r in runs}
    seen: set[str] = set()
    for s in null_runs:  # a compared run in the null counts the pair's own distance as seed variation
        where = os.path.realpath(s.path)
        if where in compared:
            raise ParameterError("null", f"{s.path.name} is also a compared run: a seed null holds other seeds of "
                                         "the first run's model, never a run under comparison")
        if where in seen:
            raise ParameterError("null", f"{s.path.name} is given twice: every seed-null run must be another seed")
        seen.add(where)
    first = [(e.name, tuple(e.shape)) for e in runs[0].layout.entries]
    for s in null_runs:  # a seed null is the first run's model trained from other seeds
        if [(e.name, tuple(e.shape)) for e in s.layout.entries] != first:
            raise ParameterError("null", f"{s.path.name} is not the model of {runs[0].path.name} (other parameter "
                                         "names or shapes): a seed null holds runs of the first run's model and "
                                         "recipe from other seeds")
    return runs, null_runs


def _check_runs(runs: Sequence[RunStore], null_runs: Sequence[RunStore],
                params: ConjugacyParams) -> dict[int, tuple[int, int]]:
    """Every run's window (by ``id``), its spacing, layer and stacking, checked before the first spectrum."""
    run_windows = {id(s): window_and_delays(s, params.window, params.delays)[:2] for s in [*runs, *null_runs]}
    _check_spacings([*runs, *null_runs], run_windows)
    for s in [*runs, *null_runs]:
        cols, shape = observable_columns(s, params.layer_name)
        trajectories(s, params.stack, cols.stop - cols.start, shape)
    return run_windows


def _check_spacings(stores: Sequence[RunStore], windows: dict[int, tuple[int, int]]) -> None:
    """Every run's window evenly spaced in steps, and at one spacing for all: a Koopman eigenvalue is
    per snapshot (λ^Δ over Δ steps), so runs recorded every 1 and every 4 steps differ in every
    eigenvalue whatever their dynamics."""
    spacing: dict[str, int] = {}
    for s in stores:
        lo, hi = windows[id(s)]
        try:
            spacing[s.path.name] = check_even_spacing(s, lo, hi, method="a Koopman spectrum (DMD)")
        except UnevenSpacingError as exc:
            raise UnevenSpacingError(exc.parameter, f"{s.path.name}: {exc.problem}", spacings=exc.spacings,
                                     suggestion=exc.suggestion) from None
    if len(set(spacing.values())) > 1:
        shown = ", ".join(f"{name} every {d} step(s)" for name, d in spacing.items())
        common = math.lcm(*spacing.values())
        raise ParameterError("stores", f"hold snapshots at different spacings ({shown}): an eigenvalue is per "
                                       "snapshot (λ^d over d steps), so these spectra differ whatever the dynamics; "
                                       f"select a common grid of steps (--steps ::{common}, or --stride per store; "
                                       f"open_store(path, steps='::{common}')) or record at one spacing")


def _check_null_memory(null_size: int, draws: int, n_window: int, *, stacked: bool = False) -> None:
    """Refuse a reparametrisation null larger than the default whose maps would hold more than NULL_BYTES
    (one run's ``draws`` maps, each NULL_GRAMS_PER_MAP float64 Grams at its peak: (T+1)², or (N_traj·(T+1))²
    for stacked trajectories' pooled Gram, :func:`gram_side`)."""
    per_map = NULL_GRAMS_PER_MAP * n_window**2 * 8
    if null_size <= 20 or draws * per_map <= NULL_BYTES:
        return
    fits = max(20, NULL_BYTES // per_map)
    where = (f"the pooled Grams of {n_window} snapshots (the window's, of every stacked trajectory)" if stacked
             else f"windows of {n_window} snapshots")
    raise ParameterError("null_size", f"{null_size} needs about {draws * per_map / 2**30:.1f} GiB for the "
                                      f"reparametrisation null over {where} ({per_map / 2**20:.1f}"
                                      f" MiB a map); at most {fits} fit in {NULL_BYTES / 2**30:.0f} GiB (a shorter "
                                      "window needs less)")


def _open(run: RunStore | str | os.PathLike[str]) -> RunStore:
    return run if isinstance(run, RunStore) else RunStore(run)


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
    d = recipe_defaults(store)[1] if params.delays is None else params.delays
    cols, shape = observable_columns(store, params.layer_name)
    n_traj = trajectories(store, params.stack, cols.stop - cols.start, shape)
    full_gram = None
    if n_traj == 1 and ((cols.stop - cols.start) * (d + 1) > params.small_observable
                        or params.observed.startswith("pca:")):
        full_gram = engine.gram(store, rows=slice(lo, hi + 1), groups={"obs": [cols]}, progress=progress)["obs"]
    observed = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        sub = None if full_gram is None else full_gram[a - lo : b - lo, a - lo : b - lo]
        observed.append(_observe(store, window=(int(a), int(b) - 1), observable=params.observed, layer=None,
                                 stack=params.stack, delays=params.delays, small_observable=params.small_observable,
                                 engine=engine, gram=sub, center=params.center))
    spectra, choice, _ = _fit_all(observed, params)
    k = choice.k
    bounds = tuple((int(a), int(b) - 1) for a, b in zip(edges[:-1], edges[1:], strict=True))
    steps = tuple((int(store.steps[a]), int(store.steps[b])) for a, b in bounds)
    return WindowTransitions(str(store.path), bounds, steps, k, _distances(spectra, k))
