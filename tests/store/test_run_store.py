import numpy as np
import pytest

from tests.conftest import write_store
from traj.errors import LayoutMismatchError, RecorderError, StoreFormatError, StoreLockedError, StoreNotFoundError
from traj.store import Layout, RunStore, StoreWriter
from traj.store.schema import UNCOMMITTED_STEP


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


def test_chunk_boundaries_not_multiples(tmp_path, rng):
    # a chunk budget of 1200 bytes with N = 777 float32: rows split in 3 chunks of 259, T not a multiple
    data = rng.standard_normal((17, 777)).astype(np.float32)
    store = RunStore(write_store(tmp_path / "s.zarr", data, chunk_bytes=1200))
    assert store.chunks == (1, 259)
    np.testing.assert_array_equal(store.read(), data)
    # tall chunks: 7 rows of 50 params per chunk, T = 17 is not a multiple of 7
    data = rng.standard_normal((17, 50)).astype(np.float32)
    store = RunStore(write_store(tmp_path / "t.zarr", data, chunk_bytes=1400))
    assert store.chunks == (7, 50)
    np.testing.assert_array_equal(store.read(), data)


@pytest.mark.parametrize("read_bytes", [1, 1 << 20])  # unaligned reads / whole chunk columns as views
@pytest.mark.parametrize("width", [37, 100, 259, 300, 1000])
def test_blocks_equal_the_full_array(tmp_path, rng, width, read_bytes):
    data = rng.standard_normal((11, 777)).astype(np.float32)
    store = RunStore(write_store(tmp_path / "s.zarr", data, chunk_bytes=1200))
    pieces = list(store.iter_blocks(block_columns=width, read_bytes=read_bytes))
    assert pieces[0][0].start == 0 and pieces[-1][0].stop == 777
    assert all(a[0].stop == b[0].start for a, b in zip(pieces, pieces[1:], strict=False))
    np.testing.assert_array_equal(np.concatenate([b for _, b in pieces], axis=1), data)
    # a window of rows and a column range (a layer starting mid-chunk)
    got = np.concatenate([b for _, b in store.iter_blocks(rows=slice(2, 9), columns=slice(100, 650), block_columns=width,
                                                          read_bytes=read_bytes)], axis=1)
    np.testing.assert_array_equal(got, data[2:9, 100:650])


def test_default_block_width_is_chunk_aligned_and_bounded(tmp_path, rng):
    data = rng.standard_normal((5, 777)).astype(np.float32)
    store = RunStore(write_store(tmp_path / "s.zarr", data, chunk_bytes=1200))
    assert store.block_columns(5, block_bytes=5 * 8 * 600) == 518  # two whole chunks of 259
    assert store.block_columns(5, block_bytes=5 * 8 * 100) == 100  # narrower than a chunk


def test_read_selected_columns(tmp_path, rng):
    data = rng.standard_normal((6, 300)).astype(np.float64)
    store = RunStore(write_store(tmp_path / "s.zarr", data))
    idx = np.array([0, 17, 299, 150])
    np.testing.assert_array_equal(store.read(columns=idx), data[:, idx])
    np.testing.assert_array_equal(store.snapshot(-1), data[-1])


def test_resume_appends(tmp_path, rng):
    data = rng.standard_normal((20, 130)).astype(np.float32)
    path = tmp_path / "s.zarr"
    layout = Layout.from_shapes([("w", (130,))])
    with StoreWriter(path, layout, chunk_bytes=130 * 4 * 8) as writer:  # t_chunk = 8
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
    assert store.n_snapshots == 5 and store.capacity > 5 and not store.closed_cleanly
    np.testing.assert_array_equal(store.read(), data[:5])
    writer.close()
    assert RunStore(path).n_snapshots == 9


def test_torn_commit_is_not_mistaken_for_committed(tmp_path, rng):
    """Rows past the committed prefix whose step got written (a torn commit) are reset on resume."""
    import zarr

    data = rng.standard_normal((6, 8)).astype(np.float32)
    path = tmp_path / "s.zarr"
    layout = Layout.from_shapes([("w", (8,))])
    writer = StoreWriter(path, layout)
    for k in range(4):
        writer.append(data[k], step=k)
    writer.commit()
    writer._lock.release()  # simulate the writer dying here
    group = zarr.open_group(path, mode="r+")
    group["step"][5] = 99  # a stray step past a gap at row 4
    assert RunStore(path).n_snapshots == 4
    with StoreWriter(path, layout) as resumed:
        assert int(group["step"][5]) == UNCOMMITTED_STEP
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


def test_readable_without_traj(tmp_path, rng):
    import dask.array as da
    import zarr

    data = rng.standard_normal((7, 64)).astype(np.float32)
    path = write_store(tmp_path / "s.zarr", data)
    group = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(group["params"][:], data)
    np.testing.assert_array_equal(da.from_zarr(str(path / "params")).compute(), data)
    assert group.attrs["n_snapshots"] == 7


@pytest.mark.parametrize("compressor", ["lz4", "zstd"])
def test_direct_chunk_files_are_byte_identical_to_zarr(tmp_path, rng, compressor):
    """The writer encodes chunks itself; zarr writing the same data must produce the same files."""
    import zarr

    data = rng.standard_normal((5, 777)).astype(np.float32)
    layout = Layout.from_shapes([("w", (777,))])
    with StoreWriter(tmp_path / "s.zarr", layout, chunk_bytes=1200, compressor=compressor) as writer:
        for k, row in enumerate(data):
            writer.append(row, step=k)
    ours = zarr.open_group(tmp_path / "s.zarr", mode="r")["params"]
    twin = zarr.create_array(
        tmp_path / "twin", shape=ours.shape, chunks=ours.chunks, dtype=ours.dtype, fill_value=np.nan,
        compressors=ours.compressors, chunk_key_encoding={"name": "default", "separator": "/"},
    )
    twin[:] = data
    files = sorted(p.relative_to(tmp_path / "s.zarr" / "params") for p in (tmp_path / "s.zarr" / "params" / "c").rglob("*") if p.is_file())
    assert len(files) == 5 * 3
    for rel in files:
        assert (tmp_path / "s.zarr" / "params" / rel).read_bytes() == (tmp_path / "twin" / rel).read_bytes(), rel


@pytest.mark.parametrize("reopen", [False, True])
def test_discard_after_drops_the_abandoned_continuation(tmp_path, rng, reopen):
    """A run resumed from its checkpoint at step 50 forgets the snapshots taken after it, then appends."""
    data = rng.standard_normal((14, 130)).astype(np.float32)
    grads = rng.standard_normal((14, 130)).astype(np.float32)
    path = tmp_path / "s.zarr"
    layout = Layout.from_shapes([("w", (130,))])
    writer = StoreWriter(path, layout, chunk_bytes=130 * 4 * 4)  # t_chunk = 4: row 6 sits inside a chunk
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
