"""Writing output files safely: all or nothing, never a half-written file under the final name.

:func:`atomic_writer` opens a temporary file in the destination's own folder (so that the final
rename stays on one file system), lets the caller write it, flushes it to disk and renames it
over the destination with :func:`os.replace`, which is atomic on POSIX and Windows. If writing
fails (a full disk, an exception, Ctrl-C) the temporary file is removed and the destination is
left exactly as it was: a reader sees either the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_writer(
    path: str | Path, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Context manager yielding a file object whose content replaces ``path`` on success.

    Parameters
    ----------
    path : path
        Destination; its folder must exist (it is not created).
    mode : {"w", "wb"}
        Text or binary.
    encoding : str or None
        Text encoding (ignored in binary mode).

    The new file gets the permissions a plain ``open(path, "w")`` would give it (``0o666``
    minus the umask), or the old file's permissions when ``path`` already exists.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as fh:
            try:
                os.chmod(tmp, os.stat(path).st_mode & 0o7777)
            except FileNotFoundError:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o666 & ~umask)
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Replace ``path`` by ``data`` (text as UTF-8) atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, "wb" if isinstance(data, bytes) else "w") as fh:
        fh.write(data)


__all__ = ["atomic_write", "atomic_writer"]
