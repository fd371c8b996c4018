"""The symmetry-reduced regularized program (docs/theory.md §13.6) against the full one.

Independent checks: the reduced loss, gradient, Hessian and dual value against the full
``k x k`` ones at expanded random points of the algebra (every loss and bias); the grouped
route against the factored L-BFGS route (objectives within the larger certified gap, Grams);
the expanded point's certificate recomputed at full size from its logits.
"""

from __future__ import annotations

import numpy as np
import pytest

from ucfm_svm.errors import SpecError
from ucfm_svm.regularized.grouped import Reduced, class_groups, expand, solve_grouped
from ucfm_svm.regularized.losses import params_from_spec
from ucfm_svm.regularized.solver import (
    Regularization,
    _Columns,
    _primal,
    dual_bound,
    solve_factors,
    solve_regularized,
)
from ucfm_svm.spec import LOSSES, Spec, longtail_counts

from .conftest import cli  # noqa: F401

GAMMA = {"cdt": 0.5, "ldt": 0.5, "vs": 0.25}
TIED = (10, 10, 10, 4, 4, 1, 1, 1)
#: Both routes are certified to a relative gap <= 1e-6 and, at these k (<= 200), run to
#: gtol; normalized Grams of two such points measured within 1e-6: 1e-4 leaves room for the
#: gradient-to-point error of a gap-level stop.
GRAM_TOL = 1e-4


def _spec(name, counts):
    return Spec.from_loss(counts, name, gamma=GAMMA.get(name))


