"""Unconstrained L-BFGS (compact representation, backtracking Armijo line search).

scipy's ``L-BFGS-B`` handles bounds; its Fortran core costs ``O(m^2 n)`` per iteration for
``m`` stored pairs, which dominated the regularization path at ``n = 2 * 10^4`` variables (3.1
of 4.4 s at k = 100, 2 lambdas; docs/regularized.md). The problems here are unconstrained and
smooth. The inverse-Hessian estimate is applied in the compact form of Byrd, Nocedal and
Schnabel (1994; Nocedal and Wright, eq. 7.24), which gives the same direction as the two-loop
recursion (Algorithm 7.4) from two passes over the stored pairs, as matrix-vector products, where
the two-loop recursion makes ``4 m`` dependent vector passes: at ``n = 2 * 10^6`` (the path at
k = 1000) those passes cost as much as a gradient (benchmarks/bench_lbfgs.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular

#: Armijo constant and backtracking factor of the line search.
ARMIJO, BACKTRACK = 1e-4, 0.5
#: Stop when a step lowers ``fun`` by at most this relative amount (rounding level).
FTOL = 1e-15
#: Line-search trials before the run stops (no decrease found: at rounding level).
MAX_TRIALS = 40
#: Past the value's rounding (``past_rounding``): the slack on ``phi(t) <= phi(0)`` (relative;
#: a sum of ``n`` terms is computed to about ``eps sqrt(n)``, 2e-13 at ``n = 10^6``), the
#: approximate Wolfe constant, and the iterations without a smaller ``max |g|`` that end a run.
ROUNDING, WOLFE_DELTA, PATIENCE = 1e-12, 0.1, 50


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


class PairMemory:
    """The last ``memory`` pairs ``(s_i, y_i)`` and the inverse-Hessian estimate they define.

    With ``S = [s_0 ... s_{m-1}]``, ``Y`` likewise (oldest first), ``R`` the upper triangle of
    ``S^T Y``, ``D = diag(S^T Y)`` and ``gamma = s^T y / y^T y`` of the newest pair, the L-BFGS
    matrix is (Nocedal and Wright, eq. 7.24)

        ``H = gamma I + [S  gamma Y] [[R^-T (D + gamma Y^T Y) R^-1, -R^-T], [-R^-1, 0]]
        [S^T; gamma Y^T]``,

    so ``H g = gamma g + S p - gamma Y u`` with ``u = R^-1 S^T g`` and ``p = R^-T ((D + gamma
    Y^T Y) u - gamma Y^T g)``: the same matrix as the two-loop recursion's. The pairs sit in the
    rows ``0 .. m-1`` of two arrays, used as a ring (``order``: the rows, oldest first).

    A pair ``y = g' - g`` is pushed between ``apply(g)`` and ``apply(g')``: its products with
    the older pairs, ``S^T y = S^T g' - S^T g`` and ``Y^T y``, are differences of the products
    that the two calls compute anyway (an error ``<= 2 eps ||s_i|| ||g||`` in an entry of ``R``,
    whose diagonal ``s^T y`` is computed directly), so an iteration passes over the stored pairs
    twice: ``S^T g, Y^T g`` and the combination.
    """

    def __init__(self, size: int, memory: int) -> None:
        self.memory = memory
        self.S = np.empty((memory, size))
        self.Y = np.empty((memory, size))
        self.SY = np.zeros((memory, memory))  # SY[i, j] = s_i^T y_j (older i), by row
        self.YY = np.zeros((memory, memory))
        self.order: list[int] = []
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # S^T g, Y^T g of the last g
        self._pending: tuple[int, float, float] | None = None  # row, s^T y, y^T y

    def __len__(self) -> int:
        return len(self.order)

    def clear(self) -> None:
        """Forget every pair."""
        self.order, self._pending = [], None

    def push(self, s: np.ndarray, y: np.ndarray, sy: float) -> None:
        """Store the pair ``(s, y)`` (``sy = s^T y > 0``; ``y = g' - g`` with ``g`` the last
        vector given to :meth:`apply`); the oldest is dropped when the memory is full."""
        if self._pending is not None:
            raise RuntimeError("push: apply the new gradient before the next pair")
        row = self.order.pop(0) if len(self.order) == self.memory else len(self.order)
        self.S[row], self.Y[row] = s, y
        self._pending = (row, sy, float(y @ y))
        self.order.append(row)

    def apply(self, g: np.ndarray) -> np.ndarray:
        """``H g``; with no pairs, ``g / max(||g||, 1)``."""
        o, n = self.order, len(self.order)
        S, Y = self.S[:n], self.Y[:n]
        Sg, Yg = S @ g, Y @ g
        if self._pending is not None:
            row, sy, yy = self._pending
            old = [i for i in o if i != row]
            if old:
                last_s, last_y = self._last
                self.SY[old, row] = Sg[old] - last_s[old]
                self.YY[old, row] = self.YY[row, old] = Yg[old] - last_y[old]
            self.SY[row, row], self.YY[row, row] = sy, yy
            self._pending = None
        self._last = (Sg, Yg)
        if not o:
            return g / max(float(np.linalg.norm(g)), 1.0)
        ix = np.ix_(o, o)
        SY, YY = self.SY[ix], self.YY[ix]
        gamma = SY[-1, -1] / YY[-1, -1]
        R = np.triu(SY)
        u = solve_triangular(R, Sg[o])
        p = solve_triangular(R, np.diag(SY) * u + gamma * (YY @ u) - gamma * Yg[o], trans="T")
        coef_s, coef_y = np.empty(n), np.empty(n)
        coef_s[o], coef_y[o] = p, -gamma * u
        return gamma * g + coef_s @ S + coef_y @ Y


def minimize_lbfgs(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    *,
    gtol: float,
    maxiter: int,
    memory: int = 10,
    callback: Callable[[np.ndarray, float], bool] | None = None,
    past_rounding: bool = False,
) -> LbfgsResult:
    """Minimize a smooth ``fun`` (returning value and gradient) from ``x0``.

    The search direction is ``-H g`` with ``H`` the L-BFGS inverse-Hessian estimate from the
    last ``memory`` pairs ``(s, y)`` (:class:`PairMemory`; initial scaling ``s^T y / y^T y``;
    pairs with ``s^T y <= 0`` are skipped); the step halves from 1 until the Armijo condition
    ``phi(t) <= phi(0) + 1e-4 t phi'(0)`` holds (``phi(t) = fun(x + t d)``). Stops when ``max |g|
    <= gtol``, after ``maxiter`` iterations, when a step lowers ``fun`` by at most ``FTOL``
    relative or no step lowers it, or when ``callback(x, f)`` returns ``True``.

    With ``past_rounding``, a stall of the value (the last two tests) does not stop the run:
    where decreases of ``fun`` are below its rounding, the steps are taken by Hager and Zhang's
    approximate Wolfe test (2005), ``phi'(t) <= (2 delta - 1) phi'(0)`` (``delta = 0.1``: the
    directional derivative, computed to full relative accuracy, has not overshot; on a convex
    quadratic this is ``t <= 1.8 t*``, where ``phi(t) <= phi(0)``) with ``phi(t) <= phi(0) +
    ROUNDING |phi(0)|``, until ``max |g| <= gtol``, no step passes, or ``max |g|`` has not fallen
    for ``PATIENCE`` iterations.
    """
    x = np.array(x0, dtype=float)
    f, g = fun(x)
    pairs = PairMemory(x.size, memory)
    nit = 0
    approximate = False  # past the value's rounding: the approximate Wolfe test
    best, since = float(np.max(np.abs(g))), 0
    while True:
        size = float(np.max(np.abs(g)))
        if size <= gtol:
            return LbfgsResult(x, f, g, nit, True, "gradient below gtol")
        if approximate:
            best, since = (size, 0) if size < best else (best, since + 1)
            if since >= PATIENCE:
                return LbfgsResult(x, f, g, nit, True, "gradient stalled at rounding level")
        if nit >= maxiter:
            break
        direction = -pairs.apply(g)
        slope = float(g @ direction)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            pairs.clear()
            direction = -g / max(float(np.linalg.norm(g)), 1.0)
            slope = float(g @ direction)
        step, accepted = 1.0, False
        for _ in range(MAX_TRIALS):
            x_new = x + step * direction
            f_new, g_new = fun(x_new)
            if np.isfinite(f_new):
                if approximate:
                    accepted = (f_new <= f + ROUNDING * abs(f)
                                and float(g_new @ direction) <= (2 * WOLFE_DELTA - 1) * slope)
                else:
                    accepted = f_new <= f + ARMIJO * step * slope
            if accepted:
                break
            step *= BACKTRACK
        if not accepted:
            if past_rounding and not approximate:
                approximate = True  # the value cannot see a decrease: go by the derivative
                continue
            return LbfgsResult(x, f, g, nit, True, "no decrease at rounding level")
        s, y = x_new - x, g_new - g
        sy = float(s @ y)
        if sy > 1e-12 * float(np.linalg.norm(s)) * float(np.linalg.norm(y)):
            pairs.push(s, y, sy)
        stalled = f - f_new <= FTOL * max(abs(f), abs(f_new), 1.0)
        x, f, g = x_new, f_new, g_new
        nit += 1
        if stalled and not approximate:
            if not past_rounding:  # L-BFGS-B's ftol test: the decrease is at rounding level
                return LbfgsResult(x, f, g, nit, True, "relative decrease below ftol")
            approximate = True
        if callback is not None and callback(x, f):
            return LbfgsResult(x, f, g, nit, True, "stopped by the callback")
    return LbfgsResult(x, f, g, nit, False, "maximum number of iterations reached")
