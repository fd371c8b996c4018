"""Pieces shared by the model variants: balanced factors, the bias gauge, feasible results."""

from __future__ import annotations

import numpy as np

from .. import geometry
from ..errors import SolverError
from ..result import CERTIFY_RTOL, Result
from ..spec import Spec


class ClosedFormCertificate:
    """``rel_gap`` and ``certified`` of a closed form with a ``value`` and a ``lower_bound``
    (the dataclasses of :mod:`~ucfm_svm.variants.bias` and
    :mod:`~ucfm_svm.variants.nonnegative`)."""

    value: float
    lower_bound: float

    @property
    def rel_gap(self) -> float:
        """``(value - lower_bound) / value``."""
        return (self.value - self.lower_bound) / self.value

    @property
    def certified(self) -> bool:
        """Whether the certificate closes to ``CERTIFY_RTOL``."""
        return self.rel_gap <= CERTIFY_RTOL


def factors(A: np.ndarray, spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """``W = U S^{1/2}`` (k x d) and ``Hbar = S^{1/2} V^T N^{-1/2}`` (d x k) from ``A``.

    ``1/2 ||W||^2 + 1/2 sum_c n_c ||hbar_c||^2 = ||A||_*`` when ``d >= rank A``
    (docs/theory.md §2).
    """
    W, G = geometry.balanced_factors(A, spec.dim)
    return W, G / np.sqrt(spec.n_vec)[None, :]


def gauge_bias(spec: Spec, b: np.ndarray) -> np.ndarray:
    """``b`` minus its component along ``Delta^{-1} 1``, the direction that shifts every
    ``Delta_c b_c`` equally and so changes no margin (docs/theory.md §11)."""
    v = 1.0 / spec.Delta
    return b - (b @ v) / (v @ v) * v


def point_result(
    spec: Spec,
    W: np.ndarray,
    H_mean: np.ndarray,
    b: np.ndarray | None,
    **kwargs: object,
) -> Result:
    """:meth:`Result.from_point` after rescaling ``(W, Hbar)`` so that every margin holds.

    With a bias the margins are ``Delta_c (w_c^T hbar_c + b_c) - ...``: scaling ``(W, Hbar)`` by
    ``t`` scales ``Delta W Hbar`` by ``t^2``; the bias is scaled by ``t^2`` too, so the margins
    are homogeneous of degree 2 and the rescaling costs at most the solver's feasibility error.
    Non-negative features are clipped at zero first (rounding of a solver); the bias is put in
    the gauge of :func:`gauge_bias`.
    """
    if spec.features == "nonnegative":
        H_mean = np.clip(H_mean, 0.0, None)
    logits = geometry.class_logits(spec, W, H_mean)
    if b is not None:
        logits = logits + (spec.Delta * b)[:, None]
    ratio = geometry.min_margin_ratio(spec, logits)
    if not ratio > 0:
        raise SolverError(
            f"The {kwargs.get('method')} solve returned logits that violate the margins beyond "
            f"repair (smallest margin ratio {ratio:.3g}). Try another backend (--solver)."
        )
    if ratio < 1:
        t = np.sqrt(1.0 / ratio)
        W, H_mean = W * t, H_mean * t
        b = None if b is None else b / ratio
    if b is not None:
        b = gauge_bias(spec, b)
    return Result.from_point(spec, W, H_mean, level="class", b=b, **kwargs)  # type: ignore[arg-type]


def polish_note(name: str, status: str, polished: bool, inaccurate: bool) -> str:
    """Message of a convex route whose point went through the Newton polish: what the backend
    reported and whether the polished point was kept (then the certificate is its own)."""
    parts = []
    if status != "optimal":
        parts.append(f"{name} reported {status}" + ("; best effort" if inaccurate else ""))
    if polished:
        parts.append(f"{name}'s point polished by Newton steps on its KKT system")
    return "; ".join(parts)
