"""``traj kga-replay``: re-run a recorded recipe plainly and with KGA, record every run, compare them.

The recipe is re-run with its seed and data order, so the plain run repeats the recorded one
and each KGA run differs from it only by the acceleration (α = 0 repeats it bit for bit).
The result is a frozen :class:`ReplayResult`: every run's curves, and per KGA run its
comparison with the plain one (:class:`ReplayComparison`), with ``to_dict()`` for JSON.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checks import MAX_EPOCHS, check_floats, check_int
from ..errors import NotApplicableError, UnsafeOutputError
from ..progress import Progress, Stage
from .kga import KGA, KGAOptions

__all__ = ["ReplayComparison", "ReplayResult", "ReplayRun", "replay"]


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: a value that is not finite (a diverged run's loss) is null."""
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class ReplayRun:
    """One training run of a replay: per epoch train loss, validation metrics and wall time."""

    label: str
    alpha: float
    store: str
    train_loss: tuple[float, ...]
    val_loss: tuple[float, ...]
    val_accuracy: tuple[float, ...] | None
    epoch_seconds: tuple[float, ...]
    masked_fraction: tuple[float, ...]
    dmd_seconds: float
    refits: int

    @property
    def diverged_epoch(self) -> int | None:
        """The first epoch whose train loss is not finite (None: the run never diverged)."""
        return next((i + 1 for i, v in enumerate(self.train_loss) if not np.isfinite(v)), None)

    def to_dict(self) -> dict[str, Any]:
        # a loss that is not finite (a diverged run) is null, and diverged_epoch says why
        out = {k: _finite_or_none(getattr(self, k)) for k in self.__dataclass_fields__}
        out["diverged_epoch"] = self.diverged_epoch
        return out


@dataclass(frozen=True)
class ReplayComparison:
    """A KGA run against the plain run of the same replay."""

    label: str
    alpha: float
    final_train_loss: float
    final_val_loss: float
    diverged_epoch: int | None
    loss_difference: tuple[float, ...]
    epochs_to_plain_final_loss: int | None
    added_seconds_per_epoch: float
    dmd_seconds_total: float

    @classmethod
    def of(cls, run: ReplayRun, plain: ReplayRun) -> ReplayComparison:
        target = plain.train_loss[-1]  # NaN when the plain run diverged: no KGA run "reaches" it
        # the first epoch carries one-off costs (imports, allocations): compare the rest
        added = float(np.mean(run.epoch_seconds[1:] or run.epoch_seconds)
                      - np.mean(plain.epoch_seconds[1:] or plain.epoch_seconds))
        return cls(run.label, run.alpha, run.train_loss[-1], run.val_loss[-1], run.diverged_epoch,
                   tuple(a - b for a, b in zip(run.train_loss, plain.train_loss, strict=True)),
                   next((i + 1 for i, v in enumerate(run.train_loss) if v <= target), None), added, run.dmd_seconds)

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite_or_none(getattr(self, k)) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class ReplayResult:
    recipe: str
    config: dict[str, Any]
    options: dict[str, Any]
    plain: ReplayRun
    accelerated: tuple[ReplayRun, ...]
    seconds: float

    @property
    def comparison(self) -> tuple[ReplayComparison, ...]:
        return tuple(ReplayComparison.of(run, self.plain) for run in self.accelerated)

    @property
    def plain_final_train_loss(self) -> float | None:
        value = self.plain.train_loss[-1]
        return value if np.isfinite(value) else None

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "config": self.config, "options": self.options,
                "plain": self.plain.to_dict(), "runs": [r.to_dict() for r in self.accelerated],
                "comparison": [c.to_dict() for c in self.comparison],
                "plain_final_train_loss": self.plain_final_train_loss,
                "plain_diverged_epoch": self.plain.diverged_epoch, "seconds": self.seconds}


