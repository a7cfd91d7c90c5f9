"""The streaming engine: block reductions over a run store and the small-matrix Koopman code."""

from .operator import ReducedOperator, singular_values_from_gram
from .reductions import BACKENDS, Engine, block_bytes_from_mib
from .truncation import Truncation, gavish_donoho_threshold, precision_floor, truncate

__all__ = ["BACKENDS", "Engine", "block_bytes_from_mib", "ReducedOperator", "Truncation", "gavish_donoho_threshold",
           "precision_floor", "singular_values_from_gram", "truncate"]
