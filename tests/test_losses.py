"""Loss family: definitions against direct formulas, gradients against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from ucfm_svm.losses import loss_and_grad, loss_params, ufm_objective_and_grad
from ucfm_svm.spec import LOSSES, svm_hyperparameters

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
