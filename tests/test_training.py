"""Regularization path and gradient descent on the UFM against the certified SVM geometry.

Independent routes: the training trajectories (L-BFGS on the ridge-regularized UFM, gradient
descent on the unregularized one) against the convex solve of each loss's UF-CS-SVM; class level
against example level.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ucfm_svm.api import solve
from ucfm_svm.errors import SpecError
from ucfm_svm.geometry import gram_distance
from ucfm_svm.regularized.losses import params_from_spec
from ucfm_svm.regularized.training import (
    CERTIFICATE_TOL,
    _Model,
    gradient_descent,
    norm_ratio,
    regularization_path,
    trend_fit,
)
from ucfm_svm.spec import LOSSES, Spec, step_counts

COUNTS = (10, 10, 1, 1)
#: gammas at which the family's SVM geometries are pairwise distinct (VS differs from CDT)
GAMMA = {"cdt": 0.5, "ldt": 0.5, "vs": 0.25}
LAMBDAS = [10.0**-j for j in range(1, 9)]  # 1e-1 ... 1e-8 (the grid)
#: The SVM must be certified, so the rescaled training point can undercut its optimum only by
#: the certificate's relative tolerance (CERTIFY_RTOL = 1e-6).
SVM_RTOL = 1e-6


def _spec(name, counts=COUNTS):
    return Spec.from_loss(counts, name, gamma=GAMMA.get(name))


@pytest.fixture(scope="module")
def family_svms():
    """Certified SVM geometry of each distinct member of the family at COUNTS."""
    return {name: solve(_spec(name), "convex") for name in ("ce", "cdt", "ldt", "vs")}


def test_family_geometries_are_distinct(family_svms):
    names = list(family_svms)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            G_a, G_b = family_svms[a].classifier_gram, family_svms[b].classifier_gram
            assert gram_distance(G_a, G_b) > 0.2, (a, b)


def test_path_refines_an_inaccurate_point_before_escaping(monkeypatch):
    """At a loose gtol the certificate misses 1 + 1e-6 by a little (k = 20 long tail: 1 +
    1.3e-5 at gtol 1e-4); the path goes on at a smaller gtol instead of escaping a saddle that
    is not there. Without the refinement the same run is not certified."""
    from ucfm_svm.regularized import training
    from ucfm_svm.spec import longtail_counts

    spec = Spec.from_loss(longtail_counts(20, 50, 500), "ce")
    svm = solve(spec, "auto", full=True)
    traj = regularization_path(spec, [1e-1, 1e-3], gtol=1e-4, svm=svm)
    assert traj.ok and np.all(traj.certificate <= 1 + CERTIFICATE_TOL), traj.certificate
    monkeypatch.setattr(training, "REFINE_FLOOR", 1.0)
    unrefined = regularization_path(spec, [1e-1, 1e-3], gtol=1e-4, svm=svm)
    assert not unrefined.ok and np.max(unrefined.certificate) > 1 + CERTIFICATE_TOL


@pytest.mark.parametrize("name", list(LOSSES))
def test_path_heads_to_its_own_svm_geometry(name, family_svms):
    """docs/theory.md §1: wCE, LA, LDAM go to CE's SVM; CDT, LDT, VS to their own."""
    own = "ce" if name in ("ce", "wce", "la", "ldam") else name
    traj = regularization_path(_spec(name), LAMBDAS, svm=family_svms[own])
    # every solve converged to a certified global minimizer of the regularized UFM
    assert traj.ok, traj.message
    assert np.all(traj.certificate <= 1 + CERTIFICATE_TOL)
    d = traj.distance_to_svm
    assert np.all(np.diff(d) < 0), d
    for other, svm in family_svms.items():
        if other != own:
            assert d[-1] < traj.distances_to(svm)[-1], (other, d[-1])
    # rescaled to the SVM margins, the point costs at least the certified optimum, and the
    # excess shrinks along the path
    assert np.all(traj.svm_objective_ratio >= 1 - SVM_RTOL)
    assert np.all(np.diff(traj.svm_objective_ratio) < 0)


def test_ce_path_approaches_like_one_over_log():
    """docs/theory.md §9 (independent L-BFGS run while planning): 0.135 at 1e-1, 0.042 at 1e-6."""
    traj = regularization_path(_spec("ce"), LAMBDAS)
    d = traj.distance_to_svm
    # F8 quotes three digits: agreement to its rounding
    assert d[0] == pytest.approx(0.135, abs=0.0006)
    assert d[5] == pytest.approx(0.042, abs=0.0006)
    fit = traj.fits[0]
    assert fit.power == 1 and fit.points == len(LAMBDAS)
    # the 1/log(1/lambda) term explains most of the distance along the grid
    assert fit.slope > 0 and fit.r2 > 0.9 and 0 <= fit.intercept < d[-1]


