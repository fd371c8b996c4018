"""Inverse design (tuning) against the exact geometry and the convex solve."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import rel_fro
from ucfm_svm import Spec, SpecError, geometry, longtail_counts, solve_convex, step_counts
from ucfm_svm.analysis.tuning import etf_margins, target_deviation, tune
from ucfm_svm.groups import class_groups

#: Root finding to machine precision on an exact closed form.
ROOT_TOL = 1e-12
#: The convex solve at 1e-10 gaps reproduces a tuned symmetry to ~1e-8.
SOLVER_TOL = 1e-6


def etf_error(G: np.ndarray) -> float:
    k = G.shape[0]
    norms = geometry.norms_from_gram(G)
    C = geometry.cosines_from_gram(G)
    return max(norms.max() / norms.min() - 1, np.abs(C[~np.eye(k, dtype=bool)] + 1 / (k - 1)).max())


def test_ldt_etf_is_gamma_half_for_step():
    t = tune(step_counts(10, 10, 0.5), "ldt", "etf-classifiers")
    assert t.gamma == pytest.approx(0.5, abs=ROOT_TOL)
    assert t.achieved and t.deviation < 1e-12
    assert etf_error(solve_convex(t.spec).classifier_gram) < SOLVER_TOL


@settings(max_examples=5, deadline=None)
@given(counts=st.lists(st.integers(1, 200), min_size=3, max_size=8))
def test_property_ldt_etf_any_counts(counts):
    """F4: delta_c ~ n_c^{-1/2} (LDT gamma = 1/2) gives ETF classifiers for any counts."""
    if len(set(counts)) == 1:
        counts = [*counts[:-1], counts[-1] + 1]
    t = tune(counts, "ldt", "etf-classifiers")
    assert t.gamma == pytest.approx(0.5, abs=1e-10)
    assert t.achieved
    assert etf_error(solve_convex(t.spec).classifier_gram) < SOLVER_TOL
    margins = etf_margins(counts)
    assert etf_error(solve_convex(Spec.custom(counts, margins=margins)).classifier_gram) < 1e-6


def test_f10_cdt_points():
    """docs/theory.md §6 (k=10, R=10, rho=1/2): CDT gamma = -1/2 equal embedding norms with equal
    maj-maj and min-min cosines -0.16619; gamma = 1/2 self-dual angles."""
    counts = step_counts(10, 10, 0.5)
    emb = tune(counts, "cdt", "equal-embedding-norms")
    assert emb.gamma == pytest.approx(-0.5, abs=ROOT_TOL) and emb.achieved
    r = solve_convex(emb.spec)
    norms = r.embedding_norms
    assert norms.max() / norms.min() - 1 < SOLVER_TOL
    cos = geometry.grouped_cosines(r.embedding_gram, *emb.spec.step_groups())
    assert cos["maj-maj"] == pytest.approx(-0.16619, abs=5e-6)
    assert cos["min-min"] == pytest.approx(cos["maj-maj"], abs=SOLVER_TOL)
    dual = tune(counts, "cdt", "self-dual")
    assert dual.gamma == pytest.approx(0.5, abs=ROOT_TOL) and dual.achieved
    r = solve_convex(dual.spec)
    C_w = geometry.cosines_from_gram(r.classifier_gram)
    C_h = geometry.cosines_from_gram(r.embedding_gram)
    assert np.abs(C_w - C_h).max() < SOLVER_TOL


@pytest.mark.parametrize("loss", ["cdt", "vs", "ldt"])
def test_equal_classifier_norms_step(loss):
    counts = step_counts(6, 5, 1 / 3)
    t = tune(counts, loss, "equal-classifier-norms")
    assert t.achieved
    norms = solve_convex(t.spec).classifier_norms
    assert norms.max() / norms.min() - 1 < SOLVER_TOL
    # the root is isolated: moving gamma breaks the symmetry
    off = Spec.from_loss(counts, loss, gamma=t.gamma + 0.05)
    assert target_deviation(off, "equal-classifier-norms") > 1e-3


def test_target_not_reachable_is_reported():
    """CDT equalizes classifier norms but the angles then are not an ETF."""
    t = tune(step_counts(10, 10, 0.5), "cdt", "etf-classifiers")
    assert not t.achieved and t.deviation > 0.1


def test_many_groups_reports_partial_success():
    """Seven distinct counts, one gamma: embedding norms of all classes cannot all be equal."""
    t = tune([50, 30, 20, 10, 5, 2, 1], "cdt", "equal-embedding-norms")
    assert not t.achieved
    norms = geometry.norms_from_gram(solve_convex(t.spec).embedding_gram)
    assert norms[0] == pytest.approx(norms[-1], rel=SOLVER_TOL)  # the residual's two classes


def test_tuned_spec_matches_preset():
    t = tune(step_counts(4, 3, 0.5), "cdt", "self-dual", dim=5)
    ref = Spec.from_loss(step_counts(4, 3, 0.5), "cdt", gamma=t.gamma, dim=5)
    assert t.spec == ref
    assert rel_fro(solve_convex(t.spec).classifier_gram, solve_convex(ref).classifier_gram) < 1e-9


def test_bad_inputs():
    with pytest.raises(SpecError, match="'loss' parameter must be one of cdt, ldt, vs"):
        tune([3, 1], "ce", "self-dual")
    with pytest.raises(SpecError, match="'target' parameter must be one of etf-classifiers"):
        tune([3, 1], "ldt", "orthogonal")
    with pytest.raises(SpecError, match="'search_range' parameter"):
        tune([3, 1], "ldt", "etf-classifiers", search_range=(1.0, 0.0))
    with pytest.raises(SpecError, match="HIGH - LOW <= 100"):
        # a grid of 4e7 closed forms: ran for minutes and gigabytes before the width limit
        tune([3, 1], "ldt", "etf-classifiers", search_range=(-1e6, 1e6))
    with pytest.raises(SpecError, match="'target' parameter must be reachable"):
        tune([9, 9, 1, 1], "ldt", "etf-classifiers", search_range=(1.0, 2.0))
    with pytest.raises(SpecError, match="holds for every gamma"):
        tune([3, 1], "ldt", "etf-classifiers")  # two classes: always opposite classifiers


def test_cli_tune_prints_gamma(cli):
    code, out, err = cli("tune", "--step", "10,10,0.5", "--loss", "ldt", "--target",
                         "etf-classifiers")  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0] == "gamma = 0.5"
    assert "met" in out and "-0.111111" in out


def test_cli_tune_exit_codes(cli):
    code, out, _ = cli("tune", "--step", "10,10,0.5", "--loss", "cdt", "--target",
                       "etf-classifiers")  # fmt: skip
    assert code == 1 and "NOT met" in out
    code, _, err = cli("tune", "--counts", "3,1", "--loss", "ldt", "--gamma", "1", "--target",
                       "self-dual")  # fmt: skip
    assert code == 2 and "--gamma must be left unset" in err
    code, _, err = cli("tune", "--counts", "4,1,1", "--loss", "ldt", "--tau", "1", "--target",
                       "self-dual")  # fmt: skip
    assert code == 2 and "--tau must be left unset for loss 'ldt'" in err
    code, _, err = cli("tune", "--counts", "4,1,1", "--loss", "vs", "--tau", "x", "--target",
                       "self-dual")  # fmt: skip
    assert code == 2 and "--tau must be a finite number" in err
    code, _, err = cli("tune", "--counts", "3,1", "--target", "self-dual")
    assert code == 2 and "--loss must be one of cdt, ldt, vs" in err


def test_tune_refuses_more_classes_than_the_dense_closed_form_takes():
    # It used to start hundreds of dense k x k SVDs (seconds each at k = 2000) and then fail
    # at the final solve_theory, which refuses k > DENSE_MAX_K.
    from ucfm_svm.solvers.theory import DENSE_MAX_K

    with pytest.raises(SpecError, match="'counts' parameter must be at most 2000 classes"):
        tune([2] * (DENSE_MAX_K + 1), "cdt", "equal-classifier-norms", method="theory")
    with pytest.raises(SpecError, match="'target' parameter must be a norm target"):
        tune([2] * (DENSE_MAX_K + 1), "cdt", "self-dual", method="structured")


@pytest.mark.parametrize("target", ["equal-group-classifier-norms", "equal-group-embedding-norms"])
def test_group_targets_structured_against_dense(target):
    """Group targets: head and tail groups of equal mean squared norm. The structured route
    (default) and the dense closed form find the same gamma, and the convex solve at that gamma
    shows the equal group norms."""
    counts = longtail_counts(12, 100, 500)
    fast = tune(counts, "cdt", target)
    dense = tune(counts, "cdt", target, method="theory")
    assert fast.method == "structured" and dense.method == "theory"
    assert fast.achieved and dense.achieved
    assert fast.gamma == pytest.approx(dense.gamma, abs=1e-9)
    r = solve_convex(fast.spec)
    norms = r.embedding_norms if "embedding" in target else r.classifier_norms
    groups = class_groups(counts)
    head, tail = groups.members[0], groups.members[-1]
    assert groups.names[0] == "many" and groups.names[-1] == "few"
    assert np.mean(norms[head] ** 2) == pytest.approx(np.mean(norms[tail] ** 2), rel=SOLVER_TOL)


def test_cli_tune_json_and_exit_codes(cli, tmp_path):
    out = tmp_path / "t.json"
    argv = ["--loss", "cdt", "--target", "equal-group-classifier-norms", "--json", str(out)]
    code, text, err = cli("tune", "--longtail", "300,256", "--n-max", "1280", *argv)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["achieved"] and data["method"] == "structured" and data["status"] == "optimal"
    assert set(data["groups"]["classifier_norms"]) == {"many", "medium", "few"}
    code, text, _ = cli("tune", "--step", "10,10,0.5", "--loss", "cdt", "--target",
                        "etf-classifiers", "--json", "-")  # fmt: skip
    assert code == 1 and json.loads(text)["achieved"] is False
