"""A randomized range finder for runs too long for a (T+1)² Gram (Halko, Martinsson & Tropp 2011).

The leading right singular vectors of X are those of the symmetric A = XᵀX, which the engine
applies to a thin matrix in one pass (``Engine.gram_times``) without ever forming it. The
subspace is a block Krylov space (Musco & Musco 2015; Halko et al. §4.5 and Algorithm 5.3 on
A): Q0 = orth(A Ω), then each pass computes A Qj and adds Qj+1 = orth(A Qj) with the space
found so far projected out, so q + 2 passes of b columns give a basis of (q + 1)·b directions
with A applied to all of it. Rayleigh–Ritz, H = Qᵀ(AQ) = W Σ² Wᵀ, gives σ and V = Q W (no
extra pass for it). One last pass of r columns gives G[:, 1:] Vr, from which Ã = Σr⁻¹Vrᵀ(XᵀY)VrΣr⁻¹
and G C (amplitudes, reconstruction error) follow. So n_iter + 3 passes in all; memory: a few
T×(width) matrices, never T².

Rank "auto" (:data:`~traj.engine.truncation.RULE_TAIL`): the Gavish–Donoho threshold for a known
noise level, with σ̂ from the energy the kept directions leave, tr(XᵀX) − Σ_{i≤k} σi² (tr XᵀX
comes with the first pass); see :func:`~traj.engine.truncation.truncate_sketch`. The basis grows one
block per pass until the kept rank leaves ``n_oversamples`` directions of the basis behind it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from numpy.typing import DTypeLike

from ..errors import WindowTooShortError
from ..progress import Progress
from ..store import RunStore
from .operator import ReducedOperator, fix_signs, leading_block_errors
from .precision import eigh_residual, gram_eigenvalue_errors
from .reductions import Engine
from .truncation import check_rank, resolved, truncate_sketch

__all__ = ["SKETCH_BLOCK", "randomized_operator"]

#: Columns each pass adds to the basis for rank "auto" (an explicit rank r adds r + n_oversamples).
SKETCH_BLOCK = 32


def randomized_operator(
    engine: Engine,
    store: RunStore,
    rank: int | str | None,
    *,
    rows: slice,
    columns: Sequence[slice] | None = None,
    n_oversamples: int = 10,
    n_iter: int = 2,
    random_state: int = 0,
    dtype: DTypeLike = np.float32,
    block: int = SKETCH_BLOCK,
    max_width: int | None = None,
    resolve: float | None = None,
    progress: Progress | None = None,
) -> ReducedOperator:
    """Exact DMD of a window with V_r and σ from a block Krylov range finder.

    Parameters
    ----------
    engine : Engine
    store : RunStore
    rank : int, "auto" or None
        Modes kept; "auto" (or None) by the Gavish–Donoho threshold with the noise estimated
        from the sketch's tail (:func:`~traj.engine.truncation.truncate` with ``trace``).
    rows : slice
        Snapshot window (T+1 rows).
    columns : list of slice, optional
        The coordinates used (default all).
    n_oversamples : int
        p: an explicit rank r sketches r + p columns per pass; "auto" stops growing once the
        basis holds p directions past the kept rank.
    n_iter : int
        q: passes past the first two before the rank is decided; q + 3 passes at least.
    random_state : int
        Seed of the Gaussian test matrix Ω.
    dtype : dtype
        The data's dtype: σ² come from A = XᵀX, so the Gram path's floor applies
        (:func:`~traj.engine.truncation.precision_floor`).
    block : int
        Columns per pass for rank "auto".
    max_width : int, optional
        Most directions the basis may hold (at least one block; "auto" stops there and says so; default T).
    resolve : float, optional
        With rank "auto": keep only the modes whose eigenvalue error estimates are at most this
        (as :meth:`ReducedOperator.from_gram`; the σ² here are a Gram's).
    """
    n_rows = rows.stop - rows.start
    t = n_rows - 1
    if t < 2:
        raise WindowTooShortError("DMD needs at least 3 snapshots")
    check_rank(rank, most=t)
    auto = rank is None or rank == "auto"
    n_features = sum(c.stop - c.start for c in columns) if columns else store.n_params
    shape = (n_features, t)
    b = min(t, block if auto else int(rank) + n_oversamples)  # type: ignore[arg-type]
    limit = min(t, max(b, max_width or t))  # never below one block: an explicit rank always gets its r + p
    x = slice(0, t)

    def apply(products: dict[str, tuple[slice, slice, np.ndarray]]) -> tuple[dict[str, np.ndarray], float]:
        return engine.gram_times(store, products, rows=rows, columns=columns, progress=progress)

    omega = np.random.default_rng(random_state).standard_normal((t, b))
    first, trace = apply({"a": (x, x, omega), "last": (slice(t, t + 1), slice(t, t + 1), np.ones((1, 1)))})
    trace_x = trace - float(first["last"][0, 0])  # tr(XᵀX) = tr(G) − ‖θ_T‖²
    blocks = [_orth(first["a"], None)]
    images: list[np.ndarray] = []  # A Qj, one per pass after the first
    while True:
        images.append(apply({"a": (x, x, blocks[len(images)])})[0]["a"])
        basis, image = np.hstack(blocks[: len(images)]), np.hstack(images)
        h = basis.T @ image
        evals, w = np.linalg.eigh((h + h.T) / 2)
        order = np.argsort(evals)[::-1]
        evals, w = evals[order], w[:, order]
        sigma = np.sqrt(np.clip(evals, 0.0, None))
        width = basis.shape[1]
        if len(images) >= n_iter + 1 or width >= limit:
            # the rank is the operator's rule; the finder only decides how wide its basis grows
            cut = truncate_sketch(sigma, rank=rank, shape=shape, dtype=dtype, trace=trace_x, n_oversamples=n_oversamples)
            if not auto or cut.rank + n_oversamples <= width or width >= limit:
                break
        if len(blocks) == len(images):  # the next block: A Qj with the basis so far projected out
            blocks.append(_orth(images[-1], basis)[:, : limit - width])
    (v,) = fix_signs(basis @ w)
    r = cut.rank
    # G[:, 1:T+1] Vr (T+1 rows): XᵀY Vr is its first T rows, and G C = (G[:, 1:] Vr)(Vrᵀ C[1:]) for C = [0; Vr M]
    gy_v = apply({"gy": (slice(0, n_rows), slice(1, n_rows), v[:, :r])})[0]["gy"]
    # the error estimate (precision.gram_eigenvalue_errors): the measured residual of H = QᵀAQ's eigendecomposition,
    # with H's asymmetry (QᵀAQ is symmetric in exact arithmetic) added as a measure of the products' own rounding
    h_sym = (h + h.T) / 2
    (signs,) = fix_signs(basis @ w, np.ones((1, w.shape[1])))[1:]  # the column signs fix_signs gave V
    residual = eigh_residual(h_sym, w, evals, r) * signs[0][:, None] * signs[0][None, :r]
    spread = np.abs(w.T @ (((h - h.T) / 2) @ w[:, :r]))
    b_cols = v.T @ gy_v[:t]  # Vᵀ (XᵀY) Vr over the basis's directions
    if auto and resolve is not None:
        cut = resolved(cut, sigma, lambda k: leading_block_errors(sigma, residual, b_cols, None, k, spread=spread),
                       resolve, path="sketch")
        r = cut.rank
        gy_v = gy_v[:, :r]
    vr = v[:, :r]

    def gram_times(c: np.ndarray) -> np.ndarray:
        return gy_v @ (vr.T @ c[1:])

    op = ReducedOperator.from_svd(sigma, vr, gy_v[:t], gram_times, trace, truncation=cut)
    return replace(op, rounding_errors=gram_eigenvalue_errors(sigma, residual[:, :r], b_cols[:, :r], None, op.atilde,
                                                              op.eigenvalues, op.right, op.left,
                                                              spread=spread[:, :r]))


def _orth(m: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """An orthonormal basis of m's columns with ``basis`` projected out (twice: rank-deficient blocks stay orthogonal)."""
    q = m
    for _ in range(2 if basis is not None else 1):
        if basis is not None:
            q = q - basis @ (basis.T @ q)
        q, _ = np.linalg.qr(q)
    return q

