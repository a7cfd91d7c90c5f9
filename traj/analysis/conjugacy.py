"""``traj conjugacy``: are two training runs the same dynamics? (docs/methods.md §4; Redman et al. 2024)

Topologically conjugate systems share Koopman eigenvalues. For each run: the Koopman
eigenvalues of an observable over a window (exact DMD, §1), optionally with d time delays
(Hankel DMD) and with several trajectories of one system stacked; then the Wasserstein
distance W1 between every pair of eigenvalue sets (POT ``ot.emd2``, uniform mass, cost
|λ − μ|). A verdict needs a null, and two are drawn:

- the **seed null**: runs that differ from the first only in seed (``null=``), which measure
  initial-condition and SGD noise (with the default rule: the first run and its seed runs form
  a family, a sample of the first run's system, and a bound for one more run of it is drawn
  from the family's own covariance, :func:`family_bound`);
- the **reparametrisation null**: the first run and its seed runs seen through ``null_size``
  random smooth monotone coordinate-wise maps h (:func:`reparametrise`). Conjugacy is
  invariance under a homeomorphism, and finite-dictionary DMD eigenvalues move when the
  coordinates bend, so this measures the estimator's own dependence on the coordinates, which
  a seed null of a deterministic system misses.

A pair is conjugate when its statistic is within the larger of the two nulls' bounds (or
its W1 within a stated margin); the verdict names which one decided.

Observables (``observable=``): ``all`` weights, one ``layer:NAME``, or ``pca:K``, the scores
of the window's K leading principal components, computed from the streamed Gram alone. A
large observable goes through the streaming Gram, whose delay embedding is a sum of shifted
diagonal sub-blocks of G (no extra pass), and the Grams of h(X) for every null draw are
accumulated beside it in the same pass; a small one (up to ``small_observable`` coordinates
times delays + 1) is collected into memory. Stacked trajectories of a large observable go through
their pooled Gram (:func:`stacked_grams`: every trajectory's snapshots against every other's, a band
of coordinates of every trajectory at a time), so no path holds anything of size N. Every path goes
through the one operator factory (:mod:`traj.engine.operator`). By default every run is fitted
at the same rank, r = min(k, every run's resolvable rank), and all r eigenvalues are compared;
a rank or k reduced below what was asked says so (``Spectrum.rank_note``, ``k_note``).
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from ..checks import check_float, check_int
from ..engine import Engine, ReducedOperator
from ..engine.operator import check_rank
from ..errors import NotApplicableError, ParameterError, UnevenSpacingError, WindowTooShortError
from ..progress import Progress
from ..store import RunStore
from .dmd import complex_pairs
from .windows import (
    Window,
    check_even_spacing,
    default_last,
    hankel_gram,
    parse_window,
    raise_nonfinite,
    stacked_hankel_gram,
)

__all__ = ["ConjugacyParams", "ConjugacyResult", "KChoice", "PairVerdict", "SMALL_OBSERVABLE", "Spectrum", "WindowTransitions",
           "conjugacy", "conformal_bound", "family_bound", "family_draws", "fit_conjugacy", "hankel_gram", "koopman_spectrum", "mutual_nearest",
           "parse_observable", "reparametrise", "slot_match", "stacked_hankel", "verdict_label", "wasserstein"]

#: Default of ``small_observable``: observables up to this many coordinates (times delays+1) are decomposed in memory.
SMALL_OBSERVABLE = 2048
#: Most maps of the reparametrisation null. Its bound is a conformal quantile of n values, whose level is
#: exact to 1/(n + 1): 1000 maps resolve the 95 % quantile to 0.1 %, far below the seed null's own sampling
#: error, and each map is a DMD fit and a Gram (or a copy of the observable) held until the verdicts.
MAX_NULL_SIZE = 1000
#: Memory the reparametrisation null's maps may hold beyond the default 20 maps': each holds about
#: NULL_GRAMS_PER_MAP float64 (T+1)x(T+1) matrices over the window at its peak (measured: quadratic-mlp,
#: T = 321, 0.56 GB at 20 maps, 2.06 GB at 200: 8.3 MB a map, 10 of its 0.82 MB Grams).
NULL_BYTES = 1 << 30
NULL_GRAMS_PER_MAP = 10
#: Largest observable (coordinates x snapshots, float64) collected into memory for a layer's reparametrisation null.
COLLECT_BYTES = 1 << 30
Verdict = Literal["conjugate", "non-conjugate", "undetermined"]
#: What set a verdict's threshold: the seed null's quantile, the reparametrisation null's, the stated margin,
#: or the eigenvalues' precision.
Basis = Literal["seed-null", "reparam-null", "margin", "tolerance"]
SpectrumMethod = Literal["memory", "gram"]
RankRule = int | Literal["auto", "k"] | None
#: How runs are compared: "reproducible" (default; with a seed null: the rank at which every eigenvalue is
#: reproducible across seeds, each run against the first run's family of seed runs in units of each eigenvalue's
#: spread, a parametric bound for one more run of that family) or "plain" (W1 of the rank rule's eigenvalues
#: beside the nulls' quantiles, no verdict: it cannot tell grokking from norm-constrained dynamics, issue 26).
Rule = Literal["reproducible", "plain"]


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


def mutual_nearest(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Which eigenvalues of ``reference`` have a mutual nearest neighbour in ``other`` (boolean per eigenvalue).

    λ_i is reproduced by ``other`` when its nearest μ in ``other`` has λ_i as its own nearest in
    ``reference``: the two spectra then identify that eigenvalue the same way, whatever the scale.
    """
    a = np.asarray(reference, dtype=np.complex128).ravel()
    b = np.asarray(other, dtype=np.complex128).ravel()
    cost = np.abs(a[:, None] - b[None, :])
    return cost.argmin(axis=0)[cost.argmin(axis=1)] == np.arange(a.size)


