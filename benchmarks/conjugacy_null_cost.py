"""What the reparametrisation null costs ``traj conjugacy`` on a large observable (the streamed-Gram path).

Two random-walk runs of N coordinates x T snapshots are written to a temporary folder; then, each in
turn and repeated, ``conjugacy([a, b])`` with the default null (20 maps of the first run, whose Grams are
accumulated in the same pass as θ's) and with ``null_size=0`` (θ's Gram alone), and ``reparametrise`` of
one T x 100 000 block against that block's Gram. Prints medians and their ratios.

    python benchmarks/conjugacy_null_cost.py [--n 200000] [--t 200] [--repeat 3]

Measured on the 2-core development machine (N 200 000, T 200): the default command 9.9 s against 0.54 s
without the null (ratio 18.5; 55-58 s with the default null before this benchmark's change, one process each);
``reparametrise`` of a block 0.29 s on average over 6 maps, 4.2x that block's Gram (1.2-2.7 s per map before its
elementwise passes were made in place and in cache-sized column chunks, and tanh computed through expm1).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from traj.analysis.conjugacy import conjugacy, reparametrise
from traj.store import Layout, StoreWriter


def write_run(path: Path, n: int, t: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    data = np.cumsum(rng.standard_normal((t, n)).astype(np.float32) * 0.01, axis=0)
    with StoreWriter(path, Layout.from_shapes([("w", (n,))], prunable=["w"]), dtype="float32") as writer:
        for k, row in enumerate(data):
            writer.append(row, step=k, epoch=k)
        writer.commit()
    return path


def median_seconds(call, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--t", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="traj-null-cost-") as tmp:
        runs = [write_run(Path(tmp) / f"{name}.zarr", args.n, args.t, seed) for seed, name in enumerate("ab")]
        conjugacy(runs, null_size=0)  # warm the page cache
        bare = median_seconds(lambda: conjugacy(runs, null_size=0), args.repeat)
        default = median_seconds(lambda: conjugacy(runs), args.repeat)
        block = np.random.default_rng(2).standard_normal((args.t, 100_000)).cumsum(axis=0)
        bend = median_seconds(lambda: [reparametrise(block, draw, strength=0.1) for draw in range(6)], args.repeat) / 6
        gram = median_seconds(lambda: block @ block.T, args.repeat)
    print(f"N {args.n} x T {args.t}: traj conjugacy default {default:.2f} s, without the null {bare:.2f} s "
          f"(ratio {default / bare:.1f})")
    print(f"reparametrise of a {args.t} x 100000 block {bend:.3f} s, its Gram {gram:.3f} s (ratio {bend / gram:.1f})")


if __name__ == "__main__":
    main()
