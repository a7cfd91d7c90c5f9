"""``traj dmd``: the Koopman spectrum of a recorded trajectory by streaming exact DMD (docs/methods.md §1).

One pass over the store gives the Gram matrix of the window (and of every layer, with
``per_layer``); eigenvalues, amplitudes, reconstruction error and forecasts then come from
small matrices. Modes are materialised (a second pass, D·C) only when asked.

The method is chosen by a cost model (:func:`choose_method`): a window that fits
:data:`IN_MEMORY_BYTES` (and the memory budget) as float64 is read once and decomposed by an SVD of the data ("svd":
an SVD's accuracy, not the Gram's squared condition number); otherwise the cheaper of the
streamed Gram (one read, N·T² flops, (T+1)² matrices held) and the randomized range finder
(q + 3 reads, a few N·T·(r+p) flops each, T×(r+p) matrices) where both apply, the Gram only
where its matrices fit the memory budget (:data:`MEMORY_BYTES`). Rank "auto" works on both:
the Gram path with Gavish–Donoho's median rule over every σ, the range finder with their
known-noise rule and σ̂ from the sketch's tail. The result says which and why.

The shape of every analysis: :class:`DMDParams` declares and checks the options once (``params.py``,
checked when built), :func:`fit_dmd` fits them to a store through the engine (``fit.py``), and the result
is a frozen :class:`DMDResult` with ``to_dict()`` for JSON (``result.py``); :func:`dmd` does all three.
Apart from the fit: the method's cost model (``method.py``), the evaluation by an
:class:`~traj.analysis.evaluator.Evaluator` (``evaluate.py``), the modes (``modes.py``), and
:func:`run_dmd` (``run.py``), which ``traj dmd`` calls: the fit and its evaluation side by side.
"""

from __future__ import annotations

from ..windows import check_gram_finite, parse_window
from .evaluate import DMDEvaluation, DMDEvaluationParams, WindowData, evaluate_dmd, evaluate_fit, read_window
from .fit import coordinate_name, dmd, fit_dmd
from .method import MethodChoice, MethodCost, choose_method, method_costs
from .modes import save_modes
from .params import (
    EIGH_FLOPS_PER_S,
    FLOPS_PER_S,
    GRAM_COPIES,
    IN_MEMORY_BYTES,
    MAX_DELAYS,
    MAX_FORECAST,
    MAX_GRAM_SNAPSHOTS,
    MAX_POWER_ITERATIONS,
    MEMORY_BYTES,
    OVERSAMPLES,
    READ_BYTES_PER_S,
    SKETCH_COPIES,
    SKETCH_FLOPS_PER_S,
    SVD_COPIES,
    DMDParams,
    Method,
    memory_bytes,
)
from .result import DMDResult, LayerSpectrum, complex_pairs
from .run import DMDRun, run_dmd

__all__ = ["DMDEvaluation", "DMDEvaluationParams", "DMDParams", "DMDResult", "DMDRun", "EIGH_FLOPS_PER_S", "FLOPS_PER_S",
           "GRAM_COPIES", "IN_MEMORY_BYTES", "LayerSpectrum", "MAX_DELAYS", "MAX_FORECAST",
           "MAX_GRAM_SNAPSHOTS", "MAX_POWER_ITERATIONS", "MEMORY_BYTES", "Method", "MethodChoice", "MethodCost",
           "OVERSAMPLES", "READ_BYTES_PER_S", "SKETCH_COPIES", "SKETCH_FLOPS_PER_S", "SVD_COPIES", "WindowData",
           "check_gram_finite", "choose_method", "complex_pairs", "coordinate_name", "dmd", "evaluate_dmd",
           "evaluate_fit", "fit_dmd", "memory_bytes", "method_costs", "parse_window", "read_window", "run_dmd",
           "save_modes"]
