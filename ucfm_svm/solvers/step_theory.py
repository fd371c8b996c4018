"""Scalar closed forms of the UF-CS-SVM geometry under STEP imbalance (docs/theory.md §5), any
``rho``.

STEP: ``K1 = (1 - rho) k`` majority classes with ``n_1 = R m`` examples and ``K2 = rho k``
minority classes with ``n_2 = m`` examples; each group ``g`` has its own scale ``Delta_g`` and
margin ``delta_g`` (CE: all ones; LDT: ``Delta = 1``, two margins; CDT/VS: two scales, margins 1).

Derivation from the matrix closed form (docs/theory.md §4, :mod:`ucfm_svm.solvers.theory`). With
``s_g = delta_g sqrt(n_g)``, ``alpha_g = s_g / Delta_g`` and the shift
``t_g = Delta_g^{-2} / (K1 Delta_1^{-2} + K2 Delta_2^{-2})`` (CDT's two shift values),
``A = Delta^{-1} (I - 1 t^T) diag(delta) N^{1/2}`` acts

- on vectors centred within group ``g`` (dimension ``K_g - 1``) as the scalar ``alpha_g``, on
  both sides (``A x = A^T x = alpha_g x``);
- on ``span(e_1, e_2)``, ``e_g = 1_g / sqrt(K_g)``, as the 2 x 2 matrix
  ``B_ij = alpha_j [i = j] - t_j s_j sqrt(K_i K_j) / Delta_i``, which has rank one (the null
  vector ``S^{-1} 1`` of ``A`` lies in that span).

Hence with ``b = ||B||_F`` (``= ||B||_*``), ``M = B B^T / b = (B B^T)^{1/2}`` and
``M' = B^T B / b``:

- optimum ``sum_g (K_g - 1) alpha_g + b``;
- classifier Gram ``(A A^T)^{1/2}``: ``||w_g||^2 = alpha_g (K_g - 1) / K_g + M_gg / K_g``,
  same-group inner product ``(M_gg - alpha_g) / K_g``, cross-group ``M_12 / sqrt(K1 K2)``;
- embedding Gram ``N^{-1/2} (A^T A)^{1/2} N^{-1/2}``: the same with ``M'`` and every entry
  divided by ``sqrt(n_i n_j)``.

So every norm and cosine is an explicit algebraic function of ``(k, R, rho, m, Delta, delta)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec import CE_LIMIT_LOSSES, LOSSES
from ..validation import check_float, check_int, fail


@dataclass(frozen=True)
class StepGeometry:
    """Norms, cosines and optimum of the STEP UF-CS-SVM (majority first in every pair).

    Attributes
    ----------
    k_maj, k_min : int
        Numbers of majority and minority classes.
    shift : (float, float)
        ``(t_maj, t_min)``: the optimal logits are ``Zbar* = (I - 1 t^T) diag(delta)``.
    objective : float
        The optimum ``1/2 ||W||^2 + 1/2 sum_c n_c ||hbar_c||^2``.
    classifier_norms, embedding_norms : (float, float)
        ``(||w_maj||, ||w_min||)`` and ``(||hbar_maj||, ||hbar_min||)``.
    classifier_cosines, embedding_cosines : dict
        Keys ``maj-maj``, ``min-min`` (``nan`` for a group of one class) and ``maj-min``.
    """

    k_maj: int
    k_min: int
    shift: tuple[float, float]
    objective: float
    classifier_norms: tuple[float, float]
    embedding_norms: tuple[float, float]
    classifier_cosines: dict[str, float]
    embedding_cosines: dict[str, float]

    @property
    def classifier_norm_ratio(self) -> float:
        """``||w_maj|| / ||w_min||``."""
        return self.classifier_norms[0] / self.classifier_norms[1]

    @property
    def embedding_norm_ratio(self) -> float:
        """``||hbar_maj|| / ||hbar_min||``."""
        return self.embedding_norms[0] / self.embedding_norms[1]


def step_geometry(
    k: int,
    R: float,
    rho: float,
    *,
    scales: tuple[float, float] = (1.0, 1.0),
    margins: tuple[float, float] = (1.0, 1.0),
    n_min: float = 1.0,
) -> StepGeometry:
    """Scalar closed form of the STEP geometry for any two-valued scales and margins.

    Parameters
    ----------
    k : int
        Number of classes, ``k >= 2``.
    R : float
        Imbalance ratio ``n_maj / n_min >= 1`` (need not be a whole number here).
    rho : float
        Minority fraction, ``rho * k`` a whole number between 1 and ``k - 1``.
    scales : (Delta_maj, Delta_min)
    margins : (delta_maj, delta_min)
    n_min : float
        Examples per minority class (the geometry scales with ``sqrt(n_min)``).

    Returns
    -------
    StepGeometry
    """
    k_maj, k_min = _groups(k, rho)
    R = check_float("R", R, low=1.0)
    n_min = check_float("n_min", n_min, low=0.0, low_open=True)
    Delta = _pair("scales", scales)
    delta = _pair("margins", margins)
    K = np.array([k_maj, k_min], dtype=float)
    n = np.array([R * n_min, n_min])
    s = delta * np.sqrt(n)
    alpha = s / Delta
    weights = K * Delta**-2.0
    t = Delta**-2.0 / float(np.sum(weights))
    root_k = np.sqrt(K)
    B = -np.outer(root_k / Delta, t * s * root_k)
    # B_gg = alpha_g (1 - K_g t_g), with 1 - K_g t_g = K_h Delta_h^-2 / sum_j K_j Delta_j^-2 for
    # the other group h, formed without the subtraction (it cancels when the scales spread:
    # CDT gamma >= 17 at R = 10 lost every digit of the norms)
    B[np.diag_indices(2)] = alpha * weights[::-1] / float(np.sum(weights))
    b = float(np.linalg.norm(B))
    M_w = B @ B.T / b
    M_h = B.T @ B / b

    def gram_entries(M: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        diag = (alpha * (K - 1) + np.diag(M)) / K / scale
        same = (np.diag(M) - alpha) / K / scale
        cross = M[0, 1] / np.sqrt(K[0] * K[1]) / np.sqrt(scale[0] * scale[1])
        return diag, same, float(cross)

    w_diag, w_same, w_cross = gram_entries(M_w, np.ones(2))
    h_diag, h_same, h_cross = gram_entries(M_h, n)
    return StepGeometry(
        k_maj=k_maj,
        k_min=k_min,
        shift=(float(t[0]), float(t[1])),
        objective=float(np.sum((K - 1) * alpha) + b),
        classifier_norms=(float(np.sqrt(w_diag[0])), float(np.sqrt(w_diag[1]))),
        embedding_norms=(float(np.sqrt(h_diag[0])), float(np.sqrt(h_diag[1]))),
        classifier_cosines=_cosines(K, w_diag, w_same, w_cross),
        embedding_cosines=_cosines(K, h_diag, h_same, h_cross),
    )


def step_hyperparameters(
    k: int, R: float, rho: float, loss: str, gamma: float | None = None
) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(scales, margins)`` as ``(majority, minority)`` pairs for a loss preset under STEP.

    The same conventions as :func:`ucfm_svm.spec.svm_hyperparameters` (docs/theory.md §9): CDT and
    VS
    ``Delta_g`` proportional to ``R^gamma`` (majority) and 1 (minority), rescaled so that
    ``K1 Delta_1 + K2 Delta_2 = k``; LDT margins ``delta_g = 1 / Delta_g``; CE, wCE, LA, LDAM all
    ones.
    """
    k_maj, k_min = _groups(k, rho)
    R = check_float("R", R, low=1.0)
    if loss not in LOSSES:
        raise fail("loss", "one of " + ", ".join(LOSSES), loss)
    if loss in CE_LIMIT_LOSSES:
        return (1.0, 1.0), (1.0, 1.0)
    if gamma is None:
        raise fail("gamma", f"given for loss '{loss}' (a finite number)", None)
    gamma = check_float("gamma", gamma)
    # Normalize in log space so that large |gamma| stays finite: Delta ~ (R^gamma, 1).
    log_r = gamma * np.log(R)
    top = max(log_r, 0.0)
    raw = np.exp(np.array([log_r - top, -top]))
    scale = k * raw / (k_maj * raw[0] + k_min * raw[1])
    pair = (float(scale[0]), float(scale[1]))
    if loss == "ldt":
        return (1.0, 1.0), (1.0 / pair[0], 1.0 / pair[1])
    return pair, (1.0, 1.0)


