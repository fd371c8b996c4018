"""Loss family: definitions against direct formulas, gradients against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from ucfm_svm.regularized.losses import (
    loss_and_grad,
    loss_params,
    params_from_spec,
    scaled_logit_gradient,
    ufm_objective_and_grad,
)
from ucfm_svm.spec import LOSSES, Spec, svm_hyperparameters

COUNTS = np.array([40, 40, 10, 3])
GAMMA = {"cdt": 0.5, "ldt": 0.5, "vs": 0.3}


def _params(name):
    return loss_params(name, COUNTS, gamma=GAMMA.get(name))


@pytest.mark.parametrize("name", list(LOSSES))
def test_svm_limit_part_is_the_spec_preset(name):
    p = _params(name)
    scales, margins = svm_hyperparameters(COUNTS, name, GAMMA.get(name))
    np.testing.assert_array_equal(p.scales, scales)
    np.testing.assert_array_equal(p.temperatures, margins)


def test_published_forms():
    """Each loss against its published formula for one example."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=4)
    y = 2
    pi = COUNTS / COUNTS.sum()

    def ce(u):
        return float(np.log(np.sum(np.exp(u))) - u[y])

    direct = {
        "ce": ce(z),
        "wce": COUNTS.sum() / (4 * COUNTS[y]) * ce(z),
        "la": ce(z + np.log(pi)),
        "ldam": ce(z - 0.5 * (COUNTS[y] / COUNTS.min()) ** -0.25 * (np.arange(4) == y)),
    }
    cdt = _params("cdt").scales
    direct["cdt"] = ce(cdt * z)
    direct["ldt"] = ce(cdt[y] * z)  # LDT: all logits of the example times Delta_y
    direct["vs"] = ce(_params("vs").scales * z + np.log(pi))
    for name, expected in direct.items():
        value, _ = loss_and_grad(_params(name), z[:, None], np.array([y]))
        assert value == pytest.approx(expected, rel=1e-12), name


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("level", ["class", "example"])
def test_gradients_match_finite_differences(name, level):
    rng = np.random.default_rng(1)
    params = _params(name)
    k, d = 4, 3
    if level == "class":
        labels, weights = np.arange(k), COUNTS.astype(float)
    else:
        labels, weights = np.repeat(np.arange(k), [3, 2, 2, 1]), None
    W = rng.normal(size=(k, d))
    H = rng.normal(size=(d, labels.size))
    lam = 0.3
    _, gW, gH = ufm_objective_and_grad(params, W, H, labels, lam, weights)
    eps = 1e-6
    for X, g in ((W, gW), (H, gH)):
        num = np.zeros_like(X)
        for idx in np.ndindex(X.shape):
            old = X[idx]
            X[idx] = old + eps
            plus = ufm_objective_and_grad(params, W, H, labels, lam, weights)[0]
            X[idx] = old - eps
            minus = ufm_objective_and_grad(params, W, H, labels, lam, weights)[0]
            X[idx] = old
            num[idx] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("margin", [5.0, 40.0, 200.0])
def test_separable_regime_keeps_relative_accuracy(margin):
    """Two classes: l = log1p(exp(-m)), dl/dz_y = -exp(-m) / (1 + exp(-m)), even when exp(-m)
    is far below machine epsilon (where 1 - softmax_y rounds to 0)."""
    params = loss_params("ce", [1, 1])
    z = np.array([[margin / 2], [-margin / 2]])
    value, grad = loss_and_grad(params, z, np.array([0]))
    tiny = np.exp(-margin)
    assert value == pytest.approx(np.log1p(tiny), rel=1e-13)
    np.testing.assert_allclose(grad[:, 0], [-tiny / (1 + tiny), tiny / (1 + tiny)], rtol=1e-13)


@pytest.mark.parametrize("name", list(LOSSES))
def test_scaled_gradient_is_the_gradient(name):
    rng = np.random.default_rng(3)
    params = _params(name)
    logits = 3 * rng.normal(size=(4, 6))
    labels = np.array([0, 1, 2, 3, 0, 2])
    weights = rng.uniform(0.5, 2.0, size=6)
    _, grad = loss_and_grad(params, logits, labels, weights)
    log_scale, direction = scaled_logit_gradient(params, logits, labels, weights)
    np.testing.assert_allclose(np.exp(log_scale) * direction, grad, rtol=1e-12, atol=1e-300)
    # far in the separable regime the gradient underflows; the direction does not
    huge = 1e4 * np.eye(4)[:, labels]
    assert np.all(loss_and_grad(params, huge, labels)[1] == 0)
    log_scale, direction = scaled_logit_gradient(params, huge, labels)
    # the largest wrong-class term is scaled to 1, the true-class entry sums k-1 such terms
    assert log_scale < -700 and 1e-3 < np.abs(direction).max() < 1e3


def test_params_from_spec():
    spec = Spec.from_loss(COUNTS, "vs", gamma=0.3, tau=0.5)
    expected = loss_params("vs", COUNTS, gamma=0.3, tau=0.5)
    got = params_from_spec(spec)
    for field in ("weights", "offsets", "true_margins", "scales", "temperatures"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
    custom = Spec.custom(COUNTS, scales=[1, 2, 3, 4], margins=[4, 3, 2, 1])
    p = params_from_spec(custom)
    np.testing.assert_array_equal(p.scales, custom.Delta)
    np.testing.assert_array_equal(p.temperatures, custom.delta)
    assert np.all(p.weights == 1) and np.all(p.offsets == 0) and np.all(p.true_margins == 0)
