"""docs/examples/hf_causal_lm.py: the README's minimal recipe for a user's Hugging Face model, run as a user would."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("transformers")

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


@pytest.fixture
def example(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import hf_causal_lm

    yield hf_causal_lm
    sys.modules.pop("hf_causal_lm", None)


def test_the_example_scores_what_hugging_face_computes(example):
    import torch

    recipe = example.recipe()
    model = recipe.new_model()
    theta = recipe.theta_of(model)
    scored = recipe.evaluate(theta)
    x = recipe.data.x_val
    model.eval()
    with torch.no_grad():
        reference = model(x, labels=x)  # Hugging Face's own shifted next-token loss
        predicted = reference.logits[:, :-1].argmax(dim=-1)
    assert scored["loss"] == pytest.approx(float(reference.loss), rel=1e-6)
    assert scored["accuracy"] == pytest.approx(float((predicted == x[:, 1:]).float().mean()), abs=1e-12)
    assert recipe.evaluation_samples() == len(x) == 8


def test_a_user_runs_cmd_with_the_example_recipe(example, tmp_path):
    from traj.cli.app import app
    from traj.store import RunStore

    recipe = example.CausalLM(epochs=3)  # 16 sequences, batches of 8: 6 steps, 7 snapshots with θ0
    recipe.record(tmp_path / "gpt2.zarr")
    store = RunStore(tmp_path / "gpt2.zarr")
    assert store.n_snapshots == 7 and "lm_head.weight" not in store.layout.names  # tied to the embedding
    result = CliRunner().invoke(app, ["cmd", str(tmp_path / "gpt2.zarr"), "--recipe", "hf_causal_lm:recipe",
                                      "--modes", "2", "--samples", "200", "--eval-points", "4", "--out",
                                      str(tmp_path / "cmd"), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["evaluation"]  # one row per scored snapshot
    assert len(rows) == 4 and rows[-1]["snapshot"] == 6
    scored = [recipe.evaluate(store.snapshot(row["snapshot"])) for row in rows]
    np.testing.assert_allclose([r["original_accuracy"] for r in rows], [s["accuracy"] for s in scored])
    np.testing.assert_allclose([r["original_loss"] for r in rows], [s["loss"] for s in scored], rtol=1e-6)
    assert all(np.isfinite(r["cmd_loss"]) for r in rows)
    assert (tmp_path / "cmd" / "report.html").is_file()
