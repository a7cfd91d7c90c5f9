import os

import numpy as np
import pytest

from tests.conftest import write_store
from traj.errors import LayoutMismatchError, RecorderError, StoreFormatError, StoreLockedError, StoreNotFoundError
from traj.store import Layout, RunStore, StoreWriter

# N = 777 float32 (3108-byte rows) cut three ways: one-row shards of two 259-wide inner chunks (the
# second shard holds one chunk and an empty slot past N); shards of 7 stacked rows; version 1 chunks (1, 259)
LAYOUTS = {
    "row-shards": {"stack_bytes": 1, "chunk_bytes": 1200, "shard_chunks": 2},
    "stacked": {"stack_bytes": 7 * 3108, "chunk_bytes": 7 * 1200},
    "v1": {"format_version": 1, "chunk_bytes": 1200},
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_is_bit_exact(tmp_path, rng, dtype):
    data = rng.standard_normal((23, 1000)).astype(dtype)
    data[3, 7] = np.float32(1e-39)  # subnormal survives
    store = RunStore(write_store(tmp_path / "s.zarr", data))
    assert store.shape == (23, 1000)
    assert store.dtype == np.dtype(dtype)
    out = store.read()
    assert out.dtype == np.dtype(dtype)
    assert out.tobytes() == data.tobytes()
    np.testing.assert_array_equal(store.steps, np.arange(23))
    np.testing.assert_array_equal(store.epochs, np.arange(23) // 5)
    assert store.closed_cleanly


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_chunk_boundaries_not_multiples(tmp_path, rng, layout):
    """Rows split in 3 chunks of 259 (N = 777 is not a multiple of the shard width); T = 17 is not a multiple of 7."""
    data = rng.standard_normal((17, 777)).astype(np.float32)
    store = RunStore(write_store(tmp_path / "s.zarr", data, **LAYOUTS[layout]))
    assert store.chunks == {"row-shards": (1, 259), "stacked": (7, 259), "v1": (1, 259)}[layout]
    assert store.shards == {"row-shards": (1, 518), "stacked": (7, 777), "v1": None}[layout]
    assert store.read().tobytes() == data.tobytes()
    assert store.format_version == (1 if layout == "v1" else 2)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("read_bytes", [1, 1 << 20])  # unaligned reads / whole chunk columns as views
@pytest.mark.parametrize("width", [37, 100, 259, 300, 1000])
def test_blocks_equal_the_full_array(tmp_path, rng, width, read_bytes, layout):
    data = rng.standard_normal((11, 777)).astype(np.float32)
    store = RunStore(write_store(tmp_path / "s.zarr", data, **LAYOUTS[layout]))
    pieces = list(store.iter_blocks(block_columns=width, read_bytes=read_bytes))
    assert pieces[0][0].start == 0 and pieces[-1][0].stop == 777
    assert all(a[0].stop == b[0].start for a, b in zip(pieces, pieces[1:], strict=False))
    np.testing.assert_array_equal(np.concatenate([b for _, b in pieces], axis=1), data)
    # a window of rows and a column range (a layer starting mid-chunk)
    got = np.concatenate([b for _, b in store.iter_blocks(rows=slice(2, 9), columns=slice(100, 650), block_columns=width,
                                                          read_bytes=read_bytes)], axis=1)
    np.testing.assert_array_equal(got, data[2:9, 100:650])


@pytest.mark.parametrize("layout", ["row-shards", "v1"])
def test_default_block_width_is_chunk_aligned_and_bounded(tmp_path, rng, layout):
    data = rng.standard_normal((5, 777)).astype(np.float32)
    store = RunStore(write_store(tmp_path / "s.zarr", data, **LAYOUTS[layout]))
    assert store.block_columns(5, block_bytes=5 * 8 * 600) == 518  # two whole chunks of 259
    # narrower than a chunk: version 2 cuts an inner chunk into equal parts (3 x 87), decoded once for all three
    assert store.block_columns(5, block_bytes=5 * 8 * 100) == (100 if layout == "v1" else 87)


def test_read_selected_columns(tmp_path, rng):
    data = rng.standard_normal((6, 300)).astype(np.float64)
    store = RunStore(write_store(tmp_path / "s.zarr", data))
    idx = np.array([0, 17, 299, 150])
    np.testing.assert_array_equal(store.read(columns=idx), data[:, idx])
    np.testing.assert_array_equal(store.snapshot(-1), data[-1])


@pytest.mark.parametrize("version", [2, 1])
def test_resume_appends(tmp_path, rng, version):
    data = rng.standard_normal((20, 130)).astype(np.float32)
    path = tmp_path / "s.zarr"
    layout = Layout.from_shapes([("w", (130,))])
    size = {"stack_bytes": 130 * 4 * 8} if version == 2 else {"chunk_bytes": 130 * 4 * 8}
    with StoreWriter(path, layout, format_version=version, **size) as writer:  # 8 rows per shard (chunk)
        assert writer.t_chunk == 8
        for k in range(11):
            writer.append(data[k], step=10 * k, loss=float(k))
    assert RunStore(path).n_snapshots == 11
    with StoreWriter(path, layout) as writer:
        assert writer.n_snapshots == 11 and writer.last_step == 100
        with pytest.raises(RecorderError, match="steps must increase"):
            writer.append(data[11], step=100)
        for k in range(11, 20):
            writer.append(data[k], step=10 * k, metrics={"acc": k / 100})
    store = RunStore(path)
    assert store.format_version == version  # appended in its own layout
    np.testing.assert_array_equal(store.read(), data)
    np.testing.assert_array_equal(store.steps, 10 * np.arange(20))
    np.testing.assert_array_equal(store.loss[:11], np.arange(11.0))
    assert np.isnan(store.loss[11:]).all()
    assert np.isnan(store.metric("acc")[:11]).all() and store.metric("acc")[-1] == pytest.approx(0.19)


def test_layout_and_dtype_mismatch_refused(tmp_path, rng):
    path = write_store(tmp_path / "s.zarr", rng.standard_normal((4, 10)).astype(np.float32))
    with pytest.raises(LayoutMismatchError, match=r"shape \[11\]"):
        StoreWriter(path, Layout.from_shapes([("w", (11,))]))
    with pytest.raises(LayoutMismatchError, match="float32"):
        StoreWriter(path, Layout.from_shapes([("w", (10,))]), dtype="float64")
    assert RunStore(path).n_snapshots == 4  # untouched


def test_second_writer_refused(tmp_path):
    layout = Layout.from_shapes([("w", (10,))])
    with StoreWriter(tmp_path / "s.zarr", layout):
        with pytest.raises(StoreLockedError, match="another recorder"):
            StoreWriter(tmp_path / "s.zarr", layout)
        assert RunStore(tmp_path / "s.zarr").writer_active
    StoreWriter(tmp_path / "s.zarr", layout).close()  # released on close


@pytest.mark.parametrize("how", ["new", "resumed", "overwrite", "atomic"])
def test_a_closed_store_holds_no_lock_file_and_lists_cleanly_in_zarr(tmp_path, how):
    """zarr warns about any file in a group that is no Zarr node: a user's filterwarnings=error failed."""
    import warnings

    import zarr

    layout = Layout.from_shapes([("w", (10,))])
    path = tmp_path / "s.zarr"
    if how != "new":
        StoreWriter(path, layout).close()
    with StoreWriter(path, layout, overwrite=how == "overwrite", atomic=how == "atomic") as writer:
        writer.append(np.ones(10, np.float32), step=1)
        if how in ("new", "resumed"):
            assert (path / ".traj-writer.lock").is_file()  # held while writing
    assert sorted(p.name for p in path.iterdir()) == ["epoch", "params", "step", "time", "zarr.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        group = zarr.open_group(path, mode="r")
        assert sorted(group.keys()) == ["epoch", "params", "step", "time"]
        assert len(list(group.members())) == 4
    assert not RunStore(path).writer_active


def test_a_writer_that_locks_a_lock_file_just_unlinked_locks_the_new_one(tmp_path, monkeypatch):
    """The race a releasing writer opens: B opens the lock file, A unlinks it and unlocks, B's flock
    succeeds on a file no path names. B must notice and lock the file at the path, or two writers run."""
    from traj.store import lock as lock_module

    real = lock_module.WriterLock._open_locked
    calls = []

    def open_then_lose_the_race(self):
        fd = real(self)
        calls.append(fd)
        if len(calls) == 1:
            os.unlink(self.path)  # the previous holder's release, between B's flock and its check
        return fd

    monkeypatch.setattr(lock_module.WriterLock, "_open_locked", open_then_lose_the_race)
    first = lock_module.WriterLock(tmp_path)
    first.acquire()
    monkeypatch.undo()
    assert len(calls) == 2 and first.held
    with pytest.raises(StoreLockedError, match="another recorder"):
        lock_module.WriterLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / ".traj-writer.lock").exists()
    second = lock_module.WriterLock(tmp_path)
    second.acquire()  # free again
    second.release()


def test_reader_sees_only_committed_rows(tmp_path, rng):
    data = rng.standard_normal((9, 40)).astype(np.float32)
    path = tmp_path / "s.zarr"
    writer = StoreWriter(path, Layout.from_shapes([("w", (40,))]))
    for k in range(5):
        writer.append(data[k], step=k)
    writer.commit()
    for k in range(5, 9):
        writer.append(data[k], step=k)  # buffered, not committed
    store = RunStore(path)
    assert store.n_snapshots == 5 and store.capacity == 5 and not store.closed_cleanly
    np.testing.assert_array_equal(store.read(), data[:5])
    import zarr

    group = zarr.open_group(path, mode="r")  # a plain reader sees exactly the committed rows
    assert group["params"].shape == (5, 40) and list(group["step"][:]) == [0, 1, 2, 3, 4]
    writer.close()
    assert RunStore(path).n_snapshots == 9


def test_torn_commit_is_not_mistaken_for_committed(tmp_path, rng):
    """A commit killed after ``params`` grew and before ``step`` did: the rows are not committed,
    and resuming trims ``params`` back before appending."""
    import json

    import zarr

    data = rng.standard_normal((7, 8)).astype(np.float32)
    path = tmp_path / "s.zarr"
    layout = Layout.from_shapes([("w", (8,))])
    writer = StoreWriter(path, layout, stack_bytes=1)
    for k in range(4):
        writer.append(data[k], step=k)
    writer.commit()
    writer._series["step"].put(4, [4, 5])  # the torn commit: data of rows 4-5 on disk ...
    writer._files["params"].write((4, 0), data[4:5])
    writer._files["params"].write((5, 0), data[5:6])
    writer._meta["params"].set_rows(6)  # ... and params' shape grown, but not step's
    writer._lock.release()  # the writer dies here
    assert zarr.open_group(path, mode="r")["params"].shape == (6, 8)
    assert RunStore(path).n_snapshots == 4
    with StoreWriter(path, layout) as resumed:
        assert json.loads((path / "params" / "zarr.json").read_text())["shape"] == [4, 8]  # trimmed first
        resumed.append(data[6], step=6)
    store = RunStore(path)
    np.testing.assert_array_equal(store.steps, [0, 1, 2, 3, 6])
    np.testing.assert_array_equal(store.read(), data[[0, 1, 2, 3, 6]])
    assert not (path / "params" / "c" / "5").exists()  # the torn row's shard went at close


def test_version_1_torn_commit_is_not_mistaken_for_committed(tmp_path, rng):
    """Version 1: rows past the committed prefix whose step got written (a torn commit) are never committed."""
    import zarr

    data = rng.standard_normal((6, 8)).astype(np.float32)
    path = tmp_path / "s.zarr"
    layout = Layout.from_shapes([("w", (8,))])
    writer = StoreWriter(path, layout, format_version=1)
    for k in range(4):
        writer.append(data[k], step=k)
    writer.commit()
    writer._lock.release()  # simulate the writer dying here
    group = zarr.open_group(path, mode="r+")
    group["step"].resize((64,))  # version 1 preallocated rows ...
    group["step"][5] = 99  # ... and a stray step past a gap at row 4
    group["params"].resize((64, 8))
    assert RunStore(path).n_snapshots == 4
    with StoreWriter(path, layout) as resumed:
        assert zarr.open_group(path, mode="r")["step"].shape == (4,)  # trimmed to the committed rows
        resumed.append(data[4], step=4)
    store = RunStore(path)
    assert store.n_snapshots == 5
    np.testing.assert_array_equal(store.read(), data[:5])


def test_nonfinite_rows(tmp_path, rng):
    data = rng.standard_normal((8, 50)).astype(np.float32)
    data[3, 10] = np.nan
    data[6, 0] = np.inf
    store = RunStore(write_store(tmp_path / "s.zarr", data))
    np.testing.assert_array_equal(store.nonfinite_rows(), [3, 6])
    np.testing.assert_array_equal(store.nonfinite_rows(rows=slice(4, 8)), [6])


def test_open_errors(tmp_path):
    with pytest.raises(StoreNotFoundError, match="no such file"):
        RunStore(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreNotFoundError, match="not a run store"):
        RunStore(tmp_path / "plain")
    import zarr

    zarr.open_group(tmp_path / "other.zarr", mode="w").attrs["hello"] = 1
    with pytest.raises(StoreFormatError, match="not a traj run store"):
        RunStore(tmp_path / "other.zarr")
    g = zarr.open_group(tmp_path / "future.zarr", mode="w")
    g.attrs["traj"] = {"format": "traj-run", "version": 99}
    with pytest.raises(StoreFormatError, match="version 99"):
        RunStore(tmp_path / "future.zarr")


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_readable_without_traj(tmp_path, rng, layout):
    import dask.array as da
    import xarray as xr
    import zarr

    data = rng.standard_normal((7, 777)).astype(np.float32)
    path = write_store(tmp_path / "s.zarr", data, loss=0.5, **LAYOUTS[layout])
    group = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(group["params"][:], data)
    np.testing.assert_array_equal(group["params"][2:5, 250:600], data[2:5, 250:600])  # partial shard reads
    np.testing.assert_array_equal(da.from_zarr(str(path / "params")).compute(), data)
    assert group.attrs["n_snapshots"] == 7
    ds = xr.open_zarr(path, consolidated=False)
    assert dict(ds.sizes) == {"snapshot": 7, "param": 777}
    np.testing.assert_array_equal(ds["params"].values, data)
    np.testing.assert_array_equal(ds["step"].values, np.arange(7))


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("compressor", ["lz4", "zstd"])
def test_direct_chunk_files_are_byte_identical_to_zarr(tmp_path, rng, compressor, layout):
    """The writer encodes chunks and shards itself; zarr writing the same data must produce the same files."""
    import zarr

    data = rng.standard_normal((9, 777)).astype(np.float32)
    layout_of = Layout.from_shapes([("w", (777,))])
    with StoreWriter(tmp_path / "s.zarr", layout_of, compressor=compressor, **LAYOUTS[layout]) as writer:
        for k, row in enumerate(data):
            writer.append(row, step=k)
            if k % 4 == 3:
                writer.commit()
    ours = zarr.open_group(tmp_path / "s.zarr", mode="r")["params"]
    twin = zarr.create_array(
        tmp_path / "twin", shape=ours.shape, chunks=ours.chunks, shards=ours.shards, dtype=ours.dtype,
        fill_value=np.nan, compressors=ours.compressors, chunk_key_encoding={"name": "default", "separator": "/"},
    )
    twin[:] = data
    files = sorted(p.relative_to(tmp_path / "s.zarr" / "params") for p in (tmp_path / "s.zarr" / "params" / "c").rglob("*") if p.is_file())
    assert len(files) == {"row-shards": 9 * 2, "stacked": 2, "v1": 9 * 3}[layout]
    for rel in files:
        assert (tmp_path / "s.zarr" / "params" / rel).read_bytes() == (tmp_path / "twin" / rel).read_bytes(), rel


@pytest.mark.parametrize("reopen", [False, True])
def test_discard_after_drops_the_abandoned_continuation(tmp_path, rng, reopen):
    """A run resumed from its checkpoint at step 50 forgets the snapshots taken after it, then appends."""
    data = rng.standard_normal((14, 130)).astype(np.float32)
    grads = rng.standard_normal((14, 130)).astype(np.float32)
    path = tmp_path / "s.zarr"
    layout = Layout.from_shapes([("w", (130,))])
    writer = StoreWriter(path, layout, stack_bytes=130 * 4 * 4)  # 4 rows per shard: row 6 sits inside one
    for k in range(10):
        writer.append(data[k], step=10 * k, loss=float(k), grads=grads[k])
    writer.commit()
    if reopen:
        writer.close()
        writer = StoreWriter(path, layout)
    assert writer.discard_after(55) == 4
    assert writer.n_snapshots == 6 and writer.last_step == 50
    assert RunStore(path).n_snapshots == 6  # on disk at once, before any new commit
    assert writer.discard_after(55) == 0
    for k in range(10, 14):
        writer.append(data[k], step=10 * k - 40, loss=float(k), grads=grads[k])
    writer.close()
    store = RunStore(path)
    kept = np.r_[0:6, 10:14]
    np.testing.assert_array_equal(store.steps, [0, 10, 20, 30, 40, 50, 60, 70, 80, 90])
    np.testing.assert_array_equal(store.read(), data[kept])
    np.testing.assert_array_equal(store.read(array="grads"), grads[kept])
    np.testing.assert_array_equal(store.loss, kept.astype(float))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_zarr_array_for_dask_is_one_task_per_shard(tmp_path, rng, layout):
    """`RunStore.zarr_array` hands dask the shards as chunks (not the 16 KiB inner chunks) and reads them exactly."""
    import dask.array as da

    data = rng.standard_normal((10, 777)).astype(np.float32)
    store = RunStore(write_store(tmp_path / "s.zarr", data, **LAYOUTS[layout]))
    array = store.zarr_array("params")
    lazy = da.from_zarr(array)
    if layout == "v1":
        assert array.chunks == (1, 259)
    else:
        assert array.chunks == array.shards
        assert lazy.npartitions == -(-10 // array.shards[0]) * -(-777 // array.shards[1])
    np.testing.assert_array_equal(lazy.compute(), data)
    np.testing.assert_array_equal(array[3, 100:700], data[3, 100:700])  # an integer row squeezes like zarr's
    np.testing.assert_array_equal(array[-1], data[-1])
    np.testing.assert_array_equal(array[2:9:3, :5], data[2:9:3, :5])  # a stepped slice is zarr's own read


def test_written_data_is_invisible_until_commit_and_a_crash_keeps_the_prefix(tmp_path):
    import zarr

    path = tmp_path / "w.zarr"
    layout = Layout.from_shapes([("w", (300_000,))])  # 1.2 MB rows: shards one row tall
    writer = StoreWriter(path, layout)
    writer.append(np.full(300_000, 0.0, np.float32), step=0)
    writer.commit()
    for k in (1, 2):
        writer.append(np.full(300_000, float(k), np.float32), step=k)
        writer.write_data()
    assert (path / "params" / "c" / "2").is_dir()  # the data is on disk
    assert zarr.open_group(path, mode="r")["params"].shape == (1, 300_000)  # and no reader sees it
    assert writer.n_pending == 2 and RunStore(path).n_snapshots == 1
    writer._lock.release()  # a crash here: the lock dies with the process, nothing else happens
    resumed = StoreWriter(path, layout)
    assert resumed.n_snapshots == 1
    resumed.append(np.full(300_000, 5.0, np.float32), step=5)
    resumed.write_data()
    assert resumed.commit() == 2
    resumed.close()
    store = RunStore(path)
    np.testing.assert_array_equal(store.steps, [0, 5])
    assert (store.read(rows=slice(1, 2)) == 5.0).all()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_drops_its_copy_of_a_held_writer_lock(tmp_path):
    import warnings

    from traj.store.lock import WriterLock, is_locked

    lock = WriterLock(tmp_path)
    lock.acquire()
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a process with threads
        pid = os.fork()
    if pid == 0:  # the child (a dask worker, say) must not keep the parent's lock alive
        os.write(write, b"closed" if lock._fd is None else b"kept")
        os._exit(0)
    os.waitpid(pid, 0)
    os.close(write)
    assert os.read(read, 16) == b"closed"
    os.close(read)
    assert lock.held and is_locked(tmp_path)  # the parent's lock is untouched
    lock.release()
    assert not is_locked(tmp_path)
