"""``modular-transformer``: a one-layer transformer learning (a + b) mod p (Redman et al. 2024, grokking).

With ``constrain_norm`` the total weight norm is held at ``norm_scale`` times its initial
value after every step (the constraint that suppresses grokking in the comparison of Redman et al. 2024).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import RecipeConfigError
from .base import Dataset, Limit, Recipe


class OneLayerTransformer(nn.Module):
    """Token + position embedding, one multi-head attention block and an MLP, no layer norm."""

    def __init__(self, p: int, d_model: int, heads: int, d_mlp: int) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(p + 1, d_model)   # tokens 0..p-1 and "=" (token p)
        self.pos = nn.Embedding(3, d_model)
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.k = nn.Linear(d_model, d_model, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.o = nn.Linear(d_model, d_model, bias=False)
        self.mlp_in = nn.Linear(d_model, d_mlp)
        self.mlp_out = nn.Linear(d_mlp, d_model)
        self.unembed = nn.Linear(d_model, p, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t = tokens.shape
        h = self.embed(tokens) + self.pos.weight[:t]
        split = lambda z: z.view(b, t, self.heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        h = h + self.o((att @ v).transpose(1, 2).reshape(b, t, -1))
        h = h + self.mlp_out(torch.relu(self.mlp_in(h)))
        return self.unembed(h[:, -1])


class ModularTransformer(Recipe):
    name = "modular-transformer"
    summary = "one-layer transformer on (a + b) mod p, full batch AdamW; constrain_norm=true holds the weight norm"
    task = "classification"
    defaults: dict[str, Any] = {
        "epochs": 300,
        "lr": 1e-3,
        "optimizer": "adamw",
        "batch_size": 100_000,  # full batch: one step per epoch
        "p": 23,
        "train_fraction": 0.4,
        "d_model": 32,
        "heads": 4,
        "d_mlp": 128,
        "weight_decay": 1.0,
        "constrain_norm": False,
        "norm_scale": 1.0,
    }
    limits = {
        "p": Limit(2, 1000),  # p^2 pairs in one full batch
        "train_fraction": Limit(0, 1, low_open=True, high_open=True),
        "d_model": Limit(1, 4096),
        "heads": Limit(1, 256),
        "d_mlp": Limit(1, 16384),
        "weight_decay": Limit(0, None),
        "norm_scale": Limit(0, None, low_open=True),
    }
    option_help = {
        "p": "the modulus (a prime keeps the task clean)",
        "train_fraction": "share of the p^2 pairs used for training",
        "d_model": "residual width", "heads": "attention heads", "d_mlp": "MLP width",
        "weight_decay": "AdamW weight decay",
        "constrain_norm": "hold the total weight norm fixed after every step",
        "norm_scale": "the fixed norm, as a multiple of the initial norm",
    }

    def _validate(self) -> None:
        super()._validate()
        c = self.config
        if c["d_model"] % c["heads"]:
            raise RecipeConfigError(f"recipe {self.name!r}: d_model ({c['d_model']}) must be divisible by heads ({c['heads']})")
        n_train = self._n_train()
        if not 1 <= n_train < c["p"] ** 2:
            raise RecipeConfigError(f"recipe {self.name!r}: train_fraction {c['train_fraction']:g} of the {c['p'] ** 2} "
                                    f"pairs leaves {n_train} for training and {c['p'] ** 2 - n_train} for validation; "
                                    "both need at least one")

    def _n_train(self) -> int:
        p = int(self.config["p"])
        return int(round(p * p * float(self.config["train_fraction"])))

    def build_model(self) -> nn.Module:
        c = self.config
        return OneLayerTransformer(int(c["p"]), int(c["d_model"]), int(c["heads"]), int(c["d_mlp"]))

    def load_data(self) -> Dataset:
        p = int(self.config["p"])
        a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
        tokens = np.stack([a.ravel(), b.ravel(), np.full(p * p, p)], axis=1).astype(np.int64)
        labels = ((a + b) % p).ravel().astype(np.int64)
        order = np.random.default_rng(self.seed).permutation(p * p)
        n_train = self._n_train()
        x, y = torch.from_numpy(tokens[order]), torch.from_numpy(labels[order])
        return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:])

    def after_step(self, model: nn.Module) -> None:
        if not self.config["constrain_norm"]:
            return
        if not hasattr(self, "_target_norm"):
            self._target_norm = float(self.config["norm_scale"]) * float(np.linalg.norm(self.theta_of(self.new_model())))
        with torch.no_grad():
            norm = torch.sqrt(sum((p.double() ** 2).sum() for p in model.parameters()))
            scale = self._target_norm / float(norm)
            for p in model.parameters():
                p.mul_(scale)
