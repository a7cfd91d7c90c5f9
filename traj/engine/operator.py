"""The reduced Koopman operator of exact DMD, built from a Gram matrix (methods.md §1, steps 2-5).

Kept apart from the DMD estimator, as PyDMD keeps ``DMDOperator``: dmd, prune, conjugacy
and kga all use the same object. Everything here is small-matrix work on (T+1)×(T+1) and
r×r arrays; nothing touches the N coordinates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..checks import check_int
from ..errors import ParameterError, TrajError

__all__ = ["ReducedOperator", "check_rank", "gavish_donoho_threshold", "relative_floor", "singular_values_from_gram",
           "NEUTRAL", "STABLE", "UNSTABLE"]

NEUTRAL, STABLE, UNSTABLE = "neutral", "stable", "unstable"


def check_rank(rank: int | str | None, name: str = "rank") -> int | str | None:
    """A DMD rank: "auto" (or None) for the Gavish–Donoho threshold, or an integer >= 1.

    Whether the data hold that many directions is known only after the Gram pass.
    """
    if rank is None or rank == "auto":
        return rank
    if isinstance(rank, str):
        raise ParameterError(name, f"must be 'auto' or an integer >= 1, got {rank!r}")
    return check_int(name, rank, low=1)


def relative_floor(dtype: np.dtype) -> float:
    """σ/σ1 below which singular values are rounding and never kept (methods.md §1, step 2).

    float32 data carry ~1e-7 relative precision; the Gram resolves σ only down to
    √ε·σ1 ≈ 1.5e-8·σ1 even for float64 data.
    """
    return 1e-6 if np.dtype(dtype) == np.float32 else 1e-7


def singular_values_from_gram(xtx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Singular values (descending) and right singular vectors of X from XᵀX = V Σ² Vᵀ.

    Parameters
    ----------
    xtx : ndarray of shape (T, T)
        Symmetric positive semi-definite.

    Returns
    -------
    sigma : ndarray of shape (T,)
    V : ndarray of shape (T, T)
        Columns in the order of ``sigma``; signs fixed so the largest-magnitude entry of each
        column is positive (deterministic output).
    """
    evals, evecs = np.linalg.eigh(xtx)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    sigma = np.sqrt(np.clip(evals, 0.0, None))
    pivot = np.argmax(np.abs(evecs), axis=0)
    signs = np.sign(evecs[pivot, np.arange(evecs.shape[1])])
    signs[signs == 0] = 1.0
    return sigma, evecs * signs


def gavish_donoho_threshold(sigma: np.ndarray, n_rows: int, n_cols: int) -> float:
    """Optimal hard threshold for unknown noise (Gavish & Donoho 2014): τ = ω(β)·median(σ).

    β = min(N, T)/max(N, T); ω(β) ≈ 0.56β³ − 0.95β² + 1.82β + 1.43 (methods.md §1, step 2).
    """
    beta = min(n_rows, n_cols) / max(n_rows, n_cols)
    omega = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    return float(omega * np.median(sigma))


