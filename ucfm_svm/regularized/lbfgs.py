"""Unconstrained L-BFGS (two-loop recursion, backtracking Armijo line search).

scipy's ``L-BFGS-B`` handles bounds; its Fortran core costs ``O(m^2 n)`` per iteration for
``m`` stored pairs, which dominated the regularization path at ``n = 2 * 10^4`` variables (3.1
of 4.4 s at k = 100, 2 lambdas; docs/regularized.md). The two-loop recursion of Nocedal and
Wright (Algorithm 7.4) costs ``O(m n)``. The problems here are unconstrained and smooth.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Armijo constant and backtracking factor of the line search.
ARMIJO, BACKTRACK = 1e-4, 0.5
#: Stop when a step lowers ``fun`` by at most this relative amount (rounding level).
FTOL = 1e-15
#: Line-search trials before the run stops (no decrease found: at rounding level).
MAX_TRIALS = 40


@dataclass(frozen=True)
class LbfgsResult:
    """End point of :func:`minimize_lbfgs`.

    Attributes
    ----------
    x, fun, grad : the last iterate, its value and gradient
    nit : iterations taken
    success : whether ``max |grad| <= gtol`` was reached, or the run stalled at rounding level
        (a relative decrease below ``FTOL``, or none at all: the analogue of L-BFGS-B's ``ftol``
        test), or the callback stopped it
    message : how the run ended
    """

    x: np.ndarray
    fun: float
    grad: np.ndarray
    nit: int
    success: bool
    message: str


def minimize_lbfgs(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    *,
    gtol: float,
    maxiter: int,
    memory: int = 10,
    callback: Callable[[np.ndarray, float], bool] | None = None,
) -> LbfgsResult:
    """Minimize a smooth ``fun`` (returning value and gradient) from ``x0``.

    The search direction is ``-H g`` with ``H`` the L-BFGS inverse-Hessian estimate from the
    last ``memory`` pairs ``(s, y)`` (initial scaling ``s^T y / y^T y``; pairs with
    ``s^T y <= 0`` are skipped); the step halves from 1 until the Armijo condition holds. Stops
    when ``max |g| <= gtol``, after ``maxiter`` iterations, when a step lowers ``fun`` by at most
    ``FTOL`` relative or no step lowers it, or when ``callback(x, f)`` returns ``True``.
    """
    x = np.array(x0, dtype=float)
    f, g = fun(x)
    pairs: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=memory)
    nit = 0
    while True:
        if float(np.max(np.abs(g))) <= gtol:
            return LbfgsResult(x, f, g, nit, True, "gradient below gtol")
        if nit >= maxiter:
            break
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(pairs):
            a = rho * float(s @ q)
            alphas.append(a)
            q -= a * y
        if pairs:
            s, y, _ = pairs[-1]
            q *= float(s @ y) / float(y @ y)
        else:
            q *= 1.0 / max(float(np.linalg.norm(g)), 1.0)
        for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
            q += (a - rho * float(y @ q)) * s
        direction = -q
        slope = float(g @ direction)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            pairs.clear()
            direction = -g / max(float(np.linalg.norm(g)), 1.0)
            slope = float(g @ direction)
        step = 1.0
        for _ in range(MAX_TRIALS):
            x_new = x + step * direction
            f_new, g_new = fun(x_new)
            if np.isfinite(f_new) and f_new <= f + ARMIJO * step * slope:
                break
            step *= BACKTRACK
        else:  # like L-BFGS-B's ftol test at ftol ~ 0: stalled where rounding dominates
            return LbfgsResult(x, f, g, nit, True, "no decrease at rounding level")
        s, y = x_new - x, g_new - g
        sy = float(s @ y)
        if sy > 1e-12 * float(np.linalg.norm(s)) * float(np.linalg.norm(y)):
            pairs.append((s, y, 1.0 / sy))
        stalled = f - f_new <= FTOL * max(abs(f), abs(f_new), 1.0)
        x, f, g = x_new, f_new, g_new
        nit += 1
        if stalled:  # L-BFGS-B's ftol test: the relative decrease is at rounding level
            return LbfgsResult(x, f, g, nit, True, "relative decrease below ftol")
        if callback is not None and callback(x, f):
            return LbfgsResult(x, f, g, nit, True, "stopped by the callback")
    return LbfgsResult(x, f, g, nit, False, "maximum number of iterations reached")
