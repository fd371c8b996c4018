"""Closed form of docs/theory.md §4/F5' and its dual certificate, against the convex solve."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import psd_sqrt, rel_fro
from ucfm_svm import Spec, SpecError, solve_convex, step_counts
from ucfm_svm.api import METHODS, solve
from ucfm_svm.result import NOT_CERTIFIED, OPTIMAL
from ucfm_svm.solvers.structured import structured_solution
from ucfm_svm.solvers.theory import (
    closed_form,
    optimal_logits,
    optimal_shift,
    scaled_logit_matrix,
    solve_theory,
)

#: The closed form is exact up to one SVD: its certificate gap is float rounding (~1e-14).
THEORY_GAP = 1e-9
#: Clarabel is run to 1e-10 gaps; its Grams agree with the closed form to ~1e-8 (k <= 20).
GRAM_TOL = 1e-6
#: Objective of the rescaled-feasible convex point vs the exact value (measured ~1e-10).
OBJECTIVE_TOL = 1e-7


def random_spec(rng: np.random.Generator, k_max: int = 20) -> Spec:
    """Random counts 1..300, scales in [e^-1.5, e^1.5], margins in [e^-1, e^1]
    (docs/theory.md §4)."""
    k = int(rng.integers(2, k_max + 1))
    return Spec.custom(
        rng.integers(1, 301, size=k),
        scales=np.exp(rng.uniform(-1.5, 1.5, size=k)),
        margins=np.exp(rng.uniform(-1.0, 1.0, size=k)),
    )


def assert_matches_convex(spec: Spec) -> None:
    theory = solve_theory(spec)
    convex = solve_convex(spec)
    assert theory.status == OPTIMAL and theory.solver == "closed form"
    assert theory.rel_gap <= THEORY_GAP
    assert abs(theory.rel_gap) <= THEORY_GAP
    assert theory.min_margin_ratio >= 1 - 1e-12
    assert theory.objective == pytest.approx(convex.objective, rel=OBJECTIVE_TOL)
    # Weak duality both ways: each route's bound is below the other's feasible objective.
    assert theory.lower_bound <= convex.objective * (1 + 1e-12)
    assert convex.lower_bound <= theory.objective * (1 + 1e-12)
    assert rel_fro(theory.classifier_gram, convex.classifier_gram) < GRAM_TOL
    assert rel_fro(theory.embedding_gram, convex.embedding_gram) < GRAM_TOL
    assert rel_fro(theory.logits, convex.logits) < GRAM_TOL


def test_reference_optimum():
    result = solve_theory(Spec.from_loss([10, 10, 1, 1]))
    assert result.status == OPTIMAL
    assert result.objective == pytest.approx(6.5074855, rel=1e-7)
    assert result.rel_gap <= THEORY_GAP


@pytest.mark.parametrize("seed", range(4))
def test_random_specs_match_convex(seed):
    """Done-when: random counts, k <= 20, random Delta and margins."""
    rng = np.random.default_rng(seed)
    assert_matches_convex(random_spec(rng))


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_property_random_specs_match_convex(seed):
    assert_matches_convex(random_spec(np.random.default_rng(seed), k_max=10))


@pytest.mark.parametrize(
    ("loss", "gamma"), [("ce", None), ("ldt", 0.5), ("ldt", -0.7), ("cdt", 1.0), ("vs", -0.5)]
)
def test_loss_presets_match_convex(loss, gamma):
    assert_matches_convex(Spec.from_loss([40, 17, 9, 3, 1], loss, gamma=gamma))


def test_dual_certificate_structure():
    """lam >= 0, columns of L sum to zero (u = Delta^{-1} 1 orthogonal to range A), and the
    multipliers are supported where the convex solve's duals are (both are KKT multipliers)."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        spec = random_spec(rng)
        cf = closed_form(spec)
        assert cf.min_multiplier >= 0
        assert cf.column_residual < 1e-12
        u = 1.0 / spec.Delta
        assert np.abs(u @ cf.U).max() / np.linalg.norm(u) < 1e-12
        np.testing.assert_allclose(np.diag(cf.multipliers), 0.0)
        assert cf.lower_bound == pytest.approx(cf.value, rel=THEORY_GAP)
        assert cf.certified


def test_identity_scales_is_F3():
    """Delta = I: Zbar* = P diag(delta), W W^T = (P S^2 P)^{1/2}, value tr((S P S)^{1/2})."""
    counts, margins = np.array([30, 7, 7, 2, 1]), np.array([0.5, 1.0, 2.0, 1.5, 0.7])
    spec = Spec.custom(counts, margins=margins)
    k = counts.size
    P = np.eye(k) - 1.0 / k
    S = np.diag(margins * np.sqrt(counts))
    np.testing.assert_allclose(optimal_shift(spec), np.full(k, 1 / k))
    np.testing.assert_allclose(optimal_logits(spec), P @ np.diag(margins), atol=1e-15)
    np.testing.assert_allclose(scaled_logit_matrix(spec), P @ S, atol=1e-14)
    result = solve_theory(spec)
    np.testing.assert_allclose(result.classifier_gram, psd_sqrt(P @ S @ S @ P), atol=1e-12)
    hth = np.diag(counts**-0.5) @ psd_sqrt(S @ P @ S) @ np.diag(counts**-0.5)
    np.testing.assert_allclose(result.embedding_gram, hth, atol=1e-12)
    # tr((S P S)^{1/2}) = ||P S||_* ((P S)^T (P S) = S P S); the nuclear norm avoids the
    # sqrt(eps) error of square-rooting the zero eigenvalue.
    assert result.objective == pytest.approx(np.linalg.norm(P @ S, "nuc"), rel=1e-12)


