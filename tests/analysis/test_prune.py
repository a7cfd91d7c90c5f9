import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from traj.analysis.masks import pruned_theta
from traj.analysis.prune import compute_scores, lsp_mask, mask_from_scores, mask_overlap, prune, read_masks, write_masks
from traj.cli.app import app
from traj.errors import TrajError
from traj.recipes import recipe_from_store
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


def test_kgp_scores_on_planted_decaying_modes(tmp_path, rng):
    """θ_k = θ* + Σ_j c_j v_j λ_j^k with λ = 0.9, 0.7, 0.5 and ‖c_j v_j‖ = 10, 9, 1: the KGP modes are the two
    real decaying ones within 0.85 of the largest (0.9 then 0.7), and KGP = |c₁v₁| + |c₂v₂| exactly."""
    layout = Layout.from_shapes([("fc.weight", (30, 20)), ("fc.bias", (30,))], prunable=["fc.weight"])
    n = layout.n_params
    theta_star = rng.standard_normal(n)
    directions = rng.standard_normal((3, n))
    modes = directions / np.linalg.norm(directions, axis=1, keepdims=True) * np.array([[10.0], [9.0], [1.0]])
    rates = np.array([0.9, 0.7, 0.5])
    with StoreWriter(tmp_path / "k.zarr", layout, dtype="float64") as writer:
        for k in range(25):
            writer.append(theta_star + (rates[:, None] ** k * modes).sum(axis=0), step=k, epoch=0)
    store = RunStore(tmp_path / "k.zarr")
    scores = compute_scores(store, (0, 24), ["kmp", "kgp"])
    assert scores.lambda1 == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(scores.operator.eigenvalues[list(scores.kgp_modes)], [0.9, 0.7], atol=1e-9)
    np.testing.assert_allclose(scores.mode_norms[list(scores.kgp_modes)], [10.0, 9.0], rtol=1e-8)
    np.testing.assert_allclose(scores.scores["kmp"], np.abs(theta_star), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(scores.scores["kgp"], np.abs(modes[0]) + np.abs(modes[1]), rtol=1e-7, atol=1e-9)
    assert scores.unavailable == {}
    # a lower fraction takes the third mode in as well
    wider = compute_scores(store, (0, 24), ["kgp"], kgp_fraction=0.05)
    np.testing.assert_allclose(wider.scores["kgp"], np.abs(modes).sum(axis=0), rtol=1e-7, atol=1e-9)
    # and prune's masks are the top ⌈n/c⌉ of exactly these scores
    result = prune(store, epoch=0, methods=["kgp"], compressions=[4], evaluate=False)
    expected = mask_from_scores(np.abs(modes[0]) + np.abs(modes[1]), [layout["fc.weight"].columns], 4)
    np.testing.assert_array_equal(result.mask("kgp", 4), expected)
    assert [m.eigenvalue.real for m in result.kgp_modes] == pytest.approx([0.9, 0.7], abs=1e-9)


def test_gradient_scores_on_planted_gradients(tmp_path, rng):
    """JGP |ḡ| and GGP |ḡ θ|: ḡ averages the recorded gradients of the epoch's window (with the snapshot before
    it) over their finite entries; θ is the window's last snapshot. Planted: g_k = a + (k − 5)·b over rows
    4..6 of epoch 1 (rows 5, 6 and the starting point 4), so ḡ = a + b·(−1 + 0 + 1)/3 = a."""
    layout = Layout.from_shapes([("fc.weight", (8, 5)), ("fc.bias", (8,))], prunable=["fc.weight"])
    n = layout.n_params
    a, b = rng.standard_normal(n), rng.standard_normal(n)
    thetas = rng.standard_normal((7, n))
    with StoreWriter(tmp_path / "g.zarr", layout, dtype="float64") as writer:
        for k in range(7):
            grads = a + (k - 5) * b
            if k == 6:
                grads[3] = np.nan  # a non-finite entry is left out of that weight's mean: (g_4 + g_5) / 2
            writer.append(thetas[k], step=k, epoch=0 if k < 5 else 1, grads=grads)
    store = RunStore(tmp_path / "g.zarr")
    scores = compute_scores(store, (4, 6), ["jgp", "ggp"], epoch=1)
    expected = a.copy()
    expected[3] = a[3] - 0.5 * b[3]
    np.testing.assert_allclose(scores.scores["jgp"], np.abs(expected), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(scores.scores["ggp"], np.abs(expected * thetas[6]), rtol=1e-12, atol=1e-14)
    result = prune(store, epoch=1, methods=["jgp", "ggp"], compressions=[2], evaluate=False)
    assert result.window == (4, 6)
    weight = [layout["fc.weight"].columns]
    np.testing.assert_array_equal(result.mask("jgp", 2), mask_from_scores(np.abs(expected), weight, 2))
    np.testing.assert_array_equal(result.mask("ggp", 2), mask_from_scores(np.abs(expected * thetas[6]), weight, 2))


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


def test_prune_a_recorded_run_with_gradients_and_refinement():
    result = prune(SAMPLE / "digits-cnn.zarr", methods=["kmp", "gmp", "jgp", "ggp", "lsp"], compressions=[2, 16],
                   refine_epochs=1, seeds=2, recipe=recipe_from_store(RunStore(SAMPLE / "digits-cnn.zarr")))
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
                                           (["--seeds", "0"], "--seeds"), (["--epoch", "99"], "epoch 99"),
                                           (["--rank", "most"], "--rank must be an integer or 'auto' or 'all'"),
                                           (["--rank", "0"], "--rank must be")])
