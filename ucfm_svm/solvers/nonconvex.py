"""Non-convex UF-CS-SVM solver on ``(W, H)`` directly, certified by a weak-duality bound.

The problem (docs/theory.md §1), with scaled logits ``Z = Delta W H``::

    min_{W, H}  1/2 ||W||_F^2 + 1/2 ||H||_F^2
    s.t.        z_{y_i, i} - z_{c, i} >= delta_{y_i}          (all columns i, c != y_i)

is solved at two levels. At the example level ``H`` is ``d x n`` (one column per example); at
the class level the columns are the class means ``hbar_c`` and the cost is
``1/2 ||W||^2 + 1/2 sum_c n_c ||hbar_c||^2`` (docs/theory.md §3). Both are written in the variable
``G = H diag(s)`` (``s_i = sqrt(n_c)`` for class columns, ``1`` for examples), so the cost is
``1/2 (||W||^2 + ||G||^2)`` and ``Z = Delta W G diag(s)^{-1}``.

One run has three stages:

1. **Start**: classifiers ``w_c = u_c / Delta_c`` with ``u_c`` uniform on the unit sphere (the
   scaled rows are in convex position, so every class can be separated) and Gaussian random
   features, or a start given by the user.
2. **Alternation** (optional): exact block steps in cvxpy
(:class:`ucfm_svm.solvers.convex.BlockSteps`:
   H-step, then W-step), each followed by the balanced refactorization of ``W G``
   (``W = U S^{1/2}``, ``G = S^{1/2} V^T``), the rescaling that block steps cannot do. Block steps
   alone stall (docs/theory.md §8: 10.20 against 6.5075 at counts 10,10,1,1), so this is only a
   start.
3. **Joint refinement**: the augmented Lagrangian (Powell-Hestenes-Rockafellar) of the
   normalized constraints ``r_j = 1 - margin_j / delta_j <= 0``::

       L_mu(W, G; lam) = 1/2 (||W||^2 + ||G||^2) + 1/(2 mu) sum_j max(0, lam_j + mu r_j)^2

   minimized over ``(W, G)`` jointly by L-BFGS, with ``lam <- max(0, lam + mu r)`` and ``mu``
   raised tenfold when the violation does not fall fourfold. Above :data:`OWN_LBFGS_VARIABLES`
   variables ``mu`` starts weak (:data:`LARGE_PENALTY`) and is not raised after a round that ran
   out of its :data:`LARGE_INNER` iterations (docs/theory.md §15: the raises froze k = 200).
   It stops when the point is feasible (``max r <= 1e-10``) and either the gap to the
   certified bound is below a tenth of :data:`~ucfm_svm.result.CERTIFY_RTOL` or the cost
   stopped changing (a KKT point).
4. **Newton polish** (when the gap is still open at the end, as soon as an inner L-BFGS solve
   runs out of iterations within violation 1e-2 (1e-1 at scale), and on Jacobi-scaled
   problems also once the gap closed): Newton steps on the KKT system
   ``x + sum_{j in A} lam_j grad r_j(x) = 0``, ``r_A(x) = 0`` for two guesses of the active
   set ``A`` (the near-active constraints, and all of them). With a large spread of class
   weights (STEP R = 1000, CDT gamma = 1) the multipliers of the lightest constraints are
   ~1e-5 of the largest: the augmented Lagrangian then leaves their margins slack and stalls at
   a gap ~1e-5, which Newton steps on the all-tight system close to rounding. Every closed gap
   is polished too: a gap pins the objective, not the light classes' geometry. Systems above
   :data:`_MAX_POLISH_UNKNOWNS` unknowns are solved by MINRES on the symmetric KKT Jacobian
   (:func:`_krylov_polish`, docs/theory.md §15), and above :data:`OWN_LBFGS_VARIABLES`
   variables every round of :data:`LARGE_INNER` iterations that runs out of them tries it.
   The polished point and multipliers count only through their own cost and certified bound.

The refinement runs L-BFGS in Jacobi-scaled variables when the scaling spread at the start is
above :data:`PRECONDITION_SPREAD`. When no start certifies (and ``d >= k - 1``), one more start
is made by continuation (:func:`_continuation`): the problems with scales ``Delta^t`` and
margins ``delta^t`` for ``t = 0.5, 0.75`` move a random start towards the problem's optimum.
No start uses the closed form or the convex solve.

The certificate is :mod:`ucfm_svm.solvers.certificate` applied to three candidates, cheapest
first (docs/theory.md §15): the refinement's own multipliers (``lam_j / delta_j`` for the
constraint ``z_y - z_c >= delta_y``); the polar factor of the class-mean point
(:func:`_polar_multipliers`: ``L = Delta^{-1} P U V^T N^{1/2}`` from the SVD
``W Hbar N^{1/2} = U S V^T``, ``P`` the projection that makes ``1^T L = 0``; one SVD, and
second order in the point's error); and, only while the gap is open and the system is small,
the nonnegative least-squares KKT multipliers of the class-mean point. Every such bound is
valid for any ``d``; it is tight at the optimum when ``d >= k - 1`` (docs/theory.md §2). For smaller
``d`` the convex solve's certified bound (of the problem with ``d = k - 1``, which contains
this one) is also used; neither is tight in general, so the result is reported as not
certified unless the gap happens to close.

Scale: block steps run by default only for ``k <=`` :data:`ALTERNATION_MAX_K` (their cvxpy
programs grow as ``k^2 d``); above :data:`OWN_LBFGS_VARIABLES` variables the refinement uses
its own vectorized L-BFGS (:func:`_lbfgs`); a solve whose :func:`memory_estimate` exceeds
:data:`MEMORY_LIMIT` is refused before any work (``SpecError``, exit 2). At the example level
the refinement runs on the examples' ``(W, H)`` and the class certificate is spread over the
examples, which leaves its value unchanged; above :data:`JOINT_EXAMPLE_VARIABLES` variables
(and without a given start) the examples' exact H-step, which depends only on their labels, is
eliminated instead (variable projection, :func:`_broadcast`, docs/theory.md §15). The
returned point is rescaled to exact feasibility (the margins are homogeneous of degree 2 in
``(W, G)``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from .. import geometry
from ..errors import SolverError, SpecError
from ..progress import progress
from ..result import CERTIFY_RTOL, Result
from ..spec import Spec
from ..validation import check_int, fail
from . import certificate
from .convex import LEVELS, BlockSteps, covered, solve_convex
from .tight import minimize_tight

#: Alternation rounds by level when none are requested. The example level starts the joint
#: refinement from random features, so that within-class collapse has to emerge from it (the
#: H-step would impose collapse at once: its argmin is the same for every example of a class).
DEFAULT_ALTERNATIONS = {"class": 2, "example": 0}
#: Upper bounds on the counts that multiply the work: one start costs about a second at k = 30,
#: so 100 starts or 10^4 alternation rounds are already hours at field sizes.
MAX_RESTARTS, MAX_ALTERNATIONS = 100, 10_000
#: Largest number of variables ``(k + columns) d`` with ``d`` above ``max(k, columns)``.
MAX_VARIABLES = 2_000_000
#: Largest ``k`` at which the class level alternates by default. The block steps are a start
#: only (the refinement does the work) and their cvxpy programs, with a parameter times a
#: variable, grow as ``k^2 d`` (1.3 GB at k = 100, out of memory at k = 1000); above this
#: the refinement starts from the random point (measured: certified at k = 30 to 100).
ALTERNATION_MAX_K = 12
#: Bytes per term ``k m d`` of the block steps' compiled programs (measured upper bound:
#: 1.3 GB at k = m = 100, d = 99), used by :func:`memory_estimate`.
BLOCK_BYTES_PER_TERM = 1500
#: Bytes per variable of the refinement: the L-BFGS history (2 x 20 vectors) and ~10 more.
REFINE_BYTES_PER_VARIABLE = 8 * 50
#: Bytes per constraint: ~20 k x m work arrays.
REFINE_BYTES_PER_CONSTRAINT = 8 * 20
#: Largest estimated memory (bytes) a non-convex solve may use before it is refused.
MEMORY_LIMIT = 12 * 2**30
#: Largest violation ``max_j r_j`` of a point the refinement accepts as feasible.
FEASIBILITY_TOL = 1e-10
#: Relative gap at which the refinement stops: a tenth of the certification tolerance.
TARGET_RTOL = 0.1 * CERTIFY_RTOL
#: Relative change of the cost between outer rounds below which a KKT point is declared.
STALL_RTOL = 1e-13
#: L-BFGS iterations per outer round.
MAX_INNER = 5000
#: L-BFGS iterations per outer round above :data:`OWN_LBFGS_VARIABLES` variables, where each
#: round that runs out of them tries the Newton polish: the point nears Newton's basin long
#: before the multipliers converge (long tail k = 100 to 300, ratio 256, with
#: :data:`LARGE_PENALTY`: one or two rounds and a polish; docs/theory.md §15).
LARGE_INNER = 500
#: Largest violation at which an inner solve that ran out of iterations triggers a polish.
POLISH_VIOLATION = 1e-2
#: The same above :data:`OWN_LBFGS_VARIABLES` variables, where the penalty starts low
#: (:data:`LARGE_PENALTY`) and the first rounds end with violations ~1e-2 to 1e-1 that Newton's
#: basin already contains (measured: long tail k = 100, ratio 256, violation 8e-2 polished).
LARGE_POLISH_VIOLATION = 1e-1
#: Initial penalty ``mu`` above :data:`OWN_LBFGS_VARIABLES` variables, relative to ``d m / 2``
#: (a random start's ``E ||G||^2 / 2``; below, ``mu = max(1, ||x0||^2 / 2)``). The inner
#: problems' conditioning grows with ``mu``: with ``mu ~ d m / 2`` and rounds of 1000
#: iterations L-BFGS crawls (long tail k = 200: cost 1% above the optimum after 12,000
#: iterations) and the tenfold raises froze the point; ``1e-3 d m / 2`` reaches Newton's basin
#: in 1 to 4 rounds of 500 (docs/theory.md §15).
LARGE_PENALTY = 1e-3
#: Terms ``k m d`` of the matrix products above which the solve keeps the environment's BLAS
#: threads (below it one thread: the products are too small to gain from more).
THREADED_TERMS = 10**8
#: Spread ``max/min`` of the Jacobi scaling (:meth:`_Columns.jacobi`) at the start above which
#: the refinement runs L-BFGS in Jacobi-scaled variables. Below it plain variables are kept
#: (the issue's grid has spreads below ~50); above it (LDT gamma=-1, R=1000: 2.4e4) L-BFGS-B
#: in plain variables fails its line search at once and the penalty blows up.
PRECONDITION_SPREAD = 1e3
#: Exponents ``t`` of the continuation start (:func:`_continuation`), ending at the problem.
CONTINUATION = (0.5, 0.75, 1.0)
#: Variables ``(W, G)`` above which the refinement uses :func:`_lbfgs` rather than scipy's
#: L-BFGS-B (whose per-iteration overhead dominates there); below it (the issue-3 grid and its
#: hard cases, k <= 12 at the class level) L-BFGS-B is kept.
OWN_LBFGS_VARIABLES = 5000
#: Example-level variables ``(k + n) d`` above which an example-level solve without a start
#: uses the variable projection (:func:`_broadcast`); below it the examples are refined jointly.
JOINT_EXAMPLE_VARIABLES = 20_000
#: Refinements a start may get: ``"joint"`` (the augmented Lagrangian on ``(W, G)``, the way a
#: network trains), ``"tight"`` (the tight-margin reduction, :func:`_tight_run`) and ``"auto"``.
REFINEMENTS = ("auto", "joint", "tight")
#: Outer (multiplier) rounds of the augmented Lagrangian per run.
MAX_OUTER = 60
#: Largest KKT system (entries) solved by NNLS for the class-level multipliers: k <= ~12 with
#: d = k - 1 (NNLS takes seconds beyond; the polar-factor multipliers need none of it).
_MAX_NNLS_ENTRIES = 60_000
#: Constraints with violation above ``-ACTIVE_TOL`` enter the Newton polish's active set.
ACTIVE_TOL = 1e-4
#: Newton steps of the polish.
POLISH_STEPS = 12
#: Largest KKT system (unknowns) the polish solves densely; larger ones by MINRES.
_MAX_POLISH_UNKNOWNS = 600
#: Relative KKT residual at which a polished point counts as the KKT point (to rounding).
KKT_ROUNDING = 1e-12
#: Most Jacobian products of one MINRES solve in :func:`_krylov_polish`.
KRYLOV_ITERATIONS = 2000
#: Most damped Newton steps of :func:`_krylov_polish` (the globalized polish).
KRYLOV_STEPS = 30
#: Largest ratio ``|F_new| / |F|`` of an accepted damped Newton step at which
#: :func:`_krylov_polish` goes on. Requiring each step to halve ``|F|`` (the rule up to issue
#: 19, round 5) gave up outside the local basin: long tail k = 300 after its first round,
#: ``|F|`` 14.5 -> 10.7 and stop, three more rounds of L-BFGS; with 0.9 the same start takes
#: damped steps 14.5 -> ... -> 1e-13 (docs/theory.md §15).
POLISH_CONTRACTION = 0.9


@dataclasses.dataclass
class _Run:
    """Outcome of one start: a feasible point (or ``None``), its cost and certified bound."""

    W: np.ndarray | None
    G: np.ndarray | None
    objective: float
    lower_bound: float
    iterations: int
    outer: int
    stopped: str
    polished: int = 0
    #: ``"joint"`` (augmented Lagrangian on ``(W, G)``) or ``"tight"`` (:func:`_tight_run`).
    route: str = "joint"


class _Columns:
    """The columns of one level: labels ``y_i``, weights ``s_i`` and the constraint layout."""

    def __init__(self, spec: Spec, level: str) -> None:
        self.spec = spec
        self.level = level
        if level == "class":
            self.labels = np.arange(spec.k)
            self.s = np.sqrt(spec.n_vec)
        else:
            self.labels = spec.labels
            self.s = np.ones(spec.n)
        self.m = self.labels.size
        self.cols = np.arange(self.m)
        self.mask = np.ones((spec.k, self.m))
        self.mask[self.labels, self.cols] = 0.0
        self.delta = spec.delta[self.labels]

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k, d = self.spec.k, self.spec.dim
        return x[: k * d].reshape(k, d), x[k * d :].reshape(d, self.m)

    def ratios(self, W: np.ndarray, G: np.ndarray) -> np.ndarray:
        """``margin / delta_y`` (k x m), zero at the true-class entries; bilinear in ``(W, G)``."""
        Z = self.spec.Delta[:, None] * (W @ G) / self.s[None, :]
        true = Z[self.labels, self.cols]
        return (true[None, :] - Z) / self.delta[None, :] * self.mask

    def violations(self, W: np.ndarray, G: np.ndarray) -> np.ndarray:
        """``r = 1 - margin / delta_y`` (k x m), zero at the true-class entries."""
        return (1.0 - self.ratios(W, G)) * self.mask

    def weighted(self, P: np.ndarray) -> np.ndarray:
        """``Qs`` with ``sum_j P_j grad r_j = (Qs G^T, W^T Qs)`` for weights ``P`` (k x m)."""
        # d r_{c,i} / d z_{c,i} = 1/delta_i and d r_{c,i} / d z_{y_i,i} = -1/delta_i.
        Q = P * self.mask / self.delta[None, :]
        Q[self.labels, self.cols] = -Q.sum(axis=0)
        return self.spec.Delta[:, None] * Q / self.s[None, :]

    def lagrangian(self, x: np.ndarray, lam: np.ndarray, mu: float) -> tuple[float, np.ndarray]:
        """Augmented Lagrangian ``L_mu`` and its gradient in ``x = (W, G)``."""
        W, G = self.unpack(x)
        P = np.maximum(0.0, lam + mu * self.violations(W, G)) * self.mask
        value = 0.5 * (np.sum(W * W) + np.sum(G * G)) + np.sum(P * P) / (2.0 * mu)
        Qs = self.weighted(P)
        grad = np.concatenate([(W + Qs @ G.T).ravel(), (G + W.T @ Qs).ravel()])
        return value, grad

    def jacobi(self, x: np.ndarray, mu: float) -> np.ndarray:
        """Diagonal preconditioner ``1 / sqrt(h)`` of ``L_mu`` at ``x``, per variable.

        ``h`` bounds the diagonal of the Hessian by blocks: ``1`` from the cost plus ``mu``
        times the squared gradient norms of the constraints through each row ``w_c`` (all
        columns ``i``: ``(Delta_c ||g_i|| / (s_i delta_i))^2``) and each column ``g_i``
        (``||Delta_c w_c - Delta_{y_i} w_{y_i}||^2 / (s_i delta_i)^2``, all ``c != y_i``).
        """
        W, G = self.unpack(x)
        Delta = self.spec.Delta
        per = 1.0 / (self.s * self.delta) ** 2  # (m,)
        g2 = np.sum(G * G, axis=0)
        SW = Delta[:, None] * W
        # ||a_c - a_y||^2 = ||a_c||^2 + ||a_y||^2 - 2 a_c^T a_y from the k x k Gram: k x m memory
        # (not the k x m x d differences).
        sq = np.sum(SW * SW, axis=1)
        gram = SW @ SW.T
        diff2 = (sq[:, None] + sq[self.labels][None, :] - 2.0 * gram[:, self.labels]) * self.mask
        # Row c meets each column i once as a wrong class and (for c = y_i) k - 1 times.
        wrong = Delta**2 * ((self.mask * (g2 * per)[None, :]).sum(axis=1))
        true = Delta**2 * np.bincount(self.labels, weights=g2 * per, minlength=self.spec.k)
        h_w = 1.0 + mu * (wrong + (self.spec.k - 1) * true)
        h_g = 1.0 + mu * per * diff2.sum(axis=0)
        d = self.spec.dim
        return np.concatenate([np.repeat(h_w, d), np.tile(h_g, d)]) ** -0.5

    def scaled_lagrangian(
        self, y: np.ndarray, lam: np.ndarray, mu: float, D: np.ndarray
    ) -> tuple[float, np.ndarray]:
        """``L_mu(D y)`` and its gradient in ``y`` (diagonal scaling ``x = D y``)."""
        value, grad = self.lagrangian(D * y, lam, mu)
        return value, D * grad

    def class_point(self, W: np.ndarray, G: np.ndarray) -> np.ndarray:
        """Class-mean embeddings ``Hbar`` (d x k) of the columns."""
        H = G / self.s[None, :]
        return H if self.level == "class" else geometry.class_means(H, self.labels, self.spec.k)

    def bound(self, W: np.ndarray, G: np.ndarray, lam: np.ndarray) -> float:
        """Best certified lower bound from three kinds of multipliers, cheapest first.

        1. The refinement's own multipliers ``lam`` (normalized constraints, k x m).
        2. The polar factor of the class-mean point (:func:`_polar_multipliers`, one SVD).
        3. Only while the gap is still open and the KKT system is small: the nonnegative
           least-squares multipliers of the class-mean point (:func:`_kkt_multipliers`).

        Each candidate goes through :mod:`ucfm_svm.solvers.certificate`, which clips it to
        ``>= 0``, rebuilds the diagonal and takes the spectral norm: the bound is valid whatever
        produced the candidate (docs/theory.md §15).
        """
        spec = self.spec
        raw = lam / self.delta[None, :]
        per_class = np.zeros((spec.k, spec.k))
        np.add.at(per_class.T, self.labels, raw.T)
        W_mean, H_mean = W, self.class_point(W, G)
        best = -np.inf
        objective = geometry.class_objective(spec, W_mean, H_mean)
        for make in (
            lambda: per_class,
            lambda: _polar_multipliers(spec, W_mean, H_mean),
            lambda: _kkt_multipliers(spec, W_mean, H_mean),
        ):
            if best >= objective * (1.0 - 0.1 * TARGET_RTOL):
                break
            candidate = make()
            if candidate is None:
                continue
            best = max(best, self._candidate_bound(candidate))
        if self.level == "example":
            best = max(best, certificate.example_lower_bound(spec, raw, self.labels))
        return best

    def _candidate_bound(self, lam_class: np.ndarray) -> float:
        """The certified bound of class multipliers ``lam_class`` (k x k) at this level.

        At the example level a class multiplier ``lam[c', c]`` is spread as ``lam[c', c] / n_c``
        over the examples of ``c``: the example-level bound then has the same numerator and the
        same spectral norm (both Grams ``Y Y^T`` coincide), so it equals the class-level one.
        """
        spec = self.spec
        if self.level == "class":
            return certificate.class_lower_bound(spec, lam_class)
        spread = lam_class[:, self.labels] / spec.n_vec[self.labels][None, :]
        return certificate.example_lower_bound(spec, spread, self.labels)


def _polar_multipliers(spec: Spec, W: np.ndarray, H_mean: np.ndarray) -> np.ndarray:
    """Class multipliers from the polar factor of the point's own ``A`` (docs/theory.md §15).

    With ``A = W Hbar N^{1/2} = U S V^T`` (the class-level ``Delta^{-1} Zbar N^{1/2}`` of the
    point), the dual variable of the nuclear-norm program at an optimum is ``Y = U_r V_r^T``
    (``r = rank A``), and ``Y = Delta L N^{-1/2}`` gives ``L = Delta^{-1} Y N^{1/2}``, whose
    off-diagonal entries are ``-lam``. A dual needs ``1^T L = 0``, i.e. ``u^T Y = 0`` for
    ``u = Delta^{-1} 1``; at an approximate point it holds only to first order, so ``Y`` is
    first projected, ``Y <- (I - u u^T / u^T u) Y``: the projection keeps ``||Y||_2 <= 1`` and
    changes ``<Y, A>`` only to second order (``u^T U`` and ``A^T u`` are both first order).
    Returns ``lam[c', c] = -L[c', c]`` (``c' != c``; the certificate clips negatives and
    rebuilds the diagonal) for the rank ``r`` counting the singular values above
    ``1e-8 s_max`` and, when smaller, ``r = k - 1`` (the rank of every optimum seen): the one
    that certifies the higher bound. One SVD: ``O(k^2 d)`` time, ``O(k^2)`` memory.
    """
    k = spec.k
    s_root = np.sqrt(spec.n_vec)
    U, s, Vt = np.linalg.svd(W @ (H_mean * s_root[None, :]), full_matrices=False)
    if s.size == 0 or not s[0] > 0:
        return np.zeros((k, k))
    u = 1.0 / spec.Delta
    u /= np.linalg.norm(u)
    counted = int(np.count_nonzero(s > 1e-8 * s[0]))
    best, best_bound = np.zeros((k, k)), -np.inf
    for r in sorted({counted, min(counted, k - 1)}):
        Y = U[:, :r] @ Vt[:r, :]
        Y -= np.outer(u, u @ Y)
        lam = -(Y / spec.Delta[:, None] * s_root[None, :])
        np.fill_diagonal(lam, 0.0)
        bound = certificate.class_lower_bound(spec, lam)
        if bound > best_bound:
            best, best_bound = lam, bound
    return best


def _kkt_multipliers(spec: Spec, W: np.ndarray, H_mean: np.ndarray) -> np.ndarray | None:
    """Nonnegative least-squares multipliers of the class-level stationarity condition.

    With ``G = Hbar N^{1/2}`` and margins ``m_{c'c} = (Delta_c w_c - Delta_{c'} w_{c'})^T g_c /
    sqrt(n_c)``, solves ``min_{lam >= 0} ||(W, G) - sum lam_{c'c} grad m_{c'c}||``. Returns
    ``lam`` (k x k, ``lam[c', c]``), or ``None`` when the system is too large for dense NNLS.
    """
    k, d = W.shape
    if k * (k - 1) * 2 * k * d > _MAX_NNLS_ENTRIES:
        return None
    s = np.sqrt(spec.n_vec)
    G = H_mean * s[None, :]
    SW = spec.Delta[:, None] * W
    pairs = [(cp, c) for c in range(k) for cp in range(k) if cp != c]
    A = np.zeros((2 * k * d, len(pairs)))
    for j, (cp, c) in enumerate(pairs):
        dW = np.zeros((k, d))
        dW[c] = spec.Delta[c] * G[:, c] / s[c]
        dW[cp] = -spec.Delta[cp] * G[:, c] / s[c]
        dG = np.zeros((d, k))
        dG[:, c] = (SW[c] - SW[cp]) / s[c]
        A[:, j] = np.concatenate([dW.ravel(), dG.ravel()])
    from scipy.optimize import nnls
    values, _ = nnls(A, np.concatenate([W.ravel(), G.ravel()]), maxiter=50 * len(pairs))
    lam = np.zeros((k, k))
    for value, (cp, c) in zip(values, pairs, strict=True):
        lam[cp, c] = value
    return lam


@dataclasses.dataclass
class _Minimized:
    """Outcome of :func:`_lbfgs`: the point and the iterations taken (scipy's field names)."""

    x: np.ndarray
    nit: int


def _lbfgs(
    fun: Callable[..., tuple[float, np.ndarray]],
    x0: np.ndarray,
    args: tuple,
    maxiter: int,
    gtol: float,
    memory: int,
    bar: Any = None,
) -> _Minimized:
    """Unconstrained L-BFGS (two-loop recursion) with a strong-Wolfe line search; ``bar`` (a
    :func:`ucfm_svm.progress.progress` bar) is advanced once per iteration.

    Used instead of scipy's L-BFGS-B above :data:`OWN_LBFGS_VARIABLES` variables: L-BFGS-B's
    Fortran step (``setulb``, bound handling and its compact update, with no bounds here) took
    70% of the time at k = 100 (7 ms per iteration against 3.5 ms for the Lagrangian itself);
    the two-loop recursion costs ``4 memory n`` flops in vectorized numpy. Stops when
    ``max |grad| <= gtol``, after ``maxiter`` iterations, or when the line search finds no
    step (the same tests as L-BFGS-B with ``ftol`` at rounding).
    """
    from scipy.optimize import line_search
    from scipy.optimize._linesearch import LineSearchWarning

    cache: dict[str, object] = {}

    def evaluate(x: np.ndarray) -> tuple[float, np.ndarray]:
        if cache.get("x") is None or not np.array_equal(cache["x"], x):
            cache["x"] = x.copy()
            cache["value"], cache["grad"] = fun(x, *args)
        return cache["value"], cache["grad"]  # type: ignore[return-value]

    x = np.array(x0, dtype=float)
    value, grad = evaluate(x)
    S = np.zeros((memory, x.size))
    Yv = np.zeros((memory, x.size))
    rho = np.zeros(memory)
    stored = 0
    nit = 0
    while nit < maxiter and np.max(np.abs(grad)) > gtol:
        q = grad.copy()
        order = [(stored - 1 - j) % memory for j in range(min(stored, memory))]
        alpha = np.zeros(memory)
        for j in order:
            alpha[j] = rho[j] * (S[j] @ q)
            q -= alpha[j] * Yv[j]
        if order:
            newest = order[0]
            q *= (S[newest] @ Yv[newest]) / (Yv[newest] @ Yv[newest])
        else:
            q *= min(1.0, 1.0 / max(float(np.linalg.norm(grad)), 1e-300))
        for j in reversed(order):
            q += S[j] * (alpha[j] - rho[j] * (Yv[j] @ q))
        direction = -q
        if not grad @ direction < 0:
            direction, stored = -grad, 0
        with warnings.catch_warnings():  # a failed search is handled below, not printed
            warnings.simplefilter("ignore", LineSearchWarning)
            step, *_ = line_search(
                lambda z: evaluate(z)[0], lambda z: evaluate(z)[1], x, direction, grad, value,
                maxiter=30,
            )
        if step is None:
            break
        x_new = x + step * direction
        value_new, grad_new = evaluate(x_new)
        nit += 1
        if bar is not None:
            bar.update(1)
        s_vec, y_vec = x_new - x, grad_new - grad
        curvature = float(s_vec @ y_vec)
        if curvature > 1e-16 * float(y_vec @ y_vec):
            slot = stored % memory
            S[slot], Yv[slot], rho[slot] = s_vec, y_vec, 1.0 / curvature
            stored += 1
        decrease = value - value_new
        x, value, grad = x_new, value_new, grad_new
        if decrease <= 1e-16 * max(abs(value), 1.0):
            break
    return _Minimized(x, nit)


def _feasible(cols: _Columns, W: np.ndarray, G: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Rescale ``(W, G)`` by ``sqrt(1 / ratio)`` so every margin holds exactly; ``None`` if a
    margin has the wrong sign."""
    ratio = float(np.min(1.0 - cols.violations(W, G)[cols.mask > 0]))
    if not ratio > 0:
        return None
    scale = np.sqrt(1.0 / ratio) if ratio < 1 else 1.0
    return W * scale, G * scale


def _random_start(cols: _Columns, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    spec = cols.spec
    U = rng.standard_normal((spec.k, spec.dim))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    return U / spec.Delta[:, None], rng.standard_normal((spec.dim, cols.m))


def _alternate(
    cols: _Columns, steps: BlockSteps, W: np.ndarray, G: np.ndarray, rounds: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """``rounds`` of H-step, W-step and balanced refactorization, then a last H-step.

    Returns the point and a note (empty, or why the alternation ended early: a block QP that
    failed leaves the last point to the joint refinement).
    """
    try:
        for _ in range(rounds):
            H = steps.embedding_step(W)[:, cols.labels]
            W = steps.classifier_step(H)
            W, G = geometry.balanced_factors(W @ (H * cols.s[None, :]), cols.spec.dim)
        G = steps.embedding_step(W)[:, cols.labels] * cols.s[None, :]
    except SolverError as exc:
        return W, G, f"alternation ended early ({exc})"
    return W, G, ""


def _refine(cols: _Columns, W: np.ndarray, G: np.ndarray, iterations: int) -> _Run:
    """Augmented-Lagrangian refinement of ``(W, G)`` jointly (module docstring, stage 3), with a
    progress bar of its L-BFGS iterations above :data:`OWN_LBFGS_VARIABLES` variables (seconds
    to minutes of work; the bar shows only on a terminal, :mod:`ucfm_svm.progress`)."""
    large = (cols.spec.k + cols.m) * cols.spec.dim > OWN_LBFGS_VARIABLES
    with progress(desc=f"non-convex refinement (k={cols.spec.k})", unit="it",
                  enabled=large) as bar:
        return _refine_rounds(cols, W, G, iterations, bar)


def _refine_rounds(
    cols: _Columns, W: np.ndarray, G: np.ndarray, iterations: int, bar: Any
) -> _Run:
    """The rounds of :func:`_refine`; ``bar`` counts the inner iterations and shows each
    round's violation and cost."""
    spec = cols.spec
    x = np.concatenate([W.ravel(), G.ravel()])
    scale = max(0.5 * float(x @ x), 1.0)
    large = x.size > OWN_LBFGS_VARIABLES
    # above OWN_LBFGS_VARIABLES: a fraction of a random start's 1/2 E||G||^2 = d m / 2, whatever
    # the start (a start near the optimum, ||x||^2 ~ the cost, would give a penalty too weak to
    # hold the margins)
    mu = LARGE_PENALTY * 0.5 * spec.dim * cols.m if large else scale
    lam = np.zeros((spec.k, cols.m))
    previous_violation = np.inf
    previous_cost = np.inf
    best = _Run(None, None, np.inf, -np.inf, iterations, 0, "no feasible point")
    D = cols.jacobi(x, mu)
    precondition = D.max() > PRECONDITION_SPREAD * D.min()
    from scipy.optimize import minimize
    for outer in range(1, MAX_OUTER + 1):
        D = cols.jacobi(x, mu) if precondition else np.ones_like(x)
        if large:
            res = _lbfgs(
                cols.scaled_lagrangian, x / D, (lam, mu, D), LARGE_INNER, 1e-11 * scale, 20, bar
            )
        else:
            res = minimize(
                cols.scaled_lagrangian,
                x / D,
                args=(lam, mu, D),
                jac=True,
                method="L-BFGS-B",
                options={"maxiter": MAX_INNER, "ftol": 1e-16, "gtol": 1e-11 * scale, "maxcor": 20},
            )
        x = D * res.x
        iterations += int(res.nit)
        W, G = cols.unpack(x)
        r = cols.violations(W, G)
        lam = np.maximum(0.0, lam + mu * r) * cols.mask
        violation = max(float(r.max()), 0.0)
        point = _feasible(cols, W, G)
        if point is None:
            cost = np.inf
        else:
            cost = geometry.class_objective(spec, point[0], cols.class_point(*point))
        lower = cols.bound(W, G, lam)
        best.lower_bound = max(best.lower_bound, lower)
        if cost < best.objective:
            best.W, best.G = point
            best.objective = cost
        best.iterations, best.outer = iterations, outer
        bar.set_postfix_str(f"round {outer}, violation {violation:.1e}, cost {cost:.7g}")
        if violation <= FEASIBILITY_TOL and _closed(best):
            best.stopped = "gap closed"
            # A closed gap pins the objective, not the light classes' geometry: at gap 1e-9 the
            # embedding Gram can still be 1e-3 from the optimum (LDT gamma=-1, R=1000, k=4),
            # and a cosine 3e-6 (long tail k=100). Newton steps take the point to rounding
            # (docs/theory.md §15).
            _try_polish(cols, best, W, G, lam, force=True)
            return best
        # An inner solve that ran out of iterations near feasibility signals the ill-conditioning
        # the polish is for: try it before spending more rounds.
        inner = LARGE_INNER if large else MAX_INNER
        truncated = res.nit >= inner
        polish = truncated and violation <= (LARGE_POLISH_VIOLATION if large else POLISH_VIOLATION)
        if polish and _try_polish(cols, best, W, G, lam):
            best.stopped = "gap closed after Newton polish"
            return best
        if violation <= FEASIBILITY_TOL and abs(previous_cost - cost) <= STALL_RTOL * cost:
            best.stopped = "KKT point (cost stationary)"
            break
        # Above OWN_LBFGS_VARIABLES an inner solve cut at LARGE_INNER iterations says nothing
        # about the penalty being too weak: raising mu then only worsens the conditioning.
        if violation > 0.25 * previous_violation and not (large and truncated):
            mu *= 10.0
        previous_violation, previous_cost = violation, cost
    else:
        best.stopped = f"{MAX_OUTER} outer rounds"
    if not _closed(best) and _try_polish(cols, best, W, G, lam):
        best.stopped += ", gap closed after Newton polish"
    return best


def _closed(run: _Run) -> bool:
    return run.objective - run.lower_bound <= TARGET_RTOL * run.objective


def _try_polish(
    cols: _Columns,
    best: _Run,
    W: np.ndarray,
    G: np.ndarray,
    lam: np.ndarray,
    force: bool = False,
) -> bool:
    """Polish ``(W, G, lam)`` (:func:`_polish`) and keep what improves ``best``'s cost or bound;
    ``True`` when the gap closed.

    Two guesses of the active set are tried: the near-active constraints, and all of them
    (every margin is tight at the optimum in every case seen, docs/theory.md §4, but the
    multipliers of
    the lightest classes can be 1e-5 of the largest, too small for the refinement to make their
    margins tight: k=10, R=1000, CDT gamma=1). A polished point counts only through its own
    cost and certified bound. At the class level above :data:`_MAX_POLISH_UNKNOWNS`
    constraints (MINRES) the all-margins guess goes first and a third guess starts from all
    margins with the point's polar-factor multipliers. With ``force`` the guesses are tried
    even when the gap is already closed (a better point may still be reached), until the
    all-margins guess reaches the KKT point to rounding (:data:`KKT_ROUNDING`). A near-active
    guess that reaches a KKT point does not stop the search: with the lightest classes'
    margins left slack it can close the gap to 3e-10 with cosines 1.3e-3 off (LDT gamma=-1,
    STEP k=10 R=1000, seed 1).
    """
    everything = cols.mask > 0
    guesses = [
        (everything & ((cols.violations(W, G) > -ACTIVE_TOL) | (lam > 0)), lam),
        (everything, lam),
    ]
    if cols.level == "class" and cols.spec.k * cols.m > _MAX_POLISH_UNKNOWNS:
        # Every margin is tight at every optimum seen (docs/theory.md §15): by MINRES the
        # all-margins guess goes first (at k = 200 the near-active one spent 227 products
        # before failing where the all-margins one then converged).
        guesses.reverse()
        # The refinement's multipliers lag its point (they move once per outer round); the
        # polar-factor multipliers of the point itself (docs/theory.md §15), in the normalized
        # constraints (lam_j = delta_j x the class multiplier), are one more start for Newton.
        polar = _polar_multipliers(cols.spec, W, cols.class_point(W, G))
        guesses.append((everything, polar * cols.delta[None, :]))
    for active, multipliers in guesses:
        if _closed(best) and not force:
            break
        polished = _polish(cols, W, G, multipliers, active)
        if polished is None:
            continue
        point = _feasible(cols, *polished[:2])
        if point is not None:
            cost = geometry.class_objective(cols.spec, point[0], cols.class_point(*point))
            if cost < best.objective:
                best.W, best.G = point
                best.objective = cost
        best.lower_bound = max(best.lower_bound, cols.bound(*polished))
        best.polished += 1
        if not np.array_equal(active, everything):
            continue  # a KKT point of fewer margins can hold slack ones the optimum has tight
        residual = _kkt_residual(cols, *polished[:2], polished[2][active], active)
        size = float(np.sqrt(np.sum(polished[0] ** 2) + np.sum(polished[1] ** 2)))
        if float(np.linalg.norm(residual)) <= KKT_ROUNDING * max(1.0, size):
            break  # the all-margins KKT point to rounding: no other guess can do better
    return _closed(best)


def _polish(
    cols: _Columns, W: np.ndarray, G: np.ndarray, lam: np.ndarray, active: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Newton steps on the KKT system of a guessed active set (module docstring, stage 4).

    With ``A`` the constraints marked in ``active`` (k x m booleans), solves
    ``F(x, lam_A) = (x + sum_{j in A} lam_j grad r_j(x), r_A(x)) = 0`` for ``x = (W, G)``.
    ``F`` is quadratic in ``(x, lam_A)``, so its Jacobian is assembled exactly column by column
    from the bilinear maps; the rotation gauge ``(W Q, Q^T G)`` and redundant multipliers make
    it singular, so each step is the minimum-norm least-squares solution of the
    column-equilibrated system. Returns ``(W, G, lam)`` (``lam`` clipped to ``>= 0``) at the
    smallest residual reached, or ``None`` when the system is too large for dense steps or no
    step reduced the residual. Whatever it returns is only a candidate: the caller certifies.
    """
    k, d, m = cols.spec.k, cols.spec.dim, cols.m
    rows, where = np.nonzero(active)
    n_x, n_l = k * d + d * m, rows.size
    if n_x + n_l > _MAX_POLISH_UNKNOWNS:
        return _krylov_polish(cols, W, G, lam, active)

    def residual(x: np.ndarray, values: np.ndarray) -> np.ndarray:
        Wx, Gx = cols.unpack(x)
        return _kkt_residual(cols, Wx, Gx, values, active)

    def jacobian(x: np.ndarray, values: np.ndarray) -> np.ndarray:
        Wx, Gx = cols.unpack(x)
        L = np.zeros((k, m))
        L[rows, where] = values
        Qs = cols.weighted(L)
        J = np.zeros((n_x + n_l, n_x + n_l))
        for i in range(k * d):  # a unit step in W moves W's gradient by itself, G's by e^T Qs
            E = np.zeros((k, d))
            E.flat[i] = 1.0
            J[:n_x, i] = np.concatenate([E.ravel(), (E.T @ Qs).ravel()])
            J[n_x:, i] = -cols.ratios(E, Gx)[active]
        for i in range(d * m):
            E = np.zeros((d, m))
            E.flat[i] = 1.0
            J[:n_x, k * d + i] = np.concatenate([(Qs @ E.T).ravel(), E.ravel()])
            J[n_x:, k * d + i] = -cols.ratios(Wx, E)[active]
        for j in range(n_l):
            E = np.zeros((k, m))
            E[rows[j], where[j]] = 1.0
            Qj = cols.weighted(E)
            J[:n_x, n_x + j] = np.concatenate([(Qj @ Gx.T).ravel(), (Wx.T @ Qj).ravel()])
        return J

    z = newton_least_squares(
        lambda z: residual(z[:n_x], z[n_x:]),
        lambda z: jacobian(z[:n_x], z[n_x:]),
        np.concatenate([W.ravel(), G.ravel(), lam[rows, where]]),
        n_x,
    )
    if z is None:
        return None
    x, values = z[:n_x], z[n_x:]
    Wx, Gx = cols.unpack(x)
    L = np.zeros((k, m))
    L[rows, where] = np.maximum(values, 0.0)
    return Wx, Gx, L


def newton_least_squares(
    residual: Callable[[np.ndarray], np.ndarray],
    jacobian: Callable[[np.ndarray], np.ndarray],
    z: np.ndarray,
    n_x: int,
    steps: int = POLISH_STEPS,
) -> np.ndarray | None:
    """Gauss-Newton steps ``z <- z - J^+ F`` on a square or rank-deficient system ``F(z) = 0``.

    Each step is the minimum-norm least-squares solution of the column-equilibrated system (the
    gauges of the factored problems make ``J`` singular). Stops after ``steps`` steps or when
    ``||F|| <= 1e-14 max(1, ||z[:n_x]||)``. Returns the ``z`` of smallest residual, or ``None``
    when no step reduced the residual. Used by :func:`_polish` and by the model variants'
    polish (:mod:`ucfm_svm.variants.nonconvex`).
    """
    F = residual(z)
    start_norm = best_norm = float(np.linalg.norm(F))
    best = z
    for _ in range(steps):
        J = jacobian(z)
        if not np.all(np.isfinite(J)):
            break
        norms = np.linalg.norm(J, axis=0)
        norms[norms == 0] = 1.0
        try:
            z = z + np.linalg.lstsq(J / norms[None, :], -F, rcond=None)[0] / norms
        except np.linalg.LinAlgError:
            break
        F = residual(z)
        norm = float(np.linalg.norm(F))
        if not np.isfinite(norm):
            break
        if norm < best_norm:
            best_norm, best = norm, z
        if norm <= 1e-14 * max(1.0, float(np.linalg.norm(z[:n_x]))):
            break
    return best if best_norm < start_norm else None


def _kkt_residual(
    cols: _Columns, W: np.ndarray, G: np.ndarray, values: np.ndarray, active: np.ndarray
) -> np.ndarray:
    """``F(x, lam_A) = (x + sum_{j in A} lam_j grad r_j(x), r_A(x))`` of :func:`_polish`."""
    L = np.zeros(active.shape)
    L[active] = values
    Qs = cols.weighted(L)
    return np.concatenate(
        [(W + Qs @ G.T).ravel(), (G + W.T @ Qs).ravel(), cols.violations(W, G)[active]]
    )


def _kkt_scaling(
    cols: _Columns, W: np.ndarray, G: np.ndarray, Qs: np.ndarray, active: np.ndarray
) -> np.ndarray:
    """Column norms of the KKT Jacobian of :func:`_krylov_polish` (docs/theory.md §15).

    For ``w_{c,a}``: ``1 + ||(Qs)_{c,:}||^2`` plus the squared derivatives of the active
    margins, ``Delta_c^2 g_{a,i}^2 / (s_i delta_i)^2`` once for each active ``(c, i)`` and
    ``(#active in column i)`` times for ``c = y_i``; for ``g_{a,i}``: ``1 + ||(Qs)_{:,i}||^2 +
    sum_{c' active in i} (Delta_{y_i} w_{y_i,a} - Delta_{c'} w_{c',a})^2 / (s_i delta_i)^2``;
    for ``lam_j``: ``||grad r_j||^2``. ``O(k m d)`` time, no ``k x m x d`` array.
    """
    spec = cols.spec
    k, d = spec.k, spec.dim
    per = 1.0 / (cols.s * cols.delta) ** 2
    Delta = spec.Delta
    A = active.astype(float)
    count = A.sum(axis=0)
    Gsq = G * G * per[None, :]
    true = np.zeros((k, d))
    np.add.at(true, cols.labels, (Gsq * count[None, :]).T)
    col_w = 1.0 + np.sum(Qs * Qs, axis=1)[:, None] + Delta[:, None] ** 2 * (A @ Gsq.T + true)
    SW = Delta[:, None] * W
    Sy = SW[cols.labels].T  # d x m: the scaled true-class classifier of each column
    diff2 = (count[None, :] * Sy**2 - 2.0 * Sy * (SW.T @ A) + (SW.T**2) @ A) * per[None, :]
    col_g = 1.0 + np.sum(Qs * Qs, axis=0)[None, :] + diff2
    sq = np.sum(SW * SW, axis=1)
    gap2 = sq[:, None] + sq[cols.labels][None, :] - 2.0 * (SW @ SW.T)[:, cols.labels]
    g2 = np.sum(G * G, axis=0)
    col_l = ((Delta[:, None] ** 2 + Delta[cols.labels][None, :] ** 2) * g2[None, :] + gap2) * per
    return np.sqrt(np.concatenate([col_w.ravel(), col_g.ravel(), np.maximum(col_l[active], 0.0)]))


def _krylov_polish(
    cols: _Columns, W: np.ndarray, G: np.ndarray, lam: np.ndarray, active: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Newton steps on the KKT system of :func:`_polish` by MINRES, for systems too large to
    assemble (docs/theory.md §15).

    The Jacobian of ``F`` is symmetric, ``[[I + B2(lam), J_A^T], [J_A, 0]]`` (``B2`` the
    bilinear curvature ``(dW, dG) -> (Qs dG^T, dW^T Qs)``, ``J_A`` the active constraints'
    gradients), and a product with it costs a few ``k x d x m`` matrix products, so each step is
    MINRES on the symmetrically equilibrated system (:func:`_kkt_scaling`), inexact (relative
    tolerance ``min(1e-2, |F| / |x|)`` floored at 1e-10 in scipy's test ``||r|| / (||A||
    ||x||)``, a backward error: early steps end with ``||r|| / ||b||`` ~ 0.2 to 0.5, inexact
    Newton directions that still descend ``|F|^2``; at most :data:`KRYLOV_ITERATIONS`
    products). The polish is globalized by damping: a step is halved (down to 1/64) until
    ``|F|`` falls by the Armijo factor ``1 - 1e-4 alpha``, and the steps go on, up to
    :data:`KRYLOV_STEPS`, as long as each cuts ``|F|`` at least to
    :data:`POLISH_CONTRACTION` of the previous one; otherwise it gives up (the refinement
    continues). Returns ``(W, G, lam)`` at the smallest residual, ``lam`` clipped to
    ``>= 0``, or ``None`` when no step reduced the residual.
    """
    from scipy.sparse.linalg import LinearOperator, minres

    k, d, m = cols.spec.k, cols.spec.dim, cols.m
    n_w, n_g, n_l = k * d, d * m, int(np.count_nonzero(active))
    n = n_w + n_g + n_l
    values = lam[active].copy()
    F = _kkt_residual(cols, W, G, values, active)
    norm = start_norm = float(np.linalg.norm(F))
    size = max(1.0, float(np.sqrt(np.sum(W * W) + np.sum(G * G))))
    for _ in range(KRYLOV_STEPS):
        if norm <= 1e-14 * size:
            break
        L = np.zeros((k, m))
        L[active] = values
        Qs = cols.weighted(L)
        root = _kkt_scaling(cols, W, G, Qs, active) ** -0.5

        def product(v: np.ndarray, W=W, G=G, Qs=Qs, root=root) -> np.ndarray:
            v = root * np.ravel(v)
            dW, dG = v[:n_w].reshape(k, d), v[n_w : n_w + n_g].reshape(d, m)
            dL = np.zeros((k, m))
            dL[active] = v[n_w + n_g :]
            Qd = cols.weighted(dL)
            out = np.concatenate(
                [
                    (dW + Qs @ dG.T + Qd @ G.T).ravel(),
                    (dG + dW.T @ Qs + W.T @ Qd).ravel(),
                    -(cols.ratios(dW, G) + cols.ratios(W, dG))[active],
                ]
            )
            return root * out

        operator = LinearOperator((n, n), matvec=product, dtype=float)
        tol = min(1e-2, max(norm / size, 1e-10))
        step = root * minres(operator, -root * F, rtol=tol, maxiter=KRYLOV_ITERATIONS)[0]
        dW, dG = step[:n_w].reshape(k, d), step[n_w : n_w + n_g].reshape(d, m)
        dl = step[n_w + n_g :]
        alpha = 1.0
        while alpha >= 1.0 / 64:
            trial = _kkt_residual(cols, W + alpha * dW, G + alpha * dG, values + alpha * dl, active)
            trial_norm = float(np.linalg.norm(trial))
            if trial_norm < (1.0 - 1e-4 * alpha) * norm:
                break
            alpha *= 0.5
        else:
            break
        W, G, values = W + alpha * dW, G + alpha * dG, values + alpha * dl
        previous, norm, F = norm, trial_norm, trial
        if norm > POLISH_CONTRACTION * previous:
            break
    if not norm < start_norm:
        return None
    L = np.zeros((k, m))
    L[active] = np.maximum(values, 0.0)
    return W, G, L


def _tight_run(cols: _Columns, rng: np.random.Generator) -> _Run:
    """One start refined by the tight-margin reduction (:mod:`ucfm_svm.solvers.tight`).

    The start is random classifiers ``w_c = u_c / Delta_c`` in ``k - 1`` dimensions (``u_c``
    uniform on the unit sphere; the optimum has rank ``k - 1`` for every ``d >= k - 1``,
    docs/theory.md §2); L-BFGS minimizes the reduced cost ``f(W)``, whose class means keep every
    margin tight, and the point is padded with zeros to ``d`` dimensions. Its multipliers (those
    of the tight margins) and the polar factor of the point give the certified bound
    (:meth:`_Columns.bound`). The KKT residual of the all-margins system at such a point is
    the reduced gradient alone (the margins and the class means' stationarity hold by
    construction); when it is above :data:`KKT_ROUNDING`, the Newton polish of the joint route
    (:func:`_try_polish`) takes it on from there. Above :data:`OWN_LBFGS_VARIABLES` variables a
    progress bar counts the iterations and shows the cost.
    """
    spec = cols.spec
    k, d = spec.k, spec.dim
    U = rng.standard_normal((k, k - 1))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    large = (k + cols.m) * d > OWN_LBFGS_VARIABLES
    try:
        with progress(desc=f"tight-margin refinement (k={k})", unit="it", enabled=large) as bar:

            def advance(cost: float) -> None:
                bar.update(1)
                bar.set_postfix_str(f"cost {cost:.10g}", refresh=False)

            solved = minimize_tight(spec, U / spec.Delta[:, None], callback=advance)
    except ValueError as exc:
        return _Run(None, None, np.inf, -np.inf, 0, 0, f"{exc}", route="tight")
    tight = solved.point
    W = np.zeros((k, d))
    W[:, : k - 1] = tight.W
    G = np.zeros((d, k))
    G[: k - 1] = tight.H * cols.s[None, :]
    lam = tight.multipliers * cols.delta[None, :]  # the normalized constraints' multipliers
    run = _Run(None, None, np.inf, cols.bound(W, G, lam), solved.iterations, 0, solved.message,
               route="tight")
    point = _feasible(cols, W, G)
    if point is not None:
        run.W, run.G = point
        run.objective = geometry.class_objective(spec, point[0], cols.class_point(*point))
    size = float(np.sqrt(np.sum(W * W) + np.sum(G * G)))
    if float(np.linalg.norm(tight.gradient)) > KKT_ROUNDING * max(1.0, size):
        _try_polish(cols, run, W, G, lam, force=True)
    return run


def _certified(run: _Run) -> bool:
    return run.W is not None and run.objective - run.lower_bound <= CERTIFY_RTOL * run.objective


def _continuation(cols: _Columns, rng: np.random.Generator, rounds: int) -> _Run:
    """One more start, by continuation: solve the problems with scales ``Delta^t`` and margins
    ``delta^t`` for ``t`` in :data:`CONTINUATION` (``t = 0``-like problems are well balanced),
    each from the previous point, the first from a random start with ``rounds`` block steps.

    Only the last stage (``t = 1``, the problem itself) yields the returned run, its cost and
    its certified bound; the earlier stages only move the start. With large scale spreads (LDT
    gamma=-1, STEP R=1000, k=12) the refinement from random starts stalls at gaps ~1e-4 for
    every seed tried, while the path through gamma=-0.5 and -0.75 reaches the optimum.
    """
    spec = cols.spec
    W = G = None
    for t in CONTINUATION:
        stage = (
            spec
            if t == 1
            else Spec.custom(spec.counts, scales=spec.Delta**t, margins=spec.delta**t, dim=spec.dim)
        )
        stage_cols = _Columns(stage, cols.level)
        if W is None:
            W, G = _random_start(stage_cols, rng)
            if rounds > 0:
                W, G, _ = _alternate(stage_cols, BlockSteps(stage, stage_cols.labels), W, G, rounds)
        run = _refine(stage_cols, W, G, 0)
        if run.W is None:
            return run
        W, G = run.W, run.G
    return run


def _check_start(start: object, spec: Spec, cols: _Columns) -> tuple[np.ndarray, np.ndarray]:
    shapes = f"a pair (W, H) of finite arrays of shapes ({spec.k}, {spec.dim}) and " + (
        f"({spec.dim}, {cols.m})"
    )
    try:
        W, H = (np.asarray(a, dtype=float) for a in start)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise fail("start", shapes, type(start).__name__) from None
    if W.shape != (spec.k, spec.dim) or H.shape != (spec.dim, cols.m):
        raise fail("start", shapes, f"shapes {W.shape} and {H.shape}")
    if not (np.all(np.isfinite(W)) and np.all(np.isfinite(H))):
        raise fail("start", shapes, "non-finite entries")
    return W, H * cols.s[None, :]


def solve_nonconvex(
    spec: Spec,
    level: str = "class",
    restarts: int = 1,
    seed: int = 0,
    alternations: int | None = None,
    start: tuple[np.ndarray, np.ndarray] | None = None,
    refinement: str = "auto",
) -> Result:
    """Solve the UF-CS-SVM on ``(W, H)`` from ``restarts`` starts and certify the best point.

    Parameters
    ----------
    spec : Spec
        Any ``dim >= 1`` (``dim >= 2`` when ``k >= 3``, else no point is feasible). With
        ``dim < k - 1`` the bound is valid but not tight: the result is "not certified".
    level : {"class", "example"}
        Class level: ``W`` (k x d) and class means ``Hbar`` (d x k). Example level: ``W`` and
        ``H`` (d x n), one free column per example; collapse is measured, not assumed (``nc1``).
    restarts : int
        Number of starts (``>= 1``); the best feasible point is kept and every start's cost is
        reported in ``restart_objectives``. The lower bound is the best over all starts. When
        none certifies (``d >= k - 1``), one continuation start is added (module docstring);
        the result's ``restarts`` counts the starts made.
    seed : int
        Seed of the random starts (``>= 0``).
    alternations : int or None
        Rounds of exact block steps before the joint refinement; by default
        :data:`DEFAULT_ALTERNATIONS` of the level for ``k <=`` :data:`ALTERNATION_MAX_K`, else 0.
    start : (W, H) or None
        A start for the first run: ``W`` (k x d) and ``H`` (d x k class means, or d x n
        examples), refined jointly. The other runs start at random.
    refinement : {"auto", "joint", "tight"}
        How a random start is refined. ``"joint"``: the augmented Lagrangian on ``(W, H)``
        (module docstring). ``"tight"``: the tight-margin reduction (:func:`_tight_run`,
        docs/theory.md §18: L-BFGS on ``W`` alone, the class means keeping every margin tight),
        for ``d >= k - 1`` at the class level or under the example level's variable
        projection. ``"auto"`` (default): the tight one above :data:`OWN_LBFGS_VARIABLES`
        variables where it applies, and the joint one from a new random start when it does not
        certify; the joint one otherwise.

    Returns
    -------
    Result
        ``status`` "optimal" iff the relative gap to the certified bound is ``<= 1e-6``;
        ``iterations`` counts the kept run's alternation rounds and L-BFGS iterations. At the
        example level the result holds the class means ``Hbar`` of the examples' embeddings:
        a feasible point (margins are linear in each ``h_i``) no costlier than the examples'
        (Jensen); ``nc1`` says how far the examples were from it.

    Raises
    ------
    SpecError
        Bad level, restarts, seed, alternations, start or refinement (``"tight"`` where it
        does not apply); ``dim = 1`` with ``k >= 3``; a
        :func:`memory_estimate` above :data:`MEMORY_LIMIT` (raised before any work).
    SolverError
        No start reached a feasible point.
    """
    if level not in LEVELS:
        raise fail("level", "one of " + ", ".join(LEVELS), level)
    restarts = check_int("restarts", restarts, low=1, high=MAX_RESTARTS)
    seed = check_int("seed", seed, low=0)
    projected = level == "example" and start is None and _projects(spec)
    if alternations is None:
        # the variable projection solves the class-level program: its default block steps too
        # (without them LDT gamma = -1, counts 1000 x 3, 1 x 3 closed its gap with embedding
        # cosines 4e-3 off)
        solved = "class" if projected else level
        rounds = DEFAULT_ALTERNATIONS[solved] if spec.k <= ALTERNATION_MAX_K else 0
    else:
        rounds = check_int("alternations", alternations, low=0, high=MAX_ALTERNATIONS)
    if spec.dim == 1 and spec.k >= 3:
        raise fail(
            "dim",
            "at least 2 when k >= 3 (on a line at most two classes can each hold the "
            "largest scaled logit, so no point meets the margins)",
            spec.dim,
        )
    needed = memory_estimate(spec, level, rounds, projected=projected)
    if needed > MEMORY_LIMIT:
        raise SpecError(
            f"the non-convex solve ({level} level, k={spec.k}, d={spec.dim}"
            + (f", {rounds} block-step rounds" if rounds else "")
            + f") needs about {needed / 2**30:.1f} GiB, more than the {MEMORY_LIMIT / 2**30:.0f}"
            " GiB allowed; use --method theory or structured (the closed form, certified)"
            + (", or --alternations 0" if rounds else "")
            + ("" if level == "class" else ", or --level class")
        )
    columns = spec.k if level == "class" else spec.n
    if spec.dim > max(spec.k, columns) and (spec.k + columns) * spec.dim > MAX_VARIABLES:
        # for d >= k - 1 the optimum does not depend on d (docs/theory.md §2): extra dimensions
        # only multiply the work
        raise fail(
            "dim",
            f"at most max(k, columns) = {max(spec.k, columns)} here, or such that (k + columns) d "
            f"<= {MAX_VARIABLES:.0e} (the optimum is the same for every d >= k - 1)",
            spec.dim,
        )
    examples = _Columns(spec, level)
    given = None if start is None else _check_start(start, spec, examples)
    # Variable projection (docs/theory.md §15): the examples' exact H-step depends only on
    # their labels, so the refinement runs on the class means with weights n_c.
    cols = _Columns(spec, "class") if projected else examples
    tight = _tight_refinement(cols, refinement)

    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    steps = BlockSteps(spec, cols.labels) if rounds > 0 else None
    runs: list[_Run] = []
    notes: list[str] = []
    # Small matrices: threaded BLAS only adds synchronization (25x slower L-BFGS-B steps
    # measured on a shared 2-core machine); from THREADED_TERMS on the environment decides.
    small = spec.k * cols.m * spec.dim < THREADED_TERMS
    with threadpool_limits(limits=1, user_api="blas") if small else contextlib.nullcontext():
        for index in range(restarts):
            W, G = _random_start(cols, rng)
            if index == 0 and given is not None:
                W, G = given
            elif tight:
                run = _tight_run(cols, rng)
                if refinement == "tight" or _certified(run):
                    runs.append(run)
                    continue
                notes.append(
                    f"start {index}: the tight-margin reduction did not certify ({run.stopped}; "
                    f"relative gap {_gap(run):.1e}), so the start was refined jointly"
                )
            if steps is not None:
                W, G, note = _alternate(cols, steps, W, G, rounds)
                if note:
                    notes.append(f"start {index}: {note}")
            runs.append(_refine(cols, W, G, rounds))
        if spec.certifiable and refinement != "tight" and not any(_certified(r) for r in runs):
            runs.append(_continuation(cols, rng, rounds))
            notes.append("the last start is a continuation in the class scales and margins")
    seconds = time.perf_counter() - began

    feasible = [r for r in runs if r.W is not None]
    if not feasible:
        raise SolverError(
            f"No feasible point from {restarts} start(s) ({level} level, k={spec.k}, "
            f"d={spec.dim}): "
            + "; ".join(r.stopped for r in runs)
            + ". Try more --restarts or another --seed."
        )
    kept = min(feasible, key=lambda r: r.objective)
    lower = max(r.lower_bound for r in runs)
    if projected:
        kept, lower = _broadcast(examples, kept)
        notes.append(
            "example level by variable projection: each example's exact H-step depends only on "
            "its label, so the refinement ran on the class means with weights n_c; the point and "
            f"the bound were evaluated on the {spec.n} examples (docs/theory.md §15)"
        )
        cols = examples
    if not spec.certifiable:
        lower, note = _relaxed_bound(spec, lower)
        if note:
            notes.append(note)
    H = kept.G / cols.s[None, :]
    extra: dict[str, object] = {
        "iterations": kept.iterations,
        "restarts": len(runs),
        "restart_objectives": tuple(float(r.objective) for r in runs),
    }
    if level == "example":
        extra["nc1"] = geometry.nc1(H, cols.labels, spec.k)
    if kept.route == "tight":
        solver = "L-BFGS (tight-margin reduction)"
    else:
        refiner = "L-BFGS" if (spec.k + cols.m) * spec.dim > OWN_LBFGS_VARIABLES else "L-BFGS-B"
        solver = f"CLARABEL+{refiner}" if rounds > 0 else refiner
    result = Result.from_point(
        spec,
        kept.W,
        cols.class_point(kept.W, kept.G),
        method="nonconvex",
        level=level,
        lower_bound=lower,
        seconds=seconds,
        solver=solver,
        **extra,
    )
    return covered(dataclasses.replace(result, message=_message(result, kept, runs, notes)))


def _tight_refinement(cols: _Columns, refinement: str) -> bool:
    """Whether random starts go to the tight-margin reduction first (``refinement`` as in
    :func:`solve_nonconvex`, checked here)."""
    if refinement not in REFINEMENTS:
        raise fail("refinement", "one of " + ", ".join(REFINEMENTS), refinement)
    spec = cols.spec
    applies = cols.level == "class" and spec.certifiable
    if refinement == "tight" and not applies:
        raise fail(
            "refinement",
            "auto or joint here (the tight-margin reduction needs d >= k - 1, and the class "
            "level or the example level's variable projection, docs/theory.md §18)",
            refinement,
        )
    large = (spec.k + cols.m) * spec.dim > OWN_LBFGS_VARIABLES
    return refinement == "tight" or (refinement == "auto" and applies and large)


def _gap(run: _Run) -> float:
    return (run.objective - run.lower_bound) / run.objective if run.W is not None else np.inf


def _projects(spec: Spec) -> bool:
    """Whether an example-level solve without a given start uses the variable projection:
    above :data:`JOINT_EXAMPLE_VARIABLES` example-level variables (below it the examples'
    ``(W, H)`` are refined jointly and collapse has to emerge, an independent check)."""
    return (spec.k + spec.n) * spec.dim > JOINT_EXAMPLE_VARIABLES


def _broadcast(examples: _Columns, run: _Run) -> tuple[_Run, float]:
    """The class-level ``run`` as an example-level point, and its example-level bound.

    Every example of class ``c`` gets ``h_i = hbar_c`` (the unique solution of its H-step, the
    strictly convex QP ``min 1/2 ||h||^2`` s.t. ``(Delta_{y} w_{y} - Delta_c w_c)^T h >=
    delta_y``, whose data depend on ``i`` only through ``y_i``). The point's margins are
    checked on all ``k n`` example constraints (rescaled to feasibility if rounding broke one),
    its cost is the examples' ``1/2 (||W||^2 + ||H||^2)``, and the bound is
    :func:`certificate.example_lower_bound` of the polar-factor class multipliers spread over
    the examples (docs/theory.md §3, §15): nothing of the class-level certificate is reused.
    """
    spec = examples.spec
    W, Hbar = run.W, run.G / np.sqrt(spec.n_vec)[None, :]
    point = _feasible(examples, W, Hbar[:, examples.labels])
    if point is None:  # cannot happen for a feasible class point; kept as a guard
        raise SolverError("the class-level point is not feasible for the examples")
    W, H = point
    objective = 0.5 * (float(np.sum(W * W)) + float(np.sum(H * H)))
    lower = examples._candidate_bound(_polar_multipliers(spec, W, examples.class_point(W, H)))
    return dataclasses.replace(run, W=W, G=H, objective=objective), lower


def memory_estimate(
    spec: Spec, level: str = "class", alternations: int = 0, projected: bool | None = None
) -> int:
    """Estimated peak memory (bytes) of :func:`solve_nonconvex` before it starts.

    With ``m`` columns (``k`` at the class level and under the variable projection, ``n`` at
    the example level otherwise; ``projected=None`` is the default rule, :func:`_projects`):
    the refinement holds ``(k + m) d`` variables (:data:`REFINE_BYTES_PER_VARIABLE`) and
    ``k m`` constraints (:data:`REFINE_BYTES_PER_CONSTRAINT`), the projection's check of the
    examples ``k n`` more and ``H`` (d x n); block steps add :data:`BLOCK_BYTES_PER_TERM` per
    term ``k m d`` of their compiled programs.
    """
    if projected is None:
        projected = _projects(spec)
    k, d = spec.k, spec.dim
    m = k if level == "class" or projected else spec.n
    needed = REFINE_BYTES_PER_VARIABLE * (k + m) * d + REFINE_BYTES_PER_CONSTRAINT * k * m
    if m != spec.n and level == "example":  # variable projection: the examples' check
        needed += REFINE_BYTES_PER_CONSTRAINT * k * spec.n + 8 * d * spec.n
    if alternations > 0:
        needed += BLOCK_BYTES_PER_TERM * k * m * d
    return int(needed)


def _relaxed_bound(spec: Spec, lower: float) -> tuple[float, str]:
    """For ``d < k - 1``: the better of ``lower`` and the convex optimum's certified bound.

    Padding ``W`` and ``H`` with zeros embeds the ``d``-dimensional problem in the one with
    ``d = k - 1``, whose optimum the class-level convex solve bounds from below (docs/theory.md §2,
    §3):
    valid for both levels, but not tight for small ``d``.
    """
    try:
        convex = solve_convex(spec.with_dim(spec.k - 1), level="class")
    except SolverError as exc:
        return lower, f"the convex bound was not available ({exc})"
    return max(lower, convex.lower_bound), ""


def _message(result: Result, kept: _Run, runs: list[_Run], notes: list[str]) -> str:
    spec = result.spec
    objectives = np.array([r.objective for r in runs])
    low, high = np.min(objectives), np.max(objectives)
    spread = (
        f"; best of {len(runs)} starts, costs {low:.10g} to {high:.10g} "
        f"(relative spread {(high - low) / low:.1e})"
        if len(runs) > 1
        else ""
    )
    how = (
        f"{kept.iterations} L-BFGS iterations of the tight-margin reduction"
        + (" and a Newton polish" if kept.polished else "")
        if kept.route == "tight"
        else f"{kept.outer} augmented-Lagrangian rounds"
    )
    reached = (
        f"objective {result.objective:.10g}, lower bound {result.lower_bound:.10g}, "
        f"relative gap {result.rel_gap:.2e} after {how} ({kept.stopped}){spread}"
    )
    tail = "".join(f"; {note}" for note in notes)
    if result.certified:
        return "certified global optimum: " + reached + tail
    if not spec.certifiable:
        why = (
            f"with d = {spec.dim} < k - 1 = {spec.k - 1} the convex bound is not tight, so this "
            "feasible point is not certified as a global optimum"
        )
    else:
        why = "the gap did not close; try more --restarts or another --seed"
    return f"reached {reached}; {why}{tail}"
