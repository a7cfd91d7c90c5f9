"""The result of ``traj dmd``'s fit: :class:`DMDResult` (and :class:`LayerSpectrum` per layer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...engine import ReducedOperator
from ...engine.operator import ModeClass
from .method import MethodChoice


@dataclass(frozen=True)
class LayerSpectrum:
    """The DMD spectrum of one layer's coordinates over the same window."""

    name: str
    n_params: int
    rank: int
    eigenvalues: np.ndarray
    amplitudes: np.ndarray
    classes: tuple[ModeClass, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_params": self.n_params,
            "rank": self.rank,
            "eigenvalues": complex_pairs(self.eigenvalues),
            "abs_eigenvalues": np.abs(self.eigenvalues).tolist(),
            "amplitudes": complex_pairs(self.amplitudes),
            "classes": list(self.classes),
        }


@dataclass(frozen=True)
class DMDResult:
    """Exact DMD of a store's window.

    ``sample_*`` hold a few coordinates' recorded trajectories (shape (T_w, K)), their DMD
    reconstruction and forecast (shape (T_w + forecast, K)), for the report's plot.
    """

    store: str
    operator: ReducedOperator
    window: tuple[int, int]
    steps: np.ndarray
    dt: float
    eps: float
    n_params: int
    layers: tuple[str, ...] | None
    reconstruction_error: float
    backend: str
    seconds: float
    forecast_steps: int
    sample_indices: np.ndarray
    sample_names: tuple[str, ...]
    sample_trajectories: np.ndarray
    sample_reconstruction: np.ndarray
    per_layer: tuple[LayerSpectrum, ...] = field(default_factory=tuple)
    choice: MethodChoice | None = None
    delays: int = 0

    @property
    def rank(self) -> int:
        return self.operator.rank

    @property
    def eigenvalues(self) -> np.ndarray:
        return self.operator.eigenvalues

    @property
    def amplitudes(self) -> np.ndarray:
        assert self.operator.amplitudes is not None  # a trajectory's DMD always has them
        return self.operator.amplitudes

    @property
    def classes(self) -> list[ModeClass]:
        return self.operator.classes(self.eps)

    @property
    def class_counts(self) -> dict[ModeClass, int]:
        classes = self.classes
        return {c: classes.count(c) for c in ("neutral", "stable", "unstable")}

    @property
    def rates(self) -> np.ndarray:
        """log(λ)/Δt per snapshot spacing (not finite where λ = 0)."""
        return self.operator.rates(self.dt)

    @property
    def n_snapshots(self) -> int:
        return self.window[1] - self.window[0] + 1

    @property
    def reconstruction_steps(self) -> np.ndarray:
        """The training step of each row of ``sample_reconstruction``: the window's steps, then the forecast's,
        ``dt`` apart past the last (the window is evenly spaced)."""
        steps = np.asarray(self.steps, dtype=np.float64)
        ahead = self.sample_reconstruction.shape[0] - steps.size
        return np.concatenate([steps, steps[-1] + self.dt * np.arange(1, ahead + 1)])

    @property
    def eigenvalue_errors_cover(self) -> str:
        """What :meth:`ReducedOperator.eigenvalue_errors` estimates, and what it leaves out (report and JSON)."""
        if self.operator.source == "svd":
            path = "svd path (an SVD of the data, backward stable)"
        elif self.choice is not None and self.choice.method == "randomized":
            path = "randomized path (σ² from XᵀX products, which square the condition number)"
        else:
            path = "gram path (the Gram's eigendecomposition, which squares the condition number)"
        return (f"the first-order rounding error of each eigenvalue by the {path}, only (docs/methods.md §1.5); "
                f"it does not cover truncation to rank {self.rank} (the directions left out), noise in the run, or "
                f"the data's own rounding (float32 storage): the true error can be far larger")

    def to_dict(self) -> dict[str, Any]:
        op = self.operator
        rates = self.rates
        return {
            "store": self.store,
            "rank": op.rank,
            "rank_threshold": op.threshold,
            "rank_rule": op.truncation.rule,
            # σ̂, the noise level the tail rule estimated (null for the other rules)
            "noise_level": op.truncation.noise,
            "rank_note": op.rank_note,
            "singular_values": op.singular_values.tolist(),
            "eigenvalues": complex_pairs(op.eigenvalues),
            # first-order rounding error of each eigenvalue by the path used (docs/methods.md §1.5): not the
            # total error; "eigenvalue_errors_cover" says what it covers and what it does not
            "eigenvalue_errors": op.eigenvalue_errors().tolist(),
            "eigenvalue_errors_cover": self.eigenvalue_errors_cover,
            "abs_eigenvalues": np.abs(op.eigenvalues).tolist(),
            # log λ is undefined at λ = 0 (a mode gone after one step): null there
            "rates_per_step": [pair if np.isfinite(rate) else None
                               for pair, rate in zip(complex_pairs(rates), rates, strict=True)],
            "classes": self.classes,
            "class_counts": self.class_counts,
            "eps": self.eps,
            "amplitudes": complex_pairs(self.amplitudes),
            "reconstruction_error": self.reconstruction_error,
            "n_params": self.n_params,
            "n_snapshots": self.n_snapshots,
            "window": list(self.window),
            "steps": [int(self.steps[0]), int(self.steps[-1])],
            "snapshot_spacing_steps": self.dt,
            "layers": list(self.layers) if self.layers else None,
            "backend": self.backend,
            "method": self.choice.method if self.choice else None,
            "method_reason": self.choice.reason if self.choice else None,
            "method_costs": [c.to_dict() for c in self.choice.costs] if self.choice else [],
            "seconds": self.seconds,
            "forecast_steps": self.forecast_steps,
            # d time delays (Hankel DMD): the operator, amplitudes and reconstruction error are the embedded run's
            "delays": self.delays,
            "per_layer": [layer.to_dict() for layer in self.per_layer],
        }

    def to_dataframe(self) -> Any:
        """One row per mode (pandas): eigenvalue λ, |λ|, rate log(λ)/Δt per step, amplitude, |amplitude|, class."""
        from ...tables import dataframe

        with np.errstate(divide="ignore", invalid="ignore"):
            rates = self.rates
        return dataframe({"mode": np.arange(self.rank), "eigenvalue": self.eigenvalues,
                          "abs_eigenvalue": np.abs(self.eigenvalues), "rate_per_step": rates,
                          "amplitude": self.amplitudes, "abs_amplitude": np.abs(self.amplitudes),
                          "class": self.classes}, index="mode")


def complex_pairs(values: np.ndarray) -> list[list[float]]:
    """Complex numbers as [re, im] pairs (JSON has no complex type)."""
    values = np.asarray(values, dtype=np.complex128)
    return [[float(v.real), float(v.imag)] for v in values]

