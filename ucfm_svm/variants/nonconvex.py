"""The factored problem of the model variants on ``(W, b, H)``, certified by their bounds.

Class level (collapse holds in both variants, docs/theory.md §11, §12), variables ``W`` (k x d),
``G = Hbar N^{1/2}`` (d x k, ``>= 0`` with non-negative features) and, with a free bias,
``b`` (k, unregularized). Margins (normalized): ``r_c'c = 1 - m_c'c / delta_c <= 0`` with
``m_c'c = Delta_c (w_c^T g_c / sqrt(n_c) + b_c) - Delta_c' (w_c'^T g_c / sqrt(n_c) + b_c')``.
The augmented Lagrangian (Powell-Hestenes-Rockafellar)::

    L_mu = 1/2 (||W||^2 + ||G||^2) + 1/(2 mu) sum max(0, lam + mu r)^2

is minimized by L-BFGS-B (bounds ``G >= 0`` for non-negative features: a projected
quasi-Newton method) in Jacobi-scaled variables (:meth:`_Problem.jacobi`, recomputed every
outer round), ``lam <- max(0, lam + mu r)``, ``mu`` raised tenfold when the violation
does not fall fourfold (and is above :data:`FEASIBILITY_TOL`). The last iterate is then
polished by Newton steps on the KKT system of the active margins (and, with non-negative
features, of the face of ``G >= 0``) read from the point (:func:`_newton`, docs/theory.md §11
"Routes"); the convex routes polish their points the same way (:func:`polish_point`). Points
are rescaled to exact feasibility (``(W, G) * t``, ``b * t^2``: the margins are homogeneous of
degree 2) and certified by the model's weak-duality bound
(:mod:`ucfm_svm.variants.certificate`) evaluated on the refinement's or the polish's own
multipliers ``lam_c'c / delta_c``; no closed form or convex solve is used.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from threadpoolctl import threadpool_limits

from ..errors import SolverError
from ..result import CERTIFY_RTOL, Result
from ..spec import Spec
from ..validation import check_int, fail
from . import certificate
from ._common import point_result

#: Largest violation accepted as feasible before the final rescaling.
FEASIBILITY_TOL = 1e-10
#: Outer rounds and inner L-BFGS-B iterations.
MAX_OUTER = 80
MAX_INNER = 5000
#: Relative gap at which a run stops (a tenth of the certification tolerance).
TARGET_RTOL = 0.1 * CERTIFY_RTOL
#: Exponents ``t`` of the continuation start (:func:`_continuation`), ending at the problem.
CONTINUATION = (0.5, 0.75, 1.0)
#: Margins with normalized slack below this (or a positive multiplier) enter the Newton
#: polish's first active set (:func:`_polished`).
ACTIVE_TOL = 1e-4
#: Multipliers above this fraction of the largest mark a margin as active (:func:`_polished`).
SUPPORT_TOL = 1e-6
#: Entries of a column of ``G`` at most this fraction of its largest are held at zero by the
#: polish with non-negative features (the face of ``G >= 0`` the point lies on).
ZERO_TOL = 1e-6
#: Largest KKT system (unknowns) the polish solves densely (its Jacobian takes one pair of
#: residuals per unknown; k = 20, d = 20 is about 1200).
MAX_POLISH_UNKNOWNS = 1500
#: A polished point is kept unless its cost exceeds the best one's by more than this
#: (relative): costs that agree to rounding can hide geometry ~1e-7 apart (the square root of
#: the difference), and the polished point is the one that solves the KKT system.
PREFER_POLISHED = 1e-12


class _Problem:
    """Layout of the variables ``x = (W, G[, b])`` and the margins of one variant."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.k, self.d = spec.k, spec.dim
        self.root = np.sqrt(spec.n_vec)
        self.off = 1.0 - np.eye(self.k)
        self.bias = spec.bias == "free"
        self.nonnegative = spec.features == "nonnegative"

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k, d = self.k, self.d
        W = x[: k * d].reshape(k, d)
        G = x[k * d : 2 * k * d].reshape(d, k)
        b = x[2 * k * d :] if self.bias else np.zeros(k)
        return W, G, b

    def logits(self, W: np.ndarray, G: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``Delta (W Hbar + b 1^T)`` (k x k, column c = class c)."""
        return self.spec.Delta[:, None] * ((W @ G) / self.root[None, :] + b[:, None])

    def violations(self, W: np.ndarray, G: np.ndarray, b: np.ndarray) -> np.ndarray:
        Z = self.logits(W, G, b)
        margins = np.diag(Z)[None, :] - Z
        return (1.0 - margins / self.spec.delta[None, :]) * self.off

    def stationarity(
        self, W: np.ndarray, G: np.ndarray, b: np.ndarray, P: np.ndarray
    ) -> np.ndarray:
        """``x + sum_j P_j grad r_j(x)``: the gradient in ``x = (W, G[, b])`` of the cost plus
        ``sum_j P_j r_j`` (``P`` k x k, zero diagonal)."""
        E = P * self.off / self.spec.delta[None, :]
        K = self.spec.Delta[:, None] * (np.diag(E.sum(axis=0)) - E)  # sum_j E_j grad m_j
        Ks = K / self.root[None, :]
        parts = [(W - Ks @ G.T).ravel(), (G - W.T @ Ks).ravel()]
        if self.bias:
            parts.append(-K.sum(axis=1))
        return np.concatenate(parts)

    def jacobi(self, x: np.ndarray, mu: float) -> np.ndarray:
        """Diagonal scaling ``1 / sqrt(h)`` of the L-BFGS variables at ``x``, per variable.

        ``h`` bounds the diagonal of the Hessian of ``L_mu`` by blocks (as for the paper's
        model, docs/theory.md §8): ``1`` from the cost plus ``mu`` times the squared gradients
        of the normalized margins through each row ``w_c``
        (``Delta_c^2 ((k-1) ||g_c||^2 / (n_c delta_c^2) + sum_{c' != c} ||g_c'||^2 /
        (n_c' delta_c'^2))``), each column ``g_c``
        (``sum_c' ||Delta_c w_c - Delta_c' w_c'||^2 / (n_c delta_c^2)``) and each bias ``b_c``
        (``Delta_c^2 ((k-1) / delta_c^2 + sum_{c' != c} 1 / delta_c'^2)``, no cost term).
        """
        W, G, _ = self.unpack(x)
        spec, k, d = self.spec, self.k, self.d
        Delta, delta, n = spec.Delta, spec.delta, spec.n_vec
        per = np.sum(G * G, axis=0) / (n * delta**2)
        h_w = 1.0 + mu * Delta**2 * ((k - 1) * per + (per.sum() - per))
        SW = Delta[:, None] * W
        sq = np.sum(SW * SW, axis=1)
        diff2 = (sq[:, None] + sq[None, :] - 2.0 * (SW @ SW.T)) * self.off  # [c', c]
        h_g = 1.0 + mu * diff2.sum(axis=0) / (n * delta**2)
        parts = [np.repeat(h_w, d), np.tile(h_g, d)]
        if self.bias:
            inv = 1.0 / delta**2
            parts.append(mu * Delta**2 * ((k - 1) * inv + (inv.sum() - inv)))
        return np.concatenate(parts) ** -0.5

    def lagrangian(self, x: np.ndarray, lam: np.ndarray, mu: float) -> tuple[float, np.ndarray]:
        W, G, b = self.unpack(x)
        P = np.maximum(0.0, lam + mu * self.violations(W, G, b)) * self.off
        value = 0.5 * (np.sum(W * W) + np.sum(G * G)) + np.sum(P * P) / (2.0 * mu)
        return value, self.stationarity(W, G, b, P)

    def bounds(self) -> list[tuple[float | None, float | None]] | None:
        if not self.nonnegative:
            return None
        k, d = self.k, self.d
        free = [(None, None)] * (k * d)
        return free + [(0.0, None)] * (d * k) + ([(None, None)] * k if self.bias else [])

    def lower_bound(self, lam: np.ndarray) -> float:
        raw = lam / self.spec.delta[None, :]
        if self.nonnegative:
            M = certificate.fill_nonnegativity_multipliers(self.spec, raw)
            return certificate.dnn_lower_bound(self.spec, raw, M, bias=self.bias)
        return certificate.bias_lower_bound(self.spec, raw)

    def feasible(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        W, G, b = self.unpack(x)
        if self.nonnegative:
            G = np.clip(G, 0.0, None)
        ratio = float(np.min((1.0 - self.violations(W, G, b))[self.off > 0]))
        if not ratio > 0:
            return None
        t = np.sqrt(1.0 / ratio) if ratio < 1 else 1.0
        return W * t, G * t, b * t * t

    def cost(self, W: np.ndarray, G: np.ndarray) -> float:
        return 0.5 * float(np.sum(W * W) + np.sum(G * G))


def _newton(
    problem: _Problem, x: np.ndarray, lam: np.ndarray, active: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Newton steps on the KKT system of the active margins ``active`` (k x k booleans).

    Unknowns: the free variables of ``x`` (with non-negative features, the entries of a column
    of ``G`` at most :data:`ZERO_TOL` of its largest are held at zero: the face of
    ``G >= 0`` read from the point) and the multipliers ``lam_A``. Equations: stationarity
    ``x + sum_{j in A} lam_j grad r_j(x) = 0`` in the free variables and ``r_A(x) = 0``. The
    system is quadratic in the unknowns, so central differences give its Jacobian exactly (up
    to rounding); the steps are
    :func:`ucfm_svm.solvers.nonconvex.newton_least_squares`, as for the paper's model. Returns
    ``(x, lam)`` (``lam`` clipped to ``>= 0``) or ``None`` (also when the system has more than
    :data:`MAX_POLISH_UNKNOWNS` unknowns); only a candidate: the caller certifies it.
    """
    from ..solvers.nonconvex import newton_least_squares

    k, d = problem.k, problem.d
    x = x.copy()
    free = np.ones(x.size, dtype=bool)
    if problem.nonnegative:
        G = x[k * d : 2 * k * d].reshape(d, k)
        top = np.maximum(G.max(axis=0, keepdims=True), 0.0)
        zero = np.less_equal(G, ZERO_TOL * top)
        G[zero] = 0.0
        free[k * d : 2 * k * d] = ~zero.ravel()
    rows, cols = np.nonzero(active)
    n_free = int(free.sum())
    if n_free + rows.size > MAX_POLISH_UNKNOWNS:
        return None

    def residual(z: np.ndarray) -> np.ndarray:
        y = x.copy()
        y[free] = z[:n_free]
        W, G, b = problem.unpack(y)
        P = np.zeros((k, k))
        P[rows, cols] = z[n_free:]
        stationary = problem.stationarity(W, G, b, P)[free]
        return np.concatenate([stationary, problem.violations(W, G, b)[rows, cols]])

    def jacobian(z: np.ndarray) -> np.ndarray:
        J = np.empty((n_free + rows.size, z.size))
        for i in range(z.size):
            e = np.zeros(z.size)
            e[i] = 1.0
            J[:, i] = 0.5 * (residual(z + e) - residual(z - e))
        return J

    # Start the multipliers at the least-squares solution of stationarity at x (affine in
    # lam_A); the augmented Lagrangian's estimate can be far off after mu grew large.
    z0 = np.concatenate([x[free], lam[rows, cols]])
    if not np.all(np.isfinite(z0[:n_free])):
        return None
    B = jacobian(z0)[:n_free, n_free:]
    try:
        z0[n_free:] = np.linalg.lstsq(B, B @ z0[n_free:] - residual(z0)[:n_free], rcond=None)[0]
    except np.linalg.LinAlgError:
        return None
    z = newton_least_squares(residual, jacobian, z0, n_free)
    if z is None:
        return None
    x[free] = z[:n_free]
    polished = np.zeros((k, k))
    polished[rows, cols] = np.maximum(z[n_free:], 0.0)
    return x, polished


def _polished(
    problem: _Problem, x: np.ndarray, lam: np.ndarray
) -> list[tuple[tuple, float, float, np.ndarray]]:
    """:func:`_newton` from ``(x, lam)`` on three guesses of the active set: the margins whose
    multiplier exceeds :data:`SUPPORT_TOL` of the largest (a solver's duals are ~1e-10 on slack
    margins), those plus the margins with slack below :data:`ACTIVE_TOL`, and all of them (as
    for the paper's model); each outcome as ``(feasible point, its cost, its certified
    bound, its multipliers)`` (multipliers of the normalized margins)."""
    W, G, b = problem.unpack(x)
    off = problem.off > 0
    supported = (lam > SUPPORT_TOL * lam.max(initial=0.0)) & off
    near = ((problem.violations(W, G, b) > -ACTIVE_TOL) & off) | supported
    guesses = [supported, near, off]
    out = []
    for i, active in enumerate(guesses):
        if any(np.array_equal(active, g) for g in guesses[:i]):
            continue
        polished = _newton(problem, x, lam, active)
        if polished is None:
            continue
        point = problem.feasible(polished[0])
        if point is not None:
            cost, bound = problem.cost(point[0], point[1]), problem.lower_bound(polished[1])
            out.append((point, cost, bound, polished[1]))
            if cost - bound <= PREFER_POLISHED * cost:  # closed to rounding: the KKT point
                break
    return out


@dataclasses.dataclass(frozen=True)
class Polished:
    """Outcome of :func:`polish_point`.

    Attributes
    ----------
    W, H_mean, b : arrays
        The best feasible point (``b`` is ``None`` without a bias).
    lower_bound : float
        The best certified bound of the polished multipliers (``-inf`` if none).
    kept : bool
        Whether a polished point was kept.
    multipliers : (k, k) array
        Raw margin multipliers of the kept point (the given ones when none was kept).
    """

    W: np.ndarray
    H_mean: np.ndarray
    b: np.ndarray | None
    lower_bound: float
    kept: bool
    multipliers: np.ndarray


def polish_point(
    spec: Spec, W: np.ndarray, H_mean: np.ndarray, b: np.ndarray | None, lam: np.ndarray
) -> Polished:
    """A convex route's point ``(W, H_mean, b)`` and margin multipliers ``lam`` (raw, for
    ``margin >= delta``) polished by :func:`_newton`: the best feasible point among the given
    one (rescaled) and the polished ones (:class:`Polished`)."""
    problem = _Problem(spec)
    parts = [W.ravel(), (H_mean * problem.root[None, :]).ravel()]
    x = np.concatenate(parts + ([b] if problem.bias else []))
    best = problem.feasible(x)
    best_cost = np.inf if best is None else problem.cost(best[0], best[1])
    bound, kept, multipliers = -np.inf, False, lam
    for point, cost, lower, polished in _polished(problem, x, lam * spec.delta[None, :]):
        bound = max(bound, lower)
        if cost <= best_cost * (1.0 + PREFER_POLISHED):
            best, best_cost, kept = point, cost, True
            multipliers = polished / spec.delta[None, :]
    if best is None:
        raise SolverError("The convex point violates the margins beyond repair.")
    Wp, Gp, bp = best
    return Polished(
        Wp, Gp / problem.root[None, :], bp if problem.bias else None, bound, kept, multipliers
    )


def _scales(problem: _Problem) -> np.ndarray:
    """Per-variable scales ``D`` of the random start (``x = D y`` with unit rows and columns
    ``y``).

    A class whose margin is ``delta_c`` with count ``n_c`` balances at
    ``||g_c|| ~ (n_c delta_c^2)^{1/4}`` and ``||w_c|| ~ (n_c delta_c^2)^{1/4} / Delta_c``
    (the margin ``Delta_c w_c^T g_c / sqrt(n_c) ~ delta_c`` with equal halves of the cost), and
    ``b_c ~ delta_c / Delta_c``: a start of the right size for every class when counts and
    margins spread over orders of magnitude (LDT gamma = -0.9 on counts 1..281).
    """
    spec = problem.spec
    size = (spec.n_vec * spec.delta**2) ** 0.25
    w = np.repeat(size / spec.Delta, problem.d)
    g = np.tile(size, problem.d)
    parts = [w, g] + ([spec.delta / spec.Delta] if problem.bias else [])
    return np.concatenate(parts)


def _run(
    problem: _Problem, rng: np.random.Generator, start: np.ndarray | None = None
) -> tuple[tuple | None, float, float, int]:
    """One start (random, or ``start`` as a vector ``x``); returns the best feasible point
    ``(W, G, b)``, its cost, the best bound and the outer rounds used."""
    k, d = problem.k, problem.d
    D = _scales(problem)
    W = rng.standard_normal((k, d))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    G = rng.standard_normal((d, k))
    G /= np.linalg.norm(G, axis=0, keepdims=True)
    if problem.nonnegative:
        G = np.abs(G)
    y = np.concatenate([W.ravel(), G.ravel()] + ([np.zeros(k)] if problem.bias else []))
    if start is not None:
        y = start / D
    x = D * y
    mu = max(0.5 * float(x @ x), 1.0)
    lam = np.zeros((k, k))
    best, best_cost, best_bound = None, np.inf, -np.inf
    previous_violation = np.inf
    from scipy.optimize import minimize  # 0.3 s: imported where it is used

    def scaled(
        y: np.ndarray, lam: np.ndarray, mu: float, D: np.ndarray
    ) -> tuple[float, np.ndarray]:
        value, grad = problem.lagrangian(D * y, lam, mu)
        return value, D * grad

    outer = 0
    while outer < MAX_OUTER:
        outer += 1
        D = problem.jacobi(x, mu)
        res = minimize(
            scaled,
            x / D,
            args=(lam, mu, D),
            jac=True,
            method="L-BFGS-B",
            bounds=problem.bounds(),
            options={"maxiter": MAX_INNER, "ftol": 1e-15, "gtol": 1e-12, "maxcor": 30},
        )
        x = D * res.x
        W, G, b = problem.unpack(x)
        r = problem.violations(W, G, b)
        lam = np.maximum(0.0, lam + mu * r) * problem.off
        violation = float(r.max())
        point = problem.feasible(x)
        if point is not None:
            cost = problem.cost(point[0], point[1])
            if cost < best_cost:
                best, best_cost = point, cost
        best_bound = max(best_bound, problem.lower_bound(lam))
        if violation <= FEASIBILITY_TOL and best_cost - best_bound <= TARGET_RTOL * best_cost:
            break
        if violation > max(0.25 * previous_violation, FEASIBILITY_TOL):
            mu *= 10.0
        previous_violation = violation
    # Newton polish of the last iterate: the gap may be closed while the light classes'
    # geometry is still ~sqrt(gap) off; the KKT point is exact to rounding.
    for point, cost, bound, _ in _polished(problem, x, lam):
        best_bound = max(best_bound, bound)
        if cost <= best_cost * (1.0 + PREFER_POLISHED):
            best, best_cost = point, cost
    return best, best_cost, best_bound, outer


def _continuation(spec: Spec, rng: np.random.Generator) -> tuple[tuple | None, float, float, int]:
    """One more start by continuation: the problems with scales ``Delta^t`` and margins
    ``delta^t`` for ``t`` in :data:`CONTINUATION`, each started at the previous point (as the
    paper-model solver does, docs/theory.md §8). Only the last stage (``t = 1``) counts."""
    x = None
    for t in CONTINUATION:
        stage = spec
        if t < 1:
            stage = Spec.custom(
                spec.counts, scales=spec.Delta**t, margins=spec.delta**t, dim=spec.dim
            ).with_model(spec.bias, spec.features)
        run = _run(_Problem(stage), rng, x)
        if run[0] is None:
            return run
        x = np.concatenate([a.ravel() for a in run[0]][: 3 if stage.bias == "free" else 2])
    return run


def solve_variant_nonconvex(spec: Spec, restarts: int = 1, seed: int = 0) -> Result:
    """Solve a variant's factored problem from ``restarts`` random starts; certify the best.

    Parameters
    ----------
    spec : Spec
        ``bias == "free"`` and/or ``features == "nonnegative"``; ``dim >= 2`` when ``k >= 3``.
        The bound is valid for any ``d`` and tight when ``d >= k`` (non-negative features) or
        ``d >= k - 1`` (free bias).
    restarts, seed : int
        Number of random starts (``>= 1``) and their seed (``>= 0``). When none certifies, one
        continuation start (:func:`_continuation`) is added.

    Returns
    -------
    Result
        Status ``"optimal"`` iff the relative gap to the bound is ``<= CERTIFY_RTOL``.
    """
    restarts = check_int("restarts", restarts, low=1)
    seed = check_int("seed", seed, low=0)
    if spec.dim == 1 and spec.k >= 3:
        raise fail("dim", "at least 2 when k >= 3 (no point meets the margins on a line)", spec.dim)
    problem = _Problem(spec)
    rng = np.random.default_rng(seed)
    began = time.perf_counter()
    runs = []
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(restarts):
            runs.append(_run(problem, rng))
        if not any(r[0] is not None and r[1] - r[2] <= CERTIFY_RTOL * r[1] for r in runs):
            runs.append(_continuation(spec, rng))
    seconds = time.perf_counter() - began
    feasible = [r for r in runs if r[0] is not None]
    if not feasible:
        raise SolverError(
            f"No feasible point from {restarts} start(s) (k={spec.k}, d={spec.dim}). "
            "Try more --restarts or another --seed."
        )
    (W, G, b), _, _, outer = min(feasible, key=lambda r: r[1])
    lower = max(r[2] for r in runs)
    result = point_result(
        spec,
        W,
        G / problem.root[None, :],
        b if problem.bias else None,
        method="nonconvex",
        lower_bound=lower,
        seconds=seconds,
        solver="L-BFGS-B",
        iterations=outer,
        restarts=len(runs),
        restart_objectives=tuple(float(r[1]) for r in runs),
    )
    reached = (
        f"objective {result.objective:.10g}, lower bound {lower:.10g}, relative gap "
        f"{result.rel_gap:.2e} (augmented Lagrangian, {outer} rounds, best of {len(runs)} "
        f"start{'s' if len(runs) > 1 else ''}"
        + (", the last a continuation in the scales and margins)" if len(runs) > restarts else ")")
    )
    if result.certified:
        message = "certified global optimum: " + reached
    else:
        message = (
            f"reached {reached}; the gap did not close: try more --restarts or another --seed"
            " (the bound is tight only for d >= k with non-negative features, d >= k - 1 with a"
            " bias)"
        )
    return dataclasses.replace(result, message=message)
