import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from traj import Recorder, RunStore
from traj.errors import LayoutMismatchError, RecorderError, StoreFormatError, StoreLockedError


def _theta(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy()


def _train(model, steps, recorder=None, attach=False, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if attach:
        recorder.attach(opt)
    dtype = next(model.parameters()).dtype
    x, y = torch.randn(32, 6, dtype=dtype), torch.randn(32, 2, dtype=dtype)
    history = [_theta(model)]
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        if attach:
            recorder.log(loss=loss.item(), acc=0.25)
            opt.step()
        else:
            opt.step()
            if recorder is not None:
                recorder.step(loss=loss.item())
        history.append(_theta(model))
    return np.stack(history)


def _model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2)).to(dtype)


@pytest.mark.parametrize("attach", [False, True])
def test_records_every_kth_step_exactly(tmp_path, attach):
    model = _model()
    with Recorder(tmp_path / "r.zarr", model, every=3) as rec:
        history = _train(model, 20, rec, attach=attach)
    store = RunStore(tmp_path / "r.zarr")
    np.testing.assert_array_equal(store.steps, np.arange(0, 21, 3))
    np.testing.assert_array_equal(store.read(), history[store.steps])
    assert np.isnan(store.loss[0]) and np.isfinite(store.loss[1:]).all()
    assert store.layout.names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [e.prunable for e in store.layout.entries] == [True, False, True, False]
    if attach:
        np.testing.assert_array_equal(store.metric("acc")[1:], 0.25)


def test_float64_model_records_float64(tmp_path):
    model = _model(dtype=torch.float64)
    with Recorder(tmp_path / "r.zarr", model) as rec:
        history = _train(model, 4, rec)
    store = RunStore(tmp_path / "r.zarr")
    assert store.dtype == np.float64
    np.testing.assert_array_equal(store.read(), history)


def test_epoch_unit_and_gradients(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 6), torch.randn(8, 2)
    grads_seen = []
    with Recorder(tmp_path / "r.zarr", model, unit="epoch", grads=True) as rec:
        for _epoch in range(3):
            for _ in range(4):
                opt.zero_grad()
                nn.functional.mse_loss(model(x), y).backward()
                opt.step()
                rec.step()
            grads_seen.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy().copy())
            rec.epoch_end(loss=1.0)
    store = RunStore(tmp_path / "r.zarr")
    np.testing.assert_array_equal(store.steps, [0, 4, 8, 12])
    np.testing.assert_array_equal(store.epochs, [0, 0, 1, 2])
    grads = store.read(array="grads")
    assert np.isnan(grads[0]).all()
    np.testing.assert_array_equal(grads[1:], np.stack(grads_seen))


def test_resume_continues_steps_and_refuses_other_layout(tmp_path):
    model = _model()
    with Recorder(tmp_path / "r.zarr", model) as rec:
        first = _train(model, 5, rec)
    with Recorder(tmp_path / "r.zarr", model, resume=True) as rec:  # appends: no second initial snapshot
        second = _train(model, 5, rec, seed=1)
    store = RunStore(tmp_path / "r.zarr")
    np.testing.assert_array_equal(store.steps, np.arange(11))
    np.testing.assert_array_equal(store.read(), np.concatenate([first, second[1:]]))
    with pytest.raises(LayoutMismatchError):
        Recorder(tmp_path / "r.zarr", nn.Linear(6, 3), resume=True)
    with pytest.raises(RecorderError, match="up to step 10"):
        Recorder(tmp_path / "r.zarr", model, start_step=3, resume=True)


