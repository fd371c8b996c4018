"""Convex certificate solver: known optimum, levels, certificate, closed form F3."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import psd_sqrt, rel_fro
from ucfm_svm import Spec, SpecError, solve_convex
from ucfm_svm.result import OPTIMAL, Result
from ucfm_svm.solvers.certificate import class_lower_bound, example_lower_bound

#: Clarabel is run to 1e-10 gaps; Grams of two independent solves agree far below this.
GRAM_TOL = 1e-6


def test_reference_optimum():
    result = solve_convex(Spec.from_loss([10, 10, 1, 1]))
    assert result.status == OPTIMAL
    assert result.objective == pytest.approx(6.5074855, rel=1e-7)
    assert result.lower_bound <= result.objective + 1e-9
    assert result.rel_gap < 1e-8
    assert result.min_margin_ratio >= 1 - 1e-12


@pytest.mark.parametrize("counts", [(3, 3, 1), (4, 2, 1), (5, 5, 1, 1), (3, 2, 2, 1, 1), (6, 1, 1)])
@pytest.mark.parametrize("loss", ["ce", "cdt", "ldt"])
def test_example_level_equals_class_level(counts, loss):
    gamma = None if loss == "ce" else 0.5
    spec = Spec.from_loss(counts, loss, gamma=gamma)
    by_class = solve_convex(spec, level="class")
    by_example = solve_convex(spec, level="example")
    assert by_example.status == OPTIMAL
    assert by_example.objective == pytest.approx(by_class.objective, rel=1e-7)
    assert rel_fro(by_example.classifier_gram, by_class.classifier_gram) < GRAM_TOL
    assert rel_fro(by_example.embedding_gram, by_class.embedding_gram) < GRAM_TOL
    assert by_example.nc1 < 1e-8


def test_closed_form_identity_scales_random_counts():
    """docs/theory.md §4: with Delta = I, Zbar* = P diag(delta), W W^T = (P S^2 P)^{1/2}, ..."""
    rng = np.random.default_rng(0)
    for _ in range(6):
        k = int(rng.integers(2, 8))
        counts = rng.integers(1, 200, size=k)
        margins = np.exp(rng.uniform(-1, 1, size=k))
        spec = Spec.custom(counts, margins=margins)
        result = solve_convex(spec)
        P = np.eye(k) - np.ones((k, k)) / k
        S = np.diag(margins * np.sqrt(counts))
        N_isqrt = np.diag(counts**-0.5)
        wwt = psd_sqrt(P @ S @ S @ P)
        hth = N_isqrt @ psd_sqrt(S @ P @ S) @ N_isqrt
        value = np.trace(psd_sqrt(S @ P @ S))
        assert result.objective == pytest.approx(value, rel=1e-7)
        assert rel_fro(result.classifier_gram, wwt) < GRAM_TOL
        assert rel_fro(result.embedding_gram, hth) < GRAM_TOL
        assert rel_fro(result.logits, P @ np.diag(margins)) < GRAM_TOL


def test_balanced_factorization_identities():
    """docs/theory.md §2: W W^T = (A A^T)^{1/2} and the two halves of the cost are equal."""
    spec = Spec.from_loss([20, 20, 5, 2], "cdt", gamma=0.7)
    r = solve_convex(spec)
    A = r.logits / spec.Delta[:, None] * np.sqrt(spec.n_vec)[None, :]
    np.testing.assert_allclose(r.classifier_gram, psd_sqrt(A @ A.T), atol=1e-7)
    half_w = 0.5 * np.sum(r.W**2)
    half_h = 0.5 * np.sum(spec.n_vec * np.sum(r.H_mean**2, axis=0))
    assert half_w == pytest.approx(half_h, rel=1e-7)


def test_lower_bound_is_valid_for_any_multipliers():
    """Weak duality: random nonnegative multipliers never bound above the optimum."""
    rng = np.random.default_rng(1)
    spec = Spec.from_loss([7, 4, 2, 1], "vs", gamma=0.4, tau=1.0)
    optimum = solve_convex(spec).objective
    for _ in range(50):
        assert class_lower_bound(spec, rng.exponential(size=(4, 4))) <= optimum + 1e-9
        lam = rng.exponential(size=(4, spec.n))
        assert example_lower_bound(spec, lam, spec.labels) <= optimum + 1e-9


def test_larger_dimension_and_scs_backend_agree():
    spec = Spec.from_loss([10, 10, 1, 1], dim=7)
    clarabel = solve_convex(spec)
    scs = solve_convex(spec, solver="SCS")
    assert clarabel.W.shape == (4, 7) and clarabel.H_mean.shape == (7, 4)
    assert scs.objective == pytest.approx(clarabel.objective, rel=1e-6)
    assert rel_fro(scs.classifier_gram, clarabel.classifier_gram) < 1e-5


def test_minimal_dimension_is_enough():
    spec = Spec.from_loss([10, 10, 1, 1], "cdt", gamma=0.5, dim=3)
    assert solve_convex(spec).status == OPTIMAL


def test_rejects_small_dimension_and_bad_level():
    with pytest.raises(SpecError, match="'dim' parameter must be at least k - 1 = 3"):
        solve_convex(Spec.from_loss([5, 5, 1, 1], dim=2))
    with pytest.raises(SpecError, match="'level' parameter"):
        solve_convex(Spec.from_loss([5, 5]), level="batch")
    with pytest.raises(SpecError, match="'solver' parameter"):
        solve_convex(Spec.from_loss([5, 5]), solver="MOSEK")


def test_result_json_round_trip(tmp_path):
    result = solve_convex(Spec.from_loss([4, 2, 1], "ldt", gamma=0.5))
    result.to_json(tmp_path / "r.json")
    back = Result.from_json(tmp_path / "r.json")
    assert back.spec == result.spec
    np.testing.assert_array_equal(back.classifier_gram, result.classifier_gram)
    assert back.gap == result.gap


def test_gram_distance_is_scale_free():
    from ucfm_svm.geometry import gram_distance

    G = solve_convex(Spec.from_loss([10, 10, 1, 1])).classifier_gram
    assert gram_distance(7.5 * G, G) < 1e-12
    assert gram_distance(G, np.eye(4)) > 0.1
