"""``traj convert``: a version-1 store (built here, in the old layout) rewritten as version 2 in one pass,
its content unchanged, and a conversion killed midway leaving the old store as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from traj.cli.app import app
from traj.errors import StoreLockedError
from traj.store import Layout, RunStore, StoreWriter
from traj.store.convert import convert_store


def v1_store(path, n=300, t=23, chunk_bytes=400, seed=0):
    """A version-1 store with gradients (row 0 has none), a loss from row 3 on, a metric on odd rows."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((t, n)).astype(np.float32)
    grads = rng.standard_normal((t, n)).astype(np.float32)
    layout = Layout.from_shapes([("a", (n - 10,)), ("b", (10,))], prunable=["a"])
    with StoreWriter(path, layout, format_version=1, chunk_bytes=chunk_bytes, spacing={"every": 3, "unit": "step"},
                     recipe={"name": "quadratic-mlp", "config": {}, "seed": 1}, attrs={"source": {"kind": "npy"}}) as w:
        for k in range(t):
            w.append(data[k], step=3 * k, epoch=k // 4, loss=0.1 * k if k > 2 else None,
                     metrics={"acc": 0.5} if k % 2 else None, grads=grads[k] if k else None)
    return path


def content(store: RunStore) -> dict:
    return {"params": store.read(), "grads": store.read(array="grads"), "steps": store.steps, "epochs": store.epochs,
            "times": store.times, "loss": store.loss, "acc": store.metric("acc"), "layout": store.layout,
            "recipe": store.recipe, "spacing": store.spacing, "source": store.attrs["source"]}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, np.ndarray):
            assert value.dtype == b[key].dtype and np.array_equal(value, b[key], equal_nan=True), key
        else:
            assert value == b[key], key


# rows of 1200 bytes in chunks (1, 100) (one row tall: streamed in pieces); rows stacked in chunks (256, 300)
@pytest.mark.parametrize("chunk_bytes", [400, 1 << 20], ids=["row-chunks", "stacked"])
def test_convert_in_place_keeps_every_value(tmp_path, chunk_bytes):
    path = v1_store(tmp_path / "run.zarr", chunk_bytes=chunk_bytes)
    old = RunStore(path)
    assert old.format_version == 1 and old.shards is None  # an old store opens and reads
    before = content(old)
    seen = []
    new = convert_store(path, progress=lambda done, total: seen.append((done, total)))
    assert new.format_version == 2 and new.shards is not None and new.closed_cleanly
    assert seen[-1] == (23, 23)
    assert_same(content(new), before)
    assert new.attrs["converted"]["from_version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.zarr"]  # no staging sibling left
    assert convert_store(path).path == path  # already version 2: left alone


def test_convert_cli_into_a_new_store_and_refusals(tmp_path):
    path = v1_store(tmp_path / "run.zarr")
    before = content(RunStore(path))
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(path), "--out", str(tmp_path / "v2.zarr"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["from_version"] == 1 and summary["version"] == 2 and summary["n_snapshots"] == 23
    assert_same(content(RunStore(tmp_path / "v2.zarr")), before)
    assert RunStore(path).format_version == 1  # the source is untouched
    result = runner.invoke(app, ["convert", str(path), "--out", str(tmp_path / "v2.zarr")])
    assert result.exit_code == 2 and "already exists" in result.stderr
    result = runner.invoke(app, ["convert", str(tmp_path / "v2.zarr")])
    assert result.exit_code == 0 and "already in format version 2" in result.stderr
    with StoreWriter(path, RunStore(path).layout):  # a recorder appending to it
        with pytest.raises(StoreLockedError):
            convert_store(path)
    assert RunStore(path).format_version == 1


_SLOW_CONVERT = textwrap.dedent(
    """
    import sys, time
    from traj.store.convert import convert_store

    def progress(done, total):
        print(done, flush=True)
        time.sleep(0.02)

    convert_store(sys.argv[1], None if sys.argv[2] == "-" else sys.argv[2], progress=progress)
    print("done", flush=True)
    """
)


def _listing(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.name != ".traj-writer.lock")


@pytest.mark.parametrize("into", ["in-place", "out"])
def test_a_conversion_killed_midway_leaves_the_old_store(tmp_path, into):
    path = v1_store(tmp_path / "run.zarr", n=2000, t=40, chunk_bytes=2000)  # one-row chunks: streamed row by row
    before, files = content(RunStore(path)), _listing(path)
    out = "-" if into == "in-place" else str(tmp_path / "new.zarr")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CONVERT, str(path), out], stdout=subprocess.PIPE)
    try:
        for _ in range(8):  # 8 snapshots converted: the new store is half built beside its target
            proc.stdout.readline()
        staging = [p for p in tmp_path.iterdir() if ".traj-staging-" in p.name]
        assert len(staging) == 1 and any(f.is_file() for f in (staging[0] / "params" / "c").rglob("*"))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert _listing(path) == files  # not a byte changed
    old = RunStore(path)
    assert old.format_version == 1
    assert_same(content(old), before)
    assert not (tmp_path / "new.zarr").exists()
    done = subprocess.run([sys.executable, "-c", _SLOW_CONVERT.replace("time.sleep(0.02)", "pass"), str(path), out],
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    converted = RunStore(path if into == "in-place" else tmp_path / "new.zarr")
    assert converted.format_version == 2
    assert_same(content(converted), before)
    assert not [p for p in tmp_path.iterdir() if ".traj-staging-" in p.name]  # the killed attempt's sibling is gone