@pytest.mark.parametrize("killed", [False, True])
def test_a_from_scratch_rerun_is_not_stitched_onto_an_existing_store(tmp_path, killed):
    """Before: re-running a killed script from a fresh model appended steps 6, 7, ... to the old run."""
    path = tmp_path / "r.zarr"
    model = _model()
    rec = Recorder(path, model)
    first = _train(model, 5, rec)
    if killed:  # as after kill -9: committed rows, state still 'open', the lock gone with the process
        rec.flush()
        rec._writer._lock.release()
        rec._pipe.abort = True  # the writer thread ends without closing the store
        rec._stop(abort=True)
    else:
        rec.close()
    before = _files(path)
    state = RunStore(path).attrs["state"]
    assert state == ("open" if killed else "closed")
    fresh = _model(seed=1)
    with pytest.raises(RecorderError, match=r"already holds 6 snapshot\(s\), up to step 5; pass resume=True .*"
                                            r"overwrite=True to replace it") as refused:
        Recorder(path, fresh)
    assert "\n" not in str(refused.value)
    assert _files(path) == before and RunStore(path).attrs["state"] == state  # untouched: a killed run still reads as killed
    with Recorder(path, model, resume=True) as rec:  # the same run, continued: explicit
        _train(model, 2, rec, seed=1)
    np.testing.assert_array_equal(RunStore(path).steps, np.arange(8))
    with Recorder(path, fresh, overwrite=True) as rec:  # or a new run in its place
        _train(fresh, 3, rec)
    store = RunStore(path)
    np.testing.assert_array_equal(store.steps, np.arange(4))
    assert not np.array_equal(store.read(rows=slice(0, 1))[0], first[0])


def test_a_store_with_no_snapshots_is_appended_to_without_resume(tmp_path):
    path = tmp_path / "r.zarr"
    Recorder(path, _model(), record_initial=False).close()  # created, nothing recorded
    assert RunStore(path).n_snapshots == 0
    with Recorder(path, _model()) as rec:
        rec.step()
    np.testing.assert_array_equal(RunStore(path).steps, [0, 1])


def test_second_recorder_refused(tmp_path):
    model = _model()
    with Recorder(tmp_path / "r.zarr", model):
        with pytest.raises(StoreLockedError):
            Recorder(tmp_path / "r.zarr", model)


def test_backpressure_bounds_buffers_and_keeps_every_snapshot(tmp_path):
    model = _model()
    with Recorder(tmp_path / "r.zarr", model, buffer_bytes=1, min_buffers=2) as rec:
        history = _train(model, 50, rec)
        assert rec._pool.made <= 2
    np.testing.assert_array_equal(RunStore(tmp_path / "r.zarr").read(), history)


def test_writer_failure_reaches_the_training_thread(tmp_path, monkeypatch):
    model = _model()
    rec = Recorder(tmp_path / "r.zarr", model)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(rec._writer, "commit", broken)
    with pytest.raises(RecorderError, match="disk full"):
        for _ in range(200):
            rec.step()
            time.sleep(0.001)
    monkeypatch.undo()
    with pytest.raises(RecorderError):
        rec.close()


def test_bad_arguments(tmp_path):
    with pytest.raises(RecorderError, match="every"):
        Recorder(tmp_path / "a.zarr", _model(), every=0)
    with pytest.raises(RecorderError, match="unit"):
        Recorder(tmp_path / "b.zarr", _model(), unit="batch")
    with pytest.raises(RecorderError, match="no parameter named"):
        Recorder(tmp_path / "c.zarr", _model(), params=["nope"])


