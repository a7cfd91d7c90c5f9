"""The options of a conjugacy comparison, checked once (:class:`ConjugacyParams`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ...checks import check_float, check_int
from ...engine.operator import check_rank
from ...errors import ParameterError
from ..windows import Window
from .results import Rule
from .spectra import SMALL_OBSERVABLE, parse_observable

__all__ = ["MAX_NULL_SIZE", "ConjugacyParams", "RankRule"]


#: Most maps of the reparametrisation null. Its bound is a conformal quantile of n values, whose level is
#: exact to 1/(n + 1): 1000 maps resolve the 95 % quantile to 0.1 %, far below the seed null's own sampling
#: error, and each map is a DMD fit and a Gram (or a copy of the observable) held until the verdicts.
MAX_NULL_SIZE = 1000


RankRule = int | Literal["auto", "k"] | None


def _check_rank_rule(rank: int | str | None) -> RankRule:
    return "k" if rank == "k" else check_rank(rank)  # type: ignore[return-value]


def _check_center(center: bool, kind: str) -> bool:
    if not isinstance(center, bool | np.bool_):
        raise ParameterError("center", f"must be True or False, got {center!r}")
    if center and kind != "pca":
        raise ParameterError("center", "applies to observable 'pca:K' only (the other observables are never centred)")
    return bool(center)


def _check_stack(stack: int | bool | None) -> int | bool | None:
    if stack is None or isinstance(stack, bool):
        return stack
    return check_int("stack", stack, low=1)


@dataclass(frozen=True)
class ConjugacyParams:
    """The options of a conjugacy comparison, checked (see :func:`conjugacy` for their meaning)."""

    window: Window = None
    layer: str | None = None
    rank: RankRule = "k"
    k: int | None = 10
    quantile: float = 0.95
    tolerance: float = 1e-8
    margin: float = 0.0
    windows: int | None = None
    stack: int | bool | None = None
    delays: int | None = None
    small_observable: int = SMALL_OBSERVABLE
    observable: str = "all"
    null_size: int = 20
    null_strength: float = 0.1
    null_seed: int = 0
    rule: Rule = "reproducible"
    center: bool = False

    @classmethod
    def checked(cls, *, window: Window = None, layer: str | None = None, rank: int | str | None = "k",
                k: int | None = 10, quantile: float = 0.95, tolerance: float = 1e-8, margin: float = 0.0,
                windows: int | None = None, stack: int | bool | None = None, delays: int | None = None,
                small_observable: int = SMALL_OBSERVABLE, observable: str | None = None, null_size: int = 20,
                null_strength: float = 0.1, null_seed: int = 0, rule: str = "reproducible",
                center: bool = False) -> ConjugacyParams:
        kind, arg = parse_observable(observable, layer)
        if isinstance(null_size, int) and not isinstance(null_size, bool) and null_size > MAX_NULL_SIZE:
            raise ParameterError("null_size", f"must be an integer from 0 to {MAX_NULL_SIZE}, got {null_size}: the "
                                              f"null's conformal bound is exact to 1/(n + 1), 0.1 % at {MAX_NULL_SIZE} "
                                              "maps, and each map costs a DMD fit and its Grams in memory")
        if rule not in ("reproducible", "plain"):
            raise ParameterError("rule", f"must be 'reproducible' or 'plain', got {rule!r}")
        return cls(
            window=window,
            layer=arg if kind == "layer" else None,  # type: ignore[arg-type]
            rank=_check_rank_rule(rank),
            k=None if k is None else check_int("k", k, low=1),
            quantile=check_float("quantile", quantile, low=0, high=1, low_open=True),
            tolerance=check_float("tolerance", tolerance, low=0),
            margin=check_float("margin", margin, low=0),
            windows=None if windows is None else check_int("windows", windows, low=2),
            stack=_check_stack(stack),
            delays=None if delays is None else check_int("delays", delays, low=0),
            small_observable=check_int("small_observable", small_observable, low=0),
            observable="all" if kind == "all" else f"{kind}:{arg}",
            null_size=check_int("null_size", null_size, low=0, high=MAX_NULL_SIZE),
            null_strength=check_float("null_strength", null_strength, low=0, high=1 / 3, low_open=True,
                                      high_open=True),
            null_seed=check_int("null_seed", null_seed, low=0),
            rule=rule,  # type: ignore[arg-type]
            center=_check_center(center, kind),
        )