def step_geometry_for_loss(
    k: int, R: float, rho: float, loss: str, gamma: float | None = None, n_min: float = 1.0
) -> StepGeometry:
    """:func:`step_geometry` with the hyperparameters of a loss preset
    (:func:`step_hyperparameters`)."""
    scales, margins = step_hyperparameters(k, R, rho, loss, gamma)
    return step_geometry(k, R, rho, scales=scales, margins=margins, n_min=n_min)


@dataclass(frozen=True)
class MinorityCollapse:
    """How CE's minority classifiers collapse as ``R`` grows (STEP, ``Delta = delta = 1``).

    Attributes
    ----------
    threshold_ratio : float
        The ``R`` at which the min-min classifier cosine is zero; positive beyond it:
        ``R* = ((1 - rho)^{-2} - (1 - rho)) / rho`` (7 at ``rho = 1/2``, whatever ``k``).
    rate : float
        ``1 - cos_min-min(R) ~ rate / sqrt(R)`` as ``R -> inf``, with
        ``rate = k sqrt(rho) / (1 - rho)``: the minority classifiers tend to one direction
        (cosine limit 1).
    embedding_limit : float
        Limit of the min-min embedding cosine, ``-1 / (k_min - 1)``: minority embeddings tend to
        a simplex among themselves (``nan`` for one minority class).
    limit : float
        Limit of the min-min classifier cosine (1: collapse).
    """

    threshold_ratio: float
    rate: float
    embedding_limit: float
    limit: float


