"""Exceptions raised by ucfm-svm.

Every error the library raises on purpose derives from :class:`UcfmError`, so callers (and the
CLI) can tell a bad input or a failed solve from a bug.
"""

from __future__ import annotations


class UcfmError(Exception):
    """Base class of the errors ucfm-svm raises on purpose."""


class SpecError(UcfmError, ValueError):
    """An input (argument, hyperparameter, file) is outside its allowed range."""


class SolverError(UcfmError, RuntimeError):
    """A numerical solver failed; the message names its status and what to try."""


class TooLargeError(SpecError):
    """A route would need more memory or time than the machine has; refused before any work
    (exit 2), with the route that will work named in the message."""
