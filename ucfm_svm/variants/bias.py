"""The free-bias model (docs/theory.md §11): closed form with its dual certificate, convex route.

Margins ``Delta_y (w_y^T h_i + b_y) - Delta_c (w_c^T h_i + b_c) >= delta_y`` with the bias
``b`` unregularized. With ``Zbar = Delta W Hbar`` and ``beta = Delta b`` the collapsed problem is

    min ||Delta^{-1} Zbar N^{1/2}||_*  s.t.  zbar_cc - zbar_c'c + beta_c - beta_c' >= delta_c,

convex in ``(Zbar, beta)``. ``beta`` is defined up to ``beta + s 1`` (``b + s Delta^{-1} 1``);
results report ``b`` orthogonal to ``Delta^{-1} 1``.

Closed form (all margins tight, §11): ``Zbar* = 1 a^T + diag(delta) - beta 1^T`` with
``a = -Delta^{-2} delta / (1^T Delta^{-2} 1)`` (the paper's shift) and
``beta = (delta o n + (a^T n) 1) / (1^T n)``. These make ``u = Delta^{-1} 1`` orthogonal to the
range of ``A = Delta^{-1} Zbar* N^{1/2}`` (stationarity in ``Zbar``'s constant rows) and
``A n^{1/2} = 0`` (stationarity in ``beta``), so the multipliers read off
``L = Delta^{-1} U V^T N^{1/2}`` have zero column sums and zero row sums (balanced). Where they
are nonnegative, :func:`ucfm_svm.variants.certificate.bias_lower_bound` certifies the point; this
held for every CE-limit loss on random counts and for CDT/LDT/VS on STEP, but not for CDT/LDT
on some random counts (then a margin is slack and :func:`solve_bias_theory` falls back to the
convex program).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..result import Result
from ..solvers.theory import convex_fallback
from ..spec import Spec
from . import certificate
from ._common import ClosedFormCertificate, factors, gauge_bias, point_result, polish_note
from .nonconvex import polish_point

#: Singular values of the normalized dual ``Y`` within this of 1 count as 1
#: (:func:`unique_optimum`).
UNIT_TOL = 1e-9
#: Multipliers above this fraction of the largest force their margin tight at every optimum.
SUPPORT_TOL = 1e-9
#: Smallest relative singular value of the uniqueness map read as full rank.
RANK_TOL = 1e-8


@dataclass(frozen=True)
class BiasClosedForm(ClosedFormCertificate):
    """The all-tight point of the free-bias model and its dual certificate.

    Attributes
    ----------
    logits : (k, k) array
        ``Zbar* = Delta W Hbar`` (without the bias).
    beta : (k,) array
        ``Delta b``.
    A : (k, k) array
        ``Delta^{-1} Zbar* N^{1/2}`` (rank ``k - 1``).
    multipliers : (k, k) array
        ``lam = -L`` off the diagonal, raw.
    min_multiplier : float
        Smallest off-diagonal multiplier over the largest (``>= 0`` for a valid dual).
    value, lower_bound : float
        ``||A||_*`` and the certified bound from the multipliers.
    """

    logits: np.ndarray
    beta: np.ndarray
    A: np.ndarray
    multipliers: np.ndarray
    min_multiplier: float
    value: float
    lower_bound: float


def bias_closed_form(spec: Spec) -> BiasClosedForm:
    """The closed form of the free-bias model and its certificate (module text)."""
    k = spec.k
    Delta, delta, n = spec.Delta, spec.delta, spec.n_vec
    inv_sq = Delta**-2.0
    a = -inv_sq * delta / inv_sq.sum()
    beta = (delta * n + (a @ n)) / n.sum()
    logits = np.ones((k, 1)) * a[None, :] + np.diag(delta) - beta[:, None]
    A = logits / Delta[:, None] * np.sqrt(n)[None, :]
    U, s, Vt = np.linalg.svd(A)
    U, s, Vt = U[:, : k - 1], s[: k - 1], Vt[: k - 1, :]
    L = (U @ Vt) / Delta[:, None] * np.sqrt(n)[None, :]
    off = ~np.eye(k, dtype=bool)
    lam = np.where(off, -L, 0.0)
    return BiasClosedForm(
        logits=logits,
        beta=beta,
        A=A,
        multipliers=lam,
        min_multiplier=float(lam[off].min() / lam[off].max()),
        value=float(s.sum()),
        lower_bound=certificate.bias_lower_bound(spec, lam),
    )


def solve_bias_theory(spec: Spec, fallback: bool = True) -> Result:
    """The closed form of the free-bias model as a :class:`Result`, certified by its dual.

    Needs ``d >= k - 1`` (``A`` has rank ``k - 1``). If the certificate does not close (a
    negative multiplier: some margin is slack at the optimum) and ``fallback``, returns
    :func:`solve_bias_convex` with method ``"theory"`` and a message saying so.
    """
    spec.require_certifiable("theory")
    start = time.perf_counter()
    cf = bias_closed_form(spec)
    failure = (
        f"free-bias closed form not certified (smallest multiplier {cf.min_multiplier:.3g} of "
        f"the largest, relative gap {cf.rel_gap:.3g})"
    )
    if not cf.certified and fallback:
        result, failure = convex_fallback(failure, lambda: solve_bias_convex(spec), start)
        if result is not None:
            return result
    W, H_mean = factors(cf.A, spec)
    message = (
        f"free-bias closed form (docs/theory.md §11) certified by its dual: objective "
        f"{cf.value:.10g}, lower bound {cf.lower_bound:.10g}, relative gap {cf.rel_gap:.2e}"
        if cf.certified
        else failure
    )
    return point_result(
        spec,
        W,
        H_mean,
        gauge_bias(spec, cf.beta / spec.Delta),
        method="theory",
        lower_bound=cf.lower_bound,
        seconds=time.perf_counter() - start,
        message=message,
        solver="closed form",
        geometry_certified=unique_optimum(spec, cf.multipliers)[0],
    )


def solve_bias_convex(spec: Spec, solver: str | None = None) -> Result:
    """The free-bias class-level program in cvxpy (:func:`ucfm_svm.solvers.convex.bias_program`),
    its point and duals polished by Newton steps on the KKT system of the active margins the
    solver's point shows (:func:`ucfm_svm.variants.nonconvex.polish_point`), the bound
    recomputed from the (balanced) duals of both.

    Needs ``d >= k`` unless the optimum has rank ``k - 1`` (checked: a point of higher rank than
    ``d`` is truncated and then reported as not certified).
    """
    from ..solvers.convex import bias_program

    spec.require_certifiable("convex")
    start = time.perf_counter()
    Z, beta, lam, name, status = bias_program(spec, solver)
    A = Z / spec.Delta[:, None] * np.sqrt(spec.n_vec)[None, :]
    W, H_mean = factors(A, spec)
    polished = polish_point(spec, W, H_mean, beta / spec.Delta, lam)
    inaccurate = status != "optimal" and not polished.kept
    unique, why = unique_optimum(spec, polished.multipliers)
    note = polish_note(name, status, polished.kept, inaccurate)
    return point_result(
        spec,
        polished.W,
        polished.H_mean,
        gauge_bias(spec, polished.b),
        method="convex",
        lower_bound=max(certificate.bias_lower_bound(spec, lam), polished.lower_bound),
        seconds=time.perf_counter() - start,
        solver=name,
        inaccurate=inaccurate,
        message="; ".join(part for part in (note, why) if part),
        geometry_certified=polished.kept and unique,
    )


def unique_optimum(spec: Spec, lam: np.ndarray) -> tuple[bool, str]:
    """Whether the dual ``lam`` (raw margin multipliers) proves the free-bias optimum unique
    (docs/theory.md §11, "Uniqueness"), and a note when it does not.

    With ``Y = Delta L N^{-1/2} / ||Delta L N^{-1/2}||_2`` (``L`` of the balanced ``lam``) and
    ``U_1, V_1`` its singular vectors of singular value 1 (to :data:`UNIT_TOL`), every optimum
    has ``A = U_1 M V_1^T`` (``M`` symmetric) and is tight on the margins whose multiplier
    exceeds :data:`SUPPORT_TOL` of the largest. The optimum is unique (``b`` up to its gauge)
    iff the directions ``(dM, dbeta)``, ``dbeta`` orthogonal to ``1``, with
    ``dZbar = Delta U_1 dM V_1^T N^{-1/2}`` keeping those margins tight are only zero: the
    linear map has full column rank (smallest singular value above :data:`RANK_TOL` of the
    largest, columns equilibrated).
    """
    k = spec.k
    lam = certificate.balance(lam)
    L = -lam
    L[np.arange(k), np.arange(k)] = lam.sum(axis=0)
    root = np.sqrt(spec.n_vec)
    Y = spec.Delta[:, None] * L / root[None, :]
    U, s, Vt = np.linalg.svd(Y)
    if not s[0] > 0:
        return False, "geometry not certified: zero multipliers"
    r = int(np.count_nonzero(s >= (1.0 - UNIT_TOL) * s[0]))
    U1, V1 = U[:, :r], Vt[:r, :].T
    rows, cols = np.nonzero(lam > SUPPORT_TOL * lam.max())
    columns = []
    for i in range(r):
        for j in range(i, r):
            E = np.zeros((r, r))
            E[i, j] = E[j, i] = 1.0
            dZ = spec.Delta[:, None] * (U1 @ E @ V1.T) / root[None, :]
            columns.append(dZ[cols, cols] - dZ[rows, cols])
    gauge_free = np.linalg.svd(np.ones((1, k)))[2][1:]  # basis of 1^perp (rows)
    for e in gauge_free:
        columns.append(e[cols] - e[rows])
    J = np.array(columns).T
    norms = np.linalg.norm(J, axis=0)
    if J.shape[0] < J.shape[1] or not np.all(norms > 0):
        return False, (
            "geometry not certified: the dual does not pin the optimum "
            f"({rows.size} active margins for {J.shape[1]} directions)"
        )
    sv = np.linalg.svd(J / norms[None, :], compute_uv=False)
    if sv[-1] <= RANK_TOL * sv[0]:
        return False, (
            f"geometry not certified: the dual leaves a direction of optima open (singular "
            f"value ratio {sv[-1] / sv[0]:.1e})"
        )
    return True, ""
