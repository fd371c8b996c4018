"""One public entry point, :func:`solve`, that dispatches to each method.

Like :func:`scipy.optimize.minimize`, the method is chosen by name and every method returns the
same :class:`~ucfm_svm.result.Result`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from .result import Result
from .solvers.convex import solve_convex, solve_convex_grouped
from .solvers.nonconvex import solve_nonconvex
from .solvers.structured import structured_solution
from .solvers.theory import solve_theory
from .spec import Spec
from .validation import fail
from .variants.routes import solve_variant

#: Methods by name. Each takes the specification and keyword options and returns a Result.
METHODS: dict[str, Callable[..., Result]] = {
    "convex": solve_convex,
    "convex_grouped": solve_convex_grouped,
    "nonconvex": solve_nonconvex,
    "structured": structured_solution,
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
        (closed form certified by its dual; option ``fallback``), ``"structured"`` (the closed
        form at large k, options ``level``, ``full``), ``"convex_grouped"`` (class level over
        groups of identical classes, option ``solver``).
    **options
        Passed to the method; an option the method does not have raises ``SpecError``.

    A spec with ``bias="free"`` or ``features="nonnegative"`` goes to
    :func:`ucfm_svm.variants.routes.solve_variant` (methods ``theory``, ``convex``,
    ``nonconvex``; docs/theory.md §11, §12).
    """
    if spec.variant:
        return solve_variant(spec, method, **options)
    allowed = method_options(method)
    for name, value in options.items():
        if name not in allowed:
            raise fail(
                name,
                f"one of the options of method '{method}' ({', '.join(allowed) or 'none'})",
                value,
            )
    return METHODS[method](spec, **options)