def ce_minority_collapse(k: int, rho: float) -> MinorityCollapse:
    """Minority collapse of CE under STEP (from :func:`step_geometry` with unit scales/margins).

    With ``m = 1``: ``alpha_2 = 1`` and ``M_22 = (R rho (1 - rho) + (1 - rho)^2) /
    sqrt(R rho + 1 - rho)``; the min-min cosine ``(M_22 - alpha_2) / (alpha_2 (K2 - 1) + M_22)``
    is positive iff ``M_22 > 1``, i.e. ``R > R*``; ``M_22 ~ sqrt(R rho) (1 - rho)`` gives the rate.
    """
    _, k_min = _groups(k, rho)
    rho = k_min / k
    q = 1.0 - rho
    return MinorityCollapse(
        threshold_ratio=(q**-2.0 - q) / rho,
        rate=float(k * np.sqrt(rho) / q),
        embedding_limit=-1.0 / (k_min - 1) if k_min > 1 else float("nan"),
        limit=1.0,
    )


def _groups(k: int, rho: float) -> tuple[int, int]:
    k = check_int("k", k, low=2)
    rho = check_float("rho", rho, low=0.0, high=1.0, low_open=True, high_open=True)
    k_min = rho * k
    if abs(k_min - round(k_min)) > 1e-9 or round(k_min) < 1 or round(k_min) > k - 1:
        raise fail("rho", f"such that rho * k is a whole number between 1 and {k - 1} (k={k})", rho)
    return k - round(k_min), round(k_min)


def _pair(name: str, values: tuple[float, float]) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise fail(name, "two finite positive numbers (majority, minority)", values) from None
    if arr.shape != (2,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise fail(name, "two finite positive numbers (majority, minority)", values)
    return arr


def _cosines(K: np.ndarray, diag: np.ndarray, same: np.ndarray, cross: float) -> dict[str, float]:
    within = same / diag
    return {
        "maj-maj": float(within[0]) if K[0] > 1 else float("nan"),
        "min-min": float(within[1]) if K[1] > 1 else float("nan"),
        "maj-min": cross / float(np.sqrt(diag[0] * diag[1])),
    }
