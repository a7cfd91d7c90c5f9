"""The streaming engine: block reductions over a run store and the small-matrix Koopman code."""

from .operator import (
    ReducedOperator,
    Truncation,
    gavish_donoho_threshold,
    precision_floor,
    singular_values_from_gram,
    truncate,
)
from .reductions import BACKENDS, Engine, block_bytes_from_mib

__all__ = ["BACKENDS", "Engine", "block_bytes_from_mib", "ReducedOperator", "Truncation", "gavish_donoho_threshold",
           "precision_floor", "singular_values_from_gram", "truncate"]
