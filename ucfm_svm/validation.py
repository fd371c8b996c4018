"""Input checks with one message shape.

Every check raises :class:`~ucfm_svm.errors.SpecError` with the message

    The '<name>' parameter must be <allowed>. Got <value> instead.

(the shape scikit-learn's parameter validation uses), so a user always learns which argument was
wrong and what it may be.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import SpecError


class Shown(str):
    """Text shown as it is (unquoted) in an error message, e.g. ``"0 at position 1"``."""


def _show(value: object) -> str:
    text = repr(value) if isinstance(value, str) and not isinstance(value, Shown) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def fail(name: str, allowed: str, got: object) -> SpecError:
    """Build the standard error for parameter ``name`` (raise the returned object)."""
    return SpecError(f"The '{name}' parameter must be {allowed}. Got {_show(got)} instead.")


def check_int(name: str, value: object, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an ``int``, requiring a whole number in ``[low, high]``."""
    bounds = [f"{op} {b}" for op, b in ((">=", low), ("<=", high)) if b is not None]
    allowed = " ".join(["an integer", " and ".join(bounds)]).strip()
    if isinstance(value, bool):
        raise fail(name, allowed, value)
    try:
        as_float = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise fail(name, allowed, value) from None
    if not math.isfinite(as_float) or as_float != int(as_float):
        raise fail(name, allowed, value)
    out = int(as_float)
    if (low is not None and out < low) or (high is not None and out > high):
        raise fail(name, allowed, value)
    return out


def check_float(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite ``float`` inside the given interval."""
    parts = ["a finite number"]
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    allowed = " ".join(parts[:1]) + (" " + " and ".join(parts[1:]) if len(parts) > 1 else "")
    if isinstance(value, bool):
        raise fail(name, allowed, value)
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise fail(name, allowed, value) from None
    if not math.isfinite(out):
        raise fail(name, allowed, value)
    if low is not None and (out < low or (low_open and out == low)):
        raise fail(name, allowed, value)
    if high is not None and (out > high or (high_open and out == high)):
        raise fail(name, allowed, value)
    return out


def check_positive_vector(name: str, values: object, length: int | None = None) -> np.ndarray:
    """Return a 1-D float array of finite, strictly positive entries (of ``length`` if given)."""
    allowed = "a list of finite positive numbers"
    if length is not None:
        allowed += f" of length {length} (one per class)"
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise fail(name, allowed, values) from None
    if arr.ndim != 1 or arr.size == 0 or (length is not None and arr.size != length):
        raise fail(name, allowed, arr.tolist())
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise fail(name, allowed, Shown(f"{arr[i]:g} at position {i}"))
    return arr


#: Largest class count: integers up to 2^53 are exact in float64 (the solvers work in floats).
MAX_COUNT = 2**53


def check_counts(name: str, values: object) -> np.ndarray:
    """Return class counts as an ``int64`` array: at least 2 classes, each an integer in
    ``1..MAX_COUNT``."""
    allowed = "a list of at least 2 positive integers up to 2^53 (one count per class)"
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError):
        raise fail(name, allowed, values) from None
    if arr.ndim != 1 or arr.size < 2:
        raise fail(name, allowed, _list(values))
    if arr.dtype.kind not in "iuf":
        raise fail(name, allowed, _list(values))
    as_float = arr.astype(float)
    bad = ~np.isfinite(as_float) | (as_float < 1) | (as_float != np.round(as_float))
    # integers are compared exactly: 2^53 + 1 rounds to 2^53 in float64
    bad |= (arr > MAX_COUNT) if arr.dtype.kind in "iu" else (as_float > MAX_COUNT)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise fail(name, allowed, Shown(f"{arr[i]} at position {i}"))
    return as_float.astype(np.int64)


def parse_list(name: str, text: str, kind: type = float) -> list:
    """Parse a comma-separated command-line list such as ``"50,50,5,5"``."""
    what = "integers" if kind is int else "numbers"
    allowed = f"a comma-separated list of {what}"
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(t == "" for t in items):
        raise fail(name, allowed, text)
    out = []
    for t in items:
        if kind is int:
            try:  # exact for any size: float("9007199254740993") would round to 2^53
                out.append(int(t))
                continue
            except ValueError:
                pass
        try:
            value = float(t)
        except ValueError:
            raise fail(name, allowed, text) from None
        if kind is int:
            if not math.isfinite(value) or value != int(value):
                raise fail(name, allowed, text)
            out.append(int(value))
        else:
            out.append(value)
    return out


def _list(values: object) -> object:
    if isinstance(values, np.ndarray):
        return values.tolist()
    if isinstance(values, Sequence) and not isinstance(values, str):
        return list(values)
    return values
