"""Nothing lost, round two (issue 24's data-loss section): each test reproduces a case that lost a
user's data with exit 0.

1. A staged writer swapped out and deleted whatever appeared at its target during the run
   (`traj import big --out Y & traj record … --out Y`: Y held only the import).
2. A marker without a list of entries made the whole folder replaceable (a user's notes.md deleted).
3. `traj convert run.zarr` in place dropped everything in the store that is not a traj array.
4. A resume forgot the snapshots past its checkpoint before anything was re-recorded.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import write_store
from traj.atomic import MARKER, Staging, staged_output
from traj.cli.app import app
from traj.errors import OutputConflictError, RecorderError, ReplacingSnapshotsWarning
from traj.store import Layout, RunStore, StoreWriter

runner = CliRunner()


def _layout(n=7):
    return Layout.from_shapes([("w", (n,))], prunable=["w"])


def _rows(path):
    return RunStore(path).read()


# ------------------------------------------------------------------ 1. the target changed meanwhile
def test_a_store_recorded_at_the_path_while_an_import_ran_is_kept(tmp_path):
    """The original failure: an import (staged) finished after a recorder had created the same path
    and swapped it out: both exited 0 and only the import was left."""
    y = tmp_path / "Y"
    imported = StoreWriter(y, _layout(), atomic=True)  # as `traj import` writes: staged, moved in at the end
    for k in range(3):
        imported.append(np.full(7, 100 + k, dtype=np.float32), step=k)
    with StoreWriter(y, _layout()) as recorded:  # `traj record --out Y` meanwhile: made in place
        for k in range(5):
            recorded.append(np.full(7, k, dtype=np.float32), step=k)
    with pytest.raises(OutputConflictError, match="changed while traj was writing it") as caught:
        imported.close()
    assert caught.value.kept_at == tmp_path / "Y.new"
    assert str(tmp_path / "Y.new") in str(caught.value)
    np.testing.assert_array_equal(_rows(y)[:, 0], np.arange(5))  # the recording is untouched
    np.testing.assert_array_equal(_rows(tmp_path / "Y.new")[:, 0], [100, 101, 102])  # and the import is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Y", "Y.new"]  # no staging left


def test_a_folder_made_at_out_during_a_convert_is_kept(tmp_path):
    old = write_store(tmp_path / "old.zarr", np.arange(30, dtype=np.float32).reshape(6, 5), format_version=1)
    y = tmp_path / "Y"
    import traj.store.convert as convert

    real_copy = convert._copy_rows

    def copy_then_user_makes_y(*args):
        real_copy(*args)
        y.mkdir()
        (y / "notes.md").write_text("mine")

    convert._copy_rows = copy_then_user_makes_y
    try:
        with pytest.raises(OutputConflictError) as caught:
            convert.convert_store(old, y)
    finally:
        convert._copy_rows = real_copy
    assert (y / "notes.md").read_text() == "mine" and sorted(p.name for p in y.iterdir()) == ["notes.md"]
    np.testing.assert_array_equal(_rows(caught.value.kept_at), _rows(old))


def test_a_folder_made_at_out_during_a_report_is_kept(tmp_path):
    out = tmp_path / "R"
    with pytest.raises(OutputConflictError) as caught:
        with staged_output(out) as staging:
            (staging / "report.md").write_text("new report")
            out.mkdir()
            (out / "notes.md").write_text("mine")
    assert sorted(p.name for p in out.iterdir()) == ["notes.md"]
    assert (caught.value.kept_at / "report.md").read_text() == "new report"
    assert (caught.value.kept_at / MARKER).is_file()


def test_a_file_put_into_the_old_report_during_the_run_is_kept(tmp_path):
    """The folder was traj's when the command began; a file the user added to it while the command ran
    would have gone with it at the swap."""
    out = tmp_path / "R"
    with staged_output(out) as staging:
        (staging / "report.md").write_text("first")
    with pytest.raises(OutputConflictError, match="holds notes.md, which traj did not write there") as caught:
        with staged_output(out) as staging:
            (staging / "report.md").write_text("second")
            (out / "notes.md").write_text("mine")
    assert (out / "notes.md").read_text() == "mine" and (out / "report.md").read_text() == "first"
    assert (caught.value.kept_at / "report.md").read_text() == "second"
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


def test_a_directory_swapped_in_at_the_target_meanwhile_is_kept(tmp_path):
    target = tmp_path / "R"
    target.mkdir()
    staging = Staging(target)
    (staging.path / "a").write_text("new")
    os.rename(target, tmp_path / "R-before")  # someone moves traj's folder away and puts theirs there
    target.mkdir()
    (target / "theirs").write_text("x")
    with pytest.raises(OutputConflictError, match="another directory was put there"):
        staging.commit()
    assert (target / "theirs").read_text() == "x" and (tmp_path / "R.new" / "a").read_text() == "new"


def test_without_renameat2_the_target_is_checked_the_same_way(tmp_path, monkeypatch):
    import traj.atomic as atomic

    monkeypatch.setattr(atomic, "_rename2", lambda *a: False)
    target = tmp_path / "R"
    staging = Staging(target)
    (staging.path / "a").write_text("new")
    target.mkdir()
    (target / "theirs").write_text("x")
    with pytest.raises(OutputConflictError):
        staging.commit()
    assert (target / "theirs").read_text() == "x" and (tmp_path / "R.new" / "a").read_text() == "new"
    # and the swap of traj's own directory still works
    again = Staging(tmp_path / "R.new")
    (again.path / "b").write_text("newer")
    again.commit()
    assert sorted(p.name for p in (tmp_path / "R.new").iterdir()) == ["b"]


def test_a_record_racing_an_import_through_the_cli(tmp_path):
    """`traj import … --out Y` finishing after `traj record … --out Y` began: one line, exit 2, both kept."""
    ck = tmp_path / "ck"
    ck.mkdir()
    for k in range(3):
        torch.save({"w": torch.full((5,), float(k))}, ck / f"step_{k}.pt")
    y = tmp_path / "Y"
    import traj.record.importers as importers

    real = importers._pieces
    recorded = []

    def pieces_while_y_is_recorded(*args, **kwargs):
        if not recorded:  # `traj record … --out Y` begins while the import runs: Y is made in place
            recorded.append(StoreWriter(y, _layout(3)))
            recorded[0].append(np.zeros(3, dtype=np.float32), step=0)
            recorded[0].close()
        return real(*args, **kwargs)

    importers._pieces = pieces_while_y_is_recorded
    try:
        result = runner.invoke(app, ["import", str(ck), "--out", str(y)])
    finally:
        importers._pieces = real
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Y.new" in lines[0] and "traj-staging" not in lines[0], result.stderr
    assert RunStore(y).n_params == 3 and RunStore(y).n_snapshots == 1
    assert RunStore(tmp_path / "Y.new").n_snapshots == 3


# ------------------------------------------------------------ 2. markers that list no entries
@pytest.mark.parametrize("marker", ['{"written_by": "traj", "kind": "report"}',
                                    '{"written_by": "traj", "kind": "report", "entries": "notes.md"}',
                                    '{"written_by": "traj", "kind": "report", "entries": [1, 2]}'])
def test_a_marker_without_a_valid_list_of_entries_replaces_nothing(tmp_path, marker):
    store = write_store(tmp_path / "q.zarr", np.cumsum(np.ones((8, 6), dtype=np.float32), axis=0))
    out = tmp_path / "R"
    out.mkdir()
    (out / MARKER).write_text(marker)
    (out / "notes.md").write_text("a user's notes")
    result = runner.invoke(app, ["info", str(store), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "notes.md" in result.stderr
    assert (out / "notes.md").read_text() == "a user's notes" and (out / MARKER).read_text() == marker


def test_a_marker_without_entries_over_an_otherwise_empty_folder_may_be_replaced(tmp_path):
    store = write_store(tmp_path / "q.zarr", np.cumsum(np.ones((8, 6), dtype=np.float32), axis=0))
    out = tmp_path / "R"
    out.mkdir()
    (out / MARKER).write_text('{"written_by": "traj", "kind": "report"}')
    result = runner.invoke(app, ["info", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "entries" in json.loads((out / MARKER).read_text())


# ---------------------------------------------------------------- 3. convert in place keeps the rest
def test_convert_in_place_carries_over_what_the_user_kept_in_the_store(tmp_path):
    import zarr

    path = write_store(tmp_path / "run.zarr", np.arange(40, dtype=np.float32).reshape(8, 5), format_version=1)
    (path / "README.txt").write_text("lr 1e-3, seed 7")
    mine = zarr.open_array(zarr.storage.LocalStore(path), path="labels", mode="w", shape=(8,), dtype="int32")
    mine[:] = np.arange(8) * 3
    (path / "notes").mkdir()
    (path / "notes" / "day1.md").write_text("diverged at step 5")
    before = _rows(path)
    result = runner.invoke(app, ["convert", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kept"] == ["README.txt", "labels", "notes"]
    store = RunStore(path)
    assert store.format_version == 2
    np.testing.assert_array_equal(store.read(), before)
    assert (path / "README.txt").read_text() == "lr 1e-3, seed 7"
    assert (path / "notes" / "day1.md").read_text() == "diverged at step 5"
    again = zarr.open_array(zarr.storage.LocalStore(path), path="labels", mode="r")
    np.testing.assert_array_equal(again[:], np.arange(8) * 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.zarr"]


def test_overwrite_keeps_what_the_user_kept_in_the_store(tmp_path):
    path = write_store(tmp_path / "run.zarr", np.ones((4, 7), dtype=np.float32))
    (path / "README.txt").write_text("mine")
    with StoreWriter(path, _layout(), overwrite=True) as writer:
        writer.append(np.zeros(7, dtype=np.float32), step=0)
        assert (path / "README.txt").read_text() == "mine"
    assert writer.carried == ["README.txt"] and (path / "README.txt").read_text() == "mine"
    assert RunStore(path).n_snapshots == 1


# ----------------------------------------------------------------------- 4. resumes forget nothing early
def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def _finished_run(path, last=20):
    from traj.integrations.distributed import DistributedRecorder

    model = _mlp()
    rec = DistributedRecorder(path)
    rec.begin(model, step=0)
    for step in range(1, last + 1):
        with torch.no_grad():
            model[0].bias.fill_(step)
        rec.capture(model, step=step)
        rec.flush()
    rec.close()
    return model


def test_a_resume_that_fails_before_its_first_snapshot_keeps_the_later_ones(tmp_path):
    """The original failure: a Trainer resumed from checkpoint-5 on a finished 0..20 run that failed
    at its first step left 0..5."""
    from traj.integrations.distributed import DistributedRecorder

    path = tmp_path / "run.zarr"
    model = _finished_run(path)
    before = _rows(path)
    rec = DistributedRecorder(path)
    with pytest.warns(ReplacingSnapshotsWarning, match="the 15 snapshot.s. of steps 6 to 20 will be replaced"):
        rec.begin(model, step=5)
    rec.close()  # training failed at its first step: nothing new was recorded
    store = RunStore(path)
    np.testing.assert_array_equal(store.steps, np.arange(21))
    np.testing.assert_array_equal(store.read(), before)
    assert store.closed_cleanly


def test_a_resume_replaces_the_later_snapshots_once_it_records(tmp_path):
    from traj.integrations.distributed import DistributedRecorder

    path = tmp_path / "run.zarr"
    model = _finished_run(path)
    rec = DistributedRecorder(path)
    with pytest.warns(ReplacingSnapshotsWarning):
        rec.begin(model, step=5)
    for step in (6, 7):
        with torch.no_grad():
            model[0].bias.fill_(step + 100)
        rec.capture(model, step=step)
        rec.flush()
    rec.close()
    store = RunStore(path)
    np.testing.assert_array_equal(store.steps, np.arange(8))
    np.testing.assert_array_equal(store.read()[1:, store.layout["0.bias"].columns][:, 0], [*range(1, 6), 106, 107])


def test_a_recorder_resumed_earlier_is_refused_without_rewind(tmp_path):
    from traj import Recorder

    path = tmp_path / "run.zarr"
    model = _finished_run(path, last=6)
    with pytest.raises(RecorderError, match="pass rewind=True"):
        Recorder(path, model, resume=True, start_step=3)
    np.testing.assert_array_equal(RunStore(path).steps, np.arange(7))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with Recorder(path, model, resume=True, start_step=3, rewind=True) as rec:
            rec.step()  # step 4: the snapshots 4..6 go only now
    assert [w.category for w in seen] == [ReplacingSnapshotsWarning]
    np.testing.assert_array_equal(RunStore(path).steps, np.arange(5))


def test_a_new_run_is_not_stitched_onto_a_crashed_runs_first_snapshot(tmp_path):
    """The original failure: a from-scratch run (new seed, step 0) appended to a crashed run that had
    committed only snapshot 0: exit 0, a jump of 45 median steps between rows 0 and 1."""
    from traj.integrations.distributed import DistributedRecorder

    path = tmp_path / "run.zarr"
    crashed = DistributedRecorder(path)
    crashed.begin(_mlp(), step=0)
    crashed.close()
    before = _rows(path)
    with pytest.raises(RecorderError, match="starts from scratch at step 0"):
        DistributedRecorder(path).begin(_mlp(), step=0)
    np.testing.assert_array_equal(_rows(path), before)
    fresh = DistributedRecorder(path, overwrite=True)
    fresh.begin(_mlp(), step=0)
    fresh.close()
    assert RunStore(path).n_snapshots == 1

