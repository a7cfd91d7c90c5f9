"""masks.zarr back into PyTorch: apply_masks, traj prune --export, overlaps from the file."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import traj
from traj.analysis.masks import load_mask, mask_overlap_from_file
from traj.cli.app import app
from traj.errors import LayoutMismatchError, TrajError
from traj.recipes import recipe_from_store
from traj.store import RunStore

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    out = tmp_path_factory.mktemp("prune") / "rep"
    result = CliRunner().invoke(app, ["prune", str(SAMPLE / "digits-cnn.zarr"), "--method", "kmp,gmp", "--compression",
                                      "2,8", "--refine-epochs", "0", "--seeds", "1", "--export", "--out", str(out),
                                      "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def _val_accuracy(recipe, model):
    data = recipe.data
    return recipe.metrics(model, data.x_val, data.y_val)["accuracy"]


def test_exported_state_dicts_evaluate_to_the_reported_accuracy(pruned):
    from safetensors.torch import load_file

    out, summary = pruned
    assert sorted(p.name for p in (out / "export").iterdir()) == [
        "gmp-c2.safetensors", "gmp-c8.safetensors", "kmp-c2.safetensors", "kmp-c8.safetensors"]
    store = RunStore(SAMPLE / "digits-cnn.zarr")
    recipe = recipe_from_store(store)
    for method in ("kmp", "gmp"):
        for c in ("2", "8"):
            model = recipe.new_model()
            state = load_file(out / "export" / f"{method}-c{c}.safetensors")
            model.load_state_dict(state, strict=True)
            zeros = sum(int((state[e.name] == 0).sum()) for e in store.layout.prunable_entries)
            assert zeros == summary["n_prunable"] - summary["kept"][method][c]
            assert _val_accuracy(recipe, model) == summary["accuracy"][method][c]["mean"]


def test_apply_masks_gives_the_masks_zero_count_and_accuracy(pruned):
    out, summary = pruned
    store = RunStore(SAMPLE / "digits-cnn.zarr")
    recipe = recipe_from_store(store)
    theta = store.snapshot(summary["window"][1])
    mask, layout, prunable = load_mask(out / "masks.zarr", "kmp", 8)
    assert int((~mask).sum()) == summary["n_prunable"] - summary["kept"]["kmp"]["8"]
    assert not (~mask & ~prunable).any()  # only prunable weights are ever dropped
    model = traj.apply_masks(recipe.load_theta(recipe.new_model(), theta), out / "masks.zarr", method="kmp",
                             compression=8)
    masks = {n: b for n, b in model.named_buffers() if n.endswith("_mask")}
    assert sorted(masks) == sorted(f"{e.name}_mask" for e in layout.prunable_entries)
    assert sum(int((b == 0).sum()) for b in masks.values()) == int((~mask).sum())
    weights = dict(model.named_modules())
    assert sum(int((weights[e.name.rpartition(".")[0]].weight == 0).sum())
               for e in layout.prunable_entries) == int((~mask).sum())
    assert _val_accuracy(recipe, model) == summary["accuracy"]["kmp"]["8"]["mean"]
    # the mask holds through training: dropped weights stay zero after an optimizer step
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = recipe.data
    recipe.loss_fn(model(data.x_train[:32]), data.y_train[:32]).backward()
    opt.step()
    assert sum(int((b == 0).sum()) for b in masks.values()) == int((~mask).sum())
    permanent = traj.apply_masks(recipe.load_theta(recipe.new_model(), theta), out / "masks.zarr", method="kmp",
                                 compression=8, permanent=True)
    assert not any(n.endswith("_mask") for n, _ in permanent.named_buffers())
    assert sorted(permanent.state_dict()) == sorted(layout.names)


def test_overlaps_from_the_file_count_prunable_weights_only(pruned):
    out, summary = pruned
    for i, c in enumerate((2, 8)):
        assert mask_overlap_from_file(out / "masks.zarr", "kmp", "gmp", c) == summary["overlap"]["kmp-gmp"][i]
        a, _, prunable = load_mask(out / "masks.zarr", "kmp", c)
        b, _, _ = load_mask(out / "masks.zarr", "gmp", c)
        everything = np.count_nonzero(a & b) / math.ceil(prunable.sum() / c)
        assert everything > summary["overlap"]["kmp-gmp"][i]  # biases are kept in every mask
    assert mask_overlap_from_file(out / "masks.zarr", "kmp", "kmp", 8) == 1.0


def test_apply_masks_refuses_another_model(pruned):
    out, _ = pruned
    store = RunStore(SAMPLE / "digits-cnn.zarr")
    recipe = recipe_from_store(store)
    with pytest.raises(LayoutMismatchError, match="no parameter '0.weight'"):
        traj.apply_masks(torch.nn.Linear(3, 4), out / "masks.zarr")
    model = recipe.new_model()
    first = store.layout.prunable_entries[0].name
    owner, _, attr = first.rpartition(".")
    setattr(model.get_submodule(owner), attr, torch.nn.Parameter(torch.zeros(1, *store.layout[first].shape[1:])))
    with pytest.raises(LayoutMismatchError, match=f"'{first}' has shape"):
        traj.apply_masks(model, out / "masks.zarr")
    model = traj.apply_masks(recipe.new_model(), out / "masks.zarr", method="gmp", compression=2)
    with pytest.raises(LayoutMismatchError, match="already pruned"):
        traj.apply_masks(model, out / "masks.zarr")
    with pytest.raises(TrajError, match=r"no kgp mask at compression 8 \(it has gmp at c = 2, 8; kmp at c = 2, 8\)"):
        traj.apply_masks(recipe.new_model(), out / "masks.zarr", method="kgp")
    with pytest.raises(TrajError, match="not a masks.zarr"):
        traj.apply_masks(recipe.new_model(), SAMPLE / "digits-cnn.zarr")


def test_export_of_a_model_with_tied_weights_loads_with_the_documented_call(tmp_path):
    """Issue 25: GPT-2 ties lm_head.weight to transformer.wte.weight; the store (named_parameters) holds the
    tensor once, so `model.load_state_dict(load_file(path))` fails with a missing "lm_head.weight". The call
    the README and `traj prune --help` give, `safetensors.torch.load_model(model, path)`, loads it strictly."""
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file, load_model

    from traj.analysis.masks import write_exports
    from traj.record.recorder import layout_of
    from traj.store import StoreWriter

    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=32)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    assert model.lm_head.weight is model.transformer.wte.weight
    layout, params = layout_of(model)
    assert "lm_head.weight" not in layout.names and "transformer.wte.weight" in layout.names
    theta0 = torch.cat([p.detach().reshape(-1) for p in params]).numpy().astype(np.float32)
    rng = np.random.default_rng(0)
    with StoreWriter(tmp_path / "gpt2.zarr", layout, dtype="float32") as writer:
        for step in range(5):
            writer.append(theta0 * (1 + 0.01 * step) + 0.001 * rng.standard_normal(theta0.size).astype(np.float32),
                          step=step, epoch=0)
    store = RunStore(tmp_path / "gpt2.zarr")
    result = traj.prune(store, window="0:4", methods=["gmp"], compressions=[4], evaluate=False, refine_epochs=0)
    (path,) = write_exports(result, store, tmp_path / "export")

    fresh = transformers.GPT2LMHeadModel(config)
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "lm_head.weight"'):
        fresh.load_state_dict(load_file(path))
    missing, unexpected = load_model(fresh, path)  # strict: raises on any other missing or unexpected name
    assert not missing and not unexpected
    assert fresh.lm_head.weight is fresh.transformer.wte.weight  # still tied, to the exported embedding
    state = load_file(path)
    for name, p in fresh.named_parameters():
        torch.testing.assert_close(p.detach(), state[name], rtol=0, atol=0)
    dropped = sum(int((state[e.name] == 0).sum()) for e in layout.prunable_entries)
    assert dropped == result.n_prunable - int(result.kept["gmp"][0])
    np.testing.assert_array_equal(fresh.transformer.wte.weight.detach().numpy().ravel(),
                                  store.snapshot(4)[layout["transformer.wte.weight"].offset:
                                                    layout["transformer.wte.weight"].stop])
