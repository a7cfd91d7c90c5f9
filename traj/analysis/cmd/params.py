"""The options of ``traj cmd``, declared once (:mod:`traj.options`), and its constants.

:class:`CMDParams` are the fit's; :class:`CMDScoring` what ``traj cmd`` scores and sweeps beside it
(with an :class:`~traj.analysis.evaluator.Evaluator`). Both are checked when built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import ParameterError
from ...options import Params, choice, custom, integer, integers, number, numbers, switch
from ...options import seed as seed_option
from ...store.derived import CMD
from ..windows import Window, check_window

MODEL_FORMAT = CMD.format
#: K, the weights sampled for the clustering: their K x K correlation and its linkage live in memory.
MAX_SAMPLES = 10_000
#: K by default (``samples=None``): every weight of a model of at most ALL_SAMPLES weights (no sampling, so the
#: partition does not depend on a seed; issue 26: digits-cnn, N = 3658, M = 5, five seeds of 1000 samples agreed
#: with ARI min 0.66), else DEFAULT_SAMPLES. K x K matrices of 4096 are 134 MB and cluster in seconds.
ALL_SAMPLES = 4096
DEFAULT_SAMPLES = 1000
#: Modes drawn as bands, and sampled weights drawn beside their reconstruction, in the report.
BAND_MODES = 12
FIT_SAMPLES = 6
#: Candidates read per wanted sample: the frozen ones are dropped (docs/methods.md §2.1); doubled while too few move.
OVERSAMPLE = 2
#: Sampling seeds whose partitions ``--sweep`` compares (adjusted Rand index over the pairs).
STABILITY_SEEDS = 5
#: The weight EMAs scored by ``--evaluate --ema`` are held in memory at the scored snapshots (float32).
MAX_EMA_BYTES = 2 << 30
#: values per piece of a block in the assignment pass (float64 temporaries of 512 KiB stay in cache)
PIECE_VALUES = 1 << 16
#: Weight an EMA may leave on the window's first snapshot at its last before the report warns.
EMA_INIT_WARN = 0.05
#: Clustering distances: "rows", the Euclidean distance between rows of |corr| (the authors' code, Turjeman et al. 2022, the
#: default: steadier across sampling seeds at equal error), and "corr", 1 − |corr| (traj before issue 17).
DISTANCES = ("rows", "corr")
#: Columns a model reconstructs at a time (a snapshot of N weights is built from blocks of this width).
RECONSTRUCT_COLUMNS = 1 << 20


@dataclass(frozen=True)
class CMDParams(Params):
    """The options of a CMD fit, each checked when the class is built (``threshold`` wins over ``modes``;
    see :func:`~traj.analysis.cmd.cmd`)."""

    modes: int | None = integer(10, low=1, high=MAX_SAMPLES, optional=True, help="Number of modes M.")
    threshold: float | None = number(None, low=0, high=1, low_open=True, optional=True,
                                     help="Cut the dendrogram at t (0 < t <= 1) times the largest distance instead of "
                                          "M (with --distance corr: at 1-|corr| = t).")
    samples: int | None = integer(None, low=2, high=MAX_SAMPLES, optional=True,
                                  help="Weights sampled for the clustering (K; default: every weight of a model of at "
                                       "most 4096, else 1000).")
    window: Window = custom(None, check_window, help="Snapshots a:b, both included.")
    subsample: int = integer(1, low=1, help="Use every s-th snapshot.")
    seed: int = seed_option(0, help="Seed of the weight sample.")
    drop_nonfinite: bool = switch(help="Skip NaN/Inf snapshots instead of refusing.")
    distance: str = choice("rows", DISTANCES, help="Clustering distance: rows (Euclidean between rows of |corr|) "
                                                   "or corr (1-|corr|).")

    def validate(self) -> None:
        if self.threshold is not None:
            object.__setattr__(self, "modes", None)
        elif self.modes is None:
            raise ParameterError("modes", "must be given when threshold is not")

    def options(self, ema: tuple[float, ...] = ()) -> dict[str, Any]:
        """The fit's options as summary.json shows them (with the EMA decays scored beside it)."""
        return {"modes": self.modes, "threshold": self.threshold, "samples": self.samples,
                "subsample": self.subsample, "seed": self.seed, "distance": self.distance, "ema": list(ema)}


@dataclass(frozen=True)
class CMDScoring(Params):
    """What ``traj cmd`` scores and sweeps beside the fit, each option checked when the class is built.

    The evaluation (``eval_points``, ``ema``), the comparison with DMD (``compare_dmd`` ranks, at CMD's
    ``compare_modes``) and the evaluator need a recipe; the sweeps run without one (errors only).
    """

    eval_points: int = integer(40, low=1, help="Snapshots scored by --evaluate.")
    ema: tuple[float, ...] = numbers((), low=0, high=1, open_bounds=True, unique=True,
                                     help="Also score the weight EMA of decays β = 0.99,0.999 (per recorded snapshot: "
                                          "a store recorded every k steps stands for a per-step β_s with β = β_s^k), "
                                          "in the same pass.")
    sweep: tuple[int, ...] = integers((), low=1, high=MAX_SAMPLES, unique=True,
                                      help="Also run M = 1,2,5,...: accuracy, MSE and the agreement of 5 sampling "
                                           "seeds (ARI) against M.")
    sweep_points: int = integer(20, low=1, help="Snapshots scored at each setting of a sweep.")
    sweep_window: tuple[int, ...] = integers((), unique=True,
                                             help="Also fit CMD on the histories a:end for these starts a (e.g. "
                                                  "0,20,40): accuracy and error against the history length.")
    sweep_subsample: tuple[int, ...] = integers((), low=1, unique=True,
                                                help="Also fit CMD on every s-th snapshot (counted back from the end) "
                                                     "for these s (e.g. 1,2,4,8).")
    compare_dmd: tuple[int, ...] = integers((), low=1,
                                            help="Also draw the run beside DMD at these ranks (5,10,20) and CMD at "
                                                 "--compare-modes, at the same snapshots (needs a recipe).")
    compare_modes: tuple[int, ...] = integers((2, 5, 10), low=1, high=MAX_SAMPLES, empty=False,
                                              help="CMD modes M drawn by --compare-dmd.")

    @property
    def needs_evaluator(self) -> bool:
        """Whether anything asked for can only be scored with an evaluator (a recipe)."""
        return bool(self.ema or self.compare_dmd)
