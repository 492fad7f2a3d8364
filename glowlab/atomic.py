"""Atomic file writes: a reader sees the old file or the new one, never a partial one.

Each write goes to a temporary file in the destination's own folder (so on the same filesystem),
is flushed and ``fsync``-ed, and then ``os.replace``-d over the destination, which POSIX makes
atomic within one filesystem. The folder is ``fsync``-ed afterwards so the rename itself survives
a power cut. A failed write (disk full, an exception while serialising) removes the temporary
file and leaves the destination as it was.

Writing the temporary file elsewhere (``/tmp``, as fsspec does) is not atomic when the
destination lies on another filesystem: the final move becomes an in-place copy, which a full disk
or a kill leaves truncated.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> p = Path(tempfile.mkdtemp()) / "status.json"
    >>> _ = atomic_write_text(p, '{"status": "ok"}')
    >>> p.read_text()
    '{"status": "ok"}'
    >>> sorted(q.name for q in p.parent.iterdir())  # no temporary file left behind
    ['status.json']
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["TMP_PREFIX", "atomic_write", "atomic_write_bytes", "atomic_write_text"]

TMP_PREFIX = ".tmp-"  # temporary files are ``.tmp-<name>-<random>`` beside the destination


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp's own is 0o600


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a binary file object, then atomically put the result at ``path``.

    Creates the parent folder. Returns ``path`` as a :class:`~pathlib.Path`. Any exception from
    ``write``, the flush, the ``fsync`` or the rename propagates, with the temporary file removed
    and ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}-", dir=path.parent)
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Atomically replace ``path`` with ``text``."""
    return atomic_write_bytes(path, text.encode(encoding))
