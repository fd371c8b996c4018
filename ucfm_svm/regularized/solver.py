"""The regularized UFM at finite weight decay, solved globally and certified (docs/theory.md §13).

The problem (``N = sum_c n_c`` examples, loss ``l`` of :mod:`ucfm_svm.regularized.losses`)::

    min_{W, H, b}  (1/N) sum_i l(y_i, W h_i + b) + lambda_W/2 ||W||_F^2 + lambda_H/2 ||H||_F^2
                   (+ lambda_W/2 ||b||^2 with ``bias="ridge"``)

For fixed ``(W, b)`` the objective is strictly convex and separable in the ``h_i``, so every
minimizer is collapsed (``h_i = hbar_{y_i}``) and the ``H`` penalty is ``sum_c n_c ||hbar_c||^2
= ||V||_F^2`` with ``V = Hbar D^{1/2}``, ``D = diag(n_c)``. Since ``min {lambda_W/2 ||W||^2 +
lambda_H/2 ||V||^2 : W V = M} = lambda ||M||_*`` with ``lambda = sqrt(lambda_W lambda_H)``
(``d >= rank M``), the problem equals the convex class-level program::

    min_{M, b}  f(M, b) + lambda ||M||_*,   f(M, b) = sum_c (n_c/N) l(c, M_c / sqrt(n_c) + b),

with logits ``z_c = W hbar_c + b = M_c / sqrt(n_c) + b``. It is solved by L-BFGS on the balanced
factorization ``M = W V`` (``W`` is ``k x r``, ``V`` is ``r x k``, ``r = min(d, k)``) and
certified by a Fenchel dual point built from the softmax probabilities at the point reached
(:func:`dual_bound`): the gap ``objective - dual`` bounds the suboptimality whatever the solver
did. At the example level the same code runs with one column per example (``V = H``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .. import geometry
from ..result import (
    CERTIFY_RTOL,
    GEOMETRY_NOT_CERTIFIED,
    GEOMETRY_RTOL,
    NOT_CERTIFIED,
    OPTIMAL,
    Result,
)
from ..spec import Spec
from ..validation import check_float, check_int, fail
from .losses import LossParams, adjusted_logits, params_from_spec

if TYPE_CHECKING:
    from scipy.optimize import OptimizeResult

#: Bias options: no bias, a free (unpenalized) bias, a bias decayed like ``W``.
BIASES = ("none", "free", "ridge")
#: Levels: collapsed class means (weighted by ``n_c``) or one embedding per example.
LEVELS = ("class", "example")
#: Largest ``k N`` at the example level (``W H`` is ``k x N``).
EXAMPLE_MAX_ENTRIES = 20_000_000
#: Rank of the random start; the rank grows by escape directions (:func:`solve_factors`), at
#: most doubling per round, for at most ``MAX_ROUNDS`` rounds.
START_RANK, MAX_ROUNDS = 32, 12
#: Escape when ``sigma_1(-grad_M f) > lambda (1 + ESCAPE_RTOL)``; the new factor columns have
#: squared size ``ESCAPE_SCALE (sigma - lambda) / lambda``.
ESCAPE_RTOL, ESCAPE_SCALE = 1e-9, 1e-2
#: Proximal-gradient steps of :func:`polish`, at most.
POLISH_STEPS = 5000
#: Above this many classes the rank adapts (from ``START_RANK``) and L-BFGS stops at a tenth of
#: the certified gap instead of at ``gtol``; up to it the factors have full rank ``min(d, k)``.
EARLY_STOP_K = 200
#: Iterations between two duality-gap checks when stopping early.
CHECK_EVERY = 40
#: Routes of :func:`solve_regularized`.
ROUTES = ("auto", "grouped", "factors")
#: Up to this many classes, a class-level result whose gap is certified but whose geometry bound
#: is not (docs/theory.md §13.7) is refined by :func:`polish` (dense SVDs: ``O(k^3)`` a step).
POLISH_MAX_K = 32
#: Largest memory of a regularized solve, and the number of ``k x m`` arrays it is counted in.
CLASS_MAX_BYTES, ARRAYS = 6 * 2**30, 16
#: :func:`solve_zero` declines without the Newton steps on a bias when the column/row-norm
#: bound of the gradient at ``b = 0`` exceeds this many ``lambda``.
ZERO_SKIP = 2.0
#: Newton steps at most of :func:`bias_at_zero` (quadratic convergence: about 10 are taken),
#: and the relative Newton decrement below which it takes one last full step and stops
#: (measured: the decrements' rounding floor is near 1e-19 at counts 100,100,1,1).
BIAS_STEPS, BIAS_DECREMENT = 60, 1e-16


@dataclass(frozen=True)
class Regularization:
    """Weight decays and bias of the regularized UFM.

    Attributes
    ----------
    lambda_w, lambda_h : float
        ``lambda_W, lambda_H > 0``.
    bias : {"none", "free", "ridge"}
        ``ridge`` adds ``lambda_W/2 ||b||^2`` (the bias is decayed with the classifier).
    """

    lambda_w: float
    lambda_h: float
    bias: str = "none"

    def __post_init__(self) -> None:
        for name in ("lambda_w", "lambda_h"):
            value = check_float(name, getattr(self, name), low=0.0, low_open=True)
            object.__setattr__(self, name, value)
        if self.bias not in BIASES:
            raise fail("bias", "one of " + ", ".join(BIASES), self.bias)

    @classmethod
    def from_lambda(cls, lam: float, bias: str = "none") -> Regularization:
        """``lambda_W = lambda_H = lam``."""
        lam = check_float("lambda", lam, low=0.0, low_open=True)
        return cls(lam, lam, bias)

    @property
    def lam(self) -> float:
        """``lambda = sqrt(lambda_W lambda_H)``, the weight of the nuclear norm."""
        return math.sqrt(self.lambda_w * self.lambda_h)

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return {
            "lambda_w": self.lambda_w,
            "lambda_h": self.lambda_h,
            "lambda": self.lam,
            "bias": self.bias,
        }


class _Columns:
    """The columns of the convex program: class level (one per class) or example level.

    Column ``j`` has label ``y_j``, weight ``a_j`` (``n_c/N`` or ``1/N``) and root ``s_j``
    (``sqrt(n_c)`` or 1): its logits are ``M_j / s_j + b``.
    """

    def __init__(self, spec: Spec, level: str) -> None:
        n = spec.n_vec
        if level == "class":
            self.labels = np.arange(spec.k)
            self.a = n / spec.n
            self.root = np.sqrt(n)
        else:
            self.labels = spec.labels
            self.a = np.full(spec.n, 1.0 / spec.n)
            self.root = np.ones(spec.n)
        self.m = self.labels.size


def _primal(
    params: LossParams, cols: _Columns, Z: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """``f = sum_j a_j l(y_j, z_j)``, the softmax ``P`` of the adjusted logits, the gradient ``Q``.

    ``Q_j = a_j w_{y_j} / delta_{y_j} * Delta * (p_j - e_{y_j})`` is ``df/dz_j``, its true-class
    entry ``p_yj - 1 = -sum_{c != y_j} p_cj`` summed without cancellation. One exponential per
    entry (the cost at k = 1000 is in these k x m passes).
    """
    idx = np.arange(cols.m)
    u = adjusted_logits(params, Z, cols.labels)
    top = u.max(axis=0)
    true = u[cols.labels, idx] - top
    np.subtract(u, top[None, :], out=u)
    np.exp(u, out=u)
    total = u.sum(axis=0)
    u /= total[None, :]
    coef = cols.a * params.weights[cols.labels]
    value = float(np.sum(coef * (np.log(total) - true)))
    Q = u.copy()
    # 1 - p_y as the sum of the other probabilities: every entry of Q then has a relative
    # rounding error (p_y - 1 would lose eps absolute however small 1 - p_y is, §13.7)
    Q[cols.labels, idx] = 0.0
    Q[cols.labels, idx] = -Q.sum(axis=0)
    Q *= params.scales[:, None]
    Q *= (coef / params.temperatures[cols.labels])[None, :]
    return value, u, Q


def _spectral_norm(X: np.ndarray) -> float:
    """``||X||_2`` from the eigenvalues of the smaller Gram, inflated by a rounding margin."""
    G = X @ X.T if X.shape[0] <= X.shape[1] else X.T @ X
    top = float(np.linalg.eigvalsh(G)[-1])
    return math.sqrt(max(top, 0.0)) * (1.0 + 10.0 * G.shape[0] * np.finfo(float).eps)


def dual_bound(
    params: LossParams,
    cols: _Columns,
    P: np.ndarray,
    lam: float,
    bias: str,
    lambda_w: float,
) -> tuple[float, dict]:
    """A Fenchel dual value ``<= `` the optimum, from softmax columns ``P`` (docs/theory.md §13).

    The dual of ``min_{M, b} sum_j a_j l_j(M_j/s_j + b) + lambda ||M||_* (+ ridge)`` is::

        max_Q  -sum_j a_j l_j^*(q_j / a_j) - [ridge] ||sum_j q_j||^2 / (2 lambda_W)
        s.t.   ||Q S^{-1}||_2 <= lambda,   [free bias]  sum_j q_j = 0,

    and for the CE family, with ``q_j = a_j w_j Delta (p_j - e_{y_j}) / delta_{y_j}`` and ``p_j``
    in the simplex, ``l_j^*(q_j/a_j) = w_j [sum_c p_cj log p_cj - <p_j - e_{y_j}, t_j>]`` with
    ``t_j = (iota - m_{y_j} e_{y_j}) / delta_{y_j}``. The point is made feasible in two steps
    that keep every ``p_j`` in the simplex: with a free bias, ``p_j <- (1-s) p_j + s pi`` with
    the smallest ``s`` and a common ``pi`` that zero ``sum_j q_j``; then ``p_j <- t p_j + (1-t)
    e_{y_j}`` with ``t = min(1, lambda / ||Q S^{-1}||_2)``.

    Returns
    -------
    value : float
    info : dict
        ``spectral_ratio`` (``||Q S^{-1}||_2 / lambda`` before the rescaling), ``mix`` (``s``),
        ``scale`` (``t``).
    """
    labels = cols.labels
    idx = np.arange(cols.m)
    beta = cols.a * params.weights[labels] / params.temperatures[labels]

    def q_of(Pm: np.ndarray) -> np.ndarray:
        E = Pm.copy()
        E[labels, idx] -= 1.0
        return params.scales[:, None] * E * beta[None, :]

    P = P.copy()
    mix = 0.0
    if bias == "free":
        rho = q_of(P).sum(axis=1) / params.scales
        B = np.bincount(labels, weights=beta, minlength=params.k)
        total = float(B.sum())
        pos = rho > 0
        kappa = float(np.min(B[pos] / rho[pos])) if np.any(pos) else math.inf
        if math.isfinite(kappa):
            mix = 1.0 / (1.0 + kappa)
            pi = np.maximum(B - (1.0 - mix) / mix * rho, 0.0)
            pi /= total
            P = (1.0 - mix) * P + mix * pi[:, None]
    Q = q_of(P)
    X = Q / cols.root[None, :]
    ratio = _spectral_norm(X) / lam
    scale = min(1.0, 1.0 / ratio) if ratio > 0 else 1.0
    P *= scale
    P[labels, idx] += 1.0 - scale
    Q *= scale
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(P > 0, P * np.log(P), 0.0).sum(axis=0)
    Pm = P.copy()
    Pm[labels, idx] -= 1.0
    offsets = (params.offsets[:, None] * Pm).sum(axis=0)
    offsets -= params.true_margins[labels] * Pm[labels, idx]
    conj = params.weights[labels] * (plogp - offsets / params.temperatures[labels])
    value = -float(np.sum(cols.a * conj))
    if bias == "ridge":
        r = Q.sum(axis=1)
        value -= float(r @ r) / (2.0 * lambda_w)
    return value, {"spectral_ratio": ratio, "mix": mix, "scale": scale}


def _top_singular(X: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``count`` largest singular triplets of ``X`` (k x m, k <= m), from the top
    eigenpairs of ``X X^T``."""
    from scipy.linalg import eigh

    k = X.shape[0]
    count = min(count, k)
    vals, U = eigh(X @ X.T, subset_by_index=[k - count, k - 1])
    vals, U = vals[::-1], U[:, ::-1]
    sig = np.sqrt(np.maximum(vals, 0.0))
    Vt = (U.T @ X) / np.maximum(sig, np.finfo(float).tiny)[:, None]
    return U, sig, Vt


