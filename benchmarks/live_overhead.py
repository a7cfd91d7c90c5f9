"""What the live monitor adds to recording: the 1.07M-parameter MLP of ``record_overhead.py``.

Trains the same loop three ways, interleaved over rounds (medians reported):

  (a) plain training;
  (b) traj.Recorder snapshotting every step;
  (c) the same with the live monitor on (``LiveOptions(window=50, every=10, sketch=512)``).

Target (issue 28): c/b ≤ 1.02 (the monitor adds at most 2 % to training beyond recording). Also
printed: the monitor's own time per snapshot on the writer thread (sketch + its share of the fits),
the sketch's multiply-adds per snapshot, and the time one sketch of a GPT-2-small-sized (124M
bfloat16) snapshot takes here.

    python benchmarks/live_overhead.py [--steps 300] [--rounds 3] [--batch 512] [--threads 1]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from record_overhead import make_model, train  # benchmarks/ is on the path when this file runs

from traj import Recorder
from traj.live import LiveOptions, Sketch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's choice)")
    parser.add_argument("--gpt2", action="store_true", help="also time one sketch of a 124M bfloat16 snapshot")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = sum(p.numel() for p in make_model().parameters())
    options = LiveOptions(window=50, every=10, sketch=512)
    print(f"model: {n:,} parameters; {args.steps} steps of batch {args.batch}; {options}")
    times: dict[str, list[float]] = {"plain": [], "record": [], "record+live": []}
    monitor_seconds: list[float] = []
    for r in range(args.rounds):
        tmp = Path(tempfile.mkdtemp(prefix="traj-live-bench-"))
        try:
            times["plain"].append(train(args.steps, args.batch)[0])
            for name, live in (("record", None), ("record+live", options)):
                class Hook:
                    def __init__(self, model, live=live, name=name):
                        self.rec = Recorder(tmp / f"{name}{r}.zarr", model, live=live)

                    def __call__(self, loss, k):
                        self.rec.step(loss=loss.item())

                    def close(self):
                        self.rec.close()
                        if self.rec.monitor is not None:
                            monitor_seconds.append(self.rec.monitor.seconds / (args.steps + 1))

                times[name].append(train(args.steps, args.batch, Hook)[0])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nmedian wall: plain {med['plain']:.2f}s, record {med['record']:.2f}s, record+live {med['record+live']:.2f}s")
    print(f"record / plain {med['record'] / med['plain']:.3f}; record+live / record {med['record+live'] / med['record']:.3f}"
          " (target <= 1.02)")
    print(f"monitor on the writer thread: {statistics.median(monitor_seconds) * 1e3:.2f} ms per snapshot; "
          f"sketch {Sketch(n, options.sketch).flops:,} multiply-adds per snapshot")
    if args.gpt2:
        big = 124_439_808
        bits = (np.random.default_rng(0).standard_normal(big, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
        sketch = Sketch(big, options.sketch)
        t0 = time.perf_counter()
        sketch.apply(bits, "bfloat16")
        print(f"one sketch of a 124M bfloat16 snapshot: {time.perf_counter() - t0:.2f} s ({big:,} multiply-adds)")


if __name__ == "__main__":
    main()
