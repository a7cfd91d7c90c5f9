"""DMD at scale: traj against its I/O floor (out of core) and against PyDMD (in RAM).

(a) A synthetic store of N params x T snapshots (default 10M x 200, 8 GB float32) on disk:
    - floor 1: one plain pass reading every block (zarr slicing, no compute);
    - floor 2: the same pass plus the float64 Gram GEMM B Bᵀ (numpy, no prefetch);
    - traj: the whole `traj dmd STORE` command in a fresh process (report included), its
      wall time and peak RSS.
    Targets (issue 3): traj <= 1.5x floor 2, peak RSS <= 1 GiB.
(b) 1M x 200 in RAM (store on /dev/shm for traj, the array for PyDMD):
    traj `dmd(rank=20)` vs PyDMD `DMD(svd_rank=20, exact=True).fit`, time ratio and the
    largest eigenvalue difference. Target: >= 10x faster, eigenvalues equal to 1e-6.

    python benchmarks/dmd_scaling.py [--n-params 10000000] [--snapshots 200] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from traj.analysis.dmd import dmd
from traj.store import Layout, RunStore, StoreWriter


def synthetic_store(path: Path, n: int, t: int, seed: int = 0) -> RunStore:
    """θ_k = Σ_j c_j(k) v_j + small noise from a few fixed random vectors (cheap to generate)."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((4, n)).astype(np.float32)
    noise = rng.standard_normal(n).astype(np.float32) * 1e-3
    with StoreWriter(path, Layout.from_shapes([("w", (n,))], prunable=["w"]), overwrite=True) as writer:
        for k in range(t):
            c = np.array([1.0, 0.98**k, 0.9**k * np.cos(0.3 * k), 0.9**k * np.sin(0.3 * k)], dtype=np.float32)
            row = c @ basis
            row += np.roll(noise, k)  # a different small perturbation each snapshot
            writer.append(row, step=k)
    return RunStore(path)


def floor_passes(store: RunStore) -> tuple[float, float]:
    import zarr

    arr = zarr.open_array(str(store.path / "params"), mode="r")
    t = store.n_snapshots
    width = store.block_columns(t)
    t0 = time.perf_counter()
    for c in range(0, store.n_params, width):
        arr[:t, c : c + width]
    read = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = np.zeros((t, t))
    for c in range(0, store.n_params, width):
        b = np.asarray(arr[:t, c : c + width], dtype=np.float64)
        g += b @ b.T
    gemm = time.perf_counter() - t0
    return read, gemm


def run_cli(store: RunStore, out: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from traj.cli.app import main; main()", "dmd", str(store.path),
                    "--out", str(out)], check=True, capture_output=True)
    wall = time.perf_counter() - t0
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, rss_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-params", type=int, default=10_000_000)
    parser.add_argument("--snapshots", type=int, default=200)
    parser.add_argument("--ram-params", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--skip-a", action="store_true")
    parser.add_argument("--skip-b", action="store_true")
    args = parser.parse_args()

    if not args.skip_a:
        work = Path(tempfile.mkdtemp(prefix="traj-dmd-bench-", dir=args.dir))
        try:
            t0 = time.perf_counter()
            store = synthetic_store(work / "big.zarr", args.n_params, args.snapshots)
            size = store.nbytes_stored() / 1e9
            print(f"(a) store {args.n_params:,} x {args.snapshots} float32: {size:.2f} GB on disk "
                  f"(written in {time.perf_counter() - t0:.0f} s)")
            read, gemm = floor_passes(store)
            wall, rss = run_cli(store, work / "report")
            print(f"    floor 1 (read every block)      {read:7.1f} s")
            print(f"    floor 2 (read + float64 GEMM)   {gemm:7.1f} s")
            print(f"    traj dmd (CLI, fresh process)   {wall:7.1f} s   peak RSS {rss:.0f} MiB")
            print(f"    ratio traj / floor 2 = {wall / gemm:.2f}   target <= 1.5;  RSS target <= 1024 MiB")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    if not args.skip_b:
        from pydmd import DMD

        shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else args.dir
        work = Path(tempfile.mkdtemp(prefix="traj-dmd-bench-", dir=shm))
        try:
            store = synthetic_store(work / "ram.zarr", args.ram_params, args.snapshots, seed=1)
            x = store.read().astype(np.float64).T  # (N, T+1), PyDMD's layout
            t0 = time.perf_counter()
            ours = dmd(store, rank=20)
            t_traj = time.perf_counter() - t0
            t0 = time.perf_counter()
            ref = DMD(svd_rank=20, exact=True)
            ref.fit(x)
            t_pydmd = time.perf_counter() - t0
            ref_eigs = np.asarray(ref.eigs)
            diff = max(float(np.min(np.abs(ours.eigenvalues - lam))) for lam in ref_eigs)
            print(f"(b) {args.ram_params:,} x {args.snapshots} in RAM, rank 20: traj {t_traj:.2f} s, "
                  f"PyDMD {t_pydmd:.2f} s, speed-up {t_pydmd / t_traj:.1f}x (target >= 10); "
                  f"max eigenvalue difference {diff:.2e} (target <= 1e-6)")
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
