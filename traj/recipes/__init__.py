"""The built-in training recipes, looked up by name only (a store's attributes never import code)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ..errors import RecipeConfigError, UnknownRecipeError
from .base import COMMON_DEFAULTS, Dataset, EpochReport, Recipe, parse_set_option
from .digits_cnn import DigitsCNN
from .mirror_descent import MirrorDescent
from .mnist1d_mlp import MNIST1DMLP
from .modular_transformer import ModularTransformer
from .quadratic_mlp import QuadraticMLP

__all__ = [
    "COMMON_DEFAULTS",
    "resolve_recipe",
    "check_evaluation_cost",
    "check_fits",
    "Dataset",
    "EpochReport",
    "RECIPES",
    "Recipe",
    "get_recipe",
    "parse_set_option",
    "recipe_from_store",
]

RECIPES: Mapping[str, type[Recipe]] = MappingProxyType({
    cls.name: cls for cls in (QuadraticMLP, DigitsCNN, MNIST1DMLP, ModularTransformer, MirrorDescent)
})


def get_recipe(name: str, config: dict | None = None, **overrides: object) -> Recipe:
    """A configured built-in recipe; unknown names raise :class:`UnknownRecipeError`."""
    try:
        cls = RECIPES[name]
    except (KeyError, TypeError):
        raise UnknownRecipeError(f"unknown recipe {name!r}; built-in recipes: {', '.join(RECIPES)}") from None
    return cls(config, **overrides)


def recipe_from_store(store: object, *, must_fit: bool = True) -> Recipe | None:
    """The recipe that recorded a store, rebuilt from its attributes (built-in recipes only).

    The recorded config is checked like any other (type, range, size bounds): a store cannot
    make a command build a huge model or train forever.
    """
    info = getattr(store, "recipe", None)
    if not info:
        return None
    recipe = _configured(store, info.get("name"), info)
    return check_fits(recipe, store) if must_fit else recipe


#: Samples x parameters one evaluation of a recipe may cost: about 1 s and 0.55 GB for quadratic-mlp's MLP
#: (2 million samples through 1185 parameters, measured on 2 cores). Commands score weights 12 to ~100 times
#: (dmd --evaluate: points x ranks; report: CMD, DMD and pruning), so this bounds their total too. The
#: built-in recipes' defaults cost 1e2 to 1.8e7.
MAX_EVALUATION_WORK = 2_500_000_000


def check_evaluation_cost(recipe: Recipe, where: str = "the store") -> Recipe:
    """``recipe`` if one evaluation of a weight vector costs at most MAX_EVALUATION_WORK samples x parameters,
    else RecipeConfigError naming the samples, the parameters and what to do (a config within every
    option's own range, n_train = n_val = 10^7, took > 170 s and 3 GB to score)."""
    from ..errors import RecipeConfigError

    n_params = sum(p.numel() for p in recipe.new_model().parameters())
    samples = recipe.evaluation_samples()
    if samples * n_params > MAX_EVALUATION_WORK:
        raise RecipeConfigError(
            f"{where}: scoring weights with the recipe {recipe.name!r} as configured runs {samples:,} samples through "
            f"{n_params:,} parameters ({samples * n_params:.1e} per evaluation, limit {MAX_EVALUATION_WORK:.1e}: about "
            "1 s each, and commands score weights 12 to 100 times): analyse without evaluation (--no-evaluate; dmd: "
            "without --evaluate), or give a recipe with fewer samples (--recipe)")
    return recipe


def check_fits(recipe: Recipe, store: object) -> Recipe:
    """``recipe`` if its model has the store's layout (same tensors, names and shapes), else LayoutMismatchError.

    A recipe scores or continues weights read from the store; one whose model differs would fail deep
    inside torch (a reshape of 1185 values into pairs) or, worse, score the wrong weights.
    """
    from ..errors import LayoutMismatchError
    from ..record.recorder import layout_of

    layout = getattr(store, "layout", None)
    if layout is None:
        return recipe
    mine = layout_of(recipe.new_model())[0]
    try:
        mine.check_same(layout)
    except LayoutMismatchError as exc:
        where = getattr(getattr(store, "path", None), "name", "the store")
        detail = str(exc).removeprefix("layout differs from the store: ")
        raise LayoutMismatchError(
            f"{where}: the recipe {recipe.name!r} does not fit this store: its model has {mine.n_params} parameters "
            f"in {len(mine)} tensor(s), the store {layout.n_params} in {len(layout)} ({detail}); give the recipe "
            "that recorded the store") from None
    return check_evaluation_cost(recipe, getattr(getattr(store, "path", None), "name", "the store"))


def _configured(store: object, name: object, info: dict) -> Recipe:
    """Built-in recipe ``name`` with the config recorded in ``info``; errors name the store."""
    config = info.get("config")
    where = getattr(getattr(store, "path", None), "name", "the store")
    try:
        if config is not None and not isinstance(config, dict):
            raise RecipeConfigError(f"config must be a mapping of options, got {type(config).__name__}")
        return get_recipe(name, config)  # type: ignore[arg-type]
    except RecipeConfigError as exc:
        raise RecipeConfigError(f"{where}: the recipe recorded in this store is unusable: {exc}") from None


def resolve_recipe(spec: str | None, store: object = None, *, must_fit: bool = True) -> Recipe | None:
    """The recipe a command should use.

    ``spec`` comes from the user's command line only: a built-in name (configured from the
    store when the store names the same recipe), or ``module:function`` (imported and called
    with no arguments; it must return a :class:`Recipe`). Without ``spec``, the store's recipe
    is looked up among the built-in recipes only: a store's attributes never import code.
    With ``must_fit`` (the default: the recipe scores or continues the store's weights) its model must
    have the store's layout (:func:`check_fits`); ``kga-replay`` trains the recipe anew and needs no fit.
    """
    fits = (lambda chosen: check_fits(chosen, store)) if must_fit and store is not None else (lambda chosen: chosen)
    if spec is None:
        return recipe_from_store(store, must_fit=must_fit) if store is not None else None
    if ":" not in spec:
        info = getattr(store, "recipe", None) or {}
        chosen = _configured(store, spec, info) if info.get("name") == spec else get_recipe(spec)
        return fits(chosen)
    import importlib

    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownRecipeError(f"cannot load the recipe {spec!r}: {exc}") from None
    if not callable(factory):
        raise UnknownRecipeError(f"{spec!r} is not a function ({type(factory).__name__}): give one returning a traj Recipe")
    try:
        recipe = factory()
    except Exception as exc:  # the user's code: one line here, the traceback under traj --debug
        raise UnknownRecipeError(f"the recipe {spec!r} raised {type(exc).__name__}: {exc} "
                                 "(traj --debug shows where)") from exc
    if not isinstance(recipe, Recipe):
        raise UnknownRecipeError(f"{spec!r} returned {type(recipe).__name__}, not a traj Recipe")
    return fits(recipe)
