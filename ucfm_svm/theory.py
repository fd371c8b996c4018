"""Closed-form geometry of the UF-CS-SVM (THEORY F3, F5').

For any counts, scales ``Delta`` and margins ``delta`` (with ``d >= k - 1``) the class-level
optimum has every margin tight and logits

    Zbar* = (I - 1 t^T) diag(delta),     t = Delta^{-2} 1 / (1^T Delta^{-2} 1),

so that, with ``A = Delta^{-1} Zbar* N^{1/2}``: ``W W^T = (A A^T)^{1/2}``,
``Hbar^T Hbar = N^{-1/2} (A^T A)^{1/2} N^{-1/2}`` and the optimum is ``||A||_*``.
With ``Delta = I`` the shift is ``t = 1/k`` and ``Zbar* = P diag(delta)``, ``P = I - 11^T/k``
(F3). F5' was observed (not proven) for ``Delta != I``: results built on it must carry their own
certificate.
"""

from __future__ import annotations

import numpy as np

from .spec import Spec


def optimal_shift(spec: Spec) -> np.ndarray:
    """The shift ``t = Delta^{-2} 1 / (1^T Delta^{-2} 1)`` of THEORY F5' (shape (k,), sums to 1).

    It is the ``t`` for which ``u = Delta^{-1} 1`` is orthogonal to the range of ``A``:
    ``1^T Delta^{-2} (I - 1 t^T) = 0``.
    """
    inv_sq = spec.Delta**-2.0
    return inv_sq / inv_sq.sum()


def optimal_logits(spec: Spec) -> np.ndarray:
    """Class-level logits ``Zbar* = (I - 1 t^T) diag(delta)`` (k x k, column c = class c)."""
    t = optimal_shift(spec)
    return (np.eye(spec.k) - t[None, :]) * spec.delta[None, :]


def scaled_logit_matrix(spec: Spec) -> np.ndarray:
    """``A = Delta^{-1} Zbar* N^{1/2}`` (k x k), whose nuclear norm is the optimum."""
    return optimal_logits(spec) / spec.Delta[:, None] * np.sqrt(spec.n_vec)[None, :]
