"""Structured closed form (docs/theory.md §4 at large k) against dense linear algebra and the convex
solver.

The dense reference is the SVD of ``A = Delta^{-1} Zbar* N^{1/2}`` (theory.scaled_logit_matrix):
``W W^T = U S U^T``, ``Hbar^T Hbar = N^{-1/2} V S V^T N^{-1/2}``, optimum ``sum S`` and the
dual certificate of ``U V^T``. Both routes are backward stable, so they agree to a small
multiple of machine precision times the conditioning of the singular vectors; 1e-9 (the
issue's requirement) leaves a factor ~1e3 over the worst error seen on these cases (1e-12).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import rel_fro
from ucfm_svm import Spec, SpecError
from ucfm_svm.result import OPTIMAL
from ucfm_svm.solvers.certificate import class_lower_bound, example_lower_bound
from ucfm_svm.solvers.convex import solve_convex
from ucfm_svm.solvers.structured import (
    ROUTES,
    Clusters,
    _sign_violations,
    _Sums,
    clusters,
    structured_solution,
)
from ucfm_svm.solvers.theory import optimal_logits, scaled_logit_matrix, solve_theory
from ucfm_svm.spec import longtail_counts, step_counts

#: Structured vs dense (see the module docstring).
DENSE_TOL = 1e-9
#: Structured vs Clarabel, run to 1e-10 gaps: its point and duals are accurate to ~1e-8.
SOLVER_TOL = 1e-7


def _dense(spec: Spec) -> dict:
    A = scaled_logit_matrix(spec)
    U, s, Vt = np.linalg.svd(A)
    r = int(np.sum(s > 1e-12 * s[0]))
    U, s, Vt = U[:, :r], s[:r], Vt[:r]
    root_n = np.sqrt(spec.n_vec)
    uv = U @ Vt
    L = uv / spec.Delta[:, None] * root_n[None, :]
    return {
        "objective": s.sum(),
        "cg": (U * s) @ U.T,
        "eg": (Vt.T * s) @ Vt / np.outer(root_n, root_n),
        "lam": -L,
        "uv": uv,
    }


def _random_spec(rng: np.random.Generator, case: int) -> Spec:
    k = int(rng.integers(2, 51))
    # Every third case has few distinct counts: clusters of several classes.
    few = case % 3 == 0
    counts = rng.choice([1, 7, 60, 300], size=k) if few else rng.integers(1, 400, size=k)
    scales = np.ones(k) if case % 4 == 0 else np.exp(rng.uniform(-1.5, 1.5, size=k))
    margins = np.exp(rng.uniform(-1, 1, size=k))
    if case % 5 == 0:  # scales constant on equal counts (CDT-like): groups of identical classes
        scales = (counts / counts.min()) ** 0.3
    return Spec.custom(counts, scales=scales, margins=margins)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case", range(24))
def test_matches_dense(case, route):
    spec = _random_spec(np.random.default_rng(case), case)
    dense = _dense(spec)
    result = structured_solution(spec, route=route)
    assert result.status == OPTIMAL
    assert result.W is None and result.classifier_gram is None
    assert result.objective == pytest.approx(dense["objective"], rel=DENSE_TOL)
    # Every off-diagonal multiplier of the dense U V^T is >= 0 iff the structured check passes.
    assert (dense["uv"] - np.diag(np.diag(dense["uv"]))).max() <= 1e-12
    assert result.lower_bound == pytest.approx(class_lower_bound(spec, dense["lam"]), rel=DENSE_TOL)
    # secular: exact to rounding; resolvent: the gap is its rigorous error budget (§14),
    # 2 * 64 gamma_(k + Q + 64) + eta ~ 3e-12 at k <= 50
    assert result.rel_gap < (1e-12 if route == "secular" else 1e-10)
    np.testing.assert_allclose(
        result.classifier_norms, np.sqrt(np.diag(dense["cg"])), rtol=DENSE_TOL
    )
    np.testing.assert_allclose(
        result.embedding_norms, np.sqrt(np.diag(dense["eg"])), rtol=DENSE_TOL
    )


@pytest.mark.parametrize("case", range(0, 24, 3))
def test_full_matches_dense(case):
    spec = _random_spec(np.random.default_rng(case), case)
    dense = _dense(spec)
    result = structured_solution(spec, full=True)
    assert result.status == OPTIMAL
    assert result.W.shape == (spec.k, spec.dim) and result.H_mean.shape == (spec.dim, spec.k)
    assert rel_fro(result.classifier_gram, dense["cg"]) < DENSE_TOL
    assert rel_fro(result.embedding_gram, dense["eg"]) < DENSE_TOL
    # The factors reproduce the closed-form logits, with every margin tight.
    product = spec.Delta[:, None] * (result.W @ result.H_mean)
    assert rel_fro(product, optimal_logits(spec)) < DENSE_TOL
    assert result.logits is None  # the closed form, theory.optimal_logits: not stored again
    assert abs(result.min_margin_ratio - 1) < DENSE_TOL
    # Balanced: 1/2 ||W||^2 + 1/2 sum n_c ||hbar_c||^2 = ||A||_*.
    assert result.objective == pytest.approx(dense["objective"], rel=DENSE_TOL)
    lean = structured_solution(spec)
    np.testing.assert_allclose(result.classifier_norms, lean.classifier_norms, rtol=DENSE_TOL)
    np.testing.assert_allclose(result.embedding_norms, lean.embedding_norms, rtol=DENSE_TOL)


@pytest.mark.parametrize("case", range(1, 24, 4))
def test_matches_theory_method(case):
    """The dense closed form of ``theory.solve_theory`` (SVD, dense certificate)."""
    spec = _random_spec(np.random.default_rng(case), case)
    dense = solve_theory(spec, fallback=False)
    lean, full = structured_solution(spec), structured_solution(spec, full=True)
    for result in (lean, full):
        assert result.objective == pytest.approx(dense.objective, rel=DENSE_TOL)
        assert result.lower_bound == pytest.approx(dense.lower_bound, rel=DENSE_TOL)
        np.testing.assert_allclose(result.classifier_norms, dense.classifier_norms, rtol=DENSE_TOL)
        np.testing.assert_allclose(result.embedding_norms, dense.embedding_norms, rtol=DENSE_TOL)
    assert rel_fro(full.classifier_gram, dense.classifier_gram) < DENSE_TOL
    assert rel_fro(full.embedding_gram, dense.embedding_gram) < DENSE_TOL


@pytest.mark.parametrize(
    ("counts", "loss", "gamma"),
    [
        ((10, 10, 1, 1), "ce", None),
        ((9, 5, 3, 2, 1), "cdt", 0.5),
        ((9, 5, 3, 2, 1), "cdt", -0.5),
        ((9, 5, 3, 2, 1), "ldt", 0.5),
        ((6, 6, 2, 1), "vs", 1.0),
    ],
)
def test_matches_convex_solver(counts, loss, gamma):
    spec = Spec.from_loss(counts, loss, gamma=gamma)
    convex = solve_convex(spec)
    result = structured_solution(spec)
    assert result.objective == pytest.approx(convex.objective, rel=SOLVER_TOL)
    assert result.lower_bound == pytest.approx(convex.lower_bound, rel=SOLVER_TOL)
    np.testing.assert_allclose(result.classifier_norms, convex.classifier_norms, rtol=SOLVER_TOL)
    np.testing.assert_allclose(result.embedding_norms, convex.embedding_norms, rtol=SOLVER_TOL)


@pytest.mark.parametrize("spread", [1e-13, 1e-11, 1e-9, 1e-6])
def test_near_ties_match_dense(spread):
    """Classes whose d_c = (delta_c sqrt(n_c) / Delta_c)^2 differ by ``spread`` (relative):
    merged into one cluster below ~64 eps, otherwise close poles of the secular equation."""
    rng = np.random.default_rng(11)
    k = 30
    counts = rng.choice([3, 40, 200], size=k)
    scales = np.exp(rng.uniform(-1, 1, size=k))
    spec = Spec.custom(counts, scales=scales, margins=scales * (1 + spread * rng.random(k)))
    dense = _dense(spec)
    result = structured_solution(spec)
    assert result.certified
    assert result.objective == pytest.approx(dense["objective"], rel=DENSE_TOL)
    np.testing.assert_allclose(
        result.classifier_norms, np.sqrt(np.diag(dense["cg"])), rtol=DENSE_TOL
    )
    np.testing.assert_allclose(
        result.embedding_norms, np.sqrt(np.diag(dense["eg"])), rtol=DENSE_TOL
    )


def test_reference_optimum():
    result = structured_solution(Spec.from_loss([10, 10, 1, 1]))
    assert result.objective == pytest.approx(6.5074855, rel=1e-7)
    assert result.certified


def test_example_level_certificate_carries_over():
    """Class multipliers spread over the examples give the same bound (F2, module docstring)."""
    spec = Spec.from_loss((5, 3, 3, 1), "cdt", gamma=0.5)
    lam = _dense(spec)["lam"]
    labels = spec.labels
    lam_examples = lam[:, labels] / spec.n_vec[labels][None, :]
    by_example = structured_solution(spec, level="example")
    assert by_example.level == "example" and by_example.nc1 == 0.0
    assert by_example.lower_bound == pytest.approx(
        example_lower_bound(spec, lam_examples, labels), rel=DENSE_TOL
    )
    direct = solve_convex(spec, level="example")
    assert by_example.objective == pytest.approx(direct.objective, rel=SOLVER_TOL)


def test_clusters():
    spec = Spec.from_loss(step_counts(12, 10, 0.5, 3), "ce")
    cl = clusters(spec)
    assert cl.d.size == 2 and list(cl.size) == [6, 6]
    assert np.all(np.diff(cl.d) < 0) and cl.weight.sum() == pytest.approx(1.0)
    # CDT at gamma = 1/2 makes d_c = n_c / Delta_c^2 equal for all classes: one cluster,
    # everything deflated, and the classifiers form an ETF-like configuration of equal norms.
    tuned = Spec.from_loss(longtail_counts(50, 20, 200), "cdt", gamma=0.5)
    assert clusters(tuned).d.size == 1
    result = structured_solution(tuned)
    assert result.certified
    dense = _dense(tuned)
    np.testing.assert_allclose(
        result.classifier_norms, np.sqrt(np.diag(dense["cg"])), rtol=DENSE_TOL
    )


def test_permutation_equivariance():
    rng = np.random.default_rng(7)
    spec = _random_spec(rng, 1)
    perm = rng.permutation(spec.k)
    permuted = Spec.custom(
        spec.n_vec[perm].astype(int), scales=spec.Delta[perm], margins=spec.delta[perm]
    )
    a, b = structured_solution(spec), structured_solution(permuted)
    assert a.objective == pytest.approx(b.objective, rel=1e-12)
    np.testing.assert_allclose(a.classifier_norms[perm], b.classifier_norms, rtol=1e-12)


def test_bad_input():
    spec = Spec.from_loss([3, 2, 1])
    with pytest.raises(SpecError, match="'level' parameter must be one of class, example"):
        structured_solution(spec, level="examples")
    with pytest.raises(SpecError, match="'full' parameter must be True or False"):
        structured_solution(spec, full="yes")
    with pytest.raises(SpecError, match="'dim' parameter must be at least k - 1 = 2"):
        structured_solution(spec.with_dim(1))


def test_cli_structured(cli):
    code, out, _ = cli("solve", "--step", "10,10,0.5", "--method", "structured")
    assert code == 0
    assert "method structured, class level" in out and "status       optimal" in out
    assert "cosines (majority" not in out  # no Grams without --full, only group means
    assert "cosines by group" in out and "maj-min" in out
    code, out, _ = cli("solve", "--step", "10,10,0.5", "--method", "structured", "--full")
    assert code == 0 and "cosines (majority / minority groups)" in out
    code, out, _ = cli("solve", "--counts", "5,3,1", "--method", "structured", "--level", "example")
    assert code == 0 and "method structured, example level" in out and "NC1" in out
    code, _, err = cli("solve", "--step", "10,10,0.5", "--method", "convex", "--full")
    assert code == 2 and "--full" in err and "\n" not in err.strip()


def test_sign_check_flags_positive_entries():
    """The check counts neighbouring-cluster sums above rounding and within-cluster entries
    ``u_c' u_c / w_G (sum_j X_j[G] Y_j[G] - 1) > 0``; it is what turns the bound off."""
    cl = Clusters(
        index=np.array([0, 1, 1, 2]),
        d=np.array([4.0, 1.0, 0.25]),
        weight=np.array([0.25, 0.5, 0.25]),
        size=np.array([1, 2, 1]),
    )

    def sums(neighbour, s_uv):
        return _Sums(
            nuclear=1.0,
            s_up=np.zeros(3),
            s_down=np.zeros(3),
            s_uv=np.asarray(s_uv, dtype=float),
            neighbour=np.asarray(neighbour, dtype=float),
            neighbour_abs=np.abs(neighbour) + 1.0,
            roots=np.zeros(2),
            backward=0.0,
        )

    assert _sign_violations(cl, sums([-1.0, -1e-20], [0.0, 0.5, 0.0])) == 0
    assert _sign_violations(cl, sums([-1.0, 1e-3], [0.0, 0.5, 0.0])) == 1
    # within cluster 1 (two classes): flagged iff sum_j X_j Y_j > 1
    assert _sign_violations(cl, sums([-1.0, -1.0], [0.0, 1.25, 0.0])) == 1
    # one-class clusters have no within-cluster entries
    assert _sign_violations(cl, sums([-1.0, -1.0], [9.0, 0.75, 9.0])) == 0