def _lbfgs(
    params: LossParams,
    cols: _Columns,
    reg: Regularization,
    W: np.ndarray,
    V: np.ndarray,
    b: np.ndarray,
    gtol: float,
    maxiter: int,
    target_gap: float | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """L-BFGS on ``F / lambda`` over the factors ``(W, V)`` (and ``b``) at a fixed rank.

    ``F = f(W V, b) + lambda/2 (||W||^2 + ||V||^2) (+ lambda_W/2 ||b||^2)``. With
    ``target_gap``, every ``CHECK_EVERY`` iterations the relative duality gap of
    :func:`dual_bound` is computed and the run stops once it is below ``target_gap``.
    """
    from scipy.optimize import minimize

    k, r = W.shape
    m = V.shape[1]
    lam = reg.lam
    has_bias = reg.bias != "none"
    ridge = reg.lambda_w / lam if reg.bias == "ridge" else 0.0
    nw, nv = k * r, r * m

    def unpack(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        Wx = x[:nw].reshape(k, r)
        Vx = x[nw : nw + nv].reshape(r, m)
        bx = x[nw + nv :] if has_bias else np.zeros(k)
        return Wx, Vx, bx

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        Wx, Vx, bx = unpack(x)
        value, _, Q = _primal(params, cols, (Wx @ Vx) / cols.root[None, :] + bx[:, None])
        GM = Q / cols.root[None, :]
        parts = [(GM @ Vx.T / lam + Wx).ravel(), (Wx.T @ GM / lam + Vx).ravel()]
        obj = value / lam + 0.5 * float(x[: nw + nv] @ x[: nw + nv])
        if has_bias:
            parts.append(Q.sum(axis=1) / lam + ridge * bx)
            obj += 0.5 * ridge * float(bx @ bx)
        return obj, np.concatenate(parts)

    def check(intermediate_result: OptimizeResult) -> None:
        check.calls += 1
        if target_gap is None or check.calls % CHECK_EVERY:
            return
        Wx, Vx, bx = unpack(intermediate_result.x)
        _, P, _ = _primal(params, cols, (Wx @ Vx) / cols.root[None, :] + bx[:, None])
        objective = lam * float(intermediate_result.fun)
        lower, _ = dual_bound(params, cols, P, lam, reg.bias, reg.lambda_w)
        if objective - lower <= target_gap * abs(objective):
            raise StopIteration

    check.calls = 0
    x0 = np.concatenate([W.ravel(), V.ravel()] + ([b] if has_bias else []))
    options = {"maxiter": max(maxiter, 1), "maxfun": 2 * max(maxiter, 1), "gtol": gtol,
               "ftol": 1e-16, "maxcor": 20}
    res = minimize(fun, x0, jac=True, method="L-BFGS-B", callback=check, options=options)
    Wx, Vx, bx = unpack(res.x)
    return Wx, Vx, bx.copy(), int(res.nit)


def _check_example_size(spec: Spec) -> None:
    if spec.k * spec.n > EXAMPLE_MAX_ENTRIES:
        raise fail(
            "level",
            f"'class' for k * n = {spec.k * spec.n} > {EXAMPLE_MAX_ENTRIES} (the example level "
            "stores k x n logits; the class level gives the same optimum, docs/theory.md §13)",
            "example",
        )


def solve_regularized(spec: Spec, reg: Regularization, *, route: str = "auto",
                      **options: object) -> Result:
    """The regularized UFM's certified global minimizer.

    ``route``: ``"grouped"`` (:func:`ucfm_svm.regularized.grouped.solve_grouped`, the program
    reduced by the symmetry of tied classes, docs/theory.md §13.6), ``"factors"``
    (:func:`solve_factors`) or ``"auto"``: at the class level (no ``rank``, ``start`` or
    ``target_gap``) first the closed-form check of :func:`solve_zero` (``M = 0`` is the
    minimizer iff ``lambda >= lambda_0``, docs/theory.md §13.8), then grouped when ``d >= k``
    (whatever the number of groups: with ``m`` groups its products are ``m x r x m``, never
    more than the factored route's ``k x r x k``, and it starts at the estimated rank; at k =
    1000 with 529 distinct-count groups the factored route's first rank-32 round alone ran
    past 200 s where the grouped route finished, docs/theory.md §13.8), else factors. All are
    certified by the same full-size dual bound. Refuses (``level``) a class level whose ``k x
    k`` arrays would not fit in ``CLASS_MAX_BYTES``.
    """
    t0 = time.perf_counter()
    if route not in ROUTES:
        raise fail("route", "one of " + ", ".join(ROUTES), route)
    if not isinstance(spec, Spec):
        raise fail("spec", "a Spec", type(spec).__name__)
    level = options.get("level", "class")
    check_memory(spec, level)
    plain = level == "class" and not ({"rank", "start", "target_gap"} & set(options))
    if route == "auto" and plain:
        zero = solve_zero(spec, reg, rtol=options.get("rtol", CERTIFY_RTOL))
        if zero is not None:
            return zero
    if route == "auto":
        route = "grouped" if plain and spec.dim >= spec.k else "factors"
    if route == "grouped":
        from .grouped import solve_grouped

        if level != "class" or spec.dim < spec.k:
            raise fail("route", "'factors' at the example level or with --dim below k "
                       "(the reduction needs the unconstrained class-level program)", route)
        extra = set(options) - {"level", "gtol", "maxiter", "seed", "rtol"}
        if extra:
            raise fail("route", "'factors' with " + ", ".join(sorted(extra)), route)
        options.pop("level", None)
        result, factors = solve_grouped(spec, reg, **options)
    else:
        result, factors = solve_factors(spec, reg, **options)
    if (result.status == GEOMETRY_NOT_CERTIFIED and level == "class" and spec.k <= POLISH_MAX_K
            and spec.dim >= spec.k and not {"rank", "start"} & set(options)):
        # the point is only as accurate as the solver's stopping rule; exact thresholding
        # steps bring the first-order residual to rounding, which the bound needs (§13.7)
        polished, _ = polish(spec, reg, factors, rtol=options.get("rtol", CERTIFY_RTOL))
        bound = polished.regularization.get("geometry_bound")
        if bound is not None and bound["norms"] <= result.regularization["geometry_bound"][
                "norms"] and bound["cosines"] <= result.regularization["geometry_bound"][
                "cosines"]:
            result = replace(polished, solver=f"{result.solver}, then SVT polish",
                             iterations=result.iterations + polished.iterations,
                             seconds=time.perf_counter() - t0)
    return result


def bias_at_zero(params: LossParams, cols: _Columns, reg: Regularization) -> tuple[np.ndarray, int]:
    """The minimizer ``b*`` of ``g(b) = f(0, b) (+ lambda_W/2 ||b||^2)`` by Newton's method.

    At ``M = 0`` every column has the logits ``b``; with ``beta_j = a_j w_j / delta_j^2`` the
    Hessian is ``H = Delta [diag(P beta) - P diag(beta) P^T] Delta (+ lambda_W I)`` (the softmax
    Hessian ``diag(p) - p p^T`` of each column). For a free bias ``H`` is singular along ``v =
    Delta^{-1} 1`` (a common shift of the adjusted logits), which is orthogonal to every
    gradient; ``H + (tr H / k) v v^T / |v|^2`` is then definite and its Newton steps stay
    orthogonal to ``v`` (the gauge of the other routes' reports), so ``b*`` is the minimizer
    with ``<b*, v> = 0``. Armijo backtracking; once the Newton decrement ``g^T H^{-1} g`` is at
    most ``BIAS_DECREMENT`` relative, one full step is taken without a line search (where
    ``f`` no longer resolves the decrease; quadratic convergence puts it at rounding level)
    and the iteration stops. ``b* = 0`` without a bias.

    Returns
    -------
    b : (k,) array
    steps : Newton steps taken
    """
    k = params.k
    b = np.zeros(k)
    if reg.bias == "none":
        return b, 0
    ridge = reg.lambda_w if reg.bias == "ridge" else 0.0
    beta = cols.a * params.weights[cols.labels] / params.temperatures[cols.labels] ** 2
    v = 1.0 / params.scales
    v /= np.linalg.norm(v)
    scale = np.outer(params.scales, params.scales)

    def state(x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        value, P, Q = _primal(params, cols, np.repeat(x[:, None], cols.m, axis=1))
        return value + 0.5 * ridge * float(x @ x), Q.sum(axis=1) + ridge * x, P

    value, grad, P = state(b)
    steps = 0
    for steps in range(1, BIAS_STEPS + 1):  # noqa: B007 - the count is reported
        R = P * np.sqrt(beta)[None, :]
        H = (np.diag(P @ beta) - R @ R.T) * scale
        H[np.diag_indices(k)] += ridge
        if reg.bias == "free":
            H += (np.trace(H) / k) * np.outer(v, v)
        step = -np.linalg.solve(H, grad)
        decrement = -float(grad @ step)
        if not decrement > 0.0:
            break
        if decrement <= BIAS_DECREMENT * max(abs(value), 1.0):
            b = b + step  # the last step: f cannot tell such points apart (rounding level)
            break
        t = 1.0
        while True:
            new = state(b + t * step)
            if new[0] <= value - 1e-4 * t * decrement or t < 1e-12:
                break
            t *= 0.5
        if new[0] > value:
            break
        b = b + t * step
        value, grad, P = new
    return b, steps


def _norm_floor(X: np.ndarray) -> float:
    """A lower bound on ``||X||_2``: the largest column or row norm (``O(k^2)``)."""
    squares = X * X
    return math.sqrt(max(float(squares.sum(axis=0).max()), float(squares.sum(axis=1).max())))


def _gradient_at_zero(params: LossParams, cols: _Columns, b: np.ndarray) -> np.ndarray:
    """``grad_M f(0, b) S^{-1}``: at ``b = b*`` its spectral norm is ``lambda_0``."""
    _, _, Q = _primal(params, cols, np.repeat(b[:, None], cols.m, axis=1))
    return Q / cols.root[None, :]


def vanishing_point(spec: Spec, reg: Regularization) -> float:
    """``lambda_0 = ||grad_M f(0, b*) S^{-1}||_2`` at the class level (:func:`bias_at_zero`;
    docs/theory.md §13.8): ``M = 0`` is the minimizer iff ``lambda >= lambda_0``. With a ridge
    bias ``b*``, hence ``lambda_0``, depends on ``reg.lambda_w``; ``reg.lam`` is not used."""
    params, cols = params_from_spec(spec), _Columns(spec, "class")
    return _spectral_norm(_gradient_at_zero(params, cols, bias_at_zero(params, cols, reg)[0]))


def solve_zero(spec: Spec, reg: Regularization, *, rtol: float = CERTIFY_RTOL) -> Result | None:
    """The certified minimizer ``(M, b) = (0, b*)`` when ``lambda >= lambda_0``, else ``None``.

    ``lambda_0 = ||grad_M f(0, b*)||_2`` (:func:`bias_at_zero`; docs/theory.md §13.8): the
    point ``(0, b*)`` satisfies ``grad_b = 0`` and ``-grad_M f in lambda d||0||_*`` iff
    ``||grad_M f(0, b*) S^{-1}||_2 <= lambda``, and with a strict inequality ``M = 0`` is the
    only minimizer (every ``M != 0`` raises the objective by at least ``(lambda - lambda_0)
    ||M||_*``), so the Grams (all zero) are exact. The check costs one ``k x k`` spectral norm
    (with a bias, a few Newton steps on ``b`` more); the point is certified by the same
    full-size dual bound as every route (:func:`_assemble`). Class level, ``d >= 1``.

    Declining is always safe (the caller solves), so it is cheap where it can be: when the
    largest column or row norm of ``grad_M f S^{-1}`` (a lower bound on its spectral norm)
    already reaches ``lambda``, and, with a bias, before the Newton steps when that bound at
    ``b = 0`` exceeds ``ZERO_SKIP lambda`` (a heuristic: ``b*`` moves the gradient, so the
    factor leaves room).
    """
    t0 = time.perf_counter()
    params = params_from_spec(spec)
    cols = _Columns(spec, "class")
    k = spec.k
    if reg.bias != "none" and (  # far below lambda_0 at b = 0: skip the Newton steps on b
            _norm_floor(_gradient_at_zero(params, cols, np.zeros(k))) >= ZERO_SKIP * reg.lam):
        return None
    b, steps = bias_at_zero(params, cols, reg)
    X = _gradient_at_zero(params, cols, b)
    if _norm_floor(X) >= reg.lam or _spectral_norm(X) >= reg.lam:
        return None
    return _assemble(spec, reg, "class", params, cols, np.zeros((k, 0)), np.zeros((0, k)), b,
                     steps, t0, rtol, "M = 0 (lambda >= lambda_0)")[0]


def memory_estimate(spec: Spec, level: str = "class") -> int:
    """Bytes of the ``k x m`` float arrays a solve holds at once (``m = k`` or ``N``; about
    ``ARRAYS`` of them: logits, softmax, gradient, Gram, factors, copies)."""
    m = spec.k if level == "class" else spec.n
    return ARRAYS * 8 * spec.k * max(m, spec.k)


def check_memory(spec: Spec, level: str = "class") -> None:
    """Refuse (one line, naming what works) a regularized solve that would not fit."""
    need = memory_estimate(spec, level)
    if level == "class" and need > CLASS_MAX_BYTES:  # the example level: _check_example_size
        raise fail(
            "--longtail/--counts",
            f"at most {int(math.sqrt(CLASS_MAX_BYTES / (8 * ARRAYS)))} classes with --lambda "
            f"(the regularized solve holds k x k arrays: about {need / 2**30:.1f} GiB here); "
            "the SVM limit (solve without --lambda, route structured) works at this size",
            spec.k,
        )


def solve_factors(
    spec: Spec,
    reg: Regularization,
    *,
    level: str = "class",
    gtol: float = 1e-9,
    maxiter: int = 20_000,
    seed: int = 0,
    rank: int | None = None,
    start: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    rtol: float = CERTIFY_RTOL,
    target_gap: float | None = None,
) -> tuple[Result, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Global minimizer of the regularized UFM of ``spec``'s loss, certified by a duality gap.

    Parameters
    ----------
    spec : Spec
        The loss (``spec.loss``, ``gamma``, ``tau``; custom: the plain family member with its
        ``Delta``, ``delta``) and ``d = spec.dim``.
    reg : Regularization
        ``lambda_W``, ``lambda_H`` and the bias.
    level : {"class", "example"}
        Optimize class means weighted by ``n_c`` or one embedding per example (a random,
        uncollapsed start); the certificate is computed at the same level.
    gtol, maxiter : L-BFGS tolerance on ``objective / lambda`` and iteration cap.
    seed : seed of the random start.
    rank : int, optional
        A fixed factorization rank ``r <= d``. By default ``min(d, k)`` up to
        ``EARLY_STOP_K`` classes; beyond, the rank adapts: L-BFGS at rank ``START_RANK``, then
        while the point is not certified and the top singular values ``sigma`` of
        ``-grad_M f`` exceed ``lambda``, their singular pairs are appended to the factors (a
        descent direction: ``M + t u v^T`` lowers ``f + lambda ||M||_*`` by about
        ``t (sigma - lambda)``), up to ``min(d, k)``; at full rank the weakest column is
        swapped for the top pair (a saddle such as ``W = V = 0``). The certificate is global
        whatever the rank; a too small one shows as a gap.
    start : (W, V, b), optional
        Factors of a start (``W`` k x r, ``V`` r x m, ``b`` k); used for warm starts.
    rtol : relative gap below which the result is certified.
    target_gap : float, optional
        Stop L-BFGS once the (estimated) relative gap is below this, instead of at ``gtol``.
        Default: ``rtol / 10`` for ``k > EARLY_STOP_K``, else unset (run to ``gtol``, which
        also pins down the geometry, not only the objective).

    Returns
    -------
    result : Result
        ``method="regularized"``; ``objective`` is the regularized objective of the returned
        point ``(W, Hbar, b)`` (``H`` = the class means repeated), ``lower_bound`` the dual
        value; ``logits`` are ``W Hbar + b``; ``regularization`` holds the decays, the bias
        vector ``b`` and the certificate details.
    factors : (W, V, b)
        The balanced factors reached (a warm start for a nearby ``lambda``).
    """
    if not isinstance(spec, Spec):
        raise fail("spec", "a Spec", type(spec).__name__)
    if not isinstance(reg, Regularization):
        raise fail("reg", "a Regularization", type(reg).__name__)
    if level not in LEVELS:
        raise fail("level", "one of " + ", ".join(LEVELS), level)
    gtol = check_float("gtol", gtol, low=0.0, low_open=True)
    maxiter = check_int("maxiter", maxiter, low=1)
    seed = check_int("seed", seed, low=0)
    k = spec.k
    rmax = min(spec.dim, k)
    if rank is not None:
        rank = check_int("rank", rank, low=1, high=spec.dim)
    if level == "example":
        _check_example_size(spec)
    if target_gap is None and k > EARLY_STOP_K:
        target_gap = rtol / 10
    t0 = time.perf_counter()
    params = params_from_spec(spec)
    cols = _Columns(spec, level)
    lam, m = reg.lam, cols.m
    if start is None:
        r = rank if rank is not None else (rmax if k <= EARLY_STOP_K else min(rmax, START_RANK))
        rng = np.random.default_rng(seed)
        W = 0.1 * rng.standard_normal((k, r))
        V = 0.1 * rng.standard_normal((r, m))
        b = np.zeros(k)
    else:
        try:
            W, V, b = (np.array(a, dtype=float) for a in start)
        except (TypeError, ValueError):
            raise fail("start", "a triple (W, V, b) of arrays", type(start).__name__) from None
        r = W.shape[1] if W.ndim == 2 else -1
        if W.shape != (k, r) or V.shape != (r, m) or b.shape != (k,) or r > spec.dim:
            raise fail("start", f"factors of shapes (k, r), (r, {m}), ({k},) with r <= d",
                       (W.shape, V.shape, b.shape))
    nit = 0
    rounds = 0
    while True:
        W, V, b, it = _lbfgs(params, cols, reg, W, V, b, gtol, maxiter - nit, target_gap)
        nit += it
        rounds += 1
        if rank is not None or nit >= maxiter or rounds > MAX_ROUNDS:
            break
        value, P, Q = _primal(params, cols, (W @ V) / cols.root[None, :] + b[:, None])
        F = value + 0.5 * lam * (float(np.sum(W * W)) + float(np.sum(V * V)))
        if reg.bias == "ridge":
            F += 0.5 * reg.lambda_w * float(b @ b)
        if F - dual_bound(params, cols, P, lam, reg.bias, reg.lambda_w)[0] <= rtol * abs(F):
            break  # certified: no escape needed
        X = -Q / cols.root[None, :]
        full = W.shape[1] >= rmax
        U, sig, Vt = _top_singular(X, max(W.shape[1], 8) if not full else 1)
        grow = sig > lam * (1.0 + ESCAPE_RTOL)
        if not full:
            grow[min(rmax - W.shape[1], grow.size) :] = False
        if not np.any(grow):
            break
        U, sig, Vt = U[:, grow], sig[grow], Vt[grow]
        step = np.sqrt(ESCAPE_SCALE * (sig - lam) / lam)
        if full:  # a saddle (e.g. W = V = 0): swap the weakest factor column for the escape
            weakest = int(np.argmin(np.sum(W * W, axis=0) + np.sum(V * V, axis=1)))
            W[:, weakest] = U[:, 0] * step[0]
            V[weakest] = Vt[0] * step[0]
        else:
            W = np.hstack([W, U * step[None, :]])
            V = np.vstack([V, Vt * step[:, None]])
    return _assemble(spec, reg, level, params, cols, W, V, b, nit, t0, rtol, "L-BFGS")


def _assemble(
    spec: Spec,
    reg: Regularization,
    level: str,
    params: LossParams,
    cols: _Columns,
    W: np.ndarray,
    V: np.ndarray,
    b: np.ndarray,
    nit: int,
    t0: float,
    rtol: float,
    solver: str,
    grams: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[Result, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The certified :class:`Result` of the balanced factors ``(W, V, b)``, and the factors.

    ``grams``: ``(W W^T, V^T V)`` when the caller has them cheaper than the products (the
    grouped route, whose factors are balanced by construction); otherwise the factors are
    first rebalanced from the SVD of ``M = W V`` (``W = U S^{1/2}``, ``V = S^{1/2} V^T``: the
    reported Grams are then ``(M M^T)^{1/2}`` and ``(M^T M)^{1/2}``, and the penalty is
    ``lambda ||M||_*``). The status is :data:`OPTIMAL` iff the relative gap is ``<= rtol`` and
    the geometry bound of :func:`~ucfm_svm.regularized.geometry_bound.geometry_bound`
    (docs/theory.md §13.7) is ``<= GEOMETRY_RTOL``; :data:`GEOMETRY_NOT_CERTIFIED` when only
    the gap is.
    """
    from .geometry_bound import geometry_bound, thin_svd

    k, lam = spec.k, reg.lam
    if grams is None:
        svd = thin_svd(W, V)
        root_s = np.sqrt(svd[1])
        W, V = svd[0] * root_s[None, :], root_s[:, None] * svd[2]
    else:  # the grouped route's factors: orthogonal balanced columns by construction
        sizes = np.sqrt(np.sum(W * W, axis=0))
        safe = np.where(sizes > 0, sizes, 1.0)
        svd = W / safe[None, :], sizes * sizes, V / safe[:, None]
        order = np.argsort(-svd[1], kind="stable")
        svd = svd[0][:, order], svd[1][order], svd[2][order]
    r = W.shape[1]
    Z = (W @ V) / cols.root[None, :] + b[:, None]
    value, P, _ = _primal(params, cols, Z)
    lower, info = dual_bound(params, cols, P, lam, reg.bias, reg.lambda_w)
    c = (reg.lambda_h / reg.lambda_w) ** 0.25
    Wf, Vf = c * W, V / c
    H = Vf / cols.root[None, :]
    objective = (
        value
        + 0.5 * reg.lambda_w * float(np.sum(Wf * Wf))
        + 0.5 * reg.lambda_h * float(np.sum(Vf * Vf))
    )
    if reg.bias == "ridge":
        objective += 0.5 * reg.lambda_w * float(b @ b)
    if level == "class":
        Hbar = H
        class_logits = Z
    else:
        Hbar = geometry.class_means(H, cols.labels, k)
        class_logits = Wf @ Hbar + b[:, None]
    d = spec.dim
    W_out = np.zeros((k, d))
    W_out[:, :r] = Wf
    H_out = np.zeros((d, k))
    H_out[:r] = Hbar
    gap = objective - lower
    if grams is None:
        cg, eg = W_out @ W_out.T, H_out.T @ H_out
    else:
        cg = c * c * grams[0]
        eg = grams[1] / (c * c * np.outer(cols.root, cols.root))
    steps = (f"{nit} {solver} iterations at rank {r}" if r else
             "the minimizer M = 0" + (f" ({nit} Newton steps on the bias)" if nit else ""))
    text = (
        f"objective {objective:.10g}, dual bound {lower:.10g}, gap {gap:.2e}; "
        f"{steps}, ||Q S^-1||_2 / lambda = {info['spectral_ratio']:.8f}"
    )
    bound = None
    if gap <= rtol * abs(objective):
        bound = geometry_bound(params, cols, W, V, b, lam=lam, bias=reg.bias,
                               lambda_w=reg.lambda_w, gap=gap, objective=objective,
                               lower=lower, scale=c, grams=(cg, eg), svd=svd)
        if r and bound.zero:  # M* = 0 exactly (§13.7): report it
            zero = np.zeros((k, k))
            return _assemble(spec, reg, level, params, cols, np.zeros((k, 0)),
                             np.zeros((0, cols.m)), b, nit, t0, rtol, solver, (zero, zero))
        status = OPTIMAL if bound.error <= GEOMETRY_RTOL else GEOMETRY_NOT_CERTIFIED
        text += f"; geometry error <= {bound.error:.1e} (docs/theory.md §13.7)"
    else:
        status = NOT_CERTIFIED
    if status == OPTIMAL:
        message = "certified global optimum: " + text
    elif status == GEOMETRY_NOT_CERTIFIED:
        message = ("certified objective: " + text + "\n"
                   + _geometry_advice(params, cols, reg, bound, float(np.linalg.norm(W @ V))))
    else:
        message = "not certified: " + text + "; try a smaller --gtol or a larger --maxiter"
    return Result(
        spec=spec,
        method="regularized",
        level=level,
        status=status,
        message=message,
        objective=objective,
        lower_bound=lower,
        W=W_out,
        H_mean=H_out,
        logits=class_logits,
        classifier_gram=cg,
        embedding_gram=eg,
        classifier_norms=geometry.norms_from_gram(cg),
        embedding_norms=geometry.norms_from_gram(eg),
        seconds=time.perf_counter() - t0,
        solver=solver,
        iterations=nit,
        nc1=geometry.nc1(H, cols.labels, k) if level == "example" else None,
        regularization={
            **reg.to_dict(),
            "b": b.copy(),
            "loss_value": value,
            "rank": r,
            **info,
            **({"geometry_bound": bound.to_dict()} if bound is not None else {}),
        },
    ), (W, V, b.copy())


def _geometry_advice(params: LossParams, cols: _Columns, reg: Regularization, bound: object,
                     size: float) -> str:
    """The message line of a result whose gap is certified but whose geometry bound is not."""
    head = (f"geometry error bound {bound.error:.1e} > {GEOMETRY_RTOL:g}: ||M - M*||_F <= "
            f"{bound.matrix:.1e} against ||M||_F = {size:.1e}")
    if reg.bias == "none":
        lam0 = _spectral_norm(_gradient_at_zero(params, cols, np.zeros(params.k)))
        if reg.lam >= 0.9 * lam0:
            return (head + f"; lambda = {reg.lam:.6g} is too close to (or above) the vanishing "
                    f"point lambda_0 = {lam0:.6g} (lambda / lambda_0 = {reg.lam / lam0:.8f}): "
                    "the gap does not pin the geometry")
    if bound.reason:
        return head + "; " + bound.reason
    return head + "; the point is not accurate enough to pin the geometry: try a smaller --gtol"


def polish(
    spec: Spec,
    reg: Regularization,
    factors: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    steps: int = POLISH_STEPS,
    rtol: float = CERTIFY_RTOL,
) -> tuple[Result, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Proximal-gradient steps with singular-value thresholding on the class-level program.

    From ``M = W V``: ``M <- SVT_{t lambda}(M - t grad_M f)``, ``b <- b - t_b grad_b``, with
    block steps from the curvature bound ``h_c = w_c max(Delta)^2 / (2 delta_c^2)`` of each
    column's loss (the softmax cross-entropy Hessian is at most 1/2): ``t = N / max_c h_c``
    without a bias; with one, ``||dz_c||^2 <= 2 (||dM_c||^2/n_c + ||db||^2)`` gives
    ``t = N / (2 max_c h_c)`` and ``t_b = 1 / (2 sum_c (n_c/N) h_c + lambda_W [ridge])``
    (a block-diagonal majorizer, so the proximal-gradient descent lemma holds).
    Thresholding sets singular values exactly to zero, so a
    collapsed group is collapsed to rounding (the factorized L-BFGS only approaches zero).
    Stops when a step changes ``M`` by less than ``1e-15 ||M||``. Dense SVDs: class level,
    small ``k``.

    Returns
    -------
    The certified result of the polished point (balanced factors ``U sqrt(S)``, ``sqrt(S) V^T``)
    and its factors.
    """
    t0 = time.perf_counter()
    params = params_from_spec(spec)
    cols = _Columns(spec, "class")
    lam = reg.lam
    W, V, b = factors
    M = W @ V
    h = params.weights * params.scales.max() ** 2 / (2 * params.temperatures**2)
    has_bias = reg.bias != "none"
    ridge = reg.lambda_w if reg.bias == "ridge" else 0.0
    # block Lipschitz constants: ||dz_c||^2 <= 2 (||dM_c||^2 / n_c + ||db||^2) with a bias
    factor = 2.0 if has_bias else 1.0
    t_m = 1.0 / (factor * float(h.max()) / spec.n)
    t_b = 1.0 / (factor * float(np.sum(cols.a * h)) + ridge)
    t = t_m
    done = 0
    for done in range(1, steps + 1):  # noqa: B007 - the count is reported
        _, _, Q = _primal(params, cols, M / cols.root[None, :] + b[:, None])
        U, sig, Vt = np.linalg.svd(M - t * Q / cols.root[None, :], full_matrices=False)
        sig = np.maximum(sig - t * lam, 0.0)
        M_new = (U * sig[None, :]) @ Vt
        if has_bias:
            b = b - t_b * (Q.sum(axis=1) + ridge * b)
        change = float(np.linalg.norm(M_new - M))
        M = M_new
        if change <= 1e-15 * max(float(np.linalg.norm(M)), 1e-300):
            break
    U, sig, Vt = np.linalg.svd(M, full_matrices=False)
    r = min(spec.dim, spec.k)
    root = np.sqrt(sig[:r])
    W, V = U[:, :r] * root[None, :], root[:, None] * Vt[:r]
    return _assemble(spec, reg, "class", params, cols, W, V, b, done, t0, rtol, "SVT polish")
