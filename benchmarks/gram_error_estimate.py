"""How tight the Gram path's eigenvalue error estimate is, how many modes "auto" keeps by it, and what it costs.

For planted spectra (amplitudes 1, then 1e-3 … 1e-9) and a training-like trajectory (snapshots that drift
from a common point by a decaying random walk), exact DMD at every rank r by the Gram path
(``ReducedOperator.from_gram``, float64 data) is compared with an SVD of the same data at the same rank
(``ReducedOperator.from_data``): the true error max |λ_gram − λ_svd|, the estimate from the measured residual
(``eigenvalue_errors()``) and the a-priori bound it replaced (``operator.eigenvalue_errors``). Then the rank
"auto" keeps with ``resolve=1e-6`` against r*, the largest rank whose true errors are all <= 1e-6, and the
rank the a-priori bound would have kept. Last, the seconds the residual (``eigh_residual``: about twenty
float64 BLAS products of T×T by T×r) adds beside ``np.linalg.eigh`` of the T×T Gram.

    python benchmarks/gram_error_estimate.py [--timing 1000,2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

from traj.engine.operator import ReducedOperator
from traj.engine.precision import eigenvalue_errors, eigh_residual
from traj.engine.truncation import RESOLVED


def match(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    rows, cols = linear_sum_assignment(np.abs(a[:, None] - b[None, :]))
    return b[cols[np.argsort(rows)]]


def planted(low: float, seed: int, n: int = 1500, t: int = 120, m: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lam = np.linspace(0.99, 0.6, m)
    amp = np.concatenate([[1.0], np.logspace(-3, low, m - 1)])
    return (rng.standard_normal((n, m)) @ (amp[:, None] * lam[:, None] ** np.arange(t + 1))).T


def training_like(t: int = 300, n: int = 2000, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.standard_normal((t + 1, n)) * np.exp(-np.arange(t + 1) / 50)[:, None]
    return 1 + 0.01 * np.cumsum(steps, axis=0)


def study(name: str, data: np.ndarray, ranks: list[int] | None = None) -> None:
    n = data.shape[1]
    gram = data @ data.T
    auto = ReducedOperator.from_gram(gram, rank="auto", n_features=n, dtype=np.float64, resolve=RESOLVED)
    available = auto.truncation.available
    rows = []
    for r in ranks or range(1, available + 1):
        r = min(r, available)
        ours = ReducedOperator.from_gram(gram, rank=r, n_features=n, dtype=np.float64)
        svd = ReducedOperator.from_data(data, rank=r, dtype=np.float64)
        true = float(np.abs(ours.eigenvalues - match(ours.eigenvalues, svd.eigenvalues)).max())
        old = float(eigenvalue_errors(ours.singular_values, ours.atilde, ours.left, ours.right, source="gram").max())
        rows.append((r, ours.singular_values[r - 1] / ours.singular_values[0], true,
                     float(ours.eigenvalue_errors().max()), old))
    r_star = max((r for r, *_ in rows if all(x[2] <= RESOLVED for x in rows if x[0] <= r)), default=0)
    r_old = max((r for r, *_, old in rows if old <= RESOLVED), default=1)
    print(f"\n{name}: T = {data.shape[0] - 1}, N = {n}; auto keeps {auto.rank} (r* = {r_star}; "
          f"the a-priori bound would keep {r_old})")
    print(f"  {'r':>4} {'σr/σ1':>8} {'true':>9} {'estimate':>9} {'est/true':>8} {'a priori':>9}")
    for r, ratio, true, est, old in rows:
        print(f"  {r:4d} {ratio:8.1e} {true:9.1e} {est:9.1e} {est / max(true, 1e-300):8.2g} {old:9.1e}")


def timing(t: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((t, 4 * t)) * np.logspace(0, -6, t)[:, None]
    g = x @ x.T
    start = time.perf_counter()
    evals, v = np.linalg.eigh(g)
    eigh_s = time.perf_counter() - start
    start = time.perf_counter()
    eigh_residual(g, v[:, ::-1], evals[::-1], t // 2)
    print(f"T = {t}: eigh {eigh_s:.2f} s, residual for r = {t // 2}: {time.perf_counter() - start:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timing", default="1000,2000", help="Gram sizes T to time the residual at")
    args = parser.parse_args()
    study("planted, amplitudes 1e-3…1e-9, seed 1", planted(-9, 1))
    study("planted, amplitudes 1e-2…1e-5, seed 2", planted(-5, 2))
    study("training-like walk", training_like(), ranks=[5, 20, 60, 100, 124, 150, 200, 250])
    for t in (int(v) for v in args.timing.split(",") if v):
        timing(t)


if __name__ == "__main__":
    main()
