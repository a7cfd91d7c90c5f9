"""One process of a 2-process gloo run on CPU, started by tests/integrations/test_distributed.py.

Usage: RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python distributed_worker.py MODE OUT_DIR
MODE: plain (plain loops with DistributedRecorder: DistributedDataParallel into OUT/ddp, then
fully_shard into OUT/fsdp2), hf-ddp (a transformers Trainer), lightning-ddp and lightning-fsdp2 (a
Lightning fit with strategy="ddp" or ModelParallelStrategy + fully_shard, run without the
variables: Lightning starts its second process itself).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

STEPS = 6
EVERY = 2


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 4))


def _batch(step, rank):
    g = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(16, 8, generator=g), torch.randn(16, 4, generator=g)


def _full(tensor):
    """The whole tensor from a DTensor shard (a collective), or the tensor itself."""
    return (tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor).detach()


def plain(mode: str, out: Path) -> None:
    """Train on each rank's own batches; each rank also saves every full θ and gradient it sees (the truth)."""
    from traj.integrations.distributed import DistributedRecorder

    out.mkdir(exist_ok=True)
    rank = dist.get_rank()
    model = _mlp()
    if mode == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        fully_shard(model[0])
        fully_shard(model[2])
        fully_shard(model)
        wrapped = model
    else:
        wrapped = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.1)
    rec = DistributedRecorder(out / "run.zarr", every=EVERY, grads=True)
    rec.begin(model, step=0)
    opened = rec.writer
    truth = {0: {"params": {n: p.detach().clone() for n, p in _mlp().named_parameters()}}}
    seconds: dict[str, list[float]] = {"step": [], "snapshot": []}
    for step in range(1, STEPS + 1):
        x, y = _batch(step, rank)
        t0 = time.perf_counter()
        opt.zero_grad()
        nn.functional.mse_loss(wrapped(x), y).backward()
        opt.step()
        seconds["step"].append(time.perf_counter() - t0)
        if rec.due(step):
            t0 = time.perf_counter()
            rec.capture(model, step=step, epoch=0)
            rec.note(loss=float(step))
            rec.flush()
            seconds["snapshot"].append(time.perf_counter() - t0)
            truth[step] = {
                "params": {n: _full(p).clone() for n, p in model.named_parameters()},
                "grads": {n: _full(p.grad).clone() for n, p in model.named_parameters()},
            }
    rec.close()
    torch.save({"truth": truth, "seconds": seconds, "opened": opened}, out / f"rank{rank}.pt")


def huggingface(out: Path) -> None:
    """A transformers Trainer under DDP (accelerate on CPU, gloo) with TrajCallback."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    from traj.integrations.huggingface import TrajCallback

    class Tokens(torch.utils.data.Dataset):
        x = torch.randint(0, 64, (32, 16), generator=torch.Generator().manual_seed(0))

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"input_ids": self.x[i], "labels": self.x[i]}

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32))
    args = TrainingArguments(output_dir=str(out / "hf"), max_steps=STEPS, per_device_train_batch_size=4, save_steps=EVERY,
                             logging_steps=1, report_to=[], use_cpu=True, ddp_backend="gloo", seed=0, learning_rate=1e-2,
                             disable_tqdm=True)
    callback = TrajCallback(out / "run.zarr", every=EVERY)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[callback])
    trainer.train()
    torch.save({"world_size": args.world_size, "log_history": trainer.state.log_history,
                "opened": callback.recording.writer}, out / f"rank{args.process_index}.pt")


def huggingface_flag(out: Path) -> None:
    """The Hugging Face callback where the Trainer calls both processes "world process zero" (a Trainer that is
    not really distributed under torchrun), inside a gloo process group: only global rank 0 may write."""
    from types import SimpleNamespace

    from traj.integrations.huggingface import TrajCallback

    dist.init_process_group("gloo")
    callback = TrajCallback(out / "run.zarr", every=EVERY)
    state = SimpleNamespace(global_step=0, epoch=0.0, is_world_process_zero=True)
    callback.on_train_begin(None, state, None, model=_mlp())
    callback.on_train_end(None, state, None)
    torch.save({"opened": callback.recording.writer}, out / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()


def lightning(out: Path, sharded: bool) -> None:
    """A Lightning fit on 2 CPU processes (Lightning starts the second one): strategy="ddp", or
    ModelParallelStrategy with the model put through FSDP2's fully_shard in configure_model."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import ModelParallelStrategy

    from traj.integrations.lightning import TrajCallback

    class Regression(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def configure_model(self):
            if not sharded:
                return
            from torch.distributed.fsdp import fully_shard

            mesh = self.device_mesh["data_parallel"]
            for module in (self.net[0], self.net[2], self.net):
                fully_shard(module, mesh=mesh)

        def training_step(self, batch, batch_idx):
            loss = nn.functional.mse_loss(self.net(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self):
            x, y = _batch(0, 0)
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=2)

    callback = TrajCallback(out / "run.zarr", every=EVERY, grads=sharded)
    strategy = ModelParallelStrategy(process_group_backend="gloo", save_distributed_checkpoint=False) if sharded else "ddp"
    trainer = pl.Trainer(strategy=strategy, devices=2, accelerator="cpu", max_steps=STEPS, logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[callback, ModelCheckpoint(dirpath=out / "ckpt", every_n_train_steps=EVERY, save_top_k=-1)])
    trainer.fit(Regression())
    torch.save({"world_size": trainer.world_size, "opened": callback.recording.writer, "sharding": callback.recording.sharding},
               out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    if mode == "plain":
        dist.init_process_group("gloo")
        plain("ddp", out / "ddp")
        plain("fsdp2", out / "fsdp2")
        dist.destroy_process_group()
    elif mode == "hf-ddp":
        huggingface(out)
    elif mode == "hf-flag":
        huggingface_flag(out)
    elif mode in ("lightning-ddp", "lightning-fsdp2"):
        lightning(out, sharded=mode == "lightning-fsdp2")
    else:
        raise SystemExit(f"unknown mode {mode!r}")
