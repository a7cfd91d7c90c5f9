import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from traj.analysis.masks import pruned_theta
from traj.analysis.prune import lsp_mask, mask_from_scores, mask_overlap, prune, read_masks, write_masks
from traj.cli.app import app
from traj.errors import TrajError
from traj.recipes import get_recipe, recipe_from_store
from traj.store import Layout, RunStore, StoreWriter

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
LAYERS = [slice(0, 1000), slice(1010, 1510), slice(1520, 1530)]


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("c", [2, 3, 4, 8, 16, 32, 64, 1000])
def test_exact_mask_counts(rng, c, scope):
    scores = rng.random(1530)
    scores[:200] = 0.5  # ties
    mask = mask_from_scores(scores, LAYERS, c, scope=scope)
    if scope == "global":
        assert sum(int(mask[s].sum()) for s in LAYERS) == math.ceil(1510 / c)
    else:
        for s in LAYERS:
            assert int(mask[s].sum()) == math.ceil((s.stop - s.start) / c)
    assert mask[1000:1010].all() and mask[1510:1520].all()  # non-prunable weights are always kept
    np.testing.assert_array_equal(mask, mask_from_scores(scores.copy(), LAYERS, c, scope=scope))


def test_ties_are_broken_by_index():
    mask = mask_from_scores(np.ones(10), [slice(0, 10)], 4)
    np.testing.assert_array_equal(np.flatnonzero(mask), [0, 1, 2])


def test_lsp_keeps_per_layer_counts(rng):
    reference = mask_from_scores(rng.random(1530), LAYERS, 4)
    for seed in range(3):
        shuffled = lsp_mask(reference, LAYERS, seed=seed)
        for s in LAYERS:
            assert shuffled[s].sum() == reference[s].sum()
    assert not np.array_equal(lsp_mask(reference, LAYERS, seed=0), lsp_mask(reference, LAYERS, seed=1))


def test_overlap_formula_on_hand_made_masks():
    a = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    b = np.array([1, 1, 0, 0, 1, 1, 0, 0], dtype=bool)
    assert mask_overlap(a, b, [slice(0, 8)], 2) == 0.5  # 2 shared of N/c = 4
    assert mask_overlap(a, a, [slice(0, 8)], 2) == 1.0
    assert mask_overlap(a, ~a, [slice(0, 8)], 2) == 0.0


def _converging_store(path, rng, n_steps=30):
    """θ_k = θ* + Σ_j c_j λ_j^k v_j: a trajectory converging to a known fixed point θ*."""
    layout = Layout.from_shapes([("fc.weight", (40, 50)), ("fc.bias", (40,))], prunable=["fc.weight"])
    n = layout.n_params
    theta_star = rng.standard_normal(n)
    modes = rng.standard_normal((3, n))
    rates = [0.9, 0.7, 0.5]
    with StoreWriter(path, layout, dtype="float64") as writer:
        for k in range(n_steps):
            theta = theta_star + sum(r**k * m for r, m in zip(rates, modes, strict=True))
            writer.append(theta, step=k, epoch=0)
    return RunStore(path), theta_star, layout


def test_kmp_on_a_planted_fixed_point(tmp_path, rng):
    store, theta_star, layout = _converging_store(tmp_path / "c.zarr", rng)
    result = prune(store, epoch=0, methods=["kmp", "kgp", "gmp"], compressions=[2, 4, 8, 16], evaluate=False)
    assert abs(result.lambda1 - 1) < 1e-6
    prunable = [layout["fc.weight"].columns]
    for c in result.compressions:
        expected = mask_from_scores(np.abs(theta_star), prunable, c)
        np.testing.assert_array_equal(result.mask("kmp", c), expected)
    # the slowest real decaying mode carries the largest scaled norm here: KGP finds real modes in (0, 1)
    assert result.kgp_modes and all(0 < m.eigenvalue.real < 1 and m.eigenvalue.imag == 0 for m in result.kgp_modes)


def test_masks_round_trip_through_zarr(tmp_path, rng):
    store, _, layout = _converging_store(tmp_path / "c.zarr", rng)
    result = prune(store, epoch=0, methods=["kmp", "gmp", "lsp"], compressions=[2, 8], evaluate=False, seeds=2)
    write_masks(result, tmp_path / "masks.zarr", layout)
    back = read_masks(tmp_path / "masks.zarr")
    assert set(back) == {"kmp", "gmp", "lsp"}
    for m in back:
        for c in ("2", "8"):
            np.testing.assert_array_equal(back[m][c], result.mask(m, float(c)))
            assert back[m][c].dtype == bool


