"""--steps and --stride: a selection of snapshots resolved once, when a store is opened (RunStore.select)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import planted_linear_system, write_store
from traj.engine import Engine
from traj.errors import ParameterError
from traj.store import open_store
from traj.store.selection import SnapshotSelection, StepRange


@pytest.mark.parametrize("text, first, last, every", [
    ("10:50", 10, 50, None), (":50", None, 50, None), ("10:", 10, None, None), ("::100", None, None, 100),
    ("0:1000:100", 0, 1000, 100),
])
def test_step_range_parses(text, first, last, every):
    r = StepRange.parse(text)
    assert (r.first, r.last, r.every) == (first, last, every)
    assert StepRange.parse(str(r)) == r


@pytest.mark.parametrize("text, said", [
    ("10", "must look like a:b or a:b:s"), ("a:b", "with integers"), ("50:10", "last step 10 comes before the first 50"),
    ("0:10:0", "needs s >= 1"), ("-5:10", "at least 0"), ("1:2:3:4", "must look like"),
])
def test_bad_step_specs_say_what_is_wrong(text, said):
    with pytest.raises(ParameterError, match=said) as info:
        SnapshotSelection.checked(steps=text)
    assert info.value.parameter == "steps"


def test_bad_stride_is_refused():
    with pytest.raises(ParameterError, match="stride must be"):
        SnapshotSelection.checked(stride=0)


@pytest.mark.parametrize("format_version", [1, 2])
def test_selected_store_reads_the_selected_rows(tmp_path, rng, format_version):
    data = rng.standard_normal((40, 300))
    path = write_store(tmp_path / "s.zarr", data, steps=range(0, 400, 10), format_version=format_version,
                       chunk_bytes=2048, stack_bytes=4 * 300 * 8)
    base = open_store(path)
    view = open_store(path, steps="50:300", stride=3)
    picked = np.flatnonzero((base.steps >= 50) & (base.steps <= 300))[::3]
    assert view.n_snapshots == picked.size == 9
    np.testing.assert_array_equal(view.steps, base.steps[picked])
    np.testing.assert_array_equal(view.indices, picked)
    np.testing.assert_array_equal(view.epochs, base.epochs[picked])
    np.testing.assert_array_equal(view.read(), data[picked])
    np.testing.assert_array_equal(view.read(slice(2, 6), np.array([7, 3, 299])), data[picked[2:6]][:, [7, 3, 299]])
    np.testing.assert_array_equal(view.snapshot(-1), data[picked[-1]])
    blocks = list(view.iter_blocks(rows=slice(1, 8), block_columns=64))
    assert [c.start for c, _ in blocks] == sorted(c.start for c, _ in blocks)
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks], axis=1), data[picked[1:8]])
    assert view.spacing.get("every") is None or view.spacing["every"] == 30
    assert view.selected == "steps 50:300, stride 3"
    assert view.read(slice(4, 4)).shape == (0, 300)


def test_grid_of_steps_makes_two_spacings_comparable(tmp_path, rng):
    data = rng.standard_normal((101, 20))
    fine = open_store(write_store(tmp_path / "fine.zarr", data, steps=range(0, 1010, 10)), steps="::100")
    coarse = open_store(write_store(tmp_path / "coarse.zarr", data[::10], steps=range(0, 1100, 100)))
    np.testing.assert_array_equal(fine.steps, coarse.steps)
    np.testing.assert_array_equal(fine.read(), coarse.read())
    # a second selection refines the first
    both = fine.select(stride=2)
    np.testing.assert_array_equal(both.steps, np.arange(0, 1001, 200))
    assert both.selected == "steps ::100; then stride 2"


def test_selection_of_no_snapshot_names_the_steps_held(tmp_path, rng):
    path = write_store(tmp_path / "s.zarr", rng.standard_normal((5, 4)), steps=range(0, 50, 10))
    with pytest.raises(ParameterError, match=r"5000:6000 selects no snapshot of s.zarr, which holds steps 0..40"):
        open_store(path, steps="5000:6000")


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_engine_reads_through_the_selection(tmp_path, backend):
    # every backend computes on the selected snapshots exactly as on a store of only those
    data, _ = planted_linear_system(n_params=500, n_snapshots=30)
    path = write_store(tmp_path / "s.zarr", data, chunk_bytes=1024)
    view = open_store(path, steps="3:25", stride=2)
    picked = np.arange(3, 26, 2)
    engine = Engine(backend=backend, scheduler="sync", block_bytes=4096) if backend == "dask" else Engine()
    gram = engine.gram(view)["all"]
    np.testing.assert_allclose(gram, data[picked] @ data[picked].T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(engine.collect(view, np.array([4, 400]), rows=slice(1, 5)), data[picked[1:5]][:, [4, 400]])


def test_dmd_sees_only_the_selection(tmp_path):
    # θ recorded at every step of a planted linear map A; every 2nd snapshot follows A²: eigenvalues λ²
    from traj.analysis.dmd import dmd

    data, eigenvalues = planted_linear_system(n_params=400, n_snapshots=41)
    path = write_store(tmp_path / "s.zarr", data)
    result = dmd(open_store(path, stride=2), rank=6)
    assert result.window == (0, 20)
    from tests.conftest import match

    np.testing.assert_allclose(match(eigenvalues**2, result.eigenvalues), eigenvalues**2, atol=1e-6)
