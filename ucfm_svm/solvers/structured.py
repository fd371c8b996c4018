"""The closed form of docs/theory.md §4 at large k, from a structured eigendecomposition.

With ``t = Delta^{-2} 1 / (1^T Delta^{-2} 1)`` the optimal class-level logits are
``Zbar* = (I - 1 t^T) diag(delta)`` and the optimum is ``||A||_*`` for

    A = Delta^{-1} Zbar* N^{1/2} = P_u diag(g),   u = Delta^{-1} 1 / ||Delta^{-1} 1||,
    g_c = delta_c sqrt(n_c) / Delta_c,             P_u = I - u u^T

(with ``a = Delta^{-1} 1`` and ``t = a o a / ||a||^2``: ``Delta^{-1} 1 t^T diag(delta) N^{1/2}
= a (a o g)^T / ||a||^2 = u u^T diag(g)``). Hence, with ``D = diag(g^2)``,

    A^T A = D - v v^T  (v = g o u),         A A^T = P_u D P_u,

a diagonal matrix minus a rank-one term. ``A A^T u = 0``; the other eigenvalues ``mu`` are
the roots of the secular equation ``f(mu) = sum_c u_c^2 / (d_c - mu) = 0`` (one in each
interval between consecutive distinct ``d_c``), plus ``d_G`` with multiplicity ``|G| - 1``
for every cluster ``G`` of classes with equal ``d_c`` (deflation). The eigenvectors are explicit:
``A A^T x = mu x`` for ``x ∝ (D - mu)^{-1} u``, and ``A^T A y = mu y`` for ``y = g o x / sqrt(mu)``
(the right singular vector of ``A`` paired with ``x``). On a cluster ``G`` the deflated
eigenvectors span ``{x supported on G, x ⟂ u_G}`` for both products.

The default route (``route="resolvent"``, docs/theory.md §14) needs no root: ``(A^T A)^{1/2} =
A^T A h(A^T A)`` for a sinc-quadrature rational ``h ~ lambda^{-1/2}`` with positive weights, and
every resolvent ``(A^T A + t)^{-1}`` is diagonal plus rank one, so the diagonals, the trace and a
dual certificate ``Y = A h(A^T A) / (1 + eta)`` cost ``O(k Q)`` (``Q ~ 300`` nodes) with rigorous
quadrature and rounding bounds (:func:`resolvent_diagonals`). The same route shows that every
off-diagonal entry of ``U V^T`` is ``<= 0`` for any spec (§14.2).

On the secular route (``route="secular"``, the exact reference, and the vectors of ``full``)
everything is a sum over the roots of ``O(m)`` terms (``m`` the number of clusters), computed one
root at a time: ``O(m^2)`` time and ``O(m + k)`` memory, no ``k x k`` matrix:

- classifier norms ``||w_c||^2 = [(A A^T)^{1/2}]_cc``,
- embedding norms ``||hbar_c||^2 = [(A^T A)^{1/2}]_cc / n_c``,
- objective ``||A||_* = sum sqrt(mu)``,
- the dual certificate ``L = Delta^{-1} U V^T N^{1/2}`` (``A = U S V^T``): its columns sum to
  zero (``u ⟂ range A``), ``Y = Delta L N^{-1/2} = U V^T`` has spectral norm 1, and the
  multipliers ``lam_{c'c} = -L_{c'c}`` are nonnegative iff every off-diagonal entry of
  ``U V^T`` is ``<= 0``. For classes ``c' in H``, ``c in G`` of different clusters,
  ``(U V^T)_{c'c} = u_c' u_c g_c kappa_HG`` with
  ``kappa_HG = sum_j (d_H - mu_j)^{-1} (d_G - mu_j)^{-1} / (sqrt(mu_j) ||(D - mu_j)^{-1} u||^2)
  = (phi_G - phi_H) / (d_H - d_G)``, so all signs hold iff ``phi`` is nondecreasing in ``d``,
  which is checked on neighbouring clusters only (``O(m)`` numbers accumulated with the roots).
  Then ``sum_c delta_c L_cc`` is a certified lower bound (certificate.py, weak duality).

The roots come from LAPACK ``dlaed4`` on ``-D + v v^T`` (poles ``-d`` unshifted, so small
``d_c`` keep their relative accuracy), polished by Newton steps on the secular equation itself,
and are kept as differences ``mu - d_c`` from the nearer pole. The eigenvectors are built from
the Gu-Eisenstat update vector ``vhat`` recomputed from the roots (Lowner's formula), so they
are orthonormal to working precision however widely ``d_c`` spreads (measured 2e-15 with
margins and scales over 9 decades each); ``max |vhat^2 / v^2 - 1|`` is the backward error on
which the certificate is conditioned (:data:`VECTOR_RTOL`). A dlasd4 solve of the shifted
``(d_max I - D) + v v^T`` used before lost ``eps d_max / d_c`` in the small classes.
"""

from __future__ import annotations

import ctypes
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import SolverError
from ..progress import progress
from ..result import CERTIFY_RTOL, NOT_CERTIFIED, OPTIMAL, Result
from ..spec import Spec
from ..validation import fail
from .theory import not_finite_error, optimal_shift

#: Neighbouring (sorted) classes whose ``d_c = g_c^2`` differ by at most this times the larger
#: one share a cluster: each ``d_c`` moves by a few ulps, relative to itself. (LAPACK's dlaed2
#: deflates to ``8 eps max d``, normwise: that merged every class with ``d_c < 1e-14 max d``
#: into one cluster and put the small classes' norms off by up to 1e3 when margins spread
#: over 7 decades.)
CLUSTER_RTOL = 64 * np.finfo(float).eps
#: Root count above which the root loop shows a progress bar (on a terminal).
PROGRESS_MIN_ROOTS = 2000
#: Relative slack, in units of the sum of absolute terms, for the sign check of the
#: multipliers (an entry of ``U V^T`` within rounding of 0 is treated as 0).
SIGN_RTOL = 1e3 * np.finfo(float).eps
EPS = np.finfo(float).eps
#: Roots per block of the vectorized secular-root passes (``rows x m`` work arrays), at most;
#: fewer when a block would exceed :data:`BLOCK_BYTES` (memory stays ``O(m)``).
BLOCK = 32
BLOCK_BYTES = 2**18
#: Most Newton / bisection steps of :func:`_polish` (dlaed4's roots take 1 or 2).
POLISH_STEPS = 100
LEVELS = ("class", "example")
#: Largest backward error ``max_G |vhat_G^2 / v_G^2 - 1|`` (:func:`_secular_roots`) at which
#: the certificate is given. The computed vectors are orthonormal to working precision for the
#: update ``vhat``; the bound, built from them for the update ``v``, moves by about this much
#: relative, so this keeps it a factor 10 below ``CERTIFY_RTOL``. Measured up to 1e-13 on
#: margins and scales spread over 9 decades each (k = 10..200).
VECTOR_RTOL = 1e-7


@dataclass(frozen=True)
class Clusters:
    """Classes grouped by equal ``d_c = (delta_c sqrt(n_c) / Delta_c)^2``.

    Attributes
    ----------
    index : (k,) int array
        Cluster of each class; clusters are numbered in order of decreasing ``d``.
    d : (m,) array
        Cluster values, strictly decreasing.
    weight : (m,) array
        ``w_G = sum_{c in G} u_c^2`` (sums to 1).
    size : (m,) int array
        Number of classes ``|G|``.
    """

    index: np.ndarray
    d: np.ndarray
    weight: np.ndarray
    size: np.ndarray


