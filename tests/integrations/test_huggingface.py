"""A real transformers Trainer run (tiny GPT-2 from a config, CPU) recorded by TrajCallback."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from traj import RunStore  # noqa: E402
from traj.errors import ReplacingSnapshotsWarning  # noqa: E402
from traj.integrations.huggingface import TrajCallback, epoch_index  # noqa: E402


class _Tokens(torch.utils.data.Dataset):
    def __init__(self, n=32, length=16):
        self.x = torch.randint(0, 64, (n, length), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


class _StopAt(TrainerCallback):
    """Ends training cleanly after step ``step``: the run a crash would leave, past its last checkpoint."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def _gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32))


def _trainer(out, callbacks, **overrides):
    args = dict(output_dir=str(out), num_train_epochs=2, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                save_steps=2, logging_steps=1, report_to=[], use_cpu=True, seed=0, learning_rate=1e-2, disable_tqdm=True)
    args.update(overrides)
    return Trainer(model=_gpt2(), args=TrainingArguments(**args), train_dataset=_Tokens(), callbacks=callbacks)


def _row(store, step):
    (k,) = np.flatnonzero(store.steps == step)
    return store.read()[k]


def _assert_equals_checkpoint(store, checkpoint):
    """Every tensor of checkpoint-N/model.safetensors equals the store's row at step N, bit for bit."""
    state = load_file(checkpoint / "model.safetensors")
    row = _row(store, int(checkpoint.name.split("-")[1]))
    assert set(store.layout.names) == set(state)  # GPT-2's tied lm_head is stored once, as transformer.wte
    for entry in store.layout.entries:
        saved = state[entry.name].numpy()
        assert row[entry.columns].tobytes() == saved.reshape(-1).tobytes(), entry.name


class _FailAtFirstStep(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")


def test_a_resume_that_fails_at_its_first_step_keeps_the_later_snapshots(tmp_path):
    """Issue 24: a Trainer resumed from checkpoint-4 on a finished run that failed at its first step
    left the store cut back to step 4."""
    run = tmp_path / "run.zarr"
    _trainer(tmp_path / "hf", [TrajCallback(run), _StopAt(5)]).train()
    before = RunStore(run).read()
    callback = TrajCallback(run)
    trainer = _trainer(tmp_path / "hf", [callback, _FailAtFirstStep()])
    with pytest.warns(ReplacingSnapshotsWarning), pytest.raises(RuntimeError, match="simulated"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "hf" / "checkpoint-4"))
    callback.recording.close()
    store = RunStore(run)
    np.testing.assert_array_equal(store.steps, np.arange(6))
    np.testing.assert_array_equal(store.read(), before)


