"""The exceptions traj raises.

Every error traj raises on purpose derives from :class:`TrajError`, so a caller (the CLI
first of all) can tell a problem with the input from a bug. Subclasses also inherit the
matching builtin, as zarr-python does with ``NodeNotFoundError(FileNotFoundError)``, so
``except FileNotFoundError`` keeps working for callers who do not know traj.
"""

from __future__ import annotations

__all__ = [
    "TrajError",
    "ParameterError",
    "NotApplicableError",
    "DataLimitError",
    "RankUnavailableError",
    "WindowTooShortError",
    "NonFiniteDataError",
    "SnapshotGapWarning",
    "UnevenSpacingError",
    "ModelFormatError",
    "StoreNotFoundError",
    "StoreFormatError",
    "DamagedStoreError",
    "LayoutMismatchError",
    "StoreLockedError",
    "UnknownRecipeError",
    "RecipeConfigError",
    "ImportSourceError",
    "RecorderError",
    "UnsafeOutputError",
    "OutputConflictError",
    "StoreWriteError",
    "SchedulerUnreachableError",
    "ReplacingSnapshotsWarning",
]


class TrajError(Exception):
    """Root of every error traj raises on purpose; its message is one readable line."""


class ParameterError(TrajError, ValueError):
    """An argument of a traj function is of the wrong type or out of its range.

    ``parameter`` is the function's name for it; a caller that knows it by another name
    (the CLI: a flag such as ``--power-iterations``) sets ``shown_as`` before showing it.
    """

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(parameter, problem)
        self.parameter = parameter
        self.problem = problem
        self.shown_as = parameter

    def __str__(self) -> str:
        return f"{self.shown_as} {self.problem}"


class NotApplicableError(TrajError, ValueError):
    """The analysis does not apply to this run (its data, not an argument): too few snapshots,
    nothing that moves, no prunable weights, no epochs recorded. ``traj report`` shows such a
    section as skipped with this message; every other error fails the command."""


class DataLimitError(ParameterError, NotApplicableError):
    """A parameter asks for more than the run's data hold (more modes than weights that move, a
    rank above the directions a window resolves): a bad parameter when the user chose it, not
    applicable to this run when a default did."""


class RankUnavailableError(DataLimitError):
    """An explicit DMD rank above the number of singular values the window resolves.

    ``requested`` and ``available`` say by how much; a caller that accepts fewer modes (dmd's
    per-layer spectra) catches exactly this and asks again.
    """

    def __init__(self, parameter: str, requested: int, available: int, problem: str) -> None:
        super().__init__(parameter, problem)
        self.requested = requested
        self.available = available


class WindowTooShortError(NotApplicableError):
    """A window (the run itself, an epoch, a window left after subsampling) holds too few
    snapshots for the method."""


class NonFiniteDataError(NotApplicableError):
    """Snapshots in the window hold NaN or Inf (the run diverged); ``--drop-nonfinite`` skips them
    where the method allows it."""


class UnevenSpacingError(ParameterError, NotApplicableError):
    """The window's snapshots are not evenly spaced in steps, and the method assumes they are (DMD:
    one λ per spacing). ``spacings`` holds the distinct spacings found; ``suggestion`` the longest
    evenly spaced window ``(a, b)`` of at least three snapshots inside it, or None."""

    def __init__(self, parameter: str, problem: str, *, spacings: tuple[int, ...] = (),
                 suggestion: tuple[int, int] | None = None) -> None:
        super().__init__(parameter, problem)
        self.spacings = spacings
        self.suggestion = suggestion


class StoreNotFoundError(TrajError, FileNotFoundError):
    """The path does not exist, or holds no run store."""


class StoreFormatError(TrajError, ValueError):
    """The path holds a Zarr group that is not a valid traj run store of a known version."""


class DamagedStoreError(StoreFormatError):
    """A run store's files are damaged or hostile: unreadable metadata, a chunk that is not what
    its array declares, a symlink or FIFO where a chunk file belongs."""


class ModelFormatError(StoreFormatError):
    """A Zarr group that should hold a fitted model traj wrote (``cmd.zarr``) is not one."""


class LayoutMismatchError(TrajError, ValueError):
    """A model's parameter layout differs from the layout recorded in the store."""


class StoreLockedError(TrajError, RuntimeError):
    """Another writer holds the store."""


class UnknownRecipeError(TrajError, LookupError):
    """No built-in recipe has this name."""


class RecipeConfigError(TrajError, ValueError):
    """A recipe option is unknown or has a value of the wrong kind."""


class ImportSourceError(TrajError, ValueError):
    """A source given to ``traj import`` cannot be turned into a run store."""


class RecorderError(TrajError, RuntimeError):
    """The recorder was used out of order, or its background writer failed."""


class UnsafeOutputError(TrajError, FileExistsError):
    """An output path traj may not write: not its own output, or overlapping an input."""


class OutputConflictError(UnsafeOutputError):
    """The output path changed while traj was building what goes there (another process wrote it,
    a user put a file in it): it is left as it is, and the finished output is kept at ``kept_at``
    (None when there was nothing worth keeping)."""

    def __init__(self, message: str, kept_at: object = None) -> None:
        super().__init__(message)
        self.kept_at = kept_at

    def __str__(self) -> str:
        return str(self.args[0])


class StoreWriteError(TrajError, OSError):
    """The file system refused a write (disk full, read-only, no permission); names the path
    (a store, a report directory)."""

    @classmethod
    def from_os_error(cls, path: object, exc: OSError) -> StoreWriteError:
        return cls(exc.errno, f"cannot write {path}: {exc.strerror or exc}")

    def __str__(self) -> str:
        return str(self.strerror)


class SchedulerUnreachableError(TrajError, ConnectionError):
    """No dask.distributed scheduler answered at the address given (refused, unreachable, timed out, or
    something else listening there)."""


class ReplacingSnapshotsWarning(UserWarning):
    """A run resumed from an earlier checkpoint will replace the snapshots its store holds past
    that checkpoint (they are forgotten when the first new snapshot is written, not before)."""


class SnapshotGapWarning(UserWarning):
    """A run resumed from a checkpoint later than its store's last snapshot (the store was committed
    less far than the checkpoints): the steps between have no snapshot, a gap in the trajectory."""
