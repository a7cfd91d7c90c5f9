"""Where the live monitor's fits and the offline commands' results go besides the store: one adapter per
tracker, each an optional extra (never a core dependency).

A tracker is named by a spec, the same for ``--log-to`` and ``LiveOptions(log_to=...)``:

=====================  ==========================================  ==============================
spec                   where it writes                             extra
=====================  ==========================================  ==============================
``tensorboard:DIR``    event files in DIR (``torch.utils.tensorboard``)  ``traj[tensorboard]``
``wandb[:PROJECT]``    a W&B run in PROJECT (default ``traj``);     ``traj[wandb]``
                       offline files with ``WANDB_MODE=offline``
``mlflow:URI``         an MLflow run in experiment ``traj`` of the  ``traj[mlflow]``
                       tracking URI (a server, or a local store)
=====================  ==========================================  ==============================

Every adapter (:class:`Sink`) takes scalars at a step and PNG figures, the same way: numbers as
scalars/metrics, figures as images (TensorBoard, W&B) or artifacts (MLflow). :class:`LiveTracker` sends
each live fit's numbers as ``live/<name>`` at the fit's training step; :class:`ReportTracker` sends an
offline command's summary numbers as ``COMMAND/KEY`` and its report's figures at step 0.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ..errors import ParameterError, TrajError

__all__ = ["TRACKERS", "LiveTracker", "MlflowSink", "ReportTracker", "Sink", "TensorBoardSink", "TensorBoardTracker",
           "WandbSink", "open_sink", "parse_tracker"]

#: Trackers a spec may name: what each takes after the colon, the module it needs, and its extra.
TRACKERS = {
    "tensorboard": ("a log directory", "tensorboard", "tensorboard"),
    "wandb": ("optionally a project", "wandb", "wandb"),
    "mlflow": ("a tracking URI", "mlflow", "mlflow"),
}
#: The W&B project and the MLflow experiment runs go to when the spec names none.
DEFAULT_PROJECT = "traj"

_SPECS = "tensorboard:DIR, wandb[:PROJECT] or mlflow:URI"


def parse_tracker(spec: str, *, parameter: str = "log_to") -> tuple[str, str]:
    """``(kind, where)`` of a tracker spec, checked without importing the tracker (its package must be
    installed: a missing one is named with its extra now, before any work)."""
    if not isinstance(spec, str):
        raise ParameterError(parameter, f"must be a tracker spec ({_SPECS}), got {type(spec).__name__}")
    kind, _, where = spec.partition(":")
    if kind not in TRACKERS:
        raise ParameterError(parameter, f"{kind!r} is not a tracker traj writes to; give {_SPECS}")
    needs, module, _ = TRACKERS[kind]
    if kind == "wandb":
        where = where or DEFAULT_PROJECT
    elif not where:
        shown = "DIR" if kind == "tensorboard" else "URI"
        raise ParameterError(parameter, f"{kind} needs {needs}: {kind}:{shown}")
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise missing_package(kind)
    return kind, where


def missing_package(kind: str) -> TrajError:
    """The one-line error for a tracker whose package is not installed, naming its extra."""
    _, module, extra = TRACKERS[kind]
    return TrajError(f"{kind} output needs the {module} package (pip install 'traj[{extra}]')")


class Sink(Protocol):
    """One tracker's adapter: scalars at a step, PNG figures at a step, then close."""

    def scalars(self, values: Mapping[str, float], step: int) -> None: ...

    def images(self, pngs: Mapping[str, Path], step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    """Scalars and images in the TensorBoard log directory ``logdir`` (``torch.utils.tensorboard``)."""

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise missing_package("tensorboard") from exc
        self._writer = SummaryWriter(log_dir=os.fspath(logdir))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for name, value in values.items():
            self._writer.add_scalar(name, value, global_step=step)
        self._writer.flush()

    def images(self, pngs: Mapping[str, Path], step: int) -> None:
        for name, png in pngs.items():
            self._writer.add_image(name, _pixels(png), global_step=step, dataformats="HWC")
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbSink:
    """A W&B run named ``name`` in ``project``: scalars by ``run.log(..., step=)``, figures as ``wandb.Image``.

    Where it goes is W&B's own settings: ``WANDB_MODE=offline`` keeps the run in local files
    (``WANDB_DIR``) for ``wandb sync`` later.
    """

    def __init__(self, project: str, name: str) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise missing_package("wandb") from exc
        self._wandb = wandb
        try:
            self._run = wandb.init(project=project, name=name, reinit="create_new")
        except Exception as exc:  # wandb raises its own errors (no login, no network): one line
            raise TrajError(f"W&B could not start a run in project {project!r}: {_one_line(exc)}") from exc
        self._last = -1

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        self._run.log(dict(values), step=self._step(step))

    def images(self, pngs: Mapping[str, Path], step: int) -> None:
        self._run.log({name: self._wandb.Image(str(png)) for name, png in pngs.items()}, step=self._step(step))

    def _step(self, step: int) -> int:
        # W&B drops a log at a step below the last one: keep steps non-decreasing
        self._last = max(self._last, int(step))
        return self._last

    def close(self) -> None:
        self._run.finish()


class MlflowSink:
    """An MLflow run named ``name`` in experiment ``traj`` of the tracking URI ``uri`` (``MlflowClient``):
    scalars as metrics at a step, figures as artifacts (``dmd/spectrum`` as the file ``dmd/spectrum.png``).

    A local file store (``file:///path/mlruns``) is in maintenance mode in MLflow 3: MLflow refuses it
    unless ``MLFLOW_ALLOW_FILE_STORE=true``; traj passes MLflow's message on.
    """

    def __init__(self, uri: str, name: str) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise missing_package("mlflow") from exc
        try:
            self._client = MlflowClient(tracking_uri=uri)
            experiment = self._client.get_experiment_by_name(DEFAULT_PROJECT)
            experiment_id = experiment.experiment_id if experiment is not None else \
                self._client.create_experiment(DEFAULT_PROJECT)
            self._run_id = self._client.create_run(experiment_id, run_name=name).info.run_id
        except Exception as exc:  # MlflowException and the store's own errors: one line
            raise TrajError(f"MLflow could not start a run at {uri}: {_one_line(exc)}") from exc

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(self._run_id, metrics=[Metric(k, float(v), now, int(step)) for k, v in values.items()])

    def images(self, pngs: Mapping[str, Path], step: int) -> None:
        for name, png in pngs.items():
            folder, _, stem = name.rpartition("/")
            if stem != png.stem:
                raise ValueError(f"an MLflow artifact keeps its file's name: {png.name} cannot be {stem}")
            self._client.log_artifact(self._run_id, str(png), artifact_path=folder or None)

    def close(self) -> None:
        self._client.set_terminated(self._run_id)


def open_sink(kind: str, where: str, name: str) -> Sink:
    """The adapter of a parsed spec (:func:`parse_tracker`), for a run named ``name``."""
    if kind == "tensorboard":
        return TensorBoardSink(where)
    if kind == "wandb":
        return WandbSink(where, name)
    if kind == "mlflow":
        return MlflowSink(where, name)
    raise ParameterError("log_to", f"{kind!r} is not a tracker traj writes to; give {_SPECS}")


def _finite(values: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if math.isfinite(v)}


def _pixels(png: Path) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(png) as image:
        return np.asarray(image.convert("RGB"))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."


class LiveTracker:
    """Each live fit's numbers as scalars ``live/<name>`` at the fit's training step, in any tracker."""

    def __init__(self, spec: str | Sink, *, name: str = "traj-live") -> None:
        if isinstance(spec, str):
            kind, where = parse_tracker(spec)
            spec = open_sink(kind, where, name)
        self.sink = spec

    def log(self, fit: Any) -> None:
        self.sink.scalars({k.replace(".", "/"): v for k, v in _finite(fit.summary()).items()}, fit.step)

    def close(self) -> None:
        self.sink.close()


class TensorBoardTracker(LiveTracker):
    """Scalars ``live/leading_modulus``, ``live/unstable``, ``live/timescale``, ``live/forecast_error``,
    ``live/transition`` and ``live/rank`` in the TensorBoard log directory ``logdir``."""

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        self.logdir = os.fspath(logdir)
        super().__init__(TensorBoardSink(self.logdir))


class ReportTracker:
    """Where ``--log-to`` sends an offline command's headline numbers and figures (checked at construction,
    before any work; the tracker's run is opened when there is something to send)."""

    def __init__(self, spec: str) -> None:
        self.kind, self.where = parse_tracker(spec)

    def log(self, command: str, summary: dict[str, Any], folder: str | os.PathLike[str] | None) -> int:
        """The summary's top-level numbers as scalars ``COMMAND/KEY`` and the report's figures (``*.png``
        in ``folder``) as images ``COMMAND/NAME``, at step 0; returns how many were written."""
        numbers = _finite({f"{command}/{key}": value for key, value in summary.items()
                           if isinstance(value, int | float) and not isinstance(value, bool)})
        pngs = {f"{command}/{png.stem}": png for png in sorted(Path(folder).glob("*.png"))} if folder is not None else {}
        sink = open_sink(self.kind, self.where, command)
        try:
            if numbers:
                sink.scalars(numbers, 0)
            if pngs:
                sink.images(pngs, 0)
        finally:
            sink.close()
        return len(numbers) + len(pngs)
