"""``traj landscape``: the loss landscape in the plane of a trajectory's first two principal directions
(the KGA paper, fig. 6b).

With the snapshots θ₀ … θ_T as the columns of D (N × (T+1)) and G = DᵀD from one Gram pass:

1. Gc = J G J, J = I − 11ᵀ/(T+1), is the Gram of the centred trajectory; its top two eigenpairs
   (σ₁², v₁), (σ₂², v₂) are the principal directions in snapshot space (v_i ⊥ 1).
2. Signs: v_i[T] − v_i[0] ≥ 0, so the run goes left to right and bottom to top.
3. The snapshots' coordinates ("scores") are S = [σ₁v₁, σ₂v₂] ((T+1)×2).
4. ONE D·C pass with C = [1/(T+1)·1, v₁/σ₁, v₂/σ₂] gives the mean μ and the orthonormal
   directions d₁, d₂ (d_iᵀd_j = v_iᵀGv_j/(σ_iσ_j) = δ_ij, checked from G).
5. The plane θ(x, y) = c + x d₁ + y d₂ with c = μ ("mean") or θ_T ("final": coordinates s_k − s_T),
   and on a grid covering the scores with a margin, the recipe's validation loss.

Several runs (a kga-replay's plain and KGA runs) share one plane: the joint Gram of
[D₁, D₂, …] comes from one pass that reads every store's aligned column blocks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine import Engine
from ..errors import NotApplicableError, ParameterError, TrajError
from ..options import Params, choice, integer, number
from ..progress import Progress
from ..store import RunStore
from .evaluator import ModelSource
from .scratch import PIECE
from .windows import check_gram_finite

__all__ = ["GridTooSlowError", "LandscapeParams", "LandscapeResult", "Plane", "ProjectedRun", "fit_landscape",
           "fit_plane", "grid_axes", "grid_losses"]

#: Grid points per axis at most (the grid holds n² evaluations).
MAX_GRID = 201
#: Snapshots (of all runs together) one joint Gram may hold.
MAX_SNAPSHOTS = 20_001


class GridTooSlowError(TrajError):
    """The grid's estimated evaluation time exceeds the limit the caller set."""


@dataclass(frozen=True)
class LandscapeParams(Params):
    """The options of a landscape, each checked when the class is built (see :func:`fit_landscape`)."""

    grid: int = integer(25, low=2, high=MAX_GRID, help="Grid points per axis (grid² loss evaluations).")
    margin: float = number(0.25, low=0, high=10, help="Margin around the projected snapshots, a fraction of their span.")
    center: str = choice("mean", ("mean", "final"),
                         help="The plane through the 'mean' snapshot or the first run's 'final' weights.")
    max_seconds: float = number(600.0, low=0, low_open=True,
                                help="Refuse a grid whose estimated evaluation time exceeds this.")


@dataclass(frozen=True)
class Plane:
    """The plane of the first two principal directions of one or several trajectories.

    mean : ndarray of shape (N,)
        μ, the mean snapshot (of all runs together).
    directions : ndarray of shape (2, N)
        d₁, d₂ (orthonormal).
    scores : tuple of ndarray of shape (T_i+1, 2)
        Each run's snapshots' coordinates d_iᵀ(θ_k − μ).
    sigma : ndarray of shape (2,)
        σ₁, σ₂, the singular values of the centred trajectory.
    explained : float
        (σ₁² + σ₂²) / tr(Gc), the share of the motion (about the mean) the plane holds.
    """

    mean: np.ndarray
    directions: np.ndarray
    scores: tuple[np.ndarray, ...]
    sigma: np.ndarray
    explained: float


@dataclass(frozen=True)
class ProjectedRun:
    """One run's trajectory in the plane (coordinates relative to the plane's centre)."""

    label: str
    store: str
    coordinates: np.ndarray  # (T+1, 2)
    steps: np.ndarray  # (T+1,)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "store": self.store, "coordinates": self.coordinates.tolist(),
                "steps": self.steps.tolist()}


