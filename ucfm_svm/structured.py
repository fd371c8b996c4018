"""The closed form of THEORY F5' at large k, from a structured eigendecomposition.

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

The roots come from LAPACK ``dlasd4`` applied to the equivalent rank-one update
``(d_max I - D) + v v^T`` (eigenvalue ``d_max - mu``), which returns the differences
``d_c - mu`` to high relative accuracy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dlasd4
from tqdm.auto import tqdm

from . import geometry
from .errors import SolverError
from .result import NOT_CERTIFIED, OPTIMAL, Result
from .spec import Spec
from .theory import not_finite_error, optimal_logits
from .validation import fail

#: Classes whose ``d_c = g_c^2`` differ by at most this times ``max d`` form one cluster
#: (LAPACK's deflation rule, dlaed2, uses 8 eps; a cluster perturbs ``A^T A`` by that much).
CLUSTER_RTOL = 64 * np.finfo(float).eps
#: Root count above which the root loop shows a progress bar (on a terminal).
PROGRESS_MIN_ROOTS = 2000
#: Relative slack, in units of the sum of absolute terms, for the sign check of the
#: multipliers (an entry of ``U V^T`` within rounding of 0 is treated as 0).
SIGN_RTOL = 1e3 * np.finfo(float).eps
LEVELS = ("class", "example")
#: Largest :func:`vector_accuracy` at which the certificate is given. The bound takes
#: ``||U V^T||_2 = 1``; an orthogonality error ``e`` of the computed vectors moves it by about
#: ``e`` relative, so this keeps it a factor 10 below ``CERTIFY_RTOL``.
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
    """Group the classes by equal ``d_c = g_c^2`` (to ``rtol * max d``), in ``O(k log k)``.

    Classes with equal ``(n_c, Delta_c, delta_c)`` (``Spec.groups``) always share a cluster;
    classes of different groups share one when their ``d_c`` coincide (e.g. CDT with
    ``gamma = 1/2``, THEORY F4).
    """
    u, g = logit_factors(spec)
    d = g**2
    order = np.argsort(-d, kind="stable")
    ds = d[order]
    new = np.empty(ds.size, dtype=bool)
    new[0] = True
    new[1:] = (ds[:-1] - ds[1:]) > rtol * ds[0]
    sorted_id = np.cumsum(new) - 1
    index = np.empty(d.size, dtype=np.int64)
    index[order] = sorted_id
    m = int(sorted_id[-1]) + 1
    size = np.bincount(index, minlength=m)
    weight = np.bincount(index, weights=u**2, minlength=m)
    value = np.bincount(index, weights=d, minlength=m) / size
    return Clusters(index=index, d=value, weight=weight / weight.sum(), size=size)


@dataclass(frozen=True)
class _Sums:
    """Sums over the nonzero roots ``mu_j`` of the merged secular equation (per cluster)."""

    nuclear: float  # sum_j sqrt(mu_j)
    s_up: np.ndarray  # sum_j sqrt(mu_j) r_j^2 / nu_j^2
    s_down: np.ndarray  # sum_j r_j^2 / (sqrt(mu_j) nu_j^2)
    neighbour: np.ndarray  # sum_j r_j[G] r_j[G+1] / (sqrt(mu_j) nu_j^2)   (m - 1,)
    neighbour_abs: np.ndarray  # the same sum of absolute values
    roots: np.ndarray  # (m - 1,) the nonzero roots mu_j


def _root_sums(cl: Clusters, u: np.ndarray, vectors_out: np.ndarray | None = None) -> _Sums:
    """Solve the merged secular equation root by root and accumulate the per-cluster sums.

    ``r_j = (d - mu_j)^{-1}`` (shape (m,)) and ``nu_j^2 = sum_G w_G r_j[G]^2``; the unit
    eigenvector of ``P_u D P_u`` for ``mu_j`` is ``u o r_j[G] / nu_j`` (shape (k,)). If
    ``vectors_out`` (k x >= m-1, Fortran order) is given, column ``j`` receives it.
    """
    m = cl.d.size
    s_up = np.zeros(m)
    s_down = np.zeros(m)
    neighbour = np.zeros(max(m - 1, 0))
    neighbour_abs = np.zeros(max(m - 1, 0))
    nuclear = 0.0
    roots = np.zeros(max(m - 1, 0))
    if m == 1:
        return _Sums(nuclear, s_up, s_down, neighbour, neighbour_abs, roots)
    # (d_max I - D) + z z^T with z_G^2 = d_G w_G: poles sqrt(d_max - d) ascending (d decreasing).
    shift = cl.d[0]
    poles = np.sqrt(np.clip(shift - cl.d, 0.0, None))
    poles[0] = 0.0
    z = np.sqrt(cl.d * cl.weight)
    # Index m - 1 is the largest eigenvalue d_max of the update, i.e. mu = 0 (the null vector u).
    bar = tqdm(
        range(m - 1),
        desc="secular roots",
        unit="root",
        leave=False,
        disable=True if m - 1 < PROGRESS_MIN_ROOTS else None,
    )
    for j in bar:
        delta, _, work, info = dlasd4(j, poles, z)
        if info != 0:
            raise SolverError(
                f"LAPACK dlasd4 failed on secular root {j} of {m - 1} (info={info}). "
                "Try the dense closed form (--method theory) or --method convex."
            )
        # d_G - mu = sigma^2 - poles_G^2 = -(poles_G - sigma)(poles_G + sigma)
        diff = -(delta * work)
        near = int(np.argmin(np.abs(diff)))
        mu = cl.d[near] - diff[near]
        if not mu > 0:
            raise SolverError(
                f"Secular root {j} is not positive ({mu:.3g}); the spec is too ill-conditioned "
                "for the structured path. Try --method theory (dense) or --method convex."
            )
        root = np.sqrt(mu)
        r = 1.0 / diff
        nu2 = float(np.dot(cl.weight, r * r))
        c = 1.0 / (root * nu2)
        r2 = r * r
        s_up += (root / nu2) * r2
        s_down += c * r2
        prod = c * (r[:-1] * r[1:])
        neighbour += prod
        neighbour_abs += np.abs(prod)
        nuclear += root
        roots[j] = mu
        if vectors_out is not None:
            np.multiply(u, r[cl.index] / np.sqrt(nu2), out=vectors_out[:, j])
    return _Sums(nuclear, s_up, s_down, neighbour, neighbour_abs, roots)


def structured_solution(spec: Spec, level: str = "class", full: bool = False) -> Result:
    """Certified optimum of the UF-CS-SVM from the structured closed form (THEORY F5', F2).

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
    # With full=True the eigenvectors go straight into the buffer that becomes W.
    buffer = np.zeros((spec.k, spec.dim), order="F") if full else None
    sums = _root_sums(cl, u, buffer)

    # Per-class quantities; deflated part of cluster G: sqrt(d_G) (I - u_G u_G^T / w_G).
    G = cl.index
    root_d = np.sqrt(cl.d)
    u2 = u * u
    deflated = root_d[G] * (1.0 - u2 / cl.weight[G])
    classifier_sq = u2 * sums.s_up[G] + deflated
    embedding_sq = (cl.d[G] * u2 * sums.s_down[G] + deflated) / spec.n_vec
    objective = sums.nuclear + float(np.sum((cl.size - 1) * root_d))

    # Certificate: diagonal of U V^T and the signs of its off-diagonal entries.
    uv_diag = u2 * root_d[G] * sums.s_down[G] + 1.0 - u2 / cl.weight[G]
    violations = _sign_violations(cl, sums)
    accuracy = vector_accuracy(cl)
    if accuracy > VECTOR_RTOL:
        lower = None
        message = (
            f"objective {objective:.10g}; no certificate: d_c = (delta_c sqrt(n_c) / Delta_c)^2 "
            + (
                f"spans {np.log10(cl.d[0] / cl.d[-1]):.1f} orders of magnitude"
                if cl.d[-1] > 0
                else "underflows to 0 for some class"
            )
            + ", so the computed "
            f"singular vectors are orthonormal only to about {accuracy:.0e} and neither the bound "
            "(which takes ||U V^T||_2 = 1) nor the small classes' norms can be trusted; use "
            "--method theory or --method convex"
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
        W, H_mean = _factors(spec, u, g, cl, sums.roots, buffer)
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
        solver="dlasd4",
        min_margin_ratio=1.0 if logits is None else _min_margin_ratio(spec, logits),
        **extra,
    )


def vector_accuracy(cl: Clusters) -> float:
    """Estimated orthogonality error ``eps d_max / d_min`` of the secular-equation vectors.

    dlasd4 works on ``d_max I - D``, which carries each ``d_c`` with an absolute error of
    ``eps d_max``; the vectors of the roots near a small ``d_c`` inherit a relative error of
    ``eps d_max / d_c``. Measured ``||V^T V - I||_2`` was 0.003 to 0.3 times this estimate on
    cases with ``d_max / d_min`` from 5e2 to 3e11 (long tails under CDT with gamma in
    [-2, 2.5], margins and scales spread over up to 5 decades).
    """
    if cl.d[-1] <= 0:
        return float("inf")
    return float(np.finfo(float).eps * cl.d[0] / cl.d[-1])


def _sign_violations(cl: Clusters, sums: _Sums) -> int:
    """Number of cluster pairs whose entries of ``U V^T`` are positive beyond rounding.

    Neighbouring clusters ``G, G+1`` (``kappa``, module docstring) decide all pairs of distinct
    clusters; within a cluster of two or more classes the entries are
    ``u_c' u_c (sqrt(d_G) kappa_GG - 1 / w_G)``.
    """
    across = sums.neighbour > SIGN_RTOL * sums.neighbour_abs
    within_value = np.sqrt(cl.d) * sums.s_down - 1.0 / cl.weight
    within_scale = np.sqrt(cl.d) * sums.s_down + 1.0 / cl.weight
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
    g: np.ndarray,
    cl: Clusters,
    roots: np.ndarray,
    U: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Balanced factors ``W = U S^{1/2}`` (k x d), ``Hbar = S^{1/2} V^T N^{-1/2}`` (d x k).

    ``U`` (k x d) holds the non-deflated left singular vectors ``u o r_j[G] / nu_j`` in its
    first ``m - 1`` columns (:func:`_root_sums`) and becomes ``W`` in place. Deflated pairs of a
    cluster ``G``: an orthonormal basis of ``{x on G, x ⟂ u_G}`` (the last ``|G| - 1`` columns
    of the Householder reflection that maps ``u_G / ||u_G||`` to ``e_1``), singular value
    ``sqrt(d_G)``. In both cases ``V[:, j] = g o U[:, j] / s_j`` (on a deflated cluster
    ``g_c = s_j``), so ``Hbar^T = U diag(g / sqrt(n)) S^{-1/2}``.
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
        x = u[members] / np.sqrt(cl.weight[c])
        h = x.copy()
        h[0] -= 1.0
        hh = float(h @ h)
        basis = np.eye(x.size)
        if hh > 0:
            basis -= (2.0 / hh) * np.outer(h, h)
        U[members, col : col + x.size - 1] = basis[:, 1:]
        sv[col : col + x.size - 1] = np.sqrt(cl.d[c])
        col += x.size - 1
    root = np.sqrt(sv)
    H_mean = np.zeros((spec.dim, k))
    H_mean[: k - 1] = (U[:, : k - 1] * (g / np.sqrt(spec.n_vec))[:, None]).T
    H_mean[: k - 1] /= root[:, None]
    U[:, : k - 1] *= root[None, :]
    return U, H_mean
