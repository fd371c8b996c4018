"""Weak-duality lower bounds of the model variants (docs/theory.md §11, §12), no solver needed.

Multipliers ``lam[c', c] >= 0`` (class level, one per margin ``c' != c``) define ``L`` as in
:mod:`ucfm_svm.solvers.certificate`: ``L_c'c = -lam_c'c``, ``L_cc = sum_c' lam_c'c``.

- **Free bias** (§11). For feasible ``(Zbar, beta)``,
  ``<L, Zbar> = sum lam_c'c (zbar_cc - zbar_c'c + beta_c - beta_c') - sum_c beta_c r_c`` with
  ``r_c = sum_c' lam_c'c - sum_c' lam_cc'`` (the multipliers with ``c`` as the true class minus
  those with ``c`` as a wrong class). Stationarity in the free ``beta`` asks ``r = 0``
  (``L 1 = 0``); then the bound of the paper's model holds unchanged. :func:`balance` adds a
  nonnegative flow to any ``lam`` so that ``r = 0`` exactly, so every ``lam`` gives a bound.
- **Non-negative features** (§12). For feasible ``(W, Hbar >= 0)`` the Gram ``Q`` of
  ``[W^T, Hbar]`` is PSD with ``Q_HH >= 0``, and the cost is ``<C, Q>``,
  ``C = 1/2 diag(I, N)``. With ``M >= 0`` (k x k) and
  ``Y = [[0, Delta L / 2], [(Delta L)^T / 2, M]]``: ``<Y, Q> >= sum_c delta_c L_cc`` (margins,
  and ``<M, Q_HH> >= 0``). If ``t C - Y`` is PSD then ``<C, Q> >= <Y, Q> / t``; the smallest
  such ``t`` is ``lambda_max(C^{-1/2} Y C^{-1/2})``, so
  ``cost >= sum_c delta_c L_cc / lambda_max(C^{-1/2} Y C^{-1/2})`` for every ``d``. With
  ``M = 0`` this is the paper's bound (``lambda_max = ||Delta L N^{-1/2}||_2``).
"""

from __future__ import annotations

import numpy as np

from ..solvers import certificate
from ..spec import Spec


def _clean(lam: np.ndarray) -> np.ndarray:
    lam = np.clip(np.asarray(lam, dtype=float), 0.0, None)
    np.fill_diagonal(lam, 0.0)
    return lam


def imbalance(lam: np.ndarray) -> np.ndarray:
    """``r_c = sum_c' lam[c', c] - sum_c' lam[c, c']`` (true-class minus wrong-class sums)."""
    return lam.sum(axis=0) - lam.sum(axis=1)


def balance(lam: np.ndarray) -> np.ndarray:
    """``lam`` (clipped to ``>= 0``, zero diagonal) plus a nonnegative flow making ``r = 0``.

    Adding ``x`` to ``lam[a, c]`` moves ``r_c`` up and ``r_a`` down by ``x``; since
    ``sum_c r_c = 0`` a greedy transport from the classes with ``r > 0`` (as ``a``) to those with
    ``r < 0`` (as ``c``) balances every class.
    """
    lam = _clean(lam)
    r = imbalance(lam)
    surplus = [[a, r[a]] for a in np.flatnonzero(r > 0)]
    for c in np.flatnonzero(r < 0):
        need = -r[c]
        while need > 0 and surplus:
            a, have = surplus[-1]
            x = min(need, have)
            lam[a, c] += x
            need -= x
            surplus[-1][1] = have - x
            if surplus[-1][1] <= 0:
                surplus.pop()
    return lam


def bias_lower_bound(spec: Spec, lam: np.ndarray) -> float:
    """Lower bound on the free-bias model from any class-level ``lam`` (balanced first)."""
    return certificate.class_lower_bound(spec, balance(lam))


def dnn_lower_bound(spec: Spec, lam: np.ndarray, M: np.ndarray, bias: bool = False) -> float:
    """Lower bound on the non-negative-feature model from ``lam`` and ``M`` (module text).

    Negative entries of ``lam`` and ``M`` are clipped to zero, ``M`` is symmetrized, so any
    matrices give a valid bound. With ``bias`` the multipliers are balanced first (the bound of
    the model with both a free bias and non-negative features).
    """
    lam = balance(lam) if bias else _clean(lam)
    M = np.clip(0.5 * (np.asarray(M, float) + np.asarray(M, float).T), 0.0, None)
    k = spec.k
    L = -lam
    L[np.arange(k), np.arange(k)] = lam.sum(axis=0)
    inv_root = spec.n_vec**-0.5
    Y = np.zeros((2 * k, 2 * k))
    Y[:k, k:] = spec.Delta[:, None] * L * inv_root[None, :]
    Y[k:, :k] = Y[:k, k:].T
    Y[k:, k:] = 2.0 * inv_root[:, None] * M * inv_root[None, :]
    top = float(np.linalg.eigvalsh(Y)[-1])
    numerator = float(np.sum(spec.delta * np.diag(L)))
    if top <= 0.0:
        return 0.0
    return numerator / top


def fill_nonnegativity_multipliers(spec: Spec, lam: np.ndarray) -> np.ndarray:
    """Multipliers ``M`` of ``Q_HH >= 0`` that complete margin multipliers ``lam`` (§12).

    Dual feasibility at ``t = 1`` asks ``N - 2 M - L^T Delta^2 L`` PSD; taking
    ``M_cc' = max(0, -(L^T Delta^2 L)_cc') / 2`` off the diagonal cancels every positive
    off-diagonal entry, which is exact at the closed form of §12.
    """
    lam = _clean(lam)
    k = spec.k
    L = -lam
    L[np.arange(k), np.arange(k)] = lam.sum(axis=0)
    DL = spec.Delta[:, None] * L
    M = np.clip(-(DL.T @ DL), 0.0, None) / 2.0
    np.fill_diagonal(M, 0.0)
    return M