@dataclass(frozen=True)
class LandscapeResult:
    """The loss on a grid in the plane, with the runs' projected trajectories."""

    recipe: str
    params: LandscapeParams
    x: np.ndarray  # (n,) PC1 coordinates of the grid
    y: np.ndarray  # (n,) PC2 coordinates
    loss: np.ndarray  # (n, n): loss[i, j] at (x[i], y[j])
    runs: tuple[ProjectedRun, ...]
    sigma: np.ndarray
    explained: float
    share: tuple[float, float]  # each direction's share of the motion
    seconds: float
    evaluation_seconds: float

    def to_dict(self) -> dict[str, Any]:
        finite = np.where(np.isfinite(self.loss), self.loss, np.nan)
        return {"recipe": self.recipe, "grid": self.params.grid, "margin": self.params.margin,
                "center": self.params.center, "x": self.x.tolist(), "y": self.y.tolist(),
                "loss": [[None if v != v else float(v) for v in row] for row in finite],
                "runs": [r.to_dict() for r in self.runs], "sigma": self.sigma.tolist(),
                "explained": self.explained, "share": list(self.share), "seconds": self.seconds,
                "evaluation_seconds": self.evaluation_seconds}


def fit_plane(stores: Sequence[RunStore], *, engine: Engine | None = None, progress: Progress | None = None) -> Plane:
    """The plane of the first two principal directions of the runs in ``stores`` together.

    One Gram pass (for several stores: one pass reading every store's aligned column blocks)
    and one D·C pass per store.
    """
    engine = engine or Engine()
    if not stores:
        raise ParameterError("stores", "needs at least one run")
    n = stores[0].n_params
    for s in stores[1:]:
        if s.n_params != n:
            raise NotApplicableError(f"{s.path.name} has {s.n_params} parameters, {stores[0].path.name} {n}: "
                                     "runs in one plane need the same model")
    sizes = [s.n_snapshots for s in stores]
    total = sum(sizes)
    if total < 3:
        raise NotApplicableError(f"{total} snapshot(s): a plane needs at least 3")
    if total > MAX_SNAPSHOTS:
        raise NotApplicableError(f"{total} snapshots: the joint Gram holds at most {MAX_SNAPSHOTS}")
    gram = _joint_gram(stores, engine, progress)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    for s, lo in zip(stores, offsets, strict=False):
        check_gram_finite(gram[lo : lo + s.n_snapshots, lo : lo + s.n_snapshots], s, 0)
    centre = np.eye(total) - 1.0 / total
    gc = centre @ gram @ centre
    gc = (gc + gc.T) / 2
    w, v = np.linalg.eigh(gc)
    order = np.argsort(w)[::-1][:2]
    sigma = np.sqrt(np.clip(w[order], 0, None))
    if not sigma[1] > 1e-7 * max(sigma[0], np.finfo(float).tiny):
        raise NotApplicableError("the trajectory moves along fewer than two directions: no plane to draw")
    v = v[:, order]
    last = offsets[1] - 1  # the first run's end: the run goes left to right, bottom to top
    v = v * np.where(v[last] - v[0] >= 0, 1.0, -1.0)
    coefficients = np.column_stack([np.full(total, 1.0 / total), v / sigma])
    # (μ, d₁, d₂) as the rows of one (3, N) array, filled block by block: no (N, 3) copy beside it
    plane = np.zeros((3, n))
    for s, lo in zip(stores, offsets, strict=False):
        for cols, part in engine.project_blocks(s, coefficients[lo : lo + s.n_snapshots]):
            plane[:, cols] += part.T
    scores = v * sigma
    return Plane(plane[0], plane[1:], tuple(scores[lo : lo + k] for lo, k in zip(offsets, sizes, strict=False)),
                 sigma, float((sigma**2).sum() / max(np.trace(gc), np.finfo(float).tiny)))


def _joint_gram(stores: Sequence[RunStore], engine: Engine, progress: Progress | None) -> np.ndarray:
    """[D₁ D₂ …]ᵀ[D₁ D₂ …] in one pass: the first store's column blocks, the others' same columns."""
    if len(stores) == 1:
        return engine.gram(stores[0], progress=progress)["all"]
    sizes = [s.n_snapshots for s in stores]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    gram = np.zeros((offsets[-1], offsets[-1]))
    for columns, block in engine.map_blocks(stores[0], lambda b, ops: np.array(ops.to_numpy(b)), progress=progress):
        blocks = [np.asarray(block, dtype=np.float64)]
        blocks += [engine.collect(s, columns) for s in stores[1:]]
        stacked = np.concatenate(blocks, axis=0)
        gram += stacked @ stacked.T
    return gram


