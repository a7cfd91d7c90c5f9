"""``mnist1d-mlp``: MNIST-1D (generated locally by the ``mnist1d`` package) with an MLP of width h.

Seed 002 compares the training dynamics of h = 5, 10 and 40.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .base import Dataset, Limit, Recipe


class MNIST1DMLP(Recipe):
    name = "mnist1d-mlp"
    summary = "MNIST-1D (generated offline), MLP 40-h-h-10, cross-entropy (Redman et al. 2024: h = 5, 10, 40)"
    task = "classification"
    defaults: dict[str, Any] = {
        "epochs": 20,
        "lr": 1e-2,
        "optimizer": "sgd",
        "batch_size": 100,
        "h": 40,
        "n_samples": 5000,
        "momentum": 0.9,
    }
    limits = {
        "h": Limit(1, 4096),
        "n_samples": Limit(20, 200_000),  # 20 % test: at least 4 samples on each side
        "momentum": Limit(0, 1),
    }
    option_help = {
        "h": "hidden width of both hidden layers",
        "n_samples": "MNIST-1D samples generated (80 % train)",
        "momentum": "SGD momentum",
    }

    def build_model(self) -> nn.Module:
        h = int(self.config["h"])
        return nn.Sequential(nn.Linear(40, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 10))

    def load_data(self) -> Dataset:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = int(self.config["n_samples"])
        # The data set is fixed (its own seed, 42) whatever the run's seed, as in the package;
        # make_dataset reseeds numpy's global RNG, which a library must leave as it found it.
        state = np.random.get_state()
        try:
            data = make_dataset(args)
        finally:
            np.random.set_state(state)
        f = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
        g = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))  # noqa: E731
        return Dataset(f(data["x"]), g(data["y"]), f(data["x_test"]), g(data["y_test"]))
