"""Record a Hugging Face ``Trainer`` run: ``trainer.add_callback(TrajCallback("run.zarr"))``.

The Trainer's order of events for one optimizer step (transformers 5):
``on_pre_optimizer_step`` → ``optimizer.step()`` → ``on_optimizer_step`` → ``model.zero_grad()``,
``global_step += 1`` → ``on_step_end`` → logging (``on_log``), evaluation, saving → the next
``on_step_begin``. So θ and its gradients are copied at ``on_optimizer_step`` (the weights
after the step, the gradients before they are zeroed), and the snapshot is written once the
step's logs are in: at the next ``on_step_begin``, or at ``on_train_end``. Snapshots follow
optimizer steps (``state.global_step``), whatever the gradient accumulation.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from typing import Any

from transformers import TrainerCallback

from ..record import RecordOptions
from .distributed import DistributedRecorder

__all__ = ["TrajCallback"]

#: The callback's lines (start, resume, end). A Trainer shows only its progress bar and warnings by
#: default, so, as Lightning and transformers do for their own loggers, this one gets a handler of
#: its own at INFO when the application configured none; ``logger.setLevel(logging.WARNING)`` hides them.
logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)
if not logging.getLogger().hasHandlers():
    logger.addHandler(logging.StreamHandler())
    logger.propagate = False

# Keys of the Trainer's logs that are not per-step scalars of the run (``epoch`` has its own array).
_NOT_METRICS = frozenset({"epoch", "step", "loss"})
# Only the end-of-training summary (speed metrics, total_flos, train_loss) holds this key.
_SUMMARY_KEY = "train_runtime"


def epoch_index(epoch: float | None) -> int:
    """The epoch a snapshot was taken in, from the Trainer's fractional ``state.epoch``.

    ``state.epoch`` is ``e + (batch + 1) / batches_per_epoch`` after a step of epoch ``e``, so
    the step that completes epoch 0 reads 1.0 and belongs to epoch 0 (traj's convention).
    """
    if not epoch or epoch <= 0:
        return 0
    return max(0, math.ceil(epoch) - 1)


class TrajCallback(TrainerCallback):
    """Record the weight trajectory of a ``transformers.Trainer`` run into a traj run store.

    Parameters
    ----------
    path : str or path-like
        The run store. Resuming (``trainer.train(resume_from_checkpoint=...)``) appends to it,
        after forgetting the snapshots it holds past the checkpoint's step.
    every, params, grads, dtype, compressor, buffer_bytes, overwrite, live
        The options every recorder shares: see :class:`~traj.record.RecordOptions` (as for
        :class:`traj.integrations.distributed.DistributedRecorder`). A snapshot after every ``every``-th
        optimizer step (``state.global_step % every == 0``); the initial weights are snapshot 0. ``params`` are
        names as in ``model.named_parameters()``; ``grads`` are taken after clipping, before ``zero_grad``.

    Each snapshot stores ``step = state.global_step``, the epoch it was taken in, and the
    scalars the Trainer logged at that step: ``loss`` (the Trainer's mean over the steps since
    its last log), ``grad_norm``, ``learning_rate``, evaluation metrics (not the end-of-training
    summary: runtime, throughput, ``train_loss``). Under DDP only global
    rank 0 writes; FSDP2 parameters are gathered to rank 0 for each snapshot.

    Examples
    --------
    >>> trainer = Trainer(model, args, train_dataset=ds, callbacks=[TrajCallback("run.zarr", every=10)])  # doctest: +SKIP
    >>> trainer.train()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        every: int = RecordOptions.every,
        params: Iterable[str] | None = RecordOptions.params,
        grads: bool = RecordOptions.grads,
        *,
        dtype: str | None = RecordOptions.dtype,
        compressor: str = RecordOptions.compressor,
        buffer_bytes: int = RecordOptions.buffer_bytes,
        overwrite: bool = RecordOptions.overwrite,
        live: Any = RecordOptions.live,
    ) -> None:
        options = RecordOptions.from_arguments(locals())
        self.recording = DistributedRecorder(path, **options.keywords(), announce=logger.info)
        self._last_logs: tuple[int, dict[str, Any]] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.recording.begin(
            model,
            step=state.global_step,
            epoch=epoch_index(state.epoch),
            resuming=state.global_step > 0,
            writer=state.is_world_process_zero,
        )

    def on_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        step = state.global_step + 1  # the Trainer counts the step after this event
        if self.recording.due(step):
            self.recording.capture(model, step=step, epoch=epoch_index(state.epoch))

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.recording.due(state.global_step):  # a Trainer without on_optimizer_step (before 4.40): no gradients
            self.recording.capture(model, step=state.global_step, epoch=epoch_index(state.epoch))
        if self.recording.pending_step == state.global_step:
            self.recording.note(epoch=epoch_index(state.epoch))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or _SUMMARY_KEY in logs:
            return
        if self.recording.pending_step != state.global_step:  # kept for a last snapshot at on_train_end
            self._last_logs = (state.global_step, dict(logs))
            return
        self._note(logs)

    def _note(self, logs: dict[str, Any]) -> None:
        metrics = {k: v for k, v in logs.items() if k not in _NOT_METRICS}
        self.recording.note(loss=logs.get("loss"), metrics=metrics)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.recording.flush()

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        # a last snapshot when training stopped off the grid (max_steps=25, every=10): the store ends at 25
        step, epoch = state.global_step, epoch_index(state.epoch)
        last = self.recording.last_step  # None when training never began
        if model is not None and last is not None and step > last:
            self.recording.flush()
            self.recording.capture(model, step=step, epoch=epoch)
            if self._last_logs is not None and self._last_logs[0] == step:
                self._note(self._last_logs[1])
        self.recording.close()
