"""Certified lower bounds on the UF-CS-SVM from Lagrange multipliers (weak duality).

For any ``(W, H)``, ``1/2 (||W||^2 + ||H||^2) >= ||W H||_*``, and with scaled logits
``Z = Delta W H`` the constraints read ``z_{y_i, i} - z_{c, i} >= delta_{y_i}`` (docs/theory.md §2).
Given multipliers ``lam_{c, i} >= 0`` (one per constraint ``c != y_i``) define ``L`` (k x m) by
``L_{c, i} = -lam_{c, i}`` for ``c != y_i`` and ``L_{y_i, i} = sum_{c != y_i} lam_{c, i}``. Then
for every feasible ``Z``, with ``A = Delta^{-1} Z N^{1/2}`` at the class level
(``N^{1/2}`` dropped at the example level) and ``Y = Delta L N^{-1/2}``:

    ||A||_* >= <Y, A> / ||Y||_2 = <L, Z> / ||Y||_2 >= sum_i delta_{y_i} L_{y_i, i} / ||Y||_2.

The right-hand side is therefore a lower bound on the global optimum of the non-convex problem
for **any** dimension ``d``; it is tight (strong duality) at optimal multipliers when
``d >= k - 1``. These functions need no solver: they certify whatever produced the multipliers.
"""

from __future__ import annotations

import numpy as np

from ..spec import Spec


def _bound(spec: Spec, lam: np.ndarray, labels: np.ndarray, column_weights: np.ndarray) -> float:
    m = lam.shape[1]
    cols = np.arange(m)
    lam = np.clip(np.asarray(lam, dtype=float), 0.0, None)
    lam[labels, cols] = 0.0
    L = -lam
    L[labels, cols] = lam.sum(axis=0)
    Y = spec.Delta[:, None] * L / column_weights[None, :]
    spectral = float(np.linalg.norm(Y, 2))
    if spectral == 0.0:
        return 0.0
    return float(np.sum(spec.delta[labels] * L[labels, cols]) / spectral)


def class_lower_bound(spec: Spec, lam: np.ndarray) -> float:
    """Lower bound from class-level multipliers ``lam`` (k x k; ``lam[c', c]`` for the
    constraint ``zbar_{cc} - zbar_{c'c} >= delta_c``). Negative entries are clipped to 0 and the
    diagonal is ignored, so any matrix gives a valid bound."""
    lam = np.asarray(lam, dtype=float)
    return _bound(spec, lam, np.arange(spec.k), np.sqrt(spec.n_vec))


def example_lower_bound(spec: Spec, lam: np.ndarray, labels: np.ndarray) -> float:
    """Lower bound from example-level multipliers ``lam`` (k x n; ``lam[c, i]`` for the
    constraint ``z_{y_i, i} - z_{c, i} >= delta_{y_i}``)."""
    lam = np.asarray(lam, dtype=float)
    return _bound(spec, lam, np.asarray(labels), np.ones(lam.shape[1]))
