"""Long runs: `traj dmd` on T = 3001 x N = 200k and T = 10 001 x N = 50k float32 against its floor.

For each (T, N) a cheap deterministic random walk θ_k = θ_{k-1} + s_k·u_{k mod 64} (64 fixed random
directions u, so rank 65) is written twice: by `traj import` from a (T, N) .npy, and by a Recorder (a loop of
`rec.step()` on an nn.Module holding N parameters that follow the same walk). For each store:

  floor  = read every stored byte once (one pass of `RunStore.iter_blocks`, each chunk decoded
           once, no compute) + the float64 Gram of the same column blocks by dsyrk, taken from
           the page-cached .npy (no store involved), both measured in this run;
  traj   = `traj dmd STORE --rank 24` and `traj dmd STORE` (auto) in a fresh process each: wall
           time and peak RSS (the child's own VmHWM).

Targets (issue 14): both within 1.5x of the floor, peak RSS <= 1 GiB. The Gram of T = 10 001
snapshots is itself 800 MB (float64) and its path holds five such matrices, over `traj dmd`'s
512 MiB memory budget: there both commands take the randomized range finder (a block Krylov
sketch, 7 passes), `--rank 24` with 34 columns a pass and auto with 32 columns a pass, growing
until 10 directions lie past the rank Gavish–Donoho's known-noise threshold keeps (σ̂ from the
sketch's tail energy). At T = 3001 the Gram path fits (5 x 72 MB) and is the cheaper: both take it.

    python benchmarks/dmd_long.py [--cases 3001x200000,10001x50000] [--dir /tmp] [--keep] [--reuse DIR]

``--reuse DIR`` keeps the stores in DIR/TxN and reuses those already there (timing runs without rewriting 2 GB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from traj.store import RunStore


def walk_rows(t: int, n: int, seed: int = 0):
    """Rows of the random walk, in float32, one at a time (the .npy and the Recorder see the same)."""
    rng = np.random.default_rng(seed)
    directions = (rng.standard_normal((64, n)) * 1e-3).astype(np.float32)
    theta = rng.standard_normal(n).astype(np.float32)
    for k in range(t):
        if k:
            theta += directions[k % 64] * np.float32(1.0 + 0.5 * np.sin(0.01 * k))
        yield k, theta


def write_npy(path: Path, t: int, n: int) -> None:
    data = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(t, n))
    for k, theta in walk_rows(t, n):
        data[k] = theta
    data.flush()
    del data


def record(path: Path, t: int, n: int) -> float:
    """The same walk recorded by a Recorder, every step; returns the wall time (including the close)."""
    import torch

    from traj import Recorder

    module = torch.nn.Module()
    module.theta = torch.nn.Parameter(torch.zeros(n))
    t0 = time.perf_counter()
    with Recorder(path, module, record_initial=False) as rec:
        for k, theta in walk_rows(t, n):
            with torch.no_grad():
                module.theta.copy_(torch.from_numpy(theta))
            rec.step(step=k)
    return time.perf_counter() - t0


#: The child reports its own peak RSS: VmHWM of its own address space. (ru_maxrss is no good here:
#: Linux folds the forked parent's high-water mark into the child's across exec.)
CHILD = ("import atexit, sys\n"
         "def _hwm():\n"
         "    for line in open('/proc/self/status'):\n"
         "        if line.startswith('VmHWM:'):\n"
         "            sys.stderr.write('TRAJ_BENCH_VMHWM_KIB ' + line.split()[1] + '\\n')\n"
         "atexit.register(_hwm)\n"
         "from traj.cli.app import main; main()")


def run_child(args: list[str]) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MiB, the child's own VmHWM) of ``traj ARGS`` in a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"traj {' '.join(args)} failed:\n{proc.stderr}")
    hwm = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("TRAJ_BENCH_VMHWM_KIB")]
    return wall, int(hwm[-1]) / 1024 if hwm else float("nan")


def read_pass(store: RunStore) -> float:
    """Every stored byte read and decoded once, the engine's block width, nothing computed."""
    width = store.block_columns(store.n_snapshots)
    t0 = time.perf_counter()
    for _ in store.iter_blocks(block_columns=width, read_bytes=4 * (64 << 20)):
        pass
    return time.perf_counter() - t0


