"""What the training callbacks cost: a snapshot against a training step, and the FSDP2 gather.

Three measurements on CPU, medians over interleaved rounds:

  (a) Hugging Face: a Trainer run of GPT-2 models built from configs (the tests' tiny one and a
      ~3.4M-parameter one), without and with ``TrajCallback(every=1)``: the median time from one
      step's start to the next (so the Trainer's start-up is left out), and the time the
      callback's hooks take on the training thread per snapshot.
  (b) Lightning: the 1.07M-parameter MLP of ``record_overhead.py``, without and with the callback.
  (c) FSDP2 on 2 processes (gloo): for MLPs of several sizes, a training step, the gather alone
      (``get_model_state_dict(full_state_dict=True, cpu_offload=True)``) and a whole snapshot
      (gather + copy + queue on rank 0), each as a ratio to the step.

    python benchmarks/callback_overhead.py [--steps 40] [--rounds 3] [--skip hf,lightning,fsdp]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _per_step(stamps: list[tuple[float, float]]) -> tuple[float, float]:
    """Median wall time between consecutive step starts, and the process's CPU time per step
    (every thread: the writer's compression counts), the first two steps (warm-up) left out."""
    walls = [b[0] - a[0] for a, b in zip(stamps, stamps[1:], strict=False)][2:]
    cpu = (stamps[-1][1] - stamps[2][1]) / (len(stamps) - 3)
    return statistics.median(walls), cpu


class _Timed:
    """Wraps a callback's per-step hooks and adds up the time they take on the training thread
    (opening the store and the final close, which waits for the writer, are left out)."""

    def __init__(self, callback, hooks):
        self.seconds = 0.0
        for name in hooks:
            original = getattr(callback, name)

            def timed(*args, _original=original, **kwargs):
                t0 = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - t0

            setattr(callback, name, timed)


# ---------------------------------------------------------------------------------------- (a)
def hf_run(config: dict, steps: int, record: bool) -> tuple[float, float, float]:
    """Wall and CPU seconds per optimizer step, and seconds in the callback's hooks per snapshot."""
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    from traj.integrations.huggingface import TrajCallback

    class Stamps(TrainerCallback):
        def __init__(self):
            self.stamps = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.stamps.append((time.perf_counter(), time.process_time()))

    class Tokens(torch.utils.data.Dataset):
        def __init__(self, n, length, vocab):
            self.x = torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(0))

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"input_ids": self.x[i], "labels": self.x[i]}

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**config))
    with tempfile.TemporaryDirectory() as tmp:
        stamps = Stamps()
        callbacks, timer = [stamps], None
        if record:
            callback = TrajCallback(Path(tmp) / "run.zarr")
            timer = _Timed(callback, ["on_optimizer_step", "on_step_end", "on_log", "on_step_begin"])
            callbacks.append(callback)
        args = TrainingArguments(output_dir=str(Path(tmp) / "hf"), max_steps=steps, per_device_train_batch_size=8,
                                 save_strategy="no", logging_steps=1, report_to=[], use_cpu=True, disable_tqdm=True,
                                 seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=Tokens(8 * steps, config["n_positions"],
                                                                       config["vocab_size"]), callbacks=callbacks)
        trainer.train()
    return (*_per_step(stamps.stamps), timer.seconds / steps if timer else 0.0)


