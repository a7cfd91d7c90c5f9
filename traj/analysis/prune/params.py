"""The options of ``traj prune``, declared once (:mod:`traj.options`), and its constants."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ...checks import MAX_EPOCHS, check_floats
from ...engine.truncation import rank_option
from ...errors import ParameterError
from ...options import Params, choice, custom, integer, integers, number, switch
from ..windows import Window, check_window

PruneMethod = Literal["kmp", "kgp", "gmp", "jgp", "ggp", "lsp"]
Scope = Literal["global", "layer"]
METHODS: tuple[PruneMethod, ...] = ("kmp", "kgp", "gmp", "jgp", "ggp", "lsp")
DEFAULT_COMPRESSIONS = (2, 4, 8, 16, 32, 64)
SCOPES: tuple[Scope, ...] = ("global", "layer")
#: Refinement seeds: each one trains every mask again.
MAX_SEEDS = 1000
#: The epoch's DMD rank: Redman et al. 2022's exact DMD at full rank (every direction above the precision floor).
DEFAULT_RANK = "all"


def _methods(name: str, methods: Sequence[str] | str) -> tuple[str, ...]:
    names = [m.strip().lower() for m in methods] if not isinstance(methods, str) else [methods]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise ParameterError(name, f"holds an unknown pruning method {bad[0] if bad else '(none)'}; "
                                   f"use {', '.join(METHODS)}")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class PruneParams(Params):
    """The options of a pruning run, each checked when the class is built (see :func:`prune`)."""

    epoch: int | None = integer(None, optional=True, help="Epoch to decompose (default the last complete one).")
    window: Window = custom(None, check_window, help="Snapshots a:b instead of an epoch.")
    methods: tuple[str, ...] = custom(METHODS, _methods, help="Comma-separated: kmp,kgp,gmp,jgp,ggp,lsp.")
    # c = 2 keeps half; c must exceed 1 (c = 1 prunes nothing) and be finite (c = inf keeps no weight)
    compressions: tuple[float, ...] = custom(tuple(float(c) for c in DEFAULT_COMPRESSIONS),
                                             lambda name, value: tuple(check_floats(name, value, low=1,
                                                                                    low_open=True)),
                                             help="Comma-separated compressions c > 1 (keep 1/c).")
    scope: Scope = choice("global", SCOPES, help="global or layer.")
    refine_epochs: int = integer(1, low=0, high=MAX_EPOCHS, help="Epochs of training with the mask fixed (0: none).")
    seeds: int = integer(3, low=1, high=MAX_SEEDS, help="Refinement seeds (and LSP mask seeds).")
    evaluate: bool = switch(True, help="Accuracy with the store's recipe.")
    epochs: tuple[int, ...] = integers((), help="Also compare masks across these epochs, e.g. 0,2,4.")
    rank: int | str | None = rank_option(DEFAULT_RANK, keywords=("all",),
                                         help="DMD rank of the epoch: 'all' (Redman et al. 2022's: every direction the "
                                         "data resolve), 'auto' (Gavish–Donoho) or an integer.")
    kgp_fraction: float = number(0.85, low=0, high=1, help="KGP keeps the modes whose scaled norm ‖bj φj‖ is at least this fraction of the largest.")

    def validate(self) -> None:
        if self.epoch is not None and self.window is not None:
            raise ParameterError("window", "cannot be given with epoch: give one of them")