def test_trainer_run_resumed_from_a_checkpoint(tmp_path):
    """8 optimizer steps of 2 micro-batches; stopped after step 5, resumed from checkpoint-4."""
    run = tmp_path / "run.zarr"
    _trainer(tmp_path / "hf", [TrajCallback(run, grads=True), _StopAt(5)]).train()
    first = RunStore(run)
    np.testing.assert_array_equal(first.steps, np.arange(6))
    assert first.closed_cleanly and not first.writer_active

    trainer = _trainer(tmp_path / "hf", [TrajCallback(run, grads=True)])
    with pytest.warns(ReplacingSnapshotsWarning, match="the 1 snapshot.s. of steps 5 to 5 will be replaced"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "hf" / "checkpoint-4"))
    store = RunStore(run)
    np.testing.assert_array_equal(store.steps, np.arange(9))  # step 5 recorded once: the resumed run's
    np.testing.assert_array_equal(store.epochs, [0, 0, 0, 0, 0, 1, 1, 1, 1])
    assert store.closed_cleanly

    checkpoints = sorted((tmp_path / "hf").glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-2", "checkpoint-4", "checkpoint-6", "checkpoint-8"]
    for checkpoint in checkpoints:  # 2 and 4 from the first part, 6 and 8 from the resumed one
        _assert_equals_checkpoint(store, checkpoint)
    initial = dict(_gpt2().named_parameters())
    for entry in store.layout.entries:
        assert store.read()[0][entry.columns].tobytes() == initial[entry.name].detach().numpy().tobytes()

    history = json.loads((tmp_path / "hf" / "checkpoint-8" / "trainer_state.json").read_text())["log_history"]
    logged = [h for h in history if "loss" in h]
    assert [h["step"] for h in logged] == list(range(1, 9))
    for h in logged:
        (k,) = np.flatnonzero(store.steps == h["step"])
        assert store.loss[k] == h["loss"]
        assert store.metric("grad_norm")[k] == h["grad_norm"]
        assert store.metric("learning_rate")[k] == h["learning_rate"]
        # the gradients recorded are this step's, clipped to max_grad_norm=1 and taken before zero_grad
        norm = np.linalg.norm(store.read(array="grads")[k].astype(np.float64))
        assert norm == pytest.approx(min(h["grad_norm"], 1.0), rel=1e-4)
    assert np.isnan(store.loss[0]) and np.isnan(store.read(array="grads")[0]).all()
    assert "train_runtime" not in store.metric_names  # the end-of-training summary is not a step's value


def test_every_k_optimizer_steps_with_accumulation(tmp_path):
    run = tmp_path / "run.zarr"
    trainer = _trainer(tmp_path / "hf", [TrajCallback(run, every=3)], gradient_accumulation_steps=4, num_train_epochs=3,
                       save_steps=3, logging_steps=2)
    trainer.train()
    store = RunStore(run)
    assert trainer.state.global_step == 6  # 8 micro-batches an epoch, 4 per optimizer step
    np.testing.assert_array_equal(store.steps, [0, 3, 6])
    assert not store.has_grads
    _assert_equals_checkpoint(store, tmp_path / "hf" / "checkpoint-6")
    _assert_equals_checkpoint(store, tmp_path / "hf" / "checkpoint-3")
    losses = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    assert store.loss[2] == losses[6] and np.isnan(store.loss[1])  # step 3 was not a logging step


@pytest.mark.parametrize(("epoch", "index"), [(None, 0), (0.0, 0), (0.25, 0), (1.0, 0), (1.25, 1), (2.0, 1)])
def test_epoch_index(epoch, index):
    assert epoch_index(epoch) == index


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


def test_a_run_stopped_between_snapshot_steps_ends_with_a_last_snapshot_and_says_so(tmp_path):
    """Issue 25: the Trainer stopped at step 5 with every=2 left the store at step 4, and the callback said nothing."""
    run = tmp_path / "run.zarr"
    trainer = _trainer(tmp_path / "hf", [TrajCallback(run, every=2)], max_steps=5, save_steps=5)
    with _Lines("traj.integrations.huggingface") as lines:
        trainer.train()
    store = RunStore(run)
    np.testing.assert_array_equal(store.steps, [0, 2, 4, 5])
    _assert_equals_checkpoint(store, tmp_path / "hf" / "checkpoint-5")
    losses = {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}
    assert store.loss[3] == losses[5] and store.loss[2] == losses[4]
    assert lines[0] == f"traj: recording {run}: 28 tensor(s), 28,544 values as float32, every 2 step(s)"
    assert lines[1].startswith(f"traj: {run}: 4 snapshot(s), steps 0 to 5, ") and lines[1].endswith(" kB on disk")

    resumed = _trainer(tmp_path / "hf", [TrajCallback(run, every=2)], max_steps=6, save_steps=5)
    with _Lines("traj.integrations.huggingface") as lines:
        resumed.train(resume_from_checkpoint=str(tmp_path / "hf" / "checkpoint-5"))
    assert lines[0] == (f"traj: resuming {run} (28 tensor(s), 28,544 values as float32, every 2 step(s)): it holds "
                        "4 snapshot(s), steps 0 to 5; training resumes at step 5, new snapshots start at step 6")
    np.testing.assert_array_equal(RunStore(run).steps, [0, 2, 4, 5, 6])


def test_the_callbacks_lines_reach_stderr_by_default():
    """A script that configured no logging sees the callback's lines, as it sees the Trainer's warnings."""
    import subprocess
    import sys

    code = "import traj.integrations.huggingface as h; h.logger.info('traj: a line')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip().splitlines()[-1] == "traj: a line"


def test_live_monitor_in_a_trainer_run(tmp_path):
    """TrajCallback(live=...): the live fits go into the store as metrics live.*, at the steps the monitor fitted."""
    from traj.live import LiveOptions

    callback = TrajCallback(tmp_path / "run.zarr", live=LiveOptions(window=6, every=3, sketch=256, forecast=1))
    _trainer(tmp_path / "out", [callback], num_train_epochs=3, save_strategy="no").train()
    store = RunStore(tmp_path / "run.zarr")
    series = store.metric("live.leading_modulus")
    fitted = store.steps[np.isfinite(series)]
    # 13 snapshots (steps 0..12): a fit after every 3rd snapshot from the 4th on -> snapshots 6, 9, 12 (steps 5, 8, 11)
    assert store.n_snapshots == 13
    np.testing.assert_array_equal(fitted, [5, 8, 11])
    assert np.all((series[np.isfinite(series)] > 0.5) & (series[np.isfinite(series)] < 1.5))
