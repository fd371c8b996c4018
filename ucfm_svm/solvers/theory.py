"""Closed-form geometry of the UF-CS-SVM, certified by its own dual (docs/theory.md §4).

For any counts, scales ``Delta`` and margins ``delta`` (with ``d >= k - 1``) the class-level
optimum has every margin tight and logits

    Zbar* = (I - 1 t^T) diag(delta),     t = Delta^{-2} 1 / (1^T Delta^{-2} 1),

so that, with ``A = Delta^{-1} Zbar* N^{1/2}``: ``W W^T = (A A^T)^{1/2}``,
``Hbar^T Hbar = N^{-1/2} (A^T A)^{1/2} N^{-1/2}`` and the optimum is ``||A||_*``.
With ``Delta = I`` the shift is ``t = 1/k`` and ``Zbar* = P diag(delta)``, ``P = I - 11^T/k``
(F3). F5' was observed, not proven, for ``Delta != I``, so :func:`closed_form` also builds the
dual certificate that proves it case by case:

KKT conditions of ``min ||Delta^{-1} Zbar N^{1/2}||_*  s.t.  zbar_cc - zbar_c'c >= delta_c``
ask for multipliers ``lam_{c'c} >= 0`` with ``L = Delta^{-1} G N^{1/2}`` for a subgradient
``G`` of the nuclear norm at ``A``, where ``L_{c'c} = -lam_{c'c}`` (``c' != c``) and
``L_cc = sum_{c'} lam_{c'c}`` (columns of ``L`` sum to zero). With the compact SVD
``A = U S V^T`` (rank ``k - 1``) take ``G = U V^T``: the columns of
``L = Delta^{-1} U V^T N^{1/2}`` sum to zero iff ``u = Delta^{-1} 1`` is orthogonal to the range
of ``A``, which is exactly how ``t`` was chosen, and any other subgradient ``U V^T + s u v^T``
would break it, so these multipliers are the only candidates. If they are nonnegative,
:func:`ucfm_svm.solvers.certificate.class_lower_bound` turns them into a lower bound equal (up to
rounding) to ``||A||_*``, and the closed form is the certified global optimum (the unique
one when they are positive, docs/theory.md §10.2).

The sign of each multiplier is decided robustly (docs/theory.md §10.3-10.4): float64 carries an
a-posteriori error bound on every multiplier and on the geometry (:func:`float_error_bounds`);
when a sign or the geometry is within that bound, :func:`solve_theory` re-evaluates the closed
form in extended precision (:mod:`ucfm_svm.solvers.exact`, ``k <= EXACT_MAX_K``). Only a
multiplier decided negative (never observed) makes it fall back to the convex solve.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import geometry
from ..errors import SolverError
from ..result import CERTIFY_RTOL, GEOMETRY_RTOL, Result
from ..spec import Spec
from ..validation import fail
from . import certificate
from .convex import solve_convex

if TYPE_CHECKING:  # mpmath is imported only when float64 cannot decide
    from .exact import ExactClosedForm

#: Largest k for ``solve_theory`` (a dense SVD of the k x k matrix ``A``: O(k^3) time, O(k^2)
#: memory). Measured on the 2-core machine under load, ImageNet-LT-like long tail: k = 1000 in
#: 0.5 s and 0.2 GiB, k = 2000 in 2.9 s and 0.5 GiB; k = 8142 would take minutes and several
#: GiB. Above it ``ucfm_svm.solvers.structured`` (``--method structured``, ``--full`` for the Grams)
#: computes the same closed form in O(k) memory.
DENSE_MAX_K = 2000
#: Largest k for which an inconclusive float64 certificate is re-evaluated in extended
#: precision (:data:`ucfm_svm.solvers.exact.MAX_K`, kept here to avoid importing mpmath).
EXACT_MAX_K = 50


def optimal_shift(spec: Spec) -> np.ndarray:
    """The shift ``t = Delta^{-2} 1 / (1^T Delta^{-2} 1)`` of docs/theory.md §4 (shape (k,), sums
    to 1).

    It is the ``t`` for which ``u = Delta^{-1} 1`` is orthogonal to the range of ``A``:
    ``1^T Delta^{-2} (I - 1 t^T) = 0``.
    """
    inv_sq = spec.Delta**-2.0
    return inv_sq / inv_sq.sum()


def optimal_logits(spec: Spec) -> np.ndarray:
    """Class-level logits ``Zbar* = (I - 1 t^T) diag(delta)`` (k x k, column c = class c).

    The diagonal ``1 - t_c`` is formed as ``sum_{i != c} Delta_i^{-2} / sum_i Delta_i^{-2}``:
    a subtraction from 1 cancels when one ``Delta_c`` is much smaller than the others
    (``t_c`` near 1; ``Delta_c = 1e-8`` among ones put the classifier norms off by 18x).
    """
    inv_sq = spec.Delta**-2.0
    total = inv_sq.sum()
    t = inv_sq / total
    rest = total - inv_sq
    for c in np.flatnonzero(inv_sq > 0.5 * total).tolist():  # at most one class
        rest[c] = np.delete(inv_sq, c).sum()
    logits = -np.broadcast_to(t, (spec.k, spec.k)).copy()
    np.fill_diagonal(logits, rest / total)
    return logits * spec.delta[None, :]


def scaled_logit_matrix(spec: Spec) -> np.ndarray:
    """``A = Delta^{-1} Zbar* N^{1/2}`` (k x k), whose nuclear norm is the optimum."""
    return optimal_logits(spec) / spec.Delta[:, None] * np.sqrt(spec.n_vec)[None, :]


@dataclass(frozen=True)
class ClosedForm:
    """The closed-form point of docs/theory.md §4 and its dual certificate (dense, O(k^3)).

    Attributes
    ----------
    logits : (k, k) array
        ``Zbar* = (I - 1 t^T) diag(delta)``.
    A : (k, k) array
        ``Delta^{-1} Zbar* N^{1/2}``.
    U : (k, k-1) array
    s : (k-1,) array
    Vt : (k-1, k) array
        Compact SVD ``A = U diag(s) Vt`` (``A`` has rank ``k - 1``).
    multipliers : (k, k) array
        ``lam_{c'c} = -L_{c'c}`` for ``c' != c`` (zero diagonal), ``L = Delta^{-1} U Vt N^{1/2}``;
        raw values, negative entries included.
    min_multiplier : float
        Smallest off-diagonal multiplier divided by the largest (``>= 0`` for a valid dual).
    column_residual : float
        ``max_c |sum_c' L_c'c| / max |L|``: how far ``u = Delta^{-1} 1`` is from orthogonal to the
        range of ``A`` (zero up to rounding by the choice of ``t``).
    value : float
        ``||A||_* = sum(s)``, the objective of the closed-form point.
    lower_bound : float
        Certified lower bound :func:`ucfm_svm.solvers.certificate.class_lower_bound` of
        ``multipliers``.
    condition : float
        ``s_max / s_min`` over the ``k - 1`` nonzero singular values. The polar factor
        ``U V^T`` is computed to about ``1e-16 * condition``, which bounds the accuracy of the
        certificate: ~1e-14 for moderate hyperparameters, 1e-6 or worse when scales and margins
        spread over several orders of magnitude (condition ~1e10).
    multiplier_error : (k, k) array or None
        A-posteriori bound on the float64 error of each multiplier (:func:`float_error_bounds`).
    geometry_error : float
        Bound on the error of the reported geometry: relative for the norms, absolute for the
        cosines (:func:`float_error_bounds`).
    """

    logits: np.ndarray
    A: np.ndarray
    U: np.ndarray
    s: np.ndarray
    Vt: np.ndarray
    multipliers: np.ndarray
    min_multiplier: float
    column_residual: float
    value: float
    lower_bound: float
    condition: float
    multiplier_error: np.ndarray | None = None
    geometry_error: float = float("nan")

    @property
    def signs_decided(self) -> bool:
        """Whether every off-diagonal multiplier exceeds its float64 error bound
        :attr:`multiplier_error` in absolute value (docs/theory.md §10)."""
        if self.multiplier_error is None:
            return False
        off = ~np.eye(self.multipliers.shape[0], dtype=bool)
        return bool(np.all(np.abs(self.multipliers[off]) > self.multiplier_error[off]))

    @property
    def float_certified(self) -> bool:
        """Certified in float64 alone: signs decided and positive, gap within
        ``CERTIFY_RTOL``, geometry error bound within ``GEOMETRY_RTOL``."""
        return (
            self.signs_decided
            and self.min_multiplier > 0
            and self.certified
            and self.geometry_error <= GEOMETRY_RTOL
        )

    @property
    def rel_gap(self) -> float:
        """``(value - lower_bound) / value``."""
        return (self.value - self.lower_bound) / self.value

    @property
    def certified(self) -> bool:
        """Whether the closed form is the certified optimum (``rel_gap <= CERTIFY_RTOL``).

        The certificate is exact up to one SVD, so for moderate hyperparameters its gap is at
        float rounding (~1e-14); with scales or margins spread over many orders of magnitude
        rounding in the smallest multipliers can open it to ~1e-6.
        """
        return self.rel_gap <= CERTIFY_RTOL

    def classifier_gram(self) -> np.ndarray:
        """``W W^T = (A A^T)^{1/2} = U diag(s) U^T`` (k x k)."""
        return (self.U * self.s) @ self.U.T

    def embedding_gram(self, spec: Spec) -> np.ndarray:
        """``Hbar^T Hbar = N^{-1/2} (A^T A)^{1/2} N^{-1/2} = N^{-1/2} V diag(s) V^T N^{-1/2}``."""
        root = (self.Vt.T * self.s) @ self.Vt
        inv = spec.n_vec**-0.5
        return inv[:, None] * root * inv[None, :]


def closed_form(spec: Spec) -> ClosedForm:
    """The closed-form optimum of docs/theory.md §4 with its dual certificate (see the module text).

    Parameters
    ----------
    spec : Spec
        Any counts, scales and margins (the dimension is not used here).

    Returns
    -------
    ClosedForm
    """
    k = spec.k
    logits = optimal_logits(spec)
    A = logits / spec.Delta[:, None] * np.sqrt(spec.n_vec)[None, :]
    U, s, Vt = np.linalg.svd(A)
    U, s, Vt = U[:, : k - 1], s[: k - 1], Vt[: k - 1, :]
    L = (U @ Vt) / spec.Delta[:, None] * np.sqrt(spec.n_vec)[None, :]
    off = ~np.eye(k, dtype=bool)
    lam = np.where(off, -L, 0.0)
    scale = float(np.abs(L).max())
    multiplier_error, geometry_error = float_error_bounds(spec, A, U, s, Vt)
    return ClosedForm(
        logits=logits,
        A=A,
        U=U,
        s=s,
        Vt=Vt,
        multipliers=lam,
        min_multiplier=float(lam[off].min() / lam[off].max()),
        column_residual=float(np.abs(L.sum(axis=0)).max() / scale),
        value=float(s.sum()),
        lower_bound=certificate.class_lower_bound(spec, lam),
        condition=float(s[0] / s[-1]),
        multiplier_error=multiplier_error,
        geometry_error=geometry_error,
    )


def float_error_bounds(
    spec: Spec, A: np.ndarray, U: np.ndarray, s: np.ndarray, Vt: np.ndarray
) -> tuple[np.ndarray, float]:
    """A-posteriori error bounds of the float64 closed form (docs/theory.md §10).

    The computed factors are an exact SVD of ``A + E`` up to their orthogonality defects
    ``o = ||U^T U - I||_2 + ||V^T V - I||_2``, with ``||E||_F <= eta``,
    ``eta = ||A - U S V^T||_F + 2 k eps ||A||_F`` (the residual, plus the rounding of its own
    evaluation). Then:

    - polar factor (rank ``k - 1``, smallest singular value ``s_min``): every entry of
      ``Q = U V^T`` is within ``tau = 3 eta / s_min + o + k eps`` of the exact one
      (perturbation of the polar factor, ``||dQ|| <= 2 ||E|| / (s_min + s~_min)``, with slack),
      so multiplier ``lam_{c'c} = -Q_{c'c} sqrt(n_c) / Delta_c'`` is within
      ``tau sqrt(n_c) / Delta_c'``;
    - Grams: ``|| |A + E| - |A| ||_F <= sqrt(2) ||E||_F`` (Kittaneh's inequality for the matrix
      absolute value, both sides), so with ``e = sqrt(2) eta + o s_max`` the squared norms
      ``[|A^T|]_cc = ||w_c||^2`` and ``[|A|]_cc = n_c ||hbar_c||^2`` are within ``e``; the
      relative error of a norm is at most ``e / (2 [.]_cc)``, of a cosine ``2 e / min [.]_cc``.

    Returns
    -------
    multiplier_error : (k, k) array
    geometry_error : float
        The largest relative norm error or absolute cosine error bound over both Grams.
    """
    k = spec.k
    eps = np.finfo(float).eps
    eta = float(np.linalg.norm(A - (U * s) @ Vt) + 2 * k * eps * np.linalg.norm(A))
    eye = np.eye(k - 1)
    defect = float(np.linalg.norm(U.T @ U - eye, 2) + np.linalg.norm(Vt @ Vt.T - eye, 2))
    tau = 3 * eta / s[-1] + defect + k * eps
    multiplier_error = tau * np.sqrt(spec.n_vec)[None, :] / spec.Delta[:, None]
    e = np.sqrt(2.0) * eta + defect * s[0]
    diag = np.concatenate([np.einsum("ij,j,ij->i", U, s, U), np.einsum("ji,j,ji->i", Vt, s, Vt)])
    smallest = float(diag.min())
    geometry_error = 2 * e / smallest if smallest > 0 else float("inf")
    return multiplier_error, geometry_error


def convex_fallback(
    failure: str, solve: Callable[[], Result], start: float
) -> tuple[Result | None, str]:
    """Run the convex ``solve`` for a closed form whose certificate did not close.

    Returns ``(result, failure)``: the convex result relabelled ``method="theory"`` with a
    message that says why it ran (and ``failure``), or ``None`` and ``failure`` extended by the
    convex solve's own failure.
    """
    try:
        convex = solve()
    except SolverError as exc:
        return None, f"{failure}; the convex fallback failed too: {exc}"
    message = f"{failure}: fell back to the convex solve: {convex.message}"
    seconds = time.perf_counter() - start
    return dataclasses.replace(convex, method="theory", seconds=seconds, message=message), failure


def solve_theory(spec: Spec, fallback: bool = True) -> Result:
    """The closed-form optimum as a :class:`Result`, certified by its own dual (no cvxpy).

    ``W = U S^{1/2}`` and ``Hbar = S^{1/2} V^T N^{-1/2}`` (zero-padded to ``d`` columns) from the
    compact SVD of ``A`` (:func:`closed_form`); ``lower_bound`` comes from the dual certificate.

    Parameters
    ----------
    spec : Spec
        Needs ``spec.dim >= k - 1`` (the optimum has rank ``k - 1``, docs/theory.md §2) and
        ``k <= DENSE_MAX_K`` (beyond it ``ucfm_svm.solvers.structured.structured_solution``).
    fallback : bool
        If a multiplier is decided negative (in float64 beyond its error bound, or in extended
        precision), the all-tight point is not optimal: return
        :func:`ucfm_svm.solvers.convex.solve_convex` instead (its geometry checked by
        :func:`ucfm_svm.solvers.coverage.cover`), with method ``"theory"`` and a message saying
        so. If that solve fails too, or with ``fallback=False``, the uncertified closed form is
        returned (status ``"not certified"``).

    Returns
    -------
    Result
        Status ``"optimal"`` iff the relative gap is ``<= CERTIFY_RTOL`` and the geometry is
        within ``GEOMETRY_RTOL`` (float64 bound, or the extended-precision evaluation, whose
        ``solver`` is ``"closed form, N digits"``); ``"objective certified, geometry not"`` when
        only the float64 geometry bound fails above ``EXACT_MAX_K``; ``"not certified"``
        otherwise.
    """
    spec.require_certifiable("theory")
    if spec.k > DENSE_MAX_K:
        raise fail(
            "k",
            f"at most {DENSE_MAX_K} for the theory method (a dense SVD: O(k^3) time, O(k^2) "
            "memory); use --method structured, the same closed form in O(k) memory (--full adds "
            "W, H and the k x k Grams)",
            spec.k,
        )
    start = time.perf_counter()
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite input is reported below
            cf = closed_form(spec)
    except np.linalg.LinAlgError:  # the SVD of a matrix with inf/nan entries does not converge
        raise not_finite_error(spec) from None
    exact = None
    if not cf.float_certified and spec.k <= EXACT_MAX_K:
        from .exact import exact_closed_form

        exact = exact_closed_form(spec)
    negative = (exact.signs_decided and exact.min_multiplier <= 0) if exact else (
        cf.signs_decided and cf.min_multiplier <= 0
    )
    failure = (
        f"closed form not certified (smallest multiplier {cf.min_multiplier:.3g} of the "
        f"largest, relative gap {cf.rel_gap:.3g}, condition number of A {cf.condition:.2g})"
    )
    if negative and fallback:  # the all-tight point is not optimal: only the convex solve is left
        result, failure = convex_fallback(failure, lambda: solve_convex(spec), start)
        if result is not None:
            return result
    if exact is not None and exact.certified:
        return _exact_result(spec, cf, exact, start)
    k, d = spec.k, spec.dim
    root = np.sqrt(cf.s)
    W = np.zeros((k, d))
    W[:, : k - 1] = cf.U * root
    H_mean = np.zeros((d, k))
    H_mean[: k - 1, :] = root[:, None] * cf.Vt / np.sqrt(spec.n_vec)[None, :]
    ratio = geometry.min_margin_ratio(spec, geometry.class_logits(spec, W, H_mean))
    if ratio < 1:  # rounding only: the closed form is exactly tight
        with np.errstate(divide="ignore", invalid="ignore"):  # overflow is reported below
            W, H_mean = W / np.sqrt(ratio), H_mean / np.sqrt(ratio)
    if not (np.all(np.isfinite(W)) and np.all(np.isfinite(H_mean)) and np.isfinite(ratio)):
        raise not_finite_error(spec)
    positive = cf.signs_decided and cf.min_multiplier > 0
    if cf.float_certified:
        message = (
            f"closed form (docs/theory.md §4) certified by its dual: objective {cf.value:.10g}, "
            f"lower bound {cf.lower_bound:.10g}, relative gap {cf.rel_gap:.2e}; geometry "
            f"within {cf.geometry_error:.1e} (float64 error bound, docs/theory.md §10)"
        )
    else:
        why = (
            f"float64 bounds its geometry only to {cf.geometry_error:.1e}"
            if positive and cf.certified
            else "float64 cannot decide the signs of the multipliers"
            if not cf.signs_decided
            else f"the float64 certificate's relative gap is {cf.rel_gap:.2e}"
        )
        done = (
            f"neither can {exact.dps}-digit arithmetic"
            if exact is not None
            else f"k = {k} > {EXACT_MAX_K} for the extended-precision check"
        )
        message = f"{failure}: {why} and {done}; use --method structured (or auto)"
    return Result.from_point(
        spec,
        W,
        H_mean,
        method="theory",
        level="class",
        lower_bound=cf.lower_bound,  # weak duality holds for any multipliers (clipped at 0)
        seconds=time.perf_counter() - start,
        message=message,
        solver="closed form",
        geometry_certified=positive and cf.geometry_error <= GEOMETRY_RTOL,
    )


def _exact_result(spec: Spec, cf: ClosedForm, exact: ExactClosedForm, start: float) -> Result:
    """The closed form certified and evaluated in extended precision (:mod:`.exact`)."""
    k, d = spec.k, spec.dim
    W = np.zeros((k, d))
    W[:, : k - 1] = exact.W
    H_mean = np.zeros((d, k))
    H_mean[: k - 1, :] = exact.H_mean
    ratio = geometry.min_margin_ratio(spec, geometry.class_logits(spec, W, H_mean))
    if ratio < 1:  # rounding of the float64 factors only
        W, H_mean = W / np.sqrt(ratio), H_mean / np.sqrt(ratio)
    reason = (
        "the float64 signs of the multipliers are undecided"
        if not cf.signs_decided
        else f"float64 bounds the geometry only to {cf.geometry_error:.1e}"
        if cf.certified
        else f"the float64 certificate's relative gap is {cf.rel_gap:.2e}"
    )
    return Result.from_point(
        spec,
        W,
        H_mean,
        method="theory",
        level="class",
        lower_bound=exact.lower_bound,
        seconds=time.perf_counter() - start,
        message=(
            f"closed form (docs/theory.md §4) certified by its dual in {exact.dps}-digit "
            f"arithmetic because {reason} (condition number of A {cf.condition:.2g}): every "
            f"multiplier positive (smallest {exact.min_multiplier:.3g} of the largest), "
            f"objective {exact.value:.10g}, lower bound {exact.lower_bound:.10g}; geometry "
            "correctly rounded from the extended-precision factors"
        ),
        solver=f"closed form, {exact.dps} digits",
    )


def not_finite_error(spec: Spec) -> SolverError:
    """The error for a closed form that overflows or underflows float64 (extreme scales/margins)."""
    return SolverError(
        "The closed form is not finite in float64 (scales span "
        f"{_decades(spec.Delta):.0f} and margins {_decades(spec.delta):.0f} orders of "
        "magnitude): bring the hyperparameters to a moderate range."
    )


def _decades(values: np.ndarray) -> float:
    """``log10(max / min)`` of a positive vector."""
    return float(np.log10(values.max()) - np.log10(values.min()))
