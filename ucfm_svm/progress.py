"""The one progress-bar helper every long run uses (docs/conventions.md).

Bars go to stderr, and only when stderr is a terminal: tqdm's ``disable=None`` turns a bar off
on a non-TTY, so logs and pipes get no bar characters. ``enabled=False`` turns a bar off
everywhere (e.g. a run too short to need one, or a caller that asked for quiet).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

#: Work expected to take less than this many seconds gets no bar (callers estimate).
MIN_SECONDS = 2.0


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    enabled: bool = True,
):
    """A tqdm bar over ``iterable`` (or a manual one with ``total``) on stderr, shown only when
    ``enabled`` and stderr is a terminal; ``leave=False`` so finished bars do not clutter."""
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=False,
        file=sys.stderr,
        disable=None if enabled else True,
    )
