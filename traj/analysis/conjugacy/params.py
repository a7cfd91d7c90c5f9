"""The options of a conjugacy comparison, declared once (:class:`ConjugacyParams`, see :mod:`traj.options`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ...checks import check_int
from ...engine.truncation import rank_option
from ...errors import ParameterError
from ...options import Params, choice, custom, integer, number, seed, switch
from ..windows import Window, check_window
from .results import Rule
from .spectra import SMALL_OBSERVABLE, parse_observable

__all__ = ["MAX_NULL_SIZE", "ConjugacyParams", "RankRule"]


#: Most maps of the reparametrisation null. Its bound is a conformal quantile of n values, whose level is
#: exact to 1/(n + 1): 1000 maps resolve the 95 % quantile to 0.1 %, far below the seed null's own sampling
#: error, and each map is a DMD fit and a Gram (or a copy of the observable) held until the verdicts.
MAX_NULL_SIZE = 1000


RankRule = int | Literal["auto", "k"] | None


def _check_stack(name: str, stack: Any) -> int | bool | None:
    if stack is None or isinstance(stack, bool):
        return stack
    return check_int(name, stack, low=1)


def _check_layer(name: str, layer: Any) -> str | None:
    if layer is not None and (not isinstance(layer, str) or not layer):
        raise ParameterError(name, f"must be a parameter tensor's name, got {layer!r}")
    return layer


def _check_observable(name: str, observable: Any) -> str:
    kind, arg = parse_observable(observable)
    return "all" if kind == "all" else f"{kind}:{arg}"


@dataclass(frozen=True)
class ConjugacyParams(Params):
    """The options of a conjugacy comparison, each checked when the class is built (see :func:`conjugacy` for
    their meaning). The fields keep what was given (so ``dataclasses.replace`` changes one option and nothing
    else); ``layer=NAME`` is ``observable="layer:NAME"``, and :attr:`observed` and :attr:`layer_name` say
    what is observed whichever way it was given."""

    window: Window = custom(None, check_window, help="Snapshots a:b used in every run.")
    observable: str = custom("all", _check_observable,
                             help="What DMD sees: 'all' weights, 'layer:NAME' (one parameter tensor) or 'pca:K' "
                                  "(K principal-component scores, from the Gram).")
    layer: str | None = custom(None, _check_layer, help="Same as --observable layer:NAME.")
    center: bool = switch(help="pca:K: remove the window's mean from the scores (off: the authors' projection, "
                               "a fixed linear map of the weights).")
    rank: RankRule = rank_option("k", keywords=("auto", "k"),
                                 help="DMD rank: 'k' (every run at rank k, or the smallest rank any run resolves), an "
                                 "integer, or 'auto' (Gavish-Donoho per run).")
    k: int | None = integer(10, low=1, optional=True, help="Eigenvalues compared per run (largest modulus first).")
    null_size: int = integer(20, low=0, high=MAX_NULL_SIZE,
                             why=f"the null's conformal bound is exact to 1/(n + 1), 0.1 % at {MAX_NULL_SIZE} maps, "
                                 "and each map costs a DMD fit and its Grams in memory",
                             help="Reparametrisation null: how many smooth monotone coordinate maps, split over the "
                                  "first run and its --null runs (0: off).")
    null_strength: float = number(0.1, low=0, high=1 / 3, low_open=True, high_open=True,
                                  help="Reparametrisation null: each map's largest displacement, as a fraction of "
                                       "each coordinate's half-range (< 1/3).")
    null_seed: int = seed(0, help="Reparametrisation null: which maps are drawn.")
    rule: Rule = choice("reproducible", ("reproducible", "plain"),
                        help="'reproducible' (with --null: compare only the eigenvalues every seed reproduces, each "
                             "run against the first run's family of seed runs in units of each eigenvalue's spread) "
                             "or 'plain' (W1 of the rank rule's eigenvalues beside the nulls' bounds, no verdict).")
    quantile: float = number(0.95, low=0, high=1, low_open=True, help="Null quantile below which a pair is conjugate.")
    tolerance: float = number(1e-8, low=0, help="Distances below this count as zero (the eigenvalues' own precision).")
    margin: float = number(0.0, low=0, help="Equivalence margin: distances up to it are conjugate whatever the nulls "
                                            "(0: the nulls alone decide).")
    windows: int | None = integer(None, low=2, optional=True,
                                  help="Split the first run into W windows and compare them.")
    delays: int | None = integer(None, low=0, optional=True,
                                 help="Time delays (Hankel DMD); default 4 for mirror-descent, else 0.")
    stack: int | bool | None = custom(None, _check_stack,
                                      help="Split the observable into N equal trajectories of one system (1: none; "
                                           "default: a mirror-descent store's 25 initial conditions).")
    small_observable: int = integer(SMALL_OBSERVABLE, low=0,
                                    help="Observables up to this many coordinates (times delays + 1) are decomposed "
                                         "in memory; larger ones through the streamed Gram.")

    def validate(self) -> None:
        if self.layer is not None and self.observable != "all":
            raise ParameterError("layer", f"and the observable {self.observable!r} both given (a layer is the "
                                          "observable 'layer:NAME'): use one")
        if self.center and not self.observable.startswith("pca:"):
            raise ParameterError("center", "applies to observable 'pca:K' only (the other observables are never "
                                           "centred)")

    @property
    def observed(self) -> str:
        """What DMD sees, in one spelling: ``all``, ``layer:NAME`` (``layer=NAME`` included) or ``pca:K``."""
        return f"layer:{self.layer}" if self.layer is not None else self.observable

    @property
    def layer_name(self) -> str | None:
        """The one parameter tensor observed (``layer=`` or ``observable="layer:NAME"``), else None."""
        kind, _, name = self.observed.partition(":")
        return name if kind == "layer" else None