def slot_match(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``other``'s eigenvalues reordered onto ``reference``'s: the optimal one-to-one matching (cost |λ − μ|).

    Equal counts; entry i is the eigenvalue matched to reference[i] (with uniform mass and equal
    counts this is the matching W1 uses).
    """
    from scipy.optimize import linear_sum_assignment

    a = np.asarray(reference, dtype=np.complex128).ravel()
    b = np.asarray(other, dtype=np.complex128).ravel()
    rows, cols = linear_sum_assignment(np.abs(a[:, None] - b[None, :]))
    out = np.empty(a.size, dtype=np.complex128)
    out[rows] = b[cols]
    return out


def conformal_bound(values: np.ndarray, quantile: float) -> float:
    """The null's bound for one more exchangeable value: the ⌈q(n+1)⌉-th smallest of n (capped at the largest).

    A new value exchangeable with the n null values exceeds the m-th smallest with probability
    1 − m/(n+1) (conformal prediction); ``np.quantile`` of 10 values interpolates below the
    largest and so calls about one conjugate pair in six non-conjugate. With n < q/(1 − q)
    values the bound is the largest, and the test's level is 1/(n+1), not 1 − q.
    """
    ordered = np.sort(np.asarray(values, dtype=np.float64).ravel())
    m = min(ordered.size, int(np.ceil(quantile * (ordered.size + 1) - 1e-12)))
    return float(ordered[max(m, 1) - 1])


def _slot_variance(family: np.ndarray) -> np.ndarray:
    """Each eigenvalue slot's sample variance over the family's runs (rows; complex: |z − mean|², n − 1 dof)."""
    return np.sum(np.abs(family - family.mean(axis=0)) ** 2, axis=0) / (len(family) - 1)


def _about_family(z: np.ndarray, family: np.ndarray, bent_var: np.ndarray, floor: float) -> float:
    """A run's statistic against a family: mean_i |z_i − m_i|² / ((1 + 1/n) v_i + b_i) (rule "reproducible")."""
    scale = np.maximum((1 + 1 / len(family)) * _slot_variance(family) + bent_var, floor)
    return float(np.mean(np.abs(z - family.mean(axis=0)) ** 2 / scale))


def family_bound(family: np.ndarray, bent_var: np.ndarray, quantile: float, *, seed: int = 0, draws: int = 10_000,
                 floor: float = 1e-16) -> float:
    """The ``quantile`` of the statistic of one more run of a family's system, by parametric bootstrap.

    ``family``: n runs' eigenvalues on common slots (n × k complex); ``bent_var``: each slot's mean
    square move under the reparametrisation null's maps. A run z is scored against the family by
    mean_i |z_i − m_i|² / ((1 + 1/n) v_i + b_i), m and v the family's slot means and variances. For
    Gaussian runs that statistic's law depends on the n runs only through their covariance, which a
    handful of seeds cannot pin down: the draws take the family's own sample covariance (rank n − 1,
    every correlation between slots kept), draw n runs and a new one (plus each slot's bend), and
    re-estimate m and v from the drawn family as the test does, so the variance's few degrees of
    freedom and the slots' correlations both widen the bound. Seeded: the same call gives the same bound.
    """
    z = np.asarray(family, dtype=np.complex128)
    n, k = z.shape
    if n < 2:
        raise ParameterError("null", "needs at least one seed run beside the first to bound a new run's statistic")
    real = np.c_[z.real, z.imag]
    root = (real - real.mean(axis=0)) / np.sqrt(n - 1)  # rootᵀ root is the sample covariance
    rng = np.random.default_rng(seed)
    drawn = np.einsum("dnm,mc->dnc", rng.standard_normal((draws, n, n)), root)
    new = rng.standard_normal((draws, n)) @ root
    bend = np.sqrt(np.asarray(bent_var, dtype=np.float64) / 2)
    new = new + rng.standard_normal((draws, 2 * k)) * np.r_[bend, bend]
    drawn_c, new_c = drawn[..., :k] + 1j * drawn[..., k:], new[:, :k] + 1j * new[:, k:]
    centre = drawn_c.mean(axis=1)
    variance = np.sum(np.abs(drawn_c - centre[:, None]) ** 2, axis=1) / (n - 1)
    scale = np.maximum((1 + 1 / n) * variance + bent_var, floor)
    return float(np.quantile(np.mean(np.abs(new_c - centre) ** 2 / scale, axis=1), quantile))


# ---------------------------------------------------------------------- the reparametrisation null's maps
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wrapping arithmetic): a counter-based hash."""
    with np.errstate(over="ignore"):
        x = (np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)) & _M64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return x ^ (x >> np.uint64(31))


def _uniforms(keys: np.ndarray, seed: int, draw: int, stream: int) -> np.ndarray:
    """U(0, 1) per key, a pure function of (key, seed, draw, stream)."""
    salt = _splitmix(np.uint64(seed) * np.uint64(1_000_003) + np.uint64(draw) * np.uint64(97) + np.uint64(stream))
    return (_splitmix(keys ^ salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def coordinate_keys(data: np.ndarray) -> np.ndarray:
    """A key per coordinate of a (T, n) window, from its first and last values' bits.

    The map of a coordinate depends on its own trajectory only, never on where a block of
    columns starts, so any block split (and any backend) draws the same map.
    """
    ends = np.ascontiguousarray(np.asarray(data, dtype=np.float64)[[0, -1]]).view(np.uint64)
    return _splitmix(ends[0] ^ _splitmix(ends[1]))


def _tanh(z: np.ndarray | float) -> np.ndarray:
    """tanh through expm1 (exact for small z): numpy's own tanh is about ten times slower than its exp on a block."""
    e = np.expm1(2 * np.asarray(z, dtype=np.float64))
    return e / (e + 2)


@functools.cache
def _interior_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """a, and the largest |φ(u) − u| on [0, 1] of φ = tanh(a u)/tanh(a) and of φ = sinh(a u)/sinh(a): both grow
    with a, so the a of a wanted largest displacement is read back by interpolation."""
    a = np.linspace(1e-3, 12.0, 3000)
    u = np.linspace(0.0, 1.0, 1001)[:, None]
    return a, np.max(np.tanh(a * u) / np.tanh(a) - u, axis=0), np.max(u - np.sinh(a * u) / np.sinh(a), axis=0)