def test_refinement_keeps_pruned_weights_at_zero():
    recipe = get_recipe("digits-cnn", epochs=1)
    store = RunStore(SAMPLE / "digits-cnn.zarr")
    theta = store.snapshot(-1).astype(np.float64)
    prunable = [e.columns for e in store.layout.prunable_entries]
    mask = mask_from_scores(np.abs(theta), prunable, 8)
    masks = {e.name: mask[e.columns].reshape(e.shape).astype(np.float32) for e in store.layout.prunable_entries}
    refined = recipe.refine((theta * mask).astype(np.float32), 1, mask=masks, seed=0)
    assert np.all(refined[~mask] == 0)
    assert np.count_nonzero(refined[mask]) == int(mask.sum())


def test_prune_a_recorded_run_with_gradients_and_refinement():
    result = prune(SAMPLE / "digits-cnn.zarr", methods=["kmp", "gmp", "jgp", "ggp", "lsp"], compressions=[2, 16],
                   refine_epochs=1, seeds=2)
    assert result.epoch == 4 and result.unavailable == {}
    assert result.kept["kmp"].tolist() == [1796, 225]
    assert set(result.accuracy) == {"kmp", "gmp", "jgp", "ggp", "lsp"}
    assert result.accuracy_refined["gmp"].mean[0] > 0.8  # half the weights keep most of the accuracy
    # one mask serves every seed: no spread right after pruning; LSP draws a mask per seed
    assert result.accuracy["gmp"].std.tolist() == [0.0, 0.0]
    recipe = recipe_from_store(RunStore(SAMPLE / "digits-cnn.zarr"))
    lsp = [recipe.evaluate(pruned_theta(result.theta, result.lsp_seed_masks[s, 0], np.float32))["accuracy"]
           for s in range(2)]
    assert not np.array_equal(result.lsp_seed_masks[0, 0], result.lsp_seed_masks[1, 0])
    assert result.accuracy["lsp"].mean[0] == pytest.approx(np.mean(lsp), abs=1e-12)
    assert result.accuracy["lsp"].std[0] == pytest.approx(np.std(lsp), abs=1e-12)
    assert result.overlap["kmp", "gmp"][0] > 0.9


def test_errors(tmp_path, rng):
    with pytest.raises(TrajError, match="unknown pruning method"):
        prune(SAMPLE / "digits-cnn.zarr", methods=["magic"])
    with pytest.raises(TrajError, match="compressions must hold finite numbers > 1"):
        prune(SAMPLE / "digits-cnn.zarr", compressions=[1])
    with pytest.raises(TrajError, match="no snapshots recorded in epoch 9"):
        prune(SAMPLE / "digits-cnn.zarr", epoch=9)
    with pytest.raises(TrajError, match="no prunable parameters"):
        prune(SAMPLE / "mirror-omd.zarr")


runner = CliRunner()


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "rep"
    result = runner.invoke(app, ["prune", str(SAMPLE / "digits-cnn.zarr"), "--compression", "2,8", "--seeds", "1",
                                 "--epochs", "3,4", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    for key in ("epoch", "eigenvalues", "lambda1", "kgp_modes", "kept", "accuracy", "accuracy_refined", "overlap"):
        assert key in summary
    assert summary["kept"]["gmp"] == {"2": 1796, "8": 449}
    assert len(summary["epoch_overlap"]["kmp_gmp"]["2"]) == 2
    files = {p.name for p in out.iterdir()}
    assert {"masks.zarr", "summary.json", "report.md", "report.html", "accuracy.png", "overlap.png", "spectrum.png",
            "epoch_overlap.png"} <= files
    masks = read_masks(out / "masks.zarr")
    assert int(masks["kmp"]["8"].sum()) == 449 + 66  # kept prunable weights + every bias


@pytest.mark.parametrize("args, message", [(["--compression", "1"], "--compression must hold finite numbers > 1"), (["--method", "x"], "unknown pruning"),
                                           (["--seeds", "0"], "--seeds"), (["--epoch", "99"], "epoch 99")])
def test_cli_errors(tmp_path, args, message):
    result = runner.invoke(app, ["prune", str(SAMPLE / "digits-cnn.zarr"), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
