"""What the training callbacks share: one Recorder on the writing process, fed at explicit steps.

A framework tells :class:`DistributedRecorder` the optimizer step and epoch; this module
decides who writes and how θ is read:

- one process, or data parallel (DDP, DeepSpeed ZeRO-1/2): every rank holds all of θ, only
  global rank 0 records, the others do nothing;
- sharded parameters held as DTensors (FSDP2 ``fully_shard``, tensor parallel): every rank
  takes part in gathering the full parameters for each snapshot
  (``get_model_state_dict(full_state_dict=True, cpu_offload=True)``; rank 0 receives them on
  the CPU) and rank 0 writes them. One writer keeps the store's commit rule (``step`` last, one
  lock) as it is; the gather costs one all-gather of θ per snapshot (measured in
  ``benchmarks/callback_overhead.py``);
- FSDP1 (``FullyShardedDataParallel``) and DeepSpeed ZeRO-3 are refused with a precise error:
  their parameters are flat shards whose names and shapes are not the model's.

Resuming: a run restarted from a checkpoint at step s appends to the store, after forgetting
the snapshots it holds past s (the first attempt's continuation, which is trained again). A
run starting at step 0 never touches a store that already holds a later step, unless told to
overwrite it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import RecorderError
from ..record import Capture, Recorder, RecordOptions, layout_of
from ..store import RunStore

__all__ = ["DistributedRecorder", "decide_writer", "gather_gradients", "gather_parameters", "global_rank",
           "process_group_exists", "sharding_of"]

# Wrappers whose names appear inside parameter names but not in a gathered state dict.
_WRAPPER_PREFIXES = ("_orig_mod.", "_checkpoint_wrapped_module.", "_fsdp_wrapped_module.")


def global_rank() -> int:
    """This process's rank in the default process group (0 when there is none)."""
    import torch.distributed as dist

    return dist.get_rank() if process_group_exists() else 0


def process_group_exists() -> bool:
    """Whether ``torch.distributed`` has a default process group in this process."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def decide_writer(framework_says: bool | None) -> bool:
    """Whether this process writes the store: global rank 0 of ``torch.distributed`` when a process group
    exists, whatever the framework says (a Trainer that is not really distributed calls every process
    of a ``torchrun`` launch its "world process zero": two writers of one store); else the framework's
    own flag (``None``: this process, the only one)."""
    if process_group_exists():
        return global_rank() == 0
    return True if framework_says is None else bool(framework_says)


def sharding_of(model: nn.Module) -> str | None:
    """``"dtensor"`` when parameters are DTensor shards (FSDP2, tensor parallel), ``None`` when whole.

    Raises
    ------
    RecorderError
        For FSDP1 and DeepSpeed ZeRO-3 models, whose parameters are flat shards.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
        raise RecorderError(
            "FSDP1 (FullyShardedDataParallel) models cannot be recorded: their parameters are flat shards; "
            "use FSDP2 (torch.distributed.fsdp.fully_shard; accelerate fsdp_version=2; Lightning ModelParallelStrategy)"
        )
    kinds = set()
    for p in model.parameters():
        if hasattr(p, "ds_numel"):
            raise RecorderError(
                "DeepSpeed ZeRO-3 models cannot be recorded yet: their parameters are partitioned; "
                "ZeRO stages 1 and 2 keep whole parameters and can"
            )
        kinds.add(isinstance(p, DTensor))
    return "dtensor" if True in kinds else None