@pytest.mark.parametrize("bias", ["none", "free", "ridge"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_reduced_program_equals_the_full_one_at_expanded_points(name, bias):
    spec = _spec(name, TIED)
    params = params_from_spec(spec)
    groups = class_groups(params, spec.n_vec)
    assert groups.m == 3
    lam, lambda_w = 0.02, 0.03
    red = Reduced(spec, params, groups, lam, bias, lambda_w)
    rng = np.random.default_rng(7)
    T = rng.standard_normal((groups.m, groups.m))
    alpha = rng.standard_normal(groups.m)
    b = rng.standard_normal(groups.m) if bias != "none" else np.zeros(groups.m)
    W, V, (left, right) = expand(groups, T, alpha)
    M = W @ V
    assert np.allclose(left, W @ W.T, atol=1e-12) and np.allclose(right, V.T @ V, atol=1e-12)
    cols = _Columns(spec, "class")
    value, P, _ = _primal(params, cols, M / cols.root[None, :] + b[groups.of_class][:, None])
    reduced_value, p = red.softmax(red.logits(T, alpha, b))
    assert reduced_value == pytest.approx(value, rel=1e-13)
    ridge = 0.5 * lambda_w * float(np.sum(b[groups.of_class] ** 2)) if bias == "ridge" else 0.0
    nuclear = float(np.linalg.svd(M, compute_uv=False).sum())
    assert red.penalty(T, alpha, b) == pytest.approx(lam * nuclear + ridge, rel=1e-12)
    full_dual, _ = dual_bound(params, cols, P, lam, bias, lambda_w)
    # the full bound inflates ||Q S^-1||_2 by 10 k eps against rounding
    assert red.dual(p) == pytest.approx(full_dual, rel=1e-12)
    # gradient and Hessian: central differences along a random direction of the algebra
    eps = 1e-6
    dT, da, db = rng.standard_normal(T.shape), rng.standard_normal(groups.m), \
        rng.standard_normal(groups.m)
    plus = red.softmax(red.logits(T + eps * dT, alpha + eps * da, b + eps * db))
    minus = red.softmax(red.logits(T - eps * dT, alpha - eps * da, b - eps * db))
    gT, ga, gb = red.gradient(p)
    slope = float(np.sum(gT * dT) + np.sum(ga * da) + np.sum(gb * db))
    assert (plus[0] - minus[0]) / (2 * eps) == pytest.approx(slope, rel=1e-6, abs=1e-9)
    hessian = red.hessian_times(p, dT, da, db)
    for hv, gp, gm in zip(hessian, red.gradient(plus[1]), red.gradient(minus[1]), strict=True):
        assert np.allclose((gp - gm) / (2 * eps), hv, atol=1e-8)


def _assert_grouped_meets_factored(spec: Spec, reg: Regularization) -> None:
    """The grouped and factored routes, each with a certified gap, reach the same optimum: both
    objectives lie in [optimum, optimum + own gap], and the normalized Grams agree."""
    grouped, _ = solve_grouped(spec, reg)
    factored, _ = solve_factors(spec, reg)
    for r in (grouped, factored):
        assert r.objective_certified and r.rel_gap <= 1e-6, r.message
    gaps = max(grouped.objective - grouped.lower_bound, factored.objective - factored.lower_bound)
    assert abs(grouped.objective - factored.objective) <= gaps
    for gram in ("classifier_gram", "embedding_gram"):
        A, B = getattr(grouped, gram), getattr(factored, gram)
        assert np.linalg.norm(A / np.linalg.norm(A) - B / np.linalg.norm(B)) < GRAM_TOL


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("counts", [longtail_counts(40, 10, 20), longtail_counts(12, 10, 200)],
                         ids=["tied-k40", "distinct-k12"])
def test_grouped_route_agrees_with_the_factored_route(name, counts):
    spec = _spec(name, counts)
    reg = Regularization.from_lambda(2e-3)
    _assert_grouped_meets_factored(spec, reg)


@pytest.mark.parametrize(("name", "rank"), [("ce", None), ("ldt", None), ("ce", 1), ("ldam", 1)])
def test_a_reduced_start_rank_reaches_the_factored_optimum(name, rank, monkeypatch):
    """Above ``RANK_FROM`` groups the factors start at an estimated rank (docs/theory.md
    §13.8); here that path runs at k = 12 (distinct counts) with the estimate (``None``) and with
    a start of rank 1, below the optimum's, which the escape rounds must repair."""
    from ucfm_svm.regularized import grouped

    monkeypatch.setattr(grouped, "RANK_FROM", 0)
    monkeypatch.setattr(grouped, "RANK_EXTRA", 0)
    if rank is not None:
        monkeypatch.setattr(grouped, "start_rank", lambda red: rank)
    spec = _spec(name, longtail_counts(12, 10, 200))
    reg = Regularization.from_lambda(6e-3)
    assert grouped.start_rank(Reduced(spec, params_from_spec(spec), class_groups(
        params_from_spec(spec), spec.n_vec), reg.lam, "none", reg.lam)) < 12
    _assert_grouped_meets_factored(spec, reg)


@pytest.mark.parametrize("bias", ["none", "free", "ridge"])
def test_expanded_point_is_certified_at_full_size(bias):
    spec = _spec("ldt", longtail_counts(50, 20, 25))
    reg = Regularization(1e-3, 2e-3, bias)
    result = solve_regularized(spec, reg)
    assert result.solver.startswith("grouped") and result.objective_certified
    # recompute the certificate from the returned logits with the full k x k dual
    params, cols = params_from_spec(spec), _Columns(spec, "class")
    value, P, _ = _primal(params, cols, result.logits)
    lower, info = dual_bound(params, cols, P, reg.lam, bias, reg.lambda_w)
    assert value == pytest.approx(result.regularization["loss_value"], rel=1e-12)
    assert lower == pytest.approx(result.lower_bound, rel=1e-12)
    assert (result.objective - lower) <= 1e-6 * abs(result.objective)
    # the point is a minimizer of the full program: ||Q S^-1||_2 / lambda at most 1 + 1e-6
    assert info["spectral_ratio"] <= 1 + 1e-6


def test_route_choice_and_refusals():
    spec = _spec("ce", TIED)
    reg = Regularization.from_lambda(1e-2)
    assert solve_regularized(spec, reg).solver.startswith("grouped")
    assert solve_regularized(spec, reg, route="factors").solver.startswith("L-BFGS")
    assert solve_regularized(spec, reg, level="example").solver == "L-BFGS"
    with pytest.raises(SpecError, match="route"):
        solve_regularized(spec, reg, route="grouped", level="example")
    with pytest.raises(SpecError, match="route"):
        solve_regularized(spec.with_dim(3), reg, route="grouped")
    with pytest.raises(SpecError, match="route"):
        solve_regularized(spec, reg, route="newton")


def test_solve_lambda_refuses_sizes_that_do_not_fit(cli):  # noqa: F811
    code, _, err = cli("solve", "--longtail", "20000,10", "--n-max", "100000", "--lambda", "1e-3")
    assert code == 2, err
    assert "--longtail/--counts" in err and "structured" in err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ce", "ldt"])
def test_k1000_long_tail_is_certified(name):
    spec = _spec(name, longtail_counts(1000, 50))
    params, cols = params_from_spec(spec), _Columns(spec, "class")
    _, _, Q = _primal(params, cols, np.zeros((spec.k, spec.k)))
    lam0 = float(np.linalg.norm(Q / cols.root[None, :], 2))
    for frac in (0.5, 0.1, 1e-3):
        result = solve_regularized(spec, Regularization.from_lambda(frac * lam0))
        assert result.solver.startswith("grouped") and result.objective_certified, result.message


def test_grouped_route_pins_a_collapsed_optimum_above_200_classes():
    """k = 300 (150 x 100, 149 x 1, 1 x 2), LDAM, free bias, lambda = 1e-3: the minimizer is
    M = 0 (||Q S^-1||_2 / lambda = 0.66 < 1 at M = 0). A stop at the reduced gap (the old
    behaviour above 200 classes) returned a certified gap of 1e-7 with trace(W W^T) = 4.6e-6
    and the n = 2 class's bias 0.09 off; run to gtol it matches the factored route."""
    spec = Spec.from_loss([100] * 150 + [1] * 149 + [2], "ldam")
    reg = Regularization.from_lambda(1e-3, "free")
    grouped = solve_regularized(spec, reg, route="grouped")
    factored, _ = solve_factors(spec, reg)
    zero = solve_regularized(spec, reg)  # auto: the closed form M = 0 (docs/theory.md §13.8)
    assert grouped.solver.startswith("grouped") and grouped.objective_certified
    assert factored.objective_certified
    assert zero.solver.startswith("M = 0") and zero.certified
    assert np.trace(grouped.classifier_gram) <= 1e-10
    centred = [b - b.mean() for b in (r.regularization["b"] for r in (grouped, factored, zero))]
    assert np.max(np.abs(centred[0] - centred[1])) < 1e-6
    assert np.max(np.abs(centred[2] - centred[1])) < 1e-6
