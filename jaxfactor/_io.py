"""Atomic file writes: a temporary file in the destination's directory, then
``os.replace``, so a reader (or a kill) sees the old file or the new one, never
a partly written one."""
from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], *,
                 suffix: str = ".tmp", fsync: bool = True) -> str:
    """Write ``path`` through ``write(file)`` atomically; returns the path."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix,
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