# ---------------------------------------------------------------------------------------- (b)
def lightning_run(steps: int, record: bool) -> tuple[float, float, float]:
    import lightning.pytorch as pl

    from traj.integrations.lightning import TrajCallback

    class Stamps(pl.Callback):
        def __init__(self):
            self.stamps = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.stamps.append((time.perf_counter(), time.process_time()))

    class MLP(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 10))

        def training_step(self, batch, batch_idx):
            loss = nn.functional.cross_entropy(self.net(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

        def train_dataloader(self):
            g = torch.Generator().manual_seed(0)
            data = torch.utils.data.TensorDataset(torch.randn(512 * 4, 784, generator=g),
                                                  torch.randint(0, 10, (512 * 4,), generator=g))
            return torch.utils.data.DataLoader(data, batch_size=512)

    with tempfile.TemporaryDirectory() as tmp:
        stamps = Stamps()
        callbacks, timer = [stamps], None
        if record:
            callback = TrajCallback(Path(tmp) / "run.zarr")
            timer = _Timed(callback, ["on_train_batch_end"])
            callbacks.append(callback)
        trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
        trainer.fit(MLP())
    return (*_per_step(stamps.stamps), timer.seconds / steps if timer else 0.0)


# ---------------------------------------------------------------------------------------- (c)
FSDP_WIDTHS = (32, 1024, 2048)  # MLP 512-w-w-10: 17k, 1.6M, 5.3M parameters


def fsdp_worker(out: Path, steps: int) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from traj.integrations.distributed import DistributedRecorder, gather_parameters

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    results = {}
    for width in FSDP_WIDTHS:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(512, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        fully_shard(model)
        n_params = sum(p.numel() for p in model.parameters())
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        g = torch.Generator().manual_seed(rank)
        x, y = torch.randn(256, 512, generator=g), torch.randint(0, 10, (256,), generator=g)
        rec = DistributedRecorder(out / f"run-{width}.zarr", every=1)
        rec.begin(model, step=0)
        step_s, gather_s, snapshot_s = [], [], []
        names = [n for n, _ in model.named_parameters()]
        for step in range(1, steps + 1):
            dist.barrier()
            t0 = time.perf_counter()
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            step_s.append(time.perf_counter() - t0)
            dist.barrier()
            t0 = time.perf_counter()
            gather_parameters(model, names)
            gather_s.append(time.perf_counter() - t0)
            dist.barrier()
            t0 = time.perf_counter()
            rec.capture(model, step=step)
            rec.flush()
            snapshot_s.append(time.perf_counter() - t0)
        rec.close()
        results[width] = (n_params, statistics.median(step_s), statistics.median(gather_s), statistics.median(snapshot_s))
    if rank == 0:
        torch.save(results, out / "fsdp.pt")
    dist.destroy_process_group()


def fsdp(steps: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        procs = [
            subprocess.Popen([sys.executable, __file__, "--fsdp-worker", tmp, "--steps", str(steps)],
                             env=dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                      MASTER_PORT=port, OMP_NUM_THREADS="1"))
            for r in (0, 1)
        ]
        if any(p.wait() for p in procs):
            raise SystemExit("the FSDP workers failed")
        results = torch.load(Path(tmp) / "fsdp.pt")
    print("\n(c) FSDP2, 2 processes, gloo, CPU (one thread each); medians")
    print(f"{'params':>10} {'step ms':>9} {'gather ms':>10} {'snapshot ms':>12} {'gather/step':>12} {'snapshot/step':>14}")
    for n_params, step, gather, snapshot in results.values():
        print(f"{n_params:>10,} {step * 1e3:>9.2f} {gather * 1e3:>10.2f} {snapshot * 1e3:>12.2f} "
              f"{gather / step:>12.2f} {snapshot / step:>14.2f}")


def _header(first: str) -> None:
    print(f"{first:>20} {'params':>10} {'step ms':>8} {'rec. ms':>8} {'wall x':>7} {'cpu/step ms':>12} "
          f"{'rec. cpu':>9} {'cpu x':>6} {'hooks ms':>9} {'hooks/step':>11}")


def _report(name: str, n_params: int, rounds: list) -> None:
    """rounds: ((wall, cpu, _), (wall, cpu, hooks)) for plain and recorded runs."""
    med = lambda values: statistics.median(values)  # noqa: E731
    wall_a, cpu_a = med([a[0] for a, _ in rounds]), med([a[1] for a, _ in rounds])
    wall_b, cpu_b, hooks = (med([b[i] for _, b in rounds]) for i in range(3))
    print(f"{name:>20} {n_params:>10,} {wall_a * 1e3:>8.1f} {wall_b * 1e3:>8.1f} {wall_b / wall_a:>7.2f} "
          f"{cpu_a * 1e3:>12.1f} {cpu_b * 1e3:>9.1f} {cpu_b / cpu_a:>6.2f} {hooks * 1e3:>9.2f} {hooks / wall_a:>11.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", default="")
    parser.add_argument("--fsdp-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fsdp_worker:
        fsdp_worker(Path(args.fsdp_worker), args.steps)
        return
    skip = set(filter(None, args.skip.split(",")))
    if "hf" not in skip:
        configs = {
            "tiny GPT-2 (tests)": dict(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32),
            "GPT-2 4x256": dict(n_layer=4, n_embd=256, n_head=4, vocab_size=1024, n_positions=64),
        }
        print("(a) Hugging Face Trainer, every=1, logging every step; medians over rounds")
        _header("model")
        for name, config in configs.items():
            from transformers import GPT2Config, GPT2LMHeadModel

            n_params = sum(p.numel() for p in GPT2LMHeadModel(GPT2Config(**config)).parameters())
            _report(name, n_params, [(hf_run(config, args.steps, False), hf_run(config, args.steps, True))
                                     for _ in range(args.rounds)])
    if "lightning" not in skip:
        print("\n(b) Lightning, batch 512, every=1; medians over rounds")
        _header("model")
        _report("MLP 784-1024-256-10", 1_068_810, [(lightning_run(args.steps, False), lightning_run(args.steps, True))
                                                   for _ in range(args.rounds)])
    if "fsdp" not in skip:
        fsdp(args.steps)


if __name__ == "__main__":
    main()
