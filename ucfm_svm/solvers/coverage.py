"""Certificates that cover the geometry of numerical solves (docs/theory.md §10).

A duality gap certifies the objective, not the point: a class with a tiny count (or a tiny
margin, or a huge scale) contributes little to ``||A||_*``, so a numerical solve can reach a
relative gap of 1e-7 with that class's embedding norm 70 times off. For ``d >= k - 1`` the
optimum is unique whenever the closed form's multipliers are all positive (docs/theory.md §10:
every optimum is then all-tight, and two all-tight optima differ by ``u r^T`` with
``u = Delta^{-1} 1`` orthogonal to their common column space, so ``r = 0``). The closed form
evaluated by :mod:`ucfm_svm.solvers.structured` (certified by its own exact dual, accurate to a
few ulps per class) is then the geometry of the optimum, and :func:`cover` compares a numerical
result's norms and cosines with it: within :data:`~ucfm_svm.result.GEOMETRY_RTOL` the result
stays :data:`~ucfm_svm.result.OPTIMAL`, otherwise its status becomes
:data:`~ucfm_svm.result.GEOMETRY_NOT_CERTIFIED`. The numerical route keeps its own objective
certificate (from its own duals); only the claim about the geometry is checked against the
exact reference.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import geometry
from ..errors import SolverError
from ..result import GEOMETRY_NOT_CERTIFIED, GEOMETRY_RTOL, OPTIMAL, Result
from .structured import structured_solution

#: Largest k at which the reference includes the Grams (``O(k^3)``); above, norms only.
GRAM_MAX_K = 2000


def geometry_error(result: Result, reference: Result) -> tuple[float, str]:
    """Largest relative norm error and absolute cosine error of ``result`` against
    ``reference``, and a short description of where it is."""
    worst, where = 0.0, "none"
    for name in ("classifier", "embedding"):
        got = getattr(result, f"{name}_norms")
        ref = getattr(reference, f"{name}_norms")
        if got is None or ref is None:
            continue
        err = np.abs(got - ref) / np.maximum(np.abs(ref), np.finfo(float).tiny)
        c = int(np.argmax(err))
        if err[c] > worst:
            worst, where = float(err[c]), f"{name} norm of class {c}"
        got_g, ref_g = getattr(result, f"{name}_gram"), getattr(reference, f"{name}_gram")
        if got_g is not None and ref_g is not None:
            cos_err = np.abs(geometry.cosines_from_gram(got_g) - geometry.cosines_from_gram(ref_g))
            i, j = np.unravel_index(int(np.argmax(cos_err)), cos_err.shape)
            if cos_err[i, j] > worst:
                worst, where = float(cos_err[i, j]), f"{name} cosine of classes {i}, {j}"
    return worst, where


def cover(result: Result) -> Result:
    """``result`` with its status checked for the geometry (see the module text).

    Results that are not :data:`OPTIMAL`, or whose dimension is below ``k - 1`` (no
    certificate), are returned unchanged. Otherwise the exact reference is computed and the
    status stays :data:`OPTIMAL` only if the norms and cosines agree with it to
    :data:`GEOMETRY_RTOL`; the message states the error either way.
    """
    spec = result.spec
    if result.status != OPTIMAL or spec.dim < spec.k - 1:
        return result
    grams = result.classifier_gram is not None and spec.k <= GRAM_MAX_K
    try:
        reference = structured_solution(spec, full=grams)
    except SolverError as exc:
        reference, reason = None, str(exc)
    else:
        reason = reference.message
    return cover_against(result, reference, reason)


def cover_against(
    result: Result,
    reference: Result | None,
    reason: str,
    source: str = "closed form certified by its own dual, docs/theory.md §10",
) -> Result:
    """``result`` with its status checked against ``reference``, the unique optimum when its
    status is :data:`OPTIMAL` (``None`` or another status: no exact reference, for ``reason``);
    ``source`` says in the message what the reference is."""
    if reference is None or reference.status != OPTIMAL:
        return dataclasses.replace(
            result,
            status=GEOMETRY_NOT_CERTIFIED,
            message=f"{result.message}; geometry not certified: no exact reference ({reason})",
        )
    error, where = geometry_error(result, reference)
    if error <= GEOMETRY_RTOL:
        return dataclasses.replace(
            result,
            message=f"{result.message}; geometry within {error:.1e} of the exact optimum "
            f"({source})",
        )
    return dataclasses.replace(
        result,
        status=GEOMETRY_NOT_CERTIFIED,
        message=f"{result.message}; but the geometry is off the exact optimum by {error:.2e} "
        f"({where}; tolerance {GEOMETRY_RTOL:g}): classes of small weight barely move the "
        "objective, so its gap does not pin them; --method auto gives the exact geometry",
    )
