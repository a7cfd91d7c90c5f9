"""DMD at scale: traj against its I/O floor (out of core) and against PyDMD (in RAM).

(a) A synthetic store of N params x T snapshots (default 10M x 200, 8 GB float32) on disk:
    - floor 1: one plain pass reading every block (each chunk decompressed once, no compute);
    - floor 2: the same pass plus the float64 Gram GEMM B Bᵀ (numpy, no prefetch, no dsyrk);
    - traj: the whole `traj dmd STORE` command in a fresh process (report included), its
      wall time and peak RSS.
    Targets (issue 3): traj <= 1.5x floor 2, peak RSS <= 1 GiB.
(b) 1M x 200 in RAM, a planted rank-20 linear system in float64 (store on /dev/shm for traj,
    the array for PyDMD):
    traj `dmd(rank=20)` vs PyDMD `DMD(svd_rank=20, exact=True).fit`, time ratio and the
    largest eigenvalue difference. Target: >= 10x faster, eigenvalues equal to 1e-6.

    python benchmarks/dmd_scaling.py [--n-params 10000000] [--snapshots 200] [--dir /tmp]
"""

from __future__ import annotations

import argparse
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


def planted_store(path: Path, n: int, t: int, rank: int = 20, seed: int = 1) -> RunStore:
    """A linear system with `rank` known modes embedded in R^n (well-conditioned eigenvalues)."""
    rng = np.random.default_rng(seed)
    blocks = []
    for j in range(rank // 2):
        radius, angle = 0.999 - 0.02 * j, 0.05 + 0.15 * j
        blocks.append(radius * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]))
    from scipy.linalg import block_diag

    a = block_diag(*blocks)
    basis, _ = np.linalg.qr(rng.standard_normal((n, rank)))
    z = rng.standard_normal(rank)
    with StoreWriter(path, Layout.from_shapes([("w", (n,))], prunable=["w"]), dtype="float64", overwrite=True) as writer:
        for k in range(t):
            writer.append(basis @ z, step=k)
            z = a @ z
    return RunStore(path)


def floor_passes(store: RunStore) -> tuple[float, float]:
    """The plain passes traj is measured against: the same chunk-aligned reads (every chunk
    decompressed once), sequential, without the prefetch thread, buffer reuse or dsyrk."""
    t = store.n_snapshots
    t0 = time.perf_counter()
    for _ in store.iter_blocks():
        pass
    read = time.perf_counter() - t0
    t0 = time.perf_counter()
    g = np.zeros((t, t))
    for _, block in store.iter_blocks():
        b = np.asarray(block, dtype=np.float64)
        g += b @ b.T
    gemm = time.perf_counter() - t0
    return read, gemm


def run_cli(store: RunStore, out: Path) -> tuple[float, float]:
    """Wall time and peak RSS of `traj dmd` in a fresh process."""
    return measure(["-c", "from traj.cli.app import main; main()", "dmd", str(store.path), "--out", str(out)])


def measure(python_args: list[str]) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MiB) of ``python *python_args`` in a fresh process.

    RSS is polled with psutil: getrusage(RUSAGE_CHILDREN) would count the pages the child
    inherited from this (large) process at fork, before exec.
    """
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *python_args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watched = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{python_args} failed with exit code {proc.returncode}")
    return wall, peak / 2**20


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
            store = planted_store(work / "ram.zarr", args.ram_params, args.snapshots)
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
