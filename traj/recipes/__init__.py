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
    return recipe


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
