"""What a run's spectrum is fitted from: the observable (all weights, a layer, PCA scores), its window,
delays and stacked trajectories (docs/methods.md §4.1), and the :class:`Spectrum` a fit gives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ...checks import check_int
from ...engine.truncation import Truncation
from ...errors import ParameterError, WindowTooShortError
from ...store import RunStore
from ..windows import Window, default_last, parse_window

__all__ = ["SMALL_OBSERVABLE", "Spectrum", "SpectrumMethod", "observable_columns", "parse_observable", "pca_scores",
           "pooled_pca_scores", "recipe_defaults", "stacked_hankel", "stacked_pca_scores", "trajectories",
           "window_and_delays"]


#: Default of ``small_observable``: observables up to this many coordinates (times delays+1) are decomposed in memory.
SMALL_OBSERVABLE = 2048


SpectrumMethod = Literal["memory", "gram"]


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
    observable: str = "all"
    #: The operator's rank decision (:func:`traj.engine.truncation.truncate`) that ``rank``, ``rank_requested`` and
    #: ``rank_note`` come from.
    truncation: Truncation | None = field(default=None, repr=False, compare=False)


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


def pca_scores(gram: np.ndarray, components: int, *, center: bool = False,
               fit: np.ndarray | None = None) -> np.ndarray:
    """(T, K) scores of K leading principal components of T snapshots, from their Gram G = D Dᵀ alone.

    The principal axes are those of the centred snapshots ``fit`` (default all), as scikit-learn's
    ``PCA`` fits them: J G_FF J = U S² Uᵀ (J = I − 11ᵀ/|F|), axes V = (J D_F)ᵀ U S⁻¹ (signs fixed:
    each column of U has its largest entry positive). Every snapshot is projected on them:
    ``center=False`` (the default; Redman et al. 2024's projection, ``X @ PCA().fit(X[:-1]).components_.T``):
    D V_K = G_{:,F} J U_K S_K⁻¹, a fixed linear map of the weights, so the window's mean stays in the
    dynamics as it does for every other observable; ``center=True``: (D − 1 m_Fᵀ) V_K, the fitted
    snapshots' mean m_F removed (U_K S_K on them). Components whose variance is at rounding level of G
    get scores 0.

    Parameters
    ----------
    gram : ndarray of shape (T, T)
    components : int
        K; at most |F| are returned.
    fit : ndarray of bool of shape (T,), optional
        The snapshots the axes are fitted to (Redman et al. 2024 fit them to DMD's X: all but each trajectory's last).
    """
    g = np.asarray(gram, dtype=np.float64)
    fit = np.ones(g.shape[0], dtype=bool) if fit is None else np.asarray(fit, dtype=bool)
    g_fit = g[np.ix_(fit, fit)]
    n = g_fit.shape[0]
    centred = g_fit - g_fit.mean(axis=0, keepdims=True) - g_fit.mean(axis=1, keepdims=True) + g_fit.mean()
    evals, evecs = np.linalg.eigh((centred + centred.T) / 2)
    order = np.argsort(evals)[::-1][: min(components, n)]
    u = evecs[:, order]
    pivot = np.argmax(np.abs(u), axis=0)
    u = u * np.sign(u[pivot, np.arange(u.shape[1])])
    variance = np.clip(evals[order], 0.0, None)
    # a direction whose variance is rounding error of G has no axis: score 0
    resolved = variance > n * np.finfo(np.float64).eps * max(float(np.abs(g_fit).max(initial=0.0)), 1e-300)
    ju = u[:, resolved] - u[:, resolved].mean(axis=0, keepdims=True)  # J U: orthogonal to 1 whatever eigh's rounding
    cross = g[:, fit]
    if center:
        cross = cross - g_fit.mean(axis=0, keepdims=True)
    scores = np.zeros((g.shape[0], u.shape[1]))
    scores[:, resolved] = (cross @ ju) / np.sqrt(variance[resolved])
    return scores


def stacked_pca_scores(data: np.ndarray, n_traj: int, components: int, *, center: bool = False) -> np.ndarray:
    """(T, n_traj·K) scores of stacked trajectories on ONE projection, fitted to every trajectory's snapshots pooled.

    data (T, n_traj·state), trajectory i in columns i·state..(i+1)·state; the principal axes are
    fitted to the snapshots of every trajectory but its last (DMD's X, as Redman et al. 2024's grokking
    pipeline, which stacks PCA scores of 10 initialisations, fits them), and each trajectory's
    snapshots are projected on them (:func:`pca_scores`). The result keeps the trajectory-major column
    layout, so :func:`stacked_hankel` splits it by trajectory.
    """
    data = np.asarray(data, dtype=np.float64)
    t, n = data.shape
    state = n // n_traj
    pooled = data.reshape(t, n_traj, state).transpose(1, 0, 2).reshape(n_traj * t, state)
    fit = np.tile(np.arange(t) < t - 1, n_traj)
    if state >= pooled.shape[0]:  # wide: the (n_traj·T)² Gram is the small matrix
        return pooled_pca_scores(pooled @ pooled.T, n_traj, components, center=center)
    else:  # many snapshots of a small state (25 initial conditions in d = 2): the state's own axes
        fitted = pooled[fit]
        mean = fitted.mean(axis=0)
        _, sigma, vt = np.linalg.svd(fitted - mean, full_matrices=False)
        axes = vt[: min(components, sigma.size)].T
        u = (fitted - mean) @ axes  # U S: the sign convention of pca_scores (largest entry of U positive)
        axes = axes * np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(u.shape[1])])
        resolved = sigma[: axes.shape[1]] ** 2 > (fitted.shape[0] * np.finfo(np.float64).eps
                                                   * max(float(np.max(np.sum(fitted**2, axis=1))), 1e-300))
        scores = (pooled - mean if center else pooled) @ (axes * resolved)
    return scores.reshape(n_traj, t, -1).transpose(1, 0, 2).reshape(t, -1)


def pooled_pca_scores(gram: np.ndarray, n_traj: int, components: int, *, center: bool = False) -> np.ndarray:
    """(T, n_traj·K) scores of stacked trajectories from their pooled Gram alone (:func:`stacked_pca_scores`'s wide case).

    ``gram`` (n_traj·T square) holds x_a(s)ᵀ x_b(t) at (a·T + s, b·T + t); the axes are fitted to every
    trajectory's snapshots but its last, and the scores keep the trajectory-major column layout.
    """
    t = gram.shape[0] // n_traj
    fit = np.tile(np.arange(t) < t - 1, n_traj)
    scores = pca_scores(gram, components, center=center, fit=fit)
    return scores.reshape(n_traj, t, -1).transpose(1, 0, 2).reshape(t, -1)


def parse_observable(observable: str | None, layer: str | None = None) -> tuple[str, str | int | None]:
    """("all", None), ("layer", NAME) or ("pca", K) from ``all | layer:NAME | pca:K`` (``layer=`` is layer:NAME)."""
    if layer is not None:
        if observable not in (None, "all"):
            raise ParameterError("layer", f"and observable={observable!r} both given: use one")
        return "layer", layer
    text = "all" if observable is None else str(observable)
    if text == "all":
        return "all", None
    kind, _, arg = text.partition(":")
    if kind == "layer" and arg:
        return "layer", arg
    if kind == "pca" and arg.isdigit() and int(arg) >= 1:
        return "pca", int(arg)
    raise ParameterError("observable", f"must be 'all', 'layer:NAME' or 'pca:K' (K >= 1), got {text!r}")


def recipe_defaults(store: RunStore) -> tuple[bool, int]:
    """(stack, delays) by default: the authors' setting for the mirror-descent case (stacked ICs, 4 delays)."""
    recipe = store.recipe or {}
    return (True, 4) if recipe.get("name") == "mirror-descent" else (False, 0)


def observable_columns(store: RunStore, layer: str | None) -> tuple[slice, tuple[int, ...]]:
    """The columns of the observable (one layer, or all of θ) and the shape of its tensor."""
    if layer is None:
        if len(store.layout) == 1:  # one tensor: keep its shape (its first axis may index trajectories)
            return slice(0, store.n_params), store.layout.entries[0].shape
        return slice(0, store.n_params), (store.n_params,)
    entry = store.layout.select([layer])[0]
    return entry.columns, entry.shape


def trajectories(store: RunStore, stack: int | bool | None, n_obs: int, shape: tuple[int, ...]) -> int:
    """How many equal trajectories the observable's n coordinates split into.

    None: the recipe's default (mirror-descent: the first axis of its one tensor); True: the
    first axis of the observable's tensor; an integer N: θ split into N equal consecutive parts.
    """
    defaulted = stack is None
    if stack is None:
        stack = recipe_defaults(store)[0]
    if stack is True:
        if len(shape) < 2:
            if defaulted:  # the recipe's default, not the user's --stack: say so, and how to set it
                raise ParameterError("observable", f"of {store.path.name} is a tensor of shape {tuple(shape)}, with no "
                                                   "trajectory axis, and its recipe stacks trajectories by default: "
                                                   "give stack=1 (one trajectory) or a number of trajectories")
            raise ParameterError("stack", "needs a parameter tensor with a trajectory axis (e.g. shape (25, 2)), "
                                          "or a number of trajectories N")
        return int(shape[0])
    n_traj = 1 if stack is False else int(stack)
    if n_obs % n_traj:
        raise ParameterError("stack", f"{n_traj}: the observable's {n_obs} coordinates do not split into "
                                      f"{n_traj} equal trajectories")
    return n_traj


def window_and_delays(store: RunStore, window: Window, delays: int | None) -> tuple[int, int, int]:
    """A run's window (default: all of it) and delays (default: the recipe's), long enough for each other."""
    d = recipe_defaults(store)[1] if delays is None else check_int("delays", delays, low=0)
    if window is None:
        if store.n_snapshots < d + 3:
            raise WindowTooShortError(f"{store.path}: {store.n_snapshots} snapshot(s) are too short for {d} delays "
                                      f"(DMD needs at least {d + 3})")
        last = default_last(store)  # a last snapshot off the recording grid is no part of an even window
        return 0, (last if last + 1 >= d + 3 else store.n_snapshots - 1), d
    lo, hi = parse_window(window, store.n_snapshots)
    if hi - lo + 1 < d + 3:
        raise ParameterError("window", f"{lo}:{hi} of {store.path.name} is too short for {d} delays "
                                       f"(needs at least {d + 3} snapshots)")
    return lo, hi, d