def reparametrise(data: np.ndarray, draw: int, *, strength: float, seed: int = 0, n_traj: int = 1) -> np.ndarray:
    """h(D): a smooth monotone map of each coordinate, scaled to the coordinate's own range.

    Each coordinate x with range [lo, hi] over the window, midpoint m and half-range s, becomes
    m + s·g(u) with u = (x − m)/s ∈ [−1, 1]. Two shapes, each moving a coordinate by at most
    ``strength`` times its half-range:

    - at the ends: g(u) = u + b u² + c u³, |b| + |c| = ``strength`` (the share w ~ U(0, 1) of it in
      the even part, both signs drawn); g' ≥ 1 − 3·strength > 0;
    - inside: g(u) = tanh(a u)/tanh(a) (outward) or sinh(a u)/sinh(a) (inward), ends kept, a set so
      the largest move is ``strength``; increasing for every a.

    Each map draws the share of its coordinates bent inside (uniform), then each coordinate's
    shape, direction and coefficients. So h is a diffeomorphism for strength < 1/3, and the family
    holds maps that bend every coordinate at its ends, every one inside, and mixtures. With
    ``n_traj`` stacked trajectories, coordinate j of every trajectory shares one map and one pooled
    range: h is one map of the system's state, as a conjugacy is.

    Parameters
    ----------
    data : ndarray of shape (T, n)
        A window of n coordinates (n_traj trajectories of n / n_traj each).
    draw : int
        Which map of the family (with ``seed``; the parameters come from a counter-based hash).
    """
    data = np.asarray(data, dtype=np.float64)
    t, n = data.shape
    x = data.reshape(t, n_traj, n // n_traj)
    lo, hi = x.min(axis=(0, 1)), x.max(axis=(0, 1))
    keys = coordinate_keys(x[:, 0, :])
    w = _uniforms(keys, seed, draw, 0)
    b = strength * w * np.where(_uniforms(keys, seed, draw, 1) < 0.5, -1.0, 1.0)
    c = strength * (1 - w) * np.where(_uniforms(keys, seed, draw, 2) < 0.5, -1.0, 1.0)
    mid, half = (hi + lo) / 2, (hi - lo) / 2
    half = np.where(half > 0, half, 1.0)
    share = _uniforms(np.zeros(1, dtype=np.uint64), seed, draw, 5)[0]  # this map's share of inside bends
    inside = _uniforms(keys, seed, draw, 3) < share
    outward = _uniforms(keys, seed, draw, 4) < 0.5
    table, outward_moves, inward_moves = _interior_tables()
    shapes = ((inside & outward, _tanh, float(np.interp(strength, outward_moves, table))),
              (inside & ~outward, np.sinh, float(np.interp(strength, inward_moves, table))))
    out = np.empty_like(x)
    step = max(1, (1 << 19) // (t * n_traj))  # columns per pass: temporaries of ~4 MiB stay in cache
    for first in range(0, x.shape[2], step):
        cols = slice(first, first + step)
        u = x[..., cols] - mid[cols]
        u /= half[cols]
        g = out[..., cols]
        np.multiply(c[cols], u, out=g)  # u + b u² + c u³ in Horner's form, in place
        g += b[cols]
        g *= u
        g += 1.0
        g *= u
        for bent, shape, a in shapes:
            if (where := np.flatnonzero(bent[cols])).size:
                g[..., where] = shape(a * u[..., where]) / shape(a)
        g *= half[cols]
        g += mid[cols]
    return out.reshape(t, n)


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
    observable: str = "all"


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


@dataclass(frozen=True)
class _Source:
    """What one spectrum is fitted from: snapshot pairs in memory, or a delay-embedded Gram."""

    method: SpectrumMethod
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    gram: np.ndarray | None = None
    n_features: int = 0
    dtype: Any = np.float64
    #: The Gram's rows that are snapshots (stacked trajectories: the separators between them are not).
    valid: np.ndarray | None = None

    def fit(self, rank: int | str | None) -> ReducedOperator:
        if self.method == "memory":
            assert self.x is not None and self.y is not None
            return ReducedOperator.from_pairs(self.x, self.y, rank=rank, dtype=self.dtype, excess="reduce")
        assert self.gram is not None
        return ReducedOperator.from_gram(self.gram, rank=rank, n_features=self.n_features, dtype=self.dtype,
                                         valid=self.valid, excess="reduce")


@dataclass(frozen=True)
class _Observed:
    """A run's observable over its window: its own source and one per reparametrisation draw."""

    store: RunStore
    window: tuple[int, int]
    observable: str
    n_observables: int
    n_traj: int
    delays: int
    source: _Source
    bent: tuple[_Source, ...] = field(default=())

    def spectrum(self, rank: int | str | None) -> Spectrum:
        op = self.source.fit(rank)
        return Spectrum(str(self.store.path), self.window, op.eigenvalues, op.rank, self.n_observables, self.n_traj,
                        self.delays, self.source.method, op.rank_requested, op.rank_note, self.observable)


def _observe(store: RunStore, *, window: Window, observable: str | None, layer: str | None, stack: int | bool | None,
             delays: int | None, small_observable: int, engine: Engine, draws: int = 0, strength: float = 0.1,
             seed: int = 0, gram: np.ndarray | None = None, progress: Progress | None = None,
             first_draw: int = 0, center: bool = False) -> _Observed:
    """Read what a run's spectra need, in one pass: the observable's pairs or Gram, and those of ``draws``
    reparametrised copies h_i(θ), i = first_draw, first_draw + 1, … (the null's maps act on the stored
    coordinates, before the observable). ``center``: pca:K scores with the mean removed (:func:`pca_scores`)."""
    kind, arg = parse_observable(observable, layer)
    lo, hi, delays = window_and_delays(store, window, delays)
    name = "all" if kind == "all" else f"{kind}:{arg}"
    cols, shape = observable_columns(store, arg if kind == "layer" else None)
    n_obs = cols.stop - cols.start
    n_traj = trajectories(store, stack, n_obs, shape)
    rows = slice(lo, hi + 1)
    state = n_obs // n_traj
    maps = range(first_draw, first_draw + draws)
    # in memory: a small observable, or stacked pca:K of a state smaller than its pooled snapshots (the state's
    # own axes, by an SVD); any other stacked observable is streamed into the pooled Gram of its trajectories
    if kind == "pca":
        in_memory = n_traj > 1 and state < n_traj * (hi - lo + 1)
    else:
        in_memory = n_obs * (delays + 1) <= small_observable

    def pairs(data: np.ndarray) -> _Source:
        if kind == "pca":
            data = stacked_pca_scores(data, n_traj, int(arg), center=center)  # type: ignore[arg-type]
        x, y = stacked_hankel(data, n_traj, delays)
        return _Source("memory", x, y, dtype=store.dtype)

    def from_gram(g: np.ndarray) -> _Source:
        """A source from the Gram of the window's snapshots (stacked: the pooled Gram, trajectory-major)."""
        if kind == "pca":
            scores = pooled_pca_scores(g, n_traj, int(arg), center=center)  # type: ignore[arg-type]
            x, y = stacked_hankel(scores, n_traj, delays)
            return _Source("memory", x, y, dtype=store.dtype)
        if n_traj > 1:
            embedded, valid = stacked_hankel_gram(g, n_traj, delays)
            return _Source("gram", gram=embedded, n_features=state * (delays + 1), dtype=store.dtype, valid=valid)
        return _Source("gram", gram=hankel_gram(g, delays), n_features=n_obs * (delays + 1), dtype=store.dtype)

    if in_memory or (kind == "layer" and draws and n_traj == 1):
        if not in_memory and n_obs * (hi - lo + 1) * 8 > COLLECT_BYTES:
            raise NotApplicableError(f"{store.path.name}: the reparametrisation null of layer {arg} needs its "
                                     f"{n_obs} coordinates in memory ({n_obs * (hi - lo + 1) * 8 / 2**30:.1f} GiB): "
                                     "use observable 'all' or 'pca:K', or null_size=0")
        data = engine.collect(store, cols, rows=rows, progress=progress)
        raise_nonfinite(store, lo + np.flatnonzero(~np.isfinite(data).all(axis=1)))
        bent_data = [reparametrise(data, i, strength=strength, seed=seed, n_traj=n_traj) for i in maps]
        if in_memory:
            return _Observed(store, (lo, hi), name, n_obs, n_traj, delays, pairs(data),
                             tuple(pairs(b) for b in bent_data))
        grams = [data @ data.T] + [b @ b.T for b in bent_data]
    elif n_traj > 1:
        grams = stacked_grams(store, cols, rows, n_traj, engine=engine, draws=maps, strength=strength, seed=seed,
                              progress=progress)
    elif draws:
        def kernel(block: Any, ops: Any) -> np.ndarray:
            b = ops.to_numpy(block)
            return np.stack([b @ b.T] + [(h := reparametrise(b, i, strength=strength, seed=seed)) @ h.T
                                         for i in maps])

        total = None
        for _, part in engine.map_blocks(store, kernel, rows=rows, progress=progress):
            total = part if total is None else total + part
        assert total is not None
        grams = list((total + total.transpose(0, 2, 1)) / 2)
    else:
        grams = [gram if gram is not None else
                 engine.gram(store, rows=rows, groups={"obs": [cols]}, progress=progress)["obs"]]
    # a NaN/Inf in snapshot s of any trajectory makes its diagonal entry non-finite (stacked: at a·T + s)
    raise_nonfinite(store, lo + np.unique(np.flatnonzero(~np.isfinite(np.diag(grams[0]))) % (hi - lo + 1)))
    # pca:K: at most the fitted snapshots (each trajectory's but its last) and the state's coordinates
    n_shown = min(int(arg), n_traj * (hi - lo), state) if kind == "pca" else n_obs  # type: ignore[arg-type]
    return _Observed(store, (lo, hi), name, n_shown, n_traj, delays, from_gram(grams[0]),
                     tuple(from_gram(g) for g in grams[1:]))


def stacked_grams(store: RunStore, columns: slice, rows: slice, n_traj: int, *, engine: Engine,
                  draws: Sequence[int] = (), strength: float = 0.1, seed: int = 0,
                  progress: Progress | None = None) -> list[np.ndarray]:
    """The pooled Gram of stacked trajectories' snapshots, and that of h_i(θ) for each of ``draws``, in one pass.

    ``columns`` hold ``n_traj`` trajectories of one system, each ``state`` consecutive coordinates; entry
    (a·T + s, b·T + t) of the (n_traj·T)² result is x_a(s)ᵀ x_b(t), the snapshots s and t of trajectories a
    and b in the window ``rows`` of T snapshots. Cross-trajectory products pair coordinate j of one
    trajectory with coordinate j of another, so the state is read a band of coordinates at a time, each
    band from every trajectory (one engine read per trajectory's part of the band): each coordinate is read
    once and no more than a block of them is held. Each draw's map h_i (:func:`reparametrise`, one map per
    state coordinate, its range pooled over the trajectories) bends the band before its Gram is added.
    """
    t = rows.stop - rows.start
    state = (columns.stop - columns.start) // n_traj
    width = store.block_columns(n_traj * t, block_bytes=engine.block_bytes)
    bands = range(0, state, width)
    grams = [np.zeros((n_traj * t, n_traj * t)) for _ in range(1 + len(draws))]
    for done, first in enumerate(bands, 1):
        stop = min(state, first + width)
        band = np.empty((n_traj, t, stop - first))  # trajectory-major: band.reshape(n_traj·T, w) is the pooled rows
        for a in range(n_traj):
            start = columns.start + a * state
            band[a] = engine.collect(store, slice(start + first, start + stop), rows=rows)
        pooled = band.reshape(n_traj * t, -1)
        grams[0] += pooled @ pooled.T
        if draws:
            data = band.transpose(1, 0, 2).reshape(t, -1)  # (T, n_traj·w), as reparametrise takes stacked data
            for gram, i in zip(grams[1:], draws, strict=True):
                bent = reparametrise(data, i, strength=strength, seed=seed, n_traj=n_traj)
                bent = bent.reshape(t, n_traj, -1).transpose(1, 0, 2).reshape(n_traj * t, -1)
                gram += bent @ bent.T
        if progress is not None:
            progress(done, len(bands))
    return [(g + g.T) / 2 for g in grams]


def koopman_spectrum(
    store: RunStore,
    *,
    window: Window = None,
    observable: str | None = None,
    layer: str | None = None,
    stack: int | bool | None = None,
    delays: int | None = None,
    rank: int | str | None = "auto",
    small_observable: int = SMALL_OBSERVABLE,
    engine: Engine | None = None,
    gram: np.ndarray | None = None,
    progress: Progress | None = None,
    center: bool = False,
) -> Spectrum:
    """Koopman eigenvalues of a store's observable (all weights, one layer, or PCA scores) over a window.

    ``stack`` splits the observable into independent trajectories of one system: an integer N
    (θ split into N equal parts), True (the tensor's first axis) or None (the recipe's default:
    on for mirror-descent stores, with 4 delays). ``gram`` may pass a precomputed Gram of exactly
    this window and observable. An explicit ``rank`` above the directions the run resolves is
    reduced (``Spectrum.rank_note`` says so). ``center``: pca:K scores with their mean removed
    (default False: Redman et al. 2024's projection; :func:`pca_scores`).
    """
    rank = check_rank(rank)
    observed = _observe(store, window=window, observable=observable, layer=layer, stack=stack, delays=delays,
                        small_observable=small_observable, engine=engine or Engine(), gram=gram, progress=progress,
                        center=center)
    return observed.spectrum(rank)


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class PairVerdict:
    """Whether two runs are conjugate: their W1, the verdict and what decided it."""

    a: str
    b: str
    distance: float
    verdict: Verdict
    basis: Basis | None
    #: What the threshold is compared with: W1 (rule "plain") or the standardised distance (rule "reproducible").
    statistic: float | None = None
    #: Why the verdict is "undetermined" and what would determine it (None for a verdict).
    reason: str | None = None

    @property
    def score(self) -> float:
        return self.distance if self.statistic is None else self.statistic

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "distance": self.distance, "statistic": self.score,
                "verdict": self.verdict, "basis": self.basis, "reason": self.reason}


@dataclass(frozen=True)
class WindowTransitions:
    """W1 between the spectra of consecutive windows of one run (Redman et al. 2024 fig. 4)."""

    run: str
    bounds: tuple[tuple[int, int], ...]
    steps: tuple[tuple[int, int], ...]
    k: int
    distance: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "bounds": [list(b) for b in self.bounds], "steps": [list(s) for s in self.steps],
                "k": self.k, "distance": self.distance.tolist()}


