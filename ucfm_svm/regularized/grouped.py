"""The class-level regularized program reduced by the symmetry of tied classes.

docs/theory.md §13.6.

Classes with equal ``(n_c, w_c, iota_c, m_c, Delta_c, delta_c)`` are exchangeable: permuting
them (rows and columns of ``M`` together, ``b`` accordingly) leaves the convex program of
:mod:`ucfm_svm.regularized.solver` unchanged, so averaging a minimizer over the permutations
gives a minimizer in the fixed-point algebra. With ``m`` groups of sizes ``k_g``, group
indicator unit vectors ``u_g = 1_g / sqrt(k_g)`` and ``P_g`` the projector onto the centred
vectors of group ``g`` (dimension ``k_g - 1``), that algebra is

    M = sum_{g,h} T_{hg} u_h u_g^T + sum_g alpha_g P_g,     b constant on each group,

an orthogonal decomposition, so ``||M||_* = ||T||_* + sum_g (k_g - 1) |alpha_g|`` and
``||M||_F^2 = ||T||_F^2 + sum_g (k_g - 1) alpha_g^2``. A class of group ``g`` has logits
``T_{hg} / sqrt(k_g k_h n_g) + b_h`` on the classes of another group ``h``,
``(T_{gg} - alpha_g) / (k_g sqrt(n_g)) + b_g`` on the other classes of its own group and
``alpha_g`` more on itself. The loss of a column is a softmax cross-entropy over ``m + 1``
distinct logits with multiplicities (``k_h``, ``k_g - 1`` for its own group, 1 for the true
class). The reduced program (``m^2 + 2m`` numbers) is solved by L-BFGS on balanced factors
``T = W V``, ``alpha_g = x_g y_g / (k_g - 1)`` (the factorized penalty ``lambda/2 (||W||^2 +
||V||^2 + ||x||^2 + ||y||^2)`` is the full-space one), then by trust-region Newton
(``trust-krylov``) on the same factors, dropping vanishing and adding escape directions between
rounds; accelerated proximal-gradient steps in the full-space metric (singular-value
thresholding of ``T``, soft thresholding of ``alpha``) are the last resort. Every stage stops on
the reduced duality gap.

The reduction is not trusted: the point is expanded to ``k x k`` and certified by the
full-size dual bound of :func:`ucfm_svm.regularized.solver.dual_bound`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..result import CERTIFY_RTOL, Result
from ..solvers.lbfgs import minimize_lbfgs
from ..spec import Spec
from .losses import LossParams, params_from_spec

#: Singular values of ``T`` and ``|alpha_g|`` below this fraction of the largest are dropped
#: when the point is expanded (the full-size certificate is computed on what is kept).
RANK_RTOL = 1e-12
#: Steps between two reduced duality-gap checks of the proximal stage.
CHECK_EVERY = 10
#: Accelerated proximal-gradient steps at most.
PROX_STEPS = 200_000
#: L-BFGS steps before the trust-region Newton stage takes over.
LBFGS_STEPS = 2000
#: Trust-region Newton steps at most per stage (a degenerate minimum such as M = 0 at
#: lambda >= lambda_0 is approached sublinearly; the gap, not gtol, decides there).
TRUST_STEPS = 200
#: Newton steps at most of the final polish (:func:`_newton_polish`), and conjugate-gradient
#: iterations at most per step.
POLISH_STEPS, CG_STEPS, CG_RTOL = 8, 500, 1e-4
#: Rounds of L-BFGS, each after dropping the vanishing directions and adding escapes.
ROUNDS = 8
#: Relative size below which a singular value of ``T`` or an ``alpha_g`` is dropped.
DROP_RTOL = 1e-4
#: Above this many groups the factors start at the estimated rank of :func:`start_rank`
#: (times ``RANK_MARGIN``, plus ``RANK_EXTRA``) instead of ``m``.
RANK_FROM, RANK_MARGIN, RANK_EXTRA = 200, 1.25, 8
#: Escape test and size of the added directions (as in :mod:`ucfm_svm.regularized.solver`).
ESCAPE_RTOL, ESCAPE_SCALE = 1e-9, 1e-2


@dataclass(frozen=True)
class Groups:
    """Classes grouped by identical count and loss parameters.

    Attributes
    ----------
    of_class : (k,) int array, the group of each class
    size : (m,) int array, ``k_g``
    first : (m,) int array, one class of each group (its parameters are the group's)
    """

    of_class: np.ndarray
    size: np.ndarray
    first: np.ndarray

    @property
    def m(self) -> int:
        """Number of groups."""
        return self.size.size


def class_groups(params: LossParams, counts: np.ndarray) -> Groups:
    """Group the classes whose count and loss parameters are exactly equal."""
    table = np.column_stack([
        np.asarray(counts, dtype=float), params.weights, params.offsets, params.true_margins,
        params.scales, params.temperatures,
    ])
    _, first, of_class, size = np.unique(
        table, axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    return Groups(of_class.ravel(), size, first)


class Reduced:
    """The reduced program of one specification and lambda (see the module docstring).

    Arrays indexed by group: ``n`` (count), ``kg`` (size), ``w``, ``iota``, ``marg``, ``Dl``
    (``Delta``), ``dl`` (``delta``). Rows ``0..m-1`` of the reduced logit matrix ``Zr``
    ((m+1) x m, one column per group) are the logits of a non-true class of each group, row
    ``m`` the true class; ``mult`` holds the multiplicities (``k_h - [h = g]``, and 1).
    """

    def __init__(self, spec: Spec, params: LossParams, groups: Groups, lam: float,
                 bias: str, lambda_w: float) -> None:
        i = groups.first
        self.groups = groups
        self.m = m = groups.m
        self.n = spec.n_vec[i].astype(float)
        self.N = float(spec.n)
        self.kg = groups.size.astype(float)
        self.w, self.iota, self.marg = params.weights[i], params.offsets[i], params.true_margins[i]
        self.Dl, self.dl = params.scales[i], params.temperatures[i]
        self.lam, self.bias, self.lambda_w = lam, bias, lambda_w
        self.a = self.n / self.N
        self.mult = np.vstack([self.kg[:, None] - np.eye(m), np.ones((1, m))])
        self.rowD = np.vstack([np.repeat(self.Dl[:, None], m, axis=1), self.Dl[None, :]])
        self.rowiota = np.vstack([np.repeat(self.iota[:, None], m, axis=1), self.iota[None, :]])
        self.pair = np.sqrt(np.outer(self.kg, self.kg)) * np.sqrt(self.n)[None, :]
        self.sq = np.sqrt(self.n)
        self.has_alpha = self.kg >= 2
        self.km1 = np.maximum(self.kg - 1.0, 1.0)

    def logits(self, T: np.ndarray, alpha: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``Zr`` of the algebra point ``(T, alpha, b)``."""
        Z = np.empty((self.m + 1, self.m))
        Z[: self.m] = T / self.pair + b[:, None]
        diag = np.diag(T) / (self.kg * self.sq)
        Z[np.arange(self.m), np.arange(self.m)] -= alpha / (self.kg * self.sq)
        Z[self.m] = diag + alpha * (1.0 - 1.0 / self.kg) / self.sq + b
        return Z

    def softmax(self, Z: np.ndarray) -> tuple[float, np.ndarray]:
        """``f`` and the per-class softmax ``p`` ((m+1) x m; a row's classes share one value)."""
        m = self.m
        u = (self.rowD * Z + self.rowiota) / self.dl[None, :]
        u[m] -= self.marg / self.dl
        live = self.mult > 0
        top = np.where(live, u, -np.inf).max(axis=0)
        e = np.where(live, np.exp(u - top[None, :]), 0.0)
        total = (self.mult * e).sum(axis=0)
        p = e / total[None, :]
        loss = self.w * (np.log(total) + top - u[m])
        return float(np.sum(self.kg * self.a * loss)), p

    def dual_q(self, p: np.ndarray) -> np.ndarray:
        """Per-class dual entries ``q = a_g w_g Delta (p - e_true) / delta_g`` ((m+1) x m)."""
        E = p.copy()
        E[self.m] -= 1.0
        return self.rowD * E * (self.a * self.w / self.dl)[None, :]

    def gradient(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(df/dT, df/dalpha, df/db)`` from the softmax (partial derivatives of the reduced f)."""
        return self.pull_back(self.dual_q(p))

    def pull_back(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The adjoint of :meth:`logits` applied to per-class logit derivatives ``q``."""
        m = self.m
        dZ = self.mult * q * self.kg[None, :]  # aggregated over multiplicities
        gT = dZ[:m] / self.pair
        idx = np.arange(m)
        gT[idx, idx] += dZ[m] / (self.kg * self.sq)
        galpha = (-dZ[idx, idx] / self.kg + dZ[m] * (1.0 - 1.0 / self.kg)) / self.sq
        galpha = np.where(self.has_alpha, galpha, 0.0)
        gb = dZ[:m].sum(axis=1) + dZ[m]
        return gT, galpha, gb

    def hessian_times(self, p: np.ndarray, dT: np.ndarray, dalpha: np.ndarray,
                      db: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The Hessian of the reduced ``f`` at softmax ``p`` times ``(dT, dalpha, db)``:
        ``dp = p (du - sum_r mult_r p_r du_r)`` for the adjusted-logit change ``du``."""
        du = self.rowD * self.logits(dT, dalpha, db) / self.dl[None, :]
        dp = p * (du - (self.mult * p * du).sum(axis=0)[None, :])
        return self.pull_back(self.rowD * dp * (self.a * self.w / self.dl)[None, :])

    def penalty(self, T: np.ndarray, alpha: np.ndarray, b: np.ndarray) -> float:
        """``lambda ||M||_*`` (+ the ridge bias term) of the algebra point."""
        value = self.lam * (float(np.linalg.svd(T, compute_uv=False).sum())
                            + float(np.sum((self.kg - 1.0) * np.abs(alpha))))
        if self.bias == "ridge":
            value += 0.5 * self.lambda_w * float(np.sum(self.kg * b * b))
        return value

    def dual(self, p: np.ndarray) -> float:
        """The Fenchel dual value of :func:`~ucfm_svm.regularized.solver.dual_bound` at the
        invariant dual point of per-class softmax ``p``, evaluated in the algebra.

        At an invariant point ``X = Q S^{-1}`` is in the algebra, so ``||X||_2 =
        max(||X_T||_2, max_g |x_own - x_same|)`` with ``X_T[h, g] = sqrt(k_h k_g) x[h, g]``
        off the diagonal and ``(k_g - 1) x_same + x_own`` on it.
        """
        m, idx = self.m, np.arange(self.m)
        p = p.copy()
        B = self.a * self.w / self.dl
        if self.bias == "free":
            q = self.dual_q(p)
            r = (self.kg[None, :] * q[:m]).sum(axis=1) - q[idx, idx] + q[m]
            rho = r / self.Dl
            pos = rho > 0
            kappa = float(np.min(B[pos] / rho[pos])) if np.any(pos) else math.inf
            if math.isfinite(kappa):
                mix = 1.0 / (1.0 + kappa)
                pi = np.maximum(B - (1.0 - mix) / mix * rho, 0.0) / float(np.sum(self.kg * B))
                p = (1.0 - mix) * p
                p[:m] += mix * pi[:, None]
                p[m] += mix * pi
        q = self.dual_q(p)
        X = q / self.sq[None, :]
        XT = np.sqrt(np.outer(self.kg, self.kg)) * X[:m]
        XT[idx, idx] = (self.kg - 1.0) * X[idx, idx] + X[m]
        spec_norm = float(np.linalg.norm(XT, 2))
        if np.any(self.has_alpha):
            spec_norm = max(spec_norm, float(np.max(np.abs(X[m] - X[idx, idx])[self.has_alpha])))
        ratio = spec_norm / self.lam
        scale = min(1.0, 1.0 / ratio) if ratio > 0 else 1.0
        p *= scale
        p[m] += 1.0 - scale
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = (self.mult * np.where(p > 0, p * np.log(p), 0.0)).sum(axis=0)
        E = p.copy()
        E[m] -= 1.0
        offsets = (self.mult * self.rowiota * E).sum(axis=0) - self.marg * E[m]
        conj = self.w * (plogp - offsets / self.dl)
        value = -float(np.sum(self.kg * self.a * conj))
        if self.bias == "ridge":
            q = scale * q
            r = (self.kg[None, :] * q[:m]).sum(axis=1) - q[idx, idx] + q[m]
            value -= float(np.sum(self.kg * r * r)) / (2.0 * self.lambda_w)
        return value

    def gap(self, T: np.ndarray, alpha: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        """The reduced objective and its relative duality gap."""
        value, p = self.softmax(self.logits(T, alpha, b))
        objective = value + self.penalty(T, alpha, b)
        return objective, (objective - self.dual(p)) / max(abs(objective), 1e-300)


def expand(groups: Groups, T: np.ndarray, alpha: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Balanced factors ``(W, V)`` (k x r, r x k) with ``W V = M`` and ``||W||^2 = ||V||^2 =
    ||M||_*``, from the SVD of ``T`` lifted by the group indicators and, for each
    ``alpha_g != 0``, an orthonormal (Helmert) basis of the centred vectors of group ``g``;
    and their Grams ``W W^T = E U S U^T E^T + sum_g |alpha_g| P_g``, ``V^T V`` likewise (in
    ``O(k^2)``; ``E`` the lifted indicators)."""
    k = groups.of_class.size
    U, s, Vt = np.linalg.svd(T)
    # directions at rounding level of the largest are dropped, so that the rank means something
    floor = RANK_RTOL * max(float(s.max(initial=0.0)), float(np.max(np.abs(alpha), initial=0.0)))
    keep = s > floor
    E = np.zeros((k, groups.m))
    E[np.arange(k), groups.of_class] = 1.0 / np.sqrt(groups.size[groups.of_class])
    root = np.sqrt(s[keep])
    Ws, Vs = [(E @ U[:, keep]) * root[None, :]], [root[:, None] * (Vt[keep] @ E.T)]
    left = E @ ((U[:, keep] * s[keep][None, :]) @ U[:, keep].T) @ E.T
    right = E @ ((Vt[keep].T * s[keep][None, :]) @ Vt[keep]) @ E.T
    for g in np.flatnonzero((np.abs(alpha) > floor) & (groups.size >= 2)):
        members = np.flatnonzero(groups.of_class == g)
        size = members.size
        j = np.arange(1, size)
        basis = np.zeros((k, size - 1))
        lower = np.arange(size)[:, None] < j[None, :]
        diagonal = np.where(np.arange(size)[:, None] == j[None, :], j, 0)
        basis[members] = lower.astype(float) - diagonal
        basis[members] /= np.sqrt(j * (j + 1.0))[None, :]
        c = math.sqrt(abs(alpha[g]))
        Ws.append(basis * (c * math.copysign(1.0, alpha[g])))
        Vs.append(basis.T * c)
        block = np.ix_(members, members)
        projector = np.eye(size) - 1.0 / size
        left[block] += abs(alpha[g]) * projector
        right[block] += abs(alpha[g]) * projector
    return np.hstack(Ws), np.vstack(Vs), (left, right)


def _factor_stage(red: Reduced, start: tuple[np.ndarray, ...], mask: np.ndarray, gtol: float,
                  maxiter: int) -> tuple[tuple[np.ndarray, ...], int]:
    """L-BFGS, then trust-region Newton, on the factors ``(W, V, x, y, sqrt(k) b)`` of the
    reduced program over lambda.

    ``W`` is m x r, ``V`` r x m; ``x_g, y_g`` are frozen at 0 where ``mask`` is false. Stops
    at ``gtol`` or a stall, never at a reduced gap: a small gap leaves a collapsed optimum's
    vanishing directions unpinned (k = 300, LDAM, free bias: gap 1e-7 with a classifier Gram
    3e6 times the optimum's and a bias 0.09 off).
    """
    from scipy.optimize import minimize

    m, lam = red.m, red.lam
    r = start[0].shape[1]
    has_bias = red.bias != "none"
    ridge = red.lambda_w / lam if red.bias == "ridge" else 0.0
    mask = mask.astype(float)
    rk = np.sqrt(red.kg)
    nw = m * r
    sizes = np.cumsum([nw, nw, m, m])

    def split(z: np.ndarray) -> tuple[np.ndarray, ...]:
        W, V, x, y, bs = np.split(z, sizes)
        return W.reshape(m, r), V.reshape(r, m), x * mask, y * mask, bs

    def point(parts: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        W, V, x, y, bs = parts
        return W @ V, x * y / red.km1, bs / rk if has_bias else np.zeros(m)

    cache: dict[str, object] = {}

    def state(z: np.ndarray) -> tuple[float, np.ndarray, tuple[np.ndarray, ...]]:
        if cache.get("z") is None or not np.array_equal(cache["z"], z):
            value, p = red.softmax(red.logits(*point(split(z))))
            cache.update(z=z.copy(), value=value, p=p, grad=red.gradient(p))
        return cache["value"], cache["p"], cache["grad"]

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        W, V, x, y, bs = split(z)
        value, _, (gT, ga, gb) = state(z)
        if not math.isfinite(value):  # a trial step too far (overflowed logits): rejected
            return math.inf, np.zeros_like(z)
        fac = z[: sizes[3]]
        obj = value / lam + 0.5 * float(fac @ fac)
        grads = [(gT @ V.T / lam + W).ravel(), (W.T @ gT / lam + V).ravel(),
                 (ga * y / red.km1 / lam + x) * mask, (ga * x / red.km1 / lam + y) * mask]
        if has_bias:
            grads.append(gb / rk / lam + ridge * bs)
            obj += 0.5 * ridge * float(bs @ bs)
        return obj, np.concatenate(grads)

    def hessp(z: np.ndarray, dz: np.ndarray) -> np.ndarray:
        W, V, x, y, _ = split(z)
        dW, dV, dx, dy, dbs = split(dz)
        _, p, (gT, ga, _) = state(z)
        dT = dW @ V + W @ dV
        da = (dx * y + x * dy) / red.km1
        hT, ha, hb = red.hessian_times(p, dT, da, dbs / rk if has_bias else np.zeros(m))
        out = [((hT @ V.T + gT @ dV.T) / lam + dW).ravel(), ((dW.T @ gT + W.T @ hT) / lam
               + dV).ravel(), ((ha * y + ga * dy) / red.km1 / lam + dx) * mask,
               ((ha * x + ga * dx) / red.km1 / lam + dy) * mask]
        if has_bias:
            out.append(hb / rk / lam + ridge * dbs)
        return np.concatenate(out)

    W, V, x, y, bs = start
    z0 = np.concatenate([W.ravel(), V.ravel(), x * mask, y * mask, bs if has_bias else []])
    first = minimize_lbfgs(fun, z0, gtol=gtol, maxiter=min(maxiter, LBFGS_STEPS), memory=20)
    if first.message == "gradient below gtol" or first.nit >= maxiter:
        return split(first.x), first.nit
    with np.errstate(over="ignore", invalid="ignore"):
        res = minimize(fun, first.x, jac=True, hessp=hessp, method="trust-krylov",
                       options={"gtol": gtol, "maxiter": min(maxiter - first.nit, TRUST_STEPS)})
    z, nit = (res.x, first.nit + res.nit) if (np.all(np.isfinite(res.x))
                                              and res.fun <= first.fun) else (first.x, first.nit)
    z, steps = _newton_polish(fun, hessp, z, gtol)
    return split(z), nit + steps


def _conjugate_gradient(apply: Callable[[np.ndarray], np.ndarray], rhs: np.ndarray,
                        steps: int) -> np.ndarray:
    """Approximately solve ``A x = rhs`` for a positive semi-definite ``A`` (given by its
    product) by conjugate gradients from ``x = 0``, stopping at ``steps`` iterations, at a
    relative residual of ``CG_RTOL`` or where the curvature is not positive (the factored
    objective is not convex)."""
    x = np.zeros_like(rhs)
    r = rhs.copy()
    d = r.copy()
    rr = float(r @ r)
    stop = CG_RTOL**2 * rr
    for _ in range(steps):
        Ad = apply(d)
        curv = float(d @ Ad)
        if not curv > 0:
            break
        step = rr / curv
        x += step * d
        r -= step * Ad
        rr_new = float(r @ r)
        if rr_new <= stop:
            break
        d = r + (rr_new / rr) * d
        rr = rr_new
    return x


def _newton_polish(fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
                   hessp: Callable[[np.ndarray, np.ndarray], np.ndarray], z: np.ndarray,
                   gtol: float) -> tuple[np.ndarray, int]:
    """Full Newton steps (conjugate gradients on the Hessian products) from ``z``, each kept
    only if it lowers the gradient norm, until ``max |grad| <= gtol`` or a step does not.

    The trust-region stage stops where the objective's decrease is below its rounding (the
    factored objective over lambda is ``1e4`` at k = 1000, its rounding ``1e-12``) and reports
    a failure to predict improvement, while the first-order residual that the geometry bound
    of docs/theory.md §13.7 needs is still ``1e-9`` relative; the gradient is not limited by
    the objective's rounding, so Newton's quadratic convergence takes it to rounding in one or
    two steps."""
    value, grad = fun(z)
    norm = float(np.linalg.norm(grad))
    done = 0
    while done < POLISH_STEPS and math.isfinite(value) and float(np.max(np.abs(grad),
                                                                       initial=0.0)) > gtol:
        trial = z + _conjugate_gradient(lambda v, z=z: hessp(z, v), -grad, CG_STEPS)
        value_new, grad_new = fun(trial)
        norm_new = float(np.linalg.norm(grad_new))
        if not (math.isfinite(value_new) and norm_new < norm):
            break
        z, value, grad, norm = trial, value_new, grad_new, norm_new
        done += 1
    return z, done


def _refactor(red: Reduced, T: np.ndarray, alpha: np.ndarray, b: np.ndarray
              ) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Balanced factors of ``(T, alpha, b)`` without the directions that are vanishing, plus
    the escape directions of the gradient (docs/theory.md §13.6).

    Singular values of ``T`` below ``DROP_RTOL`` times the largest and ``alpha_g`` below
    ``DROP_RTOL`` times the largest are dropped (the factorization approaches a zero slowly,
    like ``1/t``); then every singular pair of ``-df/dT`` with ``sigma > lambda (1 +
    ESCAPE_RTOL)`` and every ``g`` with ``|df/dalpha_g| / (k_g - 1) > lambda (1 +
    ESCAPE_RTOL)`` is added back with a small size (a descent direction of the convex
    program). The mask marks the ``alpha_g`` kept free.
    """
    U, s, Vt = np.linalg.svd(T)
    keep = s > DROP_RTOL * max(float(s[0]) if s.size else 0.0, 1e-300)
    root = np.sqrt(s[keep])
    W, V = U[:, keep] * root[None, :], root[:, None] * Vt[keep]
    big = np.abs(alpha) > DROP_RTOL * max(float(np.max(np.abs(alpha))), 1e-300)
    mask = red.has_alpha & big
    _, p = red.softmax(red.logits(T, alpha, b))
    gT, ga, _ = red.gradient(p)
    Ug, sg, Vgt = np.linalg.svd(-gT)
    grow = sg > red.lam * (1.0 + ESCAPE_RTOL)
    step = np.sqrt(ESCAPE_SCALE * (sg[grow] - red.lam) / red.lam)
    W = np.hstack([W, Ug[:, grow] * step[None, :]])
    V = np.vstack([V, Vgt[grow] * step[:, None]])
    unit = np.abs(ga) / red.km1
    escape = red.has_alpha & ~mask & (unit > red.lam * (1.0 + ESCAPE_RTOL))
    c = np.sqrt(np.abs(alpha) * red.km1)
    c[escape] = np.sqrt(ESCAPE_SCALE * (unit[escape] - red.lam) / red.lam)
    sign = np.where(escape, -np.sign(ga), np.sign(alpha))
    mask = mask | escape
    x, y = np.where(mask, c * sign, 0.0), np.where(mask, c, 0.0)
    return (W, V, x, y, b * np.sqrt(red.kg)), mask


def _svt(X: np.ndarray, tau: float) -> np.ndarray:
    U, s, Vt = np.linalg.svd(X)
    s = np.maximum(s - tau, 0.0)
    keep = s > 0
    return (U[:, keep] * s[keep][None, :]) @ Vt[keep]


def _prox_stage(red: Reduced, params: LossParams, T: np.ndarray, alpha: np.ndarray,
                b: np.ndarray, steps: int, target: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Accelerated proximal gradient (FISTA with function-value restart) in the full metric.

    The steps are those of :func:`ucfm_svm.regularized.solver.polish` (block Lipschitz
    bounds of the full program): ``T <- SVT_{t lambda}(T - t df/dT)``, ``alpha_g <-
    soft_{t lambda}(alpha_g - t (df/dalpha_g) / (k_g - 1))``, ``b_h <- b_h - t_b (df/db_h /
    k_h + [ridge] lambda_W b_h)``.
    """
    has_bias = red.bias != "none"
    ridge = red.lambda_w if red.bias == "ridge" else 0.0
    h = params.weights * params.scales.max() ** 2 / (2 * params.temperatures**2)
    factor = 2.0 if has_bias else 1.0
    t = red.N / (factor * float(h.max()))
    t_b = 1.0 / (factor * float(np.sum(red.kg * red.a * h[red.groups.first])) + ridge)
    x = (T, alpha, b)
    y = x
    theta = 1.0
    last = math.inf
    done = 0
    for done in range(1, steps + 1):
        _, p = red.softmax(red.logits(*y))
        gT, ga, gb = red.gradient(p)
        T1 = _svt(y[0] - t * gT, t * red.lam)
        a1 = y[1] - t * ga / red.km1
        a1 = np.where(red.has_alpha, np.sign(a1) * np.maximum(np.abs(a1) - t * red.lam, 0.0), 0.0)
        b1 = y[2] - t_b * (gb / red.kg + ridge * y[2]) if has_bias else y[2]
        new = (T1, a1, b1)
        gap = red.gap(*new)[1] if done % CHECK_EVERY == 0 else math.inf
        if gap <= target:
            return T1, a1, b1, done
        value = red.softmax(red.logits(*new))[0] + red.penalty(*new)
        if value > last:  # restart the momentum
            theta, y, last = 1.0, x, math.inf
            continue
        theta_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * theta * theta))
        beta = (theta - 1.0) / theta_next
        y = tuple(n + beta * (n - o) for n, o in zip(new, x, strict=True))
        x, theta, last = new, theta_next, value
    return (*x, done)


def start_rank(red: Reduced) -> int:
    """The factor rank to start from: all ``m`` up to ``RANK_FROM`` groups, else
    ``RANK_MARGIN`` times the number of singular values of ``-df/dT`` at ``(T, alpha, b) = 0``
    above ``lambda`` (the directions along which ``M = 0`` is left, docs/theory.md §13.8), plus
    ``RANK_EXTRA``, at most ``m``.

    An estimate, not a bound: measured against the optimum's rank (singular values above
    ``1e-6`` of the largest) at ``lambda_0 / 2``, CE, ``--longtail 200,100 --n-max 1000``:
    60 for 59, ``--longtail 400,100 --n-max 2000``: 120 for 120. A start below the optimum's
    rank shows as a gap and the escape rounds of :func:`solve_grouped` add the missing
    directions.
    """
    m = red.m
    if m <= RANK_FROM:
        return m
    _, p = red.softmax(red.logits(np.zeros((m, m)), np.zeros(m), np.zeros(m)))
    sig = np.linalg.svd(red.gradient(p)[0], compute_uv=False)
    return min(m, math.ceil(RANK_MARGIN * int(np.sum(sig > red.lam))) + RANK_EXTRA)


def solve_grouped(
    spec: Spec,
    reg: object,
    *,
    gtol: float = 1e-12,
    maxiter: int = 20_000,
    seed: int = 0,
    rtol: float = CERTIFY_RTOL,
) -> tuple[Result, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The class-level regularized minimizer by the symmetry reduction, certified at full size.

    ``reg`` is a :class:`~ucfm_svm.regularized.solver.Regularization`; needs ``spec.dim >= k``
    (no rank constraint, so the reduced optimum is feasible). The reduced program is solved
    to ``gtol`` (factor stages, then the proximal stage if its reduced relative gap is still
    above ``rtol / 10``); the expanded point's :class:`Result` carries the full-size
    certificate.
    """
    from .solver import _assemble, _Columns

    t0 = time.perf_counter()
    params = params_from_spec(spec)
    groups = class_groups(params, spec.n_vec)
    red = Reduced(spec, params, groups, reg.lam, reg.bias, reg.lambda_w)
    certify = rtol / 10
    m = groups.m
    rng = np.random.default_rng(seed)
    r = start_rank(red)
    start = (0.1 * rng.standard_normal((m, r)), 0.1 * rng.standard_normal((r, m)),
             0.1 * rng.standard_normal(m), 0.1 * rng.standard_normal(m), np.zeros(m))
    mask = red.has_alpha
    nit = 0
    for _ in range(ROUNDS):
        (W, V, x, y, bs), it = _factor_stage(red, start, mask, gtol, maxiter - nit)
        nit += it
        T, alpha = W @ V, x * y / red.km1
        b = bs / np.sqrt(red.kg) if reg.bias != "none" else np.zeros(m)
        gap = red.gap(T, alpha, b)[1]
        if gap <= certify or nit >= maxiter:  # the stage ran to gtol or its caps
            break
        start, mask = _refactor(red, T, alpha, b)
    if red.gap(T, alpha, b)[1] > certify:
        T, alpha, b, steps = _prox_stage(red, params, T, alpha, b, PROX_STEPS, certify)
        nit += steps
    W, V, grams = expand(groups, T, alpha)
    return _assemble(spec, reg, "class", params, _Columns(spec, "class"), W, V,
                     b[groups.of_class], nit, t0, rtol, f"grouped ({groups.m} groups)", grams)
