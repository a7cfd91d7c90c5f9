"""The frozen result of ``traj prune``: :class:`PruneResult` and its parts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...engine.operator import ModeClass
from ...errors import ParameterError
from ..dmd import complex_pairs
from ..scratch import ScratchArrays
from .masking import _mask_name, _score_name
from .params import Scope


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class KGPMode:
    """A mode KGP scores with: its index among the eigenvalues, λ, and ‖b φ‖."""

    index: int
    eigenvalue: complex
    norm: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "eigenvalue": [self.eigenvalue.real, self.eigenvalue.imag], "norm": self.norm}


@dataclass(frozen=True)
class MetricStats:
    """A validation metric per compression (indexed like ``PruneResult.compressions``): mean and std over seeds."""

    mean: np.ndarray
    std: np.ndarray


@dataclass(frozen=True)
class EpochOverlap:
    """One method's masks across epochs (Redman et al. 2022 figs. 3, 5).

    ``overlap`` (n_compressions, E, E): overlap of the epochs' masks; ``kmp_gmp`` (n_compressions, E):
    KMP-GMP overlap per epoch.
    """

    method: str
    epochs: tuple[int, ...]
    compressions: np.ndarray
    overlap: np.ndarray
    kmp_gmp: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        keys = [compression_key(c) for c in self.compressions]
        return {"method": self.method, "epochs": list(self.epochs),
                "overlap": {k: m.tolist() for k, m in zip(keys, self.overlap, strict=True)},
                "kmp_gmp": {k: v.tolist() for k, v in zip(keys, self.kmp_gmp, strict=True)}}


def compression_key(c: float) -> str:
    """A compression as the JSON view and masks.zarr name it: 2, 4, 2.5."""
    return f"{float(c):g}"


@dataclass(frozen=True)
class PruneResult:
    """Koopman and baseline pruning of one epoch: masks, scores, overlaps and accuracies.

    Every per-compression array is indexed like ``compressions``: ``kept[m]`` and ``overlap[(a, b)]``
    have shape (n_compressions,). The N-long vectors (θ of the snapshot the scores and masks refer
    to, ``window[1]``; each score; each mask) stay on disk in ``arrays``, a scratch directory deleted
    with the result (issue 23: nothing of size N is held); :func:`~traj.analysis.masks.write_masks`
    and :func:`~traj.analysis.masks.write_exports` stream from it. :meth:`mask`, :attr:`masks`,
    :attr:`lsp_seed_masks`, :attr:`scores` and :attr:`theta` read them into memory on request.
    """

    store: str
    epoch: int | None
    window: tuple[int, int]
    steps: tuple[int, int]
    scope: Scope
    methods: tuple[str, ...]
    compressions: np.ndarray
    eigenvalues: np.ndarray
    classes: tuple[ModeClass, ...]
    lambda1: complex
    lambda1_index: int
    kgp_modes: tuple[KGPMode, ...]
    n_prunable: int
    score_names: tuple[str, ...]
    kept: Mapping[str, np.ndarray]
    overlap: Mapping[tuple[str, str], np.ndarray]
    unavailable: Mapping[str, str]
    refine_epochs: int
    seeds: int
    seconds: float
    arrays: ScratchArrays = field(compare=False, repr=False, kw_only=True)
    accuracy: Mapping[str, MetricStats] | None = None
    accuracy_refined: Mapping[str, MetricStats] | None = None
    metric: str | None = None
    baseline: Mapping[str, float] | None = None
    epoch_overlap: EpochOverlap | None = None

    def index(self, compression: float) -> int:
        """The position of a compression in ``compressions``."""
        hits = np.flatnonzero(np.isclose(self.compressions, float(compression), rtol=1e-12, atol=0))
        if not hits.size:
            raise ParameterError("compression", f"{compression:g} was not computed (compressions: "
                                                f"{', '.join(compression_key(c) for c in self.compressions)})")
        return int(hits[0])

    def mask_name(self, method: str, index: int, seed: int = 0) -> str:
        """The name in ``arrays`` of a method's mask at compression ``compressions[index]`` (LSP: of ``seed``)."""
        if method not in self.methods:
            raise ParameterError("method", f"{method}: no {method} masks (methods: {', '.join(self.methods)})")
        return _mask_name(method, index, seed if method == "lsp" else 0)

    def mask(self, method: str, compression: float) -> np.ndarray:
        """The (N,) mask of one method at one compression (True = kept), read into memory."""
        return self.arrays.read(self.mask_name(method, self.index(compression)))

    @property
    def masks(self) -> dict[str, np.ndarray]:
        """Every mask in memory, ``{method: (n_compressions, N)}`` (LSP: its first seed). N bytes per mask."""
        return {m: np.stack([self.arrays.read(self.mask_name(m, i)) for i in range(len(self.compressions))])
                for m in self.methods}

    @property
    def lsp_seed_masks(self) -> np.ndarray | None:
        """LSP's masks of every seed in memory, shape (seeds, n_compressions, N); None without LSP."""
        if "lsp" not in self.methods:
            return None
        return np.stack([np.stack([self.arrays.read(self.mask_name("lsp", i, s)) for i in range(len(self.compressions))])
                         for s in range(self.seeds)])

    @property
    def scores(self) -> dict[str, np.ndarray]:
        """Every score computed, in memory: ``{method: (N,) float64}``."""
        return {name: self.arrays.read(_score_name(name)) for name in self.score_names}

    @property
    def theta(self) -> np.ndarray:
        """θ at ``window[1]``, (N,) float64, in memory."""
        return self.arrays.read("theta")

    def to_dataframe(self) -> Any:
        """One row per method and compression c (pandas): the weights kept, and with a recipe the metric after
        pruning (mean and std over seeds) and after refinement (``refined_mean``, ``refined_std``)."""
        from ...tables import dataframe

        methods = [m for m in self.methods for _ in self.compressions]
        index = [i for _ in self.methods for i in range(len(self.compressions))]
        columns: dict[str, Any] = {"method": methods, "compression": self.compressions[index],
                                   "kept": [int(self.kept[m][i]) for m, i in zip(methods, index, strict=True)]}
        for prefix, table in (("", self.accuracy), ("refined_", self.accuracy_refined)):
            if table:
                columns[f"{prefix}mean"] = [float(table[m].mean[i]) for m, i in zip(methods, index, strict=True)]
                columns[f"{prefix}std"] = [float(table[m].std[i]) for m, i in zip(methods, index, strict=True)]
        return dataframe(columns, index=["method", "compression"])

    def to_dict(self) -> dict[str, Any]:
        keys = [compression_key(c) for c in self.compressions]

        def by_c(values: np.ndarray) -> dict[str, Any]:
            return {k: v.item() for k, v in zip(keys, values, strict=True)}

        def stats(table: Mapping[str, MetricStats] | None) -> dict[str, Any] | None:
            if table is None:
                return None
            return {m: {k: {"mean": float(s.mean[i]), "std": float(s.std[i])} for i, k in enumerate(keys)}
                    for m, s in table.items()}

        return {
            "store": self.store,
            "epoch": self.epoch,
            "window": list(self.window),
            "steps": list(self.steps),
            "scope": self.scope,
            "methods": list(self.methods),
            "compressions": self.compressions.tolist(),
            "eigenvalues": complex_pairs(self.eigenvalues),
            "lambda1": [self.lambda1.real, self.lambda1.imag],
            "kgp_modes": [m.to_dict() for m in self.kgp_modes],
            "n_prunable": self.n_prunable,
            "kept": {m: by_c(v) for m, v in self.kept.items()},
            "metric": self.metric,
            "baseline": dict(self.baseline) if self.baseline is not None else None,
            "accuracy": stats(self.accuracy),
            "accuracy_refined": stats(self.accuracy_refined),
            "refine_epochs": self.refine_epochs,
            "seeds": self.seeds,
            "overlap": {f"{a}-{b}": v.tolist() for (a, b), v in self.overlap.items()},
            "epoch_overlap": self.epoch_overlap.to_dict() if self.epoch_overlap else None,
            "unavailable": dict(self.unavailable),
            "seconds": self.seconds,
        }