def test_failed_sign_check_gives_no_certificate(monkeypatch):
    monkeypatch.setattr("ucfm_svm.solvers.structured._sign_violations", lambda cl, sums: 2)
    result = structured_solution(Spec.from_loss([10, 10, 1, 1]), route="secular")
    assert result.lower_bound is None and not result.certified
    assert "no certificate" in result.message


@pytest.mark.parametrize("route", ROUTES)
def test_wide_spread_of_d_matches_dense(route):
    """Margins over 5 decades (d_max / d_min = 3e11). Main's dlasd4 on ``d_max I - D`` cost the
    small d_c their relative accuracy (vectors orthonormal to 1.2e-5, embedding norms off by
    1.1e-5) and then refused the certificate; the roots from the unshifted poles and the
    Gu-Eisenstat vector agree with the dense SVD to 6e-12 (its own accuracy for the small
    classes is about eps sqrt(d_max / d_min) ~ 1e-10)."""
    spec = Spec.custom(list(range(1, 31)), margins=list(np.geomspace(1e-5, 1, 30)))
    dense = _dense(spec)
    result = structured_solution(spec, route=route)
    assert result.status == OPTIMAL
    assert result.rel_gap < (1e-12 if route == "secular" else 1e-10)  # as in test_matches_dense
    assert result.objective == pytest.approx(dense["objective"], rel=DENSE_TOL)
    assert result.lower_bound == pytest.approx(class_lower_bound(spec, dense["lam"]), rel=DENSE_TOL)
    np.testing.assert_allclose(
        result.classifier_norms, np.sqrt(np.diag(dense["cg"])), rtol=DENSE_TOL
    )
    np.testing.assert_allclose(
        result.embedding_norms, np.sqrt(np.diag(dense["eg"])), rtol=DENSE_TOL
    )


