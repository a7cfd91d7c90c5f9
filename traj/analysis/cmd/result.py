"""The frozen results of ``traj cmd``: the fit's :class:`CMDResult`, and the evaluation's, sweeps' and
comparison's results kept beside it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .model import CMDModel
from .params import EMA_INIT_WARN, CMDParams

if TYPE_CHECKING:
    from ..dmd import DMDEvaluation


@dataclass(frozen=True)
class ModeBands:
    """Per mode (the first :data:`BAND_MODES`): its sampled members as sign-aligned z-scores, summarised.

    ``low``/``high`` (n_modes, T') bound 95 % of the members; ``reference`` is the reference's
    z-score; ``members`` how many sampled weights the mode holds (Turjeman et al. 2022 fig. 3).
    """

    low: np.ndarray
    high: np.ndarray
    reference: np.ndarray
    members: np.ndarray


@dataclass(frozen=True)
class EMAScores:
    """The recipe's metrics of the weight EMA with decay ``beta`` (per snapshot) at the scored snapshots.

    ``first_weight`` = β^(T'−1): the weight the EMA still puts on the window's first snapshot at its
    last (Turjeman et al. 2022 figs. 19-21 compare CMD with this smoothed model).
    """

    beta: float
    metrics: Mapping[str, np.ndarray]
    first_weight: float

    @property
    def stale(self) -> bool:
        """Whether the EMA still leans on the first snapshot (β^(T'−1) > 0.05): β too close to 1 for the run."""
        return self.first_weight > EMA_INIT_WARN


@dataclass(frozen=True)
class CMDEvaluation:
    """The recipe's metrics of the original, the CMD weights and the weight EMAs at a few snapshots
    (Turjeman et al. 2022 figs. 5a, 7, 19-21)."""

    snapshots: np.ndarray
    steps: np.ndarray
    original: Mapping[str, np.ndarray]
    cmd: Mapping[str, np.ndarray]
    ema: tuple[EMAScores, ...] = ()

    @property
    def metric(self) -> str:
        """The metric the report shows: accuracy when the recipe measures it, else loss."""
        return "accuracy" if "accuracy" in self.cmd else "loss"

    def to_dataframe(self) -> Any:
        """The rows of :meth:`to_dict` as a table indexed by step (pandas)."""
        from ...tables import dataframe

        rows = self.to_dict()
        return dataframe({key: [row[key] for row in rows] for key in (rows[0] if rows else {"step": ()})},
                         index="step")

    def to_dict(self) -> list[dict[str, float]]:
        rows = []
        for i, (k, step) in enumerate(zip(self.snapshots, self.steps, strict=True)):
            row: dict[str, float] = {"snapshot": int(k), "step": int(step)}
            row.update({f"original_{name}": float(v[i]) for name, v in self.original.items()})
            row.update({f"cmd_{name}": float(v[i]) for name, v in self.cmd.items()})
            for track in self.ema:
                row.update({f"ema{track.beta:g}_{name}": float(v[i]) for name, v in track.metrics.items()})
            rows.append(row)
        return rows


@dataclass(frozen=True)
class Stability:
    """How well CMDs from different sampling seeds agree (Turjeman et al. 2022 figs. 9-10).

    ``ari`` holds the adjusted Rand index between the partitions of every pair of ``seeds`` (in
    ``itertools.combinations`` order), over the weights that move; ``relative_errors`` each seed's
    ‖D − D̂‖/‖D‖.
    """

    seeds: tuple[int, ...]
    ari: np.ndarray
    relative_errors: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"seeds": list(self.seeds), "ari": self.ari.tolist(), "ari_min": float(self.ari.min()),
                "ari_median": float(np.median(self.ari)), "ari_max": float(self.ari.max()),
                "relative_errors": self.relative_errors.tolist()}


@dataclass(frozen=True)
class SweepRow:
    """CMD with ``modes`` modes: its errors, how well 5 sampling seeds agree and, with a recipe, the best
    metric over the window (Turjeman et al. 2022 figs. 6, 9)."""

    modes: int
    mse: float
    relative_error: float
    compression_ratio: float
    metric: str | None = None
    best_cmd: float | None = None
    best_original: float | None = None
    stability: Stability | None = None

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"modes": self.modes, "mse": self.mse, "relative_error": self.relative_error,
                               "compression_ratio": self.compression_ratio}
        if self.stability is not None:
            st = self.stability.to_dict()
            row.update({k: st[k] for k in ("ari_min", "ari_median", "ari_max")})
        if self.metric:
            row[f"best_cmd_{self.metric}"] = self.best_cmd
            row[f"best_original_{self.metric}"] = self.best_original
        return row


@dataclass(frozen=True)
class CMDResult:
    """CMD of a store's window: the model, what the sample showed, errors, and what the report draws.

    ``sample_*`` describe the K sampled weights (their trajectories (T', K), |corr| (K, K),
    labels, dendrogram order); ``constant_samples`` counts the frozen candidates left out of the
    sample (docs/methods.md §2.1); ``sample_reconstruction`` is their CMD reconstruction and
    ``fit_samples`` the few of them the report draws; ``bands`` the modes' member bands.
    """

    store: str
    window: tuple[int, int]
    params: CMDParams
    snapshots: np.ndarray
    steps: np.ndarray
    n_params: int
    model: CMDModel
    sample_indices: np.ndarray
    sample_labels: np.ndarray
    sample_order: np.ndarray
    sample_corr: np.ndarray
    sample_trajectories: np.ndarray
    sample_reconstruction: np.ndarray
    fit_samples: np.ndarray
    bands: ModeBands
    reference_indices: np.ndarray
    mode_sizes: np.ndarray
    mode_mean_corr: np.ndarray
    modes_per_layer: Mapping[str, np.ndarray]
    mse: float
    relative_error: float
    backend: str
    seconds: float
    constant_samples: int = 0

    @property
    def subsample(self) -> int:
        return self.params.subsample

    @property
    def modes(self) -> int:
        return int(self.model.references.shape[0])

    @property
    def compression_ratio(self) -> float:
        t = self.steps.size
        return self.n_params * t / (self.modes * t + 2 * self.n_params)

    @property
    def ordered_corr(self) -> np.ndarray:
        """|corr| of the sampled weights in dendrogram order (Turjeman et al. 2022 fig. 2)."""
        return self.sample_corr[np.ix_(self.sample_order, self.sample_order)]

    def to_dataframe(self) -> Any:
        """One row per mode (pandas): its size (weights), mean |corr| with its reference, and the reference
        weight (a coordinate of θ). The scores per snapshot: ``run_cmd(...).evaluation.to_dataframe()``."""
        from ...tables import dataframe

        return dataframe({"mode": np.arange(self.modes), "size": self.mode_sizes,
                          "mean_abs_corr": self.mode_mean_corr, "reference_index": self.reference_indices},
                         index="mode")

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "modes": self.modes,
            "mode_sizes": self.mode_sizes.tolist(),
            "mode_mean_abs_corr": self.mode_mean_corr.tolist(),
            "modes_per_layer": {name: counts.tolist() for name, counts in self.modes_per_layer.items()},
            "reconstruction_mse": self.mse,
            "relative_error": self.relative_error,
            "compression_ratio": self.compression_ratio,
            "references": self.model.references.tolist(),
            "reference_indices": self.reference_indices.tolist(),
            "samples": int(self.sample_indices.size),
            "constant_samples": self.constant_samples,
            "window": list(self.window),
            "subsample": self.subsample,
            "snapshots": self.snapshots.tolist(),
            "steps": self.steps.tolist(),
            "n_params": self.n_params,
            "options": self.params.options(),
            "backend": self.backend,
            "seconds": self.seconds,
        }


# ---------------------------------------------------------------------- DMD and CMD as models of training
@dataclass(frozen=True)
class ModelComparison:
    """The original run, DMD at several ranks and CMD at several M, scored at the same snapshots
    (Turjeman et al. 2022 figs. 1, 5, 22). ``cmd[i]`` holds the metrics of CMD with ``cmd_modes[i]`` modes,
    ``cmd_motion_errors[i]`` its ‖D − D̂‖F / ‖D − mean‖F, comparable with ``dmd.motion_errors``.
    """

    dmd: DMDEvaluation
    cmd_modes: tuple[int, ...]
    cmd: tuple[Mapping[str, np.ndarray], ...]
    cmd_motion_errors: np.ndarray

    @property
    def metric(self) -> str:
        return self.dmd.metric

    def to_dict(self) -> dict[str, Any]:
        return {"dmd": self.dmd.to_dict(), "cmd_modes": list(self.cmd_modes),
                "cmd": [{k: v.tolist() for k, v in m.items()} for m in self.cmd],
                "cmd_motion_errors": self.cmd_motion_errors.tolist()}


# ---------------------------------------------------------------------- history length and snapshot spacing
@dataclass(frozen=True)
class HistoryRow:
    """CMD with ``modes`` modes fitted on one setting of a :class:`HistorySweep`."""

    setting: int
    modes: int
    snapshots: int
    relative_error: float
    metric_mean: float | None = None
    metric_last: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"setting": self.setting, "modes": self.modes, "snapshots": self.snapshots,
                "relative_error": self.relative_error, "metric_mean": self.metric_mean,
                "metric_last": self.metric_last}


@dataclass(frozen=True)
class HistorySweep:
    """CMD against the history it is given (Turjeman et al. 2022 figs. 13-14).

    ``kind`` "window": the setting is the first snapshot of the history [a, end]; "subsample": the
    spacing s (every s-th snapshot counted back from the end). Every setting is scored on the same
    snapshots, ``scored`` (those all settings share: the shortest history's, or the rows every spacing
    keeps), so the curves compare: the mean of the metric over them and its value at the last.
    """

    kind: str
    metric: str | None
    scored: np.ndarray
    original_mean: float | None
    original_last: float | None
    rows: tuple[HistoryRow, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "metric": self.metric, "scored_snapshots": self.scored.tolist(),
                "original_mean": self.original_mean, "original_last": self.original_last,
                "rows": [row.to_dict() for row in self.rows]}
