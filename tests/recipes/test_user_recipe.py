"""User recipes run only when named on the command line (--recipe module:function)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from traj.cli.app import app
from traj.errors import UnknownRecipeError
from traj.recipes import resolve_recipe
from traj.recipes.quadratic_mlp import QuadraticMLP
from traj.record.importers import import_npy


def test_module_function_recipe_from_the_command_line(tmp_path, monkeypatch):
    (tmp_path / "my_recipes.py").write_text(
        "from traj.recipes import get_recipe\n"
        "def small():\n    return get_recipe('quadratic-mlp', epochs=2, n_train=64)\n"
        "def not_a_recipe():\n    return 42\n"
        "def broken():\n    raise ValueError('my bug')\n"
        "CONSTANT = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = resolve_recipe("my_recipes:small")
    assert isinstance(recipe, QuadraticMLP) and recipe.epochs == 2
    with pytest.raises(UnknownRecipeError, match="not a traj Recipe"):
        resolve_recipe("my_recipes:not_a_recipe")
    with pytest.raises(UnknownRecipeError, match="cannot load"):
        resolve_recipe("no_such_module_xyz:make")
    with pytest.raises(UnknownRecipeError, match="raised ValueError: my bug"):
        resolve_recipe("my_recipes:broken")
    with pytest.raises(UnknownRecipeError, match=r"not a function \(int\)"):
        resolve_recipe("my_recipes:CONSTANT")
    with pytest.raises(UnknownRecipeError, match="not a function"):
        resolve_recipe("os:path")

    np.save(tmp_path / "x.npy", np.zeros((4, 3), dtype=np.float32))
    import_npy(tmp_path / "x.npy", tmp_path / "x.zarr")  # a store without a recipe
    result = CliRunner().invoke(app, ["kga-replay", str(tmp_path / "x.zarr"), "--recipe", "my_recipes:small",
                                      "--alpha", "0.5", "--out", str(tmp_path / "kga"), "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["plain"]["train_loss"]) == 2
    # the store records no recipe and is not this model's run: the replay says what it trains
    assert "x.zarr records no recipe and holds 3 parameters, quadratic-mlp's model" in " ".join(result.stderr.split())
    # a store recorded by another recipe: the replay trains --recipe's model, and says so
    sample = Path(__file__).resolve().parents[2] / "sample_data" / "mirror-omd.zarr"
    result = CliRunner().invoke(app, ["kga-replay", str(sample), "--recipe", "my_recipes:small", "--alpha", "0.5",
                                      "--out", str(tmp_path / "kga2"), "--json"])
    assert result.exit_code == 0, result.output
    assert "was recorded by mirror-descent; --recipe my_recipes:small replays quadratic-mlp" in " ".join(result.stderr.split())
    sys.modules.pop("my_recipes", None)


def test_builtin_name_takes_the_store_config(tmp_path):
    from pathlib import Path

    from traj.store import RunStore

    store = RunStore(Path(__file__).resolve().parents[2] / "sample_data" / "quadratic-mlp.zarr")
    assert resolve_recipe("quadratic-mlp", store).epochs == store.recipe["config"]["epochs"] == 10
    assert resolve_recipe(None, store).name == "quadratic-mlp"
