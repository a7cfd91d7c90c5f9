"""Where the live monitor's fits go besides the store: one adapter per tracker, each an optional extra.

:class:`TensorBoardTracker` writes each fit's numbers as scalars ``live/<name>`` at the fit's
training step through ``torch.utils.tensorboard`` (the ``tensorboard`` extra: ``pip install
traj[tensorboard]``). A tracker is any object with ``log(fit)`` and ``close()``
(:class:`~traj.live.monitor.Tracker`), passed as ``LiveOptions(trackers=(...))``.
"""

from __future__ import annotations

import math
import os
from typing import Any

from ..errors import TrajError

__all__ = ["TRACKERS", "ReportTracker", "TensorBoardTracker"]


def _summary_writer(logdir: str, what: str) -> Any:
    """TensorBoard's ``SummaryWriter`` on ``logdir``; without the package, one line naming ``what`` needs it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise TrajError(f"{what} needs the tensorboard package (pip install 'traj[tensorboard]')") from exc
    return SummaryWriter(log_dir=logdir)


class TensorBoardTracker:
    """Scalars ``live/leading_modulus``, ``live/unstable``, ``live/timescale``, ``live/forecast_error``,
    ``live/transition`` and ``live/rank`` in the TensorBoard log directory ``logdir``."""

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        self.logdir = os.fspath(logdir)
        self._writer = _summary_writer(self.logdir, "the live monitor's TensorBoard output")

    def log(self, fit: Any) -> None:
        for name, value in fit.metrics().items():
            if math.isfinite(value):
                self._writer.add_scalar(name.replace(".", "/"), value, global_step=fit.step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


#: Trackers ``--log-to`` names, and what each needs after the colon.
TRACKERS = {"tensorboard": "a log directory"}


class ReportTracker:
    """Where ``--log-to tensorboard:DIR`` sends an offline command's headline numbers and figures."""

    def __init__(self, spec: str) -> None:
        from ..errors import ParameterError

        kind, _, where = spec.partition(":")
        if kind not in TRACKERS:
            raise ParameterError("log_to", f"{kind!r} is not a tracker traj writes to; give tensorboard:DIR "
                                           "(W&B and MLflow are not supported yet)")
        if not where:
            raise ParameterError("log_to", f"{kind} needs {TRACKERS[kind]}: {kind}:DIR")
        self.kind, self.where = kind, where

    def log(self, command: str, summary: dict[str, Any], folder: str | os.PathLike[str] | None) -> int:
        """The summary's top-level numbers as scalars ``COMMAND/KEY`` and the report's figures (``*.png``
        in ``folder``) as images ``COMMAND/NAME``, at step 0; returns how many were written."""
        from pathlib import Path

        import numpy as np

        written = 0
        writer = _summary_writer(self.where, "--log-to tensorboard")
        try:
            for key, value in summary.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                    writer.add_scalar(f"{command}/{key}", float(value), global_step=0)
                    written += 1
            if folder is not None:
                from PIL import Image

                for png in sorted(Path(folder).glob("*.png")):
                    with Image.open(png) as image:
                        pixels = np.asarray(image.convert("RGB"))
                    writer.add_image(f"{command}/{png.stem}", pixels, global_step=0, dataformats="HWC")
                    written += 1
        finally:
            writer.close()
        return written
