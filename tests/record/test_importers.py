import numpy as np
import pytest
import torch

from traj.errors import ImportSourceError
from traj.recipes import get_recipe
from traj.record.importers import import_checkpoints, import_npy, import_source


def _save_run_as_checkpoints(recipe, directory, *, wrap=False):
    """Train the recipe, saving a state_dict after every step (names carry the step)."""
    directory.mkdir()
    model = recipe.new_model()

    class Saver:
        step_count = 0

        def step(self, **_):
            self.step_count += 1
            _save(self.step_count)

        def epoch_end(self):
            pass

    def _save(step):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        obj = {"model_state_dict": state, "global_step": step} if wrap else state
        torch.save(obj, directory / f"ckpt_{step:05d}.pt" if not wrap else directory / f"weights-{step * 7}.pt")

    _save(0)
    recipe.train(model, recorder=Saver())


@pytest.mark.parametrize("wrap", [False, True])
def test_import_of_checkpoints_equals_recording(tmp_path, wrap):
    recipe = get_recipe("quadratic-mlp", epochs=2, n_train=96)
    recorded = recipe.record(tmp_path / "recorded.zarr")
    _save_run_as_checkpoints(get_recipe("quadratic-mlp", epochs=2, n_train=96), tmp_path / "ckpts", wrap=wrap)
    imported = import_checkpoints(tmp_path / "ckpts", tmp_path / "imported.zarr")
    assert imported.layout.names == recorded.layout.names
    assert [e.prunable for e in imported.layout.entries] == [e.prunable for e in recorded.layout.entries]
    np.testing.assert_array_equal(imported.steps, recorded.steps)
    assert imported.read().tobytes() == recorded.read().tobytes()


def test_import_orders_by_step_not_by_name(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    for step in (10, 2, 100):
        torch.save({"w": torch.full((3,), float(step))}, d / f"model_{step}.pth")
    store = import_checkpoints(d, tmp_path / "s.zarr")
    np.testing.assert_array_equal(store.steps, [2, 10, 100])
    np.testing.assert_array_equal(store.read()[:, 0], [2.0, 10.0, 100.0])


def test_buffers_and_excluded_names_are_left_out(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    bn = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    for step in range(3):
        torch.save(bn.state_dict(), d / f"{step}.pt")
    store = import_checkpoints(d, tmp_path / "s.zarr", exclude=["1.bias"])
    assert store.layout.names == ["0.weight", "0.bias", "1.weight"]
    assert [e.prunable for e in store.layout.entries] == [True, False, False]


@pytest.mark.parametrize(
    "files, message",
    [
        ({"1.pt": {"w": (3,)}, "2.pt": {"w": (4,)}}, r"'w' has shape \[4\]"),
        ({"1.pt": {"w": (3,)}, "2.pt": {"v": (3,)}}, "'w' .* is missing"),
        ({"1.pt": {"w": (3,)}, "2.pt": {"w": (3,), "v": (1,)}}, "'v' is not in"),
        ({"a.pt": {"w": (3,)}}, "no step"),
        ({"1.pt": {"w": (3,)}, "x1.pt": {"w": (3,)}}, "two checkpoints have step 1"),
    ],
)
def test_mismatched_checkpoints_refused_before_writing(tmp_path, files, message):
    d = tmp_path / "c"
    d.mkdir()
    for name, tensors in files.items():
        torch.save({k: torch.zeros(shape) for k, shape in tensors.items()}, d / name)
    with pytest.raises(ImportSourceError, match=message):
        import_checkpoints(d, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


def test_unloadable_and_empty_sources(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    with pytest.raises(ImportSourceError, match="no checkpoints found"):
        import_checkpoints(d, tmp_path / "s.zarr")
    (d / "3.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ImportSourceError, match="not a loadable"):
        import_checkpoints(d, tmp_path / "s.zarr")
    with pytest.raises(ImportSourceError, match="no such file"):
        import_source(tmp_path / "nope", tmp_path / "s.zarr")


def test_checkpoint_that_needs_code_is_refused(tmp_path):
    """weights_only loading: a pickle that would construct an arbitrary object is rejected."""
    d = tmp_path / "c"
    d.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"w": torch.zeros(2), "extra": Evil()}, d / "1.pt")
    with pytest.raises(ImportSourceError, match="holds pickled code .*print.*never runs") as caught:
        import_checkpoints(d, tmp_path / "s.zarr")
    assert "weights_only" not in str(caught.value) and "\x1b" not in str(caught.value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_import_npy(tmp_path, rng, dtype):
    data = rng.standard_normal((9, 31)).astype(dtype)
    np.save(tmp_path / "x.npy", data)
    store = import_npy(tmp_path / "x.npy", tmp_path / "s.zarr", every=5)
    assert store.dtype == dtype
    np.testing.assert_array_equal(store.read(), data)
    np.testing.assert_array_equal(store.steps, 5 * np.arange(9))
    with pytest.raises(ImportSourceError, match="already exists"):
        import_npy(tmp_path / "x.npy", tmp_path / "s.zarr")
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4)))
    with pytest.raises(ImportSourceError, match=r"expected shape \(T, N\)"):
        import_npy(tmp_path / "bad.npy", tmp_path / "t.zarr")


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_import_of_complex_data_says_complex_is_not_supported(tmp_path, dtype):
    """Issue 26: a complex .npy was refused as "dtype complex128 is not numeric"; it is numeric, just not supported."""
    from typer.testing import CliRunner

    from traj.cli.app import app

    np.save(tmp_path / "z.npy", (np.arange(12.0) + 1j).reshape(3, 4).astype(dtype))
    with pytest.raises(ImportSourceError, match=rf"z.npy: complex arrays are not supported \(dtype {np.dtype(dtype)}\)"):
        import_npy(tmp_path / "z.npy", tmp_path / "z.zarr")
    result = CliRunner().invoke(app, ["import", str(tmp_path / "z.npy"), "--out", str(tmp_path / "z2.zarr")])
    assert result.exit_code == 2 and "complex arrays are not supported" in result.stderr
    assert "not numeric" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "z.zarr").exists() and not (tmp_path / "z2.zarr").exists()