def test_shift_makes_u_orthogonal():
    spec = Spec.custom([5, 4, 1], scales=[2.0, 0.5, 1.0], margins=[1.0, 2.0, 0.5])
    t = optimal_shift(spec)
    assert t.sum() == pytest.approx(1.0)
    u2 = spec.Delta**-2.0
    np.testing.assert_allclose(u2 @ (np.eye(3) - np.outer(np.ones(3), t)), 0.0, atol=1e-15)


def test_ill_conditioned_spec_is_certified_in_extended_precision():
    """Scales and margins over 6 orders of magnitude (condition ~1e9): float64 leaves the
    closed form's certificate a relative gap ~1e-4 and cannot bound its small classes'
    geometry, so solve_theory decides in extended precision (docs/theory.md §10) instead of
    falling back to a less accurate solver; the geometry then matches the structured route (an
    independent float64 evaluation of the same closed form) to rounding."""
    spec = Spec.custom(
        [863, 458, 147, 919, 861, 586],
        scales=[0.027, 0.081, 2686.683, 1475.149, 0.001, 0.052],
        margins=[8.987, 0.01, 0.01, 0.011, 39.823, 0.19],
    )
    cf = closed_form(spec)
    assert not cf.float_certified and cf.condition > 1e8
    result = solve_theory(spec)
    assert result.method == "theory" and result.status == OPTIMAL
    assert result.solver.startswith("closed form, ") and "digit arithmetic" in result.message
    assert result.rel_gap < 1e-12
    exact = structured_solution(spec, full=True)
    np.testing.assert_allclose(result.classifier_norms, exact.classifier_norms, rtol=1e-12)
    np.testing.assert_allclose(result.embedding_norms, exact.embedding_norms, rtol=1e-12)
    np.testing.assert_allclose(result.embedding_gram, exact.embedding_gram, rtol=1e-10,
                               atol=1e-12 * np.abs(exact.embedding_gram).max())  # fmt: skip


def test_float64_error_bounds_decide_moderate_cases():
    """Moderate hyperparameters: the a-posteriori float64 bounds decide every sign and bound
    the geometry far below GEOMETRY_RTOL, so no extended precision is needed."""
    spec = Spec.from_loss([40, 17, 9, 3, 1], "vs", gamma=0.7)
    cf = closed_form(spec)
    assert cf.signs_decided and cf.float_certified and cf.geometry_error < 1e-10
    off = ~np.eye(spec.k, dtype=bool)
    assert np.all(cf.multiplier_error[off] < 1e-8 * cf.multipliers[off])
    assert solve_theory(spec).solver == "closed form"


def test_undecided_certificate_without_extended_precision_is_not_optimal(monkeypatch):
    """Above the extended-precision size, a certificate float64 cannot settle leaves the
    closed form not certified (its weak-duality bound is still valid) rather than falling back
    to a solver whose gap does not cover the geometry."""
    from ucfm_svm.solvers import theory

    spec = Spec.custom(
        [863, 458, 147, 919, 861, 586],
        scales=[0.027, 0.081, 2686.683, 1475.149, 0.001, 0.052],
        margins=[8.987, 0.01, 0.01, 0.011, 39.823, 0.19],
    )
    monkeypatch.setattr(theory, "EXACT_MAX_K", 3)
    result = theory.solve_theory(spec)
    assert result.status == NOT_CERTIFIED and result.solver == "closed form"
    assert result.lower_bound <= solve_theory(spec).lower_bound * (1 + 1e-12)
    assert "--method structured" in result.message


def test_dimension_below_k_minus_1_is_rejected():
    with pytest.raises(SpecError, match="'dim' parameter must be at least k - 1 = 3"):
        solve_theory(Spec.from_loss([3, 2, 1, 1], dim=2))


def test_extra_dimensions_are_zero_padded():
    spec = Spec.from_loss(step_counts(4, 5, 0.5), "cdt", gamma=0.3, dim=7)
    result = solve(spec, "theory")
    assert result.W.shape == (4, 7) and result.H_mean.shape == (7, 4)
    assert result.status == OPTIMAL
    assert rel_fro(result.classifier_gram, solve_theory(spec.with_dim(3)).classifier_gram) < 1e-12


