"""The closed-form check ``M = 0`` iff ``lambda >= lambda_0`` (docs/theory.md §13.8).

Independent checks: the threshold itself (just above ``lambda_0`` the check certifies ``M = 0``,
just below it declines); the grouped route (reduced factors, L-BFGS and trust-region Newton)
against the closed form above the threshold (same objective within the certified gaps, Grams
vanishing) and below it (the zero point is strictly worse than the grouped route's certified
lower bound); CE's free bias against its closed form ``softmax(b*) = n / N``.
"""

from __future__ import annotations

import numpy as np
import pytest

from ucfm_svm.regularized.grouped import solve_grouped
from ucfm_svm.regularized.losses import params_from_spec
from ucfm_svm.regularized.solver import (
    BIAS_STEPS,
    Regularization,
    _Columns,
    _primal,
    _spectral_norm,
    bias_at_zero,
    solve_regularized,
    solve_zero,
)
from ucfm_svm.spec import LOSSES, Spec

GAMMA = {"cdt": 0.5, "ldt": 0.5, "vs": 0.25}
COUNTS = (100,) * 6 + (1,) * 5 + (2,)
#: Objectives are sums of about k^2 float64 terms: 1e-13 relative covers their rounding.
ROUND = 1e-13


def _lambda_zero(spec, bias):
    params, cols = params_from_spec(spec), _Columns(spec, "class")
    b, _ = bias_at_zero(params, cols, Regularization.from_lambda(1.0, bias))
    _, _, Q = _primal(params, cols, np.repeat(b[:, None], spec.k, axis=1))
    return _spectral_norm(Q / cols.root[None, :])


@pytest.mark.parametrize("bias", ["none", "free", "ridge"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_zero_is_the_minimizer_exactly_above_lambda_zero(name, bias):
    spec = Spec.from_loss(COUNTS, name, gamma=GAMMA.get(name))
    # a ridge bias's b* depends on lambda_W: fix lambda_W = lambda_H = lambda at the threshold
    lam0 = _lambda_zero(spec, bias)
    if bias == "ridge":
        for _ in range(20):  # fixed point of lambda_0(lambda_W = lambda_0)
            params, cols = params_from_spec(spec), _Columns(spec, "class")
            b, _ = bias_at_zero(params, cols, Regularization.from_lambda(lam0, bias))
            _, _, Q = _primal(params, cols, np.repeat(b[:, None], spec.k, axis=1))
            lam0 = _spectral_norm(Q / cols.root[None, :])
    assert solve_zero(spec, Regularization.from_lambda(lam0 * (1 - 1e-6), bias)) is None
    above = solve_zero(spec, Regularization.from_lambda(lam0 * (1 + 1e-6), bias))
    assert above is not None and above.certified, name
    assert np.all(above.classifier_gram == 0) and np.all(above.embedding_gram == 0)
    # the grouped route, run independently at 1.5 lambda_0: the same optimum
    reg = Regularization.from_lambda(1.5 * lam0, bias)
    zero, grouped = solve_zero(spec, reg), solve_grouped(spec, reg)[0]
    assert zero.certified and grouped.objective_certified
    slack = max(zero.objective - zero.lower_bound, 0) + max(
        grouped.objective - grouped.lower_bound, 0) + ROUND * abs(zero.objective)
    assert abs(zero.objective - grouped.objective) <= slack
    assert np.trace(grouped.classifier_gram) <= 1e-8
    # below the threshold the zero point is strictly worse than the certified optimum
    reg = Regularization.from_lambda(0.5 * lam0, bias)
    params, cols = params_from_spec(spec), _Columns(spec, "class")
    b, _ = bias_at_zero(params, cols, reg)
    value, _, _ = _primal(params, cols, np.repeat(b[:, None], spec.k, axis=1))
    if bias == "ridge":
        value += 0.5 * reg.lambda_w * float(b @ b)
    below = solve_grouped(spec, reg)[0]
    assert below.objective_certified and value > below.objective + ROUND * abs(value)


@pytest.mark.parametrize("counts", [COUNTS, (100, 100, 1, 1)])
def test_free_bias_of_ce_is_the_log_prior(counts):
    spec = Spec.from_loss(counts, "ce")
    b, steps = bias_at_zero(params_from_spec(spec), _Columns(spec, "class"),
                            Regularization.from_lambda(1.0, "free"))
    log_prior = np.log(spec.n_vec / spec.n)
    assert 1 <= steps < BIAS_STEPS
    assert np.max(np.abs(b - (log_prior - log_prior.mean()))) <= 1e-12


@pytest.mark.parametrize("bias", ["free", "ridge"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_newton_on_the_bias_stops_at_a_stationary_point(name, bias):
    """Counts 100,100,1,1 put the decrements' rounding floor near 1e-19 (the stop rule of
    ``bias_at_zero`` once ran all ``BIAS_STEPS`` there)."""
    spec = Spec.from_loss((100, 100, 1, 1), name, gamma=GAMMA.get(name))
    params, cols = params_from_spec(spec), _Columns(spec, "class")
    b, steps = bias_at_zero(params, cols, Regularization.from_lambda(1.0, bias))
    _, _, Q = _primal(params, cols, np.repeat(b[:, None], spec.k, axis=1))
    grad = Q.sum(axis=1) + (b if bias == "ridge" else 0.0)
    assert steps < BIAS_STEPS and np.max(np.abs(grad)) <= 1e-14


def test_auto_takes_the_closed_form_only_above_the_threshold():
    spec = Spec.from_loss(COUNTS, "ldt", gamma=0.5)
    lam0 = _lambda_zero(spec, "free")
    above = solve_regularized(spec, Regularization.from_lambda(2 * lam0, "free"))
    below = solve_regularized(spec, Regularization.from_lambda(lam0 / 2, "free"))
    assert above.solver.startswith("M = 0") and above.iterations >= 1
    assert below.solver.startswith("grouped") and below.objective_certified
    # an explicitly chosen route is run as chosen
    forced = solve_regularized(spec, Regularization.from_lambda(2 * lam0, "free"),
                               route="factors")
    assert forced.solver == "L-BFGS"


@pytest.mark.parametrize("bias", ["none", "free"])
def test_the_zero_minimizer_is_reported_without_norms_cosines_or_warnings(cli, tmp_path, bias):
    """Past ``lambda_0`` the summary says ``W = H = 0`` instead of printing zero norms, empty
    cosines and ``r2 nan`` (before: plus a divide-by-zero note on stderr); the JSON's group
    statistics have no cosines and no ratio to a zero head class."""
    import json

    out = tmp_path / "zero.json"
    code, stdout, stderr = cli("solve", "--longtail", "20,10", "--lambda", "5", "--bias", bias,
                               "--json", str(out))
    assert code == 0 and stderr == ""
    assert "W = 0 and H = 0" in stdout and "nan" not in stdout
    assert "\nnorms" not in stdout and "\ncosines" not in stdout
    groups = json.loads(out.read_text())["groups"]
    assert groups["classifier_cos"] is None and groups["embedding_cos"] is None
    assert groups["classifier_norms"]["many"]["sq_ratio_to_head"] is None
