"""What traj may replace on disk, and how: nothing it did not write, and never half of anything.

Two rules, one module:

* **Output directories** (every command's ``--out``) are replaced only when traj wrote them
  itself: each one carries a marker file, :data:`MARKER`. A missing path or an empty
  directory may be used; anything else is refused before any work starts, as is an output
  that equals, lies inside or contains one of the command's input stores.
* **Everything is built in a staging sibling** (``.NAME.traj-staging-PID-XXXX`` beside the
  target) and moved into place in one rename when complete. An existing target is swapped
  with ``renameat2(RENAME_EXCHANGE)`` where the kernel has it, so at every instant the path
  holds either the old directory or the new one. A process killed while building leaves
  only its staging sibling, which the next build at the same target removes (its liveness
  lock is a ``flock``, which the kernel drops when the holder dies).
* **The target is checked again at the swap.** :class:`Staging` remembers what stood at the
  target when the work began (its device and inode, or nothing). If something else stands there
  at the end (another process wrote the same path, a user made the directory meanwhile), or the
  directory swapped out no longer passes the output check (a file was put in it), nothing is
  replaced: the target is left as it is and the finished output is kept beside it, at a visible
  ``NAME.new`` (:class:`~traj.errors.OutputConflictError` says where).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import OutputConflictError, StoreWriteError, UnsafeOutputError

__all__ = [
    "MARKER",
    "Staging",
    "check_output_dir",
    "clean_stale_staging",
    "is_within",
    "rename_into_place",
    "staged_output",
]

#: Marker file that a traj output directory carries; only a directory holding it is replaced.
MARKER = ".traj-output.json"
_STAGING_TAG = ".traj-staging-"
_STAGING_LOCK = ".traj-staging.lock"
_OLD_TAG = "old-"  # the replaced directory of a two-rename swap, until it is deleted
_WRITER_LOCK = ".traj-writer.lock"  # a store's own writer lock (traj.store.lock) also marks liveness

_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _renameat2()


def _rename2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False where the kernel or filesystem lacks it."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(dst))


def rename_into_place(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path | None:
    """Move directory ``src`` to ``dst``; an existing ``dst`` is swapped out, not merged.

    Returns the path that now holds the old ``dst`` (for the caller to delete), or None when
    there was none. With ``renameat2`` the swap is one atomic step; without it, two renames.
    What stands at ``dst`` now is what is swapped out: if it changes during the move, nothing is
    replaced (:class:`~traj.errors.OutputConflictError`).
    """
    src, dst = Path(src), Path(dst)
    try:
        return _swap_in(src, dst, _identity(dst))
    except _TargetChanged as changed:
        raise OutputConflictError(f"{dst} changed while traj was moving {src} there ({changed})") from None


def is_within(path: str | os.PathLike[str], parent: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is ``parent`` or lies inside it (after resolving links)."""
    path, parent = Path(path).resolve(), Path(parent).resolve()
    return path == parent or parent in path.parents


