"""Convex certificate solver (docs/theory.md §2, §3): the only module that talks to cvxpy.

For ``d >= k - 1`` the UF-CS-SVM has the same optimum as the nuclear-norm program over the
scaled logits ``Z = Delta W H``:

- class level (collapsed, docs/theory.md §3), ``Zbar`` in ``R^{k x k}``::

      min ||Delta^{-1} Zbar N^{1/2}||_*   s.t.  zbar_{cc} - zbar_{c'c} >= delta_c  (c' != c)

- example level, ``Z`` in ``R^{k x n}``::

      min ||Delta^{-1} Z||_*               s.t.  z_{y_i, i} - z_{c, i} >= delta_{y_i}  (c != y_i)

A solve returns a :class:`~ucfm_svm.result.Result` whose point is exactly feasible (the logits
are rescaled to meet every margin; the margins are homogeneous, so this costs at most the
solver's feasibility error), whose ``(W, H)`` is the balanced factorization
``W = U S^{1/2}``, ``Hbar = S^{1/2} V^T N^{-1/2}`` of ``A = U S V^T`` kept to ``d`` columns, and
whose lower bound is certified from the solver's dual variables by
:mod:`ucfm_svm.solvers.certificate` (not taken on trust from the solver).
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import TYPE_CHECKING

import numpy as np

from .. import geometry
from ..errors import SolverError, TooLargeError
from ..result import Result
from ..spec import Spec
from ..validation import fail
from . import certificate

if TYPE_CHECKING:  # cvxpy (1.5 s to import) is imported by the functions that build programs
    import cvxpy as cp

#: Backends of the block QPs (the programs of :func:`solve_convex` choose theirs by size,
#: :func:`default_solvers`).
DEFAULT_SOLVERS = ("CLARABEL", "SCS")
LEVELS = ("class", "example")
#: Class-level programs kept compiled (one per ``k``, :func:`_class_program`).
CLASS_PROGRAM_CACHE = 8

#: Memory a cvxpy program may take: 16 GiB of the 24 GiB machine (headroom for the rest).
MEMORY_BUDGET = 16 * 2**30
#: Estimated seconds above which a cvxpy program is refused (it would not finish in a session).
TIME_BUDGET = 1800.0


def program_size(k: int, m: int) -> int:
    """Side ``p = k + m`` of the semidefinite block cvxpy builds for ``||A||_*`` with ``A``
    ``k x m`` (``m = k`` at the class level, ``n`` at the example level, ``2 g`` grouped)."""
    return k + m


def estimate(k: int, m: int, solver: str, level: str = "class") -> tuple[float, float]:
    """Estimated peak memory (bytes) and time (seconds) of the nuclear-norm program.

    cvxpy turns ``||A||_*`` (``A`` ``k x m``) into a PSD cone of side ``p = k + m``, i.e.
    ``p (p + 1) / 2`` scalar entries. Clarabel factors a KKT matrix with a dense block over
    that cone: ``O(p^4)`` memory, ``O(p^5)`` time over its iterations. Calibrated on this
    2-core machine (class level, long-tailed counts, Clarabel, extra peak RSS): k = 20, 30, 40,
    50 took 40, 178, 546, 1313 MB (``13.4 p^4`` bytes within 3 %) and 1.6, 11, 45, 132 s under a
    load of about 4 (``132 (p / 100)^5`` s); the example-level counts 50,50,5,5 (``p = 114``)
    predict 2.26 GB against 2.3 GB measured. SCS projects onto the cone with one dense
    eigendecomposition of side ``p`` per iteration: ``O(p^2)`` memory (a few ``p x p``
    arrays plus the sparse constraints) and ``O(p^3)`` per iteration: example-level STEP
    counts 50,50,5,5 / 100,100,10,10 / 200,200,20,20 (``p`` = 114, 224, 444) took 2.6, 3.4 and
    14 s (compilation included, load about 6) and 90, 130, 290 MB of peak RSS above the
    imports, all to a relative gap below 2e-9: ``2 + 1.3e-7 p^3`` s and ``1200 p^2`` bytes.
    The class level needs far more iterations (weights ``sqrt(n_c)`` spread the problem):
    CIFAR-100-LT counts (k = 100, ``p = 200``) took SCS 99 s, so ``level="class"`` uses
    ``1.2e-5 p^3`` s.
    """
    p = float(program_size(k, m))
    if solver == "CLARABEL":
        return 13.4 * p**4 + 50e6, 132.0 * (p / 100.0) ** 5
    return 1200.0 * p**2 + 50e6, 2.0 + (1.2e-5 if level == "class" else 1.3e-7) * p**3


def check_fits(
    k: int, m: int, solvers: tuple[str, ...], what: str, alternative: str, level: str = "class"
) -> None:
    """Raise :class:`~ucfm_svm.errors.TooLargeError` (exit 2) before building the program if
    no backend of ``solvers`` fits :data:`MEMORY_BUDGET` and :data:`TIME_BUDGET`
    (:func:`estimate`); ``alternative`` names the route that will work."""
    estimates = {name: estimate(k, m, name, level) for name in solvers}
    if any(mem <= MEMORY_BUDGET and sec <= TIME_BUDGET for mem, sec in estimates.values()):
        return
    text = ", ".join(
        f"{name} about {_bytes(mem)} and {sec:.0f} s" for name, (mem, sec) in estimates.items()
    )
    raise TooLargeError(
        f"The {what} is too large for this machine: {text} (a PSD cone of side "
        f"{program_size(k, m)}; limits {_bytes(MEMORY_BUDGET)} and {TIME_BUDGET:.0f} s); "
        f"use {alternative}."
    )


def _bytes(value: float) -> str:
    """``value`` bytes in GiB, TiB or MiB."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value / 2**20:.3g} MiB"