@dataclass(frozen=True)
class KChoice:
    """How the k compared per run was chosen, step by step (the CLI's short line; ``k_note`` has the reasons).

    ``asked``: k asked for (or, with k=None, the largest rank any run resolves); ``resolved``: after
    the cap by the runs' ranks, ``limiting_run`` being the run that set it and ``limit`` why ("resolves":
    it resolves fewer directions than asked; "rank": the rank rule gives it that rank);
    ``reproducible``: the rank rule "reproducible" chose, when below ``resolved`` (None otherwise).
    """

    asked: int
    resolved: int
    limiting_run: str | None = None
    limit: Literal["resolves", "rank"] | None = None
    reproducible: int | None = None

    @property
    def k(self) -> int:
        return self.resolved if self.reproducible is None else self.reproducible

    def to_dict(self) -> dict[str, Any]:
        return {"asked": self.asked, "resolved": self.resolved, "limiting_run": self.limiting_run,
                "limit": self.limit, "reproducible": self.reproducible}


@dataclass(frozen=True)
class ReparamNull:
    """The reparametrisation null: the distance between a run's spectrum and its spectrum through a smooth
    monotone coordinate-wise map whose largest displacement is ``strength`` times each coordinate's
    half-range over the window (:func:`reparametrise`), for ``size`` maps split over the first run's
    family (the first run and its seed-null runs, :func:`family_draws`)."""

    size: int
    strength: float
    seed: int
    distances: np.ndarray
    threshold: float | None
    family: str = ("per coordinate, u = (x - mid) / half-range: g(u) = u + b u^2 + c u^3 with |b| + |c| = strength, "
                   "or tanh(a u)/tanh(a) or sinh(a u)/sinh(a) moving the inside by up to strength; each map's share "
                   "of inside bends uniform")

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "strength": self.strength, "seed": self.seed, "family": self.family,
                "distances": self.distances.tolist(), "threshold": self.threshold}