def _locked(lock_file: Path) -> bool:
    try:
        fd = os.open(lock_file, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def clean_stale_staging(target: str | os.PathLike[str]) -> list[Path]:
    """Delete staging siblings of ``target`` left by killed processes; returns what went.

    Only directories named by :class:`Staging` for this target are candidates, and only those
    whose liveness lock no process holds.
    """
    target = Path(target)
    parent = target.parent
    prefix = f".{target.name}{_STAGING_TAG}"
    removed = []
    try:
        with os.scandir(parent) as listing:
            entries = list(listing)
    except OSError:
        return removed
    for entry in sorted(entries, key=lambda e: e.name):
        if not entry.name.startswith(prefix) or not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if _locked(path / _STAGING_LOCK) or _locked(path / _WRITER_LOCK):
            continue
        if entry.name.startswith(f"{prefix}{_OLD_TAG}") and not os.path.lexists(target):
            # A two-rename swap (no renameat2) killed between its renames: this is the user's
            # previous directory and nothing stands at the target. Put it back, never delete it.
            try:
                os.rename(path, target)
            except OSError:
                pass
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what stands at ``path`` (a link itself, not its target), or None."""
    try:
        status = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return status.st_dev, status.st_ino


class _TargetChanged(Exception):
    """The target is not what it was when the staging began; the message says how."""


def _swap_in(src: Path, dst: Path, expected: tuple[int, int] | None) -> Path | None:
    """Put directory ``src`` at ``dst``, swapping out only what ``expected`` identifies there (None:
    nothing); returns where the old ``dst`` now is (or None). Raises :class:`_TargetChanged`, with
    everything as it was, when ``dst`` holds something else."""
    current = _identity(dst)
    if current is None:  # nothing there: move in, never over whatever appears meanwhile
        try:
            if not _rename2(src, dst, _RENAME_NOREPLACE):
                os.rename(src, dst)  # replaces at most an empty directory made meanwhile
        except (FileExistsError, IsADirectoryError, NotADirectoryError) as exc:
            raise _TargetChanged("something was written there meanwhile") from exc
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:
                raise _TargetChanged("something was written there meanwhile") from exc
            raise
        return None
    if current != expected:
        raise _TargetChanged("something was written there meanwhile" if expected is None
                             else "another directory was put there meanwhile")
    if _rename2(src, dst, _RENAME_EXCHANGE):
        if _identity(src) != expected:  # replaced between the look and the swap
            _swap_back(src, dst, src)
            raise _TargetChanged("another directory was put there meanwhile")
        return src  # src now names the old directory
    old = dst.with_name(f".{dst.name}{_STAGING_TAG}{_OLD_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.rename(dst, old)
    if _identity(old) != expected:
        os.rename(old, dst)
        raise _TargetChanged("another directory was put there meanwhile")
    try:
        os.rename(src, dst)
    except OSError as exc:
        os.rename(old, dst)
        raise _TargetChanged("something was written there meanwhile") from exc
    return old


def _swap_back(src: Path, dst: Path, old: Path) -> None:
    """Undo :func:`_swap_in`: the old directory back at ``dst``, the new one at ``src``."""
    if old == src:
        if not _rename2(src, dst, _RENAME_EXCHANGE):
            raise OSError(errno.ENOTSUP, "cannot swap back", str(dst))
        return
    os.rename(dst, src)
    os.rename(old, dst)


class Staging:
    """A staging directory beside ``target``, alive while this object holds its lock.

    Build into :attr:`path`, then :meth:`commit` moves it to ``target`` in one rename
    (swapping out what was there), or :meth:`abort` deletes it.

    Parameters
    ----------
    target : path
        Where the finished directory goes.
    verify : callable, optional
        ``verify(old)`` is called on the directory swapped out of ``target`` before it is
        deleted; raising :class:`~traj.errors.UnsafeOutputError` puts it back (nothing is lost)
        and keeps the new output aside. Default: only the identity check.
    """

    def __init__(self, target: str | os.PathLike[str], *, verify: Callable[[Path], None] | None = None) -> None:
        self.target = Path(target)
        self._verify = verify
        #: What stood at the target when the work began: only that may be swapped out.
        self.expected = _identity(self.target)
        parent = self.target.parent
        clean_stale_staging(self.target)
        self.path = parent / f".{self.target.name}{_STAGING_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()
        self._fd: int | None = os.open(self.path / _STAGING_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def commit(self, *, keep_on_conflict: bool = True) -> None:
        """Move the staging directory to the target; the old target, if any, is deleted.

        Only the directory that stood at the target when the staging began is replaced, and
        only if it still passes ``verify``. Otherwise the target is left as it is and
        :class:`~traj.errors.OutputConflictError` is raised, the new directory kept at a free
        sibling ``NAME.new`` (``keep_on_conflict``) or deleted.
        """
        try:
            old = _swap_in(self.path, self.target, self.expected)
            if old is not None and self._verify is not None:
                try:
                    self._verify(old)
                except UnsafeOutputError as exc:
                    _swap_back(self.path, self.target, old)
                    raise _TargetChanged(str(exc)) from None
                except BaseException:
                    _swap_back(self.path, self.target, old)  # the old directory is never left at a staging name
                    raise
        except _TargetChanged as changed:
            kept = self._set_aside() if keep_on_conflict else None
            if kept is None:
                self.abort()
                raise OutputConflictError(f"{self.target} changed while traj was writing it ({changed}); "
                                          "it was left as it is") from None
            raise OutputConflictError(f"{self.target} changed while traj was writing it ({changed}); it was "
                                      f"left as it is, and the new output is in {kept}", kept_at=kept) from None
        lock = self.target / _STAGING_LOCK
        self._release()
        try:
            lock.unlink()
        except OSError:
            pass
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _set_aside(self) -> Path | None:
        """Move the finished staging directory to a free visible sibling ``NAME.new[-k]``."""
        for k in range(1, 1000):
            aside = self.target.with_name(f"{self.target.name}.new" + ("" if k == 1 else f"-{k}"))
            if os.path.lexists(aside):
                continue
            try:
                if not _rename2(self.path, aside, _RENAME_NOREPLACE):
                    os.rename(self.path, aside)
            except (FileExistsError, IsADirectoryError, NotADirectoryError):
                continue
            except OSError as exc:
                if exc.errno == errno.ENOTEMPTY:
                    continue
                return None
            self._release()
            try:
                (aside / _STAGING_LOCK).unlink()
            except OSError:
                pass
            return aside
        return None

    def abort(self) -> None:
        self._release()
        shutil.rmtree(self.path, ignore_errors=True)

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _is_empty_dir(path: Path) -> bool:
    try:
        if not path.is_dir() or path.is_symlink():
            return False
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def _marker(path: Path) -> dict[str, Any] | None:
    try:
        if (path / MARKER).is_symlink():
            return None
        value = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and value.get("written_by") == "traj" else None


def check_output_dir(out: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str]] = (),
                     option: str = "--out", kind: str = "report") -> Path:
    """Refuse an output directory that traj may not write; returns it as a Path.

    Allowed: a path that does not exist, an empty directory, or a directory carrying traj's
    :data:`MARKER` of the same ``kind`` of output (a report is not replaced by a kga-replay's
    runs, nor those by a report) and holding nothing but what that marker lists (a file the user
    put there, or a run recorded into it, is never deleted). A marker without a valid list of
    ``entries`` (an older traj's, or one planted or garbled) names nothing, so a directory holding
    anything beside it is refused. Refused with :class:`UnsafeOutputError`: anything else, and an
    output equal to, inside or containing one of ``inputs`` (the command's input stores). Nothing
    is touched.
    """
    out = Path(out)
    for source in inputs:
        source = Path(source)
        if is_within(out, source):
            where = "is" if out.resolve() == source.resolve() else "lies inside"
            raise UnsafeOutputError(f"{option} {out} {where} the input {source}; choose another {option}")
        if is_within(source, out):
            raise UnsafeOutputError(f"{option} {out} contains the input {source}; choose another {option}")
    if not os.path.lexists(out):
        return out
    if out.is_symlink():
        raise UnsafeOutputError(f"{option} {out} is a symbolic link; traj writes only real directories")
    if not out.is_dir():
        what = "a file" if out.is_file() else "not a directory"
        raise UnsafeOutputError(f"{out} exists and is {what}; {option} needs a directory")
    _check_owned(out, shown=out, option=option, kind=kind)
    return out


def _check_owned(path: Path, *, shown: Path, option: str, kind: str) -> None:
    """Refuse (:class:`UnsafeOutputError`, naming ``shown``) a directory that is not empty and not
    wholly traj's output of ``kind``: its marker must list every entry beside itself."""
    if _is_empty_dir(path):
        return
    marker = _marker(path)
    if marker is None:
        raise UnsafeOutputError(
            f"{shown} exists and was not written by traj (it has no {MARKER}); traj replaces only its own output "
            f"directories: choose another {option} or remove it"
        )
    written = marker.get("kind", "report")
    if written != kind:
        raise UnsafeOutputError(f"{shown} holds the output of traj {written}, which this command would replace: "
                                f"choose another {option}")
    listed = marker.get("entries")
    valid = isinstance(listed, list) and all(isinstance(name, str) for name in listed)
    try:
        present = {entry.name for entry in os.scandir(path)} - {MARKER, _STAGING_LOCK}
    except OSError as exc:
        raise StoreWriteError.from_os_error(shown, exc) from None
    foreign = sorted(present - set(listed if valid else ()))
    if foreign:
        shown_names = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        why = "which traj did not write there" if valid else (
            f"which its {MARKER} does not list (no list of entries: an older traj's marker, or not traj's)")
        raise UnsafeOutputError(f"{shown} holds {shown_names}, {why}; replacing the directory would delete "
                                f"{'it' if len(foreign) == 1 else 'them'}: choose another {option} or move them out")


@contextmanager
def staged_output(out: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str]] = (),
                  kind: str = "report") -> Iterator[Path]:
    """Build an output directory in a staging sibling; on success it replaces ``out`` whole.

    ``out`` is checked with :func:`check_output_dir` before the body runs, and the directory
    swapped out of it is checked again after the swap (:class:`Staging`): if ``out`` changed
    meanwhile it is left as it is and the new output is kept beside it
    (:class:`~traj.errors.OutputConflictError`). On any other error (or interrupt) the staging
    directory is deleted and ``out`` is left exactly as it was.
    """
    from ._version import __version__

    inputs = list(inputs)
    out = check_output_dir(out, inputs=inputs, kind=kind)

    def verify(old: Path) -> None:
        _check_owned(old, shown=out, option="--out", kind=kind)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Staging(out, verify=verify)
    except OSError as exc:
        raise StoreWriteError.from_os_error(out, exc) from None
    try:
        yield staging.path
        entries = sorted(entry.name for entry in os.scandir(staging.path) if entry.name != _STAGING_LOCK)
        marker = {"written_by": "traj", "kind": kind, "traj": __version__,
                  "created": datetime.now(UTC).isoformat(timespec="seconds"), "entries": entries}
        (staging.path / MARKER).write_text(json.dumps(marker) + "\n")
        staging.commit()
    except OutputConflictError:
        raise
    except OSError as exc:
        staging.abort()
        raise StoreWriteError.from_os_error(out, exc) from None
    except BaseException:
        staging.abort()
        raise
