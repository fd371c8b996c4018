"""Writing output files safely: all or nothing, never a half-written file, never a user's file.

The rule every output of ucfm-svm follows (:func:`write_output`, docs/reliability.md): an
output path may be new, an empty file, or a file ucfm-svm wrote (any of our outputs carries
the :data:`WRITER` mark, :func:`written_by_us`); any other existing file is refused and left
untouched. Missing parent folders are created. The content is written atomically.

:func:`atomic_writer` opens a temporary file in the destination's own folder (so that the final
rename stays on one file system), lets the caller write it, flushes it to disk and renames it
over the destination with :func:`os.replace`, which is atomic on POSIX and Windows. If writing
fails (a full disk, an exception, Ctrl-C) the temporary file is removed and the destination is
left exactly as it was: a reader sees either the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
import uuid
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


#: The mark of our outputs: the value of JSON's first key ``written_by``, PNG's ``Software``
#: text chunk, the ``Creator`` of PDF, SVG, PS and EPS files, a markdown report's first line.
WRITER = "ucfm-svm"
#: How the mark appears in each format (searched in the first and last :data:`_SNIFF` bytes;
#: a PDF keeps its metadata at the end).
_MARKS = (
    b'"written_by": "' + WRITER.encode(),
    b"tEXtSoftware\x00" + WRITER.encode(),
    b"/Creator (" + WRITER.encode(),
    b"<dc:title>" + WRITER.encode(),
    b"%%Creator: " + WRITER.encode(),
    b"<!-- written by " + WRITER.encode(),
)
_SNIFF = 1 << 16


def written_by_us(path: str | Path) -> bool:
    """Whether the existing file ``path`` carries the :data:`WRITER` mark of our outputs."""
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF)
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(len(head), size - _SNIFF))
        tail = fh.read()
    return any(mark in head or mark in tail for mark in _MARKS)


#: Numeric lists with more entries than this are written compactly, one row a line.
COMPACT_FROM = 64


def json_text(data: dict) -> str:
    """``data`` as strict JSON (no NaN), indented, its first key ``written_by`` the mark
    :data:`WRITER` (so that a later run may replace the file).

    Lists of numbers (and of such lists: the arrays of a result) with more than
    ``COMPACT_FROM`` entries are written by the C encoder, one row a line, and spliced into the
    indented text: ``json.dumps`` with ``indent`` runs its pure-Python encoder, 30 of the 36 s
    of a k = 1000 result's five ``k x k`` arrays. The JSON value is the same."""
    rows: dict[str, list] = {}
    tag = f"@@ucfm-array-{uuid.uuid4().hex}-"

    def swap(value: object) -> object:
        if isinstance(value, dict):
            return {key: swap(v) for key, v in value.items()}
        if isinstance(value, list):
            if _numeric_rows(value):
                key = f"{tag}{len(rows)}"
                rows[key] = value
                return key
            return [swap(v) for v in value]
        return value

    text = json.dumps({"written_by": WRITER, **swap(data)}, indent=1, allow_nan=False)

    def body(match: re.Match) -> str:
        value = rows[match.group(1)]
        if isinstance(value[0], list):
            return "[" + ",\n".join(json.dumps(row, allow_nan=False) for row in value) + "]"
        return json.dumps(value, allow_nan=False)

    # one pass over the text (a replace per array would be quadratic in the number of arrays)
    return re.sub('"(' + re.escape(tag) + r'\d+)"', body, text) + "\n"


def _numeric_rows(value: list) -> bool:
    """Whether ``value`` looks like an array: a list whose first entry is a number (or
    ``None``), or a list of lists whose first entry is, with more than ``COMPACT_FROM`` entries
    in all. Only the first entries are looked at: whatever the rest holds, the C encoder
    writes the same JSON value (only the layout is compact)."""
    scalar = (int, float, type(None))
    if not value:
        return False
    if isinstance(value[0], list):
        return (bool(value[0]) and type(value[0][0]) in scalar
                and all(isinstance(row, list) for row in value)
                and sum(len(row) for row in value) > COMPACT_FROM)
    return type(value[0]) in scalar and len(value) > COMPACT_FROM


#: First line of a markdown report of ours (an HTML comment: invisible when rendered).
MARKDOWN_MARK = f"<!-- written by {WRITER} -->"


class OutputRefusedError(OSError):
    """An output path that must not be written (``strerror`` says why, ``filename`` which)."""


def refusal(path: str | Path) -> str | None:
    """Why ``path`` cannot take an output of ours, or None if it can.

    It can when it is new (its nearest existing folder being writable: missing folders will be
    created), an empty file, or a writable file of ours (:func:`written_by_us`).
    """
    target = Path(path)
    if target.is_dir():
        return "a directory"
    if target.exists():
        if not os.access(target, os.W_OK):
            return "permission denied"
        try:
            if target.stat().st_size and not written_by_us(target):
                return (
                    "an existing file that ucfm-svm did not write; it is kept: remove it or "
                    "choose another path"
                )
        except OSError as exc:
            return exc.strerror or str(exc)
        return None
    folder = target.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    return None


#: Formats a single-file figure is written in (by its suffix); another or no suffix gets ``.png``.
FIGURE_FORMATS = ("png", "pdf", "svg", "eps", "ps")


def figure_path(path: str | Path) -> Path:
    """The file a single figure is written to: ``path`` if it ends in one of
    :data:`FIGURE_FORMATS`, else ``path`` with ``.png`` appended (``myplot`` -> ``myplot.png``)."""
    path = Path(path)
    if path.suffix.lower().lstrip(".") in FIGURE_FORMATS:
        return path
    return path.with_name(path.name + ".png")


def figure_pair(stem: str | Path) -> tuple[Path, Path]:
    """``(stem.png, stem.pdf)``, the files of a figure written in both formats; a ``.png`` or
    ``.pdf`` suffix of ``stem`` is dropped, any other is part of the stem (``run1.5`` gives
    ``run1.5.png``)."""
    stem = Path(stem)
    if stem.suffix.lower() in (".png", ".pdf"):
        stem = stem.with_suffix("")
    return stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")


def check_output(path: str | Path) -> None:
    """Raise :class:`OutputRefusedError` if :func:`refusal` refuses ``path``."""
    reason = refusal(path)
    if reason is not None:
        raise OutputRefusedError(errno.EEXIST, reason, str(path))


def write_output(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to the output ``path`` under the rule of this module: refuse it (raise
    :class:`OutputRefusedError`) as :func:`refusal` says, create its missing folders, and write it
    atomically. Any ``OSError`` (a full disk: ``ENOSPC``) leaves ``path`` as it was."""
    check_output(path)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)


__all__ = [
    "FIGURE_FORMATS",
    "MARKDOWN_MARK",
    "WRITER",
    "OutputRefusedError",
    "atomic_write",
    "atomic_writer",
    "check_output",
    "figure_pair",
    "figure_path",
    "json_text",
    "refusal",
    "write_output",
    "written_by_us",
]
