from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def write_store(path, data, *, layout=None, dtype=None, chunk_bytes=None, steps=None, format_version=2,
                stack_bytes=1 << 20, shard_chunks=256, **append_kw):
    """Write a (T, N) array as a run store, one commit per 3 rows (exercises partial chunks).

    ``format_version=1`` writes the old unsharded layout; ``chunk_bytes`` is the (inner) chunk size.
    """
    from traj.store import Layout, StoreWriter

    data = np.asarray(data)
    layout = layout or Layout.from_shapes([("w", (data.shape[1],))], prunable=["w"])
    dtype = dtype or data.dtype.name
    steps = range(data.shape[0]) if steps is None else steps
    with StoreWriter(path, layout, dtype=dtype, chunk_bytes=chunk_bytes, format_version=format_version,
                     stack_bytes=stack_bytes, shard_chunks=shard_chunks) as writer:
        for k, (row, step) in enumerate(zip(data, steps, strict=True)):
            writer.append(row, step=step, epoch=k // 5, **append_kw)
            if k % 3 == 2:
                writer.commit()
    return path


def planted_linear_system(n_params=10_000, n_snapshots=41, seed=0):
    """θ_k = Q z_k with z_{k+1} = A z_k: a known r×r operator embedded by an orthonormal Q.

    Eigenvalues 0.99·e^{±0.3i}, 0.9, 0.7·e^{±1.1i}, 0.5 (r = 6).
    """
    from scipy.linalg import block_diag

    rng = np.random.default_rng(seed)
    eigenvalues = np.array([0.99 * np.exp(0.3j), 0.99 * np.exp(-0.3j), 0.9, 0.7 * np.exp(1.1j), 0.7 * np.exp(-1.1j), 0.5])

    def rotation(lam):
        a, b = abs(lam), np.angle(lam)
        return a * np.array([[np.cos(b), -np.sin(b)], [np.sin(b), np.cos(b)]])

    a = block_diag(rotation(eigenvalues[0]), [[0.9]], rotation(eigenvalues[3]), [[0.5]])
    s = rng.standard_normal((6, 6))
    a = s @ a @ np.linalg.inv(s)
    q, _ = np.linalg.qr(rng.standard_normal((n_params, 6)))
    z = rng.standard_normal(6)
    states = []
    for _ in range(n_snapshots):
        states.append(z)
        z = a @ z
    return (q @ np.array(states).T).T, eigenvalues


def planted_initial_conditions(eigenvalues, seed, *, bend=0.0, steps=100, n_ic=25, basis_seed=99):
    """Seed 002's setting with a known answer: n_ic trajectories of z_{k+1} = A z_k, (steps, n_ic·d) trajectory-major.

    A = P diag(eigenvalues) Pᵀ, P a fixed orthogonal basis (``basis_seed``), so systems with other
    eigenvalues differ in those alone; the n_ic initial conditions are drawn uniformly in [−1, 1]^d
    (``seed``: a seed run of the system is the same A from other initial conditions). ``bend``: every
    state coordinate seen through x → mid + half·(u ± bend·u³), u = (x − mid)/half on the coordinate's
    range pooled over the trajectories (a diffeomorphism of the state for bend < 1/2, sign drawn per
    coordinate), so the bent system is conjugate to A and moves each coordinate by up to ``bend`` of
    its half-range.
    """
    d = len(eigenvalues)
    p = np.linalg.qr(np.random.default_rng(basis_seed).standard_normal((d, d)))[0]
    a = p @ np.diag(eigenvalues) @ p.T
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1.0, 1.0, (n_ic, d))
    states = np.empty((steps, n_ic, d))
    for k in range(steps):
        states[k] = z
        z = z @ a.T
    if bend:
        lo, hi = states.min(axis=(0, 1)), states.max(axis=(0, 1))
        mid, half = (hi + lo) / 2, (hi - lo) / 2
        u = (states - mid) / half
        states = mid + half * (u + bend * np.where(rng.random(d) < 0.5, -1.0, 1.0) * u**3)
    return states.reshape(steps, n_ic * d)


def match(a, b):
    """Pair two sets of complex numbers by optimal assignment; returns b reordered to a."""
    from scipy.optimize import linear_sum_assignment

    cost = np.abs(np.asarray(a)[:, None] - np.asarray(b)[None, :])
    rows, cols = linear_sum_assignment(cost)
    return np.asarray(b)[cols[np.argsort(rows)]]


def planted_modes(n_params=100_000, n_snapshots=40, n_modes=5, noise=0.0, seed=0):
    """Weights that are affine copies a·p_m(k) + b of one of ``n_modes`` known profiles."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n_snapshots)
    profiles = np.stack([np.sin(2 * np.pi * (m + 1) * t + m) + 0.3 * t * (m % 2) for m in range(n_modes)])
    labels = rng.integers(n_modes, size=n_params)
    a = rng.uniform(0.5, 2.0, n_params) * rng.choice([-1.0, 1.0], n_params)
    b = rng.normal(0.0, 1.0, n_params)
    data = profiles[labels].T * a + b
    if noise:
        data = data + noise * rng.standard_normal(data.shape)
    return data, labels, a, b, profiles
