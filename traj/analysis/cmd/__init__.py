"""``traj cmd``: Correlation Mode Decomposition (docs/methods.md §2; Turjeman et al. 2022).

Weights fall into M ≪ N modes; within mode m, wᵢ(k) ≈ aᵢ·w_{r,m}(k) + bᵢ. A sample of K
weights that move is clustered by complete linkage on the Euclidean distance between rows of
|corr| (the authors' code, Turjeman et al. 2022); each cluster's reference is the
member most correlated with the rest; then ONE streaming pass over all N weights assigns
each weight to the reference it correlates with most and fits [aᵢ bᵢ] in closed form
(O(N·M·T), memory bounded by the block size). The fitted model (labels, a, b, references)
is written to ``cmd.zarr`` and reconstructs any snapshot or block without the store.

:class:`CMDParams` declares and checks the fit's options once (``params.py``; :class:`CMDScoring` what is
scored beside it); :func:`fit_cmd` fits them through the engine (``fit.py``: the sample and the one pass, with
``sampling.py``'s clustering and ``model.py``'s ``cmd.zarr``) into a frozen :class:`CMDResult` (``result.py``),
nothing else. The evaluation by an :class:`~traj.analysis.evaluator.Evaluator` (``evaluate.py``), the sweeps
(``sweeps.py``) and the comparison with DMD (``compare.py``) each take the fit and return their own results;
:func:`run_cmd` (``run.py``), which ``traj cmd`` calls, keeps them side by side in a :class:`CMDRun`.
"""

from __future__ import annotations

from .compare import compare_models
from .evaluate import evaluate
from .fit import cmd, eval_picks, fit_cmd, mode_bands
from .model import CMDModel, load
from .params import (
    ALL_SAMPLES,
    BAND_MODES,
    DEFAULT_SAMPLES,
    DISTANCES,
    EMA_INIT_WARN,
    FIT_SAMPLES,
    MAX_EMA_BYTES,
    MAX_SAMPLES,
    MODEL_FORMAT,
    STABILITY_SEEDS,
    CMDParams,
    CMDScoring,
)
from .result import (
    CMDEvaluation,
    CMDResult,
    EMAScores,
    HistoryRow,
    HistorySweep,
    ModeBands,
    ModelComparison,
    Stability,
    SweepRow,
)
from .run import CMDRun, check_scoring, run_cmd
from .sampling import (
    MovingSample,
    abs_corr,
    assign_kernel,
    cluster_modes,
    default_samples,
    moving_columns,
    references_of,
    row_distances,
    sample_moving,
    sample_weights,
    weight_ema,
)
from .sweeps import adjusted_rand_index, history_sweep, stability, sweep

__all__ = ["ALL_SAMPLES", "BAND_MODES", "CMDEvaluation", "CMDModel", "CMDParams", "CMDResult", "CMDRun", "CMDScoring",
           "DEFAULT_SAMPLES", "DISTANCES", "EMAScores", "EMA_INIT_WARN", "FIT_SAMPLES", "HistoryRow",
           "HistorySweep", "MAX_EMA_BYTES", "MAX_SAMPLES", "MODEL_FORMAT", "ModeBands", "ModelComparison",
           "MovingSample", "STABILITY_SEEDS", "Stability", "SweepRow", "abs_corr", "adjusted_rand_index",
           "assign_kernel", "check_scoring", "cluster_modes", "cmd", "compare_models", "default_samples",
           "eval_picks", "evaluate", "fit_cmd", "history_sweep", "load", "mode_bands", "moving_columns",
           "references_of", "row_distances", "run_cmd", "sample_moving", "sample_weights", "stability", "sweep",
           "weight_ema"]
