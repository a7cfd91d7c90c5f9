"""A real Lightning fit (small MLP, CPU) recorded by TrajCallback, against its ModelCheckpoint files."""

import numpy as np
import pytest

pytest.importorskip("lightning")
# lightning 2.6 on torch 2.13 (its pytree shim), and its advice
pytestmark = [
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:The '.*dataloader' does not have many workers"),
    pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty"),  # the resumed fit's
]

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import Callback, ModelCheckpoint  # noqa: E402
from torch import nn  # noqa: E402

from traj import RunStore  # noqa: E402
from traj.errors import ReplacingSnapshotsWarning  # noqa: E402
from traj.integrations.lightning import TrajCallback  # noqa: E402


class _Regression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(32, 4, generator=g)
        y = x[:, :1] * x[:, 1:2] + 0.1 * torch.randn(32, 1, generator=g)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)


class _StopAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.should_stop = True


def _fit(ckpt_dir, callbacks, ckpt_path=None, **overrides):
    options = dict(max_epochs=2, accumulate_grad_batches=2, accelerator="cpu", devices=1, logger=False,
                   enable_progress_bar=False, enable_model_summary=False, deterministic=True)
    options.update(overrides)
    checkpoints = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=2, save_top_k=-1)
    trainer = pl.Trainer(callbacks=[*callbacks, checkpoints], **options)
    module = _Regression()
    initial = {k: v.clone() for k, v in module.state_dict().items()}
    trainer.fit(module, ckpt_path=ckpt_path)
    return trainer, initial


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_fit_resumed_from_a_checkpoint(tmp_path):
    """8 optimizer steps of 2 micro-batches; stopped after step 5, resumed from the step-4 checkpoint."""
    run = tmp_path / "run.zarr"
    _, initial = _fit(tmp_path / "first", [TrajCallback(run, grads=True), _StopAt(5)])
    np.testing.assert_array_equal(RunStore(run).steps, np.arange(6))
    first = {int(_load(p)["global_step"]): p for p in (tmp_path / "first").glob("*.ckpt")}
    assert sorted(first) == [2, 4]
    assert _load(first[4])["callbacks"][TrajCallback(run).state_key] == {"path": str(run), "every": 1, "last_step": 4}

    with pytest.warns(ReplacingSnapshotsWarning, match="steps 5 to 5 will be replaced"):
        trainer, _ = _fit(tmp_path / "first", [TrajCallback(run, grads=True)], ckpt_path=first[4])
    assert trainer.global_step == 8
    store = RunStore(run)
    np.testing.assert_array_equal(store.steps, np.arange(9))
    assert store.closed_cleanly and not store.writer_active

    saved = [_load(p) for p in sorted((tmp_path / "first").glob("*.ckpt"))]
    # the resumed fit closes epoch 0 and saves step 4 again, as epoch=1-step=4.ckpt
    assert sorted((c["global_step"], c["epoch"]) for c in saved) == [(2, 0), (4, 0), (4, 1), (6, 1), (8, 1)]
    theta = store.read()
    for ckpt in saved:
        step = ckpt["global_step"]
        assert store.epochs[step] == min(c["epoch"] for c in saved if c["global_step"] == step)
        for entry in store.layout.entries:
            assert theta[step][entry.columns].tobytes() == ckpt["state_dict"][entry.name].numpy().tobytes(), (step, entry.name)
    for entry in store.layout.entries:
        assert theta[0][entry.columns].tobytes() == initial[entry.name].numpy().tobytes()
    assert store.layout.names == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]

    # loss: what training_step returned for the stepping batch, the value it also logged
    np.testing.assert_array_equal(store.loss[1:], store.metric("train.loss")[1:])
    assert np.isnan(store.loss[0]) and np.isfinite(store.loss[1:]).all()
    grads = store.read(array="grads")
    assert np.isnan(grads[0]).all() and np.isfinite(grads[1:]).all() and (np.abs(grads[1:]).sum(axis=1) > 0).all()


def test_snapshots_follow_optimizer_steps(tmp_path):
    """Every 3rd optimizer step with 4 micro-batches per step: steps 0, 3, 6 and their epochs."""
    run = tmp_path / "run.zarr"
    trainer, _ = _fit(tmp_path / "ckpt", [TrajCallback(run, every=3)], accumulate_grad_batches=4, max_epochs=3)
    assert trainer.global_step == 6
    store = RunStore(run)
    np.testing.assert_array_equal(store.steps, [0, 3, 6])
    np.testing.assert_array_equal(store.epochs, [0, 1, 2])
    ckpt = _load(next((tmp_path / "ckpt").glob("*step=6.ckpt")))
    np.testing.assert_array_equal(store.read()[2], torch.cat([v.reshape(-1) for v in ckpt["state_dict"].values()]).numpy())


class _Lines:
    """Collects what a logger emits, whatever handlers the application configured."""

    def __init__(self, name):
        import logging

        self.logger = logging.getLogger(name)
        self.lines = []
        self.handler = logging.Handler(level=logging.DEBUG)
        self.handler.emit = lambda record: self.lines.append(record.getMessage())

    def __enter__(self):
        self.logger.addHandler(self.handler)
        return self.lines

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)


def test_a_fit_stopped_between_snapshot_steps_ends_with_a_last_snapshot_and_says_so(tmp_path):
    """Issue 25: a fit that stopped at step 5 with every=2 left the store at step 4, and said nothing."""
    run = tmp_path / "run.zarr"
    with _Lines("lightning.pytorch.utilities.rank_zero") as lines:
        trainer, _ = _fit(tmp_path / "ckpt", [TrajCallback(run, every=2), _StopAt(5)])
    assert trainer.global_step == 5
    store = RunStore(run)
    np.testing.assert_array_equal(store.steps, [0, 2, 4, 5])
    final = torch.cat([p.detach().reshape(-1) for p in trainer.lightning_module.parameters()]).numpy()
    assert store.read()[3].tobytes() == final.tobytes()
    assert store.metric("train.loss")[3] == pytest.approx(float(trainer.callback_metrics["train/loss"]))
    start, end = (line for line in lines if line.startswith("traj:"))
    assert start == f"traj: recording {run}: 4 tensor(s), 97 values as float32, every 2 step(s)"
    assert end.startswith(f"traj: {run}: 4 snapshot(s), steps 0 to 5, ") and end.endswith(" kB on disk")