def grid_axes(coordinates: np.ndarray, n: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """For each axis, ``n`` points from min − margin·span to max + margin·span of the coordinates (k, 2)."""
    lo, hi = coordinates.min(axis=0), coordinates.max(axis=0)
    span = np.maximum(hi - lo, 1e-12 * np.maximum(np.abs(hi), 1.0))
    x, y = (np.linspace(lo[i] - margin * span[i], hi[i] + margin * span[i], n) for i in range(2))
    return x, y


def grid_losses(recipe: ModelSource, center: np.ndarray, directions: np.ndarray, x: np.ndarray, y: np.ndarray, *,
                max_seconds: float = float("inf"), progress: Progress | None = None) -> tuple[np.ndarray, float]:
    """The recipe's validation loss at θ = center + x_i d₁ + y_j d₂ for every grid point, and the seconds taken.

    Point by point into one reused model and one float32 θ, each built a piece at a time (memory: the
    model and one θ besides the plane); the time the grid would take, estimated after
    its first three points (the first one's warm-up counted once), must stay within ``max_seconds``
    (else :class:`GridTooSlowError`).
    """
    model = recipe.new_model()
    data = recipe.data
    loss = np.empty((len(x), len(y)))
    total = loss.size
    probe = min(3, total)  # the first point pays the model's warm-up: the estimate uses the points after it
    theta = np.empty(center.shape, dtype=np.float32)
    t0 = time.perf_counter()
    first = 0.0
    for i, xi in enumerate(x):
        for j, yj in enumerate(y):
            for lo in range(0, theta.size, PIECE):  # float64 sums in pieces, rounded once, as the rows were
                hi = lo + PIECE
                theta[lo:hi] = (center[lo:hi] + xi * directions[0][lo:hi]) + yj * directions[1][lo:hi]
            recipe.load_theta(model, theta)
            loss[i, j] = recipe.metrics(model, data.x_val, data.y_val)["loss"]
            done = i * len(y) + j + 1
            if done == 1:
                first = time.perf_counter() - t0
            if done == probe:
                elapsed = time.perf_counter() - t0
                estimate = first + (elapsed - first) / (done - 1) * (total - 1) if done > 1 else first
                if estimate > max_seconds:
                    raise GridTooSlowError(f"a {len(x)}×{len(y)} grid would take about {estimate:.0f} s "
                                           f"(limit {max_seconds:g} s): use a smaller --grid or a larger --max-seconds")
        if progress is not None:
            progress((i + 1) * len(y), total)
    return loss, time.perf_counter() - t0


def fit_landscape(stores: Sequence[RunStore], recipe: ModelSource | None, params: LandscapeParams | None = None, *,
                  labels: Sequence[str] | None = None, engine: Engine | None = None,
                  progress: Progress | None = None) -> LandscapeResult:
    """The loss landscape of ``recipe`` in the plane of the runs in ``stores`` (see the module docstring).

    ``center="final"`` puts the first run's last snapshot θ_T at the origin (the plane through it,
    parallel to the one through μ). ``progress(done, total)`` over the plane's pass, then the grid's points.
    """
    params = params or LandscapeParams()
    if recipe is None:
        raise NotApplicableError("the loss landscape needs the run's recipe to evaluate the loss")
    engine = engine or Engine()
    t0 = time.perf_counter()
    plane = fit_plane(stores, engine=engine, progress=progress)  # the Gram pass's blocks, then the grid's points
    if params.center == "final":
        center = engine.snapshot(stores[0], stores[0].n_snapshots - 1)
        shift = plane.directions @ (center - plane.mean)  # s_T, the first run's last score
    else:
        center, shift = plane.mean, np.zeros(2)
    coordinates = tuple(s - shift for s in plane.scores)
    x, y = grid_axes(np.concatenate(coordinates), params.grid, params.margin)
    loss, seconds = grid_losses(recipe, center, plane.directions, x, y, max_seconds=params.max_seconds,
                                progress=progress)
    names = list(labels) if labels is not None else [s.path.name.removesuffix(".zarr") for s in stores]
    runs = tuple(ProjectedRun(name, str(s.path), c, np.asarray(s.steps)) for name, s, c in
                 zip(names, stores, coordinates, strict=True))
    total = float(plane.sigma @ plane.sigma / plane.explained) if plane.explained > 0 else 1.0
    share = (float(plane.sigma[0] ** 2 / total), float(plane.sigma[1] ** 2 / total))
    return LandscapeResult(recipe.name, params, x, y, loss, runs, plane.sigma,
                           plane.explained, share, time.perf_counter() - t0, seconds)