def _clean(name: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def gather_parameters(model: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """The full parameters named ``names``, on the CPU of rank 0; ``{}`` on the other ranks.

    A collective: every rank must call it at the same point of training.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not state:
        return {}
    return {name: state[_clean(name)] for name in names if _clean(name) in state}


def gather_gradients(model: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor | None]:
    """The full gradients of the parameters named ``names`` on rank 0 (``{}`` elsewhere); a collective."""
    from torch.distributed.tensor import DTensor

    wanted = set(names)
    gathered: dict[str, torch.Tensor | None] = {}
    for name, p in model.named_parameters():
        if name not in wanted:
            continue
        grad = p.grad
        if isinstance(grad, DTensor):
            grad = grad.full_tensor()  # every rank, in the same order
        gathered[name] = None if grad is None else grad.detach().cpu()
    return gathered if global_rank() == 0 else {}


@dataclass
class _Pending:
    """A snapshot copied off the model whose loss and metrics may still arrive."""

    capture: Capture
    step: int
    epoch: int
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class DistributedRecorder:
    """Record a model at optimizer steps a training framework reports, on one or many processes.

    Parameters
    ----------
    path : str or path-like
        The run store (created, or appended to when training resumes).
    every, params, grads, dtype, compressor, buffer_bytes, overwrite, live
        The options every recorder shares: see :class:`~traj.record.RecordOptions`. Here ``every`` counts
        optimizer steps (a snapshot when the global step is divisible by it), ``overwrite`` lets a run
        starting at step 0 replace an existing store (a resumed run always appends) and the writing process
        runs the ``live`` monitor. Kept as :attr:`options`.
    announce : callable, optional
        Where the writing process's lines go (start, resume, end): as for :class:`traj.Recorder`.

    Examples
    --------
    A plain loop under FSDP2 (every rank runs the same lines; rank 0 writes):

    >>> rec = DistributedRecorder("run.zarr", every=10)          # doctest: +SKIP
    >>> rec.begin(model, step=0)
    >>> for step, (x, y) in enumerate(loader, start=1):
    ...     loss_fn(model(x), y).backward(); opt.step(); opt.zero_grad()
    ...     if rec.due(step):
    ...         rec.capture(model, step=step, epoch=0)
    ...         rec.flush()
    >>> rec.close(model, step=step)    # a last snapshot when the last step was not recorded
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        every: int = RecordOptions.every,
        params: Iterable[str] | None = RecordOptions.params,
        grads: bool = RecordOptions.grads,
        dtype: str | None = RecordOptions.dtype,
        compressor: str = RecordOptions.compressor,
        buffer_bytes: int = RecordOptions.buffer_bytes,
        overwrite: bool = RecordOptions.overwrite,
        announce: Callable[[str], None] | None = None,
        live: Any = RecordOptions.live,
    ) -> None:
        #: The options every recorder shares (:class:`~traj.record.RecordOptions`), checked.
        self.options = options = RecordOptions.from_arguments(locals())
        self.path = Path(path)
        self.announce = announce
        self.every = options.every
        self.params = None if options.params is None else list(options.params)
        self.grads = options.grads
        self.overwrite = options.overwrite
        self.recorder: Recorder | None = None
        self.sharding: str | None = None
        #: Whether this process writes the store (set by :meth:`begin`).
        self.writer = False
        #: The last step recorded, or before any the step training began at: :meth:`due` looks past it.
        self.last_step: int | None = None
        self._names: list[str] = []
        self._pending: _Pending | None = None
        self._begun = False

    # ------------------------------------------------------------------ lifetime
    def begin(self, model: nn.Module, *, step: int = 0, epoch: int = 0, resuming: bool | None = None,
              writer: bool | None = None) -> None:
        """Open the store at training start; every rank calls this.

        ``step`` is the global step the model is at (the checkpoint's when resuming);
        ``resuming`` defaults to ``step > 0``; ``writer`` is the framework's "rank zero" flag,
        used only when there is no ``torch.distributed`` process group (with one, global rank 0
        writes: :func:`decide_writer`). A new store gets the current weights as its first snapshot.
        """
        if self._begun:
            self.close()
        self.sharding = sharding_of(model)
        self._names = layout_of(model, self.params)[0].names
        resuming = step > 0 if resuming is None else resuming
        self.writer = decide_writer(writer)
        self._begun = True
        self.last_step = int(step)  # on every rank, so that all agree on due() (and join the same gathers)
        if self.writer:
            self._prepare_store(int(step), resuming)
            self.recorder = Recorder(
                self.path,
                model,
                **replace(self.options, overwrite=self.overwrite and not resuming).keywords(),
                record_initial=False,
                start_step=int(step),
                resume=True,  # _prepare_store decided: a new run into an old store is refused
                rewind=resuming,  # an older attempt's later steps are replaced once the first new one is written
                announce=self.announce,
            )
        new = self.recorder is not None and self.recorder.n_committed == 0
        if new or self.sharding is not None:  # sharded: every rank joins the gather, the writer decides
            self._capture(model, int(step), int(epoch), record=new)
            self.flush()

    def _prepare_store(self, step: int, resuming: bool) -> None:
        """Refuse a new run (not resuming) into a store that already holds snapshots, unless
        ``overwrite``: it would be stitched onto the old run. Resuming, the snapshots past ``step``
        are replaced by the Recorder (``rewind``), only once the first new one is written."""
        if resuming or self.overwrite or not (self.path / "zarr.json").exists():
            return
        reader = RunStore(self.path)
        if not reader.n_snapshots:
            return
        raise RecorderError(
            f"{self.path} already holds {reader.n_snapshots} snapshot(s), steps {int(reader.steps[0])} to "
            f"{int(reader.steps[-1])}, and this run starts from scratch at step {step}: record into a new path, "
            "pass overwrite=True to replace it, or resume the run from its checkpoint"
        )

    def close(self, model: nn.Module | None = None, *, step: int | None = None, epoch: int = 0) -> None:
        """Write what is pending, close the store and release its lock.

        Given the ``model`` and the ``step`` training ended at, first take a last snapshot when that
        step was not recorded (training stopped between two snapshot steps: 25 with ``every=10``), so
        the store ends where training did. Every rank calls it (a collective when sharded).
        """
        try:
            if model is not None and step is not None and self._begun and self.last_step is not None \
                    and int(step) > self.last_step:
                self._capture(model, int(step), int(epoch), record=True)
            self.flush()
        finally:
            if self.recorder is not None:
                recorder, self.recorder = self.recorder, None
                recorder.close()
            self._begun = False

    # ------------------------------------------------------------------ snapshots
    def due(self, step: int) -> bool:
        """Whether optimizer step ``step`` is a snapshot step not yet recorded."""
        return step % self.every == 0 and (self.last_step is None or step > self.last_step)

    def capture(self, model: nn.Module, *, step: int, epoch: int = 0) -> None:
        """Copy θ (and gradients) of step ``step`` now; :meth:`flush` writes it with what :meth:`note` added.

        A collective when the parameters are sharded: every rank calls it at the same step.
        """
        if not self._begun:
            raise RecorderError("call begin() before capturing snapshots")
        self._capture(model, int(step), int(epoch), record=True)

    def _capture(self, model: nn.Module, step: int, epoch: int, *, record: bool) -> None:
        self.flush()
        values = grads = None
        if self.sharding is not None:
            values = gather_parameters(model, self._names)
            if self.grads:
                grads = gather_gradients(model, self._names)
        self.last_step = max(step, self.last_step if self.last_step is not None else step)
        if self.recorder is None or not record:
            return
        self._pending = _Pending(self.recorder.capture(values, grads), step, epoch)

    @property
    def pending_step(self) -> int | None:
        """Step of the snapshot captured and not yet written (None when nothing waits)."""
        return None if self._pending is None else self._pending.step

    def note(self, *, epoch: int | None = None, loss: float | None = None,
             metrics: Mapping[str, Any] | None = None) -> None:
        """Add the epoch, loss or metrics of the pending snapshot (ignored when nothing is pending)."""
        pending = self._pending
        if pending is None:
            return
        if epoch is not None:
            pending.epoch = int(epoch)
        if loss is not None:
            pending.loss = float(loss)
        for name, value in (metrics or {}).items():
            number = scalar_value(value)
            key = name.replace("/", ".")
            if number is not None and key and not key.startswith((".", "__")):
                pending.metrics[key] = number

    def flush(self) -> None:
        """Queue the pending snapshot for writing."""
        pending, self._pending = self._pending, None
        if pending is None or self.recorder is None:
            return
        self.recorder.submit(pending.capture, step=pending.step, epoch=pending.epoch, loss=pending.loss,
                             metrics=pending.metrics)


def scalar_value(value: Any) -> float | None:
    """A logged value as a float, or None when it is not one number (strings, vectors, booleans)."""
    if isinstance(value, bool) or str(getattr(value, "dtype", "")) in ("bool", "torch.bool"):
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            return None
        return float(value.detach().cpu().item())
    if isinstance(value, int | float) or (hasattr(value, "item") and getattr(value, "size", 0) == 1):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number
    return None
