"""How precise a DMD's eigenvalues are: first-order error estimates of each eigenvalue from the path that
built the reduced operator (docs/methods.md §1.5), which the rank rule's :func:`~traj.engine.truncation.resolved`
uses to keep only the modes the Gram resolves.
"""

from __future__ import annotations

import numpy as np

from .truncation import Source

__all__ = ["eigenvalue_errors", "eigh_residual", "exact_product", "gram_eigenvalue_errors"]


def eigenvalue_errors(sigma: np.ndarray, atilde: np.ndarray, left: np.ndarray, right: np.ndarray | None = None, *,
                      source: Source, n_pairs: int | None = None) -> np.ndarray:
    """A first-order estimate of each eigenvalue's rounding error (docs/methods.md §1.5).

    δλk = lk δÃ wk for a perturbation δÃ of Ã (W's columns wk, L = W⁻¹'s rows lk), so
    |δλk| ≲ Σij |lki| Eij |wjk| with Eij the rounding of Ãij by the path that built it. Ã =
    Σr⁻¹Vrᵀ(XᵀY)VrΣr⁻¹: from the Gram, exact to ~ε·σ1², Eij = ε·√T·σ1²/(σiσj) (the Gram squares
    the condition number); from an SVD of X, backward stable, Eij = ε·√T·σ1/σj. Both are scaled by
    max(1, ‖Ã‖₂). The data's own rounding (float32 storage) is a property of the data, not of the
    method, and is not included. T is ``n_pairs`` (default ``len(sigma)``, every σ of X; a sketch
    holds fewer).
    """
    r = atilde.shape[0]
    n_sigma = len(sigma) if n_pairs is None else n_pairs
    sigma = np.asarray(sigma, dtype=np.float64)[:r]
    if r == 0 or not sigma[0] > 0:
        return np.zeros(r)
    if right is None:
        right = np.linalg.inv(left)
    u = float(np.finfo(np.float64).eps) * np.sqrt(n_sigma) * max(1.0, float(np.linalg.norm(atilde, 2)))
    with np.errstate(divide="ignore", over="ignore"):
        scale = sigma[0] / sigma
        e = u * (np.outer(scale, scale) if source == "gram" else np.broadcast_to(scale, (r, r)))
    return np.einsum("ki,ij,jk->k", np.abs(left), e, np.abs(right))


