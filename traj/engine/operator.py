"""The reduced Koopman operator of exact DMD (docs/methods.md §1.2-§1.4) and the one factory that builds it.

Kept apart from the DMD estimator, as PyDMD keeps ``DMDOperator``: dmd, prune, conjugacy
and kga all use the same object. Every path to it goes through the same three decisions,
written once here (as PyDMD derives every variant's rank from one ``compute_svd`` and
scikit-learn has one ``svd_flip``):

- :func:`truncate` decides the rank: the user's integer, Gavish–Donoho ("auto") or every
  direction above the precision floor ("all"), never below :func:`precision_floor`;
- :func:`fix_signs` fixes the sign of singular vectors and :func:`eigen` orders the
  eigenvalues (|λ| descending, then Im λ descending) and fixes the eigenvectors' phase.

The paths are :meth:`ReducedOperator.from_gram` (the streamed Gram, and KGA's in-memory
window), :meth:`ReducedOperator.from_pairs` (snapshot pairs X, Y held in memory: conjugacy's
small observables with stacked trajectories and delays) and :meth:`ReducedOperator.from_svd`
(σ and V from anywhere, e.g. the randomized range finder). Everything here is small-matrix
work on (T+1)×(T+1) and r×r arrays; nothing touches the N coordinates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import DTypeLike

from ..errors import NotApplicableError, WindowTooShortError
from .precision import eigenvalue_errors, eigh_residual, gram_eigenvalue_errors
from .truncation import Excess, RankRequest, Source, Truncation, resolved, truncate

__all__ = ["NEUTRAL", "STABLE", "UNSTABLE", "ModeClass", "ReducedOperator", "eigen", "fix_signs",
           "leading_block_errors", "singular_values_from_gram"]

ModeClass = Literal["neutral", "stable", "unstable"]
NEUTRAL: ModeClass = "neutral"
STABLE: ModeClass = "stable"
UNSTABLE: ModeClass = "unstable"


def fix_signs(v: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Flip each column of ``v`` (and the same columns of ``others``) so that its largest-magnitude
    entry is positive: deterministic singular vectors, as scikit-learn's ``svd_flip``."""
    pivot = np.argmax(np.abs(v), axis=0)
    signs = np.sign(v[pivot, np.arange(v.shape[1])])
    signs[signs == 0] = 1.0
    return (v * signs, *(o * signs for o in others))


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
        Columns in the order of ``sigma``, signs fixed by :func:`fix_signs`.
    """
    evals, v = _eigh_descending(xtx)
    return np.sqrt(np.clip(evals, 0.0, None)), v


def _eigh_descending(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, as computed: not clipped) and eigenvectors (signs fixed) of a symmetric matrix."""
    evals, evecs = np.linalg.eigh(matrix)
    order = np.argsort(evals)[::-1]
    (v,) = fix_signs(evecs[:, order])
    return evals[order], v


