"""An a-posteriori bound on the geometry of a regularized solution (docs/theory.md §13.7).

The class-level (or example-level) program of :mod:`ucfm_svm.regularized.solver` is
``min_{M, b} F = f(M, b) + lambda ||M||_* (+ lambda_W/2 ||b||^2)`` with logits ``z_j = M_j / s_j
+ b``. Its duality gap certifies the objective, not the point: near the vanishing point
``lambda_0`` (where the minimizer becomes ``M = 0``) a gap at rounding level leaves ``M`` wrong by
100%. This module bounds ``||M - M*||_F`` from the point reached, and from it the error of every
norm and cosine of the reported Grams ``W W^T = c^2 (M M^T)^{1/2}`` and ``Hbar^T Hbar = c^{-2}
C^T (M^T M)^{1/2} C``.

1. *A region that contains the minimizer.* On the subspace orthogonal to ``a = Delta^{-1} 1``
   (the shift of column ``j``'s logits that its loss does not see) the loss of column ``j`` is
   strongly convex with modulus ``mu_j >= w_j (min Delta / delta_j)^2 min_c p_cj`` at the point,
   and ``p`` changes by at most ``exp(-kappa_j rho)``, ``kappa_j = sqrt(2) max Delta / delta_j``,
   over the cylinder ``||P_a (z'_j - z_j)|| <= rho``. With the certified gap ``g``, the
   minimizer lies in the cylinders of radii ``rho_j`` solving ``a_j mu_j e^{-kappa_j rho_j}
   rho_j^2 = 2 g`` (the smaller root; none when ``2 g`` exceeds its maximum).
2. *A residual bound, linear in the first-order residual.* At a point ``X'`` (``M`` truncated
   to its singular values above a threshold), a subgradient ``G`` of ``F`` is built (the
   residual of ``-grad_M f = lambda (U V^T + W_perp)``); the strong monotonicity of ``dF`` in
   that region, ``<G, X' - X*> >= min(nu, lambda / (2 ||M'||_2)) ||M' - M*||_F^2`` (``nu =
   min_j a_j mu_j / s_j^2`` from the loss, ``lambda / (2 ||M'||_2)`` from the nuclear norm along
   the directions the loss does not see), gives ``||M' - M*||_F <= ||G|| / min(...)``.
3. *Perturbation.* ``|| |A| - |B| ||_F <= sqrt(2) ||A - B||_F`` carries the bound to both Grams
   (entrywise), then to norms (relative) and cosines (absolute).

Cost: two QR factorizations and an SVD of the factors, three ``k x m x r`` products and one
spectral norm (``O(k^3)`` at the class level).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..result import GEOMETRY_RTOL
from .losses import LossParams

EPS = float(np.finfo(float).eps)
#: Singular values of ``M`` below these fractions of the largest are dropped to form ``X'``
#: (each threshold gives a valid bound; the smallest is kept).
TRUNCATIONS = (0.0, 1e-10, 1e-7, 1e-4)
#: Fixed-point steps for the radii of step 1.
RADIUS_STEPS = 200


@dataclass(frozen=True)
class GeometryBound:
    """Certified error bounds on the geometry of a regularized solution (docs/theory.md §13.7).

    Attributes
    ----------
    matrix : float
        Bound on ``||M - M*||_F`` (``inf`` when no region containing the minimizer was found).
    norms : float
        Largest relative error of a classifier or embedding norm.
    cosines : float
        Largest absolute error of a classifier or embedding cosine.
    normalized_grams : float
        Largest ``|| G/||G||_F - G*/||G*||_F ||_F`` of the two Grams.
    rank : int
        Rank of the truncated point ``X'`` that gave the bound.
    residual : float
        ``||G||`` at ``X'``.
    modulus : float
        The monotonicity modulus used.
    reason : str
        Why the bound is large, or ``""``.
    zero : bool
        Whether ``M* = 0`` exactly is certified (then ``matrix`` is ``||M||_F``).
    """

    matrix: float
    norms: float
    cosines: float
    normalized_grams: float
    rank: int
    residual: float
    modulus: float
    reason: str
    zero: bool = False

    @property
    def error(self) -> float:
        """``max(norms, cosines)``: what is compared with the geometry tolerance."""
        return max(self.norms, self.cosines)

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return {
            "matrix": self.matrix, "norms": self.norms, "cosines": self.cosines,
            "normalized_grams": self.normalized_grams, "rank": self.rank,
            "residual": self.residual, "modulus": self.modulus, "zero": self.zero,
        }


def thin_svd(W: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``U, s, Vt`` with ``W V = U diag(s) Vt`` from QR factorizations of the factors
    (``O((k + m) r^2)`` for ``W`` k x r, ``V`` r x m)."""
    if W.shape[1] == 0:
        return np.zeros((W.shape[0], 0)), np.zeros(0), np.zeros((0, V.shape[1]))
    Qw, Rw = np.linalg.qr(W)
    Qv, Rv = np.linalg.qr(V.T)
    u, s, vt = np.linalg.svd(Rw @ Rv.T)
    return Qw @ u, s, vt @ Qv.T


