"""STEP scalar formulas (docs/theory.md §5) vs the matrix closed form and the convex solve; minority
collapse; the published reference formulas of docs/theory.md §9."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ucfm_svm import Spec, SpecError, geometry, solve_convex, step_counts
from ucfm_svm.solvers.step_theory import (
    ce_minority_collapse,
    step_geometry,
    step_geometry_for_loss,
    step_hyperparameters,
)
from ucfm_svm.solvers.theory import closed_form, optimal_shift
from ucfm_svm.spec import svm_hyperparameters

#: Scalar and matrix closed forms are two exact routes: they agree to float rounding (~1e-13).
FORMULA_TOL = 1e-9
#: Convex solve at 1e-10 gaps: norms and cosines within 1e-6 of the exact values.
SOLVER_TOL = 1e-6

LOSSES = [("ce", None), ("ldt", 0.5), ("ldt", -0.4), ("cdt", 1.0), ("cdt", -0.5), ("vs", 0.3)]


def rhos(k: int) -> list[float]:
    return sorted({j / k for j in (1, k // 4, k // 2, k - 1) if 1 <= j <= k - 1})


def matrix_summary(spec: Spec) -> dict:
    """Norms and grouped cosines of the matrix closed form (majority = first class)."""
    cf = closed_form(spec)
    maj, mino = spec.step_groups()
    out = {"objective": cf.value}
    for side, G in (("w", cf.classifier_gram()), ("h", cf.embedding_gram(spec))):
        norms = geometry.norms_from_gram(G)
        out[side + "_norms"] = (norms[maj[0]], norms[mino[0]])
        out[side + "_cos"] = geometry.grouped_cosines(G, maj, mino)
    return out


def assert_formula_matches(formula, summary: dict, tol: float) -> None:
    assert formula.objective == pytest.approx(summary["objective"], rel=tol)
    np.testing.assert_allclose(formula.classifier_norms, summary["w_norms"], rtol=tol)
    np.testing.assert_allclose(formula.embedding_norms, summary["h_norms"], rtol=tol)
    for side, cos in (("w_cos", formula.classifier_cosines), ("h_cos", formula.embedding_cosines)):
        for key, value in summary[side].items():
            if math.isnan(value):
                assert math.isnan(cos[key])
            else:
                assert cos[key] == pytest.approx(value, abs=tol)


@pytest.mark.parametrize("k", [4, 6, 10, 12])
def test_scalar_formulas_match_matrix_formulas(k):
    """Done-when: k in {4, 6, 10, 12}, several R and rho, CE / LDT / CDT / VS."""
    for R in (1, 2, 7, 10, 100):
        for rho in rhos(k):
            for loss, gamma in LOSSES:
                spec = Spec.from_loss(step_counts(k, R, rho, n_min=3), loss, gamma=gamma)
                if spec.step_groups() is None:  # R = 1 with CE: one group
                    continue
                formula = step_geometry_for_loss(k, R, rho, loss, gamma, n_min=3)
                assert_formula_matches(formula, matrix_summary(spec), FORMULA_TOL)
                t = optimal_shift(spec)
                assert formula.shift == pytest.approx((t[0], t[-1]), rel=1e-12)


@settings(max_examples=5, deadline=None)
@given(
    k=st.integers(3, 12),
    R=st.integers(2, 60),
    j=st.integers(1, 11),
    scales=st.tuples(st.floats(0.3, 3.0), st.floats(0.3, 3.0)),
    margins=st.tuples(st.floats(0.3, 3.0), st.floats(0.3, 3.0)),
)
def test_property_scalar_formulas_match_convex(k, R, j, scales, margins):
    """Any two-valued scales and margins: the scalar formulas against the convex solve."""
    j = min(j, k - 1)
    counts = step_counts(k, R, j / k)
    group = np.array([0] * (k - j) + [1] * j)
    spec = Spec.custom(counts, scales=np.array(scales)[group], margins=np.array(margins)[group])
    formula = step_geometry(k, R, j / k, scales=scales, margins=margins)
    r = solve_convex(spec)
    maj, mino = np.arange(k - j), np.arange(k - j, k)
    summary = {"objective": r.objective}
    for side, G in (("w", r.classifier_gram), ("h", r.embedding_gram)):
        norms = geometry.norms_from_gram(G)
        summary[side + "_norms"] = (norms[0], norms[-1])
        summary[side + "_cos"] = geometry.grouped_cosines(G, maj, mino)
    assert_formula_matches(formula, summary, SOLVER_TOL)


def test_balanced_is_etf():
    g = step_geometry(10, 1.0, 0.5)
    assert g.classifier_cosines == pytest.approx({k: -1 / 9 for k in g.classifier_cosines})
    assert g.classifier_norm_ratio == pytest.approx(1.0)


def test_non_integer_R_is_allowed_and_continuous():
    a, b = step_geometry(6, 7.5, 1 / 3), step_geometry(6, 7.5 + 1e-7, 1 / 3)
    assert abs(a.classifier_norm_ratio - b.classifier_norm_ratio) < 1e-6


def test_hyperparameters_follow_the_spec_presets():
    counts = step_counts(8, 5, 0.25)
    for loss, gamma in LOSSES:
        scales, margins = svm_hyperparameters(counts, loss, gamma)
        pair_s, pair_m = step_hyperparameters(8, 5, 0.25, loss, gamma)
        np.testing.assert_allclose(pair_s, (scales[0], scales[-1]), rtol=1e-14)
        np.testing.assert_allclose(pair_m, (margins[0], margins[-1]), rtol=1e-14)


def test_cdt_shift_closed_form():
    """CDT's two shift values t_g = Delta_g^{-2} / (K1 Delta_1^{-2} + K2 Delta_2^{-2}) are the
    per-class shift of the matrix route (theory.optimal_shift) on the STEP counts."""
    g = step_geometry_for_loss(10, 10, 0.3, "cdt", 0.5)
    t = optimal_shift(Spec.from_loss(step_counts(10, 10, 0.3), "cdt", gamma=0.5))
    np.testing.assert_allclose(t[:7], g.shift[0], rtol=1e-13)
    np.testing.assert_allclose(t[7:], g.shift[1], rtol=1e-13)
    assert 7 * g.shift[0] + 3 * g.shift[1] == pytest.approx(1.0)


def test_ce_minority_collapse():
    """min-min classifier cosine of CE: zero at R* = ((1-rho)^-2 - (1-rho))/rho, positive beyond,
    tending to 1 like rate / sqrt(R); minority embeddings tend to cosines -1/(k_min - 1)."""
    for k, rho in ((10, 0.5), (12, 0.25), (6, 2 / 3)):
        mc = ce_minority_collapse(k, rho)
        q = 1 - rho
        assert mc.threshold_ratio == pytest.approx((q**-2 - q) / rho)
        cos = step_geometry(k, mc.threshold_ratio, rho).classifier_cosines["min-min"]
        assert abs(cos) < 1e-12
        assert step_geometry(k, mc.threshold_ratio * 0.99, rho).classifier_cosines["min-min"] < 0
        assert step_geometry(k, mc.threshold_ratio * 1.01, rho).classifier_cosines["min-min"] > 0
        far = step_geometry(k, 1e12, rho)
        assert (1 - far.classifier_cosines["min-min"]) * 1e6 == pytest.approx(mc.rate, rel=1e-4)
        assert far.embedding_cosines["min-min"] == pytest.approx(mc.embedding_limit, abs=1e-4)
    assert ce_minority_collapse(10, 0.5).threshold_ratio == pytest.approx(7.0)


def test_ce_minority_collapse_against_convex():
    """Independent route: the convex solve at R = 6 and 8 (either side of R* = 7, rho = 1/2)."""
    below = solve_convex(Spec.from_loss(step_counts(4, 6, 0.5)))
    above = solve_convex(Spec.from_loss(step_counts(4, 8, 0.5)))
    assert below.classifier_gram[2, 3] < 0 < above.classifier_gram[2, 3]


def test_f10_symmetric_points():
    """docs/theory.md §6 at k=10, R=10, rho=1/2."""
    ldt = step_geometry_for_loss(10, 10, 0.5, "ldt", 0.5)
    assert ldt.classifier_norm_ratio == pytest.approx(1.0, abs=1e-12)
    for value in ldt.classifier_cosines.values():
        assert value == pytest.approx(-1 / 9, abs=1e-12)
    cdt = step_geometry_for_loss(10, 10, 0.5, "cdt", -0.5)
    assert cdt.embedding_norm_ratio == pytest.approx(1.0, abs=1e-12)
    assert cdt.embedding_cosines["maj-maj"] == pytest.approx(-0.16619, abs=5e-6)
    assert cdt.embedding_cosines["min-min"] == pytest.approx(cdt.embedding_cosines["maj-maj"])
    dual = step_geometry_for_loss(10, 10, 0.5, "cdt", 0.5)
    assert dual.classifier_cosines == pytest.approx(dual.embedding_cosines, abs=1e-12)


# --- docs/theory.md §9: the published reference (github valavakilian/Implicit_geometry) ---
# Values printed by `CDT_geom(R, Delta_maj, Delta_min, k)` and `LDT_geom(...)` of
# process_results/geom_utils.py (commit 01040c3) at k=10, R=10, rho=1/2, with Delta from its
# `normalize_deltas([R]*5 + [1]*5, gamma)` (= our cdt preset). Columns: ||w_maj||^2/||w_min||^2,
# classifier cosines maj-maj, min-min, maj-min, ||h_maj||^2/||h_min||^2, embedding cosines.
PUBLISHED_CDT = {
    -0.5: (5.860169, -0.241080, 0.272706, -0.054625, 1.000000, -0.166186, -0.166186, -0.067051),
    0.0: (2.672100, -0.143953, 0.033369, -0.138681, 0.350829, -0.069702, -0.186746, -0.085434),
    0.25: (1.901395, -0.065066, -0.138804, -0.114721, 0.207122, -0.034967, -0.205462, -0.078290),
    0.5: (1.200000, -0.018519, -0.222222, -0.064150, 0.120000, -0.018519, -0.222222, -0.064150),
    1.0: (0.397590, 0.006610, -0.248980, -0.012944, 0.038832, -0.010360, -0.240694, -0.037778),
}
# Its LDT classifier formulas do not depend on Delta (hence on gamma): the same for every gamma.
PUBLISHED_LDT_CLASSIFIERS = (2.672100, -0.143953, 0.033369, -0.138681)
PUBLISHED_DIGITS = 5e-6  # the values above are rounded to 6 decimals


def as_published(g) -> tuple[float, ...]:
    w, h = g.classifier_cosines, g.embedding_cosines
    return (
        g.classifier_norm_ratio**2, w["maj-maj"], w["min-min"], w["maj-min"],
        g.embedding_norm_ratio**2, h["maj-maj"], h["min-min"], h["maj-min"],
    )  # fmt: skip


@pytest.mark.parametrize("gamma", sorted(PUBLISHED_CDT))
def test_published_cdt_formulas_agree_with_the_svm(gamma):
    ours = as_published(step_geometry_for_loss(10, 10, 0.5, "cdt", gamma))
    np.testing.assert_allclose(ours, PUBLISHED_CDT[gamma], atol=PUBLISHED_DIGITS, rtol=0)
    # and with the convex solve (independent of both closed forms)
    r = solve_convex(Spec.from_loss(step_counts(10, 10, 0.5), "cdt", gamma=gamma))
    wn, hn = r.classifier_norms, r.embedding_norms
    assert (wn[0] / wn[-1]) ** 2 == pytest.approx(PUBLISHED_CDT[gamma][0], abs=1e-5)
    assert (hn[0] / hn[-1]) ** 2 == pytest.approx(PUBLISHED_CDT[gamma][4], abs=1e-5)


def test_published_ldt_classifier_formulas_disagree_with_the_svm():
    """F9: at LDT gamma = 1/2 the SVM (closed form and convex solve) has ETF classifiers,
    ||w_maj||^2/||w_min||^2 = 1.00; the published formula gives 2.67. The published values are
    exactly the CE (gamma = 0) geometry, which LDT only has at gamma = 0."""
    svm = step_geometry_for_loss(10, 10, 0.5, "ldt", 0.5)
    assert svm.classifier_norm_ratio**2 == pytest.approx(1.0, abs=1e-12)
    r = solve_convex(Spec.from_loss(step_counts(10, 10, 0.5), "ldt", gamma=0.5))
    assert (r.classifier_norms[0] / r.classifier_norms[-1]) ** 2 == pytest.approx(1.0, abs=1e-6)
    assert abs(PUBLISHED_LDT_CLASSIFIERS[0] - svm.classifier_norm_ratio**2) > 1.6
    for gamma in (0.25, 0.5, 1.0):
        ours = as_published(step_geometry_for_loss(10, 10, 0.5, "ldt", gamma))[:4]
        assert np.abs(np.subtract(ours, PUBLISHED_LDT_CLASSIFIERS)).max() > 0.05
    ce = as_published(step_geometry_for_loss(10, 10, 0.5, "ldt", 0.0))[:4]
    np.testing.assert_allclose(ce, PUBLISHED_LDT_CLASSIFIERS, atol=PUBLISHED_DIGITS, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 10, "R": 0.5, "rho": 0.5}, "'R' parameter must be a finite number >= 1"),
        ({"k": 10, "R": 2, "rho": 0.33}, "'rho' parameter must be such that rho \\* k"),
        ({"k": 1, "R": 2, "rho": 0.5}, "'k' parameter must be an integer >= 2"),
        ({"k": 4, "R": 2, "rho": 0.5, "scales": (1, -1)}, "'scales' parameter must be two"),
        ({"k": 4, "R": 2, "rho": 0.5, "margins": (1,)}, "'margins' parameter must be two"),
    ],
)
def test_bad_inputs(kwargs, match):
    with pytest.raises(SpecError, match=match):
        step_geometry(**kwargs)


def test_bad_loss_inputs():
    with pytest.raises(SpecError, match="'gamma' parameter must be given for loss 'cdt'"):
        step_hyperparameters(4, 2, 0.5, "cdt")
    with pytest.raises(SpecError, match="'loss' parameter must be one of"):
        step_hyperparameters(4, 2, 0.5, "focal", 1.0)


@pytest.mark.parametrize(
    ("k", "R", "rho", "loss", "gamma"),
    [
        (10, 10, 0.5, "cdt", 17.0),
        (10, 10, 0.5, "cdt", 30.0),
        (12, 100, 0.25, "ldt", 30.0),
        (4, 1000, 0.75, "vs", 15.0),
        (4, 1000, 0.75, "vs", -5.0),
    ],
)
def test_step_scalars_stay_exact_when_the_scales_spread(k, R, rho, loss, gamma):
    """The diagonal of the 2 x 2 matrix, alpha_g (1 - K_g t_g), cancelled when the scales spread
    over many decades (CDT gamma >= 17 at R = 10: norms 10% off; VS 4,1000,0.75 gamma -5: 98%).
    Checked against the structured route (its own certificate, docs/theory.md §14), and with
    the structured --full Grams for the cosines, with no numerical warning."""
    import warnings

    from ucfm_svm.api import solve

    sg = step_geometry_for_loss(k, R, rho, loss, gamma)
    spec = Spec.from_loss(step_counts(k, R, rho), loss, gamma=gamma)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        ref = solve(spec, "structured", full=True)
    assert ref.certified
    for got, want in (
        (sg.classifier_norms, (ref.classifier_norms[0], ref.classifier_norms[-1])),
        (sg.embedding_norms, (ref.embedding_norms[0], ref.embedding_norms[-1])),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-9)
    C = ref.classifier_gram
    cos = C[0, -1] / math.sqrt(C[0, 0] * C[-1, -1])
    assert sg.classifier_cosines["maj-min"] == pytest.approx(cos, abs=1e-9)


def test_theory_escalates_when_40_digits_do_not_resolve_the_singular_values():
    """CDT gamma = 30 on STEP 10,10,0.5: A^T A squares cond(A), so its smallest eigenvalue came
    out at zero in 40 digits and the exact evaluation divided by it (ZeroDivisionError, a
    traceback from ``solve --method theory``); it now repeats at 80 digits and certifies."""
    from ucfm_svm.solvers.theory import solve_theory

    result = solve_theory(Spec.from_loss(step_counts(10, 10, 0.5), "cdt", gamma=30.0))
    assert result.certified
