"""What an analysis needs to score weights: the :class:`Evaluator` protocol.

An evaluation (``traj dmd --evaluate``, ``traj cmd``'s scores, ``--compare-dmd``, prune's accuracies) takes
a fitted result and an Evaluator: something that builds its model, loads a flat weight vector θ into it
and returns its metrics. A :class:`~traj.recipes.base.Recipe` is one (``Recipe.evaluate``); a user's own
model is another — any object with this method. The library never picks one: the CLI resolves the recipe
(``--recipe`` or the store's) and passes it in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Evaluator", "ModelSource", "Trainer"]


@runtime_checkable
class Evaluator(Protocol):
    """Scores flat weight vectors: build the model, load θ (in the store's layout), return its metrics."""

    def evaluate(self, theta: np.ndarray) -> Mapping[str, float]:
        """The metrics of the model with weights ``theta`` (shape (N,)), e.g. ``{"loss": ..., "accuracy": ...}``;
        "accuracy" where it is measured (the reports draw it), else "loss"."""
        ...


@runtime_checkable
class Trainer(Evaluator, Protocol):
    """An :class:`Evaluator` that can also train: what ``traj prune`` needs for its gradient scores (JGP, GGP)
    and for refining pruned weights. A :class:`~traj.recipes.base.Recipe` is one."""

    def gradient(self, theta: np.ndarray, *, batches: int = 8, seed: int = 0) -> np.ndarray:
        """∇L at θ, averaged over a fixed, seeded set of ``batches`` training minibatches, shape (N,)."""
        ...

    def refine(self, theta: np.ndarray, epochs: int = 1, *, mask: Mapping[str, np.ndarray] | None = None,
               seed: int = 0) -> np.ndarray:
        """θ after ``epochs`` more epochs of training with the weights ``mask`` zeroes held at zero, shape (N,)."""
        ...


@runtime_checkable
class ModelSource(Protocol):
    """What ``traj landscape`` needs where it scores many θ in a row: one model built once, θ loaded into it
    point after point, and its metrics on the validation data. A :class:`~traj.recipes.base.Recipe` is one."""

    @property
    def name(self) -> str:
        """What the reports call it (a recipe's name)."""
        ...

    @property
    def data(self) -> Any:
        """The data, with ``x_val`` and ``y_val`` (tensors) among its fields."""
        ...

    def new_model(self) -> torch.nn.Module:
        """A fresh model of the run's architecture."""
        ...

    def load_theta(self, model: torch.nn.Module, theta: np.ndarray) -> torch.nn.Module:
        """``model`` with the flat weights ``theta`` copied in."""
        ...

    def metrics(self, model: torch.nn.Module, x: Any, y: Any) -> Mapping[str, float]:
        """The model's metrics on (x, y), "loss" among them."""
        ...
