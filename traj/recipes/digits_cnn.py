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
        "augment": False,
        "aug_shift": 1,
        "aug_degrees": 10.0,
    }
    # every class (at least 174 images) keeps >= 2 images on each side of the split at 0.01..0.99
    limits = {
        "channels": Limit(1, 256),
        "hidden": Limit(1, 4096),
        "val_fraction": Limit(0.01, 0.99),
        "momentum": Limit(0, 1),
        "aug_shift": Limit(0, 3),
        "aug_degrees": Limit(0, 90),
    }
    option_help = {
        "channels": "filters of the first conv layer (the second has twice as many)",
        "hidden": "width of the hidden fully connected layer",
        "val_fraction": "share of the 1797 images held out (stratified, seeded)",
        "momentum": "SGD momentum (optimizer=sgd)",
        "augment": "train on randomly shifted and rotated images, drawn anew each epoch (seeded by seed and epoch)",
        "aug_shift": "largest shift in pixels, each axis (augment=true)",
        "aug_degrees": "largest rotation in degrees, either way (augment=true)",
    }

    def build_model(self) -> nn.Module:
        c, h = int(self.config["channels"]), int(self.config["hidden"])
        return nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),       # 8x8 -> 4x4
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 4x4 -> 2x2
            nn.Flatten(), nn.Linear(2 * c * 4, h), nn.ReLU(), nn.Linear(h, 10),
        )

    def train_inputs(self, epoch: int) -> torch.Tensor:
        """The training images of an epoch; with ``augment`` shifted and rotated (:func:`augment_digits`)."""
        x = self.data.x_train
        if not self.config["augment"]:
            return x
        return augment_digits(x, seed=self.seed, epoch=epoch, shift=int(self.config["aug_shift"]),
                              degrees=float(self.config["aug_degrees"]))

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


def augment_digits(x: torch.Tensor, *, seed: int, epoch: int, shift: int = 1, degrees: float = 10.0) -> torch.Tensor:
    """Every image shifted by whole pixels and rotated about its centre, one affine map each (Turjeman et al. 2022's
    augmentation, at 8x8 scale).

    ``rng = default_rng([seed, epoch])`` draws per image (dx, dy) uniform in [-shift, shift] and then an
    angle uniform in [-degrees, degrees]: deterministic for (seed, epoch) and independent of the batch
    order. Bilinear sampling with zero padding (the background is 0; rolling would wrap ink around).

    Parameters
    ----------
    x : tensor of shape (n, 1, H, W)

    Returns
    -------
    tensor of shape (n, 1, H, W)
    """
    import torch.nn.functional as F

    n, _, h, w = x.shape
    rng = np.random.default_rng([seed, epoch])
    offsets = rng.integers(-shift, shift + 1, size=(n, 2))
    angles = np.deg2rad(rng.uniform(-degrees, degrees, size=n))
    cos, sin = np.cos(angles), np.sin(angles)
    # normalised coordinates: the sampling grid moves by -d so the content moves by +d
    theta = np.stack([np.stack([cos, -sin, -2.0 * offsets[:, 0] / w], axis=1),
                      np.stack([sin, cos, -2.0 * offsets[:, 1] / h], axis=1)], axis=1)
    grid = F.affine_grid(torch.as_tensor(theta, dtype=x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
