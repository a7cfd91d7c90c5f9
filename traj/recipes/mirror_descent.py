"""``mirror-descent``: an optimisation algorithm as a dynamical system (Redman et al. 2024, fig. 1).

Find the minimiser x* = 0 of L(x) = Σᵢ −log cos(xᵢ), whose gradient is f(x) = tan(x)
("f(x) = tan(x)" in Redman et al. 2024), from an ensemble of initial conditions on a grid, with one of:

- ``omd``: online mirror descent with the mirror map ψ(x) = Σ cosh(xᵢ), h = ∇ψ = sinh:
  h(x_{k+1}) = h(x_k) − η tan(x_k). The recorded state is x.
- ``ogd``: online gradient descent in the mirror coordinates y = h(x):
  y_{k+1} = y_k − η tan(h⁻¹(y_k)), started at y_0 = h(x_0). Then y_k = h(x_k) for every k: h
  maps one trajectory onto the other, so OMD and OGD are conjugate by construction
  (docs/methods.md §4.7). The recorded state is y.
- ``bisection``: the bisection method on tan over a bracket centred on x_0; the recorded
  state is the bracket's midpoint. It halves its bracket every step (λ = 1/2): not conjugate.

One "epoch" is one iteration of the whole ensemble; the state θ has shape (grid^d, d).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import RecipeConfigError
from .base import Dataset, EpochReport, Limit, Recipe

ALGORITHMS = ("omd", "ogd", "bisection")
#: Numbers in the state θ (grid^dim initial conditions of dimension dim).
MAX_STATE = 1_000_000


class _State(nn.Module):
    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.x = nn.Parameter(x0.clone())
        # the bisection bracket; buffers are not recorded (only parameters are)
        self.register_buffer("lo", torch.zeros_like(x0))
        self.register_buffer("hi", torch.zeros_like(x0))

    def forward(self, _: torch.Tensor | None = None) -> torch.Tensor:
        return self.x


class MirrorDescent(Recipe):
    name = "mirror-descent"
    summary = "OMD / OGD / bisection minimising sum(-log cos x), gradient tan(x) (Redman et al. 2024 fig. 1)"
    task = "regression"
    defaults: dict[str, Any] = {
        "epochs": 100,
        "lr": 1e-2,
        "optimizer": "sgd",
        "batch_size": 1,
        "algorithm": "omd",
        "dim": 2,
        "grid": 5,
        "extent": 0.6,
        "jitter": 1e-3,
        "ics": "grid",
    }
    limits = {
        "dim": Limit(1, 1000),
        "grid": Limit(1, 1_000_000),
        # (0, pi/4) keeps every bisection bracket inside the domain (-pi/2, pi/2)
        "extent": Limit(0, math.pi / 4, low_open=True, high_open=True),
        "jitter": Limit(0, 1),
    }
    option_help = {
        "algorithm": "omd | ogd | bisection",
        "dim": "dimension d of the iterate",
        "grid": "initial conditions per dimension (grid^d in all)",
        "extent": "initial conditions on [-extent, extent]^d (< pi/4 keeps brackets inside the domain)",
        "jitter": "seeded relative perturbation of the grid's initial conditions (a seed null)",
        "ics": "grid (the authors' grid, jittered by the seed) | uniform (grid^d points drawn uniformly by the seed)",
    }

    def _validate(self) -> None:
        super()._validate()
        c = self.config
        self._choice("algorithm", ALGORITHMS)
        self._choice("ics", ("grid", "uniform"))
        if c["grid"] ** c["dim"] * c["dim"] > MAX_STATE:
            raise RecipeConfigError(f"recipe {self.name!r}: grid {c['grid']} and dim {c['dim']} make a state of "
                                    f"grid^dim x dim numbers, more than {MAX_STATE}")

    def initial_conditions(self) -> np.ndarray:
        c = self.config
        axis = np.linspace(-c["extent"], c["extent"], int(c["grid"]))
        grid = np.stack(np.meshgrid(*([axis] * int(c["dim"])), indexing="ij"), axis=-1).reshape(-1, int(c["dim"]))
        rng = np.random.default_rng(self.seed)
        if c["ics"] == "uniform":
            return rng.uniform(-c["extent"], c["extent"], size=grid.shape)
        return grid * (1.0 + float(c["jitter"]) * rng.uniform(-1.0, 1.0, size=grid.shape))

    def build_model(self) -> nn.Module:
        x0 = torch.from_numpy(self.initial_conditions())
        state = _State(x0)
        if self.config["algorithm"] == "ogd":
            with torch.no_grad():
                state.x.copy_(torch.sinh(x0))
        half = x0.abs() + 0.2
        state.lo.copy_(x0 - half)
        state.hi.copy_(x0 + half)
        return state

    def evaluation_samples(self) -> int:
        return 1  # evaluate scores the state itself: no data

    def load_data(self) -> Dataset:
        empty = torch.zeros(1, 1)
        return Dataset(empty, empty, empty, empty)

    def primal(self, theta: torch.Tensor) -> torch.Tensor:
        """The primal iterate x of a recorded state (y = sinh(x) for OGD)."""
        return torch.asinh(theta) if self.config["algorithm"] == "ogd" else theta

    def loss_of(self, theta: torch.Tensor) -> float:
        x = self.primal(theta)
        return float((-torch.log(torch.cos(x))).sum(dim=-1).mean())

    @torch.no_grad()
    def iterate(self, state: _State) -> None:
        eta = float(self.config["lr"])
        x = state.x
        algorithm = self.config["algorithm"]
        if algorithm == "omd":
            x.copy_(torch.asinh(torch.sinh(x) - eta * torch.tan(x)))
        elif algorithm == "ogd":
            x.sub_(eta * torch.tan(torch.asinh(x)))
        else:
            mid = x
            right = torch.tan(mid) > 0  # root of tan lies left of mid
            state.hi.copy_(torch.where(right, mid, state.hi))
            state.lo.copy_(torch.where(right, state.lo, mid))
            x.copy_((state.lo + state.hi) / 2)

    def train(self, model: nn.Module | None = None, *, recorder: Any = None, epochs: int | None = None,
              mask: Any = None, seed: int | None = None, progress: Any = None) -> nn.Module:
        state = self.new_model() if model is None else model
        n = self.epochs if epochs is None else int(epochs)
        for k in range(n):
            self.iterate(state)
            loss = self.loss_of(state.x.detach())
            if recorder is not None:
                recorder.step(loss=loss)
                recorder.epoch_end()
            if progress is not None:
                progress(EpochReport(k + 1, n, loss, {}))
        return state

    def evaluate(self, theta: np.ndarray) -> dict[str, float]:
        state = torch.from_numpy(np.asarray(theta, dtype=np.float64)).reshape(-1, int(self.config["dim"]))
        return self._metrics_of(state)

    @torch.no_grad()
    def metrics(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """The objective at the model's state (there is no data: what analyses that score a model with
        ``metrics`` -- the landscape, a replay's validation -- get for this recipe)."""
        return self._metrics_of(model.x.detach().double().reshape(-1, int(self.config["dim"])))

    def _metrics_of(self, state: torch.Tensor) -> dict[str, float]:
        return {"loss": self.loss_of(state), "distance": float(self.primal(state).norm(dim=-1).mean())}
