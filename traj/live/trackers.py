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

__all__ = ["TensorBoardTracker"]


class TensorBoardTracker:
    """Scalars ``live/leading_modulus``, ``live/unstable``, ``live/timescale``, ``live/forecast_error``,
    ``live/transition`` and ``live/rank`` in the TensorBoard log directory ``logdir``."""

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise TrajError("the live monitor's TensorBoard output needs the tensorboard package "
                            "(pip install 'traj[tensorboard]')") from exc
        self.logdir = os.fspath(logdir)
        self._writer: Any = SummaryWriter(log_dir=self.logdir)

    def log(self, fit: Any) -> None:
        for name, value in fit.metrics().items():
            if math.isfinite(value):
                self._writer.add_scalar(name.replace(".", "/"), value, global_step=fit.step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
