"""KGA's and the prediction-based jumps' options, declared once (:mod:`traj.options`).

Kept free of torch so that the CLI can build ``traj kga-replay``'s options from them without loading it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..checks import MAX_EPOCHS
from ..engine.truncation import rank_option
from ..errors import ParameterError
from ..options import Params, choice, custom, integer, number, switch

__all__ = ["JUMP_MODES", "MASKS", "MAX_HORIZON", "MAX_WINDOW", "JumpOptions", "KGAOptions"]

MASKS = ("none", "kwm", "norm", "delta")
#: Snapshots one fit may use: the history holds N x t numbers.
MAX_WINDOW = 1000
JUMP_MODES = ("predict", "bootstrap")
#: The farthest a jump may forecast, in epochs.
MAX_HORIZON = 10_000


def _check_interval(name: str, interval: Any) -> str | int:
    if interval != "epoch" and not (isinstance(interval, int) and not isinstance(interval, bool) and interval >= 1):
        raise ParameterError(name, f"must be 'epoch' or an integer >= 1 (steps), got {interval!r}")
    return interval


@dataclass(frozen=True)
class KGAOptions(Params):
    """KGA's options, declared once and checked when the class is built (see :class:`KGA` for their meaning)."""

    alpha: float = number(1.0, low=0, help="Acceleration rate α.")
    window: int = integer(5, low=3, high=MAX_WINDOW, help="Snapshots t of each DMD fit.")
    interval: str | int = custom("epoch", _check_interval, help="'epoch' (KGA-Epoch) or k steps (KGA-Iter).")
    eps: float = number(0.01, low=0, high=1, help="Stable modes have |λ| < 1 − ε.")
    rank: int | str | None = rank_option(None, help="DMD rank of each fit: an integer, or 'auto'/None (Gavish–Donoho).")
    efficient: bool = switch(help="Efficient-KGA: fix U after the first fit.")
    project_step: bool = switch(help="Use eq. 13 literally (drop the step outside U).")
    mask: str = choice("none", MASKS, help="none, kwm, norm or delta.")
    mask_eps: float = number(1e-3, low=0, help="Masking threshold ε.")
    mask_window: int = integer(2, low=1, high=MAX_EPOCHS, help="Intervals s below the threshold before masking.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JumpOptions(Params):
    """A prediction-based run's options, declared once and checked when the class is built (see
    :class:`KoopmanJump`). ``every`` and ``warmup`` default to h − 1, the epochs the history takes to fill: the
    fields keep what was given (None), :attr:`spacing` and :attr:`first_epoch` the values used, and
    :meth:`to_dict` the values used."""

    mode: str = choice("predict", JUMP_MODES, help="predict (jump to the DMD forecast, Dogra & Redman) or bootstrap "
                                                   "(keep a jump only if the validation loss falls, Tano et al.).")
    window: int = integer(5, low=3, high=MAX_WINDOW, help="Epoch-end snapshots h of each DMD fit.")
    horizon: int = integer(5, low=1, high=MAX_HORIZON, help="Epochs τ each jump forecasts ahead.")
    every: int | None = integer(None, low=1, high=MAX_EPOCHS, optional=True,
                                help="Epochs between jumps (default and minimum h − 1).")
    warmup: int | None = integer(None, low=0, high=MAX_EPOCHS, optional=True,
                                 help="The first epoch that may jump (default and minimum h − 1).")
    rank: int | str | None = rank_option(None, help="DMD rank of each fit: an integer, or 'auto'/None (Gavish–Donoho).")

    def validate(self) -> None:
        # the history restarts after a jump: a window of h snapshots needs h − 1 epochs to fill (and refill)
        for name in ("every", "warmup"):
            value = getattr(self, name)
            if value is not None and value < self.window - 1:
                raise ParameterError(name, f"must be at least {self.window - 1} epochs, the epochs a window of "
                                           f"{self.window} snapshots takes to fill (its history restarts after "
                                           f"a jump), got {value}")

    @property
    def spacing(self) -> int:
        """Epochs between jumps: ``every``, or the window's h − 1 where it is None."""
        return self.window - 1 if self.every is None else self.every

    @property
    def first_epoch(self) -> int:
        """The first epoch that may jump: ``warmup``, or the window's h − 1 where it is None."""
        return self.window - 1 if self.warmup is None else self.warmup

    def to_dict(self) -> dict[str, Any]:
        """The options as run: ``every`` and ``warmup`` resolved."""
        return {**asdict(self), "every": self.spacing, "warmup": self.first_epoch}