def test_ldt_classifier_norm_ratio_heads_to_svm_not_published_formula():
    """docs/theory.md §9: STEP k=10, R=10, rho=1/2, LDT gamma=1/2.

    The SVM (delta_c proportional to n_c^{-1/2}, docs/theory.md §6) has an ETF of classifiers:
    ratio 1.
    The published closed form predicts 2.67; the path's ratio falls toward 1.
    """
    spec = Spec.from_loss(step_counts(10, 10, 0.5), "ldt", gamma=0.5)
    traj = regularization_path(spec, [1e-2, 1e-4, 1e-6, 1e-8])
    assert traj.ok, traj.message
    svm_ratio = norm_ratio(spec, traj.svm.classifier_gram)
    assert svm_ratio == pytest.approx(1.0, abs=1e-6)  # convex solve accuracy
    r = traj.classifier_norm_ratio
    assert np.all(np.diff(r) < 0) and np.all(r > svm_ratio)
    assert r[-1] - 1.0 < 0.2 * (2.67 - 1.0)
    assert np.all(np.diff(traj.distance_to_svm) < 0)


def test_path_class_level_equals_example_level():
    """The regularized minimizer collapses (NC1 = 0), so both levels give the same Grams."""
    spec = Spec.from_loss((3, 2, 1), "vs", gamma=0.5)
    lambdas = [1e-1, 1e-3]
    a = regularization_path(spec, lambdas)
    b = regularization_path(spec, lambdas, level="example", svm=a.svm)
    assert a.ok and b.ok
    # both solved to gtol 1e-7 on objective/lambda: Grams agree to ~1e-8
    np.testing.assert_allclose(a.classifier_grams, b.classifier_grams, atol=1e-6)
    np.testing.assert_allclose(a.embedding_grams, b.embedding_grams, atol=1e-6)
    np.testing.assert_allclose(a.objective, b.objective, rtol=1e-9)
    assert np.all(b.nc1 < 1e-12)


@pytest.mark.parametrize("normalized", [False, True])
def test_gradient_descent_class_level_is_example_level_from_collapsed_start(normalized):
    spec = Spec.from_loss((3, 2, 1), "ldt", gamma=0.5)
    rng = np.random.default_rng(0)
    W, Hbar = 0.1 * rng.normal(size=(3, 3)), 0.1 * rng.normal(size=(3, 3))
    kw = {"steps": 300, "normalized": normalized, "records": 6}
    a = gradient_descent(spec, init=(W, Hbar), **kw)
    b = gradient_descent(spec, init=(W, Hbar[:, spec.labels]), level="example", svm=a.svm, **kw)
    np.testing.assert_array_equal(a.iterations, b.iterations)
    # same arithmetic up to the order of floating-point sums
    np.testing.assert_allclose(a.classifier_grams, b.classifier_grams, atol=1e-12)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-10)


def test_normalized_gd_reaches_svm_geometry():
    traj = gradient_descent(_spec("ce"), steps=3000, normalized=True, records=10)
    d = traj.distance_to_svm
    assert d[-1] < 1e-3 < d[0]
    assert np.all(np.diff(d[-4:]) < 0)
    finite = np.isfinite(traj.svm_objective_ratio)
    assert np.all(traj.svm_objective_ratio[finite] >= 1 - SVM_RTOL)
    assert traj.svm_objective_ratio[-1] < 1.001


def test_plain_gd_from_small_init_separates_and_approaches():
    traj = gradient_descent(_spec("ldt"), steps=3000, records=8)
    assert np.all(np.diff(traj.loss) <= 0)
    tail = traj.svm_objective_ratio[-3:]
    assert np.all(np.isfinite(tail)) and np.all(np.diff(tail) < 0) and tail[-1] >= 1 - SVM_RTOL
    assert traj.distance_to_svm[-1] < traj.distance_to_svm[-3]


@pytest.mark.parametrize("level", ["class", "example"])
def test_training_gradient_matches_finite_differences(level):
    """The chain rule through V = Hbar N^{1/2} (class level) or H (example level)."""
    spec = Spec.from_loss((3, 2, 1), "vs", gamma=0.5, tau=1.0)
    model = _Model(spec, params_from_spec(spec), level)
    x = np.random.default_rng(2).normal(size=model.size)
    _, grad, _ = model.loss_and_grad(x)
    eps = 1e-6
    num = np.array(
        [
            (model.loss_and_grad(x + eps * e)[0] - model.loss_and_grad(x - eps * e)[0]) / (2 * eps)
            for e in np.eye(model.size)
        ]
    )
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)
    direction = model.direction(x)
    np.testing.assert_allclose(direction / np.linalg.norm(direction), grad / np.linalg.norm(grad))


