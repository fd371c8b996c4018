"""The non-negative-feature model (docs/theory.md §12): closed form, its dual certificate and the
doubly non-negative (DNN) relaxation as the convex route.

``H >= 0`` (post-ReLU features), ``W`` free, margins as in the paper's model. At the class level
(collapse holds: for fixed ``W`` each example's problem is strictly convex and the same for its
whole class)::

    min 1/2 ||W||^2 + 1/2 sum_c n_c ||hbar_c||^2
    s.t. Delta_c w_c^T hbar_c - Delta_c' w_c'^T hbar_c >= delta_c,   hbar_c >= 0.

Closed form (``d >= k``, any counts, scales and margins): class means on disjoint coordinates,
``hbar_c = s_c e_c``. Then column ``c`` of ``W`` appears only in class ``c``'s margins and the
problem separates into ``k`` small problems. With ``v = Delta^{-1} 1``, ``S = ||v||^2`` and
``kappa_c = v_c^2 (S - v_c^2) / S``:

    w^(c) = (m_c / (S Delta_c)) (S e_c - v_c v),   m_c = delta_c / s_c,
    s_c = (kappa_c delta_c^2 / n_c)^{1/4},          optimum  sum_c delta_c sqrt(n_c kappa_c).

So the class means are orthogonal with norms ``s_c``: ``(kappa_c delta_c^2 / n_c)^{1/4}``, which
for CE is ``((k-1)/k)^{1/4} n_c^{-1/4}``. The certificate (:func:`nonnegative_closed_form`): margin
multipliers ``lam_c'c = m_c v_c^2 v_c'^2 / (S s_c)`` from stationarity ``W = Delta L Hbar^T`` and
``M_cc' = -(W^T W)_cc' / (2 s_c s_c')``, nonnegative because, with
``alpha_c = m_c / (S Delta_c)``, ``<w^(c), w^(c')> = -alpha_c alpha_c' S v_c v_c' < 0``; they make
``N - 2M - L^T Delta^2 L = 0`` exactly, so the DNN bound of
:func:`ucfm_svm.variants.certificate.dnn_lower_bound` equals the objective.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..result import Result
from ..spec import Spec
from ..validation import fail
from . import certificate
from ._common import ClosedFormCertificate, point_result, polish_note
from .nonconvex import polish_point

#: Largest entry of ``Q_HH`` off its diagonal, relative to its diagonal, below which the DNN
#: solution is read as orthogonal class means (disjoint supports).
ORTHOGONAL_TOL = 1e-6


def require_dim(spec: Spec, method: str) -> None:
    """The non-negative closed form and DNN route need ``d >= k`` (one coordinate per class)."""
    if spec.dim < spec.k:
        raise fail(
            "dim",
            f"at least k = {spec.k} for --features nonnegative with the {method} method (the "
            "optimum puts each class mean on its own coordinate, docs/theory.md §12)",
            spec.dim,
        )


@dataclass(frozen=True)
class NonnegativeClosedForm(ClosedFormCertificate):
    """The closed form of §12 and its DNN dual certificate.

    Attributes
    ----------
    W : (k, k) array
        Classifiers, column ``c`` is ``w^(c)``.
    norms : (k,) array
        Class-mean norms ``s_c`` (``hbar_c = s_c e_c``).
    multipliers, nonnegativity : (k, k) arrays
        ``lam`` (margins) and ``M`` (``Q_HH >= 0``).
    value, lower_bound : float
    """

    W: np.ndarray
    norms: np.ndarray
    multipliers: np.ndarray
    nonnegativity: np.ndarray
    value: float
    lower_bound: float


def nonnegative_closed_form(spec: Spec) -> NonnegativeClosedForm:
    """The closed form of the non-negative-feature model with its certificate (module text)."""
    Delta, delta, n = spec.Delta, spec.delta, spec.n_vec
    v = 1.0 / Delta
    S = float(v @ v)
    kappa = v**2 * (S - v**2) / S
    s = (kappa * delta**2 / n) ** 0.25
    m = delta / s
    W = np.diag(m / Delta) - np.outer(v, m * v**2) / S  # column c: alpha_c (S e_c - v_c v)
    lam = (m * v**2 / (S * s))[None, :] * (v**2)[:, None]
    np.fill_diagonal(lam, 0.0)
    M = certificate.fill_nonnegativity_multipliers(spec, lam)
    return NonnegativeClosedForm(
        W=W,
        norms=s,
        multipliers=lam,
        nonnegativity=M,
        value=float(np.sum(delta * np.sqrt(n * kappa))),
        lower_bound=certificate.dnn_lower_bound(spec, lam, M),
    )


def solve_nonnegative_theory(spec: Spec) -> Result:
    """The closed form of §12 as a :class:`Result` (``W`` k x d, ``Hbar = diag(s)`` padded),
    certified by its DNN dual; no cvxpy."""
    require_dim(spec, "theory")
    start = time.perf_counter()
    cf = nonnegative_closed_form(spec)
    k, d = spec.k, spec.dim
    W = np.zeros((k, d))
    W[:, :k] = cf.W
    H_mean = np.zeros((d, k))
    H_mean[:k, :] = np.diag(cf.norms)
    return point_result(
        spec,
        W,
        H_mean,
        None,
        method="theory",
        lower_bound=cf.lower_bound,
        seconds=time.perf_counter() - start,
        solver="closed form",
        message=(
            "non-negative closed form (docs/theory.md §12) certified by its doubly non-negative "
            f"dual: objective {cf.value:.10g}, lower bound {cf.lower_bound:.10g}, relative gap "
            f"{cf.rel_gap:.2e}"
        ),
    )


def solve_nonnegative_convex(spec: Spec, solver: str | None = None) -> Result:
    """The DNN relaxation in cvxpy (:func:`ucfm_svm.solvers.convex.dnn_program`), its bound from
    the duals, and the point read off its Gram, then polished by Newton steps on the KKT system
    of the factored problem on the face of ``H >= 0`` and the active margins that point shows
    (:func:`ucfm_svm.variants.nonconvex.polish_point`; the SDP's Grams are ~1e-5 off).

    When ``Q_HH`` is diagonal (to :data:`ORTHOGONAL_TOL`) the point is ``hbar_c = sqrt(Q_HH,cc)
    e_c`` and ``w^(c) = Q_WH[:, c] / hbar_c``; by the Schur complement its cost is at most the
    relaxation's, so when the relaxation is tight the point is optimal. Otherwise the same
    reading is only a feasible candidate (rescaled) and is reported as not certified.
    """
    from ..solvers.convex import dnn_program

    require_dim(spec, "convex")
    start = time.perf_counter()
    Q, lam, M, name, status = dnn_program(spec, solver)
    k, d = spec.k, spec.dim
    HH = Q[k:, k:]
    diag = np.clip(np.diag(HH), np.finfo(float).tiny, None)
    off = HH - np.diag(np.diag(HH))
    orthogonal = float(np.abs(off).max() / diag.max()) <= ORTHOGONAL_TOL
    s = np.sqrt(diag)
    W = np.zeros((k, d))
    W[:, :k] = Q[:k, k:] / s[None, :]
    H_mean = np.zeros((d, k))
    H_mean[:k, :] = np.diag(s)
    filled = certificate.fill_nonnegativity_multipliers(spec, lam)
    lower = max(
        certificate.dnn_lower_bound(spec, lam, M), certificate.dnn_lower_bound(spec, lam, filled)
    )
    polished = polish_point(spec, W, H_mean, None, lam)
    W, H_mean = polished.W, polished.H_mean
    inaccurate = status != "optimal" and not polished.kept
    note = "" if orthogonal else "; the relaxation's class means are not orthogonal"
    return point_result(
        spec,
        W,
        H_mean,
        None,
        method="convex",
        lower_bound=max(lower, polished.lower_bound),
        seconds=time.perf_counter() - start,
        solver=name,
        inaccurate=inaccurate,
        message=polish_note(name, status, polished.kept, inaccurate) + note,
    )
