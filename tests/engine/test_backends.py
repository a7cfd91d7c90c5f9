"""One contract for every backend (zarr-python's ``StoreTests`` pattern): each engine operation
against numpy on the same data in memory, to 1e-10. A new backend subclasses EngineContract."""

import os

import numpy as np
import pytest

from traj.engine import Engine
from traj.store import Layout, RunStore, StoreWriter

T, N = 13, 777
TOL = {"rtol": 1e-10, "atol": 1e-10}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A store of three layers (chunks narrower than the engine's blocks cut layers) with gradients
    holding a NaN (snapshot 4) and an Inf (snapshot 9)."""
    rng = np.random.default_rng(7)
    theta = rng.standard_normal((T, N)).astype(np.float32)
    grads = rng.standard_normal((T, N)).astype(np.float32)
    grads[4, 500] = np.nan
    grads[9, 10] = np.inf
    layout = Layout.from_shapes([("a", (300,)), ("b", (40, 10)), ("c", (77,))])
    path = tmp_path_factory.mktemp("contract") / "s.zarr"
    with StoreWriter(path, layout, chunk_bytes=1200) as writer:
        for k in range(T):
            writer.append(theta[k], step=k, grads=grads[k])
            if k % 4 == 3:
                writer.commit()
    return RunStore(path), theta.astype(np.float64), grads.astype(np.float64)


class EngineContract:
    options: dict = {}

    @pytest.fixture
    def engine(self):
        return Engine(block_bytes=T * 8 * 100, **self.options)  # 100-column blocks over 300-column chunks

    def test_gram_of_groups(self, engine, data):
        store, theta, _ = data
        groups = {"all": [slice(0, N)], "b": [store.layout["b"].columns],
                  "a+c": [store.layout["a"].columns, store.layout["c"].columns]}
        grams = engine.gram(store, rows=slice(2, 11), groups=groups)
        w = theta[2:11]
        np.testing.assert_allclose(grams["all"], w @ w.T, **TOL)
        np.testing.assert_allclose(grams["b"], w[:, 300:700] @ w[:, 300:700].T, **TOL)
        ac = np.concatenate([w[:, :300], w[:, 700:]], axis=1)
        np.testing.assert_allclose(grams["a+c"], ac @ ac.T, **TOL)
        assert np.array_equal(grams["all"], grams["all"].T)

    def test_gram_times_never_forms_the_gram(self, engine, data, rng):
        store, theta, _ = data
        m_real = rng.standard_normal((8, 3))
        m_complex = rng.standard_normal((9, 2)) + 1j * rng.standard_normal((9, 2))
        cols = [slice(0, 120), slice(650, 777)]
        out, trace = engine.gram_times(store, {"x": (slice(0, 9), slice(1, 9), m_real),
                                               "z": (slice(1, 10), slice(0, 9), m_complex)},
                                       rows=slice(1, 11), columns=cols)
        w = np.concatenate([theta[1:11, s] for s in cols], axis=1)
        g = w @ w.T
        np.testing.assert_allclose(out["x"], g[0:9, 1:9] @ m_real, **TOL)
        np.testing.assert_allclose(out["z"], g[1:10, 0:9] @ m_complex, **TOL)
        assert trace == pytest.approx(np.trace(g), rel=1e-12)

    def test_collect_indices_slices_and_everything(self, engine, data):
        store, theta, grads = data
        idx = np.array([776, 3, 3, 410, 299, 300, 0])
        np.testing.assert_array_equal(engine.collect(store, idx, rows=slice(1, 12)), theta[1:12][:, idx])
        np.testing.assert_array_equal(engine.collect(store, slice(250, 720)), theta[:, 250:720])
        np.testing.assert_array_equal(engine.collect(store, None, rows=slice(5, 6)), theta[5:6])
        assert engine.collect(store, np.array([], dtype=int)).shape == (T, 0)
        np.testing.assert_array_equal(engine.collect(store, np.array([10, 500]), array="grads"), grads[:, [10, 500]])
        np.testing.assert_array_equal(engine.snapshot(store, -1), theta[-1])
        many = np.random.default_rng(3).integers(0, N, 1500)  # more than a block's worth: streamed, repeats kept
        np.testing.assert_array_equal(engine.collect(store, many, rows=slice(1, 12)), theta[1:12][:, many])
        np.testing.assert_array_equal(engine.snapshot(store, 2, array="grads"), grads[2])

    def test_map_blocks_covers_every_column_once_in_order(self, engine, data):
        store, _, grads = data
        keep = np.array([0, 3, 8, 11])  # snapshots 1, 4 (a NaN), 9 (an Inf), 12

        def kernel(block, ops):  # the finite mean over the kept snapshots, per column: every op of ArrayOps
            b = ops.take(block, keep, 0)
            finite = ops.isfinite(b)
            total = ops.sum(ops.where(finite, b, 0.0), 0)
            count = ops.sum(ops.where(finite, ops.asarray(np.ones(b.shape)), 0.0), 0)
            return ops.to_numpy(total / count), ops.to_numpy(ops.mean(b, 0)), ops.to_numpy(ops.all(finite, 0))

        parts = list(engine.map_blocks(store, kernel, rows=slice(1, 13), array="grads"))
        assert parts[0][0].start == 0 and parts[-1][0].stop == N
        assert all(a[0].stop == b[0].start for a, b in zip(parts, parts[1:], strict=False))
        finite_mean = np.concatenate([p[1][0] for p in parts])
        kept = grads[1:13][keep]
        expected = np.nanmean(np.where(np.isfinite(kept), kept, np.nan), axis=0)
        np.testing.assert_allclose(finite_mean, expected, **TOL)
        np.testing.assert_allclose(np.concatenate([p[1][1] for p in parts]), kept.mean(axis=0), **TOL)
        np.testing.assert_array_equal(np.flatnonzero(~np.concatenate([p[1][2] for p in parts])), [10, 500])

    def test_projections(self, engine, data, rng):
        store, theta, _ = data
        c = rng.standard_normal((T, 4)) + 1j * rng.standard_normal((T, 4))
        np.testing.assert_allclose(engine.project(store, c), theta.T @ c, **TOL)
        np.testing.assert_allclose(engine.project(store, c.real, columns=slice(250, 500)), theta[:, 250:500].T @ c.real,
                                   **TOL)
        window = rng.standard_normal((6, 2))
        blocks = list(engine.project_blocks(store, window, rows=slice(3, 9), columns=slice(100, 700)))
        assert blocks[0][0].start == 100 and blocks[-1][0].stop == 700
        stacked = np.concatenate([part for _, part in blocks])
        np.testing.assert_allclose(stacked, theta[3:9, 100:700].T @ window, **TOL)

    def test_row_norms_and_nonfinite_rows(self, engine, data):
        store, theta, grads = data
        layers = {e.name: [e.columns] for e in store.layout.entries}
        norms = engine.row_norms(store, groups=layers)
        assert norms.names == ("a", "b", "c") and norms.finite.all()
        expected = np.stack([np.linalg.norm(theta[:, e.columns], axis=1) for e in store.layout.entries], axis=1)
        np.testing.assert_allclose(norms.norms, expected, **TOL)
        bad = engine.row_norms(store, rows=slice(2, 13), array="grads")
        np.testing.assert_array_equal(bad.nonfinite_rows, [4, 9])
        np.testing.assert_array_equal(engine.nonfinite_rows(store, array="grads"), [4, 9])
        np.testing.assert_array_equal(engine.nonfinite_rows(store), [])


class TestNumpy(EngineContract):
    options = {}


class TestTorch(EngineContract):
    options = {"backend": "torch"}


class TestDaskThreads(EngineContract):
    options = {"backend": "dask", "scheduler": "threads"}


class TestDaskSync(EngineContract):
    options = {"backend": "dask", "scheduler": "sync"}


class TestDaskProcesses(EngineContract):  # one process pool kept between graphs: ~4 s (was ~90 s, a pool per compute)
    options = {"backend": "dask", "scheduler": "processes"}


@pytest.mark.parametrize(("whole", "n_bands"), [(slice(0, 777), 4), (slice(250, 777), 2), (slice(5, 290), 8),
                                                (slice(0, 777), 1)])
def test_dask_bands_cover_the_columns_in_equal_whole_chunks(data, whole, n_bands):
    from traj.engine.backends.dask import DaskBackend

    store = data[0]
    w = store.chunks[1]
    bands = list(DaskBackend.bands(store, whole, n_bands))
    assert bands[0].start == whole.start and bands[-1].stop == whole.stop
    assert all(a.stop == b.start for a, b in zip(bands[:-1], bands[1:], strict=True))
    assert all(b.start % w == 0 for b in bands[1:])  # every band but the first starts on a chunk
    n_chunks = -(-(whole.stop - whole.start + whole.start % w) // w)
    assert len(bands) == min(n_bands, n_chunks)
    widths = [-(-(b.stop - (b.start - b.start % w)) // w) for b in bands]  # chunks each band touches
    assert max(widths) - min(widths) <= 1


def _pid_after(seconds: float) -> int:
    import os
    import time

    time.sleep(seconds)
    return os.getpid()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores for two worker processes")
def test_dask_processes_runs_ready_tasks_in_parallel_workers():
    # dask's processes scheduler batches up to 6 ready tasks into one submission by default, which ran
    # a Gram's 4 band tasks one after another in one worker; the backend dispatches one task at a time
    import dask

    from traj.engine.backends.dask import DaskBackend

    backend = DaskBackend(1 << 20, "processes")
    pids = backend.compute(*[dask.delayed(_pid_after)(0.3) for _ in range(4)])
    assert len(set(pids)) >= 2, pids


def test_collect_of_a_few_columns_reads_only_their_chunks(data, monkeypatch):
    # streaming every block between the first and last wanted column read the whole store for a few samples
    from traj.store import shards

    store, theta, _ = data
    decoded = []
    chunks = shards.ShardReader._chunks

    def counted(self, rows, wanted):
        for item in chunks(self, rows, wanted):
            decoded.append(item[0])
            yield item

    monkeypatch.setattr(shards.ShardReader, "_chunks", counted)
    idx = np.array([776, 3, 410])
    np.testing.assert_array_equal(Engine(block_bytes=1 << 20).collect(store, idx), theta[:, idx])
    w = store.chunks[1]
    assert store.shards is not None and sorted(set(decoded)) == sorted({int(i) // w for i in idx})
    per_chunk = {g: decoded.count(g) for g in set(decoded)}
    assert len(set(per_chunk.values())) == 1 and next(iter(per_chunk.values())) <= T  # once per row group
