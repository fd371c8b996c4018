"""The one progress-bar helper every long run uses (docs/conventions.md).

Bars go to stderr, and only when stderr is a terminal, so logs and pipes get no bar
characters. ``enabled=False`` turns a bar off everywhere (e.g. a run too short to need one, or
a caller that asked for quiet). tqdm is imported only when a bar is shown (0.1 s); otherwise
the caller gets :class:`NoBar`, which has the same ``update``/``close``/iteration interface.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

#: Work expected to take less than this many seconds gets no bar (callers estimate).
MIN_SECONDS = 2.0


class NoBar:
    """The stand-in of a tqdm bar that is not shown: iterates ``iterable``, ignores updates."""

    def __init__(self, iterable: Iterable | None = None) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self.iterable if self.iterable is not None else ())

    def update(self, n: float = 1) -> None:
        """Ignored."""

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Ignored."""

    def close(self) -> None:
        """Ignored."""

    def __enter__(self) -> NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    enabled: bool = True,
):
    """A tqdm bar over ``iterable`` (or a manual one with ``total``) on stderr, shown only when
    ``enabled`` and stderr is a terminal (else a :class:`NoBar`, without importing tqdm);
    ``leave=False`` so finished bars do not clutter."""
    if not (enabled and _stderr_is_terminal()):
        return NoBar(iterable)
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=False,
        file=sys.stderr,
    )
