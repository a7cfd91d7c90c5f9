"""An analysis's options, declared once.

Each option is one field of the analysis's frozen ``Params`` class, declared with one of the
constructors below (:func:`integer`, :func:`number`, :func:`choice`, ...): its default, its
bounds, its check and its help, in one place. The ``Params`` class (a subclass of
:class:`Params`) checks every field when it is constructed, so a ``Params`` that exists is valid
and nothing is checked after work has started; cross-field rules go in its ``validate``.

The CLI derives its options from the same declaration (:func:`cli_option` gives the Typer
option with the declared help; the field's class attribute is its default), and
``tests/test_options.py`` checks every command and keyword function against its ``Params``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checks import check_choice, check_float, check_floats, check_int, check_ints, check_seed, shown_value
from .errors import ParameterError

__all__ = ["Option", "Params", "choice", "cli_option", "custom", "integer", "integers", "number", "numbers",
           "option_of", "options_of", "seed", "switch"]

#: The metadata key under which a field's :class:`Option` is kept.
KEY = "traj.option"


@dataclass(frozen=True)
class Option:
    """One declared option: its help, bounds and check (``check(name, value) -> value`` normalises or raises
    :class:`~traj.errors.ParameterError` naming the option)."""

    help: str
    check: Callable[[str, Any], Any] | None = None
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


def _field(default: Any, spec: Option) -> Any:
    return dataclasses.field(default=default, metadata={KEY: spec})


def integer(default: int | None, *, help: str, low: int | None = None, high: int | None = None,
            optional: bool = False, why: str = "") -> Any:
    """An integer in [low, high] (``optional``: or None; ``why``: the reason for the upper bound, said when a
    value above it is refused)."""
    def check(name: str, value: Any) -> int | None:
        if optional and value is None:
            return None
        try:
            return check_int(name, value, low=low, high=high)
        except ParameterError as e:
            if not why or high is None or not isinstance(value, int) or value <= high:
                raise
            raise ParameterError(name, f"{e.problem}: {why}") from None
    return _field(default, Option(help, check, low, high))


def number(default: float | None, *, help: str, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, optional: bool = False) -> Any:
    """A float in [low, high] (``low_open``: > low; ``high_open``: < high; ``optional``: or None)."""
    def check(name: str, value: Any) -> float | None:
        if optional and value is None:
            return None
        return check_float(name, value, low=low, high=high, low_open=low_open, high_open=high_open)
    return _field(default, Option(help, check, low, high))


def _check_switch(name: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):  # "no" or "false" would be truthy: refused, not read as True
        raise ParameterError(name, f"must be True or False, got {shown_value(value)}")
    return bool(value)


def switch(default: bool = False, *, help: str) -> Any:
    """A boolean (True or False; nothing else is read as one)."""
    return _field(default, Option(help, _check_switch))


def choice(default: str, choices: Sequence[str], *, help: str) -> Any:
    """One of ``choices``."""
    allowed = tuple(choices)
    return _field(default, Option(help, lambda name, value: check_choice(name, value, allowed), choices=allowed))


def seed(default: int = 0, *, help: str) -> Any:
    """A random seed (a non-negative integer)."""
    return _field(default, Option(help, check_seed))


def integers(default: tuple[int, ...] = (), *, help: str, low: int | None = None, high: int | None = None,
             unique: bool = False, empty: bool = True) -> Any:
    """A tuple of integers in [low, high] (``unique``: sorted, repeats dropped); empty allowed where ``empty``."""
    def check(name: str, value: Any) -> tuple[int, ...]:
        if empty and (value is None or not len(value)):
            return ()
        items = check_ints(name, value, low=low, high=high)
        return tuple(sorted(set(items))) if unique else tuple(items)
    return _field(default, Option(help, check, low, high))


def numbers(default: tuple[float, ...] = (), *, help: str, low: float | None = None, high: float | None = None,
            open_bounds: bool = False, unique: bool = False) -> Any:
    """A tuple of floats in [low, high] (``open_bounds``: (low, high)); empty allowed."""
    def check(name: str, value: Any) -> tuple[float, ...]:
        if value is None or not len(value):
            return ()
        items = check_floats(name, value, low=low, high=high, low_open=open_bounds, high_open=open_bounds)
        return tuple(sorted(set(items))) if unique else tuple(items)
    return _field(default, Option(help, check, low, high))


def custom(default: Any, check: Callable[[str, Any], Any] | None, *, help: str) -> Any:
    """An option with its own check (a rank, a window, a list of layer names)."""
    return _field(default, Option(help, check))


def options_of(params: Any) -> dict[str, Option]:
    """Every declared option of a ``Params`` class (or instance), by field name, in declaration order."""
    return {f.name: f.metadata[KEY] for f in dataclasses.fields(params) if KEY in f.metadata}


def option_of(params: Any, name: str) -> Option:
    """The declared option ``name`` of a ``Params`` class."""
    try:
        return options_of(params)[name]
    except KeyError:
        raise KeyError(f"{getattr(params, '__name__', type(params).__name__)} declares no option {name!r}") from None


class Params:
    """Base of every analysis's frozen options: each declared field is checked at construction, in
    declaration order, then :meth:`validate` checks the rules between fields. Subclass it with
    ``@dataclass(frozen=True)``."""

    def __post_init__(self) -> None:
        for name, spec in options_of(self).items():
            if spec.check is not None:
                object.__setattr__(self, name, spec.check(name, getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Rules between options (override): raise :class:`ParameterError` naming the option at fault."""

    @classmethod
    def checked(cls, **options: Any) -> Any:
        """The options checked once, at the door (the same as constructing the class): a bad one raises
        :class:`ParameterError` naming it; an unknown name raises too."""
        unknown = set(options) - {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise ParameterError(sorted(unknown)[0], f"is not an option of {cls.__name__}")
        return cls(**options)


def cli_option(params: Any, name: str, *flags: str, **settings: Any) -> Any:
    """The Typer option of the declared option ``name`` (its help; ``flags`` and ``settings``, such as
    ``rich_help_panel``, as ``typer.Option`` takes them). Use the field's class attribute (``DMDParams.eps``)
    as the parameter's default."""
    import typer

    return typer.Option(*flags, help=option_of(params, name).help, **settings)
