"""The verification module and ``ucfm-svm verify``."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from ucfm_svm import Spec, SpecError, api, step_counts
from ucfm_svm.analysis.verify import (
    GEOMETRY_FLOOR,
    ROUTE_TOLERANCES,
    VerificationReport,
    route_tolerance,
    verify,
)
from ucfm_svm.solvers.theory import solve_theory

LDT_ETF = Spec.from_loss(step_counts(10, 10, 0.5), "ldt", gamma=0.5)


def test_ldt_etf_report():
    report = verify(LDT_ETF, methods=("theory", "convex"))
    assert isinstance(report, VerificationReport)
    assert report.passed, report.to_text()
    assert report.reference == "theory"
    quantities = {(c.quantity, c.route) for c in report.checks}
    for q in ("objective", "classifier gram", "embedding gram", "classifier norms",
              "embedding norms", "classifier cosines", "embedding cosines", "logits"):  # fmt: skip
        assert (q, "convex vs theory") in quantities
    assert ("certificate gap", "theory") in quantities
    assert ("classifier cosines", "step formulas vs theory") in quantities
    w = report.geometry["classifiers"]
    assert w["etf"] and w["etf_cosine"] == pytest.approx(-1 / 9)
    assert w["norm_spread"] < 1e-12
    assert not report.geometry["embeddings"]["etf"]  # ETF angles, norms ~ n_c^{-1/2}
    assert report.geometry["embeddings"]["etf_angles"]
    text = report.to_text()
    assert "simplex ETF: equal norms, every cosine -1/9" in text and "PASSED" in text
    data = json.loads(report.to_json())
    assert data["passed"] is True
    assert {"quantity", "route", "value", "tolerance", "passed"} <= set(data["checks"][0])
    assert data["routes"]["theory"]["status"] == "optimal"


def test_general_spec_without_step_structure():
    spec = Spec.custom([9, 5, 3, 1], scales=[1.5, 1.0, 0.7, 0.4], margins=[0.8, 1.0, 1.2, 2.0])
    report = verify(spec, methods=("convex", "theory"))
    assert report.passed, report.to_text()
    # the reference is the route with the strongest certificate (an exact dual), not the first
    assert report.reference == "theory"
    assert not any(c.route.startswith("step formulas") for c in report.checks)


def fake_method(perturbation: float):
    """A 'method' returning the closed form with W scaled: an independent wrong answer."""

    def method(spec: Spec) -> api.Result:
        r = solve_theory(spec)
        W = r.W * np.linspace(1.0, 1.0 + perturbation, spec.k)[:, None]
        return api.Result.from_point(
            spec, W, r.H_mean, method="fake", level="class", lower_bound=r.lower_bound, seconds=0
        )

    return method


def test_disagreement_fails(monkeypatch, cli):
    """A route off by up to 2% in the classifiers fails the Gram checks, and the CLI exits 1."""
    monkeypatch.setitem(api.METHODS, "fake", fake_method(2e-2))
    report = verify(LDT_ETF, methods=("theory", "fake"))
    assert not report.passed
    failed = {c.quantity for c in report.failures}
    assert {"classifier gram", "classifier norms", "logits"} <= failed
    assert "FAIL" in report.to_text()
    code, out, _ = cli("verify", "--step", "10,10,0.5", "--loss", "ldt", "--gamma", "0.5",
                       "--methods", "theory,fake")  # fmt: skip
    assert code == 3 and "FAILED" in out  # its gap is not closed: not certified


def test_certified_disagreement_exits_1(monkeypatch, cli):
    """A route that claims a closed gap (bound = its own objective) but whose geometry is off:
    every certificate check passes and the comparisons fail, so the CLI exits 1."""
    wrong = fake_method(2e-2)

    def claims_certified(spec: Spec) -> api.Result:
        r = wrong(spec)
        return api.Result.from_point(
            spec, r.W, r.H_mean, method="fake", level="class", lower_bound=r.objective, seconds=0
        )

    monkeypatch.setitem(api.METHODS, "fake", claims_certified)
    code, out, _ = cli("verify", "--step", "10,10,0.5", "--loss", "ldt", "--gamma", "0.5",
                       "--methods", "theory,fake", "--json", "-")  # fmt: skip
    data = json.loads(out)
    assert code == 1 and data["passed"] is False
    failed = {c["quantity"] for c in data["checks"] if not c["passed"]}
    assert "classifier gram" in failed and "certificate gap" not in failed


def test_tolerance_of_other_routes_follows_their_gap(monkeypatch):
    """The fake route reuses the closed form's bound: its gap is its objective error."""
    monkeypatch.setitem(api.METHODS, "fake", fake_method(1e-6))
    report = verify(LDT_ETF, methods=("theory", "fake"))
    fake = report.results["fake"]
    gram = next(c for c in report.checks if c.quantity == "classifier gram")
    assert gram.tolerance == pytest.approx(max(GEOMETRY_FLOOR, 2 * np.sqrt(fake.rel_gap)))
    assert gram.passed and 0 < fake.rel_gap < 1e-6


