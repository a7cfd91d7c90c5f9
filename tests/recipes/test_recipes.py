import numpy as np
import pytest
import torch

from traj.errors import RecipeConfigError, UnknownRecipeError
from traj.recipes import RECIPES, get_recipe, parse_set_option, recipe_from_store
from traj.store import RunStore

#: small but real configurations of every recipe (a few seconds each)
SMALL = {
    "quadratic-mlp": {"epochs": 2, "n_train": 200},
    "digits-cnn": {"epochs": 1},
    "mnist1d-mlp": {"epochs": 1, "n_samples": 500},
    "modular-transformer": {"epochs": 5, "p": 7},
    "mirror-descent": {"epochs": 10, "grid": 3},
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_is_deterministic_for_a_seed(tmp_path, name):
    a = get_recipe(name, SMALL[name]).record(tmp_path / "a.zarr")
    b = get_recipe(name, SMALL[name]).record(tmp_path / "b.zarr")
    c = get_recipe(name, {**SMALL[name], "seed": 1}).record(tmp_path / "c.zarr")
    assert a.n_snapshots >= 3
    assert a.read().tobytes() == b.read().tobytes()
    assert not np.array_equal(a.read(), c.read())
    assert a.recipe == {"name": name, "config": get_recipe(name, SMALL[name]).config, "seed": 0}
    # the store names its recipe; rebuilding it scores the last snapshot like the live run
    rebuilt = recipe_from_store(a)
    metrics = rebuilt.evaluate(a.snapshot(-1))
    assert np.isfinite(metrics["loss"])
    if name not in ("mirror-descent",):
        np.testing.assert_allclose(metrics["loss"], a.metric("val_loss")[-1], rtol=1e-6)


def test_classification_recipes_learn():
    recipe = get_recipe("digits-cnn", epochs=3)
    model = recipe.train()
    assert recipe.evaluate(recipe.theta_of(model))["accuracy"] > 0.7  # chance is 0.1


def test_refine_keeps_pruned_weights_at_zero():
    """The one refinement test: a GMP mask at c = 8 over the recorded run's prunable layers, as ``traj prune``
    builds it; refining holds every pruned weight at exactly 0 and trains every kept one."""
    from pathlib import Path

    from traj.analysis.prune import mask_from_scores

    store = RunStore(Path(__file__).resolve().parents[2] / "sample_data" / "digits-cnn.zarr")
    recipe = get_recipe("digits-cnn", epochs=1)
    theta = store.snapshot(-1).astype(np.float64)
    mask = mask_from_scores(np.abs(theta), [e.columns for e in store.layout.prunable_entries], 8)
    masks = {e.name: mask[e.columns].reshape(e.shape).astype(np.float32) for e in store.layout.prunable_entries}
    refined = recipe.refine((theta * mask).astype(np.float32), 1, mask=masks, seed=0)
    assert np.all(refined[~mask] == 0)
    assert np.count_nonzero(refined[mask]) == int(mask.sum())
    assert np.count_nonzero(refined[mask] != (theta * mask)[mask].astype(np.float32)) > 0.9 * mask.sum()


def test_mirror_descent_ogd_is_omd_in_mirror_coordinates():
    omd = get_recipe("mirror-descent", algorithm="omd", epochs=50)
    ogd = get_recipe("mirror-descent", algorithm="ogd", epochs=50)
    x = omd.theta_of(omd.train())
    y = ogd.theta_of(ogd.train())
    np.testing.assert_allclose(y, np.sinh(x), rtol=1e-10, atol=1e-12)  # h maps one onto the other
    # near x* = 0 the iteration contracts at 1 - eta per step (linearisation: tan'(0) = sinh'(0) = 1)
    near = get_recipe("mirror-descent", algorithm="omd", epochs=50, extent=1e-4, grid=2)
    x0 = near.initial_conditions().reshape(-1)
    np.testing.assert_allclose(near.theta_of(near.train()) / x0, (1 - 1e-2) ** 50, rtol=1e-6)


def test_mirror_descent_uniform_initial_conditions():
    a = get_recipe("mirror-descent", ics="uniform", grid=4, extent=0.5, seed=0).initial_conditions()
    b = get_recipe("mirror-descent", ics="uniform", grid=4, extent=0.5, seed=1).initial_conditions()
    assert a.shape == b.shape == (16, 2) and np.abs(a).max() <= 0.5 and np.abs(b).max() <= 0.5
    assert np.abs(a - b).max() > 0.05  # a seed draws a new ensemble, not a jitter of one grid
    np.testing.assert_array_equal(a, get_recipe("mirror-descent", ics="uniform", grid=4, extent=0.5, seed=0).initial_conditions())
    with pytest.raises(RecipeConfigError, match="ics must be"):
        get_recipe("mirror-descent", ics="sobol")


def test_bisection_halves_its_bracket():
    recipe = get_recipe("mirror-descent", algorithm="bisection", epochs=1)
    state = recipe.new_model()
    width0 = (state.hi - state.lo).clone()
    recipe.train(state, epochs=6)
    np.testing.assert_allclose((state.hi - state.lo).numpy(), width0.numpy() / 2**6, rtol=1e-12)
    assert (state.lo <= 0).all() and (state.hi >= 0).all()


def test_norm_constraint_holds_the_weight_norm():
    recipe = get_recipe("modular-transformer", p=7, epochs=5, constrain_norm=True, norm_scale=0.8)
    initial = np.linalg.norm(recipe.theta_of(recipe.new_model()))
    final = np.linalg.norm(recipe.theta_of(recipe.train()))
    assert final == pytest.approx(0.8 * initial, rel=1e-5)


def test_config_errors():
    with pytest.raises(UnknownRecipeError, match="built-in recipes"):
        get_recipe("resnet-imagenet")
    with pytest.raises(RecipeConfigError, match="no option 'widht'"):
        get_recipe("digits-cnn", widht=3)
    with pytest.raises(RecipeConfigError, match="epochs takes an integer"):
        get_recipe("digits-cnn", {"epochs": "many"})
    with pytest.raises(RecipeConfigError, match="epochs must be an integer from 1 to"):
        get_recipe("digits-cnn", epochs=0)
    with pytest.raises(RecipeConfigError, match="algorithm must be"):
        get_recipe("mirror-descent", algorithm="newton")
    with pytest.raises(RecipeConfigError, match="key=value"):
        parse_set_option(["lr"])
    assert get_recipe("digits-cnn", {"every": "epoch", "lr": "0.5"}).config["lr"] == 0.5
    assert get_recipe("modular-transformer", constrain_norm="true").config["constrain_norm"] is True


def test_every_epoch_records_epoch_ends(tmp_path):
    store = get_recipe("quadratic-mlp", epochs=3, n_train=64, batch_size=16, every="epoch").record(tmp_path / "e.zarr")
    np.testing.assert_array_equal(store.steps, [0, 4, 8, 12])
    np.testing.assert_array_equal(store.epochs, [0, 0, 1, 2])
    assert isinstance(store, RunStore)


def test_global_rng_untouched():
    torch.manual_seed(7)
    np.random.seed(7)
    expected_t, expected_n = torch.rand(1), np.random.rand()
    torch.manual_seed(7)
    np.random.seed(7)
    get_recipe("mnist1d-mlp", n_samples=100).data  # noqa: B018 (mnist1d reseeds numpy)
    get_recipe("digits-cnn").new_model()
    assert torch.rand(1) == expected_t and np.random.rand() == expected_n


def test_every_numeric_option_has_a_range_and_every_size_an_upper_bound():
    """One check loop serves every recipe; a recipe's own int option without an upper bound could
    let a config (from --set or a store) allocate without limit."""
    from traj.recipes import RECIPES

    for name, cls in RECIPES.items():
        limits = cls.all_limits()
        for key, default in cls.all_defaults().items():
            if key == "every" or isinstance(default, bool | str):
                continue
            assert key in limits, (name, key)
            if isinstance(default, int):
                assert limits[key].high is not None, (name, key)
            get_recipe(name, {key: default})  # the default itself lies in range
            with pytest.raises(RecipeConfigError, match=f"{key} must be"):
                get_recipe(name, {key: float("nan") if isinstance(default, float) else 10**30})


def test_any_recorded_config_builds_a_recipe_or_fails_with_one_error():
    """Whatever JSON a store's recipe config holds: a recipe within every range, or RecipeConfigError."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from traj.recipes import RECIPES

    scalars = (st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats() | st.text(max_size=8)
               | st.sampled_from(["epoch", "sgd", "omd", "grid", "1e11", "nan", "-inf", "true"]))
    values = scalars | st.lists(scalars, max_size=2) | st.dictionaries(st.text(max_size=3), scalars, max_size=2)

    @settings(max_examples=300, deadline=None)
    @given(name=st.sampled_from(sorted(RECIPES)), data=st.data())
    def check(name, data):
        options = sorted(RECIPES[name].all_defaults())
        config = data.draw(st.dictionaries(st.sampled_from(options), values, max_size=4))
        try:
            recipe = get_recipe(name, config)
        except RecipeConfigError:
            return
        limits = recipe.all_limits()
        for key, value in recipe.config.items():
            if key in limits and isinstance(value, int | float) and not isinstance(value, bool):
                assert np.isfinite(value) and (limits[key].high is None or value <= limits[key].high), (key, value)

    check()


def test_digits_augmentation_is_seeded_and_exact():
    import torch.nn.functional as F

    from traj.recipes.digits_cnn import augment_digits

    x = get_recipe("digits-cnn").data.x_train
    assert float(x.sum()) == 28114.25
    # seed 0, defaults (shift 1, 10 degrees): about 8.7 % of the ink leaves the 8x8 frame
    assert float(augment_digits(x, seed=0, epoch=0).sum()) == pytest.approx(25680.91, rel=1e-4)
    assert float(augment_digits(x, seed=0, epoch=1).sum()) == pytest.approx(25728.89, rel=1e-4)
    assert torch.equal(augment_digits(x, seed=0, epoch=3), augment_digits(x, seed=0, epoch=3))
    assert torch.equal(augment_digits(x, seed=0, epoch=0, shift=0, degrees=0), x)
    # no rotation: the zero-padded integer shift the generator drew, exactly
    offsets = np.random.default_rng([0, 0]).integers(-1, 2, size=(x.shape[0], 2))
    padded = F.pad(x, (1, 1, 1, 1))
    shifted = torch.stack([padded[i, :, 1 - dy : 9 - dy, 1 - dx : 9 - dx] for i, (dx, dy) in enumerate(offsets)])
    assert torch.equal(augment_digits(x, seed=0, epoch=0, degrees=0), shifted)


def test_augmented_training_is_reproducible_and_differs_from_plain():
    def theta(**config):
        recipe = get_recipe("digits-cnn", epochs=1, **config)
        return recipe.theta_of(recipe.train())

    plain, augmented = theta(), theta(augment=True)
    np.testing.assert_array_equal(augmented, theta(augment=True))
    np.testing.assert_array_equal(plain, theta(augment=False, aug_shift=3))  # options unused without augment
    assert np.abs(augmented - plain).max() > 1e-3
    with pytest.raises(RecipeConfigError):
        get_recipe("digits-cnn", aug_shift=4)
