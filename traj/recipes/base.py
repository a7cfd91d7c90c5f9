"""What every built-in recipe provides, and the training loop most of them share.

A recipe is a deterministic training run: for a given config (seed included) it builds the
same model, the same data and the same batch order every time, so a recorded run can be
replayed, and later commands can score any θ (``evaluate``) or continue training from it
(``refine``).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..checks import MAX_EPOCHS, MAX_EVERY, MAX_SEED, check_every, check_float, check_int, shown_value
from ..errors import ParameterError, RecipeConfigError

__all__ = ["Recipe", "Dataset", "EpochReport", "COMMON_DEFAULTS", "COMMON_LIMITS", "Limit", "parse_set_option"]

#: Options every recipe has. ``every`` is the snapshot spacing in steps, or "epoch".
COMMON_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "epochs": 10,
    "lr": 0.01,
    "optimizer": "sgd",
    "seed": 0,
    "batch_size": 64,
    "every": 1,
})

_OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class Limit:
    """The range of a numeric recipe option; every int option states an upper bound, so no
    config (from ``--set`` or from a store's attributes) can ask for unbounded memory or time."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False


#: Ranges of the options every recipe has (``every`` is checked on its own: an int or "epoch").
COMMON_LIMITS: Mapping[str, Limit] = MappingProxyType({
    "epochs": Limit(1, MAX_EPOCHS),
    "lr": Limit(0, None, low_open=True),
    "seed": Limit(0, MAX_SEED),
    "batch_size": Limit(1, 10_000_000),
})


@dataclass(frozen=True)
class Dataset:
    """Tensors of one recipe's data, already split."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


@dataclass(frozen=True)
class EpochReport:
    """What the training loop tells its progress callback after each epoch."""

    epoch: int
    epochs: int
    loss: float
    metrics: dict[str, float]


ProgressCallback = Callable[[EpochReport], None]


class Recipe:
    """Base of the built-in recipes.

    Subclasses set ``name``, ``summary``, ``task`` and ``defaults`` and implement
    :meth:`build_model` and :meth:`load_data`; the shared loop does the rest.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    task: ClassVar[str] = "classification"  # or "regression"
    defaults: ClassVar[dict[str, Any]] = {}
    #: Ranges of the recipe's own numeric options (each int option needs one, with an upper bound).
    limits: ClassVar[dict[str, Limit]] = {}
    #: Short help for recipe-specific options, shown by ``traj recipes``.
    option_help: ClassVar[dict[str, str]] = {}

    def __init__(self, config: Mapping[str, Any] | None = None, **overrides: Any) -> None:
        merged = {**COMMON_DEFAULTS, **self.defaults}
        given = {**(config or {}), **overrides}
        for key, value in given.items():
            if key not in merged:
                raise RecipeConfigError(
                    f"recipe {self.name!r} has no option {key!r} (options: {', '.join(sorted(merged))})"
                )
            merged[key] = _coerce(self.name, key, value, merged[key])
        self.config: dict[str, Any] = merged
        self._validate()
        self._data: Dataset | None = None

    # ------------------------------------------------------------------ configuration
    @classmethod
    def all_defaults(cls) -> dict[str, Any]:
        return {**COMMON_DEFAULTS, **cls.defaults}

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def epochs(self) -> int:
        return int(self.config["epochs"])

    @classmethod
    def all_limits(cls) -> dict[str, Limit]:
        return {**COMMON_LIMITS, **cls.limits}

    def _validate(self) -> None:
        """Type and range of every option (one loop for every recipe); subclasses add the
        relations between options (``super()._validate()`` first)."""
        c = self.config
        limits = self.all_limits()
        defaults = self.all_defaults()
        try:
            for key, default in defaults.items():
                if key == "every" or isinstance(default, bool | str):
                    continue
                limit = limits.get(key, Limit())
                bounds = {"low": limit.low, "high": limit.high}
                if isinstance(default, int):
                    c[key] = check_int(key, c[key], **bounds)
                elif isinstance(default, float):
                    c[key] = check_float(key, c[key], **bounds, low_open=limit.low_open, high_open=limit.high_open)
            if c["every"] != "epoch":
                c["every"] = _check_every(c["every"])
        except ParameterError as exc:
            raise RecipeConfigError(f"recipe {self.name!r}: {exc}") from None
        self._choice("optimizer", _OPTIMIZERS)

    def _choice(self, key: str, allowed: Sequence[str]) -> None:
        """Check a keyword option against ``allowed`` (case-insensitive) and store it lower-cased."""
        value = str(self.config[key]).lower()
        if value not in allowed:
            raise RecipeConfigError(f"recipe {self.name!r}: {key} must be one of {', '.join(allowed)}, "
                                    f"got {shown_value(self.config[key])}")
        self.config[key] = value

    def store_attrs(self) -> dict[str, Any]:
        """The ``recipe`` attribute written into a store this recipe records."""
        return {"name": self.name, "config": dict(self.config), "seed": self.seed}

    # ------------------------------------------------------------------ to implement
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def load_data(self) -> Dataset:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared pieces
    @property
    def data(self) -> Dataset:
        if self._data is None:
            self._data = self.load_data()
        return self._data

    def new_model(self) -> nn.Module:
        """The initial model for this seed (global RNG state untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self.build_model()

    def loss_fn(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return nn.functional.cross_entropy(output, target)
        return nn.functional.mse_loss(output, target)

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        name = self.config["optimizer"]
        lr = float(self.config["lr"])
        params = model.parameters()
        if name == "adam":
            return torch.optim.Adam(params, lr=lr)
        if name == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=float(self.config.get("weight_decay", 0.01)))
        return torch.optim.SGD(params, lr=lr, momentum=float(self.config.get("momentum", 0.0)))

    def after_step(self, model: nn.Module) -> None:
        """Hook run after every optimizer step (before the snapshot); e.g. a norm constraint."""

    @torch.no_grad()
    def metrics(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        model.eval()
        out = model(x)
        model.train()
        result = {"loss": float(self.loss_fn(out, y))}
        if self.task == "classification":
            result["accuracy"] = float((out.argmax(dim=-1) == y).float().mean())
        return result

    def batches(self, generator: torch.Generator) -> list[torch.Tensor]:
        """One epoch's minibatch index sets, in a seeded order."""
        n = self.data.x_train.shape[0]
        order = torch.randperm(n, generator=generator)
        size = int(self.config["batch_size"])
        return [order[i : i + size] for i in range(0, n, size)]

    def train_inputs(self, epoch: int) -> torch.Tensor:
        """The training inputs of epoch ``epoch`` (0-based): the data as is; a recipe that augments
        overrides this (its own generator, so the batch order stays the recipe's)."""
        return self.data.x_train

    def train(
        self,
        model: nn.Module | None = None,
        *,
        recorder: Any = None,
        epochs: int | None = None,
        mask: Mapping[str, torch.Tensor] | None = None,
        seed: int | None = None,
        progress: ProgressCallback | None = None,
        wrap_optimizer: Callable[[torch.optim.Optimizer], Any] | None = None,
    ) -> nn.Module:
        """Run the recipe's training loop.

        Parameters
        ----------
        model : nn.Module, optional
            Start from this model (default: :meth:`new_model`).
        recorder : traj.Recorder, optional
            Counted after every optimizer step; told about every epoch end.
        epochs : int, optional
            Default ``config["epochs"]``.
        mask : mapping of parameter name to 0/1 tensor, optional
            Weights where the mask is 0 are set to zero and kept there (pruning refinement).
        seed : int, optional
            Seed of the batch order (default the recipe's seed).
        wrap_optimizer : callable, optional
            Wraps the optimizer (e.g. ``lambda opt: traj.KGA(opt, ...)``); a wrapper with an
            ``epoch_end()`` method is told about every epoch end.
        """
        model = self.new_model() if model is None else model
        model.train()
        data = self.data
        generator = torch.Generator().manual_seed(self.seed if seed is None else int(seed))
        optimizer = self.make_optimizer(model)
        if wrap_optimizer is not None:
            optimizer = wrap_optimizer(optimizer)
        named = dict(model.named_parameters())
        masks = {name: m.to(dtype=named[name].dtype) for name, m in (mask or {}).items()}
        _apply_mask(named, masks)
        n_epochs = self.epochs if epochs is None else int(epochs)
        for epoch in range(n_epochs):
            batches = self.batches(generator)
            x_train = self.train_inputs(epoch)
            losses = []
            for i, index in enumerate(batches):
                optimizer.zero_grad(set_to_none=True)
                loss = self.loss_fn(model(x_train[index]), data.y_train[index])
                loss.backward()
                optimizer.step()
                _apply_mask(named, masks)
                self.after_step(model)
                losses.append(loss.item())
                last = i == len(batches) - 1
                val = self.metrics(model, data.x_val, data.y_val) if last else {}
                if recorder is not None:
                    recorder.step(loss=losses[-1], metrics={f"val_{k}": v for k, v in val.items()})
            report = EpochReport(epoch + 1, n_epochs, float(np.mean(losses)), val)
            if hasattr(optimizer, "epoch_end"):
                optimizer.epoch_end()
            if recorder is not None:
                recorder.epoch_end()
            if progress is not None:
                progress(report)
        return model

    # ------------------------------------------------------------------ θ <-> model
    def load_theta(self, model: nn.Module, theta: np.ndarray) -> nn.Module:
        """Copy a flat θ (state_dict order of parameters) into ``model``."""
        params = list(model.parameters())
        n = sum(p.numel() for p in params)
        theta = np.asarray(theta)
        if theta.shape != (n,):
            raise RecipeConfigError(f"θ has shape {theta.shape}; recipe {self.name!r} has {n} parameters")
        with torch.no_grad():
            offset = 0
            for p in params:
                k = p.numel()
                p.copy_(torch.from_numpy(np.ascontiguousarray(theta[offset : offset + k])).reshape(p.shape))
                offset += k
        return model

    @staticmethod
    def theta_of(model: nn.Module) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().copy()

    def evaluation_samples(self) -> int:
        """Samples one :meth:`evaluate` runs through the model (validation and training data); a recipe that
        knows the count from its config says so without building the data."""
        data = self.data
        return int(len(data.x_val) + len(data.x_train))

    def evaluate(self, theta: np.ndarray) -> dict[str, float]:
        """Loss (and accuracy) of the weights θ on the validation and training data."""
        model = self.load_theta(self.new_model(), theta)
        data = self.data
        val = self.metrics(model, data.x_val, data.y_val)
        train = self.metrics(model, data.x_train, data.y_train)
        return {**val, **{f"train_{k}": v for k, v in train.items()}}

    def gradient(self, theta: np.ndarray, *, batches: int = 8, seed: int = 0) -> np.ndarray:
        """∇L at θ, averaged over a fixed, seeded set of ``batches`` training minibatches (θ order)."""
        model = self.load_theta(self.new_model(), theta)
        model.train()
        chosen = self.batches(torch.Generator().manual_seed(seed))[: max(1, batches)]
        model.zero_grad(set_to_none=True)
        data = self.data
        for index in chosen:
            (self.loss_fn(model(data.x_train[index]), data.y_train[index]) / len(chosen)).backward()
        return torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1) for p in model.parameters()
        ]).double().numpy()

    def refine(self, theta: np.ndarray, epochs: int = 1, *, mask: Mapping[str, np.ndarray] | None = None,
               seed: int = 0) -> np.ndarray:
        """Continue training from θ for ``epochs`` epochs (masked weights held at zero)."""
        model = self.load_theta(self.new_model(), theta)
        torch_mask = {k: torch.as_tensor(np.asarray(v)) for k, v in (mask or {}).items()}
        self.train(model, epochs=epochs, mask=torch_mask, seed=seed)
        return self.theta_of(model)

    def record(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        grads: bool = False,
        dtype: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Any:
        """Train from scratch and record the run to ``path``; returns the opened :class:`RunStore`."""
        from ..record import Recorder
        from ..store import RunStore

        model = self.new_model()
        every = self.config["every"]
        unit, k = ("epoch", 1) if every == "epoch" else ("step", int(every))
        with Recorder(path, model, every=k, unit=unit, grads=grads, dtype=dtype,
                      recipe=self.store_attrs(), overwrite=overwrite) as recorder:
            self.train(model, recorder=recorder, progress=progress)
        return RunStore(path)


def _apply_mask(named: Mapping[str, nn.Parameter], masks: Mapping[str, torch.Tensor]) -> None:
    if not masks:
        return
    with torch.no_grad():
        for name, m in masks.items():
            if name not in named:
                raise RecipeConfigError(f"mask names {name!r}, which the model does not have")
            named[name].mul_(m.reshape(named[name].shape))


def _check_every(value: Any) -> int:
    """The snapshot spacing in steps (the other choice, "epoch", is a word)."""
    try:
        return check_every(value)
    except ParameterError:
        raise ParameterError("every", f"must be 'epoch' or an integer from 1 to {MAX_EVERY}, got {shown_value(value)}"
                             ) from None


def _coerce(recipe: str, key: str, value: Any, default: Any) -> Any:
    """Give ``value`` (maybe a string from ``--set``) the type of the option's default."""
    if key == "every":
        if isinstance(value, str):
            if value.strip().lower() == "epoch":
                return "epoch"
            try:
                return int(value)
            except ValueError:
                pass
        return value  # checked by Recipe._validate
    kind = type(default)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an int too large for a float: out of every range
            return math.inf
    try:
        text = str(value).strip()
        if kind is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:  # also str() of an int beyond 4300 digits
        noun = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, "a word")
        raise RecipeConfigError(f"recipe {recipe!r}: {key} takes {noun}, got {shown_value(value)}") from None
    if isinstance(value, dict | list | tuple):
        raise RecipeConfigError(f"recipe {recipe!r}: {key} takes a word, got {shown_value(value)}")
    return text


def parse_set_option(items: list[str]) -> dict[str, str]:
    """Parse ``--set key=value`` strings."""
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeConfigError(f"--set takes key=value, got {item!r}")
        parsed[key.strip().replace("-", "_")] = value.strip()
    return parsed