@dataclass(frozen=True)
class ConjugacyResult:
    """Distances between runs' Koopman spectra and verdicts against a seed null and a reparametrisation
    null (docs/methods.md §4.3-§4.5).

    ``k`` eigenvalues are compared per run; ``k_requested`` is what was asked and ``k_note``
    says why fewer were compared (None when not). ``null_threshold`` is the seed null's bound,
    ``reparam.threshold`` the reparametrisation null's; ``threshold`` the one that decided. Rule
    "plain": ``null_distances`` are W1 between the first run and its seed runs, pairwise, and the
    bound their quantile; rule "reproducible": each of those runs' statistic against the others
    (shown beside the bound, which is :func:`family_bound` for one more run of the family).
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
    reparam: ReparamNull | None = None
    observable: str = "all"
    basis: Basis | None = None
    rule: Rule = "plain"
    statistic: np.ndarray | None = None
    scales: np.ndarray | None = None
    rule_note: str | None = None
    k_choice: KChoice | None = None
    #: Why the seed null that set the threshold is weak (one run), None when it is not.
    null_note: str | None = None
    #: pca:K scores with the mean removed (False means Redman et al. 2024's projection).
    center: bool = False

    @property
    def scores(self) -> np.ndarray:
        """The matrix the threshold is compared with: W1 (rule "plain") or the standardised distances."""
        return self.distance if self.statistic is None else self.statistic

    def ratio(self, verdict: PairVerdict) -> float | None:
        """A pair's statistic over the threshold (conjugate iff <= 1); None without a threshold."""
        return verdict.score / self.threshold if self.threshold else None

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

    @property
    def notes(self) -> list[str]:
        """Why k or a run's rank was reduced below what was asked (empty when neither was)."""
        return [n for n in [self.k_note, *(s.rank_note for s in self.spectra)] if n]

    def to_dataframe(self) -> Any:
        """One row per pair of runs compared (pandas): W1 between their spectra, the statistic compared with
        the threshold, the verdict, what decided it and, for "undetermined", why."""
        from ..tables import dataframe

        rows = [v.to_dict() for v in self.verdicts]
        keys = ("a", "b", "distance", "statistic", "verdict", "basis", "reason")
        return dataframe({key: [row[key] for row in rows] for key in keys}, index=["a", "b"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": list(self.runs),
            "eigenvalues": [complex_pairs(self.eigenvalues(i)) for i in range(len(self.runs))],
            "ranks": [s.rank for s in self.spectra],
            "rank_notes": [s.rank_note for s in self.spectra],
            "k": self.k,
            "k_requested": self.k_requested,
            "k_note": self.k_note,
            "k_choice": self.k_choice.to_dict() if self.k_choice else None,
            "reduced": self.notes,
            "distance": self.distance.tolist(),
            "null_runs": list(self.null_runs),
            "null_distances": self.null_distances.tolist(),
            "quantile": self.quantile,
            "threshold": self.threshold,
            "basis": self.basis,
            "null_threshold": self.null_threshold,
            "reparam_null": self.reparam.to_dict() if self.reparam else None,
            "margin": self.margin,
            "rule": self.rule,
            "rule_note": self.rule_note,
            "null_note": self.null_note,
            "statistic": self.scores.tolist(),
            "scales": None if self.scales is None else self.scales.tolist(),
            "verdicts": [v.to_dict() for v in self.verdicts],
            "windows": self.windows.to_dict() if self.windows else None,
            "settings": {"observable": self.observable, "center": self.center, "layer": self.layer, "rank": self.rank,
                         "stack": [s.n_trajectories for s in self.spectra],
                         "delays": [s.delays for s in self.spectra], "method": [s.method for s in self.spectra],
                         "windows": [list(s.window) for s in self.spectra]},
            "seconds": self.seconds,
        }


# ---------------------------------------------------------------------- the analysis
def _check_rank_rule(rank: int | str | None) -> RankRule:
    return "k" if rank == "k" else check_rank(rank)  # type: ignore[return-value]


def _check_center(center: bool, kind: str) -> bool:
    if not isinstance(center, bool | np.bool_):
        raise ParameterError("center", f"must be True or False, got {center!r}")
    if center and kind != "pca":
        raise ParameterError("center", "applies to observable 'pca:K' only (the other observables are never centred)")
    return bool(center)


def _check_stack(stack: int | bool | None) -> int | bool | None:
    if stack is None or isinstance(stack, bool):
        return stack
    return check_int("stack", stack, low=1)


@dataclass(frozen=True)
class ConjugacyParams:
    """The options of a conjugacy comparison, checked (see :func:`conjugacy` for their meaning)."""

    window: Window = None
    layer: str | None = None
    rank: RankRule = "k"
    k: int | None = 10
    quantile: float = 0.95
    tolerance: float = 1e-8
    margin: float = 0.0
    windows: int | None = None
    stack: int | bool | None = None
    delays: int | None = None
    small_observable: int = SMALL_OBSERVABLE
    observable: str = "all"
    null_size: int = 20
    null_strength: float = 0.1
    null_seed: int = 0
    rule: Rule = "reproducible"
    center: bool = False

    @classmethod
    def checked(cls, *, window: Window = None, layer: str | None = None, rank: int | str | None = "k",
                k: int | None = 10, quantile: float = 0.95, tolerance: float = 1e-8, margin: float = 0.0,
                windows: int | None = None, stack: int | bool | None = None, delays: int | None = None,
                small_observable: int = SMALL_OBSERVABLE, observable: str | None = None, null_size: int = 20,
                null_strength: float = 0.1, null_seed: int = 0, rule: str = "reproducible",
                center: bool = False) -> ConjugacyParams:
        kind, arg = parse_observable(observable, layer)
        if isinstance(null_size, int) and not isinstance(null_size, bool) and null_size > MAX_NULL_SIZE:
            raise ParameterError("null_size", f"must be an integer from 0 to {MAX_NULL_SIZE}, got {null_size}: the "
                                              f"null's conformal bound is exact to 1/(n + 1), 0.1 % at {MAX_NULL_SIZE} "
                                              "maps, and each map costs a DMD fit and its Grams in memory")
        if rule not in ("reproducible", "plain"):
            raise ParameterError("rule", f"must be 'reproducible' or 'plain', got {rule!r}")
        return cls(
            window=window,
            layer=arg if kind == "layer" else None,  # type: ignore[arg-type]
            rank=_check_rank_rule(rank),
            k=None if k is None else check_int("k", k, low=1),
            quantile=check_float("quantile", quantile, low=0, high=1, low_open=True),
            tolerance=check_float("tolerance", tolerance, low=0),
            margin=check_float("margin", margin, low=0),
            windows=None if windows is None else check_int("windows", windows, low=2),
            stack=_check_stack(stack),
            delays=None if delays is None else check_int("delays", delays, low=0),
            small_observable=check_int("small_observable", small_observable, low=0),
            observable="all" if kind == "all" else f"{kind}:{arg}",
            null_size=check_int("null_size", null_size, low=0, high=MAX_NULL_SIZE),
            null_strength=check_float("null_strength", null_strength, low=0, high=1 / 3, low_open=True,
                                      high_open=True),
            null_seed=check_int("null_seed", null_seed, low=0),
            rule=rule,  # type: ignore[arg-type]
            center=_check_center(center, kind),
        )


def conjugacy(
    stores: Sequence[RunStore | str | os.PathLike[str]],
    *,
    window: Window = None,
    observable: str | None = None,
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
    params = ConjugacyParams.checked(window=window, layer=layer, rank=rank, k=k, quantile=quantile,
                                     tolerance=tolerance, margin=margin, windows=windows, stack=stack, delays=delays,
                                     small_observable=small_observable, observable=observable, null_size=null_size,
                                     null_strength=null_strength, null_seed=null_seed, rule=rule, center=center)
    return fit_conjugacy(stores, params, null=null, engine=engine, progress=progress)


def fit_conjugacy(stores: Sequence[RunStore | str | os.PathLike[str]], params: ConjugacyParams, *,
                  null: Sequence[RunStore | str | os.PathLike[str]] = (), engine: Engine | None = None,
                  progress: Progress | None = None) -> ConjugacyResult:
    """Fit checked :class:`ConjugacyParams`: every run's spectrum, both nulls, the distances and the verdicts."""
    t0 = time.perf_counter()
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
    # every run's window, layer and stacking is checked before the first spectrum
    run_windows = {id(s): window_and_delays(s, params.window, params.delays)[:2] for s in runs + null_runs}
    _check_spacings(runs + null_runs, run_windows)
    for s in runs + null_runs:
        cols, shape = observable_columns(s, params.layer)
        trajectories(s, params.stack, cols.stop - cols.start, shape)
    edges = _window_edges(runs[0], params) if params.windows else None
    engine = engine or Engine()
    # the reparametrisation null's maps are split over the first run's family (the first run and every
    # seed-null run): how far a map moves the eigenvalues depends on the trajectory it bends
    draws = family_draws(params.null_size if len(runs) > 1 else 0, 1 + len(null_runs))
    _check_null_memory(params.null_size, max(n for _, n in draws),
                       max(run_windows[id(s)][1] - run_windows[id(s)][0] + 1 for s in [runs[0], *null_runs]))

    def observe(store: RunStore, n: tuple[int, int] = (0, 0)) -> _Observed:
        return _observe(store, window=run_windows[id(store)], observable=params.observable, layer=None, stack=params.stack,
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
    base = spectra[0].eigenvalues[:k]
    scales = None
    if rule == "reproducible":
        # every spectrum on the first run's eigenvalue slots; the first run's family (it and its seed runs) is
        # the sample of its system: a run is compared with the family's mean, in units of each slot's spread
        slots = [slot_match(base, s.eigenvalues[:k]) for s in spectra_all]
        family = np.array([slots[f] for f in members])
        centre, seed_var = family.mean(axis=0), _slot_variance(family)
        # a bent spectrum's deviation from its own run's, on the first run's slots
        bent_slots = {f: [slot_match(base, e) for e in bent[f]] for f in members}
        bends = [np.abs(z - slots[f]) ** 2 for f in members for z in bent_slots[f]]
        bent_var = np.mean(bends, axis=0) if bends else np.zeros(k)
        floor = params.tolerance ** 2
        # a new run of the system about the family's mean: (1 + 1/n) σ² + bend; two new runs: 2 (σ² + bend)
        about_centre = np.maximum((1 + 1 / len(members)) * seed_var + bent_var, floor)
        between = np.maximum(2 * (seed_var + bent_var), floor)
        scales = np.sqrt(about_centre)

        def pair(i: int, j: int) -> float:
            if i == j:
                return 0.0
            if 0 in (i, j):
                return float(np.mean(np.abs(slots[max(i, j)] - centre) ** 2 / about_centre))
            return float(np.mean(np.abs(slots[i] - slots[j]) ** 2 / between))

        statistic = np.array([[pair(i, j) for j in range(len(runs))] for i in range(len(runs))])
        # shown beside the bound: each family run against the others (leave one out), where 2 or more remain
        null_distances = np.array([_about_family(family[m], np.delete(family, m, axis=0), bent_var, floor)
                                   for m in range(len(members))] if len(members) > 2 else [])
        rep = np.array([np.mean(np.abs(z - centre) ** 2 / about_centre) for f in members for z in bent_slots[f]])
        null_threshold: float | None = family_bound(family, bent_var, params.quantile, seed=params.null_seed,
                                                    floor=floor)
        reparam_bound = conformal_bound(rep, params.quantile) if rep.size else None
    else:
        statistic = None
        null_distances = (_distances([spectra_all[f] for f in members], k)[np.triu_indices(len(members), 1)]
                          if null_runs else np.zeros(0))
        rep = np.array([wasserstein(spectra_all[f].eigenvalues[:k], e) for f in members for e in bent[f]])
        null_threshold = float(np.quantile(null_distances, params.quantile)) if null_distances.size else None
        reparam_bound = float(np.quantile(rep, params.quantile)) if rep.size else None
    reparam = ReparamNull(len(rep), params.null_strength, params.null_seed, rep, reparam_bound) if rep.size else None
    if statistic is None:  # rule "plain": distances and the nulls' bounds, no verdict beyond a stated margin
        threshold, basis = None, None
        verdicts = _without_verdict(runs, distance, params, PLAIN_NO_VERDICT if null_runs else NO_SEED_NULL)
    else:
        threshold, basis, verdicts = _standardised_verdicts(runs, distance, statistic, null_threshold,
                                                            reparam.threshold if reparam else None, params)
    transitions = _window_transitions(runs[0], edges, params, engine, progress) if edges is not None else None
    null_note = None
    if rule == "reproducible" and basis == "seed-null" and not null_threshold:
        null_note = ("the seed-null runs have the first run's eigenvalues exactly (no spread), so the bound is 0 and "
                     "every difference counts as non-conjugate: runs of a deterministic system need the "
                     "reparametrisation null (null_size), and a seed null needs runs from other seeds")
    elif len(null_runs) == 1 and basis == "seed-null":  # rule "reproducible" (rule "plain" has no basis)
        null_note = ("the threshold comes from one seed-null run, so each eigenvalue's spread is estimated from "
                     "two runs (one degree of freedom): the bound is wide and only large differences are called "
                     "non-conjugate: give more seed runs (4 or more)")
    return ConjugacyResult(tuple(str(r.path) for r in runs), tuple(spectra), k, distance,
                           tuple(str(r.path) for r in null_runs), null_distances, params.quantile, threshold, verdicts,
                           transitions, params.layer, params.rank, time.perf_counter() - t0,
                           null_threshold=null_threshold, margin=params.margin, k_requested=params.k, k_note=k_note,
                           reparam=reparam, observable=params.observable, basis=basis, rule=rule,
                           statistic=statistic, scales=scales, rule_note=rule_note, k_choice=choice,
                           null_note=null_note, center=params.center)


def _reproducible_fit(observed: Sequence[_Observed], spectra: list[Spectrum], choice: KChoice, k_note: str | None,
                      n_runs: int) -> tuple[list[Spectrum], KChoice, str | None]:
    """Every spectrum at the largest rank r <= k at which the seed null reproduces every eigenvalue of the first run.

    An eigenvalue is reproduced by a seed run when the two are mutual nearest neighbours
    (:func:`mutual_nearest`); below the rank where SGD noise directions enter, every eigenvalue
    is; a rank that splits a degenerate pair is skipped. Rank 1 when none qualifies.
    """
    first, seeds = observed[0], observed[n_runs:]
    k = choice.k
    chosen = 1
    for r in range(k, 0, -1):
        base = spectra[0].eigenvalues[:r] if r == k else first.spectrum(r).eigenvalues[:r]
        fits = ([s.eigenvalues[:r] for s in spectra[n_runs:]] if r == k
                else [o.spectrum(r).eigenvalues[:r] for o in seeds])
        if all(mutual_nearest(base, f).all() for f in fits):
            chosen = r
            break
    if chosen == k:
        return spectra, choice, k_note
    note = (f"{k_note}; " if k_note else "") + (f"{chosen} of {k} eigenvalue(s) reproducible: at rank {chosen} every eigenvalue of "
            f"{os.path.basename(spectra[0].run)} has a mutual nearest neighbour in every seed-null run's spectrum "
            f"(at rank{f's {chosen + 1}..{k}' if k > chosen + 1 else f' {k}'} some do not): every run fitted at rank "
            f"{chosen}")
    return [o.spectrum(chosen) for o in observed], replace(choice, reproducible=chosen), note


def _fit_all(observed: Sequence[_Observed], params: ConjugacyParams) -> tuple[list[Spectrum], KChoice, str | None]:
    """Every run's spectrum under the rank rule, how k was chosen and why it was reduced (None when not).

    Rank "k": each run at rank k first; when one resolves fewer directions (r < k), every run
    is refitted at r, so all compared eigenvalues come from DMDs of one rank.
    """
    if params.rank != "k":
        spectra = [o.spectrum(params.rank) for o in observed]
        choice, note = _compared(params.k, spectra)
        return spectra, choice, note
    asked = params.k if params.k is not None else max(o.source.fit("auto").rank for o in observed)
    spectra = [o.spectrum(asked) for o in observed]
    common = min(s.rank for s in spectra)
    if common < asked:
        smallest = next(s for s in spectra if s.rank == common)
        note = (f"k {asked} asked for, but {os.path.basename(smallest.run)} resolves only {common} direction(s) "
                f"({smallest.rank_note}): every run fitted at rank {common}, {common} eigenvalue(s) compared")
        spectra = [o.spectrum(common) for o in observed]
        return spectra, KChoice(asked, common, smallest.run, "resolves"), note
    return spectra, KChoice(asked, asked), None


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


def _check_null_memory(null_size: int, draws: int, n_window: int) -> None:
    """Refuse a reparametrisation null larger than the default whose maps would hold more than NULL_BYTES
    (one run's ``draws`` maps, each NULL_GRAMS_PER_MAP (T+1)² float64 matrices at its peak)."""
    per_map = NULL_GRAMS_PER_MAP * n_window**2 * 8
    if null_size <= 20 or draws * per_map <= NULL_BYTES:
        return
    fits = max(20, NULL_BYTES // per_map)
    raise ParameterError("null_size", f"{null_size} needs about {draws * per_map / 2**30:.1f} GiB for the "
                                      f"reparametrisation null over windows of {n_window} snapshots ({per_map / 2**20:.1f}"
                                      f" MiB a map); at most {fits} fit in {NULL_BYTES / 2**30:.0f} GiB (a shorter "
                                      "window needs less)")


def family_draws(size: int, members: int) -> list[tuple[int, int]]:
    """(first draw, draws) of the reparametrisation null's ``size`` maps for each of ``members`` runs
    (the first run, then each seed-null run): as equal as the count allows, consecutive draw indices, so
    every member is bent by other maps and the whole null holds ``size`` maps."""
    counts = [size // members + (j < size % members) for j in range(members)]
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
    return [(int(a), int(n)) for a, n in zip(firsts, counts, strict=True)]


def _open(run: RunStore | str | os.PathLike[str]) -> RunStore:
    return run if isinstance(run, RunStore) else RunStore(run)


def _compared(k: int | None, spectra: Sequence[Spectrum]) -> tuple[KChoice, str | None]:
    """The k compared: what was asked, capped by the smallest rank (and a note saying so)."""
    smallest = min(s.rank for s in spectra)
    if k is None or k <= smallest:
        return KChoice(smallest if k is None else k, smallest if k is None else k), None
    limiting = next(s for s in spectra if s.rank == smallest)
    limit: Literal["resolves", "rank"] = "resolves" if limiting.rank_note else "rank"
    return (KChoice(k, smallest, limiting.run, limit),
            f"k {k} asked for, but {os.path.basename(limiting.run)} keeps only {smallest} eigenvalue(s): "
            f"compared {smallest}")


def _distances(spectra: Sequence[Spectrum], k: int) -> np.ndarray:
    """The symmetric matrix of W1 between the k first eigenvalues of every pair."""
    n = len(spectra)
    distance = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            distance[i, j] = distance[j, i] = wasserstein(spectra[i].eigenvalues[:k], spectra[j].eigenvalues[:k])
    return distance


def _null_bounds(seed_threshold: float | None, reparam_threshold: float | None) -> dict[Basis, float]:
    """The nulls that gave a bound, by name."""
    bounds: dict[Basis, float] = {}
    if seed_threshold is not None:
        bounds["seed-null"] = seed_threshold
    if reparam_threshold is not None:
        bounds["reparam-null"] = reparam_threshold
    return bounds


#: An undetermined verdict's reason when no seed null was given.
NO_SEED_NULL = ("give --null SEED_RUN (the first run's configuration trained from other seeds): without a seed null "
                "a distance cannot be told from seed-to-seed variation")
#: An undetermined verdict's reason under rule "plain" (issue 26): W1 over every compared eigenvalue, the noise
#: directions' included, against the nulls' quantiles called grokking vs norm-constrained transformers and planted
#: systems one eigenvalue 0.02 apart "conjugate", where rule "reproducible" tells them apart.
PLAIN_NO_VERDICT = ("rule plain gives distances and the nulls' bounds only: W1 over every compared eigenvalue cannot "
                    "tell runs whose reproducible eigenvalues differ (grokking vs norm-constrained transformers, "
                    "one eigenvalue 0.02 apart) from seed variation; the default --rule reproducible gives a verdict")
#: How each undetermined verdict's reason is shown in one line (CLI, reports).
_UNDETERMINED_SHOWN = {NO_SEED_NULL: "undetermined: give --null SEED_RUN",
                       PLAIN_NO_VERDICT: "undetermined: rule plain gives distances only"}


def verdict_label(verdict: PairVerdict) -> str:
    """A verdict as the CLI and the reports show it: the verdict, or "undetermined: " and what would determine it."""
    return _UNDETERMINED_SHOWN.get(verdict.reason or "", verdict.verdict)


def _without_verdict(runs: Sequence[RunStore], distance: np.ndarray, params: ConjugacyParams,
                     reason: str) -> tuple[PairVerdict, ...]:
    """Pairs the nulls cannot decide: undetermined (with ``reason``), except a W1 within the margin the user
    stated (conjugate whatever a null would say).

    Without a seed null: two seed runs of one configuration lie further apart than the reparametrisation
    null's bends, so its bound alone called them non-conjugate (issue 25); it is reported beside the
    distances, and decides only beside a seed null. Under rule "plain" (:data:`PLAIN_NO_VERDICT`): the nulls'
    bounds on W1 are reported, no verdict."""
    verdicts = []
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            w1 = float(distance[i, j])
            if params.margin and w1 <= params.margin:
                verdicts.append(PairVerdict(str(runs[i].path), str(runs[j].path), w1, "conjugate", "margin"))
            else:
                verdicts.append(PairVerdict(str(runs[i].path), str(runs[j].path), w1, "undetermined", None,
                                            reason=reason))
    return tuple(verdicts)


def _standardised_verdicts(runs: Sequence[RunStore], distance: np.ndarray, statistic: np.ndarray,
                           seed_threshold: float | None, reparam_threshold: float | None, params: ConjugacyParams,
                           ) -> tuple[float | None, Basis | None, tuple[PairVerdict, ...]]:
    """Rule "reproducible": the nulls' bound on the standardised statistic decides, except that a pair whose W1
    is within the stated margin (or the eigenvalues' precision) is conjugate whatever the nulls (the margin
    is in W1, the units the user states it in)."""
    bounds = _null_bounds(seed_threshold, reparam_threshold)
    basis: Basis | None = max(bounds, key=bounds.__getitem__) if bounds else None
    threshold = bounds[basis] if basis is not None else None
    verdicts = []
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            w1, score = float(distance[i, j]), float(statistic[i, j])
            if w1 <= max(params.margin, params.tolerance):
                verdict: Verdict = "conjugate"
                decided: Basis | None = "margin" if w1 <= params.margin else "tolerance"
            elif threshold is None:
                verdict, decided = "undetermined", None
            else:
                verdict, decided = ("conjugate" if score <= threshold else "non-conjugate"), basis
            verdicts.append(PairVerdict(str(runs[i].path), str(runs[j].path), w1, verdict, decided, score))
    return threshold, basis, tuple(verdicts)


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
    cols, shape = observable_columns(store, params.layer)
    n_traj = trajectories(store, params.stack, cols.stop - cols.start, shape)
    full_gram = None
    if n_traj == 1 and ((cols.stop - cols.start) * (d + 1) > params.small_observable
                        or params.observable.startswith("pca:")):
        full_gram = engine.gram(store, rows=slice(lo, hi + 1), groups={"obs": [cols]}, progress=progress)["obs"]
    observed = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        sub = None if full_gram is None else full_gram[a - lo : b - lo, a - lo : b - lo]
        observed.append(_observe(store, window=(int(a), int(b) - 1), observable=params.observable, layer=None,
                                 stack=params.stack, delays=params.delays, small_observable=params.small_observable,
                                 engine=engine, gram=sub, center=params.center))
    spectra, choice, _ = _fit_all(observed, params)
    k = choice.k
    bounds = tuple((int(a), int(b) - 1) for a, b in zip(edges[:-1], edges[1:], strict=True))
    steps = tuple((int(store.steps[a]), int(store.steps[b])) for a, b in bounds)
    return WindowTransitions(str(store.path), bounds, steps, k, _distances(spectra, k))
