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

Everything the certified geometry needs is a sum over the roots of ``O(m)`` terms (``m`` the
number of clusters), computed one root at a time: ``O(m^2)`` time and ``O(m + k)`` memory, no
``k x k`` matrix:

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
from scipy.linalg import cython_lapack

from .. import geometry
from ..errors import SolverError
from ..progress import progress
from ..result import NOT_CERTIFIED, OPTIMAL, Result
from ..spec import Spec
from ..validation import fail
from .theory import not_finite_error, optimal_logits

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


@functools.cache
def _dlaed4_routine() -> Callable[..., None]:
    """LAPACK ``dlaed4`` (not wrapped by ``scipy.linalg.lapack``) from SciPy's Cython LAPACK
    table, called through ctypes with the Fortran signature
    ``(N, I, D, Z, DELTA, RHO, DLAM, INFO)`` (all arguments by reference).

    Bound on first use, not at import, so that a SciPy without this table entry costs only the
    structured method (with a clear ``SolverError``), not the whole package.
    """
    try:
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
    right_out: np.ndarray | None = None,
) -> _Sums:
    """Accumulate the per-cluster sums over the nonzero roots (:func:`_secular_roots`).

    For root ``mu_j`` with ``r = (mu_j - d)^{-1}`` (from the accurate differences) the unit
    cluster-level singular vectors of the Gu-Eisenstat problem are
    ``X = what^{1/2} o r / ||.||`` (left, ``what = vhat^2 / d``) and ``Y = vhat o r / ||.||``
    (right); class ``c`` of cluster ``G`` gets ``direction_c X[G]`` and ``direction_c Y[G]``
    with ``direction = u / sqrt(w_G)`` (unit on each cluster). If ``left_out`` (k x >= m-1,
    Fortran order) and ``right_out`` (>= m-1 x k) are given, column / row ``j`` receive them.
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
        s_uv += (1.0 / np.sqrt(norm_x * norm_y)) @ inv2
        pair = inv[:, :-1] * inv[:, 1:]
        neighbour += (1.0 / (s * norm_x)) @ pair
        neighbour_abs += (1.0 / (s * norm_x)) @ np.abs(pair)
        if left_out is not None:
            x = inv * (np.sqrt(what2)[None, :] / np.sqrt(norm_x)[:, None])
            left_out[:, block] = direction[:, None] * x[:, cl.index].T
        if right_out is not None:
            y = inv * (np.sqrt(vhat2)[None, :] / np.sqrt(norm_y)[:, None])
            right_out[block] = y[:, cl.index] * direction[None, :]
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


def structured_solution(spec: Spec, level: str = "class", full: bool = False) -> Result:
    """Certified optimum of the UF-CS-SVM from the structured closed form (docs/theory.md §4, §3).

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
        Also build ``W`` (k x d), ``H_mean`` (d x k), the logits and both ``k x k`` Grams from the
        explicit eigenvectors (``O(k^3)`` time, ``O(k^2)`` memory). Otherwise those fields are
        ``None`` and only the norms, the objective and the certificate are returned
        (``O(m^2 + k)`` time for ``m`` clusters, :func:`clusters`; ``O(m + k)`` memory).

    Returns
    -------
    Result
        ``method="structured"``. ``lower_bound`` is ``sum_c delta_c L_cc`` for the multipliers
        of ``U V^T`` when all of them are nonnegative (status :data:`OPTIMAL` when the gap is
        within ``CERTIFY_RTOL``); otherwise ``None`` and status ``NOT_CERTIFIED``.
    """
    spec.require_certifiable("structured")
    if level not in LEVELS:
        raise fail("level", "one of " + ", ".join(LEVELS), level)
    if not isinstance(full, (bool, np.bool_)):
        raise fail("full", "True or False", full)
    start = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        u, g = logit_factors(spec)
        cl = clusters(spec)
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(cl.d))):
        raise not_finite_error(spec)  # was a result full of nan and inf
    if not cl.d[-1] > 0:
        raise SolverError(
            "d_c = (delta_c sqrt(n_c) / Delta_c)^2 underflows to 0 for some class; use "
            "--method theory or --method convex"
        )
    # With full=True the singular vectors go straight into the buffers that become W, Hbar.
    left = np.zeros((spec.k, spec.dim), order="F") if full else None
    right = np.zeros((spec.dim, spec.k)) if full else None
    G = cl.index
    # u_c^2 / w_G from the unnormalized cluster sums (exactly 1 on one-class clusters).
    u2 = u * u
    share = u2 / np.bincount(G, weights=u2, minlength=cl.d.size)[G]
    sums = _root_sums(cl, u / np.sqrt(u2 / share), left, right)

    # Per-class quantities; deflated part of cluster G: sqrt(d_G) (I - u_G u_G^T / w_G).
    root_d = np.sqrt(cl.d)
    deflated = root_d[G] * (1.0 - share)
    classifier_sq = share * sums.s_up[G] + deflated
    embedding_sq = (share * sums.s_down[G] + deflated) / spec.n_vec
    objective = sums.nuclear + float(np.sum((cl.size - 1) * root_d))

    # Certificate: diagonal of U V^T and the signs of its off-diagonal entries.
    uv_diag = share * sums.s_uv[G] + 1.0 - share
    violations = _sign_violations(cl, sums)
    if not sums.backward <= VECTOR_RTOL:
        lower = None
        message = (
            f"objective {objective:.10g}; no certificate: the secular roots reproduce the "
            f"rank-one term only to {sums.backward:.1e} (relative), so the bound (which takes "
            "||U V^T||_2 = 1) cannot be trusted; use --method theory or --method convex"
        )
    elif violations:
        lower = None
        message = (
            f"objective {objective:.10g}; no certificate: {violations} off-diagonal sign "
            "pattern(s) of U V^T are positive, so its multipliers are not all nonnegative"
        )
    else:
        lower = float(np.sum(g * uv_diag))  # sum_c delta_c L_cc, L = Delta^{-1} U V^T N^{1/2}
        message = ""
    seconds_core = time.perf_counter() - start

    extra: dict = {"nc1": 0.0} if level == "example" else {}
    W = H_mean = logits = cg = eg = None
    if full:
        W, H_mean = _factors(spec, u, cl, sums.roots, left, right)
        cg = W @ W.T
        eg = H_mean.T @ H_mean
        # Delta W Hbar = Zbar* exactly (tests check it at small k); the closed form costs O(k^2)
        # where the product would cost another O(k^3).
        logits = optimal_logits(spec)
        classifier_sq, embedding_sq = np.diag(cg).copy(), np.diag(eg).copy()
        objective = 0.5 * float(classifier_sq.sum()) + 0.5 * float(spec.n_vec @ embedding_sq)
        seconds_core = time.perf_counter() - start
    gap_ok = lower is not None and objective - lower <= 1e-6 * abs(objective)
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
        message=message + f" ({cl.d.size} cluster(s) of equal d_c)",
        objective=objective,
        lower_bound=lower,
        W=W,
        H_mean=H_mean,
        logits=logits,
        classifier_gram=cg,
        embedding_gram=eg,
        classifier_norms=np.sqrt(np.clip(classifier_sq, 0.0, None)),
        embedding_norms=np.sqrt(np.clip(embedding_sq, 0.0, None)),
        seconds=seconds_core,
        solver="dlaed4",
        min_margin_ratio=1.0 if logits is None else _min_margin_ratio(spec, logits),
        **extra,
    )


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


def _min_margin_ratio(spec: Spec, logits: np.ndarray, block: int = 1024) -> float:
    """``geometry.min_margin_ratio`` over blocks of columns (no extra k x k temporaries)."""
    return min(
        geometry.min_margin_ratio(
            spec, logits[:, lo : lo + block], np.arange(lo, min(lo + block, spec.k))
        )
        for lo in range(0, spec.k, block)
    )


def _factors(
    spec: Spec,
    u: np.ndarray,
    cl: Clusters,
    roots: np.ndarray,
    U: np.ndarray,
    Vt: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced factors ``W = U S^{1/2}`` (k x d), ``Hbar = S^{1/2} V^T N^{-1/2}`` (d x k).

    ``U`` (k x d) and ``Vt`` (d x k) hold the non-deflated left and right singular vectors in
    their first ``m - 1`` columns / rows (:func:`_root_sums`) and become ``W`` and ``Hbar`` in
    place. Deflated pairs of a cluster ``G``: an orthonormal basis of ``{x on G, x ⟂ u_G}``
    (the last ``|G| - 1`` columns of the Householder reflection that maps ``u_G / ||u_G||`` to
    ``e_1``) as both left and right vectors, singular value ``sqrt(d_G)``.
    """
    k = spec.k
    G = cl.index
    m = cl.d.size
    sv = np.zeros(k - 1)
    sv[: m - 1] = np.sqrt(roots)
    col = m - 1
    order = np.argsort(G, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(cl.size)))
    for c in np.flatnonzero(cl.size > 1):
        members = order[bounds[c] : bounds[c + 1]]
        x = u[members] / np.linalg.norm(u[members])
        h = x.copy()
        h[0] -= 1.0
        hh = float(h @ h)
        basis = np.eye(x.size)
        if hh > 0:
            basis -= (2.0 / hh) * np.outer(h, h)
        U[members, col : col + x.size - 1] = basis[:, 1:]
        Vt[col : col + x.size - 1, members] = basis[:, 1:].T
        sv[col : col + x.size - 1] = np.sqrt(cl.d[c])
        col += x.size - 1
    root = np.sqrt(sv)
    Vt[: k - 1] *= root[:, None]
    Vt[: k - 1] /= np.sqrt(spec.n_vec)[None, :]
    U[:, : k - 1] *= root[None, :]
    return U, Vt


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
