"""The geometry of the variants' numerical routes checked against the exact optimum
(docs/theory.md §11 "Uniqueness", §12 "Uniqueness"; the paper's model: §10.5).

A relative gap of 1e-9 certifies the objective, not the point: the light classes' geometry can
still be ~sqrt(gap) off. Both variants have a unique optimum (Grams, and ``b`` in its gauge)
wherever their default route certifies: the non-negative closed form always (§12), the
free-bias closed form or its polished convex fallback when
:func:`ucfm_svm.variants.bias.unique_optimum` holds (§11). :func:`cover` compares a route's
norms and cosines with that reference
(:func:`ucfm_svm.solvers.coverage.cover_against`): within ``GEOMETRY_RTOL`` the route stays
``optimal``, otherwise its status becomes ``objective certified, geometry not``.
"""

from __future__ import annotations

from ..errors import SolverError, SpecError
from ..result import OPTIMAL, Result
from ..solvers.coverage import cover_against
from .bias import solve_bias_theory
from .nonnegative import solve_nonnegative_theory


def cover(result: Result) -> Result:
    """``result`` (an ``optimal`` numerical solve of a variant) with its geometry checked
    against the reference optimum of its model (module text); other results unchanged."""
    if result.status != OPTIMAL:
        return result
    spec = result.spec
    try:
        if spec.features == "nonnegative":
            reference = solve_nonnegative_theory(spec)
        else:
            reference = solve_bias_theory(spec)
    except (SolverError, SpecError) as exc:
        reference, reason = None, str(exc)
    else:
        reason = reference.message
    source = f"{reference.solver if reference else 'reference'}, unique, docs/theory.md §11, §12"
    return cover_against(result, reference, reason, source)