def exact_product(a: np.ndarray, b: np.ndarray, *, block: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """A·B to about twice float64's precision, as a pair (hi, lo) with A·B ≈ hi + lo, by float64 BLAS products.

    Ozaki, Ogita, Oishi & Rump (2012), error-free transformation of a matrix product: each row of A
    (column of B) is cut into slices of β = ⌊(53 − ⌈log2 n⌉)/2⌋ bits on a grid of its own scale, so that
    every product of two slices, n terms summed, is exact in float64 in any order; the products whose
    slices together fall below 2^-4β of the scale are left out, and the rest summed with TwoSum
    (Knuth). Ten BLAS products in all, ``block`` rows of A by ``block`` columns of B at a time (the
    slices of a whole T×T matrix would be four more copies of it). Used for the residual
    :func:`eigh_residual`, which float64 products would drown in their own rounding (the same size as
    what they measure).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = a.shape[1]
    beta = (53 - int(np.ceil(np.log2(max(n, 2))))) // 2
    hi = np.zeros((a.shape[0], b.shape[1]))
    lo = np.zeros_like(hi)
    for c0 in range(0, b.shape[1], block):
        b_parts = _slices(b[:, c0 : c0 + block], beta, axis=0)
        for r0 in range(0, a.shape[0], block):
            a_parts = _slices(a[r0 : r0 + block], beta, axis=1)
            h, e = hi[r0 : r0 + block, c0 : c0 + block], lo[r0 : r0 + block, c0 : c0 + block]  # views
            # smallest terms first; slices s and t together carry 2^-(s+t)β of the scale
            for total in range(len(a_parts) + 1, 1, -1):
                for i in range(max(0, total - len(b_parts) - 1), min(total - 1, len(a_parts))):
                    term = a_parts[i] @ b_parts[total - 2 - i]
                    new = h + term  # TwoSum: h + term = new + err exactly
                    back = new - h
                    e += (h - (new - back)) + (term - back)
                    h[...] = new
    return hi, lo


def _slices(m: np.ndarray, beta: int, *, axis: int, count: int = 4) -> list[np.ndarray]:
    """``m`` = Σ slices exactly: ``count`` − 1 slices of β bits each on the grid of each row's (axis=1) or
    column's (axis=0) largest entry, and the remainder (:func:`exact_product`)."""
    rest = m.copy()
    parts = []
    for _ in range(count - 1):
        top = np.max(np.abs(rest), axis=axis, keepdims=True)
        with np.errstate(divide="ignore"):
            exponent = np.where(top > 0, np.ceil(np.log2(np.where(top > 0, top, 1.0))), 0.0)
        shift = np.ldexp(1.0, (exponent + 53 - beta).astype(int))
        high = (rest + shift) - shift
        parts.append(high)
        rest = rest - high
    parts.append(rest)
    return parts


def eigh_residual(matrix: np.ndarray, vectors: np.ndarray, values: np.ndarray, columns: int) -> np.ndarray:
    """The backward error of a symmetric eigendecomposition, in its own basis: Vᵀ M V[:, :c] − Λ[:, :c].

    Parameters
    ----------
    matrix : ndarray of shape (m, m)
        M, symmetric (XᵀX on the Gram path).
    vectors, values : ndarray of shape (m, m) and (m,)
        V and Λ as computed (V orthonormal to rounding).
    columns : int
        c, how many leading columns are needed (the modes kept, r).

    Returns
    -------
    ndarray of shape (m, c)
        Entry (a, b): how far the computed pair is from exact, measured at twice float64's precision
        (:func:`exact_product`): in float64 the product rounds by as much as the residual itself.
    """
    p_hi, p_lo = exact_product(matrix, vectors[:, :columns])
    s_hi, s_lo = exact_product(vectors.T, p_hi)
    s_hi[np.arange(columns), np.arange(columns)] -= values[:columns]
    return s_hi + (s_lo + vectors.T @ p_lo)


def gram_eigenvalue_errors(sigma: np.ndarray, residual: np.ndarray, b_cols: np.ndarray, b_rows: np.ndarray | None,
                           atilde: np.ndarray, eigenvalues: np.ndarray, right: np.ndarray, left: np.ndarray, *,
                           spread: np.ndarray | None = None) -> np.ndarray:
    """Each eigenvalue's rounding error on the Gram path, from the measured residual of XᵀX's eigendecomposition.

    σ² and V are exact for XᵀX + E, with E = V Δ Vᵀ and Δ = ``residual`` (:func:`eigh_residual`); that is
    the path's dominant rounding (the Gram's own accumulation, in float64 from float32 or float64 data, is
    far smaller). To first order (docs/methods.md §1.5; Stewart & Sun 1990, Ch. V) Δ moves the eigenvalues of
    Ã = Σr⁻¹ Vrᵀ(XᵀY) Vr Σr⁻¹ in two ways, both linear in Δ:

    - inside the kept subspace Ã's eigenvalues are those of the pencil (Vrᵀ XᵀY Vr, Σr²), so
      δλk = −λk Σab lka Δab wbk / (σa σb);
    - between a kept direction i and a dropped one j, V's column i turns by Δji/(σi² − σj²), and
      δλk = Σij Δji [lki (B⊥r Σr⁻¹ wk)j + wik (lk Σr⁻¹ Br⊥)j] / (σi (σi² − σj²)), B = Vᵀ XᵀY V.

    With Δ measured, that sum is the error itself to first order (within a factor 2 of the true error in
    every case measured). The estimate is twice its magnitude, plus a fifth of the sum of the terms'
    magnitudes Σ |coefficient|·|Δ| (so that a sum that happens to cancel is not taken for an exact
    eigenvalue), plus LAPACK's ε‖Ã‖F‖lk‖ for the eigenproblem of Ã itself. Measured against an SVD of the
    same data (``benchmarks/gram_error_estimate.py``) its largest value lies 1–10 times above the largest
    true error where that is below 1e-6; the a-priori bound it replaces (ε√T σ1²/(σiσj) for every entry
    of Δ, :func:`eigenvalue_errors`) lay 10^3–10^6 above. Beyond ~1e-6 second-order terms grow and it
    may fall below the true error by up to 2x: it decides what is resolved, not how badly the rest is off.

    Parameters
    ----------
    sigma : ndarray of shape (m,)
        Every known σ (the Gram: all T; a sketch: its basis's).
    residual : ndarray of shape (m, r)
        Δ[:, :r].
    b_cols : ndarray of shape (m, r)
        Vᵀ (XᵀY) Vr.
    b_rows : ndarray of shape (r, m), optional
        Vrᵀ (XᵀY) V (None: b_colsᵀ stands in, for a range finder that has only XᵀY Vr).
    atilde, eigenvalues, right, left
        Ã (r×r) and its eigen-decomposition (:func:`eigen`).
    spread : ndarray of shape (m, r), optional
        Further rounding of Δ's entries known only in size (the range finder: the asymmetry of QᵀAQ),
        added to |Δ| in the sum of magnitudes.
    """
    r = atilde.shape[0]
    sigma = np.asarray(sigma, dtype=np.float64)
    sr = sigma[:r]
    size = np.abs(residual) if spread is None else np.abs(residual) + spread
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        scale = np.outer(sr, sr)
        signed = -eigenvalues * np.einsum("ka,ab,bk->k", left, residual[:r, :r] / scale, right)
        worst = np.abs(eigenvalues) * np.einsum("ka,ab,bk->k", np.abs(left), size[:r, :r] / scale, np.abs(right))
        if sigma.size > r:
            dropped = sigma[r:]
            gap = sr[:, None] * (sr[:, None] ** 2 - dropped[None, :] ** 2)  # (i, j): σi (σi² − σj²)
            p = ((b_cols[r:, :r] / sr) @ right).T  # (k, j): (B⊥r Σr⁻¹ wk)j
            q = left @ ((b_rows[:r, r:] if b_rows is not None else b_cols[r:, :r].T) / sr[:, None])  # (k, j)
            turn = residual[r:, :r].T / gap
            signed = signed + np.sum((left @ turn) * p, axis=1) + np.sum((right.T @ turn) * q, axis=1)
            turn = size[r:, :r].T / np.abs(gap)
            worst = worst + np.sum((np.abs(left) @ turn) * np.abs(p), axis=1) + np.sum((np.abs(right.T) @ turn)
                                                                                      * np.abs(q), axis=1)
        total = (2 * np.abs(signed) + worst / 5
                 + float(np.finfo(np.float64).eps) * np.linalg.norm(atilde) * np.linalg.norm(left, axis=1))
    return np.where(np.isfinite(total), total, np.inf)
