"""The streaming engine: block reductions over a run store and the small-matrix Koopman code."""

from .operator import ReducedOperator, gavish_donoho_threshold, relative_floor, singular_values_from_gram
from .reductions import BACKENDS, Engine

__all__ = ["BACKENDS", "Engine", "ReducedOperator", "gavish_donoho_threshold", "relative_floor",
           "singular_values_from_gram"]