def test_registered_and_cli_json(cli, tmp_path):
    assert METHODS["theory"] is solve_theory
    path = tmp_path / "theory.json"
    code, out, err = cli(
        "solve", "--step", "10,10,0.5", "--loss", "cdt", "--gamma", "0.5",
        "--method", "theory", "--json", str(path),
    )  # fmt: skip
    assert code == 0, err
    assert "closed form" in out
    data = json.loads(path.read_text())
    assert data["method"] == "theory" and data["status"] == OPTIMAL
    assert data["lower_bound"] is not None and data["rel_gap"] <= THEORY_GAP
    convex = solve_convex(Spec.from_loss(step_counts(10, 10, 0.5), "cdt", gamma=0.5))
    assert rel_fro(np.array(data["classifier_gram"]), convex.classifier_gram) < GRAM_TOL
    assert rel_fro(np.array(data["embedding_gram"]), convex.embedding_gram) < GRAM_TOL


def test_margins_that_would_overflow_the_closed_form_are_refused_at_the_spec():
    # margins 600 orders of magnitude apart once overflowed the closed form to nan (it came back
    # as "not certified" with objective nan, later as a SolverError); the specification now
    # refuses scales and margins outside the range where every solver quantity stays finite
    from ucfm_svm.errors import SpecError
    from ucfm_svm.spec import HYPER_RANGE

    with pytest.raises(SpecError, match=r"'margins' parameter must be numbers in \[1e-70"):
        Spec.custom([5, 5], margins=[1e300, 1e-300])
    extreme = Spec.custom([2**53, 1], margins=[HYPER_RANGE[1], HYPER_RANGE[0]])
    result = solve_theory(extreme, fallback=False)
    assert np.isfinite(result.objective) and np.all(np.isfinite(result.classifier_norms))


def test_dense_theory_refuses_large_k_and_points_to_structured(cli):
    # Above DENSE_MAX_K the dense SVD costs minutes and GiBs: a one-line error naming the
    # structured method, before any k x k array is formed (this call would take ~3 min).
    from ucfm_svm.solvers.theory import DENSE_MAX_K

    code, _, err = cli("solve", "--step", "8142,10,0.5", "--method", "theory")
    assert code == 2
    assert "the number of classes (K of --step/--longtail" in err and "must be at most" in err
    assert "--method structured" in err
    assert DENSE_MAX_K < 8142


def test_analyze_prediction_above_dense_limit_uses_structured(monkeypatch):
    # Lower the limit so the structured branch runs at small k, and compare it with the dense one.
    from ucfm_svm.analysis import analyze

    counts = [40, 17, 9, 3, 1]
    dense = analyze.predict(counts, "cdt", gamma=0.5)
    monkeypatch.setattr(analyze, "DENSE_MAX_K", 4)
    structured = analyze.predict(counts, "cdt", gamma=0.5)
    assert dense.method == "theory" and structured.method == "structured"
    # Both closed forms are accurate to rounding (1e-12 measured; test_structured uses 1e-9).
    assert np.allclose(structured.classifier_gram, dense.classifier_gram, rtol=0, atol=1e-9)
    assert np.allclose(structured.embedding_gram, dense.embedding_gram, rtol=0, atol=1e-9)


@pytest.mark.parametrize("method", ["theory", "structured"])
def test_scales_at_the_edge_of_the_range_stay_finite(method):
    # Delta = 1e-300 once overflowed Delta^-2 (the dense SVD raised LinAlgError, the structured
    # path returned objective inf); such scales are refused by the spec. At the smallest scale
    # it admits the arithmetic stays finite, but 1 - t_c cancels (t_c ~ 1 - 1e-140), so a route
    # may fail to certify: it must then say so (SolverError or a status other than optimal),
    # never return nan or claim optimality.
    from ucfm_svm.errors import SolverError, SpecError
    from ucfm_svm.result import OPTIMAL
    from ucfm_svm.spec import HYPER_RANGE

    with pytest.raises(SpecError, match="'scales' parameter"):
        Spec.custom([10, 10, 1], scales=[1e-300, 1, 1])
    try:
        result = solve(Spec.custom([10, 10, 1], scales=[HYPER_RANGE[0], 1, 1]), method)
    except SolverError:
        return
    assert np.isfinite(result.objective) and np.all(np.isfinite(result.classifier_norms))
    if result.status == OPTIMAL:
        assert result.rel_gap <= 1e-6


def test_closed_form_when_one_shift_is_near_one():
    """``Delta_0 = 1e-8`` among ones gives ``t_0 = 1 - 2e-16``: ``1 - t_0`` formed by subtraction
    cancelled, the dense closed form failed its own certificate and the convex fallback was
    reported optimal with squared classifier norms 18x off. The structured resolvent route
    (which forms ``1 - t_c`` as a sum of the others) is the independent reference; the dense
    SVD's relative accuracy on the small row of ``A`` (scale 1e8 smaller) is ~1e-8."""
    spec = Spec.custom([5, 2, 3], scales=[1e-8, 1.0, 1.0])
    dense = solve_theory(spec, fallback=False)
    reference = structured_solution(spec)
    assert dense.status == OPTIMAL and reference.status == OPTIMAL
    np.testing.assert_allclose(dense.classifier_norms, reference.classifier_norms, rtol=1e-6)
    np.testing.assert_allclose(dense.embedding_norms, reference.embedding_norms, rtol=1e-6)
