"""Recording overhead: plain training vs recording every step vs torch.save every step.

Trains a ~1.07M-parameter MLP (784-1024-256-10) on CPU for a fixed number of steps, three
ways, in one process and interleaved over several rounds (medians reported):

  (a) plain training
  (b) the same loop with traj.Recorder snapshotting every step (store written to a temp dir)
  (c) the same loop with torch.save(model.state_dict()) every step (the usual alternative)

Targets (issue 2): b/a <= 1.05 and c/b >= 3.

It also prints the floor any recorder pays: the time to write one snapshot's bytes into a
fresh file (no encoding, no zarr), which is what the kernel charges for new page-cache pages,
and what the per-snapshot check that no recorded parameter was replaced costs on a model of
100 tensors, as a fraction of one recorded training step above.

    python benchmarks/record_overhead.py [--steps 200] [--rounds 3] [--batch 512] [--threads N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from traj import Recorder, RunStore


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 10))


def train(steps: int, batch: int, hook=None) -> tuple[float, float]:
    """Wall time and process CPU time (every thread: training and the writer) of ``steps`` steps."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch * 4, 784, generator=gen)
    y = torch.randint(0, 10, (batch * 4,), generator=gen)
    recorder = hook(model) if hook else None
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(steps):
        i = (k % 4) * batch
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x[i : i + batch]), y[i : i + batch])
        loss.backward()
        opt.step()
        if recorder is not None:
            recorder(loss, k)
    if recorder is not None and hasattr(recorder, "close"):
        recorder.close()  # the wall time includes flushing every snapshot to disk
    return time.perf_counter() - t0, time.process_time() - c0


def fresh_file_write_ms(nbytes: int, repeats: int = 40) -> float:
    """Median time to write ``nbytes`` into a new file (the kernel's cost of new pages)."""
    payload = bytes(nbytes)
    tmp = Path(tempfile.mkdtemp(prefix="traj-floor-"))
    try:
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            with open(tmp / f"f{i}", "wb") as f:
                f.write(payload)
            times.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(times)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def identity_check_us(repeats: int = 20000) -> float:
    """Median cost of the Recorder's replaced-parameter check on a 100-tensor model, microseconds."""
    import timeit

    model = nn.Sequential(*[nn.Sequential(nn.Linear(32, 32), nn.LayerNorm(32)) for _ in range(25)])
    tmp = Path(tempfile.mkdtemp(prefix="traj-watch-"))
    try:
        with Recorder(tmp / "w.zarr", model, record_initial=False) as rec:
            runs = timeit.repeat(rec._watch.check, number=repeats, repeat=5)
        return 1e6 * statistics.median(runs) / repeats
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=512)
    # One torch thread leaves the second core of a 2-core machine to the writer thread, as any
    # multi-core machine does; --threads 2 shows the case where training takes every core.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n_params = sum(p.numel() for p in make_model().parameters())
    print(f"model: {n_params:,} parameters; {args.steps} steps of batch {args.batch}; torch threads {torch.get_num_threads()}")

    times: dict[str, list[float]] = {"plain": [], "traj": [], "torch.save": []}
    cpu: dict[str, list[float]] = {"plain": [], "traj": [], "torch.save": []}
    for r in range(args.rounds):
        tmp = Path(tempfile.mkdtemp(prefix="traj-bench-"))
        try:
            for name, result in (("plain", train(args.steps, args.batch)),):
                times[name].append(result[0])
                cpu[name].append(result[1])

            class TrajHook:
                def __init__(self, model):
                    self.rec = Recorder(tmp / f"run{r}.zarr", model)

                def __call__(self, loss, k):
                    self.rec.step(loss=loss.item())

                def close(self):
                    self.rec.close()

            wall, seconds = train(args.steps, args.batch, TrajHook)
            times["traj"].append(wall)
            cpu["traj"].append(seconds)
            store = RunStore(tmp / f"run{r}.zarr")
            assert store.n_snapshots == args.steps + 1

            def save_hook(model):
                (tmp / "ckpt").mkdir(exist_ok=True)
                return lambda loss, k: torch.save(model.state_dict(), tmp / "ckpt" / f"step{k}.pt")

            wall, seconds = train(args.steps, args.batch, save_hook)
            times["torch.save"].append(wall)
            cpu["torch.save"].append(seconds)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))

    med = {k: statistics.median(v) for k, v in times.items()}
    floor_ms = fresh_file_write_ms(n_params * 4)
    print("\nmedian wall time: " + ", ".join(f"{k} {v:.2f}s" for k, v in med.items()))
    ratios = sorted(b / a for a, b in zip(times["plain"], times["traj"], strict=True))
    print(f"b/a (traj recording / plain)      = {med['traj'] / med['plain']:.3f}   target <= 1.05   "
          f"(per round: {', '.join(f'{r:.3f}' for r in ratios)})")
    print(f"c/b (torch.save / traj recording) = {med['torch.save'] / med['traj']:.2f}   target >= 3")
    per_step = {k: 1e3 * (v - med["plain"]) / args.steps for k, v in med.items() if k != "plain"}
    print(f"added per step: traj {per_step['traj']:.1f} ms, torch.save {per_step['torch.save']:.1f} ms; "
          f"floor (write {n_params * 4 / 1e6:.1f} MB to a fresh file) {floor_ms:.1f} ms")
    cpu_ms = {k: 1e3 * statistics.median(v) / args.steps for k, v in cpu.items()}
    print(f"process CPU per step (all threads): plain {cpu_ms['plain']:.1f} ms, traj {cpu_ms['traj']:.1f} ms "
          f"(+{cpu_ms['traj'] - cpu_ms['plain']:.1f} ms per snapshot: capture, compression and writing)")
    check_us = identity_check_us()
    step_us = 1e6 * med["traj"] / args.steps
    print(f"replaced-parameter check, 100 tensors: {check_us:.1f} us per snapshot "
          f"= {check_us / step_us:.2e} of one recorded step here")


if __name__ == "__main__":
    main()
