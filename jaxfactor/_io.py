"""Atomic file writes: a temporary file in the destination's directory, then
``os.replace``, so a reader (or a kill) sees the old file or the new one, never
a partly written one. The file gets the permissions of a plain ``open``: ``0o666``
less the process's umask (``mkstemp`` alone would leave ``0o600``)."""
from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], *,
                 suffix: str = ".tmp", fsync: bool = True) -> str:
    """Write ``path`` through ``write(file)`` atomically; returns the path.

    The file's mode is ``0o666 & ~umask``, as for ``open(path, "wb")``.
    """
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix,
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        os.fchmod(fd, 0o666 & ~_umask())
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


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), fsync=fsync)
