"""What the guarded store costs on the read path (issue 12).

Every chunk a RunStore reads goes through traj.store.guard.GuardedStore: an lstat, a real-path
check of its directory (cached), a size bound and a codec-header check before zarr decodes it.
This reads the same store in the same column ranges as RunStore.iter_blocks, through RunStore.read
(guarded) and through a plain zarr LocalStore array (unguarded), and prints the best wall and CPU
time of each and their ratio. Two stores: large chunks (1 MiB, the default) and many small ones
(4 KiB, where a per-chunk cost would show).

    python benchmarks/guarded_read.py [--rounds 5] [--dir /tmp]

Measured on the 2-core machine with other jobs running (load ~10, so best of 8 alternating rounds):
1 MiB chunks guarded/plain wall 1.05, CPU 1.02; 4 KiB chunks (20 000 files) wall 0.96, CPU 0.93,
i.e. within the noise.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from traj.store import Layout, RunStore, StoreWriter
from traj.store.run_store import DEFAULT_READ_BYTES


def make_store(path: Path, n: int, t: int, chunk_bytes: int) -> RunStore:
    rng = np.random.default_rng(0)
    row = rng.standard_normal(n).astype(np.float32)
    with StoreWriter(path, Layout.from_shapes([("w", (n,))]), chunk_bytes=chunk_bytes, overwrite=True) as writer:
        for k in range(t):
            writer.append(np.roll(row, k), step=k)
    return RunStore(path)


def column_reads(store: RunStore) -> list[slice]:
    """The column ranges RunStore.iter_blocks reads at once (whole chunk columns up to its read budget)."""
    n_rows, n_chunk = store.n_snapshots, store.chunks[1]
    width = store.block_columns(n_rows)
    column_bytes = n_rows * n_chunk * store.dtype.itemsize
    if width < n_chunk and column_bytes <= DEFAULT_READ_BYTES:
        width = max(1, DEFAULT_READ_BYTES // column_bytes) * n_chunk
    return [slice(start, min(start + width, store.n_params)) for start in range(0, store.n_params, width)]


def guarded_pass(store: RunStore) -> None:
    for cols in column_reads(store):
        store.read(columns=cols)


def plain_pass(store: RunStore) -> None:
    import zarr

    array = zarr.open_array(zarr.storage.LocalStore(store.path, read_only=True), path="params", mode="r")
    for cols in column_reads(store):
        np.asarray(array[: store.n_snapshots, cols])


def best(store: RunStore, rounds: int) -> dict[str, tuple[float, float]]:
    """Best wall and CPU time of each pass, the two alternating so load on the machine hits both."""
    times = {"guarded": (float("inf"), float("inf")), "plain": (float("inf"), float("inf"))}
    for _ in range(rounds):
        for name, fn in (("guarded", guarded_pass), ("plain", plain_pass)):
            t0, c0 = time.perf_counter(), time.process_time()
            fn(store)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            times[name] = (min(times[name][0], wall), min(times[name][1], cpu))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="traj-guard-bench-", dir=args.dir))
    try:
        for label, n, t, chunk in (("1 MiB chunks", 2_000_000, 100, 1 << 20), ("4 KiB chunks", 20_000, 1000, 4096)):
            store = make_store(work / f"{chunk}.zarr", n, t, chunk)
            guarded_pass(store)  # warm the page cache
            times = best(store, args.rounds)
            (g_wall, g_cpu), (p_wall, p_cpu) = times["guarded"], times["plain"]
            print(f"{label} ({t} x {n:,}, chunks {store.chunks}): guarded {g_wall:.3f} s wall / {g_cpu:.3f} s CPU, "
                  f"plain zarr {p_wall:.3f} s / {p_cpu:.3f} s; ratio wall {g_wall / p_wall:.2f}, CPU {g_cpu / p_cpu:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
