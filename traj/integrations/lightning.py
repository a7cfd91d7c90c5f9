"""Record a Lightning run: ``Trainer(callbacks=[TrajCallback("run.zarr")])``.

``trainer.global_step`` counts optimizer steps, so with ``accumulate_grad_batches`` the
snapshot follows the step, not the micro-batch: ``on_train_batch_end`` sees the counter move
on the batch that stepped. In automatic optimization Lightning zeroes the gradients inside the
next step's closure, so at that point they are still the step's own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from ..record import RecordOptions
from .distributed import DistributedRecorder, scalar_value

__all__ = ["TrajCallback"]


class TrajCallback(Callback):
    """Record the weight trajectory of a ``lightning.pytorch.Trainer`` fit into a traj run store.

    Parameters
    ----------
    path : str or path-like
        The run store. A fit resumed from a checkpoint (``trainer.fit(model, ckpt_path=...)``)
        appends to it, after forgetting the snapshots it holds past the checkpoint's step.
    every, params, grads, dtype, compressor, buffer_bytes, overwrite, live
        The options every recorder shares: see :class:`~traj.record.RecordOptions` (as for
        :class:`traj.integrations.distributed.DistributedRecorder`). A snapshot after every ``every``-th
        optimizer step (``trainer.global_step % every == 0``); the initial weights are snapshot 0. ``params`` are
        names as in ``pl_module.named_parameters()``, the keys of the checkpoint's ``state_dict``.

    Each snapshot stores ``step = trainer.global_step``, ``epoch = trainer.current_epoch``,
    ``loss`` = the loss ``training_step`` returned for the stepping batch (Lightning divides it
    by ``accumulate_grad_batches``; this is multiplied back), and every scalar of
    ``trainer.callback_metrics`` as it stands then (``/`` in a name becomes ``.``; a value logged
    at validation stays there until the next validation). Under DDP only global rank 0 writes;
    FSDP2 (``ModelParallelStrategy``) parameters are gathered to rank 0 for each snapshot.
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
        self.recording = DistributedRecorder(path, **options.keywords(), announce=rank_zero_info)
        self._restored: dict[str, Any] | None = None
        self._seen_step: int | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(path=str(self.recording.path))

    def state_dict(self) -> dict[str, Any]:
        return {"path": str(self.recording.path), "every": self.recording.every, "last_step": self.recording.last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        step = trainer.global_step
        self._seen_step = step
        self.recording.begin(
            pl_module,
            step=step,
            epoch=trainer.current_epoch,
            resuming=self._restored is not None or step > 0,
            writer=trainer.is_global_zero,
        )

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._seen_step:  # a micro-batch that only accumulated
            return
        self._seen_step = step
        if not self.recording.due(step):
            return
        self.recording.capture(pl_module, step=step, epoch=trainer.current_epoch)
        loss = scalar_value(outputs.get("loss")) if isinstance(outputs, dict) else scalar_value(outputs)
        if loss is not None:
            loss *= trainer.accumulate_grad_batches
        self.recording.note(loss=loss, metrics=trainer.callback_metrics)
        self.recording.flush()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        # a last snapshot when training stopped off the grid (max_steps=92, every=10): the store ends at 92
        step = trainer.global_step
        last = self.recording.last_step  # None when training never began
        if last is not None and step > last:
            self.recording.capture(pl_module, step=step, epoch=trainer.current_epoch)
            self.recording.note(metrics=trainer.callback_metrics)
        self.recording.close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.recording.close()  # keep every snapshot taken before the error
