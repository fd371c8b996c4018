"""One public entry point, :func:`solve`, that dispatches to each method.

Like :func:`scipy.optimize.minimize`, the method is chosen by name and every method returns the
same :class:`~ucfm_svm.result.Result`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

from . import groups as _groups
from .result import Result
from .solvers.convex import solve_convex, solve_convex_grouped
from .solvers.nonconvex import solve_nonconvex
from .solvers.structured import quadratic_forms, structured_solution
from .solvers.theory import solve_theory
from .spec import Spec
from .validation import fail

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


def group_statistics(
    result: Result,
    many_above: float = _groups.MANY_ABOVE,
    few_below: float = _groups.FEW_BELOW,
) -> _groups.GroupStatistics:
    """Norms and mean cosines of ``result`` by groups of classes (docs/theory.md §17).

    Groups are majority/minority for two-level counts, else many/medium/few with the given
    thresholds (:func:`ucfm_svm.groups.class_groups`). The cosine sums come from the factors
    ``W``, ``H_mean`` when the result has them (``O(k d)``), else, for ``method="structured"``
    without ``--full``, from the structured closed form (``O(k q + m^2 q)``, no ``k x k`` array).
    """
    spec = result.spec
    grp = _groups.class_groups(spec.n_vec, many_above, few_below)
    cpairs = epairs = None
    if result.W is not None and result.H_mean is not None:
        cpairs = _groups.factor_pair_sums(result.W, grp)
        epairs = _groups.factor_pair_sums(result.H_mean.T, grp)
    elif result.classifier_gram is not None and result.embedding_gram is not None:
        cpairs = _groups.gram_pair_sums(result.classifier_gram, grp)
        epairs = _groups.gram_pair_sums(result.embedding_gram, grp)
    elif result.method == "structured" and result.classifier_norms is not None:
        indicator = grp.indicator(spec.k)
        left = indicator / result.classifier_norms[:, None]
        right = indicator / (np.sqrt(spec.n_vec) * result.embedding_norms)[:, None]
        cpairs, epairs = quadratic_forms(spec, left, right)
    return _groups.group_statistics(
        grp, spec.n_vec, result.classifier_norms, result.embedding_norms, cpairs, epairs
    )
