"""Geometric quantities of a UF-CS-SVM point, one small pure function each.

Shapes: ``W`` is ``(k, d)`` (rows are classifiers ``w_c``), ``H_mean`` is ``(d, k)`` (column ``c``
is the class-mean embedding ``hbar_c``), ``H`` is ``(d, n)`` with labels ``y`` of shape ``(n,)``.
"""

from __future__ import annotations

import numpy as np

from .spec import Spec


def class_logits(spec: Spec, W: np.ndarray, H_mean: np.ndarray) -> np.ndarray:
    """Class-level logits ``Zbar = Delta W Hbar`` (k x k; column ``c`` = logits of class ``c``)."""
    return spec.Delta[:, None] * (W @ H_mean)


def margin_ratios(spec: Spec, logits: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """Normalized margins ``(z_{y,i} - z_{c,i}) / delta_y`` for every column and ``c != y``.

    ``logits`` is ``(k, m)`` with the label of column ``i`` in ``labels`` (default: column ``c``
    is class ``c``). The point is feasible iff every entry is ``>= 1``. Returns shape ``(k, m)``
    with ``+inf`` at the true-class entries.
    """
    k, m = logits.shape
    labels = np.arange(k) if labels is None else np.asarray(labels)
    cols = np.arange(m)
    true = logits[labels, cols]
    ratios = (true[None, :] - logits) / spec.delta[labels][None, :]
    ratios[labels, cols] = np.inf
    return ratios


def min_margin_ratio(spec: Spec, logits: np.ndarray, labels: np.ndarray | None = None) -> float:
    """Smallest normalized margin (see :func:`margin_ratios`); ``>= 1`` means feasible."""
    return float(margin_ratios(spec, logits, labels).min())


def class_objective(spec: Spec, W: np.ndarray, H_mean: np.ndarray) -> float:
    """``1/2 ||W||_F^2 + 1/2 sum_c n_c ||hbar_c||^2``: the collapsed UF-CS-SVM cost (docs/theory.md
    §3)."""
    return 0.5 * float(np.sum(W * W)) + 0.5 * float(np.sum(spec.n_vec * np.sum(H_mean**2, axis=0)))


def class_means(H: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Class means of the columns of ``H`` (d x n), shape ``(d, k)``."""
    labels = np.asarray(labels)
    sums = np.zeros((H.shape[0], k))
    np.add.at(sums.T, labels, H.T)
    counts = np.bincount(labels, minlength=k).astype(float)
    return sums / counts[None, :]


def nc1(H: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Within-class variability ``NC1 = tr(Sigma_W Sigma_B^+) / k`` (Papyan et al., 2020).

    ``Sigma_W`` is the within-class covariance of the columns of ``H`` (d x n) and ``Sigma_B``
    the between-class covariance of the class means around the global mean. Zero iff every
    embedding equals its class mean.
    """
    labels = np.asarray(labels)
    means = class_means(H, labels, k)
    centred = H - means[:, labels]
    sigma_w = centred @ centred.T / H.shape[1]
    between = means - H.mean(axis=1, keepdims=True)
    sigma_b = between @ between.T / k
    return float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10)) / k)


def gram(X: np.ndarray) -> np.ndarray:
    """Gram matrix ``X X^T`` of the rows of ``X``."""
    return X @ X.T


def norms_from_gram(G: np.ndarray) -> np.ndarray:
    """Vector norms ``sqrt(G_cc)``."""
    return np.sqrt(np.clip(np.diag(G), 0.0, None))


def cosines_from_gram(G: np.ndarray) -> np.ndarray:
    """Cosine matrix ``G_ij / (||x_i|| ||x_j||)``; ``nan`` where a vector is zero (a cosine with
    the zero vector is undefined: the regularized minimizer is ``W = H = 0`` past its vanishing
    point)."""
    norms = norms_from_gram(G)
    outer = np.outer(norms, norms)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(outer > 0, G / np.where(outer > 0, outer, 1.0), np.nan)


def grouped_cosines(G: np.ndarray, majority: np.ndarray, minority: np.ndarray) -> dict[str, float]:
    """Mean cosines within the majority, within the minority and across (STEP, docs/theory.md §5).

    Returns the keys ``maj-maj``, ``min-min`` (``nan`` for a group of one class) and ``maj-min``.
    """
    C = cosines_from_gram(G)

    def within(idx: np.ndarray) -> float:
        if idx.size < 2:
            return float("nan")
        block = C[np.ix_(idx, idx)]
        return float((block.sum() - np.trace(block)) / (idx.size * (idx.size - 1)))

    return {
        "maj-maj": within(majority),
        "min-min": within(minority),
        "maj-min": float(C[np.ix_(majority, minority)].mean()),
    }


def balanced_factors(A: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced factorization of ``A`` (k x m) into ``X`` (k x d) and ``Y`` (d x m), ``X Y ~ A``.

    With the SVD ``A = U S V^T``: ``X = U S^{1/2}``, ``Y = S^{1/2} V^T``, so that
    ``1/2 (||X||^2 + ||Y||^2) = ||A||_*`` (docs/theory.md §2). Only the ``min(d, rank)`` leading
    singular
    pairs are kept; columns beyond the rank are zero.
    """
    k, m = A.shape
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    r = min(d, s.size)
    root = np.sqrt(s[:r])
    X = np.zeros((k, d))
    Y = np.zeros((d, m))
    X[:, :r] = U[:, :r] * root
    Y[:r, :] = root[:, None] * Vt[:r, :]
    return X, Y


def gram_distance(G: np.ndarray, G_ref: np.ndarray) -> float:
    """Distance between Grams up to scale: ``|| G/||G||_F - G_ref/||G_ref||_F ||_F``.

    Lies in ``[0, 2]``; zero iff the two configurations have the same norms ratios and angles.
    This is the measure used to compare trained (or regularized) solutions, whose scale grows
    without bound, with the SVM geometry. Each Gram is divided by its largest entry before its
    norm is taken, so Grams near the ends of the float64 range (entries of 1e200 or 1e-200)
    measure as their rescaled copies do.
    """

    def unit(M: np.ndarray) -> np.ndarray:
        M = M / np.abs(M).max()
        return M / np.linalg.norm(M)

    return float(np.linalg.norm(unit(G) - unit(G_ref)))
