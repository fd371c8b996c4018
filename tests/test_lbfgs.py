"""The compact L-BFGS matrix (ucfm_svm/solvers/lbfgs.py) against the two-loop recursion."""

from __future__ import annotations

import numpy as np
import pytest

from ucfm_svm.solvers.lbfgs import PairMemory, minimize_lbfgs


def two_loop(pairs: list[tuple[np.ndarray, np.ndarray]], g: np.ndarray) -> np.ndarray:
    """``H g`` by Nocedal and Wright's Algorithm 7.4 (pairs oldest first)."""
    q = g.copy()
    alphas = []
    for s, y in reversed(pairs):
        a = float(s @ q) / float(s @ y)
        alphas.append(a)
        q -= a * y
    s, y = pairs[-1]
    q *= float(s @ y) / float(y @ y)
    for (s, y), a in zip(pairs, reversed(alphas), strict=True):
        q += (a - float(y @ q) / float(s @ y)) * s
    return q


@pytest.mark.parametrize("pushes", [1, 3, 5, 6, 13])
def test_compact_matrix_is_the_two_loop_matrix(pushes: int) -> None:
    """Pairs of an iteration on a convex quadratic (``y = g' - g``, ``s^T y > 0``), before, at
    and after the ring wraps; the products with the older pairs come from differences of the
    gradients' products (:class:`PairMemory`)."""
    rng = np.random.default_rng(pushes)
    n, memory = 40, 5
    A = rng.standard_normal((n, n))
    A = A @ A.T + 0.1 * np.eye(n)
    c = rng.standard_normal(n)
    memo = PairMemory(n, memory)
    x = rng.standard_normal(n)
    memo.apply(A @ x - c)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(pushes):
        s = rng.standard_normal(n)
        y = (A @ (x + s) - c) - (A @ x - c)
        x = x + s
        memo.push(s, y, float(s @ y))
        memo.apply(A @ x - c)
        pairs = [*pairs, (s, y)][-memory:]
    g = rng.standard_normal(n)
    want = two_loop(pairs, g)
    got = memo.apply(g)
    # both are sums of O(m) terms of size ~cond * ||g||: rounding ~1e-13 relative here
    assert np.linalg.norm(got - want) <= 1e-10 * np.linalg.norm(want)
    memo.clear()
    assert len(memo) == 0
    assert np.allclose(memo.apply(g), g / max(np.linalg.norm(g), 1.0))


def test_minimizes_a_quadratic_to_gtol() -> None:
    rng = np.random.default_rng(0)
    n = 60
    A = rng.standard_normal((n, n))
    A = A @ A.T / n + np.diag(np.linspace(0.01, 10.0, n))
    b = rng.standard_normal(n)
    res = minimize_lbfgs(lambda x: (0.5 * x @ A @ x - b @ x, A @ x - b), np.zeros(n),
                         gtol=1e-6, maxiter=5000, memory=8)
    assert res.success and res.message == "gradient below gtol"
    x_star = np.linalg.solve(A, b)
    # ||x - x*|| <= ||grad|| / lambda_min(A) <= sqrt(n) max|grad| / lambda_min(A)
    tol = np.sqrt(n) * 1e-6 / np.linalg.eigvalsh(A)[0]
    assert np.linalg.norm(res.x - x_star) <= tol


def test_past_rounding_reaches_gtol_where_the_value_cannot_see_a_decrease() -> None:
    """A quadratic on top of a large constant: decreases fall below the value's rounding (1e-15
    relative) while the gradient is still 1e-6 or more; the derivative-based steps go on."""
    rng = np.random.default_rng(1)
    n = 50
    A = rng.standard_normal((n, n))
    A = A @ A.T / n + np.diag(np.linspace(0.01, 1.0, n))
    b = rng.standard_normal(n)

    def fun(x):
        return 1e6 + 0.5 * x @ A @ x - b @ x, A @ x - b

    plain = minimize_lbfgs(fun, np.zeros(n), gtol=1e-9, maxiter=5000, memory=8)
    assert plain.message != "gradient below gtol" and np.max(np.abs(plain.grad)) > 1e-8
    res = minimize_lbfgs(fun, np.zeros(n), gtol=1e-9, maxiter=5000, memory=8, past_rounding=True)
    assert res.message == "gradient below gtol"
    tol = np.sqrt(n) * 1e-9 / np.linalg.eigvalsh(A)[0]
    assert np.linalg.norm(res.x - np.linalg.solve(A, b)) <= tol
