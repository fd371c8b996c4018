"""The regularized UFM at finite weight decay (docs/theory.md §13).

Independent routes: the certified solve (L-BFGS on the factors of the convex class-level
program, Fenchel dual bound) against ``path``'s minimizer (L-BFGS on the ridge UFM with its own
certificate ``||grad_M||_2 / lambda <= 1``); class level against example level; a free bias
against the loss it makes equivalent; the thresholding polish against the factorized solve;
the collapse thresholds' bisection over certified solves against their closed form.
"""

from __future__ import annotations

import numpy as np
import pytest

from ucfm_svm.geometry import gram_distance
from ucfm_svm.regularized.collapse import (
    bisect_lambda,
    bisect_ratio,
    closed_form_lambda,
    identical_groups,
    step_ratio_threshold,
)
from ucfm_svm.regularized.losses import params_from_spec
from ucfm_svm.regularized.solver import (
    Regularization,
    _Columns,
    _primal,
    dual_bound,
    polish,
    solve_factors,
    solve_regularized,
)
from ucfm_svm.regularized.training import CERTIFICATE_TOL, reference_svm, regularization_path
from ucfm_svm.spec import LOSSES, Spec, step_counts

from .conftest import cli  # noqa: F401

COUNTS = (10, 10, 1, 1)
GAMMA = {"cdt": 0.5, "ldt": 0.5, "vs": 0.25}
LAMBDAS = (1e-1, 1e-2, 1e-3)
#: Both L-BFGS runs stop at gtol = 1e-9 on objective/lambda (measured agreement: objectives to
#: 1e-15, normalized Grams to 1e-7); the tolerances leave room for the gradient-to-point error.
OBJ_RTOL, GRAM_TOL = 1e-7, 1e-5
#: Done-when cases whose geometry the bound of §13.7 does not pin (measured): at counts
#: 10,10,1,1 and lambda = 0.1 the minority rows of M* vanish (their squared norms are known to
#: ~1e-11, their norms only to its square root); STEP wCE at lambda = 0.1 is exactly lambda_0.
UNPINNED = {((10, 10, 1, 1), name, 1e-1) for name in ("ce", "la", "cdt", "vs")} | {
    (tuple(step_counts(10, 10, 0.5)), "wce", 1e-1)}


def _spec(name, counts=COUNTS):
    return Spec.from_loss(counts, name, gamma=GAMMA.get(name))


def _check_against_path(spec):
    svm = reference_svm(spec)
    path = regularization_path(spec, [spec.n * lam for lam in LAMBDAS], gtol=1e-9, svm=svm)
    assert path.ok and np.all(path.certificate <= 1 + CERTIFICATE_TOL)
    distances = []
    for j, lam in enumerate(LAMBDAS):
        result = solve_regularized(spec, Regularization.from_lambda(lam))
        assert result.objective_certified and result.rel_gap <= 1e-6, result.message
        # optimal (geometry bound within 1e-6, §13.7) except where the bound cannot pin it
        assert result.certified or (spec.counts, spec.loss, lam) in UNPINNED, result.message
        # path minimizes sum_i loss + N lam / 2 (||W||^2 + ||H||^2) = N * our objective
        assert result.objective == pytest.approx(path.objective[j] / spec.n, rel=OBJ_RTOL)
        if np.linalg.norm(result.classifier_gram) < 1e-3:  # lambda >= lambda_0: M ~ 0, Grams
            # of a vanishing point are not comparable. At lambda = lambda_0 exactly (wCE, STEP:
            # 1/(k sqrt(n_min)) = 0.1) F is flat to fourth order in the factors' scale, so the
            # gtol-limited path stops at a factor norm ~ gtol^(1/3) scale (measured 0.011)
            assert path.parameter_norm[j] < 5e-2
            distances.append(np.nan)
            continue
        G = result.classifier_gram / np.linalg.norm(result.classifier_gram)
        assert np.linalg.norm(G - path.classifier_grams[j]) < GRAM_TOL
        E = result.embedding_gram / np.linalg.norm(result.embedding_gram)
        assert np.linalg.norm(E - path.embedding_grams[j]) < GRAM_TOL
        distances.append(gram_distance(result.classifier_gram, svm.classifier_gram))
    # closer to the SVM at 1e-3 than at 1e-1 for every loss; not always monotone in between:
    # LA's offsets tau log pi_c are felt at finite lambda (0.224 at 1e-2, 0.230 at 1e-3)
    first = next(d for d in distances if np.isfinite(d))
    if spec.loss != "la":  # LA's offsets are felt at finite lambda: not monotone here (§13.5)
        assert distances[2] < first, distances
    return distances


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_regularized_solve_equals_path_minimizer(name):
    _check_against_path(_spec(name))


