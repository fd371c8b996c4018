"""The tight-margin reduction of the class-level UF-CS-SVM: the embeddings as a function of W.

With ``d = k - 1`` and every margin tight, the class means are fixed by the classifiers
(docs/theory.md §18). Write ``S = Delta W`` (k x d, rows ``s_c = Delta_c w_c``). The margins of
class ``c`` are all tight iff ``(s_c - s_{c'})^T hbar_c = delta_c`` for every ``c' != c``, i.e.::

    S hbar_c = beta_c 1 + delta_c e_c        for some scalar beta_c.

When ``S`` has full column rank, its range is the hyperplane orthogonal to
``nu = (I - S S^+) 1`` (``nu != 0`` unless ``1`` lies in the range, where no point has all
margins tight), and ``1^T nu = ||nu||^2``. The right-hand side lies in the range iff
``beta_c = -delta_c nu_c / ||nu||^2``, and then ``hbar_c`` is unique::

    Hbar(W) = C^{-1} (S^T - (S^T 1) nu^T / ||nu||^2) diag(delta),      C = S^T S.

The reduced cost ``f(W) = 1/2 ||W||_F^2 + 1/2 sum_c n_c ||hbar_c(W)||^2`` is the cost of a
feasible point for every ``W``, so ``f >= `` the optimum; it equals it at the optimal ``W`` when
every margin is tight there (every optimum seen: docs/theory.md §4, §10), so minimizing ``f``
over ``W`` (unconstrained, ``k d`` variables, no penalty, no multiplier rounds) solves the SVM.
Its gradient follows from the Lagrangian of the equality-constrained H-step (``Hbar(W)`` solves
``min sum_c n_c ||hbar_c||^2 / 2`` s.t. the tight margins, a square system)::

    grad f(W) = W - diag(Delta) Lam Hbar^T,
    Lam = (I - nu 1^T / ||nu||^2) S C^{-1} Hbar N,

where ``Lam`` (k x k, columns summing to zero) holds the multipliers of the tight margins,
``lam[c', c] = -Lam[c', c]`` for the constraint ``zbar_{cc} - zbar_{c'c} >= delta_c``: the
KKT multipliers of the point, which :mod:`ucfm_svm.solvers.certificate` turns into a certified
lower bound. One evaluation costs a Cholesky factorization of ``C`` and a few ``k x d x k``
products (``O(k^3)``, ``O(k^2)`` memory). The problem keeps the gauge ``W -> W Q`` (``Q``
orthogonal: ``f`` is invariant), which L-BFGS does not mind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve

from ..spec import Spec
from .lbfgs import minimize_lbfgs

#: Stored pairs of the reduced L-BFGS.
MEMORY = 20
#: Largest number of L-BFGS iterations of one reduced solve (measured: 40 to 60 from a random
#: start for the long tails k = 100 to 1000; up to ~1000 for LDT gamma = -1, STEP R = 1000).
MAX_ITERATIONS = 5000
#: The run stops when ``max |grad f| <= GRADIENT_FLOOR max |W|``: the gradient's rounding floor
#: is ~1e-14 of ``max |W|`` (measured: long tails k = 300 and 1000, ratio 256, where it is
#: reached after ~70 iterations and the next ~150 only creep along it).
GRADIENT_FLOOR = 1e-13
#: ``||nu||^2 / k`` below which ``1`` counts as in the range of ``S`` (no tight point).
DEGENERATE = 1e-14


@dataclass(frozen=True)
class TightPoint:
    """The tight point of some ``W``: the class means and the multipliers of its margins."""

    #: Classifiers (k x d).
    W: np.ndarray
    #: Class means ``Hbar(W)`` (d x k), every margin tight.
    H: np.ndarray
    #: ``lam[c', c]`` (k x k, zero diagonal): multipliers of the tight margins.
    multipliers: np.ndarray
    #: The reduced cost ``f(W)``.
    cost: float
    #: Its gradient (k x d).
    gradient: np.ndarray


def tight_point(spec: Spec, W: np.ndarray) -> TightPoint | None:
    """The tight point of ``W`` (k x (k - 1)), or ``None`` where it does not exist (``S``
    rank-deficient or ``1`` in its range). The formulas are those of the module text."""
    Delta, delta, n = spec.Delta, spec.delta, spec.n_vec
    S = Delta[:, None] * W
    try:
        factor = cho_factor(S.T @ S)
    except LinAlgError:
        return None
    column_sum = S.sum(axis=0)
    nu = 1.0 - S @ cho_solve(factor, column_sum)
    nu2 = float(nu @ nu)
    if not nu2 > DEGENERATE * spec.k:
        return None
    H = cho_solve(factor, (S.T - np.outer(column_sum, nu / nu2)) * delta[None, :])
    SX = S @ cho_solve(factor, H * n[None, :])
    Lam = SX - np.outer(nu / nu2, SX.sum(axis=0))
    gradient = W - Delta[:, None] * (Lam @ H.T)
    cost = 0.5 * (float(np.sum(W * W)) + float(np.sum(H * H * n[None, :])))
    multipliers = -Lam
    np.fill_diagonal(multipliers, 0.0)
    return TightPoint(W, H, multipliers, cost, gradient)


@dataclass(frozen=True)
class TightSolve:
    """Outcome of :func:`minimize_tight`."""

    point: TightPoint
    iterations: int
    message: str


def minimize_tight(
    spec: Spec,
    W0: np.ndarray,
    maxiter: int = MAX_ITERATIONS,
    callback: Callable[[float], None] | None = None,
) -> TightSolve:
    """Minimize the reduced cost ``f(W)`` from ``W0`` (k x (k - 1)) by L-BFGS; ``callback``
    gets the cost after each iteration (a progress bar).

    The run goes on past the value's rounding (:func:`ucfm_svm.solvers.lbfgs.minimize_lbfgs`
    with ``past_rounding``): the classes of small weight barely move ``f``, so a stop when
    ``f`` stalls leaves their geometry 1e-5 off (LDT gamma = -1, STEP R = 1000) where the
    gradient, exact to rounding, still points the way. It ends when the gradient reaches
    :data:`GRADIENT_FLOOR` or stops falling.

    Raises
    ------
    ValueError
        ``W0`` has no tight point (``S`` rank-deficient or ``1`` in its range).
    """
    shape = W0.shape
    last: dict[str, TightPoint] = {}

    def fun(w: np.ndarray) -> tuple[float, np.ndarray]:
        point = tight_point(spec, w.reshape(shape))
        if point is None:
            return np.inf, np.zeros_like(w)
        last["point"] = point
        return point.cost, point.gradient.ravel()

    def report(w: np.ndarray, cost: float) -> bool:
        if callback is not None:
            callback(cost)
        point = last["point"]
        if not np.array_equal(point.W.ravel(), w):  # the accepted point was not the last tried
            point = tight_point(spec, w.reshape(shape))
        return bool(np.max(np.abs(point.gradient)) <= GRADIENT_FLOOR * np.max(np.abs(point.W)))

    if tight_point(spec, W0) is None:
        raise ValueError("the start has no tight point")
    res = minimize_lbfgs(fun, W0.ravel(), gtol=0.0, maxiter=maxiter, memory=MEMORY,
                         callback=report, past_rounding=True)
    point = tight_point(spec, res.x.reshape(shape))
    assert point is not None  # the L-BFGS only accepts steps of finite cost
    message = "gradient at rounding" if res.message == "stopped by the callback" else res.message
    return TightSolve(point, res.nit, message)