def logit_factors(spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """``u = Delta^{-1} 1 / ||Delta^{-1} 1||`` and ``g = delta o sqrt(n) / Delta`` (both (k,)):
    ``A = (I - u u^T) diag(g)`` (module docstring)."""
    a = 1.0 / spec.Delta
    u = a / np.linalg.norm(a)
    g = spec.delta * np.sqrt(spec.n_vec) / spec.Delta
    return u, g


def clusters(spec: Spec, rtol: float = CLUSTER_RTOL) -> Clusters:
    """Group the classes by equal ``d_c = g_c^2`` (to ``rtol`` relative), in ``O(k log k)``.

    Classes with equal ``(n_c, Delta_c, delta_c)`` (``Spec.groups``) always share a cluster;
    classes of different groups share one when their ``d_c`` coincide (e.g. CDT with
    ``gamma = 1/2``, docs/theory.md §6).
    """
    u, g = logit_factors(spec)
    d = g**2
    order = np.argsort(-d, kind="stable")
    ds = d[order]
    new = np.empty(ds.size, dtype=bool)
    new[0] = True
    new[1:] = (ds[:-1] - ds[1:]) > rtol * ds[:-1]
    sorted_id = np.cumsum(new) - 1
    index = np.empty(d.size, dtype=np.int64)
    index[order] = sorted_id
    m = int(sorted_id[-1]) + 1
    size = np.bincount(index, minlength=m)
    weight = np.bincount(index, weights=u**2, minlength=m)
    value = np.bincount(index, weights=d, minlength=m) / size
    return Clusters(index=index, d=value, weight=weight / weight.sum(), size=size)


#: Step of the trapezoidal (sinc) rule in ``x = log s`` for ``lambda^{-1/2}`` (§14): its
#: discretization error is at most ``4 q / (1 - q)``, ``q = exp(-pi^2 / h)`` (2e-15 at 0.28).
#: A multiple of ``2^-15`` (0.27999878), so that every node ``x_n = n h`` is exact in floating
#: point (a rounded ``0.28`` shifted the nodes by ``u |x_n|``, up to 7e-15 beyond the bound).
QUAD_STEP = 9175 / 2**15
#: Nodes reach this far (in ``x``) beyond ``[log d_min, log d_max] / 2``: the dropped tails
#: weigh at most ``(4 h / pi) exp(-X) / (1 - exp(-h))`` (3.4e-16 at 36).
QUAD_MARGIN = 36.0
#: Unit roundoff.
UNIT_ROUNDOFF = EPS / 2
#: Rounding-error constant of the resolvent sums: every computed sum of §14 is within
#: ``QUAD_ROUNDING * gamma_(k + Q + 64)`` (relative) of its exact value,
#: ``gamma_n = n u / (1 - n u)``.
QUAD_ROUNDING = 64
#: Largest ``log(d_max / d_min)`` the resolvent route accepts. After centring ``d`` on 1 (an
#: exact power of 4), ``r = 1 / (d + t)`` lies in ``[e^{-L/2 - 2X - 2} / 2, e^{L/2 + 1}]`` and
#: ``r^2`` (blocked route), ``omega / F`` and every other intermediate stay normal doubles
#: when ``L + 4 X + 6 < 708`` (``X`` = :data:`QUAD_MARGIN`): ``L <= 550``, 238.9 decades.
RESOLVENT_MAX_LOG_SPREAD = 550.0
#: Work-array size (doubles) of the blocked resolvent route: rows of entries x all nodes
#: (512 KiB: a core's L2 cache).
RESOLVENT_BLOCK = 2**16
#: Entries that may cancel (:func:`resolvent_diagonals`) handled beside the blocked route; more
#: of them and the per-node route runs instead.
BLOCKED_MAX_UNSAFE = 32


@dataclass(frozen=True)
class Resolvent:
    """Diagonals of ``(A^T A)^{1/2}`` and ``(A A^T)^{1/2}`` from the resolvent quadrature (§14).

    Attributes
    ----------
    embedding : (k,) array
        ``[(A^T A)^{1/2}]_cc`` (``n_c ||hbar_c||^2``).
    classifier : (k,) array
        ``[(A A^T)^{1/2}]_cc`` (``||w_c||^2``).
    trace : float
        ``sum_c embedding_c``, the estimate of ``||A||_*``.
    eta_low, eta_high : float
        ``1 - eta_low <= sqrt(lambda) h(lambda) <= 1 + eta_high`` on ``[d_min, d_max]`` for the
        rational function ``h`` of the nodes (quadrature error).
    rounding : float
        Bound on the relative rounding error of every computed sum.
    nodes : int
        Number of quadrature nodes ``Q``.
    """

    embedding: np.ndarray
    classifier: np.ndarray
    trace: float
    eta_low: float
    eta_high: float
    rounding: float
    nodes: int

    @property
    def upper(self) -> float:
        """Rigorous upper bound on ``||A||_*``."""
        return self.trace * (1.0 + self.rounding) / (1.0 - self.eta_low)

    @property
    def lower(self) -> float:
        """Rigorous lower bound on the optimum: the dual value of ``Y = A h(A^T A) / (1 +
        eta_high)``, ``trace(A^T Y) = sum_j mu_j h(mu_j) / (1 + eta_high)``."""
        return self.trace * (1.0 - self.rounding) / (1.0 + self.eta_high)

    @property
    def norm_error(self) -> float:
        """Bound on the relative error of every squared norm (``embedding``, ``classifier``)."""
        return self.eta_low + self.eta_high + 2.0 * self.rounding


def quadrature_nodes(d_min: float, d_max: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Nodes ``t_n = e^{2 x_n}`` and weights ``omega_n = (2 h / pi) e^{x_n}`` of
    ``h(lambda) = sum_n omega_n / (lambda + t_n) ~ lambda^{-1/2}`` on ``[d_min, d_max]``, with
    ``x_n = n h`` (``h`` = :data:`QUAD_STEP`) covering ``[log d_min / 2 - X, log d_max / 2 + X]``.

    With ``lambda = e^{2y}``, ``sqrt(lambda) h(lambda) = (h / pi) sum_n sech(x_n - y)``; by
    Poisson summation (``int sech(x) e^{-i xi x} dx = pi sech(pi xi / 2)``) the full lattice sum
    is ``1 + 2 sum_{j >= 1} sech(pi^2 j / h) cos(2 pi j y / h)``, within ``4 q / (1 - q)``
    (``q = e^{-pi^2 / h}``) of 1, and the dropped tails add at most
    ``(4 h / pi) e^{-X} / (1 - e^{-h})`` below (``sech z <= 2 e^{-|z|}``). Returns
    ``(t, omega, eta_low, eta_high)``; both etas include ``16 u`` for the rounding of
    ``omega_n`` and ``t_n`` (``exp`` within 1 ulp); ``x_n = n h`` is exact (``h`` is a multiple
    of ``2^-15`` and ``|n| < 2^38``).
    """
    h = QUAD_STEP
    y_lo = 0.5 * np.log(d_min) - 1e-6
    y_hi = 0.5 * np.log(d_max) + 1e-6
    n = np.arange(np.floor((y_lo - QUAD_MARGIN) / h), np.ceil((y_hi + QUAD_MARGIN) / h) + 1)
    x = n * h
    t = np.exp(2.0 * x)
    omega = (2.0 * h / np.pi) * np.exp(x)
    q = np.exp(-(np.pi**2) / h)
    lattice = 4.0 * q / (1.0 - q)
    tails = (4.0 * h / np.pi) * np.exp(-QUAD_MARGIN) / (1.0 - np.exp(-h))
    slack = 16.0 * UNIT_ROUNDOFF
    return t, omega, 1.01 * (lattice + tails) + slack, 1.01 * lattice + slack


def _complement(total: float, parts: np.ndarray, mult: np.ndarray, part: np.ndarray) -> np.ndarray:
    """``total - part_i`` for every ``i``, where ``total = sum_i mult_i part_i`` (all >= 0), to
    a small relative error: by subtraction where ``part_i <= total / 2`` (at most twice the
    error of ``total``), else (one index at most) by summing the other terms directly."""
    out = total - part
    big = np.flatnonzero(part > 0.5 * total)
    for i in big.tolist():
        saved = parts[i]
        parts[i] = (mult[i] - 1) * part[i]
        out[i] = float(parts.sum())
        parts[i] = saved
    return out


def resolvent_diagonals(d: np.ndarray, w: np.ndarray, mult: np.ndarray | None = None) -> Resolvent:
    """Diagonals of ``(A^T A)^{1/2}`` and ``(A A^T)^{1/2}`` for ``A^T A = D - v v^T``
    (``D = diag(d)``, ``v_c^2 = d_c w_c``, ``sum_c w_c = 1``), in ``O(m Q)`` time, ``O(m)`` memory.

    ``sqrt(lambda) ~ lambda h(lambda)`` with ``h`` from :func:`quadrature_nodes`; for each node
    ``t`` (``r_c = 1 / (d_c + t)``, ``F = sum_c w_c r_c``, ``E = sum_c w_c d_c r_c``; §14):

        [A^T A (A^T A + t)^{-1}]_cc = d_c r_c (F - w_c r_c) / F,
        [A A^T (A A^T + t)^{-1}]_cc = d_c r_c (F - w_c r_c) (1 - w_c) / F
                                      + w_c r_c (E - w_c d_c r_c) / F,

    sums of nonnegative terms. Each of the ``m`` entries stands for ``mult_c`` identical classes
    (default 1). ``w_c r_c / F <= rho_c = w_c / sum_{d_i <= d_c} mult_i w_i`` and
    ``w_c d_c r_c / E <= w_c / sum_{d_i >= d_c} mult_i w_i`` at every node; entries whose two
    bounds are ``<= 1/2`` (all but a few) take the blocked route :func:`_resolvent_blocked`,
    where the differences are formed after the sums over the nodes (and lose at most a factor 3
    in relative accuracy); the others the per-node route :func:`_resolvent_by_node`.
    """
    mult = np.ones(d.size) if mult is None else np.asarray(mult, dtype=float)
    log_lo, log_hi = np.log2(d.min()), np.log2(d.max())
    if (log_hi - log_lo) * np.log(2.0) > RESOLVENT_MAX_LOG_SPREAD:
        decades = (log_hi - log_lo) * np.log10(2.0)
        raise SolverError(
            f"d_c = (delta_c sqrt(n_c) / Delta_c)^2 spreads over {decades:.0f} decades, more "
            f"than the {RESOLVENT_MAX_LOG_SPREAD / np.log(10.0):.1f} the resolvent "
            "quadrature holds in double precision; use --method theory or --method convex"
        )
    # B^{1/2} is homogeneous of degree 1/2: work on d / 4^j (exact), centred on 1, so that the
    # nodes d e^{+-2X} and every intermediate stay in range; scale the results back by 2^j.
    j = int(np.round((log_lo + log_hi) / 4.0))
    d = np.ldexp(d, -2 * j)
    t_nodes, omega, eta_low, eta_high = quadrature_nodes(float(d.min()), float(d.max()))
    mw = mult * w
    rest = _complement(float(mw.sum()), mw.copy(), mult, w)  # 1 - w_c = sum of the others
    order = np.argsort(d, kind="stable")
    below = np.empty(d.size)
    # sums over d_i <= d_c and over d_i >= d_c (each including c; on ties in d a cumulative sum
    # counts only part of the tie, so rho is overestimated: conservative)
    below[order] = np.cumsum(mw[order])
    above = np.empty(d.size)
    above[order[::-1]] = np.cumsum(mw[order[::-1]])
    unsafe = np.flatnonzero((w > 0.5 * below) | (w > 0.5 * above))
    if unsafe.size > BLOCKED_MAX_UNSAFE:
        embedding, classifier = _resolvent_by_node(d, w, mult, rest, t_nodes, omega)
    else:
        embedding, classifier = _resolvent_blocked(d, w, mult, rest, t_nodes, omega, unsafe)
    rounding = QUAD_ROUNDING * _gamma(d.size + t_nodes.size + 64)
    embedding, classifier = np.ldexp(embedding, j), np.ldexp(classifier, j)
    return Resolvent(
        embedding=embedding,
        classifier=classifier,
        trace=float(mult @ embedding),
        eta_low=float(eta_low),
        eta_high=float(eta_high),
        rounding=rounding,
        nodes=int(t_nodes.size),
    )


def _resolvent_blocked(
    d: np.ndarray,
    w: np.ndarray,
    mult: np.ndarray,
    rest: np.ndarray,
    t: np.ndarray,
    omega: np.ndarray,
    unsafe: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`resolvent_diagonals` by blocks of entries x all nodes (matrix products).

    Pass 1 accumulates ``F_n``, ``E_n`` from per-block partial sums (kept, ``O(m Q / rows)``),
    and, for each ``unsafe`` entry ``c``, the complements ``F_n - w_c r_cn``,
    ``E_n - w_c d_c r_cn`` as the same partial sums with ``c``'s block recomputed without one
    copy of ``c`` (sums of nonnegative terms, no subtraction); pass 2 forms
    ``S1 = R omega``, ``T1 = R (omega E / F)``, ``S2 = (R o R)(omega / F)`` and

        embedding_c  = d_c (S1_c - w_c S2_c),
        classifier_c = (1 - w_c) embedding_c + w_c (T1_c - w_c d_c S2_c).
    """
    m, q = d.size, t.size
    rows = min(m, max(256, RESOLVENT_BLOCK // q))
    mw = mult * w
    weights = np.stack((mw, mw * d))
    starts = list(range(0, m, rows))
    parts = np.empty((len(starts), 2, q))  # per-block sums of F and E (all terms >= 0)
    R = np.empty((rows, q))
    complements = np.empty((unsafe.size, 2, q))
    for b, lo in enumerate(starts):
        hi = min(lo + rows, m)
        block = R[: hi - lo]
        np.add.outer(d[lo:hi], t, out=block)
        np.reciprocal(block, out=block)
        parts[b] = weights[:, lo:hi] @ block
        for j in np.flatnonzero((unsafe >= lo) & (unsafe < hi)).tolist():
            c = int(unsafe[j])
            reduced = weights[:, lo:hi].copy()
            reduced[:, c - lo] *= (mult[c] - 1) / mult[c]
            complements[j] = reduced @ block  # block b without one copy of entry c
    sums = parts.sum(axis=0)
    for j, c in enumerate(unsafe.tolist()):
        b = c // rows
        saved = parts[b].copy()
        parts[b] = complements[j]
        complements[j] = parts.sum(axis=0)  # F - w_c r_c and E - w_c d_c r_c, no subtraction
        parts[b] = saved
    F, E = sums[0], sums[1]
    embedding = np.empty(m)
    classifier = np.empty(m)
    on_f = omega / F
    coefficients = np.stack((omega, on_f * E))
    for lo in range(0, m, rows):
        hi = min(lo + rows, m)
        block = R[: hi - lo]
        np.add.outer(d[lo:hi], t, out=block)
        np.reciprocal(block, out=block)
        s1, t1 = coefficients @ block.T
        block *= block
        s2 = block @ on_f
        dd, ww = d[lo:hi], w[lo:hi]
        embedding[lo:hi] = dd * (s1 - ww * s2)
        classifier[lo:hi] = rest[lo:hi] * embedding[lo:hi] + ww * (t1 - ww * dd * s2)
    for j, c in enumerate(unsafe.tolist()):
        r = 1.0 / (d[c] + t)
        f_rest, e_rest = complements[j]
        embedding[c] = d[c] * float(np.sum(on_f * r * f_rest))
        classifier[c] = rest[c] * embedding[c] + w[c] * float(np.sum(on_f * r * e_rest))
    return embedding, classifier


def _resolvent_by_node(
    d: np.ndarray,
    w: np.ndarray,
    mult: np.ndarray,
    rest: np.ndarray,
    t_nodes: np.ndarray,
    omega: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`resolvent_diagonals` one node at a time, every difference formed per node by
    :func:`_complement` (any weights; ``O(m)`` work per node)."""
    embedding = np.zeros(d.size)
    classifier = np.zeros(d.size)
    r = np.empty(d.size)
    wr = np.empty(d.size)
    parts = np.empty(d.size)
    for t, om in zip(t_nodes.tolist(), omega.tolist(), strict=True):
        np.add(d, t, out=r)
        np.reciprocal(r, out=r)
        np.multiply(w, r, out=wr)
        np.multiply(mult, wr, out=parts)
        F = float(parts.sum())
        f_rest = _complement(F, parts, mult, wr)  # F - w_c r_c
        dr = d * r
        parts *= d
        E = float(parts.sum())
        e_rest = _complement(E, parts, mult, wr * d)  # E - w_c d_c r_c
        f_rest *= dr
        f_rest *= om / F  # omega d_c r_c (F - w_c r_c) / F
        embedding += f_rest
        f_rest *= rest
        classifier += f_rest
        wr *= e_rest
        wr *= om / F
        classifier += wr
    return embedding, classifier


def _gamma(n: int) -> float:
    """``gamma_n = n u / (1 - n u)`` (Higham's bound for ``n`` roundings)."""
    return n * UNIT_ROUNDOFF / (1.0 - n * UNIT_ROUNDOFF)


@functools.cache
def _dlaed4_routine() -> Callable[..., None]:
    """LAPACK ``dlaed4`` (not wrapped by ``scipy.linalg.lapack``) from SciPy's Cython LAPACK
    table, called through ctypes with the Fortran signature
    ``(N, I, D, Z, DELTA, RHO, DLAM, INFO)`` (all arguments by reference).

    Bound on first use, not at import, so that a SciPy without this table entry costs only the
    structured method (with a clear ``SolverError``), not the whole package.
    """
    try:
        from scipy.linalg import cython_lapack

        capsule = cython_lapack.__pyx_capi__["dlaed4"]
    except (AttributeError, KeyError):
        raise SolverError(
            "This SciPy does not expose LAPACK dlaed4 in scipy.linalg.cython_lapack, which the "
            "structured method needs. Use --method theory (dense, k <= 2000) or --method convex."
        ) from None
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    address = api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))
    int_p, double_p = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_double)
    signature = ctypes.CFUNCTYPE(
        None, int_p, int_p, double_p, double_p, double_p, double_p, double_p, int_p
    )
    return signature(address)


@dataclass(frozen=True)
class _Sums:
    """Sums over the nonzero roots ``mu_j`` of the merged secular equation (per cluster ``G``).

    ``X_j`` and ``Y_j`` (shape (m,)) are the unit cluster-level left and right singular vectors
    of root ``j`` (:func:`_root_sums`)."""

    nuclear: float  # sum_j sqrt(mu_j)
    s_up: np.ndarray  # sum_j sqrt(mu_j) X_j[G]^2
    s_down: np.ndarray  # sum_j sqrt(mu_j) Y_j[G]^2
    s_uv: np.ndarray  # sum_j X_j[G] Y_j[G]
    neighbour: np.ndarray  # sum_j X_j[G] X_j[G+1] / sqrt(mu_j)   (m - 1,)
    neighbour_abs: np.ndarray  # the same sum of absolute values
    roots: np.ndarray  # (m - 1,) the nonzero roots mu_j
    backward: float  # max_G |vhat_G^2 / v_G^2 - 1|


def _blocks(count: int, m: int) -> list[np.ndarray]:
    """Root indices ``0 .. count-1`` in blocks of up to :data:`BLOCK` rows of ``m`` doubles
    (:data:`BLOCK_BYTES` per work array; at least 4 rows)."""
    rows = max(4, min(BLOCK, BLOCK_BYTES // (8 * m)))
    return [np.arange(lo, min(lo + rows, count)) for lo in range(0, count, rows)]


def _differences(d: np.ndarray, origin: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """``mu_j - d_i = (d_o - d_i) + tau_j`` for a block of roots (shape (len(tau), m)): each
    entry to a few ulps relative, also for ``i`` the nearest pole (no cancellation)."""
    diff = d[origin][:, None] - d[None, :]
    diff += tau[:, None]
    return diff


def _polish(
    d: np.ndarray, w: np.ndarray, roots: np.ndarray, origin: np.ndarray, tau: np.ndarray
) -> None:
    """Newton on ``f(mu) = sum_i w_i / (d_i - mu)`` for a block of roots, in place on ``tau``.

    dlaed4 solves ``-D + v v^T``, whose secular function carries the constant ``1 / rho``;
    near small ``d`` its terms cancel to the size of the small weights, which costs the small
    roots relative accuracy ``eps / w`` (measured 1.8e-3 with scales over 7 decades). ``f``
    itself, evaluated from the accurate differences, fixes each root to its conditioning
    ``eps sum |w_i / (d_i - mu)| / f'(mu)``. ``f`` increases between its poles, so every
    evaluation narrows the bracket ``(d_{j+1}, d_j)``; a Newton step that leaves it is replaced
    by bisection.
    """
    lo = d[roots + 1] - d[origin]
    hi = d[roots] - d[origin]
    active = np.arange(tau.size)
    for _ in range(POLISH_STEPS):
        inv = 1.0 / _differences(d, origin[active], tau[active])
        value = -(inv @ w)  # f(mu), inv = 1 / (mu - d)
        np.abs(inv, out=inv)
        scale = inv @ w
        np.square(inv, out=inv)
        slope = inv @ w
        t = tau[active]
        lo[active] = np.where(value < 0, np.maximum(lo[active], t), lo[active])
        hi[active] = np.where(value > 0, np.minimum(hi[active], t), hi[active])
        step = -value / slope
        new = t + step
        inside = (new > lo[active]) & (new < hi[active])
        # converged: the step is within rounding of tau or of f's evaluation error
        done = np.abs(step) <= 4 * EPS * (np.abs(t) + scale / slope)
        bisect = 0.5 * (lo[active] + hi[active])
        tau[active] = np.where(inside, new, np.where(done, t, bisect))
        active = active[~done]
        if active.size == 0:
            return
    raise SolverError(
        f"The secular equation did not converge for {active.size} root(s) in {POLISH_STEPS} "
        "steps. Try --method theory (dense) or --method convex."
    )


def _secular_roots(cl: Clusters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Roots of the merged secular equation and the Gu-Eisenstat vector, ``O(m^2)`` time.

    The nonzero eigenvalues ``mu`` of ``D - v v^T`` (cluster level: ``D = diag(d)``,
    ``v_G^2 = d_G w_G``) are minus the eigenvalues of ``-D + v v^T``, a positive rank-one update
    of a diagonal with ascending poles ``-d``, solved one root at a time by LAPACK ``dlaed4``,
    which returns ``DELTA_i = -d_i - (-mu) = mu - d_i`` from the nearer pole as origin. The
    largest eigenvalue is ``0`` (the null vector ``u``), exactly, and is not solved for. Each
    root is kept as its origin ``o`` and ``tau = mu - d_o``, polished by :func:`_polish`, and
    every ``mu - d_i`` used later is ``(d_o - d_i) + tau``: no difference of two nearly equal
    eigenvalues is ever formed.

    Gu and Eisenstat (SIAM J. Matrix Anal. Appl. 15, 1994; 16, 1995) recompute the update
    vector from the computed roots (Lowner's formula): with all ``m`` roots ``lambda_j = -mu_j``,

        vhat_i^2 = - prod_j (d_i' - lambda_j) / prod_{j != i} (d_i' - d_j'),   d' = -d,

    accumulated root by root as in LAPACK ``dlaed3``. The computed roots are then the exact
    eigenvalues of ``-D + vhat vhat^T``, whose eigenvectors ``vhat o (D - mu)^{-1}`` are formed
    componentwise to relative accuracy, hence orthonormal to working precision.

    Returns
    -------
    origin : (m - 1,) int array
    tau : (m - 1,) array
        ``mu_j = d[origin_j] + tau_j``.
    vhat2 : (m,) array
        ``vhat_G^2`` (``v_G^2 = d_G w_G`` up to the rounding of the roots).
    """
    d = cl.d
    m = d.size
    origin = np.zeros(m - 1, dtype=np.int64)
    tau = np.zeros(m - 1)
    poles = -d
    z2 = d * cl.weight
    rho = float(z2.sum())
    z = np.sqrt(z2 / rho)  # dlaed4 takes a unit vector and rho = ||v||^2
    size, which, info = ctypes.c_int(m), ctypes.c_int(), ctypes.c_int()
    rho_ref, lam = ctypes.c_double(rho), ctypes.c_double()
    double_p = ctypes.POINTER(ctypes.c_double)
    blocks = _blocks(m - 1, m)
    buffer = np.zeros((blocks[0].size, m))
    fixed = (ctypes.byref(size), ctypes.byref(which), poles.ctypes.data_as(double_p))
    fixed += (z.ctypes.data_as(double_p),)
    tail = (ctypes.byref(rho_ref), ctypes.byref(lam), ctypes.byref(info))
    rows_p = [ctypes.cast(row.ctypes.data, double_p) for row in buffer]
    dlaed4 = _dlaed4_routine()
    bar = progress(
        blocks, desc="secular roots", unit="block", enabled=m - 1 >= PROGRESS_MIN_ROOTS
    )
    for block in bar:
        delta = buffer[: block.size]
        if m == 2:
            # One root, mu = d_0 w_1 + d_1 w_0 (the trace minus the zero root); dlaed4's n = 2
            # path (dlaed5) returns normalized vector entries instead of the differences.
            gap = d[0] - d[1]
            delta[0] = (-cl.weight[0] * gap, cl.weight[1] * gap)
        else:
            # the last block may be shorter than the buffer (zip stops at the block)
            for row_p, j in zip(rows_p, block.tolist(), strict=False):
                which.value = j + 1
                dlaed4(*fixed, row_p, *tail)
                if info.value != 0:
                    raise SolverError(
                        f"LAPACK dlaed4 failed on secular root {j} of {m - 1} "
                        f"(info={info.value}). Try --method theory (dense) or --method convex."
                    )
        rows = np.arange(block.size)
        nearer = np.abs(delta[rows, block]) <= np.abs(delta[rows, block + 1])
        origin[block] = np.where(nearer, block, block + 1)
        tau[block] = delta[rows, origin[block]]
        block_tau = tau[block]
        _polish(d, cl.weight, block, origin[block], block_tau)
        tau[block] = block_tau
    lowner = np.ones(m)
    with np.errstate(divide="ignore", invalid="ignore"):
        for block in blocks:
            diff = _differences(d, origin[block], tau[block])
            ratio = diff / (d[block][:, None] - d[None, :])  # d_i' - d_j' = d_j - d_i
            rows = np.arange(block.size)
            ratio[rows, block] = diff[rows, block]
            lowner *= np.prod(ratio, axis=0)
        # the zero root: mu - d_i = -d_i exactly
        ratio = -d / (d[-1] - d)
        ratio[-1] = -d[-1]
        lowner *= ratio
    return origin, tau, -lowner


def _root_sums(
    cl: Clusters,
    direction: np.ndarray,
    left_out: np.ndarray | None = None,
) -> _Sums:
    """Accumulate the per-cluster sums over the nonzero roots (:func:`_secular_roots`).

    For root ``mu_j`` with ``r = (mu_j - d)^{-1}`` (from the accurate differences) the unit
    cluster-level singular vectors of the Gu-Eisenstat problem are
    ``X = what^{1/2} o r / ||.||`` (left, ``what = vhat^2 / d``) and ``Y = vhat o r / ||.||``
    (right); class ``c`` of cluster ``G`` gets ``direction_c X[G]`` and ``direction_c Y[G]``
    with ``direction = u / sqrt(w_G)`` (unit on each cluster). If ``left_out`` (k x >= m-1,
    Fortran order) is given, its column ``j`` receives the left vector of root ``j``.
    ``O(m^2)`` time (``O(k m)`` with the outputs), ``O(m)`` memory (:func:`_blocks`).
    """
    m = cl.d.size
    s_up, s_down, s_uv = np.zeros(m), np.zeros(m), np.zeros(m)
    neighbour = np.zeros(max(m - 1, 0))
    neighbour_abs = np.zeros(max(m - 1, 0))
    if m == 1:
        return _Sums(0.0, s_up, s_down, s_uv, neighbour, neighbour_abs, np.zeros(0), 0.0)
    origin, tau, vhat2 = _secular_roots(cl)
    if not np.all((vhat2 > 0) & np.isfinite(vhat2)):
        raise SolverError(
            "The secular equation's recomputed update vector is not positive; the spec is too "
            "ill-conditioned for the structured path. Try --method theory or --method convex."
        )
    roots = cl.d[origin] + tau
    if not np.all(roots > 0):
        raise SolverError(
            "A secular root is not positive; the spec is too ill-conditioned for the structured "
            "path. Try --method theory (dense) or --method convex."
        )
    what2 = vhat2 / cl.d
    sigma = np.sqrt(roots)
    for block in _blocks(m - 1, m):
        inv = 1.0 / _differences(cl.d, origin[block], tau[block])
        inv2 = inv * inv
        norm_x = inv2 @ what2  # ||what^{1/2} o r||^2
        norm_y = inv2 @ vhat2
        s = sigma[block]
        s_up += (s / norm_x) @ inv2
        s_down += (s / norm_y) @ inv2
        s_uv += (1.0 / (np.sqrt(norm_x) * np.sqrt(norm_y))) @ inv2  # the product underflows
        pair = inv[:, :-1] * inv[:, 1:]
        neighbour += (1.0 / (s * norm_x)) @ pair
        neighbour_abs += (1.0 / (s * norm_x)) @ np.abs(pair)
        if left_out is not None:
            x = inv * (np.sqrt(what2)[None, :] / np.sqrt(norm_x)[:, None])
            left_out[:, block] = direction[:, None] * x[:, cl.index].T
    # Per-cluster factors of X^2, Y^2, X Y and X_G X_{G+1}.
    root_what = np.sqrt(what2)
    return _Sums(
        nuclear=float(sigma.sum()),
        s_up=what2 * s_up,
        s_down=vhat2 * s_down,
        s_uv=root_what * np.sqrt(vhat2) * s_uv,
        neighbour=root_what[:-1] * root_what[1:] * neighbour,
        neighbour_abs=root_what[:-1] * root_what[1:] * neighbour_abs,
        roots=roots,
        backward=float(np.max(np.abs(vhat2 / (cl.d * cl.weight) - 1.0))),
    )


#: Routes to the norms, objective and certificate: the resolvent quadrature (§14, O(k Q)) or
#: the secular equation (§7, exact to rounding, O(m^2)).
ROUTES = ("resolvent", "secular")


def structured_solution(
    spec: Spec, level: str = "class", full: bool = False, route: str = "resolvent"
) -> Result:
    """Certified optimum of the UF-CS-SVM from the structured closed form (§4, §7, §14).

    Parameters
    ----------
    spec : Spec
        Needs ``spec.dim >= k - 1``.
    level : {"class", "example"}
        ``"example"`` returns the same optimum for the example-level problem: the collapsed point
        ``h_i = hbar_{y_i}`` is feasible with the same cost, and the class multipliers spread
        over the examples (``lam_{c,i} = lam_{c,y_i} / n_{y_i}``) give the example-level bound
        (``certificate.example_lower_bound``) the same numerator and the same spectral norm
        (``Y_ex Y_ex^T = Y Y^T``), so the certificate carries over exactly; no ``k x n`` matrix
        is formed.
    full : bool
        Also build ``W`` (k x d), ``H_mean`` (d x k) and both ``k x k`` Grams from the explicit
        eigenvectors of the secular equation (:func:`_full_geometry`: ``O(k^2 + m^3)`` time,
        four ``k x k`` arrays; ``logits`` stays ``None``, it is ``theory.optimal_logits``).
        Otherwise those fields are ``None``. When the four arrays would exceed
        :data:`FULL_EMBEDDINGS_MAX_BYTES`, ``H_mean`` is left ``None`` (the message says so):
        it is a rescaling of ``W^T``, :func:`embeddings` rebuilds it.
    route : {"resolvent", "secular"}
        ``"resolvent"`` (default): norms, objective and certificate from the quadrature of
        :func:`resolvent_diagonals`, ``O(k Q)`` time and ``O(k)`` memory, every number with a
        rigorous error bound (§14). ``"secular"``: the same from the roots of the secular
        equation (:func:`_root_sums`, ``O(m^2)`` for ``m`` clusters of equal ``d_c``), exact to
        rounding; the reference the tests and ``benchmarks/bench_vocab.py`` compare against.

    Returns
    -------
    Result
        ``method="structured"``. With the resolvent route ``lower_bound`` is the rigorous
        :attr:`Resolvent.lower` and the status is :data:`OPTIMAL` when the rigorous upper bound
        on the objective is within ``CERTIFY_RTOL`` of it; with the secular route it is
        ``sum_c delta_c L_cc`` for the multipliers of ``U V^T`` when all of them are
        nonnegative, otherwise ``None`` and ``NOT_CERTIFIED``.
    """
    spec.require_certifiable("structured")
    if level not in LEVELS:
        raise fail("level", "one of " + ", ".join(LEVELS), level)
    if not isinstance(full, (bool, np.bool_)):
        raise fail("full", "True or False", full)
    if route not in ROUTES:
        raise fail("route", "one of " + ", ".join(ROUTES), route)
    if full:
        _check_full_memory(spec)
    start = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        u, g = logit_factors(spec)
        d = g * g
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(d))):
        raise not_finite_error(spec)  # was a result full of nan and inf
    if not d.min() > 0:
        raise SolverError(
            "d_c = (delta_c sqrt(n_c) / Delta_c)^2 underflows to 0 for some class; use "
            "--method theory or --method convex"
        )
    n_vec = spec.n_vec
    if route == "resolvent":
        res = _class_resolvent(d, u * u)
        classifier_sq, embedding_sq = res.classifier, res.embedding / n_vec
        objective, lower, upper = res.trace, res.lower, res.upper
        detail = (
            f"; resolvent quadrature, {res.nodes} nodes, norms within {res.norm_error:.1e} "
            f"(relative), objective <= {upper:.10g}"
        )
        message = ""
        cl = None
    else:
        cl = clusters(spec)
        classifier_sq, embedding_sq, objective, lower, message = _secular_geometry(
            spec, u, g, cl
        )
        upper = objective
        detail = f" ({cl.d.size} cluster(s) of equal d_c)"
    seconds_core = time.perf_counter() - start

    extra: dict = {"nc1": 0.0} if level == "example" else {}
    W = H_mean = cg = eg = None
    ratio = 1.0
    if full:
        if cl is None:
            cl = clusters(spec)
        embeddings = 4 * 8 * spec.k * max(spec.k, spec.dim) <= FULL_EMBEDDINGS_MAX_BYTES
        W, H_mean, cg, eg = _full_geometry(spec, u, g, cl, embeddings)
        if not embeddings:
            detail += (
                f"; H_mean not built (k x d, {8 * spec.k * spec.dim / 2**30:.2g} GiB): it is "
                "diag(1/sigma) W^T diag(g / sqrt(n)), structured.embeddings(spec, W)"
            )
        classifier_sq, embedding_sq = np.diag(cg).copy(), np.diag(eg).copy()
        full_objective = 0.5 * float(classifier_sq.sum()) + 0.5 * float(n_vec @ embedding_sq)
        upper = max(upper, full_objective) if route == "resolvent" else full_objective
        objective = full_objective
        # Delta W Hbar = Zbar* (tests check it at small k); its margins, block by block.
        ratio = _min_margin_ratio(spec)
        seconds_core = time.perf_counter() - start
    gap_ok = lower is not None and upper - lower <= CERTIFY_RTOL * abs(objective)
    status = OPTIMAL if gap_ok else NOT_CERTIFIED
    if not message:
        message = (
            "certified global optimum" if gap_ok else "not certified"
        ) + f": objective {objective:.10g}, lower bound {lower:.10g}, gap {objective - lower:.2e}"
    return Result(
        spec=spec,
        method="structured",
        level=level,
        status=status,
        message=message + detail,
        objective=objective,
        lower_bound=lower,
        W=W,
        H_mean=H_mean,
        logits=None,
        classifier_gram=cg,
        embedding_gram=eg,
        classifier_norms=np.sqrt(np.clip(classifier_sq, 0.0, None)),
        embedding_norms=np.sqrt(np.clip(embedding_sq, 0.0, None)),
        seconds=seconds_core,
        solver="resolvent" if route == "resolvent" else "dlaed4",
        min_margin_ratio=ratio,
        **extra,
    )


def _class_resolvent(d: np.ndarray, w: np.ndarray) -> Resolvent:
    """:func:`resolvent_diagonals` over the distinct pairs ``(d_c, w_c)`` (classes with equal
    ``(n_c, Delta_c, delta_c)`` share one), expanded back to the ``k`` classes."""
    order = np.lexsort((w, d))
    ds, ws = d[order], w[order]
    new = np.empty(d.size, dtype=bool)
    new[0] = True
    new[1:] = (ds[1:] != ds[:-1]) | (ws[1:] != ws[:-1])
    first = np.flatnonzero(new)
    pair = np.empty(d.size, dtype=np.int64)
    pair[order] = np.cumsum(new) - 1
    mult = np.diff(np.append(first, d.size))
    res = resolvent_diagonals(ds[first], ws[first], mult)
    return Resolvent(
        embedding=res.embedding[pair],
        classifier=res.classifier[pair],
        trace=res.trace,
        eta_low=res.eta_low,
        eta_high=res.eta_high,
        rounding=res.rounding,
        nodes=res.nodes,
    )


def _secular_geometry(
    spec: Spec, u: np.ndarray, g: np.ndarray, cl: Clusters
) -> tuple[np.ndarray, np.ndarray, float, float | None, str]:
    """Norms, objective and certificate from the secular roots (§7): ``(||w_c||^2,
    ||hbar_c||^2, objective, lower bound or None, message)``."""
    G = cl.index
    # u_c^2 / w_G from the unnormalized cluster sums (exactly 1 on one-class clusters).
    u2 = u * u
    share = u2 / np.bincount(G, weights=u2, minlength=cl.d.size)[G]
    sums = _root_sums(cl, u / np.sqrt(u2 / share))
    # Per-class quantities; deflated part of cluster G: sqrt(d_G) (I - u_G u_G^T / w_G).
    root_d = np.sqrt(cl.d)
    deflated = root_d[G] * (1.0 - share)
    classifier_sq = share * sums.s_up[G] + deflated
    embedding_sq = (share * sums.s_down[G] + deflated) / spec.n_vec
    objective = sums.nuclear + float(np.sum((cl.size - 1) * root_d))
    # Certificate: diagonal of U V^T and the signs of its off-diagonal entries.
    uv_diag = share * sums.s_uv[G] + 1.0 - share
    violations = _sign_violations(cl, sums)
    lower = None
    message = ""
    if not sums.backward <= VECTOR_RTOL:
        message = (
            f"objective {objective:.10g}; no certificate: the secular roots reproduce the "
            f"rank-one term only to {sums.backward:.1e} (relative), so the bound (which takes "
            "||U V^T||_2 = 1) cannot be trusted; use --method theory or --method convex"
        )
    elif violations:
        message = (
            f"objective {objective:.10g}; no certificate: {violations} off-diagonal sign "
            "pattern(s) of U V^T are positive, so its multipliers are not all nonnegative"
        )
    else:
        lower = float(np.sum(g * uv_diag))  # sum_c delta_c L_cc, L = Delta^{-1} U V^T N^{1/2}
    return classifier_sq, embedding_sq, objective, lower, message


def _sign_violations(cl: Clusters, sums: _Sums) -> int:
    """Number of cluster pairs whose entries of ``U V^T`` are positive beyond rounding.

    Neighbouring clusters ``G, G+1`` (``kappa``, module docstring) decide all pairs of distinct
    clusters; within a cluster of two or more classes the entries are
    ``u_c' u_c / w_G (sum_j X_j[G] Y_j[G] - 1)`` (the deflated part contributes the ``-1``).
    """
    across = sums.neighbour > SIGN_RTOL * sums.neighbour_abs
    within_value = sums.s_uv - 1.0
    within_scale = sums.s_uv + 1.0
    within = (cl.size > 1) & (within_value > SIGN_RTOL * within_scale)
    return int(across.sum() + within.sum())


#: Bytes a ``--full`` result may take: four ``k x k`` arrays (W, H_mean and both Grams).
FULL_MAX_BYTES = 12 * 2**30
#: Bytes of the four ``--full`` arrays above which ``H_mean`` is left ``None``: it is a
#: rescaling of ``W^T`` (:func:`embeddings`), and at k = 8142 the four arrays alone are
#: 1.98 GiB, over the 2 GiB a 2-core/24 GiB machine gives one process (1.5 GiB: k > ~6,900).
FULL_EMBEDDINGS_MAX_BYTES = 3 * 2**29
#: Rows per block when the cluster-level Grams are expanded to the classes (a few MB).
EXPAND_ROWS = 64


def _check_full_memory(spec: Spec) -> None:
    """Refuse ``full=True`` (one line, before any work) when its four ``k x max(k, d)`` arrays
    would exceed :data:`FULL_MAX_BYTES`."""
    need = 4 * 8 * spec.k * max(spec.k, spec.dim)
    if need > FULL_MAX_BYTES:
        raise fail(
            "full",
            f"left unset at k = {spec.k}: W, H and the two Grams would take {need / 2**30:.0f} "
            f"GiB (limit {FULL_MAX_BYTES / 2**30:.0f} GiB); the default structured result has "
            "the norms, objective and certificate in O(k) memory",
            True,
        )


def _min_margin_ratio(spec: Spec) -> float:
    """``geometry.min_margin_ratio`` of the closed-form logits ``Zbar* = (I - 1 t^T)
    diag(delta)`` (= ``Delta W Hbar``) in ``O(k)``: column ``c`` holds ``delta_c (1 - t_c)`` on
    the diagonal and ``-t_c delta_c`` everywhere else, so its margins are all equal."""
    t = optimal_shift(spec)
    delta = spec.delta
    return float(np.min((delta * (1.0 - t) + t * delta) / delta))


def embeddings(spec: Spec, W: np.ndarray) -> np.ndarray:
    """``Hbar`` (d x k) of the optimum from its classifiers ``W`` (a ``full`` result's).

    At the optimum ``W = X S^{1/2}`` (orthonormal ``X``) and ``Hbar = S^{-1} W^T diag(g /
    sqrt(n))`` (:func:`_full_geometry`), with ``S`` the squared column norms of ``W`` and
    ``g_c = delta_c sqrt(n_c) / Delta_c``: ``O(k d)``, the array ``full`` leaves out above
    :data:`FULL_EMBEDDINGS_MAX_BYTES` (it is a rescaling of ``W^T``).
    """
    _, g = logit_factors(spec)
    sv = np.einsum("ij,ij->j", W, W)
    inverse = np.divide(1.0, sv, out=np.zeros_like(sv), where=sv > 0)
    H = W.T * inverse[:, None]
    H *= (g / np.sqrt(spec.n_vec))[None, :]
    return H


def _full_geometry(
    spec: Spec, u: np.ndarray, g: np.ndarray, cl: Clusters, embeddings: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """``W`` (k x d), ``Hbar`` (d x k) and the Grams ``W W^T``, ``Hbar^T Hbar`` (§7, §14).

    The left singular vectors are ``x_j = u_hat o X_j[G]`` for the ``m - 1`` secular roots
    (``u_hat_c = u_c / sqrt(w_G)``, unit on each cluster; ``X_j`` the unit cluster-level vector
    of :func:`_root_sums`) and, for a cluster ``G`` of ``|G| > 1`` classes, an orthonormal basis
    of ``{x on G, x ⟂ u_G}`` with singular value ``sqrt(d_G)``. The right vectors follow from
    ``A^T x = sigma y`` and ``x ⟂ u``: ``y = g o x / sigma``, so ``Hbar = S^{1/2} V^T N^{-1/2}
    = S^{-1} W^T diag(g / sqrt(n))`` is a rescaled copy of ``W^T``. The Grams need no
    ``k x k x d`` product:

        W W^T       = diag(u_hat) C_X[G, G] diag(u_hat) + sum_G sqrt(d_G) (I_G - u_hat_G u_hat_G^T),
        Hbar^T Hbar = N^{-1/2} (diag(u_hat) C_Y[G, G] diag(u_hat) + same blocks) N^{-1/2},

    with the cluster-level ``C_X = X S X^T`` and ``C_Y = diag(g) X S^{-1} X^T diag(g)``
    (``m x m``): ``O(m^3 + k^2)`` time, the four returned arrays and ``O(k m)`` more memory.
    """
    k, dim, m = spec.k, spec.dim, cl.d.size
    G = cl.index
    u2 = u * u
    share = u2 / np.bincount(G, weights=u2, minlength=m)[G]
    direction = u / np.sqrt(u2 / share)
    W = np.zeros((k, dim), order="F")
    sums = _root_sums(cl, direction, W)
    sv = np.zeros(k - 1)
    sv[: m - 1] = np.sqrt(sums.roots)
    # cluster-level vectors X (m x (m - 1)) from one representative class per cluster
    rep = np.zeros(m, dtype=np.int64)
    rep[G[::-1]] = np.arange(k)[::-1]
    X = W[rep, : m - 1] / direction[rep][:, None]
    root_d = np.sqrt(cl.d)
    cx = (X * sv[: m - 1]) @ X.T
    cy = (X / sv[: m - 1]) @ X.T
    cy *= root_d[:, None]
    cy *= root_d[None, :]
    del X
    scale = 1.0 / np.sqrt(spec.n_vec)
    cg = _expand(cx, cl, direction)
    eg = _expand(cy, cl, direction * scale)
    col = m - 1
    order = np.argsort(G, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(cl.size)))
    runs = bool(np.all(np.diff(G) >= 0))
    for c in np.flatnonzero(cl.size > 1).tolist():
        members = order[bounds[c] : bounds[c + 1]]
        x = direction[members]
        size = x.size
        # a run of consecutive classes is a slice (a view), else a gather/scatter
        block = (slice(members[0], members[-1] + 1),) * 2 if runs else np.ix_(members, members)
        projector = np.outer(x, -x)
        projector[np.arange(size), np.arange(size)] += 1.0
        projector *= root_d[c]
        cg[block] += projector
        projector *= scale[members][:, None]
        projector *= scale[members][None, :]
        eg[block] += projector
        # Householder reflection mapping x to e_1: its last size - 1 columns span x-perp.
        h = x.copy()
        h[0] -= 1.0
        hh = float(h @ h)
        basis = np.outer(h, (-2.0 / hh) * h[1:]) if hh > 0 else np.zeros((size, size - 1))
        basis[np.arange(1, size), np.arange(size - 1)] += 1.0
        W[block[0] if runs else members, col : col + size - 1] = basis
        sv[col : col + size - 1] = root_d[c]
        col += size - 1
    W[:, : k - 1] *= np.sqrt(sv)[None, :]
    if not embeddings:
        return W, None, cg, eg
    H = np.zeros((dim, k))
    gs = g * scale
    for lo in range(0, k - 1, EXPAND_ROWS):
        rows = slice(lo, min(lo + EXPAND_ROWS, k - 1))
        np.multiply(W[:, rows].T, np.outer(1.0 / sv[rows], gs), out=H[rows])
    return W, H, cg, eg


def _expand(cluster_gram: np.ndarray, cl: Clusters, scale: np.ndarray) -> np.ndarray:
    """``diag(scale) C[G, G] diag(scale)`` (k x k), built in blocks of rows; a block is a
    ``np.repeat`` of rows of ``C`` when every cluster is a run of consecutive classes (counts
    sorted, the usual long tail), else a gather."""
    G = cl.index
    k = G.size
    runs = bool(np.all(np.diff(G) >= 0))
    out = np.empty((k, k))
    for lo in range(0, k, EXPAND_ROWS):
        rows = slice(lo, min(lo + EXPAND_ROWS, k))
        if runs:
            out[rows] = np.repeat(cluster_gram[G[rows]], cl.size, axis=1)
        else:
            np.take(cluster_gram[G[rows]], G, axis=1, out=out[rows])
        out[rows] *= np.outer(scale[rows], scale)
    return out


def quadratic_forms(
    spec: Spec, left: np.ndarray, right: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``a^T (A A^T)^{1/2} a`` and ``b^T (A^T A)^{1/2} b`` for coefficient matrices ``a`` =
    ``left`` and ``b`` = ``right`` (both ``(k, q)``), without a ``k x k`` array.

    ``W W^T = (A A^T)^{1/2}`` and ``Hbar^T Hbar = N^{-1/2} (A^T A)^{1/2} N^{-1/2}`` (docs/theory.md
    §4), so with ``a_c = [c in A] / ||w_c||`` and ``b_c = [c in B] / (sqrt(n_c) ||hbar_c||)``
    these are the sums of unit-vector inner products over pairs of groups of classes
    (docs/theory.md §17). Sum over the nonzero roots ``mu_j`` of ``sqrt(mu_j) (x_j^T a)^T
    (x_j^T a)``, with ``x_j`` the unit singular vectors of :func:`_root_sums` (class ``c`` of
    cluster ``G`` gets ``u_c / sqrt(w_G) X_j[G]``, so ``x_j^T a`` needs only the cluster sums of
    ``u_c a_c / sqrt(w_G)``), plus the deflated part ``sqrt(d_G) (I - u_G u_G^T / w_G)`` of every
    cluster. ``O(k q + m^2 q)`` time, ``O(m q + k)`` memory.

    Returns
    -------
    (q, q) arrays
        The classifier-side and embedding-side forms.
    """
    spec.require_certifiable("structured")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        u, _ = logit_factors(spec)
        cl = clusters(spec)
    G = cl.index
    m = cl.d.size
    w = np.bincount(G, weights=u * u, minlength=m)
    root_d = np.sqrt(cl.d)

    def cluster_sums(coef: np.ndarray) -> np.ndarray:  # (m, q): sum_{c in G} u_c coef_c
        out = np.zeros((m, coef.shape[1]))
        np.add.at(out, G, u[:, None] * coef)
        return out

    ua, ub = cluster_sums(left), cluster_sums(right)
    forms = []
    for coef, agg in ((left, ua), (right, ub)):
        deflated = coef.T @ (root_d[G][:, None] * coef) - agg.T @ ((root_d / w)[:, None] * agg)
        forms.append(deflated)
    if m == 1:
        return forms[0], forms[1]
    origin, tau, vhat2 = _secular_roots(cl)
    roots = cl.d[origin] + tau
    if not (np.all((vhat2 > 0) & np.isfinite(vhat2)) and np.all(roots > 0)):
        raise SolverError(
            "The secular equation is too ill-conditioned for structured group statistics; use "
            "--method theory or --method convex."
        )
    what2 = vhat2 / cl.d
    sigma = np.sqrt(roots)
    da, db = ua / np.sqrt(w)[:, None], ub / np.sqrt(w)[:, None]
    for block in _blocks(m - 1, m):
        inv = 1.0 / _differences(cl.d, origin[block], tau[block])
        inv2 = inv * inv
        x = inv * (np.sqrt(what2)[None, :] / np.sqrt(inv2 @ what2)[:, None])
        y = inv * (np.sqrt(vhat2)[None, :] / np.sqrt(inv2 @ vhat2)[:, None])
        px, py = x @ da, y @ db  # (block, q): x_j^T a, y_j^T b
        s = sigma[block][:, None]
        forms[0] += (s * px).T @ px
        forms[1] += (s * py).T @ py
    return forms[0], forms[1]
