"""Cross-entropy parameterizations for label-imbalanced data, with analytic gradients.

One family covers CE, wCE, LA, LDAM, CDT, LDT and VS (docs/theory.md §1). For an example of
class ``y`` with logits ``z`` (shape (k,)):

    l(y, z) = w_y * log(1 + sum_{c != y} exp(-[a_y(z_y) - m_y - a_c(z_c)] / delta_y)),
    a_c(x) = Delta_c x + iota_c,

i.e. ``w_y`` times the softmax cross-entropy of the adjusted logits
``u_c = (Delta_c z_c + iota_c - m_y [c = y]) / delta_y``.

=======  =========================================================  ================================
loss     sets                                                       source
=======  =========================================================  ================================
CE       nothing                                                    -
wCE      ``w_c = n / (k n_c)``                                      "balanced" class weights
LA       ``iota_c = tau log pi_c`` (``pi_c = n_c / n``)             Menon et al., ICLR 2021
LDAM     ``m_y = C n_y^{-1/4}`` with ``max_y m_y = max_margin``     Cao et al., NeurIPS 2019
CDT      ``Delta_c`` proportional to ``n_c^gamma``                  Ye et al., 2020
LDT      ``delta_y = 1 / Delta_y`` (temperature of the label)       Kini et al., NeurIPS 2021
VS       CDT's ``Delta_c`` and LA's ``iota_c``                      Kini et al., NeurIPS 2021
=======  =========================================================  ================================

``Delta`` is normalized as in :func:`ucfm_svm.spec.svm_hyperparameters` (proportional to
``(n_c / n_min)^gamma`` and summing to ``k``: docs/theory.md §9's convention), so the SVM limit of
each
loss is the specification ``Spec.from_loss(counts, name, ...)``: only ``Delta`` and ``delta``
survive vanishing regularization.

Checked against the public definitions: LA adds ``tau log pi_c`` to every logit (Menon et al.);
LDAM subtracts ``m_y = max_margin * (n_min / n_y)^{1/4}`` from the true logit (Cao et al.; their
extra logit scale ``s = 30`` belongs to a normalized cosine classifier and is left out: on the
UFM it only rescales the margins and ``lambda``); CDT multiplies logit ``c`` by
``(n_c / n_max)^gamma`` (Ye et al. divide it by ``(n_max / n_c)^gamma``); VS combines that with
LA's offsets (Kini et al.); LDT multiplies all logits of an example of class ``y`` by
``Delta_y`` (the paper's code, github valavakilian/Implicit_geometry, train_models/criterion.py).
``Delta`` is rescaled to sum to ``k`` rather than to ``max = 1``: a common factor of all logits,
which changes neither the SVM limit nor the loss up to a rescaling of ``lambda``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec import CUSTOM, LOSSES, Spec, svm_hyperparameters
from ..validation import check_counts, check_float, fail

#: LDAM's largest margin (the default ``max_m`` of Cao et al.).
LDAM_MAX_MARGIN = 0.5


@dataclass(frozen=True)
class LossParams:
    """Per-class hyperparameters of the family (arrays of shape (k,)).

    Attributes
    ----------
    name : str
    weights : ``w_c > 0``
    offsets : additive logit offsets ``iota_c``
    true_margins : ``m_c``, subtracted from the true logit of class-``c`` examples
    scales : multiplicative logit scales ``Delta_c > 0``
    temperatures : label temperatures ``delta_c > 0`` (the SVM margins in the limit)
    """

    name: str
    weights: np.ndarray
    offsets: np.ndarray
    true_margins: np.ndarray
    scales: np.ndarray
    temperatures: np.ndarray

    @property
    def k(self) -> int:
        """Number of classes."""
        return self.weights.size


def loss_params(
    name: str,
    counts: object,
    *,
    gamma: float | None = None,
    tau: float | None = None,
    max_margin: float = LDAM_MAX_MARGIN,
) -> LossParams:
    """The published parameterization ``name`` for class ``counts`` (see the module table).

    ``tau`` defaults to 1 for LA and VS. The SVM-limit part (``scales``, ``temperatures``) is
    exactly :func:`ucfm_svm.spec.svm_hyperparameters`.
    """
    counts = check_counts("counts", counts)
    if name not in LOSSES:
        raise fail("loss", "one of " + ", ".join(LOSSES), name)
    scales, temperatures = svm_hyperparameters(counts, name, gamma, tau)
    k = counts.size
    n = counts.sum()
    weights = np.ones(k)
    offsets = np.zeros(k)
    true_margins = np.zeros(k)
    if name == "wce":
        weights = n / (k * counts)
    if name in ("la", "vs"):
        tau = 1.0 if tau is None else check_float("tau", tau)
        offsets = tau * np.log(counts / n)
    if name == "ldam":
        max_margin = check_float("max_margin", max_margin, low=0.0, low_open=True)
        raw = counts**-0.25
        true_margins = max_margin * raw / raw.max()
    return LossParams(name, weights, offsets, true_margins, scales, temperatures)


def params_from_spec(spec: Spec, *, max_margin: float = LDAM_MAX_MARGIN) -> LossParams:
    """The loss whose vanishing-regularization limit is the UF-CS-SVM of ``spec``.

    For a preset (``spec.loss``) this is :func:`loss_params`; for a ``custom`` specification it
    is the plain family member with ``Delta = spec.scales`` and ``delta = spec.margins`` (unit
    weights, no offsets).
    """
    if spec.loss == CUSTOM:
        k = spec.k
        return LossParams(CUSTOM, np.ones(k), np.zeros(k), np.zeros(k), spec.Delta, spec.delta)
    return loss_params(
        spec.loss, spec.counts, gamma=spec.gamma, tau=spec.tau, max_margin=max_margin
    )


def adjusted_logits(params: LossParams, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``u_{c,i} = (Delta_c z_{c,i} + iota_c - m_{y_i} [c = y_i]) / delta_{y_i}`` (k x m)."""
    labels = np.asarray(labels)
    cols = np.arange(labels.size)
    u = params.scales[:, None] * logits + params.offsets[:, None]
    u[labels, cols] -= params.true_margins[labels]
    return u / params.temperatures[labels][None, :]