def replay(
    recipe: Any,
    out_dir: str | os.PathLike[str],
    *,
    alphas: Iterable[float] = (1.0,),
    epochs: int | None = None,
    progress: Progress | None = None,
    stage: Stage | None = None,
    final_dir: str | os.PathLike[str] | None = None,
    **kga_options: Any,
) -> ReplayResult:
    """Re-run ``recipe`` (same seed, same data order) plainly and with KGA for each α, recording
    every run to ``out_dir/<label>.zarr`` so the other commands can analyse them.

    ``out_dir`` must not hold stores of those names. ``final_dir``: where ``out_dir`` will be
    moved once complete (a staging directory's target); the results name paths there.
    ``progress(epochs done, epochs in all)`` after every epoch of every run;
    ``stage("<label> loss <train loss>")`` too.
    """
    # every option is checked before the first run trains (KGA itself is built only for the second)
    alphas = check_floats("alphas", alphas, low=0)
    options = {k: v for k, v in KGAOptions.checked(**kga_options).to_dict().items() if k in kga_options}
    if epochs is not None:
        epochs = check_int("epochs", epochs, low=1, high=MAX_EPOCHS)
    if getattr(recipe, "name", "") == "mirror-descent":
        raise NotApplicableError("the mirror-descent recipe iterates an algorithm, not a torch optimizer: "
                                 "nothing to accelerate")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe.data  # noqa: B018  # load the data before any run is timed
    t0 = time.perf_counter()
    final = Path(final_dir) if final_dir is not None else out
    alphas = list(dict.fromkeys(float(a) for a in alphas))  # one run per distinct α
    labels = [("plain", None), *[(f"kga-alpha{a:g}", float(a)) for a in alphas]]
    total = (epochs or recipe.epochs) * len(labels)
    counter = _Counter(total, progress, stage)
    runs = [_replay_run(recipe, out, final, label, alpha, epochs, counter, options) for label, alpha in labels]
    return ReplayResult(recipe.name, dict(recipe.config), options, runs[0], tuple(runs[1:]), time.perf_counter() - t0)


class _Counter:
    """Epochs done over every run of a replay, reported to ``progress`` and ``stage``."""

    def __init__(self, total: int, progress: Progress | None, stage: Stage | None) -> None:
        self.total, self.done, self.progress, self.stage = total, 0, progress, stage

    def epoch(self, label: str, loss: float) -> None:
        self.done += 1
        if self.stage is not None:
            self.stage(f"{label} loss {loss:.4g}")
        if self.progress is not None:
            self.progress(self.done, self.total)


def _replay_run(recipe: Any, out: Path, final: Path, label: str, alpha: float | None, epochs: int | None,
                counter: _Counter, options: dict[str, Any]) -> ReplayRun:
    """One recorded run of a replay: plain (alpha None) or wrapped in KGA."""
    from ..record import Recorder

    made: dict[str, KGA] = {}

    def wrap(optimizer: torch.optim.Optimizer) -> Any:
        if alpha is None:
            return optimizer
        made["kga"] = KGA(optimizer, alpha=alpha, **options)
        return made["kga"]

    train_loss: list[float] = []
    val_loss: list[float] = []
    val_acc: list[float] = []
    seconds: list[float] = []
    clock = [time.perf_counter()]

    def on_epoch(report: Any) -> None:
        now = time.perf_counter()
        seconds.append(now - clock[0])
        clock[0] = now
        train_loss.append(report.loss)
        val_loss.append(report.metrics.get("loss", float("nan")))
        if "accuracy" in report.metrics:
            val_acc.append(report.metrics["accuracy"])
        counter.epoch(label, report.loss)

    model = recipe.new_model()
    every = recipe.config["every"]
    unit, k = ("epoch", 1) if every == "epoch" else ("step", int(every))
    attrs = {**recipe.store_attrs(), "kga": None if alpha is None else {"alpha": alpha, **options}}
    path = out / f"{label}.zarr"
    if path.exists():
        raise UnsafeOutputError(f"{path} already exists; kga-replay writes its runs only into a new directory")
    with Recorder(path, model, every=k, unit=unit, recipe=attrs) as recorder:
        clock[0] = time.perf_counter()
        recipe.train(model, recorder=recorder, epochs=epochs, progress=on_epoch, wrap_optimizer=wrap)
    kga = made.get("kga")
    return ReplayRun(label, 0.0 if alpha is None else alpha, str(final / path.name), tuple(train_loss),
                     tuple(val_loss), tuple(val_acc) or None, tuple(seconds),
                     tuple(kga.log.masked_fraction) if kga else (), float(sum(kga.log.dmd_seconds)) if kga else 0.0,
                     kga.log.refits if kga else 0)