def eigen(atilde: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues Λ, right eigenvectors W and L = W⁻¹ of Ã, in traj's one order.

    |λ| descending, then Im λ descending (so k largest-modulus eigenvalues are the first k);
    each column of W has unit norm and its largest-magnitude entry real and positive.
    """
    eigenvalues, w = np.linalg.eig(atilde)
    order = np.lexsort((-eigenvalues.imag, -np.abs(eigenvalues)))
    eigenvalues, w = eigenvalues[order], w[:, order]
    w = w / np.linalg.norm(w, axis=0)
    pivot = np.argmax(np.abs(w), axis=0)
    phase = w[pivot, np.arange(w.shape[1])]
    w = w * (np.abs(phase) / phase)
    return eigenvalues, w, np.linalg.inv(w)


def leading_block_errors(sigma: np.ndarray, residual: np.ndarray, b_cols: np.ndarray, b_rows: np.ndarray | None,
                         r: int, *, spread: np.ndarray | None = None) -> np.ndarray:
    """:func:`gram_eigenvalue_errors` of the rank-r DMD inside a larger one (Ã's leading r×r block)."""
    sr = sigma[:r]
    atilde = b_cols[:r, :r] / np.outer(sr, sr)
    eigenvalues, right, left = eigen(atilde)
    return gram_eigenvalue_errors(sigma, residual[:, :r], b_cols[:, :r], None if b_rows is None else b_rows[:r],
                                  atilde, eigenvalues, right, left, spread=None if spread is None else spread[:, :r])


@dataclass(frozen=True)
class ReducedOperator:
    """Exact DMD of a window: the reduced operator and, for one trajectory D, its mode expansion.

    Attributes
    ----------
    singular_values : ndarray of shape (T,)
        All singular values of X (descending).
    truncation : Truncation
        The rank decision (rank, what was asked, floor, Gavish–Donoho threshold, a note when reduced).
    modes_basis : ndarray of shape (T, r)
        V_r, the leading right singular vectors of X.
    atilde : ndarray of shape (r, r)
        Ã = Σr⁻¹ Vrᵀ (XᵀY) Vr Σr⁻¹ = Urᵀ Y Vr Σr⁻¹.
    eigenvalues : ndarray of shape (r,), complex
        In :func:`eigen`'s order.
    right : ndarray of shape (r, r)
        W, Ã W = W Λ (unit-norm columns).
    left : ndarray of shape (r, r)
        L = W⁻¹ (rows are left eigenvectors).
    coefficients : ndarray of shape (T+1, r), complex, or None
        C with exact DMD modes Φ = D C = Y Vr Σr⁻¹ W (None for pairs held in memory, which
        are no single trajectory D).
    amplitudes : ndarray of shape (r,), complex, or None
        b = Φ⁺ θ_start.
    gram_coefficients : ndarray of shape (T+1, r), or None
        G C, from which ΦᴴΦ = Cᴴ G C, Φᴴθ0 and the reconstruction error follow.
    gram_trace : float
        tr(G) = ‖D‖²_F (NaN without a trajectory D).
    valid : ndarray of bool, shape (T+1,), or None
        The snapshots used, when some were left out (non-finite).
    start : int
        The snapshot the amplitudes refer to.
    source : {"gram", "svd"}
        How σ and V were obtained (sets :meth:`eigenvalue_errors`).
    rounding_errors : ndarray of shape (r,), or None
        Each eigenvalue's rounding error estimated from the measured residual of the eigendecomposition
        (:func:`gram_eigenvalue_errors`: the Gram and range-finder paths); None where the a-priori
        estimate :func:`eigenvalue_errors` serves (an SVD of the data).
    """

    singular_values: np.ndarray
    truncation: Truncation
    modes_basis: np.ndarray
    atilde: np.ndarray
    eigenvalues: np.ndarray
    right: np.ndarray
    left: np.ndarray
    coefficients: np.ndarray | None = None
    amplitudes: np.ndarray | None = None
    gram_coefficients: np.ndarray | None = None
    gram_trace: float = float("nan")
    valid: np.ndarray | None = None
    start: int = 0
    source: Source = "gram"
    rounding_errors: np.ndarray | None = None

    @property
    def rank(self) -> int:
        return self.truncation.rank

    @property
    def rank_requested(self) -> int | str:
        return self.truncation.requested

    @property
    def rank_note(self) -> str | None:
        return self.truncation.note

    @property
    def threshold(self) -> float | None:
        return self.truncation.threshold

    @property
    def floor(self) -> float:
        return self.truncation.floor

    # ------------------------------------------------------------------ the paths
    @classmethod
    def from_gram(
        cls,
        gram: np.ndarray,
        *,
        rank: RankRequest = "auto",
        n_features: int,
        dtype: DTypeLike = np.float32,
        valid: np.ndarray | None = None,
        excess: Excess = "raise",
        resolve: float | None = None,
        estimate_errors: bool = True,
    ) -> ReducedOperator:
        """Exact DMD from G = DᵀD (docs/methods.md §1.1-§1.4).

        Parameters
        ----------
        gram : ndarray of shape (T+1, T+1)
            DᵀD of the window, float64.
        rank : int, "auto", "all" or None
            See :func:`truncate`.
        n_features : int
            N, the number of coordinates (for the threshold's aspect ratio β).
        dtype : dtype
            The data's dtype (float32 data: floor 1e-6·σ1; float64: 1e-7·σ1, the Gram's limit).
        valid : ndarray of bool, shape (T+1,), optional
            Snapshots to use (e.g. the finite ones): only pairs (θk, θk+1) with both valid
            enter XᵀX and XᵀY; rows and columns of G for the others are ignored.
        excess : {"raise", "reduce"}
            See :func:`truncate`.
        resolve : float, optional
            With ``rank="auto"``: keep only as many modes as leave every eigenvalue's error estimate
            (:func:`eigenvalue_errors`) at most this (e.g. :data:`RESOLVED`); the Truncation's note says
            when this cut the rank.
        estimate_errors : bool
            Measure the residual behind :func:`gram_eigenvalue_errors` (about the cost of the eigendecomposition
            of XᵀX again). Without it (a spectrum whose errors nobody reads) :meth:`eigenvalue_errors` falls back
            to the a-priori bound; ``resolve`` needs it.
        """
        g = np.asarray(gram, dtype=np.float64)
        if g.ndim != 2 or g.shape[0] != g.shape[1] or g.shape[0] < 3:
            raise WindowTooShortError(f"DMD needs at least 3 snapshots, got {g.shape[0] if g.ndim == 2 else 0}")
        t = g.shape[0] - 1
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            g = np.where(np.outer(valid, valid), g, 0.0)  # a bad snapshot's NaN row and column drop out
            pairs = np.flatnonzero(valid[:-1] & valid[1:])
            if pairs.size < 2:
                raise WindowTooShortError(
                    f"only {pairs.size} pair(s) of consecutive finite snapshots: DMD needs at least 2")
        else:
            pairs = np.arange(t)
        xtx = g[np.ix_(pairs, pairs)]
        evals, v = _eigh_descending(xtx)
        sigma = np.sqrt(np.clip(evals, 0.0, None))
        cut = truncate(sigma, rank=rank, shape=(n_features, pairs.size), dtype=dtype, source="gram", excess=excess)
        xty = g[np.ix_(pairs, pairs + 1)]
        xty_v = xty @ v[:, : cut.rank]
        if not estimate_errors and resolve is None:
            op = cls.from_svd(sigma, v[:, : cut.rank], xty_v, lambda c: g @ c, float(np.trace(g)), truncation=cut,
                              y_rows=pairs + 1, n_snapshots=t + 1,
                              start=int(np.flatnonzero(valid)[0]) if valid is not None else 0)
            return op if valid is None else replace(op, valid=valid)
        # what the error estimate needs (docs/methods.md §1.5): the residual of XᵀX = VΣ²Vᵀ and B = Vᵀ(XᵀY)V's kept rows, columns
        residual = eigh_residual(xtx, v, evals, cut.rank)
        b_cols, b_rows = v.T @ xty_v, (v[:, : cut.rank].T @ xty) @ v
        if resolve is not None and cut.requested == "auto":
            cut = resolved(cut, sigma, lambda r: leading_block_errors(sigma, residual, b_cols, b_rows, r), resolve)
            xty_v = xty_v[:, : cut.rank]
        r = cut.rank
        op = cls.from_svd(sigma, v[:, :r], xty_v, lambda c: g @ c, float(np.trace(g)), truncation=cut,
                          y_rows=pairs + 1, n_snapshots=t + 1,
                          start=int(np.flatnonzero(valid)[0]) if valid is not None else 0)
        errors = gram_eigenvalue_errors(sigma, residual[:, :r], b_cols[:, :r], b_rows[:r], op.atilde, op.eigenvalues,
                                        op.right, op.left)
        return replace(op, rounding_errors=errors, **({} if valid is None else {"valid": valid}))

    @classmethod
    def from_pairs(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        *,
        rank: RankRequest = "auto",
        dtype: DTypeLike = np.float64,
        excess: Excess = "raise",
    ) -> ReducedOperator:
        """Exact DMD of snapshot pairs Y ≈ A X held in memory, by an SVD of X.

        Parameters
        ----------
        x, y : ndarray of shape (n_features, n_pairs)
            Paired snapshots (delay-embedded, trajectories stacked: pairs need not be one trajectory).
        rank, excess
            See :func:`truncate`.
        dtype : dtype
            The data's dtype before it was made float64 (sets the floor with the SVD's own limit).

        The result has no mode expansion (``coefficients`` and ``amplitudes`` are None): the pairs
        are no single trajectory D.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.shape != y.shape or x.ndim != 2 or x.shape[1] < 2:
            raise WindowTooShortError(f"DMD needs at least 2 snapshot pairs, got X of shape {x.shape}")
        u, sigma, vt = np.linalg.svd(x, full_matrices=False)
        v, u = fix_signs(vt.T, u)
        cut = truncate(sigma, rank=rank, shape=x.shape, dtype=dtype, source="svd", excess=excess)
        r = cut.rank
        atilde = u[:, :r].T @ y @ v[:, :r] / sigma[:r]
        eigenvalues, w, left = eigen(atilde)
        return cls(sigma, cut, v[:, :r], atilde, eigenvalues, w, left, source="svd")

    @classmethod
    def from_svd(
        cls,
        sigma: np.ndarray,
        basis: np.ndarray,
        xty_basis: np.ndarray,
        gram_times: Callable[[np.ndarray], np.ndarray],
        gram_trace: float,
        *,
        truncation: Truncation,
        y_rows: np.ndarray | None = None,
        n_snapshots: int | None = None,
        start: int = 0,
        atilde: np.ndarray | None = None,
        source: Source = "gram",
    ) -> ReducedOperator:
        """Exact DMD from the SVD of X and products with G (docs/methods.md §1.3-§1.4).

        Parameters
        ----------
        sigma : ndarray of shape (>= r,)
            Singular values of X, descending (all of them when known: they are reported).
        basis : ndarray of shape (T, r)
            V_r, the leading right singular vectors of X (r = ``truncation.rank``).
        xty_basis : ndarray of shape (T, r)
            (XᵀY) V_r.
        gram_times : callable
            ``gram_times(C)`` returns G C for C of shape (T+1, r) (from G, or one more pass).
        gram_trace : float
            tr(G).
        truncation : Truncation
            The rank decision (:func:`truncate`).
        y_rows, n_snapshots, start : optional
            The snapshots Y's columns are (default 1..T), how many snapshots the window has,
            and the snapshot the amplitudes refer to (b = Φ⁺θ_start).
        atilde : ndarray of shape (r, r), optional
            Ã computed by the caller (an SVD path: Urᵀ Y Vr Σr⁻¹, without the Gram's squared
            condition number); by default from ``xty_basis``.
        source : {"gram", "svd"}
            How σ and V were obtained.
        """
        r = truncation.rank
        t = basis.shape[0]
        y_rows = np.arange(1, t + 1) if y_rows is None else np.asarray(y_rows)
        n_snapshots = t + 1 if n_snapshots is None else n_snapshots
        sr = sigma[:r]
        if atilde is None:
            atilde = (basis.T @ xty_basis) / np.outer(sr, sr)
        eigenvalues, w, left = eigen(atilde)
        c = np.zeros((n_snapshots, r), dtype=np.complex128)
        c[y_rows] = (basis / sr) @ w  # Φ = Y V Σ⁻¹ W, Y = D[:, 1:]
        gram_c = np.asarray(gram_times(c))
        phi_h_phi = c.conj().T @ gram_c
        phi_h_theta0 = gram_c[start].conj()  # Φᴴθ0 = Cᴴ G[:, 0]
        amplitudes = np.linalg.lstsq(phi_h_phi, phi_h_theta0, rcond=None)[0]
        return cls(np.asarray(sigma), truncation, basis, atilde, eigenvalues, w, left, c, amplitudes, gram_c,
                   float(gram_trace), None, start, source)

    @classmethod
    def from_data(
        cls,
        window: np.ndarray,
        *,
        rank: RankRequest = "auto",
        dtype: DTypeLike = np.float32,
        excess: Excess = "raise",
    ) -> ReducedOperator:
        """Exact DMD of a trajectory held in memory, by an SVD of X itself (docs/methods.md §1.7).

        Parameters
        ----------
        window : ndarray of shape (T+1, N)
            The snapshots θ0..θT as rows, float64.
        rank, dtype, excess
            See :meth:`from_gram` (the floor is the SVD's: :func:`precision_floor` with source "svd").

        σ, V and Ã = Urᵀ Y Vr Σr⁻¹ come from the SVD of X (accuracy of an SVD: the ranks it
        resolves are allowed, not only those the Gram resolves); amplitudes b = Φ⁺θ0 by least
        squares on Φ = D C, as PyDMD computes them. G C = D (Dᵀ C) serves the reconstruction error
        (no (T+1)² matrix: memory is the window and its thin SVD, whatever T).
        """
        d = np.asarray(window, dtype=np.float64)
        if d.ndim != 2 or d.shape[0] < 3:
            raise WindowTooShortError(f"DMD needs at least 3 snapshots, got {d.shape[0] if d.ndim == 2 else 0}")
        t = d.shape[0] - 1
        # Xᵀ = D[:-1] = V Σ Uᵀ: the SVD of the (T, N) rows, no transposed copy
        v, sigma, ut = np.linalg.svd(d[:-1], full_matrices=False)
        cut = truncate(sigma, rank=rank, shape=(d.shape[1], t), dtype=dtype, source="svd", excess=excess)
        r = cut.rank
        # signs of the r kept columns only: flipping all T columns of U would copy the whole N×T U again
        v_r, u_r = fix_signs(v[:, :r], ut[:r].T)
        del ut
        y_v = d[1:].T @ v_r  # Y Vr, (N, r)
        atilde = (u_r.T @ y_v) / sigma[:r]
        # G C as D (Dᵀ C): never the (T+1)² Gram, which a long window of few coordinates cannot hold
        op = cls.from_svd(sigma, v_r, np.zeros((t, r)), lambda c: d @ (d.T @ c), float(np.einsum("ij,ij->", d, d)),
                          truncation=cut, atilde=atilde, source="svd")
        assert op.coefficients is not None
        phi = d.T @ op.coefficients  # Φ = D C, (N, r)
        amplitudes = np.linalg.lstsq(phi, d[0].astype(np.complex128), rcond=None)[0]
        return replace(op, amplitudes=amplitudes)

    def eigenvalue_errors(self) -> np.ndarray:
        """Each eigenvalue's estimated rounding error, in the eigenvalues' order: from the measured residual
        (:func:`gram_eigenvalue_errors`) where the path recorded it, else a priori (:func:`eigenvalue_errors`)."""
        if self.rounding_errors is not None:
            return self.rounding_errors
        return eigenvalue_errors(self.singular_values, self.atilde, self.left, self.right, source=self.source,
                                 n_pairs=self.modes_basis.shape[0])

    # ------------------------------------------------------------------ derived
    def classes(self, eps: float = 0.01) -> list[ModeClass]:
        """neutral 1−ε ≤ |λ| ≤ 1+ε, stable |λ| < 1−ε, unstable |λ| > 1+ε (docs/methods.md §1.6)."""
        mod = np.abs(self.eigenvalues)
        return [NEUTRAL if 1 - eps <= m <= 1 + eps else STABLE if m < 1 - eps else UNSTABLE for m in mod]

    def rates(self, dt: float = 1.0) -> np.ndarray:
        """Continuous-time rates log(λ)/Δt (not finite where λ = 0: such a mode has no rate)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(self.eigenvalues.astype(np.complex128)) / dt

    def vandermonde(self, times: np.ndarray) -> np.ndarray:
        """λ_j^k for k in ``times``: shape (r, len(times))."""
        return self.eigenvalues[:, None] ** np.asarray(times, dtype=np.float64)[None, :]

    def scaled_mode_norms(self) -> np.ndarray:
        """‖bj φj‖ for every mode, from CᴴGC: no pass over the data."""
        c, gc, b = self._expansion()
        phi_h_phi = np.real(np.einsum("ij,ij->j", c.conj(), gc))
        return np.abs(b) * np.sqrt(np.clip(phi_h_phi, 0.0, None))

    def reconstruction_error(self) -> float:
        """‖D − D̂‖F / ‖D‖F with D̂ = Φ diag(b) Vand, from G C and tr(G) (no pass over the data).

        Computed as ‖D‖² − 2 Re tr(D̂ᴴD) + ‖D̂‖², so it resolves errors down to ~1e-8 only.
        """
        c, gc, b = self._expansion()
        p = b[:, None] * self.vandermonde(np.arange(c.shape[0]) - self.start)  # (r, T+1)
        if self.valid is not None:  # compare only the snapshots that were used
            p = p * self.valid[None, :]
        norm_d = self.gram_trace
        cross = float(np.real(np.sum(p * gc.T)))  # Re tr(D̂ᴴD) = Re tr(Pᴴ (GC)ᴴ)
        # ‖D̂‖² = tr(Pᴴ (CᴴGC) P), summed elementwise: never the (T+1)² matrix Pᴴ(CᴴGC)P
        norm_hat = float(np.real(np.sum(p.conj() * ((c.conj().T @ gc) @ p))))
        err2 = max(norm_d - 2 * cross + norm_hat, 0.0)
        return float(np.sqrt(err2 / norm_d)) if norm_d > 0 else 0.0

    def reconstruct(self, window_block: np.ndarray, times: np.ndarray) -> np.ndarray:
        """θ̂ at ``times`` for the coordinates of ``window_block`` (their (T+1, n) trajectories).

        Φ rows of those coordinates are ``window_blockᵀ C``; returns shape (len(times), n), real part.
        """
        c, _, b = self._expansion()
        block = np.asarray(window_block, dtype=np.float64)
        if self.valid is not None:
            block = np.where(self.valid[:, None], block, 0.0)  # Φ uses the valid snapshots only
        phi = block.T @ c
        return np.real(phi @ (b[:, None] * self.vandermonde(np.asarray(times) - self.start))).T

    def _expansion(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.coefficients is None or self.gram_coefficients is None or self.amplitudes is None:
            raise NotApplicableError("this operator was fitted from snapshot pairs: it has no modes over one trajectory")
        return self.coefficients, self.gram_coefficients, self.amplitudes