def test_norm_ratio_definition():
    G = np.diag([4.0, 4.0, 1.0, 2.0])
    assert norm_ratio(Spec.from_loss((5, 5, 1, 1), "ce"), G) == pytest.approx(4.0 / 1.5)
    assert norm_ratio(Spec.from_loss((5, 3, 1, 1), "ce"), G) == pytest.approx(4.0)


def test_trend_fit_recovers_a_line():
    lam = np.array([1e-1, 1e-3, 1e-6, 2.0])
    d = 0.01 + 0.3 / np.log(1 / lam)
    fit = trend_fit(lam, d)
    assert fit.points == 3 and fit.r2 == pytest.approx(1.0)
    assert (fit.intercept, fit.slope) == (pytest.approx(0.01), pytest.approx(0.3))
    assert trend_fit(np.array([1e-1, 1e-2, 2.0]), np.array([0.1, 0.05, 0.2])) is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lambdas": [1e-2, 1e-1]}, "'lambdas' parameter must be positive finite numbers"),
        ({"lambdas": [1e-1, -1.0]}, "'lambdas'"),
        ({"lambdas": "1e-1,x"}, "'lambdas'"),
        ({"level": "batch"}, "'level' parameter must be one of class, example"),
        ({"init": (np.zeros((2, 2)), np.zeros((3, 3)))}, "'init' parameter must be a pair"),
        ({"gtol": 0.0}, "'gtol'"),
        ({"svm": solve(Spec.from_loss((3, 2, 1), "ldt", gamma=1.0), "convex")}, "'svm'"),
    ],
)
def test_path_bad_input(kwargs, match):
    spec = Spec.from_loss((3, 2, 1), "ce")
    with pytest.raises(SpecError, match=match):
        regularization_path(spec, **{"lambdas": [1e-1], **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"lr": -1.0}, "'lr'"), ({"steps": 0}, "'steps'"), ({"lr": 1e6}, "'lr' parameter")],
)
def test_gd_bad_input(kwargs, match):
    with pytest.raises(SpecError, match=match):
        gradient_descent(Spec.from_loss((3, 2, 1), "ce"), **{"steps": 50, **kwargs})


def test_cli_path_writes_json_and_figure(cli, tmp_path):
    out, fig = tmp_path / "p.json", tmp_path / "p.png"
    code, stdout, err = cli(
        "path",
        "--counts",
        "10,10,1,1",
        "--lambdas",
        "1e-1,1e-3,1e-5",
        "--compare",
        "cdt:0.5,ldt:0.5",
        "--json",
        str(out),
        "--plot",
        str(fig),
    )
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["lambdas"] == [1e-1, 1e-3, 1e-5]
    assert len(data["distance_to_svm"]) == len(data["classifier_norm_ratio"]) == 3
    assert np.all(np.diff(data["distance_to_svm"]) < 0)
    assert [c["spec"]["loss"] for c in data["compared"]] == ["cdt", "ldt"]
    assert data["fits"][0]["x"] == "1/log(1/lambda)"
    assert fig.stat().st_size > 10_000 and fig.read_bytes()[:4] == b"\x89PNG"
    assert "certificate" in stdout


def test_cli_train_writes_json(cli, tmp_path):
    out = tmp_path / "t.json"
    code, stdout, err = cli(
        "train", "--counts", "5,1", "--optimizer", "ngd", "--steps", "200", "--json", str(out)
    )
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["kind"] == "ngd" and data["iterations"][-1] == 200
    assert "svm-obj-ratio" in stdout
    assert len(data["iterations"]) == len(data["distance_to_svm"])


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--lambdas", "1e-3,1e-1"], "--lambdas "),
        (["--compare", "foo"], "--compare "),
        (["--compare", "cdt"], "--compare must be a gamma for 'cdt'"),
        (["--compare", "ce:0.5"], "--compare must be no gamma"),
    ],
)
def test_cli_path_bad_input(cli, argv, match):
    code, _, err = cli("path", "--counts", "3,1", *argv)
    assert code == 2
    assert match in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_f9_full_grid():
    """docs/theory.md §9s grid 1e-2 ... 1e-12 (measured 1.35, 1.20, 1.14, 1.11, 1.09, 1.07)."""
    spec = Spec.from_loss(step_counts(10, 10, 0.5), "ldt", gamma=0.5)
    traj = regularization_path(spec, [10.0**-j for j in range(2, 13, 2)])
    assert traj.ok
    # F9 quotes two decimals: agreement to its rounding
    np.testing.assert_allclose(
        traj.classifier_norm_ratio, [1.35, 1.20, 1.14, 1.11, 1.09, 1.07], atol=0.005
    )


@pytest.mark.slow
def test_normalized_gd_cdt_long_run():
    traj = gradient_descent(_spec("cdt"), steps=200_000, normalized=True, records=10)
    assert traj.distance_to_svm[-1] < 1e-3
