"""The built-in training recipes, looked up by name only (a store's attributes never import code)."""

from __future__ import annotations

from ..errors import UnknownRecipeError
from .base import COMMON_DEFAULTS, Dataset, EpochReport, Recipe, parse_set_option
from .digits_cnn import DigitsCNN
from .mirror_descent import MirrorDescent
from .mnist1d_mlp import MNIST1DMLP
from .modular_transformer import ModularTransformer
from .quadratic_mlp import QuadraticMLP

__all__ = [
    "COMMON_DEFAULTS",
    "Dataset",
    "EpochReport",
    "RECIPES",
    "Recipe",
    "get_recipe",
    "parse_set_option",
    "recipe_from_store",
]

RECIPES: dict[str, type[Recipe]] = {
    cls.name: cls for cls in (QuadraticMLP, DigitsCNN, MNIST1DMLP, ModularTransformer, MirrorDescent)
}


def get_recipe(name: str, config: dict | None = None, **overrides: object) -> Recipe:
    """A configured built-in recipe; unknown names raise :class:`UnknownRecipeError`."""
    try:
        cls = RECIPES[name]
    except (KeyError, TypeError):
        raise UnknownRecipeError(f"unknown recipe {name!r}; built-in recipes: {', '.join(RECIPES)}") from None
    return cls(config, **overrides)


def recipe_from_store(store: object) -> Recipe | None:
    """The recipe that recorded a store, rebuilt from its attributes (built-in recipes only)."""
    info = getattr(store, "recipe", None)
    if not info:
        return None
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    return get_recipe(info.get("name"), config)
