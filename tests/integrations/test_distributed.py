"""Two processes on CPU with gloo: DDP and FSDP2 plain loops, a Trainer under DDP, a Lightning DDP fit.

Each test starts tests/integrations/distributed_worker.py twice with torchrun's variables
(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), except the Lightning one, whose "ddp" strategy
starts its second process itself.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from traj import RunStore
from traj.errors import ReplacingSnapshotsWarning
from traj.integrations.distributed import DistributedRecorder, sharding_of

WORKER = Path(__file__).with_name("distributed_worker.py")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(mode, out, ranks=(0, 1)):
    port = str(_free_port())
    procs = []
    for rank in ranks:
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
        if len(ranks) > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(len(ranks)), LOCAL_WORLD_SIZE=str(len(ranks)),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, str(WORKER), mode, str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)


def _rank_files(out):
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def _assert_rows_equal(store, step, tensors, array="params"):
    (k,) = np.flatnonzero(store.steps == step)
    row = store.read(array=array)[k]
    for entry in store.layout.entries:
        assert row[entry.columns].tobytes() == tensors[entry.name].numpy().tobytes(), (step, entry.name)


def test_plain_loops_under_ddp_and_fsdp2(tmp_path):
    """Only rank 0 writes; FSDP2 shards are gathered: θ and gradients equal the full tensors bit for bit."""
    _run("plain", tmp_path)
    for mode in ("ddp", "fsdp2"):
        rank0, rank1 = _rank_files(tmp_path / mode)
        assert rank0["opened"] and not rank1["opened"]
        store = RunStore(tmp_path / mode / "run.zarr")
        np.testing.assert_array_equal(store.steps, [0, 2, 4, 6])
        np.testing.assert_array_equal(store.loss[1:], [2.0, 4.0, 6.0])
        assert store.layout.names == ["0.weight", "0.bias", "2.weight", "2.bias"]
        assert store.layout["0.weight"].shape == (32, 8)  # the full shape, not a shard's (16, 8)
        for step, truth in rank0["truth"].items():
            _assert_rows_equal(store, step, truth["params"])
            if step:
                _assert_rows_equal(store, step, truth["grads"], array="grads")
    # data parallel: both ranks held the same weights; FSDP2: the same full weights after gathering
    for mode in ("ddp", "fsdp2"):
        rank0, rank1 = _rank_files(tmp_path / mode)
        for step in (2, 4, 6):
            for name, value in rank0["truth"][step]["params"].items():
                assert torch.equal(value, rank1["truth"][step]["params"][name])


def test_the_trainers_rank_zero_flag_yields_to_the_process_group(tmp_path):
    """Issue 25: under torchrun a Trainer that was not really distributed said is_world_process_zero on both
    processes; both opened the store and one died with StoreLockedError. Global rank 0 of the group decides."""
    pytest.importorskip("transformers")
    _run("hf-flag", tmp_path)
    rank0, rank1 = _rank_files(tmp_path)
    assert rank0["opened"] and not rank1["opened"]
    np.testing.assert_array_equal(RunStore(tmp_path / "run.zarr").steps, [0])


@pytest.mark.slow
def test_trainer_under_ddp(tmp_path):
    pytest.importorskip("transformers")
    from safetensors.torch import load_file

    _run("hf-ddp", tmp_path)
    rank0, rank1 = _rank_files(tmp_path)
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["opened"] and not rank1["opened"]
    store = RunStore(tmp_path / "run.zarr")
    np.testing.assert_array_equal(store.steps, [0, 2, 4, 6])
    for step in (2, 4, 6):
        _assert_rows_equal(store, step, load_file(tmp_path / "hf" / f"checkpoint-{step}" / "model.safetensors"))
    losses = {h["step"]: h["loss"] for h in rank0["log_history"] if "loss" in h}
    np.testing.assert_array_equal(store.loss[1:], [losses[2], losses[4], losses[6]])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lightning-ddp", "lightning-fsdp2"])
def test_lightning_strategies(tmp_path, mode):
    """strategy="ddp", and ModelParallelStrategy with FSDP2: the store equals the full .ckpt state dicts."""
    pytest.importorskip("lightning")
    _run(mode, tmp_path, ranks=(0,))
    rank0, rank1 = _rank_files(tmp_path)
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["opened"] and not rank1["opened"]
    assert rank0["sharding"] == rank1["sharding"] == ("dtensor" if mode == "lightning-fsdp2" else None)
    store = RunStore(tmp_path / "run.zarr")
    np.testing.assert_array_equal(store.steps, [0, 2, 4, 6])
    assert store.layout["net.0.weight"].shape == (32, 8)
    checkpoints = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    assert len(checkpoints) == 3
    for path in checkpoints:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        _assert_rows_equal(store, ckpt["global_step"], ckpt["state_dict"])
    if mode == "lightning-fsdp2":
        grads = store.read(array="grads")
        assert np.isnan(grads[0]).all() and np.isfinite(grads[1:]).all()


def test_deepspeed_zero3_parameters_are_refused(tmp_path):
    from torch import nn

    from traj.errors import RecorderError

    model = nn.Linear(3, 2)
    assert sharding_of(model) is None
    model.weight.ds_numel = 6  # what DeepSpeed ZeRO-3 attaches to a partitioned parameter
    with pytest.raises(RecorderError, match="ZeRO-3"):
        DistributedRecorder(tmp_path / "run.zarr").begin(model)
    assert not (tmp_path / "run.zarr").exists()


def _mlp(width=4):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))


def _record(path, model, steps, *, start=0, resuming=None, offset=0.0, **options):
    rec = DistributedRecorder(path, **options)
    rec.begin(model, step=start, resuming=resuming)
    for step in steps:
        with torch.no_grad():
            model[0].bias.fill_(step + offset)
        if rec.due(step):
            rec.capture(model, step=step, epoch=step // 4)
            rec.note(loss=step / 10, metrics={"train/acc": torch.tensor(0.5), "hist": torch.ones(3), "tag": "x",
                                              "flag": True, "mask": np.bool_(True), "lr": np.float64(0.01)})
            rec.flush()
    rec.close()
    return RunStore(path)


def test_resume_forgets_the_steps_past_the_checkpoint(tmp_path):
    path = tmp_path / "run.zarr"
    model = _mlp()
    np.testing.assert_array_equal(_record(path, model, range(1, 8)).steps, np.arange(8))  # a crash after step 7
    with pytest.warns(ReplacingSnapshotsWarning, match="the 4 snapshot.s. of steps 4 to 7 will be replaced"):
        store = _record(path, model, range(4, 10), start=3, offset=100)  # resumed from a checkpoint at step 3
    np.testing.assert_array_equal(store.steps, np.arange(10))
    np.testing.assert_array_equal(store.read()[1:, store.layout["0.bias"].columns][:, 0], [1, 2, 3, *range(104, 110)])
    np.testing.assert_array_equal(store.epochs, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    np.testing.assert_allclose(store.loss[1:], np.arange(1, 10) / 10)
    assert store.metric_names == ["lr", "train.acc"]  # '/' becomes '.'; vectors, strings and booleans are left out
    np.testing.assert_array_equal(store.metric("train.acc")[1:], 0.5)


def test_every_k_after_a_resume_off_the_grid(tmp_path):
    path = tmp_path / "run.zarr"
    _record(path, _mlp(), range(1, 8), every=3)
    rec = DistributedRecorder(path, every=3)
    with pytest.warns(ReplacingSnapshotsWarning):
        rec.begin(_mlp(), step=4)  # a checkpoint at step 4: snapshots 0 and 3 stay, 6 is replaced
    assert not rec.due(3) and not rec.due(4) and not rec.due(5) and rec.due(6)
    rec.close()  # nothing recorded after the resume: snapshot 6 is still there
    np.testing.assert_array_equal(RunStore(path).steps, [0, 3, 6])
    with pytest.warns(ReplacingSnapshotsWarning):
        store = _record(path, _mlp(), range(5, 7), start=4, every=3)
    np.testing.assert_array_equal(store.steps, [0, 3, 6])
    assert store.read()[2, store.layout["0.bias"].columns][0] == 6


def test_a_new_run_never_drops_an_existing_one(tmp_path):
    from traj.errors import LayoutMismatchError, RecorderError

    path = tmp_path / "run.zarr"
    _record(path, _mlp(), range(1, 6))
    with pytest.raises(RecorderError, match="already holds 6 snapshot.s., steps 0 to 5"):
        _record(path, _mlp(), range(1, 3))
    with pytest.raises(LayoutMismatchError):  # resuming with another model: refused before anything is dropped
        _record(path, _mlp(width=5), range(3, 4), start=2)
    np.testing.assert_array_equal(RunStore(path).steps, np.arange(6))
    np.testing.assert_array_equal(_record(path, _mlp(), range(1, 3), overwrite=True).steps, [0, 1, 2])


def test_core_imports_no_framework():
    code = ("import sys, traj, traj.integrations, traj.integrations.distributed; "
            "print(sorted(m for m in ('transformers', 'lightning', 'accelerate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_resume_past_the_stores_end_says_where_snapshots_start_and_warns_of_the_gap(tmp_path):
    """Issue 25: killed at step 200 with the store committed to 110, resumed from a checkpoint at 180: the
    snapshots went on from 185 without a word. Here: committed to 4, resumed at 9, every 2."""
    from traj.errors import SnapshotGapWarning

    path = tmp_path / "run.zarr"
    _record(path, _mlp(), range(1, 5), every=2)
    lines = []
    with pytest.warns(SnapshotGapWarning, match="a gap between steps 4 and 10"):
        store = _record(path, _mlp(), range(10, 13), start=9, every=2, announce=lines.append)
    np.testing.assert_array_equal(store.steps, [0, 2, 4, 10, 12])
    assert lines[0] == (
        f"traj: resuming {path} (4 tensor(s), 21 values as float32, every 2 step(s)): it holds 3 snapshot(s), "
        "steps 0 to 4; training resumes at step 9, new snapshots start at step 10; no snapshot between steps 4 "
        "and 10: a gap (the store was committed only to step 4; `traj info` lists it, analyses take a window on "
        "one side)")
    assert lines[1].startswith(f"traj: {path}: 5 snapshot(s), steps 0 to 12, ")

    lines.clear()  # a resume from an earlier checkpoint: the line names what is replaced, as the warning does
    with pytest.warns(ReplacingSnapshotsWarning):
        _record(path, _mlp(), range(5, 7), start=4, every=2, announce=lines.append)
    assert lines[0].endswith("training resumes at step 4, new snapshots start at step 6; the 2 snapshot(s) of "
                             "steps 10 to 12 are replaced by the resumed run's")


def test_the_plain_recorder_says_what_it_records_through_logging(tmp_path, caplog):
    import logging

    from traj import Recorder

    caplog.set_level(logging.INFO, logger="traj.record")
    with Recorder(tmp_path / "run.zarr", _mlp(), every=5, grads=True):
        pass
    assert [r.name for r in caplog.records] == ["traj.record", "traj.record"]
    assert caplog.records[0].getMessage() == (f"traj: recording {tmp_path / 'run.zarr'}: 4 tensor(s), 21 values as "
                                              "float32 with gradients, every 5 step(s)")
    assert caplog.records[1].getMessage().startswith(f"traj: {tmp_path / 'run.zarr'}: 1 snapshot(s), steps 0 to 0, ")