def test_cli_errors(tmp_path, args, message):
    result = runner.invoke(app, ["prune", str(SAMPLE / "digits-cnn.zarr"), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_overview_skips_pruning_a_run_without_epochs_with_advice_it_can_follow(tmp_path, rng):
    """`traj report` has no --window: its reason points at `traj prune --window` (found by a new user)."""
    from traj.analysis.overview import _prune
    from traj.engine import Engine
    from traj.errors import NotApplicableError

    layout = Layout.from_shapes([("w", (40,))], prunable=["w"])
    with StoreWriter(tmp_path / "s.zarr", layout, dtype="float32", spacing={"unit": "step", "every": 1}) as writer:
        for k in range(6):
            writer.append(rng.standard_normal(40).astype(np.float32), step=k)  # no epoch
        writer.commit()
    with pytest.raises(NotApplicableError, match=r"records no epochs \(traj prune STORE --window A:B"):
        _prune(RunStore(tmp_path / "s.zarr"), None, Engine())


def test_default_epoch_skips_a_partial_last_epoch(tmp_path, rng):
    """A run stopped mid-epoch (found by a new user: `traj report` pruned epoch 5 with 12 of 40 snapshots) is pruned
    at its last complete epoch; a complete last epoch is still the default."""
    from traj.analysis.prune import PruneParams
    from traj.analysis.prune.fit import _window

    layout = Layout.from_shapes([("w", (20,))], prunable=["w"])
    for n_last, expected in ((3, 1), (8, 2)):
        path = tmp_path / f"s{n_last}.zarr"
        with StoreWriter(path, layout, dtype="float32", spacing={"unit": "step", "every": 1}) as writer:
            epochs = [0] * 9 + [1] * 8 + [2] * n_last  # the first epoch also holds θ₀
            for k, e in enumerate(epochs):
                writer.append(rng.standard_normal(20).astype(np.float32), step=k, epoch=e)
            writer.commit()
        epoch, (lo, hi) = _window(RunStore(path), PruneParams.checked())
        assert epoch == expected
        assert (lo, hi) == ((8, 16) if expected == 1 else (16, 16 + n_last))  # with the snapshot before the epoch


def _every_ten(path, n_snapshots, per_epoch, rng):
    layout = Layout.from_shapes([("w", (6, 5)), ("b", (6,))], prunable=["w"])
    data = np.cumsum(rng.standard_normal((n_snapshots, layout.n_params)), axis=0)
    with StoreWriter(path, layout, dtype="float64", spacing={"unit": "step", "every": 10}) as writer:
        for k, row in enumerate(data):
            writer.append(row, step=10 * k, epoch=k // per_epoch)
    return RunStore(path)


def test_report_and_prune_apply_one_rule_to_a_run_recorded_every_ten_steps(tmp_path):
    """Issue 25: on a store recorded every 10 steps the report skipped pruning ("needs snapshots at every step
    (record with --every 1)") while `traj prune` ran on it. The rule is prune's: 3 snapshots in an epoch."""
    from traj.analysis.overview import overview
    from traj.errors import WindowTooShortError

    rng = np.random.default_rng(0)
    store = _every_ten(tmp_path / "ten.zarr", 15, 5, rng)  # 5 snapshots an epoch, 10 steps apart
    seen = overview(store, evaluate=False)
    assert "prune" not in seen.skipped
    alone = prune(store, methods=["kmp", "gmp", "lsp"], compressions=[2, 4, 8, 16], seeds=1)
    assert seen.prune.epoch == alone.epoch == 2
    np.testing.assert_array_equal(seen.prune.masks["kmp"], alone.masks["kmp"])
    assert seen.prune.kept["kmp"][0] == 15  # 30 prunable weights, compression 2 (the first)

    sparse = _every_ten(tmp_path / "sparse.zarr", 6, 1, rng)  # one snapshot an epoch: no iteration-level DMD
    seen = overview(sparse, evaluate=False)
    with pytest.raises(WindowTooShortError) as caught:
        prune(sparse)
    assert seen.skipped["prune"] == str(caught.value) == (
        "epoch 5 holds 2 snapshot(s) with its starting point; Koopman pruning needs at least 3 iteration-level "
        "snapshots per epoch (docs/methods.md §3.1): record more often (traj record --every 1; every=1 in TrajCallback or "
        "traj.Recorder), or give a window of snapshots (--window A:B)")


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_out_of_core_masks_equal_the_argsort_reference_with_many_ties(monkeypatch, rng, scope):
    """fit_prune's masks come from a radix select over scores on disk, read in pieces (here 97 coordinates, so
    layers span pieces); they must be mask_from_scores' (a stable argsort) bit for bit: many exact ties, ±0,
    NaN (last) and inf (first), lower index first among equals."""
    from traj.analysis import scratch
    from traj.analysis.prune import masking as prune_module
    from traj.analysis.scratch import ScratchArrays

    monkeypatch.setattr(scratch, "PIECE", 97)
    prunable = [slice(0, 1000), slice(1010, 1510), slice(1520, 1530), slice(1530, 4000), slice(4003, 4004)]
    scores = rng.integers(0, 6, 4010).astype(np.float64) / 4  # six distinct values: mostly ties
    scores[::13] = 0.0
    scores[5::17] = -0.0
    scores[7::101] = np.nan
    scores[[11, 2000, 3999]] = np.inf
    compressions = np.array([1.5, 2, 3, 7, 64, 1000, 5000])
    arrays = ScratchArrays(scores.size)
    arrays.create("score-gmp", np.float64)
    arrays.write("score-gmp", 0, scores)
    counts = prune_module._write_score_masks(arrays, "gmp", prunable, compressions, scope)
    for i, c in enumerate(compressions):
        expected = mask_from_scores(scores, prunable, c, scope=scope)
        np.testing.assert_array_equal(arrays.read(prune_module._mask_name("gmp", i)), expected)
        assert counts[i].tolist() == [int(expected[s].sum()) for s in prunable]
    # LSP draws from the same per-layer counts with the same random stream as lsp_mask
    prune_module._write_lsp_masks(arrays, prunable, counts, 2)
    for seed in range(2):
        for i, c in enumerate(compressions):
            reference = lsp_mask(mask_from_scores(scores, prunable, c, scope=scope), prunable, seed=seed)
            np.testing.assert_array_equal(arrays.read(prune_module._mask_name("lsp", i, seed)), reference)
    arrays.close()


def test_prune_on_a_store_of_ties_keeps_the_lower_index(tmp_path, rng, monkeypatch):
    from traj.analysis import scratch

    monkeypatch.setattr(scratch, "PIECE", 64)
    layout = Layout.from_shapes([("a.weight", (30, 20)), ("a.bias", (20,)), ("b.weight", (25, 9))],
                                prunable=["a.weight", "b.weight"])
    theta = np.round(rng.standard_normal(layout.n_params))  # |θ| in {0, 1, 2, 3, ...}: ties everywhere
    with StoreWriter(tmp_path / "t.zarr", layout, dtype="float32") as writer:
        for k in range(6):
            writer.append(theta + 0.5**k * np.round(rng.standard_normal(layout.n_params)), step=k, epoch=0)
    store = RunStore(tmp_path / "t.zarr")
    for scope in ("global", "layer"):
        result = prune(store, epoch=0, methods=["kmp", "gmp", "lsp"], compressions=[2, 3, 8], scope=scope,
                       evaluate=False, seeds=2)
        prunable = [layout["a.weight"].columns, layout["b.weight"].columns]
        last = store.snapshot(5).astype(np.float64)
        for c in (2, 3, 8):
            np.testing.assert_array_equal(result.mask("gmp", c), mask_from_scores(np.abs(last), prunable, c,
                                                                                  scope=scope))
            np.testing.assert_array_equal(result.mask("kmp", c), mask_from_scores(result.scores["kmp"], prunable, c,
                                                                                  scope=scope))
            np.testing.assert_array_equal(result.lsp_seed_masks[1, result.index(c)],
                                          lsp_mask(result.mask("gmp", c), prunable, seed=1))


def _sgd_run(path, n_steps=14, seed=7):
    """A tiny two-layer tanh network trained by minibatch SGD on a planted regression (plain numpy), recorded every
    step in float32: a run no other test uses, with SGD's noise in every direction (full rank, well above the floor)."""
    rng = np.random.default_rng(seed)
    layout = Layout.from_shapes([("fc1.weight", (16, 12)), ("fc1.bias", (16,)), ("fc2.weight", (3, 16)), ("fc2.bias", (3,))],
                                prunable=["fc1.weight", "fc2.weight"])
    inputs = rng.standard_normal((256, 12))
    targets = np.tanh(inputs @ rng.standard_normal((12, 3)))
    w1, b1 = rng.standard_normal((16, 12)) / np.sqrt(12), np.zeros(16)
    w2, b2 = rng.standard_normal((3, 16)) / 4, np.zeros(3)
    with StoreWriter(path, layout, dtype="float32", spacing={"unit": "step", "every": 1}) as writer:
        for k in range(n_steps + 1):
            writer.append(np.concatenate([w1.ravel(), b1, w2.ravel(), b2]).astype(np.float32), step=k, epoch=0)
            batch = rng.choice(256, size=16, replace=False)
            x, y = inputs[batch], targets[batch]
            h = np.tanh(x @ w1.T + b1)
            err = (h @ w2.T + b2 - y) / len(batch)
            dh = (err @ w2) * (1 - h**2)
            w2, b2 = w2 - 0.5 * err.T @ h, b2 - 0.5 * err.sum(0)
            w1, b1 = w1 - 0.5 * dh.T @ x, b1 - 0.5 * dh.sum(0)
    return RunStore(path), layout


def _full_rank_exact_dmd_kmp(window, prunable, compression):
    """KMP masks from an exact DMD at full rank written here in plain numpy (Tu et al. 2014; Redman et al. 2022's KMP), apart
    from traj's engine: SVD of X, Ã = Uᵀ Y V Σ⁻¹, eig, exact modes Φ = Y V Σ⁻¹ W, b = Φ⁺ θ0, score |Re(b1 φ1)| with
    λ1 the eigenvalue closest to 1, the top ⌈n/c⌉ prunable scores kept (ties: lower index)."""
    x, y = window[:-1].T, window[1:].T
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    lam, w = np.linalg.eig(u.T @ y @ vt.T / s)
    phi = y @ vt.T / s @ w
    b = np.linalg.lstsq(phi, x[:, 0].astype(complex), rcond=None)[0]
    one = int(np.argmin(np.abs(lam - 1)))
    score = np.abs(np.real(b[one] * phi[:, one]))
    index = np.concatenate([np.arange(c.start, c.stop) for c in prunable])
    mask = np.ones(window.shape[1], dtype=bool)
    mask[index] = False
    mask[index[np.argsort(-score[index], kind="stable")[: math.ceil(index.size / compression)]]] = True
    return mask, s, lam[one]


def test_default_rank_gives_the_masks_of_a_full_rank_exact_dmd(tmp_path):
    """Issue 26: Redman et al. 2022's KMP is exact DMD at full rank; `traj prune` by default now gives its masks (with rank
    "auto" the masks of real runs differed: overlap down to 0.00 at c = 64)."""
    store, layout = _sgd_run(tmp_path / "sgd.zarr")
    window = store.read(slice(0, store.n_snapshots)).astype(np.float64)
    prunable = [layout["fc1.weight"].columns, layout["fc2.weight"].columns]
    compressions = [2, 4, 8, 16, 32, 64]
    result = prune(store, epoch=0, methods=["kmp", "gmp"], compressions=compressions, evaluate=False)
    t = store.n_snapshots - 1
    assert len(result.eigenvalues) == t  # full rank: every one of the T directions (they all lie above the floor)
    for c in compressions:
        expected, sigma, lambda1 = _full_rank_exact_dmd_kmp(window, prunable, c)
        assert sigma[-1] / sigma[0] > 1e-4  # the run resolves its full rank, far above the float32 floor
        np.testing.assert_array_equal(result.mask("kmp", c), expected, err_msg=f"c = {c}")
    assert abs(result.lambda1 - lambda1) < 1e-8
    # the automatic rank keeps fewer modes here, and its masks are not the paper's
    auto = prune(store, epoch=0, methods=["kmp"], compressions=compressions, evaluate=False, rank="auto")
    assert len(auto.eigenvalues) < t
    assert any(not np.array_equal(auto.mask("kmp", c), _full_rank_exact_dmd_kmp(window, prunable, c)[0])
               for c in compressions)
