"""What a Lightning checkpoint records besides the weights.

A Lightning checkpoint (a ``.ckpt`` file, or ``meta.pt`` inside a sharded ``.ckpt/``
directory) holds ``global_step``, ``epoch`` (0-based, the epoch the step was taken in), the
loops' progress counters, optimizer and scheduler states, hyper-parameters and each
callback's state. It does not hold the training loss or the logged metrics
(``trainer.callback_metrics`` is not saved). What it does hold that is a per-checkpoint
number:

- each ``ModelCheckpoint`` with a ``monitor``: ``current_score``, the monitored value at this
  checkpoint -> ``metrics/<monitor>``;
- with one optimizer whose parameter groups share one learning rate: that rate at save time
  -> ``metrics/learning_rate`` (the name Hugging Face logs it under).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .base import metric_name, scalar

__all__ = ["is_lightning", "lightning_meta"]


def is_lightning(obj: Any) -> bool:
    return isinstance(obj, Mapping) and any(k in obj for k in ("pytorch-lightning_version", "lightning_version"))


def lightning_meta(obj: Mapping[str, Any]) -> dict[str, float]:
    """Metrics a Lightning checkpoint holds (see the module docstring for which)."""
    metrics: dict[str, float] = {}
    callbacks = obj.get("callbacks")
    if isinstance(callbacks, Mapping):
        for state in callbacks.values():
            if not isinstance(state, Mapping):
                continue
            monitor = state.get("monitor")
            value = scalar(state.get("current_score"))
            if isinstance(monitor, str) and monitor and value is not None:
                metrics[metric_name(monitor)] = value
    optimizers = obj.get("optimizer_states")
    if isinstance(optimizers, list) and len(optimizers) == 1 and isinstance(optimizers[0], Mapping):
        groups = optimizers[0].get("param_groups")
        if isinstance(groups, list) and groups:
            rates = {scalar(g.get("lr")) if isinstance(g, Mapping) else None for g in groups}
            if len(rates) == 1 and None not in rates:
                rate = rates.pop()
                if rate is not None and math.isfinite(rate):
                    metrics["learning_rate"] = rate
    return metrics
