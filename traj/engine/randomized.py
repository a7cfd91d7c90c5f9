"""A randomized range finder for runs too long for a (T+1)² Gram (Halko, Martinsson & Tropp 2011).

The leading right singular vectors of X are those of the symmetric A = XᵀX, which the engine
applies to a thin matrix in one pass (``Engine.gram_times``) without ever forming it. So:
Q = orth(A Ω), q power iterations Q = orth(A Q), then H = Qᵀ A Q gives σ² and V = Q W
(Algorithm 4.4 and 5.3 of Halko et al., on A). The last pass also returns XᵀY Q, so exact
DMD follows with one more pass for G C. Memory: a few T×(r+p) matrices, never T².
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import DTypeLike

from ..errors import ParameterError, WindowTooShortError
from ..progress import Progress
from ..store import RunStore
from .operator import ReducedOperator, fix_signs, truncate
from .reductions import Engine

__all__ = ["randomized_operator"]


def randomized_operator(
    engine: Engine,
    store: RunStore,
    rank: int,
    *,
    rows: slice,
    columns: Sequence[slice] | None = None,
    n_oversamples: int = 10,
    n_iter: int = 2,
    random_state: int = 0,
    dtype: DTypeLike = np.float32,
    progress: Progress | None = None,
) -> ReducedOperator:
    """Exact DMD of a window with V_r and σ from a randomized range finder.

    Parameters
    ----------
    engine : Engine
    store : RunStore
    rank : int
        Modes kept (required: the Gavish–Donoho rule needs every singular value).
    rows : slice
        Snapshot window (T+1 rows).
    n_oversamples, n_iter : int
        Extra sketch columns p and power iterations q; passes over the data: q + 3.
    random_state : int
        Seed of the Gaussian test matrix Ω.
    dtype : dtype
        The data's dtype: σ² come from A = XᵀX, so the Gram path's floor applies
        (:func:`~traj.engine.operator.precision_floor`).
    """
    n_rows = rows.stop - rows.start
    t = n_rows - 1
    if t < 2:
        raise WindowTooShortError("DMD needs at least 3 snapshots")
    if rank < 1 or rank > t:
        raise ParameterError("rank", f"must lie in 1..{t} for this window, got {rank}")
    width = min(t, rank + n_oversamples)
    x = slice(0, t)
    y = slice(1, t + 1)
    omega = np.random.default_rng(random_state).standard_normal((t, width))

    def apply(m: np.ndarray, *, with_xty: bool = False) -> tuple[dict[str, np.ndarray], float]:
        products = {"a": (x, x, m)}
        if with_xty:
            products["xty"] = (x, y, m)
        return engine.gram_times(store, products, rows=rows, columns=columns, progress=progress)

    sketch, trace = apply(omega)
    q, _ = np.linalg.qr(sketch["a"])
    for _ in range(n_iter):
        q, _ = np.linalg.qr(apply(q)[0]["a"])
    final, _ = apply(q, with_xty=True)
    h = q.T @ final["a"]
    evals, w = np.linalg.eigh((h + h.T) / 2)
    order = np.argsort(evals)[::-1]
    sigma = np.sqrt(np.clip(evals[order], 0.0, None))
    v, w = fix_signs(q @ w[:, order], w[:, order])
    n_features = sum(c.stop - c.start for c in columns) if columns else store.n_params
    cut = truncate(sigma, rank=rank, shape=(n_features, t), dtype=dtype, source="gram")
    xty_v = final["xty"] @ w

    def gram_times(c: np.ndarray) -> np.ndarray:
        return engine.gram_times(store, {"gc": (slice(0, n_rows), slice(0, n_rows), c)}, rows=rows,
                                 columns=columns, progress=progress)[0]["gc"]

    return ReducedOperator.from_svd(sigma, v[:, :rank], xty_v[:, :rank], gram_times, trace, truncation=cut)
