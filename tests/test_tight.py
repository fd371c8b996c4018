"""The tight-margin reduction (ucfm_svm/solvers/tight.py, docs/theory.md §18) against the
joint route's own bilinear maps, finite differences and the closed form."""

from __future__ import annotations

import numpy as np
import pytest

from ucfm_svm.api import solve
from ucfm_svm.errors import SpecError
from ucfm_svm.result import OPTIMAL
from ucfm_svm.solvers import nonconvex
from ucfm_svm.solvers.coverage import geometry_error
from ucfm_svm.solvers.nonconvex import _Columns, solve_nonconvex
from ucfm_svm.solvers.theory import closed_form
from ucfm_svm.solvers.tight import minimize_tight, tight_point
from ucfm_svm.spec import Spec, longtail_counts, step_counts

#: Scales and margins away from 1 (LDT 1/2 on a STEP profile), with d = k - 1.
SPEC = Spec.from_loss(step_counts(6, 10, 0.5), "ldt", gamma=0.5, dim=5)


def _random_W(spec: Spec, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((spec.k, spec.k - 1))


def test_every_margin_is_tight_and_the_class_means_are_stationary():
    """At any W: all margins equal delta (ratios 1), and with the returned multipliers the
    class means' stationarity ``G + W^T Qs = 0`` holds, where ``Qs`` comes from the joint
    route's own map (``_Columns.weighted``); the W part of the KKT residual is the gradient."""
    W = _random_W(SPEC)
    point = tight_point(SPEC, W)
    cols = _Columns(SPEC, "class")
    G = point.H * cols.s[None, :]
    ratios = cols.ratios(W, G)[cols.mask > 0]
    assert np.max(np.abs(ratios - 1.0)) < 1e-12
    Qs = cols.weighted(point.multipliers * cols.delta[None, :])
    assert np.max(np.abs(G + W.T @ Qs)) < 1e-12 * np.max(np.abs(G))
    assert np.max(np.abs(W + Qs @ G.T - point.gradient)) < 1e-12 * np.max(np.abs(W))


def test_gradient_matches_central_differences():
    """Central differences of the cost along random directions: truncation ``h^2 f''' / 6`` and
    rounding ``eps f / h`` are both ~1e-10 relative at ``h = 1e-5`` here."""
    W = _random_W(SPEC, 1)
    point = tight_point(SPEC, W)
    rng = np.random.default_rng(2)
    for _ in range(3):
        V = rng.standard_normal(W.shape)
        V /= np.linalg.norm(V)
        h = 1e-5
        plus, minus = tight_point(SPEC, W + h * V).cost, tight_point(SPEC, W - h * V).cost
        slope = float(np.sum(point.gradient * V))
        assert (plus - minus) / (2 * h) == pytest.approx(slope, rel=1e-7)


@pytest.mark.parametrize(("loss", "gamma"), [("ce", None), ("cdt", 0.5), ("ldt", -0.5)])
def test_at_the_closed_form_the_gradient_vanishes_and_the_multipliers_agree(loss, gamma):
    spec = Spec.from_loss(longtail_counts(12, 100, 500), loss, gamma=gamma, dim=11)
    cf = closed_form(spec)
    W = cf.U * np.sqrt(cf.s)[None, :]  # balanced factor of A = W Hbar N^{1/2} = U S V^T
    point = tight_point(spec, W)
    assert np.max(np.abs(point.gradient)) < 1e-10 * np.max(np.abs(W))
    assert point.cost == pytest.approx(cf.value, rel=1e-12)
    scale = np.max(np.abs(cf.multipliers))
    assert np.max(np.abs(point.multipliers - cf.multipliers)) < 1e-9 * scale


def test_minimize_from_a_random_start_reaches_the_optimum():
    spec = Spec.from_loss(longtail_counts(30, 100, 500), "cdt", gamma=0.5, dim=29)
    solved = minimize_tight(spec, _random_W(spec) / spec.Delta[:, None])
    assert solved.point.cost == pytest.approx(closed_form(spec).value, rel=1e-12)
    W, H = solved.point.W, solved.point.H
    assert np.max(np.abs(solved.point.gradient)) < 1e-10 * np.max(np.abs(W))
    ref = solve(spec, "theory")
    assert np.allclose(W @ W.T, ref.classifier_gram, rtol=0, atol=1e-10 * np.max(ref.W**2))
    assert np.allclose(H.T @ H, ref.embedding_gram, rtol=0, atol=1e-10 * np.max(ref.H_mean**2))


@pytest.mark.parametrize(
    ("counts", "loss", "gamma"),
    [
        (step_counts(10, 1000, 0.5), "ldt", -1.0),  # class scales 1e3 apart: needs the polish
        (step_counts(10, 1000, 0.5), "cdt", 1.0),
        (step_counts(4, 100, 0.25), "vs", 0.5),
        ((10, 10, 1, 1), "ce", None),
    ],
)
def test_tight_refinement_certifies_objective_and_geometry(counts, loss, gamma):
    spec = Spec.from_loss(counts, loss, gamma=gamma)  # d = k: padded from k - 1
    res = solve(spec, "nonconvex", refinement="tight")
    assert res.status == OPTIMAL, res.message
    assert "tight-margin reduction" in res.message and res.solver.endswith("reduction)")
    error, where = geometry_error(res, solve(spec, "theory"))
    assert error <= 1e-6, where


def test_auto_takes_the_tight_route_at_scale_and_falls_back_to_the_joint_one(monkeypatch):
    spec = Spec.from_loss(longtail_counts(60, 100, 500), "ce")  # (k + k) d = 7200 variables
    res = solve_nonconvex(spec)
    assert res.status == OPTIMAL and "tight" in res.solver, res.message
    original = nonconvex._tight_run

    def uncertified(cols, rng):
        run = original(cols, rng)
        run.lower_bound = 0.0
        return run

    monkeypatch.setattr(nonconvex, "_tight_run", uncertified)
    res = solve_nonconvex(spec)
    assert res.status == OPTIMAL, res.message
    assert res.solver == "L-BFGS" and "refined jointly" in res.message


def test_refinement_is_checked():
    with pytest.raises(SpecError, match="refinement"):
        solve_nonconvex(SPEC, refinement="fast")
    with pytest.raises(SpecError, match=r"refinement.*d >= k - 1"):
        solve_nonconvex(SPEC.with_dim(3), refinement="tight")
    with pytest.raises(SpecError, match="refinement"):  # the examples refined jointly
        solve_nonconvex(Spec.from_loss((10, 10, 1, 1)), level="example", refinement="tight")


def test_cli_refuses_tight_below_k_minus_1(cli):
    code, _, err = cli("solve", "--counts", "10,10,1,1", "--dim", "2", "--method", "nonconvex",
                       "--refinement", "tight")
    assert code == 2
    assert err.count("\n") == 1 and "--refinement" in err and "d >= k - 1" in err


@pytest.mark.slow
def test_k1000_long_tail_certified_with_geometry():
    """Issue 19's k = 1000 case (``--longtail 1000,256 --n-max 1280``, ~2 min one thread)."""
    spec = Spec.from_loss(longtail_counts(1000, 256, 1280), "ce")
    res = solve(spec, "nonconvex")
    assert res.status == OPTIMAL, res.message
    error, where = geometry_error(res, solve(spec, "structured", full=True))
    assert error <= 1e-6, where
