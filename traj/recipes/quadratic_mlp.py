"""``quadratic-mlp``: regress z = x² + y² on [-6, 6]² with a 2-32-32-1 MLP and SGD (the KGA paper, fig. 4)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .base import Dataset, Limit, Recipe


class QuadraticMLP(Recipe):
    name = "quadratic-mlp"
    summary = "MLP 2-32-32-1 regressing z = x^2 + y^2 on [-6, 6]^2, MSE, SGD (the KGA paper, fig. 4)"
    task = "regression"
    defaults: dict[str, Any] = {
        "epochs": 25,
        "lr": 1e-3,
        "batch_size": 32,
        "hidden": 32,
        "n_train": 1000,
        "n_val": 200,
        "momentum": 0.0,
    }
    limits = {
        "hidden": Limit(1, 4096),
        "n_train": Limit(1, 10_000_000),
        "n_val": Limit(1, 10_000_000),
        "momentum": Limit(0, 1),
    }
    option_help = {
        "hidden": "width of both hidden layers",
        "n_train": "training points drawn uniformly from [-6, 6]^2",
        "n_val": "validation points",
        "momentum": "SGD momentum",
    }

    def build_model(self) -> nn.Module:
        h = int(self.config["hidden"])
        return nn.Sequential(nn.Linear(2, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 1))

    def evaluation_samples(self) -> int:
        return int(self.config["n_train"]) + int(self.config["n_val"])

    def load_data(self) -> Dataset:
        rng = np.random.default_rng(self.seed)
        n_train, n_val = int(self.config["n_train"]), int(self.config["n_val"])
        xy = rng.uniform(-6.0, 6.0, size=(n_train + n_val, 2)).astype(np.float32)
        z = (xy**2).sum(axis=1, keepdims=True).astype(np.float32)
        x, y = torch.from_numpy(xy), torch.from_numpy(z)
        return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:])
