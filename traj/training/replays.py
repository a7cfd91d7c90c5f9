"""``traj kga-replay``: re-run a recorded recipe plainly and with KGA, record every run, compare them.

The recipe is re-run with its seed and data order, so the plain run repeats the recorded one
and each KGA run differs from it only by the acceleration (α = 0 repeats it bit for bit).
The result is a frozen :class:`ReplayResult`: every run's curves, and per KGA run its
comparison with the plain one (:class:`ReplayComparison`), with ``to_dict()`` for JSON.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..analysis.landscape import LandscapeParams, LandscapeResult, fit_landscape
from ..checks import MAX_EPOCHS, check_choice, check_floats, check_int
from ..errors import NotApplicableError, ParameterError, UnsafeOutputError
from ..progress import Progress, Stage
from .jump import JUMP_MODES, JumpLog, JumpOptions, KoopmanJump
from .kga import KGA, KGAOptions

if TYPE_CHECKING:  # pragma: no cover
    from ..recipes.base import Recipe

__all__ = ["JumpRecord", "ReplayComparison", "ReplayResult", "ReplayRun", "replay"]


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: a value that is not finite (a diverged run's loss) is null."""
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class JumpRecord:
    """The jump attempts of a prediction-based run (epochs 1-based; validation metrics right before
    and right after each jump, whether or not it was kept)."""

    epochs: tuple[int, ...]
    taken: tuple[bool, ...]
    val_loss_before: tuple[float, ...]
    val_loss_after: tuple[float, ...]
    val_accuracy_after: tuple[float, ...]
    relative_size: tuple[float, ...]
    max_abs_eigenvalue: tuple[float, ...]
    skipped: tuple[int, ...]

    @classmethod
    def of(cls, log: JumpLog) -> JumpRecord:
        return cls(*(tuple(getattr(log, name)) for name in cls.__dataclass_fields__))

    @property
    def n_taken(self) -> int:
        return sum(self.taken)

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite_or_none(list(getattr(self, k))) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class ReplayRun:
    """One training run of a replay: per epoch train loss, validation metrics and wall time.

    ``method`` is "plain", "kga" or a prediction-based baseline ("predict", "bootstrap"), whose
    ``jumps`` say where it jumped. The per-epoch validation metrics are measured before the
    epoch's jump (the value right after it is in ``jumps``).
    """

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
    method: str = "kga"
    jumps: JumpRecord | None = None
    accelerated_steps: int = 0

    @property
    def name(self) -> str:
        """How plots and tables call the run: "plain", "α = 0.25", "predict", "bootstrap"."""
        return f"α = {self.alpha:g}" if self.method == "kga" else self.method

    @property
    def diverged_epoch(self) -> int | None:
        """The first epoch whose train loss is not finite (None: the run never diverged)."""
        return next((i + 1 for i, v in enumerate(self.train_loss) if not np.isfinite(v)), None)

    def to_dict(self) -> dict[str, Any]:
        # a loss that is not finite (a diverged run) is null, and diverged_epoch says why
        out = {k: _finite_or_none(getattr(self, k)) for k in self.__dataclass_fields__ if k != "jumps"}
        out["jumps"] = None if self.jumps is None else self.jumps.to_dict()
        out["diverged_epoch"] = self.diverged_epoch
        return out


@dataclass(frozen=True)
class ReplayComparison:
    """A KGA or baseline run against the plain run of the same replay."""

    label: str
    method: str
    alpha: float
    final_train_loss: float
    final_val_loss: float
    diverged_epoch: int | None
    loss_difference: tuple[float, ...]
    epochs_to_plain_final_loss: int | None
    added_seconds_per_epoch: float
    dmd_seconds_total: float
    refits: int | None = None
    note: str | None = None

    @classmethod
    def of(cls, run: ReplayRun, plain: ReplayRun) -> ReplayComparison:
        target = plain.train_loss[-1]  # NaN when the plain run diverged: no KGA run "reaches" it
        # the first epoch carries one-off costs (imports, allocations): compare the rest
        added = float(np.mean(run.epoch_seconds[1:] or run.epoch_seconds)
                      - np.mean(plain.epoch_seconds[1:] or plain.epoch_seconds))
        note = None
        if run.method == "kga" and run.accelerated_steps == 0 and run.alpha != 0:
            when = ("never refitted (refits: 0)" if run.refits == 0 else
                    f"refitted {run.refits} time(s) but only after the last step")
            note = (f"KGA {when}, so it never accelerated a step: this run is plain training and its comparison "
                    f"with plain means nothing (a fit needs 3 snapshots; {len(run.train_loss)} epoch(s) trained)")
        elif run.jumps is not None and not run.jumps.epochs:
            note = (f"{run.method} never attempted a jump (a window of h epoch-end snapshots fills after h − 1 "
                    f"epochs, and the last epoch never jumps; {len(run.train_loss)} epoch(s) trained): this run is "
                    "plain training and its comparison with plain means nothing")
        return cls(run.label, run.method, run.alpha, run.train_loss[-1], run.val_loss[-1], run.diverged_epoch,
                   tuple(a - b for a, b in zip(run.train_loss, plain.train_loss, strict=True)),
                   next((i + 1 for i, v in enumerate(run.train_loss) if v <= target), None), added, run.dmd_seconds,
                   run.refits if run.method == "kga" else None, note)

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
    baselines: tuple[ReplayRun, ...] = ()
    landscape: LandscapeResult | None = None

    @property
    def runs(self) -> tuple[ReplayRun, ...]:
        """Every run but the plain one: the KGA runs, then the prediction-based baselines."""
        return (*self.accelerated, *self.baselines)

    @property
    def comparison(self) -> tuple[ReplayComparison, ...]:
        return tuple(ReplayComparison.of(run, self.plain) for run in self.runs)

    @property
    def plain_final_train_loss(self) -> float | None:
        value = self.plain.train_loss[-1]
        return value if np.isfinite(value) else None

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "config": self.config, "options": self.options,
                "plain": self.plain.to_dict(), "runs": [r.to_dict() for r in self.runs],
                "comparison": [c.to_dict() for c in self.comparison],
                "plain_final_train_loss": self.plain_final_train_loss,
                "plain_diverged_epoch": self.plain.diverged_epoch, "seconds": self.seconds,
                "landscape": None if self.landscape is None else self.landscape.to_dict()}