def gram_pass(npy: Path, width: int) -> float:
    """The float64 Gram by dsyrk over column blocks of the (page-cached) .npy: the BLAS part of the floor."""
    from scipy.linalg.blas import dsyrk

    data = np.load(npy, mmap_mode="r")
    t, n = data.shape
    for start in range(0, n, width):  # bring the file into the page cache first
        np.asarray(data[:, start : start + width]).sum()
    acc = np.zeros((t, t), order="F")
    block = np.empty((t, width))
    t0 = time.perf_counter()
    for start in range(0, n, width):
        part = block[:, : min(width, n - start)]
        np.copyto(part, data[:, start : start + width])
        acc = dsyrk(1.0, np.ascontiguousarray(part).T, beta=1.0, c=acc, trans=1, overwrite_c=1)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="3001x200000,10001x50000")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true", help="keep the stores (printed) instead of deleting them")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="a folder kept by an earlier --keep run: its TxN stores are reused, missing ones written")
    args = parser.parse_args()
    rows = []
    print(f"load average at start: {os.getloadavg()}", flush=True)
    for case in args.cases.split(","):
        t, n = (int(v) for v in case.split("x"))
        reused = args.reuse is not None
        work = args.reuse / f"{t}x{n}" if reused else Path(tempfile.mkdtemp(prefix=f"traj-long-{t}x{n}-", dir=args.dir))
        work.mkdir(parents=True, exist_ok=True)
        try:
            npy = work / "walk.npy"
            if not (reused and npy.exists()):
                write_npy(npy, t, n)
            if not (reused and (work / "import.zarr").exists()):
                wall, rss = run_child(["import", str(npy), "--out", str(work / "import.zarr")])
                print(f"{t} x {n}: traj import {wall:.1f} s (peak RSS {rss:.0f} MiB)", flush=True)
            if not (reused and (work / "recorder.zarr").exists()):
                wall = record(work / "recorder.zarr", t, n)
                print(f"{t} x {n}: Recorder, every step {wall:.1f} s", flush=True)
            for how in ("import", "recorder"):
                store = RunStore(work / f"{how}.zarr")
                width = store.block_columns(t)
                read = read_pass(store)
                gram = gram_pass(npy, width)
                floor = read + gram
                size = store.nbytes_stored() / 1e9
                print(f"  {how}: {size:.2f} GB, shards {store.shards}, chunks {store.chunks}; "
                      f"read {read:.1f} s + Gram {gram:.1f} s = floor {floor:.1f} s", flush=True)
                for label, extra in (("--rank 24", ["--rank", "24"]), ("auto", [])):
                    out = work / f"dmd-{how}-{len(extra)}"
                    wall, rss = run_child(["dmd", str(store.path), *extra, "--out", str(out)])
                    rows.append((f"{t} x {n}", how, label, floor, wall, wall / floor, rss))
                    print(f"    traj dmd {label}: {wall:.1f} s = {wall / floor:.2f} x floor, peak RSS {rss:.0f} MiB",
                          flush=True)
        finally:
            if args.keep or reused:
                print(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average at end: {os.getloadavg()}")
    print("| T x N | written by | traj dmd | floor (s) | traj (s) | ratio | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for case, how, label, floor, wall, ratio, rss in rows:
        print(f"| {case} | {how} | {label} | {floor:.1f} | {wall:.1f} | {ratio:.2f} | {rss:.0f} |")
    print("targets: ratio <= 1.5, peak RSS <= 1024 MiB")


if __name__ == "__main__":
    main()
