"""One public entry point, :func:`solve`, that dispatches to each method.

Like :func:`scipy.optimize.minimize`, the method is chosen by name and every method returns the
same :class:`~ucfm_svm.result.Result`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from .convex import solve_convex
from .nonconvex import solve_nonconvex
from .result import Result
from .spec import Spec
from .theory import solve_theory
from .validation import fail

#: Methods by name. Each takes the specification and keyword options and returns a Result.
METHODS: dict[str, Callable[..., Result]] = {
    "convex": solve_convex,
    "nonconvex": solve_nonconvex,
    "theory": solve_theory,
}


def method_options(method: str) -> tuple[str, ...]:
    """Names of the keyword options ``method`` accepts."""
    if method not in METHODS:
        raise fail("method", "one of " + ", ".join(METHODS), method)
    params = list(inspect.signature(METHODS[method]).parameters.values())[1:]
    return tuple(p.name for p in params)


def solve(spec: Spec, method: str = "convex", **options: object) -> Result:
    """Solve the UF-CS-SVM of ``spec`` with ``method``.

    Parameters
    ----------
    spec : Spec
    method : str
        A key of :data:`METHODS`: ``"convex"`` (options ``level``, ``solver``), ``"nonconvex"``
        (options ``level``, ``restarts``, ``seed``, ``alternations``, ``start``), ``"theory"``
        (closed form certified by its dual; option ``fallback``).
    **options
        Passed to the method; an option the method does not have raises ``SpecError``.
    """
    allowed = method_options(method)
    for name, value in options.items():
        if name not in allowed:
            raise fail(
                name,
                f"one of the options of method '{method}' ({', '.join(allowed) or 'none'})",
                value,
            )
    return METHODS[method](spec, **options)
