"""What online CMD costs per snapshot on the Recorder's writer thread (docs/methods.md §2.6).

Feeds :class:`traj.analysis.cmd_live.LiveCMD` snapshots of N float32 values (a random walk: every weight
moves) and times, after the warm-up, the update of the running sums per snapshot: (M + 3)·N multiply-adds
(Σd, Σd², Σd·ρ_k per mode, and d = w − w(0)), streamed in pieces of 65 536 weights, BATCH snapshots at a
time (the mean over the snapshots is reported: each is copied, every BATCH-th adds the batch). Also printed: the
one-off warm-up (reference pick and replay of the W warm-up snapshots) and the write of the model at the end.

    python benchmarks/live_cmd_cost.py [--n 1000000] [--modes 10] [--snapshots 30] [--warmup 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from traj.analysis.cmd_live import BATCH, LiveCMD
from traj.store import Layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--modes", type=int, default=10)
    parser.add_argument("--snapshots", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    layout = Layout.from_shapes([("w", (args.n // 1000, 1000)), ("b", (args.n - args.n // 1000 * 1000,))])
    with tempfile.TemporaryDirectory() as tmp:
        live = LiveCMD(args.n, layout, "float32", modes=args.modes, warmup=args.warmup, out=Path(tmp) / "cmd",
                       store=Path(tmp) / "run.zarr")
        theta = rng.standard_normal(args.n).astype(np.float32)
        times = []
        for k in range(args.snapshots):
            theta += 0.01 * rng.standard_normal(args.n).astype(np.float32)
            t0 = time.perf_counter()
            live.observe(theta, k)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        summary = live.close()
        written = time.perf_counter() - t0
    after = times[args.warmup:]
    per = statistics.fmean(after)  # amortised: a snapshot is copied, every BATCH-th adds the batch to the sums
    adds = (args.modes + 3) * args.n
    print(f"N = {args.n:,}, M = {summary.modes}: {per * 1e3:.1f} ms per snapshot after the warm-up (mean of "
          f"{len(after)}; a batch of {BATCH} added in {max(after) * 1e3:.0f} ms), {adds / 1e6:.0f}M multiply-adds "
          f"a snapshot ({adds / per / 1e9:.2f} G/s); warm-up snapshot "
          f"{times[args.warmup - 1] * 1e3:.0f} ms (pick + replay of {args.warmup}); model written in "
          f"{written * 1e3:.0f} ms; sums {(args.modes + 3) * args.n * 8 / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