@dataclass(frozen=True)
class ReducedOperator:
    """Exact DMD of a window from its Gram matrix G = DᵀD.

    Attributes
    ----------
    singular_values : ndarray of shape (T,)
        All singular values of X = D[:, :T] (descending).
    rank : int
    modes_basis : ndarray of shape (T, r)
        V_r, the leading right singular vectors of X.
    atilde : ndarray of shape (r, r)
        Ã = Σr⁻¹ Vrᵀ (XᵀY) Vr Σr⁻¹.
    eigenvalues : ndarray of shape (r,), complex
    right : ndarray of shape (r, r)
        W, Ã W = W Λ (unit-norm columns).
    left : ndarray of shape (r, r)
        L = W⁻¹ (rows are left eigenvectors).
    coefficients : ndarray of shape (T+1, r), complex
        C with exact DMD modes Φ = D C = Y Vr Σr⁻¹ W.
    amplitudes : ndarray of shape (r,), complex
        b = Φ⁺ θ0.
    gram_coefficients : ndarray of shape (T+1, r)
        G C, from which ΦᴴΦ = Cᴴ G C, Φᴴθ0 and the reconstruction error follow.
    gram_trace : float
        tr(G) = ‖D‖²_F.
    """

    singular_values: np.ndarray
    rank: int
    modes_basis: np.ndarray
    atilde: np.ndarray
    eigenvalues: np.ndarray
    right: np.ndarray
    left: np.ndarray
    coefficients: np.ndarray
    amplitudes: np.ndarray
    threshold: float | None
    floor: float
    gram_coefficients: np.ndarray
    gram_trace: float
    valid: np.ndarray | None = None
    start: int = 0

    @classmethod
    def from_gram(
        cls,
        gram: np.ndarray,
        *,
        rank: int | str | None = "auto",
        n_features: int,
        relative_floor: float = 1e-6,
        valid: np.ndarray | None = None,
    ) -> ReducedOperator:
        """Exact DMD from G (methods.md §1).

        Parameters
        ----------
        gram : ndarray of shape (T+1, T+1)
            DᵀD of the window, float64.
        rank : int, "auto" or None
            Number of modes kept; "auto"/None chooses it by the Gavish–Donoho threshold.
        n_features : int
            N, the number of coordinates (for the threshold's aspect ratio β).
        relative_floor : float
            Singular values below ``relative_floor``·σ1 are never kept (float32 data: 1e-6).
        valid : ndarray of bool, shape (T+1,), optional
            Snapshots to use (e.g. the finite ones): only pairs (θk, θk+1) with both valid
            enter XᵀX and XᵀY; rows and columns of G for the others are ignored.
        """
        g = np.asarray(gram, dtype=np.float64)
        if g.ndim != 2 or g.shape[0] != g.shape[1] or g.shape[0] < 3:
            raise TrajError(f"DMD needs at least 3 snapshots, got {g.shape[0] if g.ndim == 2 else 0}")
        t = g.shape[0] - 1
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            g = np.where(np.outer(valid, valid), g, 0.0)  # a bad snapshot's NaN row and column drop out
            pairs = np.flatnonzero(valid[:-1] & valid[1:])
            if pairs.size < 2:
                raise TrajError(f"only {pairs.size} pair(s) of consecutive finite snapshots: DMD needs at least 2")
        else:
            pairs = np.arange(t)
        sigma, v = singular_values_from_gram(g[np.ix_(pairs, pairs)])
        if not sigma.size or sigma[0] <= 0:
            raise TrajError("the trajectory is all zeros in this window: nothing to decompose")
        floor = relative_floor * sigma[0]
        available = int(np.count_nonzero(sigma > floor))
        threshold = None
        if rank is None or rank == "auto":
            threshold = gavish_donoho_threshold(sigma, n_features, pairs.size)
            r = max(1, min(available, int(np.count_nonzero(sigma > threshold))))
        else:
            r = check_rank(rank)
            if r > available:
                raise TrajError(
                    f"rank {r} asked for, but only {available} singular value(s) of this window lie above the "
                    f"floor {relative_floor:g}·σ1 (T = {pairs.size} transitions, N = {n_features})"
                )
        xty_v = g[np.ix_(pairs, pairs + 1)] @ v[:, :r]
        op = cls.from_svd(sigma, v[:, :r], xty_v, lambda c: g @ c, float(np.trace(g)), threshold=threshold,
                          floor=floor, y_rows=pairs + 1, n_snapshots=t + 1,
                          start=int(np.flatnonzero(valid)[0]) if valid is not None else 0)
        if valid is None:
            return op
        from dataclasses import replace

        return replace(op, valid=valid)

    @classmethod
    def from_svd(
        cls,
        sigma: np.ndarray,
        basis: np.ndarray,
        xty_basis: np.ndarray,
        gram_times: Callable[[np.ndarray], np.ndarray],
        gram_trace: float,
        *,
        threshold: float | None = None,
        floor: float = 0.0,
        y_rows: np.ndarray | None = None,
        n_snapshots: int | None = None,
        start: int = 0,
    ) -> ReducedOperator:
        """Exact DMD from the SVD of X and products with G (methods.md §1, steps 3-5).

        Parameters
        ----------
        sigma : ndarray of shape (>= r,)
            Singular values of X, descending (all of them when known: they are reported).
        basis : ndarray of shape (T, r)
            V_r, the leading right singular vectors of X.
        xty_basis : ndarray of shape (T, r)
            (XᵀY) V_r.
        gram_times : callable
            ``gram_times(C)`` returns G C for C of shape (T+1, r) (from G, or one more pass).
        gram_trace : float
            tr(G).
        y_rows, n_snapshots, start : optional
            The snapshots Y's columns are (default 1..T), how many snapshots the window has,
            and the snapshot the amplitudes refer to (b = Φ⁺θ_start).
        """
        r = basis.shape[1]
        t = basis.shape[0]
        y_rows = np.arange(1, t + 1) if y_rows is None else np.asarray(y_rows)
        n_snapshots = t + 1 if n_snapshots is None else n_snapshots
        sr = sigma[:r]
        atilde = (basis.T @ xty_basis) / np.outer(sr, sr)
        eigenvalues, w = np.linalg.eig(atilde)
        order = np.lexsort((-eigenvalues.imag, -np.abs(eigenvalues)))  # |λ| descending, then Im
        eigenvalues, w = eigenvalues[order], w[:, order]
        w = _fix_phase(w)
        left = np.linalg.inv(w)
        c = np.zeros((n_snapshots, r), dtype=np.complex128)
        c[y_rows] = (basis / sr) @ w  # Φ = Y V Σ⁻¹ W, Y = D[:, 1:]
        gram_c = np.asarray(gram_times(c))
        phi_h_phi = c.conj().T @ gram_c
        phi_h_theta0 = gram_c[start].conj()  # Φᴴθ0 = Cᴴ G[:, 0]
        amplitudes = np.linalg.lstsq(phi_h_phi, phi_h_theta0, rcond=None)[0]
        return cls(np.asarray(sigma), r, basis, atilde, eigenvalues, w, left, c, amplitudes, threshold, floor,
                   gram_c, float(gram_trace), None, start)

    # ------------------------------------------------------------------ derived
    def classes(self, eps: float = 0.01) -> list[str]:
        """neutral 1−ε ≤ |λ| ≤ 1+ε, stable |λ| < 1−ε, unstable |λ| > 1+ε (methods.md §1, step 6)."""
        mod = np.abs(self.eigenvalues)
        return [NEUTRAL if 1 - eps <= m <= 1 + eps else STABLE if m < 1 - eps else UNSTABLE for m in mod]

    def rates(self, dt: float = 1.0) -> np.ndarray:
        """Continuous-time rates log(λ)/Δt (not finite where λ = 0: such a mode has no rate)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(self.eigenvalues.astype(np.complex128)) / dt

    def vandermonde(self, times: np.ndarray) -> np.ndarray:
        """λ_j^k for k in ``times``: shape (r, len(times))."""
        return self.eigenvalues[:, None] ** np.asarray(times, dtype=np.float64)[None, :]

    def reconstruction_error(self) -> float:
        """‖D − D̂‖F / ‖D‖F with D̂ = Φ diag(b) Vand, from G C and tr(G) (no pass over the data).

        Computed as ‖D‖² − 2 Re tr(D̂ᴴD) + ‖D̂‖², so it resolves errors down to ~1e-8 only.
        """
        c, gc = self.coefficients, self.gram_coefficients
        p = self.amplitudes[:, None] * self.vandermonde(np.arange(c.shape[0]) - self.start)  # (r, T+1)
        if self.valid is not None:  # compare only the snapshots that were used
            p = p * self.valid[None, :]
        norm_d = self.gram_trace
        cross = float(np.real(np.sum(p * gc.T)))  # Re tr(D̂ᴴD) = Re tr(Pᴴ (GC)ᴴ)
        norm_hat = float(np.real(np.trace(p.conj().T @ (c.conj().T @ gc) @ p)))
        err2 = max(norm_d - 2 * cross + norm_hat, 0.0)
        return float(np.sqrt(err2 / norm_d)) if norm_d > 0 else 0.0

    def reconstruct(self, window_block: np.ndarray, times: np.ndarray) -> np.ndarray:
        """θ̂ at ``times`` for the coordinates of ``window_block`` (their (T+1, n) trajectories).

        Φ rows of those coordinates are ``window_blockᵀ C``; returns shape (len(times), n), real part.
        """
        block = np.asarray(window_block, dtype=np.float64)
        if self.valid is not None:
            block = np.where(self.valid[:, None], block, 0.0)  # Φ uses the valid snapshots only
        phi = block.T @ self.coefficients
        return np.real(phi @ (self.amplitudes[:, None] * self.vandermonde(np.asarray(times) - self.start))).T


def _fix_phase(w: np.ndarray) -> np.ndarray:
    """Unit-norm eigenvectors with the largest-magnitude entry real and positive (deterministic)."""
    w = w / np.linalg.norm(w, axis=0)
    pivot = np.argmax(np.abs(w), axis=0)
    phase = w[pivot, np.arange(w.shape[1])]
    return w * (np.abs(phase) / phase)
