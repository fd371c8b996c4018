"""One public entry point, :func:`solve`, that dispatches to each method.

Like :func:`scipy.optimize.minimize`, the method is chosen by name and every method returns the
same :class:`~ucfm_svm.result.Result`. The default, ``"auto"``, runs the fastest route that
certifies the objective and the geometry at this size (:func:`choose_method`,
docs/theory.md §10).
"""

from __future__ import annotations

import dataclasses
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
from .variants.routes import solve_variant

#: Largest k at which ``auto`` builds the Grams (``structured --full``, ``O(k^3)``: about
#: 0.05 s at k = 500); above it, per-class norms, objective and certificate in ``O(k)`` memory.
AUTO_FULL_MAX_K = 500
#: Largest k at which ``auto`` runs the non-convex solve when ``d < k - 1`` (measured: k = 100
#: takes over 60 s on 2 cores).
AUTO_NONCONVEX_MAX_K = 100
#: Methods whose certificate comes from a numerical solver's gap: their geometry is checked
#: against the exact optimum by :func:`ucfm_svm.solvers.coverage.cover` (docs/theory.md §10).
NUMERICAL = ("convex", "convex_grouped", "nonconvex")


def choose_method(spec: Spec, level: str = "class") -> tuple[str, dict[str, object], str]:
    """The route ``auto`` runs for ``spec`` at ``level``: ``(method, options, reason)``.

    The rule (docs/theory.md §10): the fastest route that certifies both the objective and the
    geometry at this size, and never one that cannot finish on 2 cores and 24 GiB.

    - ``d >= k - 1``, either level: ``structured`` (the closed form without a k x k matrix,
      certified by its own exact dual; ``O(k)`` memory, milliseconds at k = 8142), with
      ``full=True`` (``W``, ``H``, the Grams) for ``k <= AUTO_FULL_MAX_K``; at the example
      level the collapsed point with the certificate spread over the examples.
    - ``d < k - 1``: nothing certifies (the bound is valid but not tight); ``nonconvex`` gives a
      feasible point and that bound for ``k <= AUTO_NONCONVEX_MAX_K``; above, ``SpecError``.
    """
    if level not in ("class", "example"):
        raise fail("level", "one of class, example", level)
    if not spec.certifiable:
        if spec.k > AUTO_NONCONVEX_MAX_K:
            raise fail(
                "dim",
                f"at least k - 1 = {spec.k - 1} at k = {spec.k} (with d < k - 1 only the "
                "non-convex solve applies, it cannot certify, and it does not finish above "
                f"k = {AUTO_NONCONVEX_MAX_K})",
                spec.dim,
            )
        return (
            "nonconvex",
            {"level": level},
            f"d = {spec.dim} < k - 1 = {spec.k - 1}: not certifiable (the convex bound is not "
            "tight), so the non-convex solve runs and reports a feasible point with its bound",
        )
    full = spec.k <= AUTO_FULL_MAX_K
    grams = (
        " (with the Grams)"
        if full
        else f"; norms only above k = {AUTO_FULL_MAX_K}, --full adds the Grams"
    )
    where = ", at the example level without a k x n matrix" if level == "example" else ""
    return (
        "structured",
        {"level": level, "full": full},
        "the structured closed form, certified by its own dual: the fastest exact "
        f"route at every k{grams}{where}",
    )


def solve_auto(spec: Spec, level: str = "class", full: bool | None = None) -> Result:
    """Solve with the route :func:`choose_method` picks; the message says which and why.

    ``full`` overrides the size rule for the Grams of the structured route.
    """
    method, options, reason = choose_method(spec, level)
    if full is not None:
        if method != "structured":
            raise fail("full", "left unset when d < k - 1 (auto runs nonconvex)", full)
        options["full"] = full
    result = solve(spec, method, **options)
    return dataclasses.replace(result, message=f"auto chose {method}: {reason}; {result.message}")


#: Methods by name. Each takes the specification and keyword options and returns a Result.
METHODS: dict[str, Callable[..., Result]] = {
    "auto": solve_auto,
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


def solve(spec: Spec, method: str = "auto", **options: object) -> Result:
    """Solve the UF-CS-SVM of ``spec`` with ``method``.

    Parameters
    ----------
    spec : Spec
    method : str
        A key of :data:`METHODS`: ``"auto"`` (the default: :func:`choose_method`; options
        ``level``, ``full``), ``"convex"`` (options ``level``, ``solver``), ``"nonconvex"``
        (options ``level``, ``restarts``, ``seed``, ``alternations``, ``start``), ``"theory"``
        (closed form certified by its dual; option ``fallback``), ``"structured"`` (the closed
        form at large k, options ``level``, ``full``), ``"convex_grouped"`` (class level over
        groups of identical classes, option ``solver``).
    **options
        Passed to the method; an option the method does not have raises ``SpecError``.

    A spec with ``bias="free"`` or ``features="nonnegative"`` goes to
    :func:`ucfm_svm.variants.routes.solve_variant` (methods ``theory``, ``convex``,
    ``nonconvex``; docs/theory.md §11, §12).
    The results of :data:`NUMERICAL` methods go through
    :func:`ucfm_svm.solvers.coverage.cover`: they stay ``"optimal"`` only if their geometry
    agrees with the exact optimum to ``GEOMETRY_RTOL``.
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
    return METHODS[method](spec, **options)  # NUMERICAL ones cover their geometry themselves


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
    There are none when a classifier is zero (the regularized minimizer past its vanishing
    point).
    """
    spec = result.spec
    grp = _groups.class_groups(spec.n_vec, many_above, few_below)
    cpairs = epairs = None
    zero = result.classifier_norms is not None and not (
        np.all(result.classifier_norms > 0) and np.all(result.embedding_norms > 0)
    )
    if not zero:  # a zero vector (W = H = 0 past the vanishing point) has no cosines
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