def _log_terms(
    params: LossParams, logits: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column losses and log-probabilities of the wrong classes, accurate when separable.

    With ``r_c = u_c - u_y`` and ``mx = max_c r_c`` (``>= 0``), the cross-entropy of column ``i``
    is ``mx + log1p(sum_{c != argmax} exp(r_c - mx))`` and ``log p_c = r_c - loss``. Unlike
    ``log_softmax`` followed by ``exp(log p_y) - 1``, this keeps full relative accuracy when
    ``1 - p_y`` is far below machine epsilon (small ``lambda`` or long training).

    Returns
    -------
    losses : (m,) array (unweighted)
    log_p : (k, m) array, ``-inf`` at the true class (its gradient is ``-sum_{c != y} p_c``)
    """
    labels = np.asarray(labels)
    cols = np.arange(labels.size)
    u = adjusted_logits(params, logits, labels)
    r = u - u[labels, cols][None, :]
    top = np.argmax(r, axis=0)
    mx = r[top, cols]
    shifted = np.exp(r - mx[None, :])
    shifted[top, cols] = 0.0
    losses = mx + np.log1p(shifted.sum(axis=0))
    log_p = r - losses[None, :]
    log_p[labels, cols] = -np.inf
    return losses, log_p


def _weights(
    params: LossParams, labels: np.ndarray, sample_weights: np.ndarray | None
) -> np.ndarray:
    s = np.ones(labels.size) if sample_weights is None else np.asarray(sample_weights, dtype=float)
    return s * params.weights[labels]


def _grad_from_log_p(
    params: LossParams, log_p: np.ndarray, labels: np.ndarray, log_coef: np.ndarray, shift: float
) -> np.ndarray:
    """``exp(-shift) * dloss/dz`` from the wrong-class log-probabilities."""
    cols = np.arange(labels.size)
    p = np.exp(log_p + (log_coef - np.log(params.temperatures[labels]))[None, :] - shift)
    p[labels, cols] = -p.sum(axis=0)
    return p * params.scales[:, None]


def loss_and_grad(
    params: LossParams,
    logits: np.ndarray,
    labels: np.ndarray,
    sample_weights: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Total loss ``sum_i s_i l(y_i, z_i)`` and its gradient with respect to the logits.

    Parameters
    ----------
    logits : (k, m) array
        Column ``i`` holds ``z_i``.
    labels : (m,) int array
    sample_weights : (m,) array, optional
        ``s_i`` (e.g. ``n_c`` for the collapsed class level); default 1.

    Returns
    -------
    value : float
    grad : (k, m) array
        ``s_i w_{y_i} (softmax(u_i) - e_{y_i}) * Delta / delta_{y_i}``, computed from the
        wrong-class probabilities so that it stays accurate when the loss is tiny.
    """
    labels = np.asarray(labels)
    coef = _weights(params, labels, sample_weights)
    losses, log_p = _log_terms(params, logits, labels)
    with np.errstate(divide="ignore"):
        grad = _grad_from_log_p(params, log_p, labels, np.log(coef), 0.0)
    return float(np.sum(coef * losses)), grad


def scaled_logit_gradient(
    params: LossParams,
    logits: np.ndarray,
    labels: np.ndarray,
    sample_weights: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """The logit gradient of :func:`loss_and_grad` as ``exp(log_scale) * direction``.

    ``direction`` has largest entry of order one even when the gradient itself underflows
    (margins of hundreds), which normalized gradient descent needs: its step depends on the
    gradient's direction only.

    Returns
    -------
    log_scale : float
    direction : (k, m) array
    """
    labels = np.asarray(labels)
    coef = _weights(params, labels, sample_weights)
    _, log_p = _log_terms(params, logits, labels)
    with np.errstate(divide="ignore"):
        log_coef = np.log(coef)
        terms = log_p + (log_coef - np.log(params.temperatures[labels]))[None, :]
        shift = float(np.max(terms))
        return shift, _grad_from_log_p(params, log_p, labels, log_coef, shift)


def ufm_objective_and_grad(
    params: LossParams,
    W: np.ndarray,
    H: np.ndarray,
    labels: np.ndarray,
    lam: float,
    sample_weights: np.ndarray | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Ridge-regularized UFM ``sum_i s_i l(y_i, W h_i) + lam/2 (||W||^2 + sum_i s_i ||h_i||^2)``.

    At the class level pass ``H = Hbar`` (d x k), ``labels = arange(k)`` and
    ``sample_weights = n_c``: the collapsed objective, whose regularizer counts each class mean
    ``n_c`` times. At the example level leave ``sample_weights`` unset.

    Returns
    -------
    value : float
    grad_W : (k, d) array
        ``G H^T + lam W`` with ``G`` the logit gradient of :func:`loss_and_grad`.
    grad_H : (d, m) array
        ``W^T G + lam H diag(s)``.
    """
    m = H.shape[1]
    s = np.ones(m) if sample_weights is None else np.asarray(sample_weights, dtype=float)
    value, G = loss_and_grad(params, W @ H, labels, s)
    value += 0.5 * lam * (float(np.sum(W * W)) + float(np.sum(s * np.sum(H * H, axis=0))))
    return value, G @ H.T + lam * W, W.T @ G + lam * H * s[None, :]
