"""The recording options every recorder takes, declared once.

:class:`~traj.record.Recorder`, :class:`~traj.integrations.distributed.DistributedRecorder`,
:class:`~traj.integrations.huggingface.TrajCallback` and
:class:`~traj.integrations.lightning.TrajLightningCallback` take these as keyword arguments with these
defaults (each signature names them so that help and editors show them; the defaults are read from here, and
``tests/record/test_record_options.py`` checks every signature against this class). They travel from a
callback to the Recorder as one :class:`RecordOptions`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..errors import RecorderError

__all__ = ["RecordOptions"]


@dataclass(frozen=True)
class RecordOptions:
    """What a recording stores and how, for every recorder.

    Attributes
    ----------
    every : int
        Snapshot spacing: every ``every``-th optimizer step (the Recorder: in its ``unit``, steps or
        epochs). A positive integer.
    params : iterable of str, optional
        Record only these parameters (names as in ``model.named_parameters()``); default all. Kept as a
        tuple (a generator is read once).
    grads : bool
        Also record each recorded step's gradients (``grads`` array).
    dtype : {"float32", "float64", "bfloat16", "float16"}, optional
        Storage dtype. Default: the parameters' own dtype when they all share one (a bfloat16 model is
        stored in bfloat16, 2 bytes per value, bit for bit); float64 when any is float64; else float32
        (which holds every bfloat16 and float16 value exactly). A narrower dtype than the parameters'
        rounds them (``traj info`` says the store is a lossy copy).
    compressor : {"lz4", "zstd"}
        Blosc codec of the chunks (bit shuffle either way).
    buffer_bytes : int
        Host memory the snapshot buffers may use; the writer lags by at most this much.
    overwrite : bool
        Replace an existing store at the path (the old one stays whole until the new one is closed and
        swapped in). A resumed run appends whatever this says.
    live : traj.live.LiveOptions, optional
        Run the live Koopman monitor on the writer thread: every ``live.every`` snapshots, DMD of the last
        ``live.window`` sketched snapshots; each fit's numbers are written with its snapshot as metrics
        ``live.*`` and to the options' trackers; the fits are the Recorder's ``monitor.fits``.
    """

    every: int = 1
    params: Iterable[str] | None = None
    grads: bool = False
    dtype: str | None = None
    compressor: str = "lz4"
    buffer_bytes: int = 256 << 20
    overwrite: bool = False
    live: Any = None

    def __post_init__(self) -> None:
        # checked once, here, for every recorder (the Recorder checks dtype against the store's schema)
        every = self.every
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise RecorderError(f"every must be a positive integer, not {every!r}")
        if self.params is not None and not isinstance(self.params, tuple):
            if isinstance(self.params, (str, bytes, os.PathLike)) or not isinstance(self.params, Iterable):
                raise RecorderError(f"params must be parameter names (an iterable of str), not {self.params!r}")
            object.__setattr__(self, "params", tuple(self.params))  # a generator is read once, here

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The options' names, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> RecordOptions:
        """The options out of a recorder's ``locals()``: each signature names every option (checked by
        ``tests/record/test_record_options.py``) and hands them on without spelling them again."""
        return cls(**{name: arguments[name] for name in cls.names()})

    def keywords(self) -> dict[str, Any]:
        """The options as keyword arguments (for :class:`~traj.record.Recorder`)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
