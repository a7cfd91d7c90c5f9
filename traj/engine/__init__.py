"""The streaming engine: block reductions over a run store and the small-matrix Koopman code."""

from .operator import ReducedOperator, gavish_donoho_threshold, relative_floor, singular_values_from_gram
from .reductions import BACKENDS, Engine, block_bytes_from_mib

__all__ = ["BACKENDS", "Engine", "block_bytes_from_mib", "ReducedOperator", "gavish_donoho_threshold", "relative_floor",
           "singular_values_from_gram"]
