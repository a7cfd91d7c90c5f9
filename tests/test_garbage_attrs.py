"""Property: whatever a store's attributes hold, commands answer with exit 0 or one error line, never a traceback."""

import json
import shutil

import numpy as np
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.conftest import write_store
from traj.cli.app import app

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(["traj", "layout", "recipe", "spacing", "n_params", "versions", "state", "dtype", "created"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(keys, json_values, min_size=1, max_size=3),
       command=st.sampled_from(["info", "dmd", "cmd", "prune", "report"]))
def test_garbage_attrs_never_crash(tmp_path_factory, changes, command):
    tmp = tmp_path_factory.mktemp("garbage")
    path = write_store(tmp / "s.zarr", np.cumsum(np.ones((8, 12), dtype=np.float32), axis=0))
    group = zarr.open_group(path, mode="r+")
    attrs = {**dict(group.attrs), **json.loads(json.dumps(changes))}
    group.attrs.clear()
    group.attrs.update(attrs)
    args = [command, str(path)] + ([] if command == "info" else ["--out", str(tmp / "out")])
    result = CliRunner().invoke(app, args)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    # a command only reads the store it is given: the garbage is still there, untouched
    assert dict(zarr.open_group(path, mode="r").attrs) == attrs
    shutil.rmtree(tmp)  # hypothesis runs many examples in one test: keep the disk use of one