def default_solvers(k: int, m: int, level: str = "class") -> tuple[str, ...]:
    """Backends tried in turn when none is requested: Clarabel then SCS, unless Clarabel's
    estimate exceeds SCS's (example level from a few dozen examples: counts 50,50,5,5 took
    Clarabel over 120 s and 2.3 GB, SCS 0.34 s) or does not fit; then SCS first."""
    clarabel, scs = estimate(k, m, "CLARABEL", level), estimate(k, m, "SCS", level)
    if clarabel[1] <= max(scs[1], 5.0) and clarabel[0] <= MEMORY_BUDGET:
        return ("CLARABEL", "SCS")
    return ("SCS", "CLARABEL")


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
        Backend; by default the faster by the size estimate (:func:`default_solvers`), then the
        other if it fails.

    Raises
    ------
    SpecError
        ``d < k - 1``, an unknown level or solver; :class:`~ucfm_svm.errors.TooLargeError` (a
        ``SpecError``) when no backend fits memory and time (:func:`check_fits`), before any
        program is built.
    SolverError
        No backend reached an (even inaccurate) solution; the message names the statuses.
    """
    spec.require_certifiable("convex")
    if level not in LEVELS:
        raise fail("level", "one of " + ", ".join(LEVELS), level)
    m = spec.k if level == "class" else spec.n
    solvers = default_solvers(spec.k, m, level) if solver is None else (_check_solver(solver),)
    check_fits(
        spec.k,
        m,
        solvers,
        f"convex program at the {level} level (k={spec.k}, n={spec.n})",
        "--method structured"
        + (" --level example" if level == "example" else "")
        + " (or auto): the same certified optimum in milliseconds",
        level,
    )
    import cvxpy as cp  # after the size check: 1.5 s

    labels = np.arange(spec.k) if level == "class" else spec.labels
    weights = np.sqrt(spec.n_vec) if level == "class" else np.ones(spec.n)

    start = time.perf_counter()
    problem, Z, constraint = _nuclear_program(spec, labels, weights)
    name, failures = _run_backends(problem, Z, solvers)
    if name is None:
        raise SolverError(
            f"The convex solve ({level} level, k={spec.k}, n={spec.n}) failed: "
            + failures
            + (
                " (the problem is always feasible for d >= k - 1: the backend lost accuracy)"
                if "infeasible" in failures
                else ""
            )
            + ". Try another backend (--solver SCS or CLARABEL), "
            + ("the class level (--level class), " if level == "example" else "")
            + "the closed form (--method structured, exact at any spread of counts, scales and "
            "margins), or counts and hyperparameters of moderate ratio."
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
    return covered(Result.from_point(
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
    ))


def covered(result: Result) -> Result:
    """``result`` as :func:`ucfm_svm.solvers.coverage.cover` leaves it: "optimal" only if its
    geometry agrees with the exact optimum (docs/theory.md §10). Every public numerical solver
    returns through it, so that a direct call never claims a geometry a duality gap cannot
    certify (a class of tiny scale barely moves the objective)."""
    from .coverage import cover  # coverage imports structured, which imports this module

    return cover(result)


def _check_solver(solver: str) -> str:
    name = str(solver).upper()
    if name not in _SOLVER_OPTIONS:
        raise fail("solver", "one of " + ", ".join(_SOLVER_OPTIONS), solver)
    return name


def _nuclear_program(
    spec: Spec, labels: np.ndarray, weights: np.ndarray
) -> tuple[cp.Problem, cp.Variable, cp.Constraint]:
    """The nuclear-norm program over ``Z`` (k x m) with column ``i`` labelled ``labels[i]``.

    At the class level (``labels = arange(k)``) the program is taken from
    :func:`_class_program`: compiled once per ``k`` and re-solved with new parameter values.
    """
    import cvxpy as cp

    k, m = spec.k, labels.size
    if m == k and np.array_equal(labels, np.arange(k)):
        problem, Z, constraint, coefficients, rhs = _class_program(k)
        coefficients.value = np.outer(1.0 / spec.Delta, weights)
        rhs.value = (1.0 - np.eye(k)) * spec.delta[None, :]
        return problem, Z, constraint
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


@functools.lru_cache(maxsize=CLASS_PROGRAM_CACHE)
def _class_program(
    k: int,
) -> tuple[cp.Problem, cp.Variable, cp.Constraint, cp.Parameter, cp.Parameter]:
    """The class-level program of size ``k`` with the scales, counts and margins as cvxpy
    Parameters: ``min ||C o Zbar||_*`` s.t. ``mask o (1 zbar_diag^T - Zbar) >= R``, with
    ``C = Delta^{-1} sqrt(n)^T`` and ``R = mask o 1 delta^T`` set before each solve (DPP: cvxpy
    compiles it once and re-solves with new values; a sweep's repeated ``k`` skips compilation).
    """
    import cvxpy as cp

    onehot = np.eye(k)
    mask = 1.0 - onehot
    Z = cp.Variable((k, k))
    coefficients = cp.Parameter((k, k))
    rhs = cp.Parameter((k, k))
    true = cp.sum(cp.multiply(onehot, Z), axis=0, keepdims=True)
    constraint = cp.multiply(mask, np.ones((k, 1)) @ true - Z) >= rhs
    problem = cp.Problem(cp.Minimize(cp.normNuc(cp.multiply(coefficients, Z))), [constraint])
    return problem, Z, constraint, coefficients, rhs


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


def solve_convex_grouped(spec: Spec, solver: str | None = None) -> Result:
    """Class-level convex program over groups of identical classes, with its certificate.

    Classes with equal ``(n_c, Delta_c, delta_c)`` (:meth:`Spec.groups`, ``g`` groups of sizes
    ``m_G``) can be permuted among themselves without changing the class-level program of
    docs/theory.md §3, so (convexity) some optimum is constant on the blocks: true-class logit
    ``p_G``,
    logit ``q_HG`` of a class of ``H`` for an example of class in ``G`` (``q_GG`` within the
    group). Then ``A = Delta^{-1} Zbar N^{1/2}`` leaves invariant each space of zero-sum vectors
    on a group (singular value ``beta_G = (p_G - q_GG) sqrt(n_G) / Delta_G``, multiplicity
    ``m_G - 1``) and the span of the group indicators, where it acts as the ``g x g`` matrix
    ``B_HG = sqrt(m_H m_G) q_HG sqrt(n_G) / Delta_H + [H = G] beta_G``. So

        min ||B||_* + sum_G (m_G - 1) beta_G
        s.t. p_G - q_HG >= delta_G (H != G),  p_G - q_GG >= delta_G (m_G >= 2),

    has the class-level optimum with ``O(g^2)`` variables whatever ``k`` and ``n``.

    The lower bound comes from the duals: the block multipliers ``nu_HG`` spread to
    ``lam_{c'c} = nu_HG / (m_H m_G)`` (``m_G (m_G - 1)`` within a group), and
    ``certificate.class_lower_bound`` of those ``lam`` is evaluated on the blocks, its spectral
    norm being the largest of ``||B^Y||_2`` and the within-group values (same decomposition).

    Returns
    -------
    Result
        ``method="convex_grouped"``, class level; objective, lower bound, per-class norms;
        ``W``, ``H_mean``, the logits and the Grams are ``None`` (expand the blocks when needed).
    """
    spec.require_certifiable("convex_grouped")
    groups = spec.groups()
    solvers = (
        default_solvers(len(groups), len(groups)) if solver is None else (_check_solver(solver),)
    )
    check_fits(
        len(groups),
        len(groups),
        solvers,
        f"grouped convex program ({len(groups)} groups of identical classes)",
        "--method structured (or auto)",
    )
    import cvxpy as cp  # after the size check: 1.5 s

    first = np.array([grp[0] for grp in groups])
    m = np.array([grp.size for grp in groups], dtype=float)
    root_n = np.sqrt(spec.n_vec[first])
    scale = spec.Delta[first]
    margin = spec.delta[first]
    g = first.size
    within = m > 1

    start = time.perf_counter()
    p = cp.Variable(g)
    Q = cp.Variable((g, g))
    off = ~np.eye(g, dtype=bool)
    gaps = np.ones((g, 1)) @ cp.reshape(p, (1, g), order="C") - Q  # [H, G] = p_G - q_HG
    constraints = [cp.multiply(off, gaps) >= off * margin[None, :]]
    beta = cp.multiply(cp.diag(gaps), root_n / scale)
    if within.any():
        constraints.append(cp.diag(gaps)[np.flatnonzero(within)] >= margin[within])
    B = cp.multiply(np.sqrt(np.outer(m, m)) * root_n[None, :] / scale[:, None], Q) + cp.diag(beta)
    problem = cp.Problem(cp.Minimize(cp.normNuc(B) + (m - 1) @ beta), constraints)
    name, failures = _run_backends(problem, Q, solvers)
    if name is None:
        raise SolverError(
            f"The grouped convex solve (k={spec.k}, {g} groups) failed: "
            + failures
            + ". Try another backend (--solver SCS or CLARABEL) or --method structured."
        )
    seconds = time.perf_counter() - start

    # Primal: rescale to exact feasibility (margins are homogeneous of degree 1).
    pv, Qv = np.asarray(p.value, dtype=float), np.asarray(Q.value, dtype=float)
    gap_values = pv[None, :] - Qv
    active = off | np.diag(within)
    ratio = float((gap_values / margin[None, :])[active].min())
    if not ratio > 0:
        raise SolverError(
            "The grouped convex solve returned logits that violate the margins beyond repair "
            f"(smallest margin ratio {ratio:.3g}). Try another backend (--solver)."
        )
    if ratio < 1:
        pv, Qv, gap_values = pv / ratio, Qv / ratio, gap_values / ratio
    beta_v = np.diag(gap_values) * root_n / scale
    B_v = np.sqrt(np.outer(m, m)) * root_n[None, :] / scale[:, None] * Qv + np.diag(beta_v)
    Ub, sb, Vbt = np.linalg.svd(B_v)
    objective = float(sb.sum() + (m - 1) @ beta_v)
    deflated = beta_v * (1 - 1 / m)
    classifier_sq = np.einsum("ij,j,ij->i", Ub, sb, Ub) / m + deflated
    embedding_sq = (np.einsum("ji,j,ji->i", Vbt, sb, Vbt) / m + deflated) / root_n**2

    # Dual: block multipliers -> class multipliers -> weak-duality bound on the blocks.
    nu = np.clip(np.asarray(constraints[0].dual_value, dtype=float), 0.0, None) * off
    mu = nu / np.outer(m, m)
    mu_within = np.zeros(g)
    if within.any():
        nu_w = np.clip(np.asarray(constraints[1].dual_value, dtype=float).ravel(), 0.0, None)
        mu_within[within] = nu_w / (m[within] * (m[within] - 1))
    L_diag = (m[:, None] * mu).sum(axis=0) + (m - 1) * mu_within
    numerator = float(np.sum(m * margin * L_diag))
    alpha_y = -scale[:, None] * (mu + np.diag(mu_within)) / root_n[None, :]
    beta_y = scale * (L_diag + mu_within) / root_n
    B_y = np.sqrt(np.outer(m, m)) * alpha_y + np.diag(beta_y)
    spectral = max(float(np.linalg.norm(B_y, 2)), float(np.abs(beta_y[within]).max(initial=0)))
    lower = numerator / spectral if spectral > 0 else 0.0

    inaccurate = problem.status != cp.OPTIMAL
    certified = objective - lower <= 1e-6 * abs(objective)
    status = "inaccurate" if inaccurate else ("optimal" if certified else "not certified")
    index = np.empty(spec.k, dtype=np.int64)
    for i, grp in enumerate(groups):
        index[grp] = i
    return covered(Result(
        spec=spec,
        method="convex_grouped",
        level="class",
        status=status,
        message=(
            f"{name} on {g} groups of identical classes: objective {objective:.10g}, "
            f"lower bound {lower:.10g}, gap {objective - lower:.2e}"
        ),
        objective=objective,
        lower_bound=lower,
        W=None,
        H_mean=None,
        logits=None,
        classifier_gram=None,
        embedding_gram=None,
        classifier_norms=np.sqrt(np.clip(classifier_sq, 0.0, None))[index],
        embedding_norms=np.sqrt(np.clip(embedding_sq, 0.0, None))[index],
        seconds=seconds,
        solver=name,
        min_margin_ratio=min(ratio, 1.0) if ratio < 1 else 1.0,
    ))


# --- block subproblems of the non-convex solver (docs/theory.md §8)
# -------------------------------------
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
      cannot weigh the classes by ``n_c`` and stalls (docs/theory.md §8).

    Parameters
    ----------
    spec : Spec
        Any ``dim >= 1``.
    labels : (m,) int array
        Class of each column the W-step sees (``arange(k)`` at the class level).
    """

    def __init__(self, spec: Spec, labels: np.ndarray) -> None:
        import cvxpy as cp


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
    import cvxpy as cp

    k, m = spec.k, labels.size
    onehot = np.zeros((k, m))
    onehot[labels, np.arange(m)] = 1.0
    mask = 1.0 - onehot
    true = cp.sum(cp.multiply(onehot, Z), axis=0, keepdims=True)
    return cp.multiply(mask, np.ones((k, 1)) @ true - Z) >= mask * spec.delta[labels][None, :]


def _solved(problem: cp.Problem, variable: cp.Variable, what: str) -> np.ndarray:
    """Solve a block QP with Clarabel, then SCS (default settings); the variable's value, or
    SolverError."""
    _solve_or_fail(problem, variable, DEFAULT_SOLVERS, what, tuned=False)
    return np.asarray(variable.value, dtype=float)


def _solve_or_fail(
    problem: cp.Problem,
    variable: cp.Variable,
    solvers: tuple,
    what: str,
    advice: str = "",
    tuned: bool = True,
) -> str:
    """:func:`_run_backends`, raising ``SolverError`` ("The {what} failed: ...{advice}") when no
    backend returned a value; returns the backend that did."""
    name, failures = _run_backends(problem, variable, solvers, tuned=tuned)
    if name is None:
        raise SolverError(f"The {what} failed: " + failures + advice)
    return name


def _run_backends(
    problem: cp.Problem, variable: cp.Variable, solvers: tuple, tuned: bool = True
) -> tuple[str | None, str]:
    """Solve ``problem`` with each backend of ``solvers`` in turn (with the accuracy settings
    ``_SOLVER_OPTIONS`` if ``tuned``) until one returns a value of ``variable``. Returns the name
    of that backend (``None`` if none did) and the failures of the backends tried before it,
    joined by ``"; "``."""
    import cvxpy as cp

    attempts = []
    for name in solvers:
        try:
            with warnings.catch_warnings(), _native_output_silenced():
                warnings.simplefilter("ignore", UserWarning)  # "may be inaccurate": the status
                problem.solve(solver=name, **(_SOLVER_OPTIONS[name] if tuned else {}))
        except cp.error.SolverError as exc:
            attempts.append(f"{name}: {_first_sentence(exc)}")
            continue
        if problem.status in cp.settings.SOLUTION_PRESENT and variable.value is not None:
            return name, "; ".join(attempts)
        attempts.append(f"{name}: status {problem.status}")
    return None, "; ".join(attempts)


@contextmanager
def _native_output_silenced() -> Iterator[None]:
    """Send what the backends print (SCS's "WARNING - large complementary slackness residual"
    through Python's ``sys.stdout``, C code's writes to file descriptors 1 and 2) to a scratch
    file: the status the solve returns says the same, in the words of
    :class:`~ucfm_svm.result.Result`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    try:
        with tempfile.TemporaryFile() as sink, open(os.devnull, "w") as null:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                with redirect_stdout(null), redirect_stderr(null):
                    yield
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


def _first_sentence(exc: Exception) -> str:
    """cvxpy's failure text without its advice for Python users ("solve with verbose=True")."""
    return str(exc).split(". ")[0].rstrip(".")


# --- programs of the model variants (docs/theory.md §11, §12) ----------------------------------
_ANOTHER_BACKEND = ". Try another backend (--solver SCS or CLARABEL)."


def bias_program(
    spec: Spec, solver: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, str]:
    """The class-level program of the free-bias model (docs/theory.md §11)::

        min ||Delta^{-1} Zbar N^{1/2}||_*
        s.t. zbar_cc - zbar_c'c + beta_c - beta_c' >= delta_c   (c' != c),  beta free,

    with ``Zbar = Delta W Hbar`` and ``beta = Delta b``.

    Returns
    -------
    Zbar : (k, k) array
    beta : (k,) array
    lam : (k, k) array
        Dual values of the margins (``lam[c', c]``), unclipped, zero diagonal.
    name : str
        The backend that solved it.
    status : str
        cvxpy's status.

    Raises
    ------
    SolverError
        No backend reached a solution.
    """
    import cvxpy as cp

    k = spec.k
    solvers = DEFAULT_SOLVERS if solver is None else (_check_solver(solver),)
    Z = cp.Variable((k, k))
    beta = cp.Variable(k)
    shifted = Z + cp.reshape(beta, (k, 1), order="C") @ np.ones((1, k))
    off = 1.0 - np.eye(k)
    true = cp.reshape(cp.diag(shifted), (1, k), order="C")
    constraint = cp.multiply(off, np.ones((k, 1)) @ true - shifted) >= off * spec.delta[None, :]
    A = cp.multiply(np.outer(1.0 / spec.Delta, np.sqrt(spec.n_vec)), Z)
    problem = cp.Problem(cp.Minimize(cp.normNuc(A)), [constraint])
    name = _solve_or_fail(
        problem, Z, solvers, f"convex solve of the free-bias model (k={k})", _ANOTHER_BACKEND
    )
    lam = np.asarray(constraint.dual_value, dtype=float) * off
    return np.asarray(Z.value, float), np.asarray(beta.value, float), lam, name, problem.status


def dnn_program(
    spec: Spec, solver: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, str]:
    """The doubly non-negative relaxation of the non-negative-feature model (docs/theory.md §12).

    Over the Gram ``Q`` (2k x 2k) of the columns of ``[W^T, Hbar]``::

        min 1/2 tr Q_WW + 1/2 sum_c n_c (Q_HH)_cc
        s.t. Delta_c (Q_WH)_cc - Delta_c' (Q_WH)_c'c >= delta_c   (c' != c),
             Q PSD,  Q_HH >= 0 entrywise.

    Every feasible ``(W, Hbar >= 0)`` gives a feasible ``Q`` of the same cost, so the optimum is a
    lower bound on the non-convex problem for any ``d``.

    Returns
    -------
    Q : (2k, 2k) array
    lam : (k, k) array
        Dual values of the margins (``lam[c', c]``), unclipped, zero diagonal.
    M : (k, k) array
        Dual values of ``Q_HH >= 0``, symmetrized, unclipped.
    name, status : str
        Backend and cvxpy status.

    Raises
    ------
    SolverError
        No backend reached a solution.
    """
    import cvxpy as cp

    k = spec.k
    solvers = DEFAULT_SOLVERS if solver is None else (_check_solver(solver),)
    Q = cp.Variable((2 * k, 2 * k), PSD=True)
    SB = cp.multiply(spec.Delta[:, None] * np.ones((1, k)), Q[:k, k:])
    off = 1.0 - np.eye(k)
    true = cp.reshape(cp.diag(SB), (1, k), order="C")
    margins = cp.multiply(off, np.ones((k, 1)) @ true - SB) >= off * spec.delta[None, :]
    nonnegative = Q[k:, k:] >= 0
    cost = 0.5 * cp.trace(Q[:k, :k]) + 0.5 * spec.n_vec @ cp.diag(Q[k:, k:])
    problem = cp.Problem(cp.Minimize(cost), [margins, nonnegative])
    name = _solve_or_fail(
        problem, Q, solvers, f"doubly non-negative relaxation (k={k})", _ANOTHER_BACKEND
    )
    lam = np.asarray(margins.dual_value, dtype=float) * off
    M = np.asarray(nonnegative.dual_value, dtype=float)
    return np.asarray(Q.value, float), lam, 0.5 * (M + M.T), name, problem.status
