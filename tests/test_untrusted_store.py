"""A store's attributes are data: naming a module in them must never import or run it."""

import sys

import numpy as np
import zarr
from typer.testing import CliRunner

from tests.conftest import write_store
from traj.cli.app import app


def test_a_store_naming_a_module_imports_nothing(tmp_path, monkeypatch):
    marker = tmp_path / "executed"
    (tmp_path / "evil_traj_module.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\ndef run(**kw): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_store(tmp_path / "s.zarr", np.cumsum(np.ones((8, 12), dtype=np.float32), axis=0))
    group = zarr.open_group(path, mode="r+")
    group.attrs["recipe"] = {"name": "evil_traj_module:run", "config": {"__class__": "os.system"}, "seed": 0}
    runner = CliRunner()
    for args in (["info", str(path)], ["cmd", str(path), "--modes", "2", "--out", str(tmp_path / "o1")],
                 ["kga-replay", str(path), "--out", str(tmp_path / "o2")], ["report", str(path), "--out", str(tmp_path / "o3")]):
        result = runner.invoke(app, args)
        assert result.exit_code in (0, 2), result.output
        assert isinstance(result.exception, SystemExit) or result.exception is None
    assert "evil_traj_module" not in sys.modules
    assert not marker.exists()
