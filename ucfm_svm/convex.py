"""Convex certificate solver (THEORY F1, F2): the only module that talks to cvxpy.

For ``d >= k - 1`` the UF-CS-SVM has the same optimum as the nuclear-norm program over the
scaled logits ``Z = Delta W H``:

- class level (collapsed, THEORY F2), ``Zbar`` in ``R^{k x k}``::

      min ||Delta^{-1} Zbar N^{1/2}||_*   s.t.  zbar_{cc} - zbar_{c'c} >= delta_c  (c' != c)

- example level, ``Z`` in ``R^{k x n}``::

      min ||Delta^{-1} Z||_*               s.t.  z_{y_i, i} - z_{c, i} >= delta_{y_i}  (c != y_i)

A solve returns a :class:`~ucfm_svm.result.Result` whose point is exactly feasible (the logits
are rescaled to meet every margin; the margins are homogeneous, so this costs at most the
solver's feasibility error), whose ``(W, H)`` is the balanced factorization
``W = U S^{1/2}``, ``Hbar = S^{1/2} V^T N^{-1/2}`` of ``A = U S V^T`` kept to ``d`` columns, and
whose lower bound is certified from the solver's dual variables by
:mod:`ucfm_svm.certificate` (not taken on trust from the solver).
"""

from __future__ import annotations

import time

import cvxpy as cp
import numpy as np

from . import certificate, geometry
from .errors import SolverError
from .result import Result
from .spec import Spec
from .validation import fail

#: Solvers tried in order when none is requested.
DEFAULT_SOLVERS = ("CLARABEL", "SCS")
LEVELS = ("class", "example")

_SOLVER_OPTIONS = {
    "CLARABEL": {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 500},
    "SCS": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000},
}


def solve_convex(spec: Spec, level: str = "class", solver: str | None = None) -> Result:
    """Solve the convex reformulation and return a certified :class:`Result`.

    Parameters
    ----------
    spec : Spec
        Needs ``spec.dim >= k - 1``.
    level : {"class", "example"}
        Class level has ``k x k`` variables whatever ``n``; example level has ``k x n``.
    solver : {"CLARABEL", "SCS"} or None
        Backend; by default Clarabel, then SCS if Clarabel fails.

    Raises
    ------
    SpecError
        ``d < k - 1``, an unknown level or solver.
    SolverError
        No backend reached an (even inaccurate) solution; the message names the statuses.
    """
    spec.require_certifiable("convex")
    if level not in LEVELS:
        raise fail("level", "one of " + ", ".join(LEVELS), level)
    solvers = DEFAULT_SOLVERS if solver is None else (_check_solver(solver),)
    labels = np.arange(spec.k) if level == "class" else spec.labels
    weights = np.sqrt(spec.n_vec) if level == "class" else np.ones(spec.n)

    start = time.perf_counter()
    problem, Z, constraint = _nuclear_program(spec, labels, weights)
    attempts = []
    for name in solvers:
        try:
            problem.solve(solver=name, **_SOLVER_OPTIONS[name])
        except cp.error.SolverError as exc:
            attempts.append(f"{name}: {_first_sentence(exc)}")
            continue
        if problem.status in cp.settings.SOLUTION_PRESENT and Z.value is not None:
            break
        attempts.append(f"{name}: status {problem.status}")
    else:
        raise SolverError(
            f"The convex solve ({level} level, k={spec.k}, n={spec.n}) failed: "
            + "; ".join(attempts)
            + ". Try another backend (--solver SCS or CLARABEL), "
            + ("the class level (--level class), " if level == "example" else "")
            + "or counts and hyperparameters of moderate ratio."
        )
    seconds = time.perf_counter() - start

    lam = np.asarray(constraint.dual_value, dtype=float)
    if level == "class":
        lower = certificate.class_lower_bound(spec, lam)
    else:
        lower = certificate.example_lower_bound(spec, lam, labels)
    W, H = _feasible_factors(spec, np.asarray(Z.value, dtype=float), labels, weights)
    if level == "class":
        H_mean = H / weights[None, :]
        extra = {}
    else:
        H_mean = geometry.class_means(H, labels, spec.k)
        extra = {"nc1": geometry.nc1(H, labels, spec.k)}
    inaccurate = problem.status != cp.OPTIMAL
    return Result.from_point(
        spec,
        W,
        H_mean,
        method="convex",
        level=level,
        lower_bound=lower,
        seconds=seconds,
        solver=name,
        inaccurate=inaccurate,
        message=(
            f"{name} reported {problem.status}; numbers are best effort" if inaccurate else ""
        ),
        **extra,
    )


def _check_solver(solver: str) -> str:
    name = str(solver).upper()
    if name not in _SOLVER_OPTIONS:
        raise fail("solver", "one of " + ", ".join(_SOLVER_OPTIONS), solver)
    return name


def _nuclear_program(
    spec: Spec, labels: np.ndarray, weights: np.ndarray
) -> tuple[cp.Problem, cp.Variable, cp.Constraint]:
    """The nuclear-norm program over ``Z`` (k x m) with column ``i`` labelled ``labels[i]``."""
    k, m = spec.k, labels.size
    onehot = np.zeros((k, m))
    onehot[labels, np.arange(m)] = 1.0
    mask = 1.0 - onehot
    Z = cp.Variable((k, m))
    true = cp.sum(cp.multiply(onehot, Z), axis=0, keepdims=True)
    gaps = np.ones((k, 1)) @ true - Z
    rhs = mask * spec.delta[labels][None, :]
    constraint = cp.multiply(mask, gaps) >= rhs
    A = cp.multiply(np.outer(1.0 / spec.Delta, weights), Z)
    return cp.Problem(cp.Minimize(cp.normNuc(A)), [constraint]), Z, constraint


