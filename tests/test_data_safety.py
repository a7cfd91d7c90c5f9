"""Nothing a user owns is ever lost (issue 12): every --out, every overwrite, every kill.

Each case here reproduces a failure seen before: `traj dmd v.zarr --out v.zarr` deleted the run;
`--out runs` deleted `runs/thesis.tex`; kga-replay overwrote its input `D/plain.zarr`;
`--overwrite` deleted the old store before the new one existed; a killed import left a partial
store that analyses used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import write_store
from traj.atomic import MARKER, Staging, check_output_dir, clean_stale_staging, rename_into_place
from traj.cli.app import app
from traj.errors import UnsafeOutputError
from traj.store import Layout, RunStore, StoreWriter

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
runner = CliRunner()


def fingerprint(root: Path) -> dict[str, str]:
    """Every file under ``root`` (lock files aside) and a hash of its bytes."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != ".traj-writer.lock":
            out[str(p.relative_to(root))] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def small_store(path: Path, t: int = 12, n: int = 30, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    return write_store(path, np.cumsum(rng.standard_normal((t, n)), axis=0).astype(np.float32))


def recipe_store(tmp: Path, name: str = "q.zarr") -> Path:
    """A copy of the shipped quadratic-mlp run (a store with a recipe, for kga-replay)."""
    shutil.copytree(SAMPLE / "quadratic-mlp.zarr", tmp / name)
    return tmp / name


# Each command and the arguments that make it run on a store given as {store}
COMMANDS = {
    "info": ["info", "{store}"],
    "dmd": ["dmd", "{store}"],
    "cmd": ["cmd", "{store}", "--modes", "2", "--no-evaluate"],
    "prune": ["prune", "{store}", "--no-evaluate", "--window", "0:6"],
    "conjugacy": ["conjugacy", "{store}", "{store}"],
    "report": ["report", "{store}", "--no-evaluate"],
    "kga-replay": ["kga-replay", "{store}", "--epochs", "1"],
}


def run(command: str, store: Path, out: Path):
    args = [a.replace("{store}", str(store)) for a in COMMANDS[command]]
    return runner.invoke(app, [*args, "--out", str(out)])


def refused(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------- --out
@pytest.mark.parametrize("command", list(COMMANDS))
def test_out_equal_to_the_input_store_is_refused_and_the_run_survives(tmp_path, command):
    store = recipe_store(tmp_path) if command == "kga-replay" else small_store(tmp_path / "v.zarr")
    before = fingerprint(tmp_path)
    refused(run(command, store, store), "is the input")
    assert fingerprint(tmp_path) == before
    assert RunStore(store).n_snapshots > 0


@pytest.mark.parametrize("command", list(COMMANDS))
def test_out_containing_the_input_store_is_refused_and_the_folder_survives(tmp_path, command):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "thesis.tex").write_text("\\documentclass{article} % years of work")
    store = recipe_store(runs) if command == "kga-replay" else small_store(runs / "q.zarr")
    before = fingerprint(tmp_path)
    refused(run(command, store, runs), "contains the input")
    assert fingerprint(tmp_path) == before


@pytest.mark.parametrize("command", ["info", "dmd", "conjugacy", "kga-replay"])
def test_out_inside_the_input_store_is_refused(tmp_path, command):
    store = recipe_store(tmp_path) if command == "kga-replay" else small_store(tmp_path / "v.zarr")
    before = fingerprint(tmp_path)
    refused(run(command, store, store / "report"), "lies inside the input")
    assert fingerprint(tmp_path) == before


@pytest.mark.parametrize("command", ["info", "dmd", "cmd", "prune", "conjugacy", "report"])
def test_a_folder_traj_did_not_write_is_never_replaced(tmp_path, command):
    store = small_store(tmp_path / "v.zarr")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    before = fingerprint(tmp_path)
    refused(run(command, store, mine), "was not written by traj")
    assert fingerprint(tmp_path) == before


@pytest.mark.parametrize("command", ["info", "dmd", "cmd", "conjugacy"])
def test_rerunning_into_its_own_report_directory_replaces_it(tmp_path, command):
    store = small_store(tmp_path / "v.zarr")
    out = tmp_path / "out"
    out.mkdir()  # an empty directory may be used
    for _ in range(2):
        result = run(command, store, out)
        assert result.exit_code == 0, result.output
        assert (out / MARKER).is_file() and (out / "summary.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if "traj-staging" in p.name] == []
    # a file the user added to traj's report (found by a new user: it was deleted with the report) is kept
    (out / "notes.txt").write_text("left by the user inside traj's report")
    before = fingerprint(tmp_path)
    refused(run(command, store, out), "holds notes.txt, which traj did not write there")
    assert fingerprint(tmp_path) == before


def test_an_output_of_another_kind_or_holding_a_recorded_run_is_not_replaced(tmp_path):
    """Found by a new user: `traj dmd --out` into a kga-replay directory deleted its trained runs, and into a report
    directory that a run had been recorded into deleted the run."""
    store = recipe_store(tmp_path)
    replay = tmp_path / "replay"
    assert run("kga-replay", store, replay).exit_code == 0
    before = fingerprint(tmp_path)
    refused(run("dmd", store, replay), "holds the output of traj kga-replay")
    assert fingerprint(tmp_path) == before
    report = tmp_path / "report"
    assert run("dmd", store, report).exit_code == 0
    rec = runner.invoke(app, ["record", "quadratic-mlp", "--set", "epochs=1", "--out", str(report / "run.zarr")])
    assert rec.exit_code == 0, rec.output
    before = fingerprint(tmp_path)
    refused(run("dmd", store, report), "holds run.zarr, which traj did not write there")
    refused(run("kga-replay", store, report), "holds the output of traj report")
    assert fingerprint(tmp_path) == before and RunStore(report / "run.zarr").n_snapshots > 1


def test_a_symlinked_out_is_refused(tmp_path):
    store = small_store(tmp_path / "v.zarr")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    refused(run("dmd", store, tmp_path / "link"), "symbolic link")
    assert list((tmp_path / "real").iterdir()) == []


def test_check_output_dir_rules(tmp_path):
    store = small_store(tmp_path / "s.zarr")
    assert check_output_dir(tmp_path / "new") == tmp_path / "new"
    with pytest.raises(UnsafeOutputError, match="is the input"):
        check_output_dir(tmp_path / "x" / ".." / "s.zarr", inputs=[store])
    with pytest.raises(UnsafeOutputError, match="contains the input"):
        check_output_dir(tmp_path, inputs=[store])
    (tmp_path / "f").write_text("x")
    with pytest.raises(UnsafeOutputError, match="is a file"):
        check_output_dir(tmp_path / "f")
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / MARKER).write_text('{"written_by": "traj"}')
    (marked / "anything").write_text("x")
    with pytest.raises(UnsafeOutputError, match="holds anything, which its .* does not list"):
        check_output_dir(marked)  # a marker without a list of entries (an older traj's, or planted) names nothing
    with pytest.raises(UnsafeOutputError, match="holds the output of traj report"):
        check_output_dir(marked, kind="kga-replay")
    (marked / MARKER).write_text('{"written_by": "traj", "kind": "report", "entries": ["anything"]}')
    assert check_output_dir(marked) == marked
    (marked / "more").write_text("y")
    with pytest.raises(UnsafeOutputError, match="holds more, which traj did not write there"):
        check_output_dir(marked)
    (marked / "more").unlink()
    (marked / MARKER).write_text("not json")  # a damaged marker is no marker
    with pytest.raises(UnsafeOutputError):
        check_output_dir(marked)


# ------------------------------------------------------------------------------------ kga-replay
def test_kga_replay_never_overwrites_its_input_or_stores_it_did_not_create(tmp_path):
    d = tmp_path / "D"
    d.mkdir()
    plain = recipe_store(d, "plain.zarr")
    rows = RunStore(plain).n_snapshots
    before = fingerprint(tmp_path)
    refused(run("kga-replay", plain, d), "contains the input")  # the original failure: 321 -> 33 rows
    assert fingerprint(tmp_path) == before and RunStore(plain).n_snapshots == rows
    # a directory of someone's stores (not written by kga-replay) is not replaced either
    other = recipe_store(tmp_path)
    refused(run("kga-replay", other, d), "was not written by traj")
    assert fingerprint(d) == fingerprint(d) and RunStore(plain).n_snapshots == rows


def test_kga_replay_replaces_its_own_directory_whole(tmp_path):
    store = recipe_store(tmp_path)
    out = tmp_path / "replay"
    first = runner.invoke(app, ["kga-replay", str(store), "--epochs", "1", "--alpha", "0.5", "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert {p.name for p in out.iterdir()} >= {"plain.zarr", "kga-alpha0.5.zarr", "report", MARKER}
    second = runner.invoke(app, ["kga-replay", str(store), "--epochs", "1", "--alpha", "0.25", "--out", str(out),
                                 "--json"])
    assert second.exit_code == 0, second.output
    names = {p.name for p in out.iterdir()}
    assert "kga-alpha0.25.zarr" in names and "kga-alpha0.5.zarr" not in names
    import json

    summary = json.loads(second.stdout)
    assert summary["plain"]["store"] == str(out / "plain.zarr")  # paths name the final place, not the staging
    assert RunStore(out / "plain.zarr").n_snapshots > 1


# ---------------------------------------------------------------------------------- staging
def test_rename_into_place_swaps_whole_directories(tmp_path):
    new, old = tmp_path / "new", tmp_path / "target"
    new.mkdir()
    (new / "a").write_text("new")
    old.mkdir()
    (old / "b").write_text("old")
    gone = rename_into_place(new, old)
    assert sorted(p.name for p in old.iterdir()) == ["a"] and (gone / "b").read_text() == "old"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert rename_into_place(fresh, tmp_path / "absent") is None and (tmp_path / "absent").is_dir()


def test_a_two_rename_swap_killed_halfway_gives_the_old_directory_back(tmp_path, monkeypatch):
    """Without renameat2 the swap is two renames; a kill between them leaves nothing at the target
    and the user's directory under a staging name: the next run restores it, never deletes it."""
    import traj.atomic as atomic

    target, new = tmp_path / "run.zarr", tmp_path / "new"
    target.mkdir()
    (target / "thesis.tex").write_text("mine")
    new.mkdir()
    calls = []
    real_rename = os.rename

    def rename_then_die(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed between the two renames
        real_rename(src, dst)

    monkeypatch.setattr(atomic, "_rename2", lambda *a: False)
    monkeypatch.setattr(atomic.os, "rename", rename_then_die)
    with pytest.raises(KeyboardInterrupt):
        rename_into_place(new, target)
    monkeypatch.undo()
    assert not target.exists() and len(calls) == 2
    assert clean_stale_staging(target) == []
    assert (target / "thesis.tex").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "run.zarr"]


def test_stale_staging_is_cleaned_but_a_live_one_is_kept(tmp_path):
    target = tmp_path / "run.zarr"
    holder = textwrap.dedent(
        """
        import sys
        from traj.atomic import Staging
        s = Staging(sys.argv[1])
        print(s.path, flush=True)
        sys.stdin.readline()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        live = Path(proc.stdout.readline().decode().strip())
        dead = Staging(target)
        dead._release()  # as if its process had been killed: the lock is gone, the directory stays
        assert clean_stale_staging(target) == [dead.path]
        assert live.is_dir() and not dead.path.exists()
    finally:
        proc.stdin.close()
        proc.wait()
        proc.stdout.close()
    assert clean_stale_staging(target) == [live]


# ------------------------------------------------------------------------ overwrite and import
def test_overwrite_keeps_the_old_store_until_the_new_one_is_complete(tmp_path):
    path = small_store(tmp_path / "s.zarr", t=20)
    before = fingerprint(path)
    layout = Layout.from_shapes([("w", (7,))])
    writer = StoreWriter(path, layout, overwrite=True)
    for k in range(5):
        writer.append(np.full(7, k, dtype=np.float32), step=k)
    writer.commit()
    assert fingerprint(path) == before and RunStore(path).n_snapshots == 20  # old store untouched
    writer.abort()
    assert fingerprint(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]
    with StoreWriter(path, layout, overwrite=True) as writer:
        writer.append(np.zeros(7, dtype=np.float32), step=0)
    assert RunStore(path).shape == (1, 7)
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_overwrite_refuses_a_folder_that_is_not_a_store(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "thesis.tex").write_text("x")
    result = runner.invoke(app, ["record", "mirror-descent", "--epochs", "3", "--out", str(folder), "--overwrite"])
    refused(result, "not a run store")
    assert (folder / "thesis.tex").read_text() == "x"


def test_import_is_atomic_and_a_failure_leaves_nothing(tmp_path):
    import torch

    ck = tmp_path / "ck"
    ck.mkdir()
    for k in range(3):
        torch.save({"w": torch.full((5,), float(k))}, ck / f"step_{k}.pt")
    (ck / "step_9.pt").write_bytes(b"garbage")  # fails in the first pass, before anything is written
    result = runner.invoke(app, ["import", str(ck), "--out", str(tmp_path / "imp.zarr")])
    refused(result, "step_9.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    refused(runner.invoke(app, ["import", str(ck), "--out", str(ck / "inside.zarr")]), "overlaps the source")


_IMPORT_SCRIPT = "from traj.cli.app import main; main()"


def _kill_import_midway(tmp_path: Path, out: Path, delay: float, overwrite: bool) -> int:
    """Start `traj import big.npy --out OUT`, SIGKILL it ``delay`` s after its staging directory appears."""
    args = [sys.executable, "-c", _IMPORT_SCRIPT, "import", str(tmp_path / "big.npy"), "--out", str(out)]
    proc = subprocess.Popen([*args, *(["--overwrite"] if overwrite else [])], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any("traj-staging" in p.name for p in tmp_path.iterdir()):
            break
        time.sleep(0.005)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait()


def _check_killed_import(tmp_path: Path, trial: int, overwrite: bool) -> None:
    rng = np.random.default_rng(trial)
    big = rng.standard_normal((400, 40_000)).astype(np.float32)  # 64 MB: an import of about a second
    np.save(tmp_path / "big.npy", big)
    out = tmp_path / "run.zarr"
    if overwrite:
        old = small_store(out, t=5, n=40_000)
        before = fingerprint(old)
    _kill_import_midway(tmp_path, out, float(rng.uniform(0.0, 0.5)), overwrite)
    # Killed at any moment, --out holds the old state (nothing, or the old store) or the whole new store
    # (a kill after the final rename), never a part of it.
    if out.exists() and (not overwrite or fingerprint(out) != before):
        np.testing.assert_array_equal(RunStore(out).read(), big)
    # the next import ignores and cleans the stale staging directory, and succeeds
    result = runner.invoke(app, ["import", str(tmp_path / "big.npy"), "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(RunStore(out).read(), big)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npy", "run.zarr"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_killed_import_leaves_the_old_state(tmp_path, overwrite):
    _check_killed_import(tmp_path, 0, overwrite)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(1, 6))
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_killed_import_at_random_moments(tmp_path, trial, overwrite):
    _check_killed_import(tmp_path, trial, overwrite)


_RECORD_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from traj import Recorder
    model = torch.nn.Linear(300, 200)
    with Recorder(sys.argv[1], model, overwrite=True) as rec:
        for k in range(1, 100000):
            rec.step()
            if k == 5:
                print("ready", flush=True)
    """
)


def test_a_killed_overwrite_recording_leaves_the_old_store(tmp_path):
    path = small_store(tmp_path / "old.zarr", t=9)
    before = fingerprint(path)
    proc = subprocess.Popen([sys.executable, "-c", _RECORD_SCRIPT, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert fingerprint(path) == before and RunStore(path).n_snapshots == 9


def test_an_interrupted_overwrite_recording_leaves_the_old_store(tmp_path):
    import torch

    from traj import Recorder

    path = small_store(tmp_path / "old.zarr", t=9)
    before = fingerprint(path)
    with pytest.raises(KeyboardInterrupt), Recorder(path, torch.nn.Linear(3, 2), overwrite=True) as rec:
        rec.step()
        raise KeyboardInterrupt
    assert fingerprint(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["old.zarr"]


# ------------------------------------------------------------------------------ full disk, read-only
def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def _disk(tmp_path: Path, size: str):
    disk = tmp_path / "disk"
    if not _tmpfs(disk, size):
        pytest.skip("needs root and tmpfs to make a small disk")
    return disk


@pytest.fixture
def small_disk(tmp_path):
    disk = _disk(tmp_path, "512k")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.fixture
def tiny_disk(tmp_path):
    disk = _disk(tmp_path, "12k")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_disk_full_before_the_first_snapshot_leaves_nothing(tiny_disk, tmp_path):
    result = runner.invoke(app, ["record", "digits-cnn", "--epochs", "1", "--out", str(tiny_disk / "r.zarr")])
    refused(result, "No space left on device")
    assert list(tiny_disk.iterdir()) == []  # before: an empty store that a rerun refused


def test_a_disk_full_midway_keeps_every_committed_snapshot(small_disk, tmp_path):
    path = small_disk / "r.zarr"
    # three epochs take ~900 KiB of a 512 KiB disk whatever the commit timing (one epoch, ~350 KiB, fitted on CI)
    result = runner.invoke(app, ["record", "digits-cnn", "--epochs", "3", "--out", str(path)])
    refused(result, "No space left on device")
    store = RunStore(path)
    assert store.n_snapshots >= 1 and store.closed_cleanly
    np.testing.assert_array_equal(store.steps, np.arange(store.n_snapshots))
    assert np.isfinite(store.read()).all()


def test_full_disk_import_and_report_leave_nothing(small_disk, tmp_path):
    np.save(tmp_path / "big.npy", np.random.default_rng(0).standard_normal((40, 20_000)).astype(np.float32))
    refused(runner.invoke(app, ["import", str(tmp_path / "big.npy"), "--out", str(small_disk / "i.zarr")]),
            "No space left on device")
    assert list(small_disk.iterdir()) == []
    filler = small_disk / "filler"  # leave 40 KiB: too little for the report's figures
    filler.write_bytes(b"\0" * (os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize - (40 << 10)))
    refused(runner.invoke(app, ["dmd", str(SAMPLE / "digits-cnn.zarr"), "--out", str(small_disk / "rep")]),
            "No space left on device")
    assert list(small_disk.iterdir()) == [filler]
    filler.unlink()
    # where there is room, the same command works: nothing stale blocks it
    ok = runner.invoke(app, ["record", "mirror-descent", "--epochs", "3", "--out", str(small_disk / "r.zarr")])
    assert ok.exit_code == 0, ok.output


def test_read_only_filesystem_gives_one_line(small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    refused(runner.invoke(app, ["record", "mirror-descent", "--epochs", "3", "--out", str(small_disk / "r.zarr")]),
            "Read-only file system")
    refused(runner.invoke(app, ["dmd", str(SAMPLE / "quadratic-mlp.zarr"), "--out", str(small_disk / "o")]),
            "Read-only file system")
    assert list(small_disk.iterdir()) == []
