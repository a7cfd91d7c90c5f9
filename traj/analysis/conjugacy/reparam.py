"""The reparametrisation null's maps (docs/methods.md §4.3): smooth monotone maps h of each coordinate.

Each map is a pure function of (coordinate, seed, draw) through a counter-based hash, so any block split
of the coordinates (and any backend) draws the same map.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["coordinate_keys", "family_draws", "reparametrise"]


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


def family_draws(size: int, members: int) -> list[tuple[int, int]]:
    """(first draw, draws) of the reparametrisation null's ``size`` maps for each of ``members`` runs
    (the first run, then each seed-null run): as equal as the count allows, consecutive draw indices, so
    every member is bent by other maps and the whole null holds ``size`` maps."""
    counts = [size // members + (j < size % members) for j in range(members)]
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
    return [(int(a), int(n)) for a, n in zip(firsts, counts, strict=True)]
