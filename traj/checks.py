"""Checks of option values, shared by every analysis, the engine, the recipes and the importers.

Each entry function validates its own arguments once, at the door, before any work, with
these helpers; a bad value raises :class:`~traj.errors.ParameterError` naming the parameter
(the CLI shows it under its flag). One rule, one place: "a finite number in (0, 1]" or "an
integer from 1 to 4096" is written here once, and callers only state the bounds.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import ParameterError

__all__ = ["MAX_EPOCHS", "MAX_EVERY", "MAX_SEED", "check_choice", "check_float", "check_floats", "check_int", "check_ints",
           "check_every", "check_seed", "describe_range", "shown_value"]

#: Seeds of numpy, torch and the recipes: what numpy's legacy seeding and most tools accept.
MAX_SEED = 2**32 - 1
#: Epochs of any training a command runs (a recipe, a refinement, a replay).
MAX_EPOCHS = 100_000
#: Steps between two snapshots (recorded or imported); steps stay far inside int64.
MAX_EVERY = 10**9


def describe_range(integer: bool, low: float | None, high: float | None, *, low_open: bool = False,
                   high_open: bool = False) -> str:
    """The words for a range: 'an integer from 1 to 4096', 'a finite number in (0, 1]', ..."""
    if integer:
        noun = "an integer"
        if low is not None and high is not None:
            return f"{noun} from {low} to {high}"
    else:
        noun = "a finite number"
        if low is not None and high is not None:
            return f"{noun} in {'(' if low_open else '['}{low:.10g}, {high:.10g}{')' if high_open else ']'}"
    fmt = (lambda v: str(v)) if integer else (lambda v: f"{v:.10g}")
    if low is not None:
        return f"{noun} {'>' if low_open else '>='} {fmt(low)}"
    if high is not None:
        return f"{noun} {'<' if high_open else '<='} {fmt(high)}"
    return noun


def shown_value(value: Any) -> str:
    """A value as an error message shows it: repr, cut to 60 characters, with its type when not a number."""
    number = isinstance(value, numbers.Number) and not isinstance(value, bool)
    if isinstance(value, numbers.Integral) and number and abs(int(value)).bit_length() > 200:
        return f"an integer of {abs(int(value)).bit_length()} bits"  # str() refuses ints of 4300+ digits
    text = str(value) if number else repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    plain = number or value is None or isinstance(value, bool | str)
    return text if plain else f"{text} ({type(value).__name__})"


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in [low, high]; bools, floats and strings are refused (no silent rounding)."""
    integer = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not integer or (low is not None and value < low) or (high is not None and value > high):
        raise ParameterError(name, f"must be {describe_range(True, low, high)}, got {shown_value(value)}")
    return int(value)


def check_float(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float in the range (NaN and ±inf are always refused)."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    x = float(value) if number else math.nan
    bad = (
        not number or not math.isfinite(x)
        or (low is not None and (x <= low if low_open else x < low))
        or (high is not None and (x >= high if high_open else x > high))
    )
    if bad:
        words = describe_range(False, low, high, low_open=low_open, high_open=high_open)
        raise ParameterError(name, f"must be {words}, got {shown_value(value)}")
    return x


def check_ints(name: str, values: Iterable[Any], *, low: int | None = None, high: int | None = None) -> list[int]:
    """A non-empty list of ints, each in [low, high]."""
    items = _items(name, values)
    for v in items:
        try:
            check_int(name, v, low=low, high=high)
        except ParameterError:
            raise ParameterError(name, f"must hold {describe_range(True, low, high).replace('an integer', 'integers')}"
                                       f", got {shown_value(v)}") from None
    return [int(v) for v in items]


def check_floats(name: str, values: Iterable[Any], *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> list[float]:
    """A non-empty list of finite floats, each in the range."""
    items = _items(name, values)
    for v in items:
        try:
            check_float(name, v, low=low, high=high, low_open=low_open, high_open=high_open)
        except ParameterError:
            words = describe_range(False, low, high, low_open=low_open, high_open=high_open)
            raise ParameterError(name, f"must hold {words.replace('a finite number', 'finite numbers')}, "
                                       f"got {shown_value(v)}") from None
    return [float(v) for v in items]


def _items(name: str, values: Iterable[Any]) -> list[Any]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ParameterError(name, f"must be a list, got {shown_value(values)}")
    items = list(values)
    if not items:
        raise ParameterError(name, "is empty")
    return items


def check_seed(name: str, value: Any) -> int:
    """A seed: an integer from 0 to 2**32 - 1."""
    return check_int(name, value, low=0, high=MAX_SEED)


def check_every(value: Any) -> int:
    """A snapshot spacing in steps: an integer from 1 to MAX_EVERY."""
    return check_int("every", value, low=1, high=MAX_EVERY)


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    """One of ``allowed`` (exact match)."""
    if not isinstance(value, str) or value not in allowed:
        raise ParameterError(name, f"must be one of {', '.join(allowed)}, got {shown_value(value)}")
    return value