_KILLED_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from torch import nn
    from traj import Recorder
    model = nn.Linear(1000, 700)  # 700 700 params: rows of 2.8 MB, one shard of 171 inner chunks
    with Recorder(sys.argv[1], model, buffer_bytes=1, min_buffers=2) as rec:
        k = 0
        while True:
            k += 1
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float(k))  # snapshot at step k holds the value k everywhere
            rec.step()
            if k == 3:
                print("ready", flush=True)
    """
)


def _record_then_kill(path, delay):
    """Start a recording in a child process and SIGKILL it ``delay`` seconds after it is running."""
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SCRIPT, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.8])
def test_sigkill_leaves_a_prefix_of_complete_snapshots(tmp_path, delay):
    path = tmp_path / "killed.zarr"
    _record_then_kill(path, delay)
    store = RunStore(path)
    t = store.n_snapshots
    assert t >= 1
    np.testing.assert_array_equal(store.steps, np.arange(t))
    assert np.isfinite(store.read(rows=slice(0, 1))).all()
    for k in range(1, t):
        assert (store.read(rows=slice(k, k + 1)) == float(k)).all(), f"snapshot {k} is incomplete"
    # appending after the crash resumes right after the last committed snapshot
    model = nn.Linear(1000, 700)
    with Recorder(path, model, resume=True) as rec:
        rec.step()
    resumed = RunStore(path)
    assert resumed.n_snapshots == t + 1 and resumed.steps[-1] == t


def _check_plain_view(path) -> tuple[int, int]:
    """What a plain zarr reader sees, read in the order that is always safe (``step``, then the rest):
    steps 0..T-1 with no -1 and no gap, every other array at least as long, and every row of ``params``
    it shows complete (row k holds k). Returns (T, rows of params)."""
    import zarr

    group = zarr.open_group(path, mode="r")
    steps = group["step"][:]
    np.testing.assert_array_equal(steps, np.arange(steps.size))
    params = group["params"]
    assert params.shape[0] >= steps.size
    for name in ("epoch", "time", "loss"):
        if name in group:
            assert group[name].shape[0] >= steps.size
    for k in {1, steps.size - 1, params.shape[0] - 1} - {-1, 0} - {params.shape[0]}:  # row 1 once it exists
        assert (params[k, ::4099] == k).all() and params[k, -1] == k, f"row {k} is not complete"
    return steps.size, params.shape[0]


def test_a_plain_zarr_reader_sees_only_committed_rows_while_recording_and_after_sigkill(tmp_path):
    path = tmp_path / "live.zarr"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_SCRIPT, str(path)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        seen = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            seen.append(_check_plain_view(path)[0])
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert len(set(seen)) > 2 and seen == sorted(seen)  # it watched commits happen, never going back
    committed, rows = _check_plain_view(path)
    assert RunStore(path).n_snapshots == committed >= seen[-1]
    assert rows - committed <= 4  # params may lead step by the rows of one group commit killed in between


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(20))
def test_sigkill_at_random_points(tmp_path, trial):
    """20 kills at random moments: the store always opens, passes `traj info` and holds a prefix."""
    from typer.testing import CliRunner

    from traj.cli.app import app

    delay = float(np.random.default_rng(trial).uniform(0.0, 1.2))
    path = tmp_path / "killed.zarr"
    _record_then_kill(path, delay)
    store = RunStore(path)
    np.testing.assert_array_equal(store.steps, np.arange(store.n_snapshots))
    last = store.n_snapshots - 1
    if last > 0:
        assert (store.read(rows=slice(last, last + 1)) == float(last)).all()
    result = CliRunner().invoke(app, ["info", str(path), "--json", "--no-scan"])
    assert result.exit_code == 0, result.output
    with Recorder(path, nn.Linear(1000, 700), resume=True) as rec:
        rec.step()
    assert RunStore(path).n_snapshots == store.n_snapshots + 1


def test_a_second_process_is_refused_while_the_first_records(tmp_path):
    holder = textwrap.dedent(
        """
        import sys, time, torch
        from traj import Recorder
        with Recorder(sys.argv[1], torch.nn.Linear(3, 2)) as rec:
            print("ready", flush=True)
            sys.stdin.readline()
        """
    )
    path = tmp_path / "busy.zarr"
    proc = subprocess.Popen([sys.executable, "-c", holder, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        with pytest.raises(StoreLockedError, match=f"pid {proc.pid}"):
            Recorder(path, nn.Linear(3, 2))
        assert RunStore(path).writer_active
    finally:
        proc.stdin.write(b"done\n")
        proc.stdin.close()
        proc.wait()
        proc.stdout.close()
    with Recorder(path, nn.Linear(3, 2), resume=True) as rec:  # free again once the first writer has closed
        rec.step()
    assert RunStore(path).n_snapshots == 2


# ---------------------------------------------------------------- a Recorder that is never closed
_UNCLOSED_SCRIPT = textwrap.dedent(
    """
    import gc, json, sys, threading, torch
    from torch import nn
    from traj import Recorder, RunStore
    from traj.store.lock import is_locked

    path, mode = sys.argv[1], sys.argv[2]
    model = nn.Linear(300, 200)  # 60 200 params: the writer falls behind the loop below
    rec = Recorder(path, model)
    for k in range(1, 301):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(k))  # snapshot k holds the value k everywhere
        rec.step()
    if mode == "drop":
        del rec
        gc.collect()
        store = RunStore(path)
        writers = [t.name for t in threading.enumerate() if t.name == "traj-recorder-writer"]
        print(json.dumps({"n": store.n_snapshots, "capacity": store.capacity, "state": store.attrs["state"],
                          "locked": is_locked(path), "writers": writers}), flush=True)
        with Recorder(path, model, resume=True) as again:  # the lock is free for this very process
            again.step()
    """
)


def _check_every_row(path, n):
    store = RunStore(path)
    assert store.n_snapshots == n and store.closed_cleanly and not store.writer_active
    values = store.read()
    assert np.isfinite(values[0]).all()
    np.testing.assert_array_equal(values[1:301], np.arange(1, 301, dtype=np.float32)[:, None] * np.ones((1, values.shape[1])))
    return store


def test_script_that_never_closes_keeps_every_snapshot(tmp_path):
    # Before: the writer thread kept the Recorder alive, nothing closed it at exit and
    # 93-115 of the 301 snapshots were lost; the store stayed 'open'.
    path = tmp_path / "unclosed.zarr"
    done = subprocess.run([sys.executable, "-c", _UNCLOSED_SCRIPT, str(path), "exit"], capture_output=True, timeout=120)
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()
    _check_every_row(path, 301)


def test_dropped_recorder_closes_its_store_while_the_process_runs(tmp_path):
    path = tmp_path / "dropped.zarr"
    done = subprocess.run([sys.executable, "-c", _UNCLOSED_SCRIPT, str(path), "drop"], capture_output=True, timeout=120)
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()
    seen = json.loads(done.stdout.decode().splitlines()[0])
    assert seen == {"n": 301, "capacity": 301, "state": "closed", "locked": False, "writers": []}
    store = _check_every_row(path, 302)
    assert store.steps[-1] == 301


def test_dropped_recorder_in_process(tmp_path):
    model = _model()
    rec = Recorder(tmp_path / "r.zarr", model)
    history = _train(model, 6, rec)
    del rec
    gc.collect()
    store = RunStore(tmp_path / "r.zarr")
    assert store.closed_cleanly and not store.writer_active
    np.testing.assert_array_equal(store.read(), history)


def test_dropped_recorder_whose_writer_failed_says_so(tmp_path, monkeypatch):
    """Nobody is left to raise to, so the failure becomes a RuntimeWarning rather than nothing."""
    rec = Recorder(tmp_path / "r.zarr", _model())
    rec.flush()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(rec._writer, "commit", broken)
    rec.step()
    deadline = time.monotonic() + 10
    while rec._pipe.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.warns(RuntimeWarning, match="was not closed and its writer failed: disk full"):
        del rec
        gc.collect()
    assert not RunStore(tmp_path / "r.zarr").writer_active


# ---------------------------------------------------------------- appending to a damaged store
def _damaged(tmp_path, rows=116, legacy=False):
    """A closed store of ``rows`` snapshots whose only 'step' chunk file is gone."""
    import zarr

    from traj.record.recorder import layout_of
    from traj.store import StoreWriter

    path = tmp_path / "damaged.zarr"
    model = _model()
    layout, _ = layout_of(model)
    with StoreWriter(path, layout) as writer:  # what a Recorder writes, in one commit
        for k in range(rows):
            writer.append(_theta(model) + k, step=k)
    if legacy:  # written before n_snapshots_closed existed
        group = zarr.open_group(path, mode="r+")
        attrs = dict(group.attrs)
        attrs.pop("n_snapshots_closed", None)
        group.attrs.clear()
        group.attrs.update(attrs)
    (path / "step" / "c" / "0").unlink()
    return path, model


def _files(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".traj-writer.lock"}


@pytest.mark.parametrize("legacy", [False, True])
def test_append_to_a_store_that_lost_committed_rows_is_refused(tmp_path, legacy):
    # Before: the missing 'step' chunk made every row look uncommitted; the append reset them
    # and trimmed the store to the 1 new snapshot, destroying 116 committed rows.
    path, model = _damaged(tmp_path, legacy=legacy)
    before = _files(path)
    with pytest.raises(StoreFormatError, match=r"cannot append to .*damaged\.zarr: 0 committed snapshot\(s\), but its last clean close counted 116"):
        Recorder(path, model, resume=True)
    assert _files(path) == before  # nothing touched, lock released
    assert not RunStore(path, allow_damaged=True).writer_active
    with pytest.raises(StoreFormatError, match="counted 116.*refusing to use part of a run"):
        RunStore(path)  # analyses do not silently use the surviving prefix
    damaged = RunStore(path, allow_damaged=True)
    assert (damaged.n_snapshots, damaged.expected_snapshots, damaged.missing_snapshots) == (0, 116, 116)


def test_info_reports_lost_rows_as_damage_and_never_advises_appending(tmp_path):
    from typer.testing import CliRunner

    from traj.cli.app import app

    path, _ = _damaged(tmp_path)
    result = CliRunner().invoke(app, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["missing_snapshots"], info["expected_snapshots"], info["healthy"]) == (116, 116, False)
    assert any(line.startswith("damaged: 0 committed snapshot(s)") for line in info["health"])
    assert not any("resume=True" in line or "interrupted" in line for line in info["health"])
    result = CliRunner().invoke(app, ["dmd", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "counted 116" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_resumed_store_killed_before_closing_keeps_its_clean_close_count(tmp_path):
    model = _model()
    path = tmp_path / "r.zarr"
    with Recorder(path, model) as rec:
        _train(model, 4, rec)
    rec = Recorder(path, model, resume=True)  # resumed: state 'open' while it records
    _train(model, 3, rec, seed=1)
    rec.flush()
    store = RunStore(path)
    assert store.attrs["state"] == "open" and store.expected_snapshots == 5 and store.n_snapshots == 8
    rec.close()
    assert RunStore(path).expected_snapshots == 8


# ---------------------------------------------------------------- the model changes under the Recorder
@pytest.mark.parametrize("replace", ["parameter", "module", "deleted", "resized"])
def test_a_replaced_parameter_is_refused_at_the_next_snapshot(tmp_path, replace):
    # Before: m.weight = nn.Parameter(...) went on being recorded from the stale tensor, silently.
    model = _model()
    path = tmp_path / "r.zarr"
    with Recorder(path, model) as rec:
        _train(model, 2, rec)
        if replace == "parameter":
            model[2].weight = nn.Parameter(torch.zeros(2, 16))
            message = r"parameter '2\.weight' of the model was replaced"
        elif replace == "module":
            model[0] = nn.Linear(6, 16)
            message = r"module '0' of the model was replaced"
        elif replace == "deleted":
            del model[2].bias
            message = r"parameter '2\.bias' of the model was replaced"
        else:
            model[2].weight.data = torch.zeros(3, 16)
            message = r"parameter '2\.weight' now has 48 values; the store's layout records 32"
        with pytest.raises(RecorderError, match=message):
            rec.step()
    assert RunStore(path).n_snapshots == 3  # every snapshot before the change is kept


def test_tied_and_in_place_changes_are_recorded(tmp_path):
    """In-place updates (copy_, .data of the same size) are the supported way and are recorded."""
    model = _model()
    model[0].register_parameter("alias", model[2].bias)  # one tensor under two names
    with Recorder(tmp_path / "r.zarr", model) as rec:
        with torch.no_grad():
            model[2].weight.copy_(torch.ones(2, 16))
        model[0].bias.data = torch.full((16,), 7.0)
        rec.step()
        model[0].alias = nn.Parameter(torch.zeros(2))  # untied: the model now has a tensor the store lacks
        with pytest.raises(RecorderError, match=r"parameter '0\.alias'"):
            rec.step()
    store = RunStore(tmp_path / "r.zarr")
    last = store.read()[-1]
    assert (last[store.layout["0.bias"].offset : store.layout["0.bias"].stop] == 7.0).all() and (last[store.layout["2.weight"].offset : store.layout["2.weight"].stop] == 1.0).all()


def test_meta_device_model_fails_before_creating_anything(tmp_path):
    # Before: the store was created, then the copy failed, leaving it open and locked by this process.
    with torch.device("meta"):
        model = _model()
    with pytest.raises(RecorderError, match=r"parameter '0\.weight' is on the meta device"):
        Recorder(tmp_path / "meta.zarr", model)
    assert not (tmp_path / "meta.zarr").exists()


# ---------------------------------------------------------------- SIGTERM during `traj record`
def test_sigterm_during_traj_record_closes_the_store_and_exits_143(tmp_path):
    # Before: SIGTERM killed the process at once, leaving the store 'open', untrimmed and unclosed.
    from traj.errors import TrajError
    from traj.store.lock import is_locked

    path = tmp_path / "q.zarr"
    command = "from traj.cli.app import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", command, "record", "quadratic-mlp", "--out", str(path), "--epochs", "500"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if RunStore(path).n_snapshots >= 40:
                    break
            except TrajError:  # not created yet
                pass
            time.sleep(0.05)
        else:
            pytest.fail("the recording never got going")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, stderr.decode()
    assert "Traceback" not in stderr.decode() and stderr.decode().strip().splitlines()[-1] == "terminated"
    store = RunStore(path)
    assert store.attrs["state"] == "closed" and store.closed_cleanly  # closed and trimmed
    assert not is_locked(path) and store.n_snapshots >= 40
    assert store.capacity == store.n_snapshots == store.expected_snapshots
    np.testing.assert_array_equal(store.steps, np.arange(store.n_snapshots))
    assert np.isfinite(store.read()).all()
    kept = f"kept {store.n_snapshots} snapshot(s), steps 0 to {store.n_snapshots - 1}, in {path} (closed; usable as it is)"
    assert [line for line in stderr.decode().splitlines() if line.strip()][-2] == kept, stderr.decode()


def test_snapshots_are_written_at_once_and_committed_at_the_cadence_or_on_flush(tmp_path, monkeypatch):
    import zarr

    from traj.record import recorder as recorder_module

    monkeypatch.setattr(recorder_module, "COMMIT_SECONDS", 60.0)
    path = tmp_path / "cadence.zarr"
    model = nn.Linear(300, 300)
    with Recorder(path, model) as rec:
        rec.flush()  # snapshot 0 committed; the cadence starts now
        for _ in range(3):
            rec.step()
        deadline = time.monotonic() + 10
        while rec._pipe.rows_written < 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert rec._pipe.rows_written == 4  # their data is written, their buffers free
        # they wait for the cadence: a plain reader sees snapshot 0 only, and so does traj
        assert zarr.open_group(path, mode="r")["params"].shape[0] == 1 == RunStore(path).n_snapshots
        rec.flush()
        assert rec.n_committed == 4 == zarr.open_group(path, mode="r")["step"].shape[0]
        np.testing.assert_array_equal(RunStore(path).steps, [0, 1, 2, 3])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_the_writer_thread_runs_nicer_than_the_training_thread(tmp_path):
    from traj.record.recorder import WRITER_NICE

    with Recorder(tmp_path / "nice.zarr", nn.Linear(3, 2)) as rec:
        rec.flush()
        writer = os.getpriority(os.PRIO_PROCESS, rec._pipe.thread.native_id)
        assert writer == min(19, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + WRITER_NICE)


def test_arguments_in_the_wrong_order_say_so_and_write_nothing(tmp_path):
    model = nn.Linear(3, 3)
    with pytest.raises(RecorderError, match=r"model must be a torch.nn.Module, got str \(the arguments are "
                                            r"Recorder\(path, model\): path first\)"):
        Recorder(model, str(tmp_path / "r.zarr"))  # type: ignore[arg-type]
    with pytest.raises(RecorderError, match="got int$"):
        Recorder(tmp_path / "s.zarr", 3)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_the_writer_thread_makes_the_first_buffers(tmp_path):
    """The first snapshots' buffers are made and touched by the writer thread: the training thread only copies."""
    model = _model()
    with Recorder(tmp_path / "r.zarr", model, record_initial=False, min_buffers=4) as rec:
        for _ in range(200):
            if rec._pipe.free.qsize() == 2:
                break
            time.sleep(0.01)
        assert rec._pool.made == 2 and rec._pipe.free.qsize() == 2
        rec.snapshot(step=1)
        rec.flush()
        assert rec._pool.made == 2  # taken from the prefilled pool, not made on the training thread