def test_nonconvex_is_used_when_registered(monkeypatch):
    """Whatever the state of api.METHODS, nonconvex is run when present and skipped if not."""
    report = verify(Spec.from_loss([4, 2, 1]), methods=("theory", "nonconvex"))
    if "nonconvex" in api.METHODS:
        assert "nonconvex" in report.results and report.passed, report.to_text()
    else:
        assert report.skipped and "nonconvex" in report.skipped[0]
    monkeypatch.delitem(api.METHODS, "nonconvex", raising=False)
    report = verify(Spec.from_loss([4, 2, 1]), methods=("theory", "nonconvex"))
    assert report.skipped and report.passed


def test_ill_conditioned_theory_keeps_its_own_tolerance():
    """Scales and margins over 6 decades: the closed form is decided in extended precision
    (docs/theory.md §10.4), so verify judges it by the theory tolerance, not the convex one."""
    spec = Spec.custom(
        [863, 458, 147, 919, 861, 586],
        scales=[0.027, 0.081, 2686.683, 1475.149, 0.001, 0.052],
        margins=[8.987, 0.01, 0.01, 0.011, 39.823, 0.19],
    )
    report = verify(spec, methods=("theory",))
    check = next(c for c in report.checks if c.quantity == "certificate gap")
    assert check.tolerance == ROUTE_TOLERANCES["theory"].objective and check.passed


def test_a_theory_result_from_the_convex_fallback_gets_the_convex_tolerance():
    result = solve_theory(LDT_ETF)
    fallback = dataclasses.replace(result, solver="CLARABEL")
    assert route_tolerance("theory", result) == ROUTE_TOLERANCES["theory"]
    assert route_tolerance("theory", fallback) == ROUTE_TOLERANCES["convex"]


def test_reference_is_never_an_inaccurate_route(monkeypatch):
    """An inaccurate route requested first is compared with, not used as, the reference."""
    def inaccurate(spec, **_):
        return dataclasses.replace(solve_theory(spec), status="inaccurate", solver="SCS")

    monkeypatch.setitem(api.METHODS, "convex", inaccurate)
    report = verify(LDT_ETF, methods=("convex", "structured"))
    assert report.reference == "structured"


def test_default_routes_follow_the_size():
    from ucfm_svm.analysis.verify import default_methods
    from ucfm_svm.spec import dataset_counts

    assert default_methods(LDT_ETF) == (("auto", "convex", "nonconvex"), ())
    run, left = default_methods(Spec.from_loss(dataset_counts("cifar100-lt"), "ce"))
    assert run == ("auto", "theory") and len(left) == 2
    report = verify(Spec.from_loss(dataset_counts("cifar100-lt"), "ce"))
    assert report.passed and report.reference == "structured" and len(report.skipped) == 2


def test_bad_methods():
    with pytest.raises(SpecError, match="'methods' parameter must be names among"):
        verify(LDT_ETF, methods=("theory", "magic"))
    with pytest.raises(SpecError, match="'methods' parameter must be a non-empty list"):
        verify(LDT_ETF, methods=())
    with pytest.raises(SpecError, match="'options' parameter"):
        verify(LDT_ETF, methods=("theory",), options={"convex": {"solver": "SCS"}})


def test_cli_verify_ldt_etf(cli, tmp_path):
    """Done-when: exits 0 and reports classifiers forming an ETF (equal norms, cosines -1/9)."""
    path = tmp_path / "report.json"
    code, out, err = cli("verify", "--step", "10,10,0.5", "--loss", "ldt", "--gamma", "0.5",
                         "--json", str(path))  # fmt: skip
    assert code == 0, out + err
    assert "simplex ETF: equal norms, every cosine -1/9 = -0.111111" in out
    data = json.loads(path.read_text())
    assert data["passed"] and data["geometry"]["classifiers"]["etf"]


def test_cli_verify_bad_input(cli):
    code, _, err = cli("verify", "--counts", "3,1", "--methods", "theory,,convex")
    assert code == 2 and "--methods" in err


def test_report_is_frozen():
    report = verify(Spec.from_loss([3, 1]), methods=("theory",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.reference = "x"  # type: ignore[misc]


def test_repeated_method_is_rejected(cli):
    code, _out, err = cli("verify", "--counts", "5,1", "--methods", "theory,theory")
    assert code == 2 and "--methods must be distinct names" in err


def test_structured_and_grouped_routes_are_compared():
    # Both were TypeError tracebacks (no Grams in a lean structured or a grouped result).
    spec = Spec.from_loss(step_counts(4, 10, 0.5), "cdt", gamma=0.5)
    report = verify(spec, ("convex_grouped", "structured", "theory"))
    assert report.passed and report.reference == "structured"  # the first route with Grams
    grouped = {c.quantity for c in report.checks if c.route == "convex_grouped vs structured"}
    assert grouped == {"objective", "classifier norms", "embedding norms"}
    theory = {c.quantity for c in report.checks if c.route == "theory vs structured"}
    # structured --full stores no logits (the closed form): nothing to compare them with
    assert "classifier gram" in theory and "logits" not in theory
    # the grouped route alone: its own checks, nothing to compare, no geometry to describe
    alone = verify(Spec.from_loss([5, 5, 5], "ce"), ("convex_grouped",))
    assert alone.passed and alone.geometry == {}
