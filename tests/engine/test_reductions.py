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


def test_dask_distributed_cluster_agrees(store):
    """A real dask.distributed LocalCluster with 2 worker processes (the contract runs the local schedulers)."""
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
    with pytest.raises(TrajError, match="unknown dask scheduler"):
        Engine(backend="dask", scheduler="moon")


def test_a_cuda_device_torch_cannot_see_is_refused(monkeypatch):
    """On any machine, GPU or not: torch is told what it sees, and the engine is asked for more."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrajError, match="sees no CUDA device"):
        Engine(backend="torch", device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(TrajError, match=r"sees 1 CUDA device\(s\) \(cuda:0..cuda:0\)"):
        Engine(backend="torch", device="cuda:1")


def test_operator_needs_three_snapshots():
    with pytest.raises(TrajError, match="at least 3"):
        ReducedOperator.from_gram(np.eye(2), n_features=10)