@pytest.mark.parametrize("name", ["ce", "cdt"])
def test_regularized_solve_equals_path_minimizer_step(name):
    _check_against_path(_spec(name, step_counts(10, 10, 0.5)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wce", "la", "ldam", "ldt", "vs"])
def test_regularized_solve_equals_path_minimizer_step_all_losses(name):
    _check_against_path(_spec(name, step_counts(10, 10, 0.5)))


def test_class_level_equals_example_level():
    spec = _spec("ldam", (3, 3, 1, 2))
    reg = Regularization(3e-2, 1e-2, "ridge")
    cls = solve_regularized(spec, reg)
    ex = solve_regularized(spec, reg, level="example", seed=3)
    assert cls.objective_certified and ex.objective_certified
    assert ex.objective == pytest.approx(cls.objective, rel=1e-7)
    assert ex.nc1 < 1e-10  # every minimizer is collapsed (§13)
    assert gram_distance(ex.classifier_gram, cls.classifier_gram) < 1e-4
    assert gram_distance(ex.embedding_gram, cls.embedding_gram) < 1e-4


def test_free_bias_absorbs_additive_offsets():
    """LA's offsets tau log pi_c are a bias: with a free bias LA is CE and VS is CDT."""
    reg = Regularization.from_lambda(1e-2, "free")
    for plain, offset in (("ce", "la"), ("cdt", "vs")):
        a = solve_regularized(Spec.from_loss(COUNTS, plain, gamma=GAMMA.get(plain)), reg)
        b = solve_regularized(Spec.from_loss(COUNTS, offset, gamma=GAMMA.get(plain)), reg)
        assert a.objective_certified and b.objective_certified
        assert b.objective == pytest.approx(a.objective, rel=1e-7)


@pytest.mark.parametrize("bias", ["none", "free", "ridge"])
def test_dual_bound_is_a_lower_bound_at_any_point(bias):
    """Weak duality: the dual value from the softmax of ANY point is below the optimum."""
    spec = _spec("vs")
    params, cols = params_from_spec(spec), _Columns(spec, "class")
    reg = Regularization(2e-2, 5e-3, bias)
    best = solve_regularized(spec, reg)
    assert best.objective_certified
    rng = np.random.default_rng(0)
    for _ in range(20):
        _, P, _ = _primal(params, cols, 3 * rng.standard_normal((spec.k, spec.k)))
        value, info = dual_bound(params, cols, P, reg.lam, bias, reg.lambda_w)
        assert value <= best.objective + 1e-12
        assert 0 < info["scale"] <= 1


def test_polish_agrees_with_the_factorized_solve():
    spec = _spec("cdt")
    reg = Regularization.from_lambda(1e-2, "free")
    result, factors = solve_factors(spec, reg)
    polished, _ = polish(spec, reg, factors)
    assert result.objective_certified and polished.objective_certified
    assert polished.objective == pytest.approx(result.objective, rel=1e-7)


def test_unequal_decays_rescale_the_factors():
    """(lambda_W, lambda_H) and (c lambda_W, lambda_H / c) have the same minimum and logits."""
    spec = _spec("ce")
    a = solve_regularized(spec, Regularization(1e-2, 1e-2))
    b = solve_regularized(spec, Regularization(4e-2, 2.5e-3))
    assert a.objective_certified and b.objective_certified
    assert b.objective == pytest.approx(a.objective, rel=1e-7)
    assert np.allclose(b.logits, a.logits, atol=1e-4)
    # c = (lambda_H / lambda_W)^{1/4} = 1/2: W scales by c, its squared norm by 1/4
    assert np.sum(b.W**2) == pytest.approx(np.sum(a.W**2) / 4, rel=1e-4)


def test_threshold_bisection_matches_closed_form():
    spec = _spec("ce")
    groups = identical_groups(spec)
    assert [g.tolist() for g in groups] == [[0, 1], [2, 3]]
    for group in groups:
        th = bisect_lambda(spec, group, rtol=1e-7)  # bracket 1e-7 wide: agreement to 1e-6
        assert th.closed_form == pytest.approx(closed_form_lambda(spec, group))
        assert abs(th.bisection / th.closed_form - 1) < 1e-6, th


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wce", "la", "cdt", "ldt", "vs"])
def test_threshold_bisection_matches_closed_form_all_losses(name):
    spec = _spec(name)
    for group in identical_groups(spec):
        th = bisect_lambda(spec, group, bias="free", rtol=1e-8)
        assert abs(th.bisection / th.closed_form - 1) < 1e-6, th


def test_ratio_threshold_matches_bisection_over_whole_ratios():
    lam = 0.02  # STEP k=4, rho=1/2, n_min=1, CE: R* = (1/lam - 2)/2 = 24
    ratio = step_ratio_threshold(4, 0.5, 1, "ce", lam)
    assert ratio == pytest.approx(24.0, rel=1e-12)
    assert bisect_ratio(4, 0.5, 1, "ce", lam, r_max=40) == 24


def test_ldam_has_no_closed_form_but_a_bisection():
    spec = _spec("ldam")
    with pytest.raises(ValueError, match="'loss'"):
        closed_form_lambda(spec, np.array([2, 3]))
    th = bisect_lambda(spec, np.array([2, 3]), rtol=1e-4)
    plain = closed_form_lambda(_spec("ce"), np.array([2, 3]))
    assert th.bisection > plain  # the true-class margin delays the collapse


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--lambda", "-1"], "--lambda must"),
        (["--lambda", "0"], "--lambda must"),
        (["--lambda", "abc"], "--lambda must"),
        (["--lambda-w", "1e-2"], "--lambda-h must"),
        (["--lambda-w", "0", "--lambda-h", "1"], "--lambda-w must"),
        (["--lambda", "1e-2", "--lambda-w", "1e-2"], "--lambda-w must"),
        (["--lambda", "1e-2", "--method", "theory"], "--method must"),
        (["--bias", "ridge"], "--bias must"),
        (["--lambda", "1e-2", "--maxiter", "0"], "--maxiter must"),
    ],
)
def test_bad_regularization_flags_are_one_line_errors(cli, argv, flag):  # noqa: F811
    code, _, err = cli("solve", "--counts", "10,10,1,1", *argv)
    assert code == 2
    assert flag in err and err.count("\n") == 1, err


