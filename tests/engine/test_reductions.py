import numpy as np
import pytest

from tests.conftest import write_store
from traj.engine import Engine, ReducedOperator
from traj.errors import TrajError
from traj.store import Layout, RunStore


@pytest.fixture
def store(tmp_path, rng):
    layout = Layout.from_shapes([("a", (300,)), ("b", (40, 10)), ("c", (77,))])
    data = rng.standard_normal((13, 777)).astype(np.float32)
    return RunStore(write_store(tmp_path / "s.zarr", data, layout=layout, chunk_bytes=1200)), data.astype(np.float64)


def test_window_and_layer_grams_equal_direct(store):
    s, data = store
    engine = Engine(block_bytes=13 * 8 * 100)  # blocks narrower than a chunk and cutting layers
    groups = {"all": [slice(0, 777)], "b": [s.layout["b"].columns], "a+c": [s.layout["a"].columns, s.layout["c"].columns]}
    grams = engine.gram(s, rows=slice(2, 11), groups=groups)
    w = data[2:11]
    np.testing.assert_allclose(grams["all"], w @ w.T, rtol=1e-12)
    b = w[:, 300:700]
    np.testing.assert_allclose(grams["b"], b @ b.T, rtol=1e-12)
    ac = np.concatenate([w[:, :300], w[:, 700:]], axis=1)
    np.testing.assert_allclose(grams["a+c"], ac @ ac.T, rtol=1e-12)
    # a window's Gram is a sub-block of the full Gram
    full = engine.gram(s)["all"]
    np.testing.assert_allclose(full[2:11, 2:11], grams["all"], rtol=1e-12)


def test_projection_equals_direct(store, rng):
    s, data = store
    c = rng.standard_normal((13, 4)) + 1j * rng.standard_normal((13, 4))
    for engine in (Engine(block_bytes=13 * 8 * 100), Engine(backend="torch"), Engine(backend="dask")):
        np.testing.assert_allclose(engine.project(s, c), data.T @ c, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(engine.project(s, c.real, columns=slice(250, 500)), data[:, 250:500].T @ c.real, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["torch", "dask"])
def test_backends_agree_with_numpy(store, backend):
    s, _ = store
    groups = {"all": [slice(0, 777)], "b": [s.layout["b"].columns]}
    reference = Engine().gram(s, rows=slice(1, 12), groups=groups)
    other = Engine(backend=backend, scheduler="processes" if backend == "dask" else "threads").gram(s, rows=slice(1, 12), groups=groups)
    for name in groups:
        np.testing.assert_allclose(other[name], reference[name], rtol=1e-10, atol=0)


def test_dask_distributed_cluster_agrees(store):
    """A real dask.distributed LocalCluster with 2 worker processes."""
    from distributed import LocalCluster

    s, data = store
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        gram = Engine(backend="dask", scheduler=cluster.scheduler_address).gram(s)["all"]
    np.testing.assert_allclose(gram, data @ data.T, rtol=1e-10)


def test_bounded_memory_on_a_store_larger_than_the_block_budget(tmp_path, rng):
    import tracemalloc

    t, n = 24, 250_000  # 24 MB of float32 on disk, 48 MB as float64
    layout = Layout.from_shapes([("w", (n,))])
    from traj.store import StoreWriter

    with StoreWriter(tmp_path / "big.zarr", layout) as writer:  # one-row shards of 16 KiB inner chunks
        for k in range(t):
            writer.append(rng.standard_normal(n).astype(np.float32), step=k)
    s = RunStore(tmp_path / "big.zarr")
    engine = Engine(block_bytes=1 << 20)
    tracemalloc.start()
    gram = engine.gram(s)["all"]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB for a 48 MiB float64 pass"
    assert gram.shape == (t, t) and np.allclose(np.diag(gram), n, rtol=0.02)


def test_engine_errors(store):
    s, _ = store
    with pytest.raises(TrajError, match="unknown backend"):
        Engine(backend="jax")
    with pytest.raises(TrajError, match="CUDA"):
        import torch

        if torch.cuda.is_available():  # pragma: no cover - only on a GPU machine
            raise TrajError("CUDA present")
        Engine(backend="torch", device="cuda")
    with pytest.raises(TrajError, match="unknown dask scheduler"):
        Engine(backend="dask", scheduler="moon").gram(s)


def test_operator_needs_three_snapshots():
    with pytest.raises(TrajError, match="at least 3"):
        ReducedOperator.from_gram(np.eye(2), n_features=10)
