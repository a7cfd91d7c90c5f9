"""The recording options are declared once (RecordOptions) and every recorder takes them alike (issue 27)."""

import inspect
from dataclasses import fields

import numpy as np
import pytest
import torch
from torch import nn

from traj import RunStore
from traj.errors import RecorderError
from traj.integrations.distributed import DistributedRecorder
from traj.live import LiveOptions
from traj.record import Recorder, RecordOptions

#: Parameters a recorder may name besides the shared options (its own, documented in its class).
OWN = {"self", "path", "model", "unit", "record_initial", "start_step", "min_buffers", "recipe", "resume", "rewind",
       "announce"}
#: Every option set away from its default.
CHANGED = {"every": 3, "params": ("0.weight",), "grads": True, "dtype": "float64", "compressor": "zstd",
           "buffer_bytes": 1 << 20, "overwrite": True, "live": LiveOptions(window=6, every=2, sketch=16, forecast=1)}


def recorders():
    """The four places a user passes recording options."""
    found = [Recorder, DistributedRecorder]
    for module in ("huggingface", "lightning"):
        try:
            found.append(__import__(f"traj.integrations.{module}", fromlist=["TrajCallback"]).TrajCallback)
        except ImportError:  # the extra is not installed: its own tests are skipped too
            pass
    return found


def test_changed_sets_every_option_away_from_its_default():
    assert set(CHANGED) == set(RecordOptions.names())
    assert all(CHANGED[f.name] != f.default for f in fields(RecordOptions))


@pytest.mark.parametrize("recorder", recorders(), ids=lambda r: f"{r.__module__}.{r.__name__}")
def test_every_recorder_takes_the_options_with_their_declared_defaults(recorder):
    signature = inspect.signature(recorder.__init__)
    for option in fields(RecordOptions):
        assert option.name in signature.parameters, f"{recorder.__name__} does not take {option.name}"
        parameter = signature.parameters[option.name]
        assert parameter.default == option.default, option.name
        assert parameter.annotation == option.type, option.name  # strings: both modules defer annotations
        assert parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    assert set(signature.parameters) <= OWN | set(RecordOptions.names()), "an option declared outside RecordOptions"


@pytest.mark.parametrize("recorder", recorders()[2:], ids=lambda r: r.__module__)
def test_the_callbacks_hand_every_option_to_their_recorder(tmp_path, recorder):
    callback = recorder(tmp_path / "run.zarr", **CHANGED)
    assert callback.recording.options == RecordOptions(**CHANGED)
    assert callback.recording.options.live is CHANGED["live"]
    assert recorder(tmp_path / "run.zarr", 4, ["0.weight"], True).recording.options == RecordOptions(
        every=4, params=("0.weight",), grads=True)  # the first three stay positional


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1))


def test_the_recorder_and_the_distributed_recorder_apply_every_option(tmp_path):
    """Each option changed reaches the store: spacing, the parameters, gradients, dtype, codec, the live monitor."""
    model = _model()
    with Recorder(tmp_path / "a.zarr", model, **{**CHANGED, "overwrite": False}) as rec:
        assert rec.options == RecordOptions(**{**CHANGED, "overwrite": False})
    dist = DistributedRecorder(tmp_path / "b.zarr", **CHANGED)
    dist.begin(model, step=0)
    assert dist.recorder is not None and dist.recorder.options == RecordOptions(**CHANGED)
    dist.close(model, step=0)
    for name in ("a.zarr", "b.zarr"):
        store = RunStore(tmp_path / name)
        assert store.layout.names == ["0.weight"] and store.dtype == np.float64 and store.has_grads
        assert store.spacing["every"] == 3
        assert '"cname": "zstd"' in (tmp_path / name / "params" / "zarr.json").read_text()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_a_bad_spacing_is_refused_alike_by_every_recorder(tmp_path, bad):
    for recorder in recorders():
        args = (tmp_path / "r.zarr", _model()) if recorder is Recorder else (tmp_path / "r.zarr",)
        with pytest.raises(RecorderError, match="every must be a positive integer"):
            recorder(*args, every=bad)
    assert not (tmp_path / "r.zarr").exists()