def replay(
    recipe: Recipe,
    out_dir: str | os.PathLike[str],
    *,
    alphas: Iterable[float] = (1.0,),
    baselines: Iterable[str] = (),
    jump_window: int = 5,
    jump_horizon: int = 5,
    jump_every: int | None = None,
    jump_warmup: int | None = None,
    epochs: int | None = None,
    landscape: LandscapeParams | None = None,
    progress: Progress | None = None,
    stage: Stage | None = None,
    final_dir: str | os.PathLike[str] | None = None,
    **kga_options: Any,
) -> ReplayResult:
    """Re-run ``recipe`` (same seed, same data order) plainly, with KGA for each α and as each
    prediction-based ``baselines`` run ("predict", "bootstrap": :class:`~traj.training.jump.KoopmanJump`
    with ``jump_window``, ``jump_horizon``, ``jump_every``, ``jump_warmup``), recording every run to
    ``out_dir/<label>.zarr`` so the other commands can analyse them.

    ``out_dir`` must not hold stores of those names. ``final_dir``: where ``out_dir`` will be
    moved once complete (a staging directory's target); the results name paths there.
    ``progress(epochs done, epochs in all)`` after every epoch of every run;
    ``stage("<label> loss <train loss>")`` too. ``landscape``: also the loss landscape of the
    recipe in one plane of every run (:func:`traj.analysis.landscape.fit_landscape`; ``progress``
    then counts its grid points).
    """
    # every option is checked before the first run trains (KGA itself is built only for the second)
    alphas = check_floats("alphas", alphas, low=0)
    options: dict[str, Any] = {k: v for k, v in KGAOptions.checked(**kga_options).to_dict().items()
                               if k in kga_options}
    methods = list(dict.fromkeys(check_choice("baseline", b, JUMP_MODES) for b in baselines))
    try:
        jump = JumpOptions(window=jump_window, horizon=jump_horizon, every=jump_every, warmup=jump_warmup)
    except ParameterError as e:  # named as replay (and traj kga-replay) takes them
        raise ParameterError(f"jump_{e.parameter}", e.problem) from None
    if methods:
        options["baselines"] = methods
        options["jump"] = {k: v for k, v in jump.to_dict().items() if k not in ("mode", "rank")}
    if epochs is not None:
        epochs = check_int("epochs", epochs, low=1, high=MAX_EPOCHS)
    if getattr(recipe, "name", "") == "mirror-descent":
        raise NotApplicableError("the mirror-descent recipe iterates an algorithm, not a torch optimizer: "
                                 "nothing to accelerate")
    recipe.data  # noqa: B018  # load the data before any run is timed
    if alphas and any(a != 0 for a in alphas):
        _check_kga_refits(recipe, epochs or recipe.epochs, kga_options.get("interval", "epoch"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    final = Path(final_dir) if final_dir is not None else out
    alphas = list(dict.fromkeys(float(a) for a in alphas))  # one run per distinct α
    specs = [_Spec("plain", "plain"), *[_Spec(f"kga-alpha{a:g}", "kga", a) for a in alphas],
             *[_Spec(m, m) for m in methods]]
    total = (epochs or recipe.epochs) * len(specs)
    counter = _Counter(total, progress, stage)
    kga_kwargs = {k: v for k, v in options.items() if k not in ("baselines", "jump")}
    runs = [_replay_run(recipe, out, final, spec, epochs, counter, kga_kwargs, jump) for spec in specs]
    plane = None
    if landscape is not None:
        from ..store import RunStore

        if stage is not None:
            stage("landscape")
        plane = fit_landscape([RunStore(out / f"{spec.label}.zarr") for spec in specs], recipe, landscape,
                              labels=[spec.label for spec in specs], progress=progress)
        # the runs' stores as they will be named once the staging directory is moved into place
        plane = dataclasses.replace(plane, runs=tuple(dataclasses.replace(r, store=str(final / Path(r.store).name))
                                                      for r in plane.runs))
    config = {**recipe.config, **({"epochs": epochs} if epochs is not None else {})}  # what was trained
    return ReplayResult(recipe.name, config, options, runs[0],
                        tuple(r for r in runs[1:] if r.method == "kga"), time.perf_counter() - t0,
                        tuple(r for r in runs[1:] if r.method != "kga"), plane)


def _check_kga_refits(recipe: Recipe, epochs: int, interval: str | int) -> None:
    """Refuse an interval in steps after which KGA would never refit before the last step: every α would be plain
    training compared with itself. KGA fits DMD once it holds 3 snapshots (the start's, then one a step) at every ``interval``-th
    step, and accelerates only the steps after a fit. (A run that still never refits, KGA-Epoch over fewer
    than 4 epochs or one that diverged first, says so in its :class:`ReplayComparison`'s ``note``.)"""
    if interval == "epoch":  # a short replay (a smoke test) may end before the 3rd epoch: each row then says so
        return
    per_epoch = len(recipe.batches(torch.Generator().manual_seed(0)))
    steps = epochs * per_epoch
    first = int(interval) * -(-2 // int(interval))  # the first multiple of the interval with 3 snapshots held
    # (θ at the start and one after each step)
    if first >= steps:
        raise ParameterError("interval", f"{interval} steps: KGA's first fit would come at step {first}, and the "
                                         f"replay trains {steps} step(s) ({epochs} epoch(s) of {per_epoch}): KGA would "
                                         "never accelerate a step, so every α would be plain training; give an "
                                         f"interval below {steps} or 'epoch'")


@dataclass(frozen=True)
class _Spec:
    label: str
    method: str
    alpha: float = 0.0


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


class _MarkJumps:
    """The recorder as the training loop sees it, marking the first snapshot after each taken jump
    with the metric ``jump`` = 1 (NaN elsewhere), so an analysis can find the discontinuities."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.pending = False

    def jumped(self) -> None:
        if self.recorder.unit == "epoch":
            self.recorder.log(jump=1.0)  # the epoch-end snapshot that follows holds the jumped weights
        else:
            self.pending = True  # the jump shows in the next step's snapshot

    def step(self, *, loss: float | None = None, metrics: dict[str, float] | None = None, **kwargs: Any) -> bool:
        if self.pending:
            metrics, self.pending = {**(metrics or {}), "jump": 1.0}, False
        return bool(self.recorder.step(loss=loss, metrics=metrics, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.recorder, name)


def _replay_run(recipe: Recipe, out: Path, final: Path, spec: _Spec, epochs: int | None, counter: _Counter,
                options: dict[str, Any], jump: JumpOptions) -> ReplayRun:
    """One recorded run of a replay: plain, wrapped in KGA, or wrapped in a prediction-based jump."""
    from ..record import Recorder

    made: dict[str, Any] = {}
    model = recipe.new_model()
    marks: list[_MarkJumps] = []

    def validate() -> dict[str, float]:
        data = recipe.data
        return dict(recipe.metrics(model, data.x_val, data.y_val))

    def wrap(optimizer: torch.optim.Optimizer) -> Any:
        if spec.method == "plain":
            return optimizer
        if spec.method == "kga":
            made["kga"] = KGA(optimizer, alpha=spec.alpha, **options)
            return made["kga"]
        made["jump"] = KoopmanJump(optimizer, mode=spec.method, window=jump.window, horizon=jump.horizon,
                                   every=jump.every, warmup=jump.warmup, validate=validate,
                                   on_jump=marks[0].jumped if marks else None,
                                   last_epoch=epochs or recipe.epochs)
        return made["jump"]

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
        counter.epoch(spec.label, report.loss)

    every = recipe.config["every"]
    unit, k = ("epoch", 1) if every == "epoch" else ("step", int(every))
    attrs = {**recipe.store_attrs(), "kga": {"alpha": spec.alpha, **options} if spec.method == "kga" else None}
    if spec.method not in ("plain", "kga"):
        attrs["koopman_jump"] = {**jump.to_dict(), "mode": spec.method}
    path = out / f"{spec.label}.zarr"
    if path.exists():
        raise UnsafeOutputError(f"{path} already exists; kga-replay writes its runs only into a new directory")
    with Recorder(path, model, every=k, unit=unit, recipe=attrs) as recorder:
        marks.append(_MarkJumps(recorder))
        clock[0] = time.perf_counter()
        recipe.train(model, recorder=marks[0], epochs=epochs, progress=on_epoch, wrap_optimizer=wrap)
    kga, jumper = made.get("kga"), made.get("jump")
    return ReplayRun(spec.label, spec.alpha, str(final / path.name), tuple(train_loss),
                     tuple(val_loss), tuple(val_acc) or None, tuple(seconds),
                     tuple(kga.log.masked_fraction) if kga else (), float(sum(kga.log.dmd_seconds)) if kga else 0.0,
                     kga.log.refits if kga else 0, spec.method, JumpRecord.of(jumper.log) if jumper else None,
                     kga.log.accelerated_steps if kga else 0)