def _radii(coef: np.ndarray, kappa: np.ndarray, gap: float) -> np.ndarray | None:
    """The smaller roots ``rho`` of ``coef rho^2 exp(-kappa rho) = 2 gap``, enlarged by a
    relative ``1e-6`` (so that the inequality is strict), or ``None`` if one has none."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        r0 = np.sqrt(2.0 * gap / coef)
        rho = r0.copy()
        for _ in range(RADIUS_STEPS):
            rho = r0 * np.exp(0.5 * kappa * rho)
        rho *= 1.0 + 1e-6
        ok = (np.all(np.isfinite(rho)) and np.all(kappa * rho < 2.0)
              and np.all(coef * rho**2 * np.exp(-kappa * rho) > 2.0 * gap))
    return rho if ok else None


def _gram_errors(G: np.ndarray, E: np.ndarray) -> tuple[float, float]:
    """Largest relative norm error and absolute cosine error of a Gram ``G`` whose entries are
    within ``E`` (entrywise) of the exact Gram.

    A vector reported exactly zero whose exact norm is at most ``GEOMETRY_RTOL`` times the
    largest norm is *vanishing*: its norm error is counted relative to the largest norm and it
    has no cosines (they are undefined in the report)."""
    x, e = np.diag(G).copy(), np.diag(E).copy()
    if not np.any(e):
        return 0.0, 0.0
    # the largest exact norm is at least sqrt(x_max - e_max) (x_max: the reported largest)
    top = float(np.sqrt(max(float(x.max()) - float(e[int(np.argmax(x))]), 0.0)))
    vanishing = (x == 0) & (np.sqrt(e) <= GEOMETRY_RTOL * top)
    # a vanishing vector's exact norm is at most sqrt(e_ii): its error relative to the largest
    zero = float(np.max(np.sqrt(e[vanishing]), initial=0.0)) / top if top > 0 else 0.0
    live = ~vanishing
    x, e, E = x[live], e[live], E[np.ix_(live, live)]
    lo = x - e
    if np.any(lo <= 0):
        return math.inf, math.inf
    norms = float(np.max(e / (np.sqrt(lo) * (np.sqrt(x) + np.sqrt(lo))), initial=0.0))
    root_x, root_lo = np.sqrt(x), np.sqrt(lo)
    both = np.outer(root_lo, root_lo)
    # |cos - cos*| <= e_ij / sqrt(a* b*) + e_jj / sqrt(b b*) + e_ii sqrt(b) / (sqrt(a) sqrt(a* b*))
    cos = (E / both + (e / (root_x * root_lo))[None, :]
           + (e / root_x)[:, None] * root_x[None, :] / both)
    return max(norms, zero), float(min(np.max(cos, initial=0.0), 2.0))


def geometry_bound(
    params: LossParams,
    cols: object,
    W: np.ndarray,
    V: np.ndarray,
    b: np.ndarray,
    *,
    lam: float,
    bias: str,
    lambda_w: float,
    gap: float,
    objective: float,
    lower: float,
    scale: float,
    grams: tuple[np.ndarray, np.ndarray],
    svd: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> GeometryBound:
    """Bound the error of the geometry of the balanced factors ``(W, V, b)`` (docs/theory.md
    §13.7).

    Parameters
    ----------
    params, cols : the loss and the columns (:class:`ucfm_svm.regularized.solver._Columns`:
        ``labels``, weights ``a``, roots ``root``).
    W, V, b : factors of ``M = W V`` (k x r, r x m) and the bias.
    lam, bias, lambda_w : ``lambda``, the bias option, ``lambda_W``.
    gap, objective, lower : the certified gap ``objective - lower`` (a rounding allowance
        ``k m eps (|objective| + |lower|)`` is added).
    scale : ``c = (lambda_H / lambda_W)^{1/4}``: the reported Grams are ``c^2 |M^T|`` and
        ``c^{-2} C^T |M| C``.
    grams : the reported Grams ``(W W^T, Hbar^T Hbar)`` (``W`` and ``Hbar`` scaled by ``c``).
    svd : ``(U, s, Vt)`` of ``M`` when the caller has it.
    """
    from .solver import _primal

    k, m = W.shape[0], V.shape[1]
    labels, root = cols.labels, cols.root
    U, s, Vt = thin_svd(W, V) if svd is None else svd
    M = (U * s[None, :]) @ Vt
    g = max(gap, 0.0) + k * m * EPS * (abs(objective) + abs(lower))
    # step 1: cylinders around the point that contain the minimizer
    _, P, _ = _primal(params, cols, M / root[None, :] + b[:, None])
    delta = params.temperatures[labels]
    mu0 = params.weights[labels] * (params.scales.min() / delta) ** 2 * P.min(axis=0)
    kappa = math.sqrt(2.0) * params.scales.max() / delta
    counts = np.bincount(labels, weights=root**2, minlength=k)
    rho = _radii(cols.a * mu0, kappa, g)
    if rho is None or not np.all(mu0 > 0):
        return GeometryBound(math.inf, math.inf, math.inf, math.inf, s.size, math.inf, 0.0,
                             "the gap does not pin a region around the point (a softmax "
                             "probability underflows or the gap is too large)")
    total = float(root @ root)
    best = None
    ranks = sorted({int(np.sum(s > t * s[0])) if s.size and s[0] > 0 else 0
                    for t in TRUNCATIONS}, reverse=True)
    while ranks:
        r = ranks.pop(0)
        dropped = float(np.sqrt(np.sum(s[r:] ** 2)))
        Ur, sr, Vr = U[:, :r], s[:r], Vt[:r]
        Mr = (Ur * sr[None, :]) @ Vr
        shift = np.linalg.norm(M - Mr, axis=0) / root  # ||z'_j - z_j||
        Zr = Mr / root[None, :] + b[:, None]
        _, _, Q = _primal(params, cols, Zr)
        G0 = Q / root[None, :]
        grad_round = _gradient_rounding(params, cols, Zr, G0)
        # the residual of G = grad_M f + lambda (U V^T + W_perp) in the four blocks of
        # (U, U_perp) x (V, V_perp); a complement of dimension 0 contributes nothing
        A1 = Ur.T @ G0
        R1 = A1 @ Vr.T + lam * np.eye(r)
        squares = float(np.sum(R1 * R1))
        if r < m:
            R2 = A1 - (A1 @ Vr.T) @ Vr
            squares += float(np.sum(R2 * R2))
        if r < k:
            B1 = G0 @ Vr.T
            R3 = B1 - Ur @ (Ur.T @ B1)
            squares += float(np.sum(R3 * R3))
        rest, top = 0.0, math.inf
        if r < min(k, m):  # ||W_perp||_2 <= 1 fails only by (||P G0 P||_2 - lambda)_+ <= ...
            Gm = G0 if G0.shape[0] <= G0.shape[1] else G0.T
            top = math.sqrt(max(float(np.linalg.eigvalsh(Gm @ Gm.T)[-1]), 0.0))
            top = top * (1.0 + 10.0 * Gm.shape[0] * EPS) + grad_round
            block = top  # ||R_4||_2 <= ||G0||_2; formed directly when that is not enough
            if r and top > lam:
                block = min(top, _complement_norm(G0, Ur, Vr, A1, grad_round))
            rest = math.sqrt(min(k, m) - r) * max(block - lam, 0.0)
        res_m = math.sqrt(squares + rest**2)
        if r:  # rounding of the gradient (projected into the blocks) and of the products
            res_m += grad_round + 10.0 * k * EPS * (float(np.linalg.norm(G0)) + lam * math.sqrt(r))
        mu = mu0 * np.exp(-kappa * (rho + shift))
        nu = float(np.min(cols.a * mu / root**2))
        sharp = lam / (2.0 * float(sr[0])) if r else math.inf
        if bias == "none":
            modulus = min(nu, sharp)
            bound = res_m / modulus
        elif bias == "free":
            gb = float(np.linalg.norm(Q.sum(axis=1)))
            modulus = min(nu, sharp)
            bound = (res_m + 2.0 * gb / math.sqrt(total)) / modulus
        else:
            gb = float(np.linalg.norm(Q.sum(axis=1) + lambda_w * b))
            modulus = min(nu, sharp, lambda_w)
            bound = (total + 2.0) ** 0.5 * (res_m * (total + 2.0) ** 0.5 + gb) / modulus
        zero = r == 0 and _zero_is_optimal(params, cols, bias, lam, top, res_m, bound, total)
        bound = dropped if zero else bound + dropped  # zero: M* = 0 exactly, the error is M
        rounding = 10.0 * k * EPS * float(s[0]) if s.size else 0.0
        e_m = math.sqrt(2.0) * bound + rounding if bound > 0 else 0.0
        result = _carry(grams, counts, scale, e_m, bound, r, res_m, modulus, zero)
        if best is None or (result.error, result.matrix) < (best.error, best.matrix):
            best = result
        if best.error <= GEOMETRY_RTOL:  # a truncation that certifies: no need for others
            break
        if not ranks and r and best.matrix >= s[0]:  # M itself is not pinned: try X' = 0
            ranks = [0]
    return best


def _gradient_rounding(params: LossParams, cols: object, Z: np.ndarray, G0: np.ndarray) -> float:
    """An allowance for the rounding of the gradient ``G0 = Q S^{-1}`` computed at logits ``Z``
    by :func:`~ucfm_svm.regularized.solver._primal` (docs/theory.md §13.7).

    Every entry is computed with a relative error ``theta <= (2 k + 8 + 8 u_max) eps`` to first
    order: the adjusted logit ``u`` and its difference to the column's largest carry an absolute
    error ``<= 8 eps u_max`` (``u_max = max |u|``), which is a relative error of the exponential
    (itself correctly rounded to an ulp); the column sum of ``k`` positive terms adds ``(k - 1)
    eps``, the division one more; the true-class entry ``-sum_{c != y} p_c`` is a sum of ``k - 1``
    positive terms (no cancellation: ``k - 2`` more) and the scalings three. Hence ``||dG0||_F
    <= theta ||G0||_F``, doubled for the higher orders."""
    from .losses import adjusted_logits

    k = G0.shape[0]
    u_max = float(np.max(np.abs(adjusted_logits(params, Z, cols.labels)), initial=0.0))
    theta = (2.0 * k + 8.0 + 8.0 * u_max) * EPS
    return 2.0 * theta * float(np.linalg.norm(G0))


def _complement_norm(G0: np.ndarray, Ur: np.ndarray, Vr: np.ndarray, A1: np.ndarray,
                     grad_round: float) -> float:
    """An upper bound on ``||R_4||_2``, ``R_4 = P_U^perp G0 P_V^perp`` (docs/theory.md §13.7),
    formed explicitly: ``C = G0 - U (U^T G0)``, ``R_4 = C - (C V^T) V``, its spectral norm from
    the eigenvalues of the smaller Gram, inflated by ``10 n eps`` and by ``10 k eps ||G0||_F``
    for the products that form it and ``grad_round`` for the gradient's own rounding.

    At the optimum the complement carries ``lambda W_perp`` with ``||W_perp||_2 <= 1``, and often
    strictly less (a collapsed direction), while ``||G0||_2 = lambda`` on the kept singular
    pairs: ``||G0||_2 - lambda`` is rounding times ``sqrt(min(k, m) - r)`` and was the largest
    term of the residual (``--longtail 1000,50`` at ``lambda_0/2``: 5e-13 of 6e-13)."""
    C = G0 - Ur @ A1
    R4 = C - (C @ Vr.T) @ Vr
    Rm = R4 if R4.shape[0] <= R4.shape[1] else R4.T
    top = math.sqrt(max(float(np.linalg.eigvalsh(Rm @ Rm.T)[-1]), 0.0))
    k = G0.shape[0]
    return (top * (1.0 + 10.0 * Rm.shape[0] * EPS)
            + 10.0 * k * EPS * float(np.linalg.norm(G0)) + grad_round)


def _zero_is_optimal(params: LossParams, cols: object, bias: str, lam: float, top: float,
                     res_m: float, bound: float, total: float) -> bool:
    """Whether ``M* = 0`` exactly, from the candidate ``X' = (0, b)`` (docs/theory.md §13.7).

    Without a bias: iff the residual is zero (``||grad_M f(0)||_2 <= lambda``). With one,
    ``F(M, b*) >= F(0, b*) + (lambda - ||grad_M f(0, b*)||_2) ||M||_*`` gives ``M* = 0`` when
    ``||grad_M f(0, b)||_2 + L ||P_a (b - b*)|| < lambda``, with the bound on ``b - b*`` of step
    2 and ``L = (sum_j (a_j w_j (max Delta / delta_j)^2 / (2 s_j))^2)^{1/2}`` (the softmax
    Hessian is at most 1/2)."""
    if bias == "none":
        return res_m == 0.0
    labels = cols.labels
    lip = cols.a * params.weights[labels] * (params.scales.max()
                                              / params.temperatures[labels]) ** 2 / 2.0
    L = float(np.linalg.norm(lip / cols.root))
    shift = 2.0 * bound / math.sqrt(total) if bias == "free" else bound / math.sqrt(total + 2.0)
    return top + L * shift < lam


def _carry(grams: tuple[np.ndarray, np.ndarray], counts: np.ndarray, scale: float, e_m: float,
           bound: float, r: int, res_m: float, modulus: float, zero: bool) -> GeometryBound:
    """Step 3: ``|| |M^T| - |M*^T| ||_F <= e_m`` carried to both reported Grams, their norms,
    cosines and normalized forms (the embedding Gram is ``C^T |M| C / c^2`` with ``||C e_i||
    = 1 / sqrt(n_i)``)."""
    cg, eg = grams
    k = cg.shape[0]
    E_w = np.full((k, k), scale**2 * e_m)
    inv = 1.0 / np.sqrt(counts)
    E_h = np.outer(inv, inv) * e_m / scale**2
    n_w, c_w = _gram_errors(cg, E_w)
    n_h, c_h = _gram_errors(eg, E_h)
    # || G/||G|| - G*/||G*|| ||_F <= 2 ||G - G*||_F / ||G||_F; ||C^T D C||_F <= ||D||_F / min n
    dist = 0.0
    if e_m > 0:
        sizes = float(np.linalg.norm(cg)), float(np.linalg.norm(eg))
        dist = 2.0
        if min(sizes) > 0:
            dist = min(dist, max(2.0 * scale**2 * e_m / sizes[0],
                                 2.0 * e_m / (scale**2 * float(counts.min()) * sizes[1])))
    reason = ""
    if not math.isfinite(max(n_w, n_h, c_w, c_h)):
        reason = (f"the squared norm of a class is within the bound ({e_m:.1e}) of zero "
                  "(a vanishing class, or M = 0 at or above the vanishing point): its norm and "
                  "cosines are not pinned")
    return GeometryBound(bound, max(n_w, n_h), max(c_w, c_h), dist, r, res_m, modulus, reason,
                         zero)
