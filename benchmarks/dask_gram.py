"""The dask backend's Gram against numpy's on one machine, and a LocalCluster of 2 workers against 1.

A store of N params x T snapshots float32 (default 500k x 201, 400 MB) is written once; then the
window's float64 Gram (the pass `traj dmd` makes) is timed --repeat times per configuration
(round robin, so every configuration sees the same load), in two phases: the one-machine schedulers with
no cluster running, then the clusters (and numpy again, as the baseline under the same load) with both
LocalClusters up:

  numpy                         Engine() (dsyrk, a prefetch thread)
  dask threads / processes      Engine(backend="dask", scheduler=...)
  LocalCluster 1 / 2 workers    one thread each, Engine(backend="dask", scheduler=cluster address)

and every Gram is checked against numpy's (relative 1e-10). The table gives the median, the
spread (min-max) and the first call of each; the "processes" Engine is made first, as `traj dmd`
makes it before opening the store, and the time that takes (its worker pool's start, paid once
per command) is printed and counted in that first call. Targets (issue 14): dask on one machine
<= 1.3x numpy; 2 workers not slower than 1.

    python benchmarks/dask_gram.py [--n-params 500000] [--snapshots 201] [--dir /tmp] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from traj.engine import Engine
from traj.store import Layout, RunStore, StoreWriter


def write(path: Path, n: int, t: int) -> RunStore:
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((8, n)).astype(np.float32)
    with StoreWriter(path, Layout.from_shapes([("w", (n,))]), overwrite=True) as writer:
        for k in range(t):
            writer.append(np.cos(0.05 * k * np.arange(1, 9, dtype=np.float32)) @ basis, step=k)
    return RunStore(path)


def timed(engine: Engine, store: RunStore) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    gram = engine.gram(store)["all"]
    return time.perf_counter() - t0, gram


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-params", type=int, default=500_000)
    ap.add_argument("--snapshots", type=int, default=201)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    t0 = time.perf_counter()
    processes = Engine(backend="dask", scheduler="processes")  # first, as the CLI does: starts the pool
    pool_start = time.perf_counter() - t0
    from distributed import LocalCluster

    tmp = Path(tempfile.mkdtemp(dir=args.dir, prefix="traj-dask-"))
    try:
        store = write(tmp / "s.zarr", args.n_params, args.snapshots)
        print(f"N = {args.n_params}, T+1 = {args.snapshots}: {store.n_params * store.n_snapshots * 4 / 1e6:.0f} MB; "
              f"dask processes: Engine made (pool started) in {pool_start:.2f} s")
        reference = timed(Engine(), store)[1]

        def measure(engines: dict[str, Engine]) -> dict[str, list[float]]:
            times: dict[str, list[float]] = {name: [] for name in engines}
            for _ in range(args.repeat):
                for name, engine in engines.items():
                    seconds, gram = timed(engine, store)
                    np.testing.assert_allclose(gram, reference, rtol=1e-10, atol=1e-10 * np.abs(reference).max())
                    times[name].append(seconds)
            return times

        def table(title: str, times: dict[str, list[float]]) -> None:
            base = statistics.median(times["numpy"])
            print(f"\n{title}\n{'':24} {'median s':>9} {'min-max':>12} {'/ numpy':>8} {'first s':>8} {'/ numpy':>8}")
            for name, t in times.items():
                med = statistics.median(t)
                print(f"{name:24} {med:9.2f} {min(t):5.2f}-{max(t):<6.2f} {med / base:8.2f} {t[0]:8.2f} "
                      f"{t[0] / times['numpy'][0]:8.2f}")

        # one machine: no cluster running beside it (a LocalCluster's scheduler, nannies and idle workers
        # take CPU on a 2-core machine that the local schedulers then lack)
        local = measure({"numpy": Engine(), "dask threads": Engine(backend="dask", scheduler="threads"),
                         "dask processes": processes})
        local["dask processes"][0] += pool_start  # the first call pays the pool's start
        table("one machine (target: dask <= 1.3x numpy)", local)
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as one, \
                LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as two:
            clusters = measure({"numpy": Engine(),
                                "LocalCluster 1 worker": Engine(backend="dask", scheduler=one.scheduler_address),
                                "LocalCluster 2 workers": Engine(backend="dask", scheduler=two.scheduler_address)})
        table("with both LocalClusters running (target: 2 workers not slower than 1)", clusters)
        one_s, two_s = (statistics.median(clusters["LocalCluster 1 worker"]),
                        statistics.median(clusters["LocalCluster 2 workers"]))
        print(f"2 workers / 1 worker (medians): {two_s / one_s:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
