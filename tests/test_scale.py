"""Scale: grouped convex program, memory flat in n, no k x k matrix on the lean paths."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from ucfm_svm import Spec
from ucfm_svm.result import OPTIMAL
from ucfm_svm.solvers.convex import solve_convex, solve_convex_grouped
from ucfm_svm.solvers.structured import structured_solution
from ucfm_svm.spec import counts_from_labels, longtail_counts, step_counts

#: Two Clarabel solves run to 1e-10 gaps (ungrouped and grouped) agree to ~1e-9 in the objective;
#: norms come from their points, accurate to ~1e-8.
SOLVER_TOL = 1e-7


def _peak_bytes(fn, *args, **kwargs) -> int:
    tracemalloc.start()
    try:
        fn(*args, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("counts", "loss", "gamma"),
    [
        ((10, 10, 1, 1), "ce", None),
        (tuple(step_counts(10, 10, 0.5, 1)), "cdt", 0.5),
        (tuple(step_counts(10, 5, 0.3, 2)), "ldt", 0.25),
        ((5, 5, 5, 3, 3, 1), "vs", -0.5),
        ((4, 3, 2, 1), "ce", None),  # every group a single class: the plain class level
    ],
)
def test_grouped_equals_ungrouped(counts, loss, gamma):
    spec = Spec.from_loss(counts, loss, gamma=gamma)
    full = solve_convex(spec)
    grouped = solve_convex_grouped(spec)
    assert grouped.status == OPTIMAL
    assert grouped.lower_bound <= grouped.objective + 1e-12
    assert grouped.objective == pytest.approx(full.objective, rel=SOLVER_TOL)
    assert grouped.lower_bound == pytest.approx(full.lower_bound, rel=SOLVER_TOL)
    np.testing.assert_allclose(grouped.classifier_norms, full.classifier_norms, rtol=SOLVER_TOL)
    np.testing.assert_allclose(grouped.embedding_norms, full.embedding_norms, rtol=SOLVER_TOL)


def test_grouped_step_large_k_matches_structured():
    """STEP at k = 2000 is two groups: the convex program stays 2 x 2."""
    spec = Spec.from_loss(step_counts(2000, 10, 0.5, 5), "cdt", gamma=0.25)
    grouped = solve_convex_grouped(spec)
    closed = structured_solution(spec)
    assert grouped.status == OPTIMAL
    assert grouped.objective == pytest.approx(closed.objective, rel=SOLVER_TOL)
    np.testing.assert_allclose(grouped.classifier_norms, closed.classifier_norms, rtol=SOLVER_TOL)
    np.testing.assert_allclose(grouped.embedding_norms, closed.embedding_norms, rtol=SOLVER_TOL)


def test_class_level_memory_flat_in_n():
    """Multiplying every count by 10^4 (n from 22 to 220,000) leaves the peak memory of the
    class-level paths unchanged: nothing of size n is allocated."""
    small = Spec.from_loss((10, 6, 3, 2, 1), "cdt", gamma=0.5)
    large = Spec.from_loss(tuple(10_000 * np.asarray(small.counts)), "cdt", gamma=0.5)
    for fn in (solve_convex, solve_convex_grouped, structured_solution):
        peak_small, peak_large = _peak_bytes(fn, small), _peak_bytes(fn, large)
        assert peak_large < 1.5 * peak_small + 64 * 1024, fn.__name__


def test_structured_memory_linear_in_k():
    """k = 2000 classes of distinct d_c: the lean path stays far below one k x k matrix
    (32 MB); its extra memory is O(k) (module docstring of ucfm_svm.solvers.structured)."""
    k = 2000
    rng = np.random.default_rng(0)
    spec = Spec.custom(np.arange(1, k + 1), margins=np.exp(rng.uniform(-1, 1, size=k)))
    peak = _peak_bytes(structured_solution, spec)
    assert peak < k * k * 8 / 16


def test_labels_file_counts(tmp_path):
    counts = longtail_counts(300, 50, 400)
    labels = np.repeat(np.arange(counts.size), counts)
    np.random.default_rng(1).shuffle(labels)
    np.savetxt(tmp_path / "labels.txt", labels, fmt="%d")
    np.save(tmp_path / "labels.npy", labels)
    for name in ("labels.txt", "labels.npy"):
        np.testing.assert_array_equal(counts_from_labels(tmp_path / name), counts)
    result = structured_solution(Spec.from_loss(counts_from_labels(tmp_path / "labels.npy")))
    assert result.certified


def test_grouped_solver_failure_message_is_one_clean_line(monkeypatch):
    # Every backend failing: the grouped solve used to repeat cvxpy's advice for Python users
    # ("solve with verbose=True ...") where solve_convex already cut it (one shared helper now).
    import cvxpy as cp

    from ucfm_svm.errors import SolverError

    def fail(self, *args, **kwargs):
        raise cp.error.SolverError(
            "Solver 'X' failed. Try another solver, or solve with verbose=True for more info."
        )

    monkeypatch.setattr(cp.Problem, "solve", fail)
    with pytest.raises(SolverError) as info:
        solve_convex_grouped(Spec.from_loss(step_counts(4, 10, 0.5), "ce"))
    message = str(info.value)
    assert "verbose" not in message and message.count("Solver 'X' failed") == 2


@pytest.mark.parametrize("counts", [[5, 5, 5], [7, 7]])
def test_grouped_single_group_matches_closed_form(counts):
    # One group (balanced counts, STEP at R = 1) was a numpy TypeError: the within-group dual
    # came back 2-D. Clarabel gaps here are ~1e-15; its point is accurate to ~1e-8.
    spec = Spec.from_loss(counts, "ce")
    result = solve_convex_grouped(spec)
    closed = structured_solution(spec)
    assert result.status == OPTIMAL
    assert result.objective == pytest.approx(closed.objective, rel=1e-8)
    np.testing.assert_allclose(result.classifier_norms, closed.classifier_norms, rtol=1e-6)
