"""``digits-cnn``: scikit-learn's 8x8 handwritten digits with a small CNN (conv-pool-conv-pool-fc-fc)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .base import Dataset, Limit, Recipe


class DigitsCNN(Recipe):
    name = "digits-cnn"
    summary = "sklearn 8x8 digits, CNN conv(8)-pool-conv(16)-pool-fc(32)-fc(10), cross-entropy"
    task = "classification"
    defaults: dict[str, Any] = {
        "epochs": 10,
        "lr": 3e-3,
        "optimizer": "adam",
        "batch_size": 64,
        "channels": 8,
        "hidden": 32,
        "val_fraction": 0.2,
        "momentum": 0.0,
    }
    # every class (at least 174 images) keeps >= 2 images on each side of the split at 0.01..0.99
    limits = {
        "channels": Limit(1, 256),
        "hidden": Limit(1, 4096),
        "val_fraction": Limit(0.01, 0.99),
        "momentum": Limit(0, 1),
    }
    option_help = {
        "channels": "filters of the first conv layer (the second has twice as many)",
        "hidden": "width of the hidden fully connected layer",
        "val_fraction": "share of the 1797 images held out (stratified, seeded)",
        "momentum": "SGD momentum (optimizer=sgd)",
    }

    def build_model(self) -> nn.Module:
        c, h = int(self.config["channels"]), int(self.config["hidden"])
        return nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),       # 8x8 -> 4x4
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 4x4 -> 2x2
            nn.Flatten(), nn.Linear(2 * c * 4, h), nn.ReLU(), nn.Linear(h, 10),
        )

    def load_data(self) -> Dataset:
        from sklearn.datasets import load_digits  # ships with scikit-learn: no download

        digits = load_digits()
        x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
        y = digits.target.astype(np.int64)
        rng = np.random.default_rng(self.seed)
        val = np.zeros(len(y), dtype=bool)
        for label in range(10):  # stratified split
            idx = rng.permutation(np.flatnonzero(y == label))
            val[idx[: int(round(len(idx) * float(self.config["val_fraction"])))]] = True
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        return Dataset(xt[~val], yt[~val], xt[val], yt[val])
