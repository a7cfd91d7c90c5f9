"""Opening a user's files: what every checkpoint format checks before it reads a byte.

A source given to ``traj import`` is untrusted. Before a file is opened it must be a regular
file (a FIFO blocks the reader forever, ``/dev/zero`` never ends); a JSON file is read whole
only up to :data:`MAX_JSON_BYTES` (a sparse file of gigabytes costs nothing on disk and
everything in memory) and nested at most :data:`MAX_JSON_DEPTH` deep (a deep array ends in a
``RecursionError``). Each refusal is one :class:`~traj.errors.ImportSourceError` line naming
the file and the cause.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ImportSourceError
from ...store.guard import read_at_most

__all__ = ["MAX_JSON_BYTES", "MAX_JSON_DEPTH", "check_regular_file", "file_kind", "read_json"]

#: the largest JSON file traj reads (a trainer_state.json of 100 000 log entries is about 20 MiB)
MAX_JSON_BYTES = 64 << 20
#: the deepest nesting of arrays and objects traj parses (the files it reads nest 3 or 4 deep)
MAX_JSON_DEPTH = 64

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages ("a FIFO", "a character device", ...)."""
    return next((name for test, name in _KINDS if test(mode)), "not a file")


def check_regular_file(path: Path, label: str | None = None) -> int:
    """Refuse ``path`` unless it is (or links to) a regular file; returns its size in bytes.

    Called before a file is opened: opening a FIFO blocks until a writer comes, and a device
    (``/dev/zero``, or a symbolic link to it) reads without end.
    """
    where = label or str(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ImportSourceError(f"{where}: no such file") from None
    except OSError as exc:
        raise ImportSourceError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ImportSourceError(f"{where}: not a regular file ({file_kind(info.st_mode)}); traj reads only regular files")
    return info.st_size


def read_json(path: Path, label: str | None = None, *, limit: int = MAX_JSON_BYTES) -> Any:
    """The parsed JSON of a regular file of at most ``limit`` bytes nested at most :data:`MAX_JSON_DEPTH` deep."""
    where = label or str(path)
    size = check_regular_file(path, where)
    if size > limit:
        raise ImportSourceError(f"{where}: {size} bytes; traj reads JSON files of at most {limit >> 20} MiB")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImportSourceError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between the check and the open
            raise ImportSourceError(f"{where}: not a regular file; traj reads only regular files")
        raw = read_at_most(fd, limit)  # one byte more than allowed tells a file that grew
    except OSError as exc:
        raise ImportSourceError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(raw) > limit:
        raise ImportSourceError(f"{where}: more than {limit >> 20} MiB; traj reads JSON files of at most "
                                f"{limit >> 20} MiB")
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise ImportSourceError(f"{where}: JSON nested {depth} deep; traj reads at most {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        text = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ImportSourceError(f"{where}: not valid JSON ({''.join(c for c in text if c.isprintable())})") from None


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # unrolled: 6x faster than (?:[^"\\]|\\.)*


_BRACKET_STEP = np.zeros(256, dtype=np.int8)
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1


def json_depth(raw: bytes, *, block: int = 1 << 22) -> int:
    """The deepest nesting of ``[``/``{`` in JSON text (brackets inside strings not counted), in blocks."""
    text = _STRING.sub(b'""', raw)
    deepest = level = 0
    for start in range(0, len(text), block):
        codes = np.frombuffer(text, dtype=np.uint8, count=min(block, len(text) - start), offset=start)
        running = np.cumsum(_BRACKET_STEP[codes], dtype=np.int32) + level
        if running.size:
            deepest = max(deepest, int(running.max()))
            level = int(running[-1])
    return deepest
