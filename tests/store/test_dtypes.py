"""Snapshots in the model's own dtype (issue 23): bfloat16 and float16 stored in 2 bytes per value,
read back as float32 exactly, and every analysis equal to the same weights stored as float32."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from traj import Recorder
from traj.analysis.cmd import cmd
from traj.analysis.dmd import dmd
from traj.cli.app import app
from traj.engine import Engine
from traj.store import Layout, RunStore, StoreWriter
from traj.store.dtypes import decode, default_dtype, encode, lossy_from

runner = CliRunner()


def _hard_values(rng):
    """float32 values that exercise bfloat16 rounding: ties, near-ties, subnormals, ±0, ±inf, huge, NaN."""
    bits = rng.integers(0, 2**32, size=20_000, dtype=np.uint64).astype(np.uint32)
    ties = (rng.integers(0, 2**16, size=2000, dtype=np.uint32) << 16) | np.uint32(0x8000)  # exactly halfway
    special = np.array([0.0, -0.0, np.inf, -np.inf, 3.3e38, -3.39e38, 1e-40, -1e-45, 1.0, 1.00390625],
                       dtype=np.float32)
    values = np.concatenate([bits.view(np.float32), ties.view(np.float32), special])
    return values[~np.isnan(values)]


def test_bfloat16_rounding_equals_torch(rng):
    values = _hard_values(rng)
    ours = encode(values, "bfloat16")
    theirs = torch.from_numpy(values.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)
    back = decode(ours, "bfloat16")
    np.testing.assert_array_equal(back, torch.from_numpy(values.copy()).to(torch.bfloat16).float().numpy())
    assert decode(encode(np.array([np.nan], dtype=np.float32), "bfloat16"), "bfloat16")[0] != 0  # NaN stays NaN
    assert np.isnan(decode(encode(np.array([np.nan]), "bfloat16"), "bfloat16")).all()
    np.testing.assert_array_equal(encode(back, "bfloat16"), ours)  # bfloat16 -> float32 -> bfloat16 is exact


def test_default_dtype_and_lossy():
    assert default_dtype([torch.bfloat16, torch.bfloat16]) == "bfloat16"
    assert default_dtype([torch.bfloat16, torch.float32]) == "float32"  # holds both exactly
    assert default_dtype([torch.float16, torch.bfloat16]) == "float32"
    assert default_dtype([torch.float64, torch.bfloat16]) == "float64"
    assert lossy_from(["float32"], "bfloat16") == {"from": ["float32"], "to": "bfloat16"}
    assert lossy_from(["bfloat16"], "float16") == {"from": ["bfloat16"], "to": "float16"}  # float16 lacks its range
    assert lossy_from(["float16", "bfloat16"], "float32") is None


def _train(model, steps=14, seed=0, dtype=torch.bfloat16):
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        x = torch.randn(16, model[0].in_features, dtype=dtype)
        loss = model(x).float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        yield


@pytest.fixture(scope="module")
def twin_stores(tmp_path_factory):
    """One bfloat16 training run recorded twice: in its own dtype (the default) and as float32."""
    root = tmp_path_factory.mktemp("twins")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.Tanh(), torch.nn.Linear(48, 10)).to(torch.bfloat16)
    with Recorder(root / "bf16.zarr", model, grads=True) as native, \
            Recorder(root / "f32.zarr", model, dtype="float32", grads=True) as wide:
        for _ in _train(model):
            native.step()
            wide.step()
    return RunStore(root / "bf16.zarr"), RunStore(root / "f32.zarr")


def test_a_bfloat16_model_is_stored_in_two_bytes_and_read_back_exactly(twin_stores):
    native, wide = twin_stores
    assert native.stored_dtype == "bfloat16" and native.dtype == np.float32 and wide.stored_dtype == "float32"
    raw = zarr.open_group(zarr.storage.LocalStore(native.path), mode="r")
    assert raw["params"].dtype == np.uint16 and raw.attrs["dtype"] == "bfloat16" and "lossy" not in raw.attrs
    np.testing.assert_array_equal(native.read(), wide.read())
    np.testing.assert_array_equal(native.read(array="grads"), wide.read(array="grads"))
    np.testing.assert_array_equal(native.snapshot(-1), wide.snapshot(-1))
    blocks = {(c.start, c.stop): block for c, block in native.iter_blocks(block_columns=700)}
    for cols, block in wide.iter_blocks(block_columns=700):
        np.testing.assert_array_equal(blocks[cols.start, cols.stop], block)
    # what the README tells a plain zarr reader to do
    plain = (raw["params"][:].astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(plain, wide.read())


def test_analyses_of_a_bfloat16_store_equal_those_of_float32(twin_stores):
    native, wide = twin_stores
    a, b = dmd(native), dmd(wide)
    np.testing.assert_array_equal(a.eigenvalues, b.eigenvalues)
    assert a.rank == b.rank
    c, d = cmd(native, modes=3, samples=200), cmd(wide, modes=3, samples=200)
    np.testing.assert_array_equal(c.reference_indices, d.reference_indices)
    np.testing.assert_array_equal(c.mode_sizes, d.mode_sizes)
    assert c.mse == d.mse and c.relative_error == d.relative_error


def test_the_dask_cluster_reads_a_bfloat16_store_like_numpy(twin_stores):
    from distributed import LocalCluster

    native, wide = twin_stores
    expected = Engine().gram(wide)["all"]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        engine = Engine(backend="dask", scheduler=cluster.scheduler_address)
        gram = engine.gram(native)["all"]
    np.testing.assert_allclose(gram, expected, rtol=1e-12)
    np.testing.assert_array_equal(Engine(backend="dask", scheduler="threads").gram(native)["all"].shape, expected.shape)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_appending_to_a_two_byte_store_keeps_every_row(tmp_path, rng, dtype):
    """Small rows are stacked in shards: a resumed writer reloads the partly filled shard (encode of
    decode must give the same bits back)."""
    layout = Layout.from_shapes([("w", (50,))])
    data = rng.standard_normal((11, 50)).astype(np.float32)
    rounded = decode(encode(data, dtype), dtype)
    for part in (slice(0, 4), slice(4, 7), slice(7, 11)):
        with StoreWriter(tmp_path / "s.zarr", layout, dtype=dtype) as writer:
            for k in range(part.start, part.stop):
                writer.append(data[k], step=k)
    store = RunStore(tmp_path / "s.zarr")
    assert store.stored_dtype == dtype
    np.testing.assert_array_equal(store.read(), rounded)


def test_a_recorder_that_narrows_marks_the_store_lossy(tmp_path):
    model = torch.nn.Linear(8, 4)
    with Recorder(tmp_path / "r.zarr", model, dtype="bfloat16") as rec:
        rec.step()
    store = RunStore(tmp_path / "r.zarr")
    assert store.attrs["lossy"] == {"from": ["float32"], "to": "bfloat16"}
    result = runner.invoke(app, ["info", str(tmp_path / "r.zarr")])
    assert result.exit_code == 0 and "a lossy copy" in result.stdout and "float32" in result.stdout
    summary = json.loads(runner.invoke(app, ["info", str(tmp_path / "r.zarr"), "--json"]).stdout)
    assert summary["dtype"] == "bfloat16" and summary["lossy_from"] == ["float32"]


def test_convert_to_bfloat16_and_back(tmp_path, rng):
    from tests.conftest import write_store

    data = rng.standard_normal((9, 300)).astype(np.float32)
    path = write_store(tmp_path / "s.zarr", data)
    result = runner.invoke(app, ["convert", str(path), "--dtype", "bfloat16", "--out", str(tmp_path / "b.zarr"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dtype"] == "bfloat16"
    narrow = RunStore(tmp_path / "b.zarr")
    rounded = decode(encode(data, "bfloat16"), "bfloat16")
    np.testing.assert_array_equal(narrow.read(), rounded)
    assert narrow.attrs["lossy"]["from"] == ["float32"]
    assert narrow.nbytes_stored() < RunStore(path).nbytes_stored()
    back = runner.invoke(app, ["convert", str(tmp_path / "b.zarr"), "--dtype", "float32"])
    assert back.exit_code == 0, back.output
    wide = RunStore(tmp_path / "b.zarr")
    assert wide.stored_dtype == "float32" and wide.attrs["lossy"]["from"] == ["float32"]  # still a rounded copy
    np.testing.assert_array_equal(wide.read(), rounded)
    bad = runner.invoke(app, ["convert", str(path), "--dtype", "int8"])
    assert bad.exit_code == 2 and "--dtype must be one of" in bad.stderr


def test_bfloat16_safetensors_import_as_they_are(tmp_path, rng):
    from safetensors.torch import save_file

    ck = tmp_path / "ck"
    ck.mkdir()
    states = []
    for k in range(4):
        state = {"w": torch.from_numpy(rng.standard_normal((6, 5)).astype(np.float32)).to(torch.bfloat16),
                 "b": torch.from_numpy(rng.standard_normal(5).astype(np.float32)).to(torch.bfloat16)}
        save_file(state, ck / f"step_{k}.safetensors")
        states.append(state)
    result = runner.invoke(app, ["import", str(ck), "--out", str(tmp_path / "imp.zarr")])
    assert result.exit_code == 0, result.output
    store = RunStore(tmp_path / "imp.zarr")
    assert store.stored_dtype == "bfloat16" and "lossy" not in store.attrs
    for k, state in enumerate(states):
        for entry in store.layout.entries:
            np.testing.assert_array_equal(store.snapshot(k)[entry.columns], state[entry.name].float().numpy().ravel())