def test_solve_lambda_cli(cli, tmp_path):  # noqa: F811
    path = tmp_path / "r.json"
    code, out, _ = cli("solve", "--counts", "10,10,1,1", "--loss", "la", "--lambda", "1e-2",
                       "--bias", "free", "--json", str(path))
    assert code == 0 and "certified global optimum" in out
    import json

    data = json.loads(path.read_text())
    assert data["method"] == "regularized" and data["regularization"]["bias"] == "free"
    assert data["rel_gap"] <= 1e-6


def test_collapse_cli(cli, tmp_path):  # noqa: F811
    code, out, _ = cli("collapse", "--step", "10,10,0.5", "--loss", "cdt", "--gamma", "0.5",
                       "--lambda", "1e-2", "--json", str(tmp_path / "c.json"))
    assert code == 0
    assert "collapse for lambda >=" in out and "minorities collapse for R >=" in out


def test_train_and_path_run_at_k_100(cli):  # noqa: F811
    """Issue 19: the reference comes from the closed form, not the convex solve (k = 100)."""
    counts = ["--longtail", "100,100", "--n-max", "500"]
    code, out, _ = cli("train", *counts, "--steps", "10")
    assert code == 0 and "SVM reference: structured, optimal" in out  # auto's route
    code, out, _ = cli("path", *counts, "--lambdas", "1e-1")
    assert code == 0 and "all converged" in out