def test_wide_spread_vectors_orthonormal():
    """Margins and scales over 7 decades each (d_c over 28): the singular vectors are
    orthonormal to working precision (main: 0.87 for the right vectors, an objective off by
    2.5e-7 from the roots near the small d_c). ``W = U S^{1/2}`` and
    ``Hbar = S^{1/2} V^T N^{-1/2}``, so ``W^T W`` and ``Hbar N Hbar^T`` are ``S`` up to the
    orthogonality error (measured 5e-16 here; 1e-13 leaves room for other BLAS). The objective
    of the dense SVD is accurate to about k eps relative (normwise backward stability)."""
    rng = np.random.default_rng(5)
    k = 30
    spec = Spec.custom(
        rng.integers(1, 400, size=k),
        scales=10 ** rng.uniform(-7, 0, size=k),
        margins=10 ** rng.uniform(-7, 0, size=k),
    )
    result = structured_solution(spec, full=True)
    assert result.status == OPTIMAL
    assert result.objective == pytest.approx(_dense(spec)["objective"], rel=1e-13)
    for gram in (result.W.T @ result.W, (result.H_mean * spec.n_vec) @ result.H_mean.T):
        s = np.diag(gram)[: k - 1]
        assert np.all(s > 0)
        scaled = gram[: k - 1, : k - 1] / np.sqrt(np.outer(s, s))
        assert np.abs(scaled - np.eye(k - 1)).max() < 1e-13
    # balanced: ||W e_j||^2 = sum_c n_c (Hbar^T e_j)_c^2 = s_j
    np.testing.assert_allclose(
        np.diag(result.W.T @ result.W)[: k - 1],
        np.diag((result.H_mean * spec.n_vec) @ result.H_mean.T)[: k - 1],
        rtol=1e-13,
    )


