"""Non-convex route at the sizes where it used to fail (issue 19): the polar-factor certificate,
class level k = 40 against the closed form, and the memory guard (docs/theory.md §15)."""

from __future__ import annotations

import numpy as np
import pytest

from ucfm_svm.api import solve
from ucfm_svm.geometry import class_objective
from ucfm_svm.result import OPTIMAL
from ucfm_svm.solvers import certificate
from ucfm_svm.solvers.nonconvex import _polar_multipliers, memory_estimate, solve_nonconvex
from ucfm_svm.spec import Spec, longtail_counts


def gram_rule(*results) -> float:
    """``max(1e-6, 2 sqrt(gap))``, the gap-based rule of ``analysis/verify.route_tolerance``."""
    return max(1e-6, 2 * np.sqrt(max(r.rel_gap for r in results)))


def rel_fro(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize(("loss", "gamma"), [("ce", None), ("cdt", 0.5), ("ldt", 0.5)])
def test_polar_certificate_is_tight_at_the_optimum_and_valid_nearby(loss, gamma):
    spec = Spec.from_loss(longtail_counts(20, 100, 500), loss, gamma=gamma)
    ref = solve(spec, "theory")
    assert ref.status == OPTIMAL
    lam = _polar_multipliers(spec, ref.W, ref.H_mean)
    assert certificate.class_lower_bound(spec, lam) == pytest.approx(ref.objective, rel=1e-10)
    rng = np.random.default_rng(0)
    for size in (1e-6, 1e-4, 1e-2):
        W = ref.W + size * rng.standard_normal(ref.W.shape)
        H = ref.H_mean + size * rng.standard_normal(ref.H_mean.shape)
        bound = certificate.class_lower_bound(spec, _polar_multipliers(spec, W, H))
        # weak duality: never above the optimum, whatever point the multipliers come from
        assert bound <= ref.objective * (1 + 1e-12)
        # second order in the point's error (the projection onto 1^T L = 0, §15)
        if size <= 1e-4:
            assert ref.objective - bound <= 1e3 * size**2 * ref.objective + 1e-9
    assert class_objective(spec, ref.W, ref.H_mean) == pytest.approx(ref.objective, rel=1e-12)


def test_class_level_k40_certified_and_agrees_with_closed_form():
    # k = 40 returned "not certified" before issue 19 (its objective was optimal to 1e-11).
    spec = Spec.from_loss(longtail_counts(40, 100, 500), "ce")
    res = solve_nonconvex(spec)
    ref = solve(spec, "theory")
    assert res.status == OPTIMAL, res.message
    assert res.rel_gap <= 1e-6
    assert abs(res.objective - ref.objective) <= 1e-6 * ref.objective
    tol = gram_rule(res, ref)
    assert rel_fro(res.classifier_gram, ref.classifier_gram) <= tol
    assert rel_fro(res.embedding_gram, ref.embedding_gram) <= tol


def test_memory_estimate_grows_with_block_steps():
    spec = Spec.from_loss(longtail_counts(100, 100, 500), "ce")
    plain = memory_estimate(spec, "class", 0)
    assert 0 < plain < memory_estimate(spec, "class", 2)
    assert memory_estimate(spec, "example", 0) > plain


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (("--longtail", "4000,100", "--n-max", "5000"), ("GiB", "--method theory")),
        (("--longtail", "300,100", "--n-max", "500", "--alternations", "2"), ("--alternations 0",)),
    ],
)
def test_cli_refuses_what_cannot_fit_before_work(cli, argv, names):
    code, _, err = cli("solve", *argv, "--method", "nonconvex")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for name in names:
        assert name in err