def _feasible_factors(
    spec: Spec, Z: np.ndarray, labels: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced factors of ``A = Delta^{-1} Z diag(weights)`` kept to ``d`` columns, rescaled so
    that every margin holds exactly. Returns ``W`` (k x d) and ``G`` (d x m), ``G = H diag(w)``."""
    A = Z / spec.Delta[:, None] * weights[None, :]
    W, G = geometry.balanced_factors(A, spec.dim)
    logits = spec.Delta[:, None] * (W @ (G / weights[None, :]))
    ratio = geometry.min_margin_ratio(spec, logits, labels)
    if not ratio > 0:
        raise SolverError(
            "The convex solve returned logits that violate the margins beyond repair "
            f"(smallest margin ratio {ratio:.3g}). Try another backend (--solver)."
        )
    if ratio < 1:
        scale = np.sqrt(1.0 / ratio)
        W, G = W * scale, G * scale
    return W, G


# --- block subproblems of the non-convex solver (THEORY F7) -------------------------------------
class BlockSteps:
    """Exact block minimizations of the UF-CS-SVM, compiled once and re-solved (cvxpy DPP).

    With columns ``h_i`` (``i = 1..m``) labelled ``labels[i]`` and scaled logits
    ``Z = Delta W H``, the two blocks are

    - W-step, for fixed ``H`` (d x m)::

          min_W 1/2 ||W||_F^2   s.t.  z_{y_i, i} - z_{c, i} >= delta_{y_i}   (all i, c != y_i)

    - H-step, for fixed ``W`` (k x d), one QP per class ``c``::

          min_h 1/2 ||h||^2     s.t.  (Delta_c w_c - Delta_{c'} w_{c'})^T h >= delta_c   (c' != c)

      Every example of class ``c`` has this same QP whatever its count ``n_c`` (the count only
      scales the objective), so the step returns class-mean embeddings ``Hbar`` (d x k); the
      ``k`` QPs are separable and solved as one program. This is why alternating these steps
      cannot weigh the classes by ``n_c`` and stalls (THEORY F7).

    Parameters
    ----------
    spec : Spec
        Any ``dim >= 1``.
    labels : (m,) int array
        Class of each column the W-step sees (``arange(k)`` at the class level).
    """

    def __init__(self, spec: Spec, labels: np.ndarray) -> None:
        self.spec = spec
        self.labels = np.asarray(labels)
        k, d, m = spec.k, spec.dim, self.labels.size
        self._H = cp.Parameter((d, m))
        self._W_var = cp.Variable((k, d))
        z = spec.Delta[:, None] * np.ones((1, d))
        self._w_problem = cp.Problem(
            cp.Minimize(0.5 * cp.sum_squares(self._W_var)),
            [_margin_constraint(spec, cp.multiply(z, self._W_var) @ self._H, self.labels)],
        )
        self._W = cp.Parameter((k, d))
        self._H_var = cp.Variable((d, k))
        self._h_problem = cp.Problem(
            cp.Minimize(0.5 * cp.sum_squares(self._H_var)),
            [_margin_constraint(spec, self._W @ self._H_var, np.arange(k))],
        )

    def classifier_step(self, H: np.ndarray) -> np.ndarray:
        """The W-step: minimal-norm ``W`` (k x d) meeting every margin for the columns ``H``."""
        self._H.value = np.asarray(H, dtype=float)
        return _solved(self._w_problem, self._W_var, "W-step (classifiers for fixed embeddings)")

    def embedding_step(self, W: np.ndarray) -> np.ndarray:
        """The H-step: minimal-norm class-mean embeddings ``Hbar`` (d x k) for classifiers ``W``."""
        self._W.value = self.spec.Delta[:, None] * np.asarray(W, dtype=float)
        return _solved(self._h_problem, self._H_var, "H-step (embeddings for fixed classifiers)")


def _margin_constraint(spec: Spec, Z: cp.Expression, labels: np.ndarray) -> cp.Constraint:
    """``z_{y_i, i} - z_{c, i} >= delta_{y_i}`` for every column ``i`` of ``Z`` and ``c != y_i``."""
    k, m = spec.k, labels.size
    onehot = np.zeros((k, m))
    onehot[labels, np.arange(m)] = 1.0
    mask = 1.0 - onehot
    true = cp.sum(cp.multiply(onehot, Z), axis=0, keepdims=True)
    return cp.multiply(mask, np.ones((k, 1)) @ true - Z) >= mask * spec.delta[labels][None, :]


def _solved(problem: cp.Problem, variable: cp.Variable, what: str) -> np.ndarray:
    """Solve a block QP with Clarabel, then SCS; the variable's value, or SolverError."""
    attempts = []
    for name in DEFAULT_SOLVERS:
        try:
            problem.solve(solver=name)
        except cp.error.SolverError as exc:
            attempts.append(f"{name}: {_first_sentence(exc)}")
            continue
        if problem.status in cp.settings.SOLUTION_PRESENT and variable.value is not None:
            return np.asarray(variable.value, dtype=float)
        attempts.append(f"{name}: status {problem.status}")
    raise SolverError(f"The {what} failed: " + "; ".join(attempts))


def _first_sentence(exc: Exception) -> str:
    """cvxpy's failure text without its advice for Python users ("solve with verbose=True")."""
    return str(exc).split(". ")[0].rstrip(".")