def test_backward_error_above_tolerance_gives_no_certificate(monkeypatch):
    """The certificate is conditioned on the recomputed update vector reproducing the true one
    (``max |vhat^2 / v^2 - 1| <= VECTOR_RTOL``); a tolerance below any error refuses it."""
    monkeypatch.setattr("ucfm_svm.solvers.structured.VECTOR_RTOL", -1.0)
    result = structured_solution(Spec.from_loss([10, 10, 1, 1]), route="secular")
    assert result.lower_bound is None and not result.certified
    assert "reproduce the rank-one term" in result.message and "--method theory" in result.message


def test_full_leaves_out_the_embeddings_above_the_budget_and_rebuilds_them(monkeypatch):
    # At k = 8142 the four --full arrays alone are 1.98 GiB; H_mean is a rescaling of W^T.
    from ucfm_svm.solvers import structured

    spec = Spec.from_loss(longtail_counts(40, 100, 500), "ldt", gamma=0.5)
    whole = structured.structured_solution(spec, full=True)
    monkeypatch.setattr(structured, "FULL_EMBEDDINGS_MAX_BYTES", 0)
    lean = structured.structured_solution(spec, full=True)
    assert lean.H_mean is None and "H_mean not built" in lean.message
    assert lean.status == whole.status == "optimal"
    np.testing.assert_array_equal(lean.W, whole.W)
    np.testing.assert_array_equal(lean.embedding_gram, whole.embedding_gram)
    rebuilt = structured.embeddings(spec, lean.W)
    assert np.max(np.abs(rebuilt - whole.H_mean)) <= 1e-14 * np.max(np.abs(whole.H_mean))
    np.testing.assert_allclose(rebuilt.T @ rebuilt, whole.embedding_gram, rtol=0, atol=1e-12)
