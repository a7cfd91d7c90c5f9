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
    python benchmarks/live_overhead.py --model gpt2 --steps 12 --rounds 2 --batch 2 --threads 0

``--model gpt2`` trains GPT-2 small (124M, ``GPT2LMHeadModel(GPT2Config())``, bfloat16 parameters,
AdamW, random tokens of length 128; needs ``transformers``) with a snapshot every step instead.
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
from record_overhead import make_model
from record_overhead import train as train_mlp  # benchmarks/ is on the path when this file runs

from traj import Recorder
from traj.live import LiveOptions, Sketch


def make_gpt2() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config()).to(torch.bfloat16)


def train_gpt2(steps: int, batch: int, hook=None) -> tuple[float, float]:
    """Wall and process CPU time of ``steps`` AdamW steps of GPT-2 small in bfloat16 (as train_mlp)."""
    model = make_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, model.config.vocab_size, (batch * 4, 128), generator=torch.Generator().manual_seed(0))
    recorder = hook(model) if hook else None
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(steps):
        x = tokens[(k % 4) * batch : (k % 4 + 1) * batch]
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        if recorder is not None:
            recorder(loss, k)
    if recorder is not None and hasattr(recorder, "close"):
        recorder.close()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's choice)")
    parser.add_argument("--gpt2", action="store_true", help="also time one sketch of a 124M bfloat16 snapshot")
    parser.add_argument("--model", choices=["mlp", "gpt2"], default="mlp", help="what trains (default: the 1.07M MLP)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    make, train = (make_model, train_mlp) if args.model == "mlp" else (make_gpt2, train_gpt2)
    n = sum(p.numel() for p in make().parameters())
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
