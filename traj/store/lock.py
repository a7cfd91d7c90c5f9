"""One writer per store: an advisory ``flock`` on a file inside the store.

Zarr does no locking. The kernel drops a ``flock`` when its holder dies, so a recording
killed by SIGKILL never leaves a lock that blocks the resume; the holder's pid and host are
written into the file only to make the refusal message useful.

The file exists only while a writer holds it: :meth:`WriterLock.release` unlinks it (a plain
Zarr reader listing a closed store warns about any file that is no Zarr node). Because the
holder unlinks the file before it unlocks, a writer that wins the ``flock`` checks that the
path still names the file it locked, and starts again with a fresh one when it does not.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import weakref
from pathlib import Path

from ..errors import DamagedStoreError, StoreLockedError

LOCK_NAME = ".traj-writer.lock"
_ATTEMPTS = 100

#: Locks held in this process: a forked child (dask's worker pool) closes its copies of their
#: descriptors, so the lock still dies with the process that took it.
_HELD: weakref.WeakSet[WriterLock] = weakref.WeakSet()


def _forget_in_child() -> None:
    for lock in list(_HELD):
        if lock._fd is not None:
            try:
                os.close(lock._fd)  # the parent's lock stays: closing a copy does not release a flock
            except OSError:
                pass
            lock._fd = None
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


class WriterLock:
    """An exclusive, non-blocking writer lock on ``store_path``."""

    def __init__(self, store_path: str | os.PathLike[str]) -> None:
        self.path = Path(store_path) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        for _ in range(_ATTEMPTS):
            fd = self._open_locked()
            if _names(self.path, fd):
                break
            os.close(fd)  # its holder released it and unlinked it meanwhile: lock the file now there
        else:  # pragma: no cover - another writer takes and drops the lock faster than we can look
            raise StoreLockedError(f"{self.path.parent} is being opened and closed by other writers; one writer per store")
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        self._fd = fd
        _HELD.add(self)

    def _open_locked(self) -> int:
        """Open (or create) the lock file and ``flock`` it; raises when another writer holds it."""
        # O_NOFOLLOW and a regular-file check: a lock "file" that is a symlink would make the
        # truncate in acquire empty whatever it points to; a FIFO or device is no lock at all.
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise DamagedStoreError(f"{self.path}: a symbolic link; traj will not use it as the writer lock") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise DamagedStoreError(f"{self.path}: not a regular file; traj will not use it as the writer lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StoreLockedError(
                f"{self.path.parent} is being written by another recorder ({holder}); "
                "one writer per store"
            ) from None
        return fd

    def release(self) -> None:
        """Unlink the lock file (while still holding it), then unlock."""
        _HELD.discard(self)
        if self._fd is None:
            return
        try:
            try:
                if _names(self.path, self._fd):  # the path may name another file now (a store moved or replaced)
                    os.unlink(self.path)
            except OSError:  # a read-only or vanished directory: an unlocked file is no lock
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` is (still) the file open as ``fd``."""
    try:
        on_disk = os.lstat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def is_locked(store_path: str | os.PathLike[str]) -> bool:
    """Whether a live writer holds ``store_path`` now."""
    path = Path(store_path) / LOCK_NAME
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False  # a FIFO, device or symlink put there is no lock (and must not be opened)
    except OSError:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
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


def _read_holder(fd: int) -> str:
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw.decode() or "{}")
        return f"pid {info.get('pid', '?')} on {info.get('host', '?')}"
    except (OSError, ValueError):
        return "unknown holder"
