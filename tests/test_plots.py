"""Figures: the two routes they draw agree, they state their setting, bad input fails clearly."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from ucfm_svm import Spec, SpecError, longtail_counts, step_counts
from ucfm_svm.analysis import curves
from ucfm_svm.api import solve
from ucfm_svm.geometry import cosines_from_gram
from ucfm_svm.plots import geometry as plots
from ucfm_svm.plots.counts import figure_counts
from ucfm_svm.plots.style import LOSS_STYLES, loss_style

# Curves are the closed form and markers the convex solve, certified to a relative gap <= 1e-6;
# norms and cosines are smooth functions of the Grams, so the two routes must agree to ~1e-6.
ROUTE_TOL = 1e-6


def _lines_and_markers(ax):
    lines = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and len(ln.get_xdata())]
    markers = [ln for ln in ax.get_lines() if ln.get_linestyle() == "None" and len(ln.get_xdata())]
    return lines, markers


def test_ratio_figure_draws_agreeing_routes_and_states_setting():
    losses = [curves.LossSetting("ce"), curves.LossSetting("cdt", gamma=0.5)]
    ratios = [1, 3, 10, 30]
    fig = plots.figure_vs_ratio(curves.ratio_curves(4, 0.5, losses, ratios, ratios), 4)
    assert isinstance(fig, Figure)
    title = fig._suptitle.get_text()
    for text in ("k=4", "rho=0.5", "CE", "CDT (gamma=0.5)", "R"):
        assert text in title
    axes = fig.axes
    assert len(axes) == 8
    for ax in axes:
        assert ax.get_ylabel() and ax.get_title()
        lines, markers = _lines_and_markers(ax)
        assert len(lines) == len(markers) == len(losses)
        for line, mark, setting in zip(lines, markers, losses, strict=True):
            assert line.get_color() == loss_style(setting.loss)["color"]  # one colour per loss
            np.testing.assert_array_equal(line.get_xdata(), mark.get_xdata())
            a, b = np.asarray(line.get_ydata()), np.asarray(mark.get_ydata())
            finite = np.isfinite(b)
            assert np.all(np.abs(a[finite] - b[finite]) <= ROUTE_TOL * np.maximum(1, np.abs(b)))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "CE" in labels and "closed form (theory)" in labels


def test_step_quantities_of_tuned_ldt_are_an_etf():
    # docs/theory.md §6: LDT at gamma = 1/2 (margins ~ n_c^{-1/2}): a simplex ETF of classifiers.
    spec = Spec.from_loss(step_counts(6, 10, 0.5), "ldt", gamma=0.5)
    q = curves.step_quantities(solve(spec, "convex"), 3)["classifiers"]
    assert abs(q["squared norm ratio"] - 1) < ROUTE_TOL
    for key in ("maj-maj", "min-min", "maj-min"):
        assert abs(q[key] + 1 / 5) < ROUTE_TOL


def test_step_quantities_at_r_one_and_single_minority():
    spec = Spec.from_loss(step_counts(4, 1, 0.25), "ce")
    q = curves.step_quantities(solve(spec, "convex"), 3)
    assert abs(q["classifiers"]["squared norm ratio"] - 1) < ROUTE_TOL
    assert np.isnan(q["classifiers"]["min-min"])
    with pytest.raises(SpecError, match="'n_majority'"):
        curves.step_quantities(solve(spec, "convex"), 4)


def test_gamma_figure_marks_and_checks():
    losses = [curves.LossSetting("ldt"), curves.LossSetting("cdt")]
    computed = curves.gamma_curves(4, 10, 0.5, losses, [-0.5, 0, 0.5])
    fig = plots.figure_vs_gamma(computed, 4, marks=[(0.5, "ETF", "ldt")])
    title = fig._suptitle.get_text()
    assert "R=10" in title and "k=4" in title and "LDT" in title
    assert any(ln.get_linestyle() == "--" for ln in fig.axes[0].get_lines())
    with pytest.raises(SpecError, match="'losses'"):
        curves.gamma_curves(4, 10, 0.5, [curves.LossSetting("ce")], [0, 1])
    with pytest.raises(SpecError, match="'marks'"):
        plots.figure_vs_gamma(computed, 4, marks=[(0.5, "x", "vs")])
    with pytest.raises(SpecError, match="'rho'"):
        curves.gamma_curves(4, 10, 0.3, losses, [0, 1])


def test_grams_and_vectors():
    result = solve(Spec.from_loss([10, 10, 1], "ce"), "convex")
    fig = plots.figure_grams(result)
    assert "counts=10,10,1" in fig._suptitle.get_text()
    images = [ax.get_images()[0] for ax in fig.axes if ax.get_images()]
    off = ~np.eye(3, dtype=bool)
    for im, G in zip(images, (result.classifier_gram, result.embedding_gram), strict=True):
        np.testing.assert_allclose(np.asarray(im.get_array())[off], cosines_from_gram(G)[off])
    assert images[0].get_clim() == images[1].get_clim()  # one shared scale
    fig = plots.figure_vectors(result)
    assert len(fig.axes) == 2 and "loss=ce" in fig._suptitle.get_text()
    fig = plots.figure_vectors(solve(Spec.from_loss([10, 10, 1, 1], "ce"), "convex"))
    assert fig.axes[0].name == "3d"
    with pytest.raises(SpecError, match="'k' parameter must be 3 or 4"):
        plots.figure_vectors(solve(Spec.from_loss([3, 3, 1, 1, 1], "ce"), "convex"))


def test_vector_picture_preserves_the_gram():
    # The projection onto the common subspace is an isometry for the k - 1 dimensional span.
    result = solve(Spec.from_loss([10, 10, 1], "cdt", gamma=0.5), "convex")
    fig = plots.figure_vectors(result)
    tips = np.array([t.xy for t in fig.axes[0].texts])
    np.testing.assert_allclose(tips @ tips.T, result.classifier_gram, atol=1e-9)


def test_cli_plot_writes_png_and_pdf(cli, tmp_path):
    code, _, err = cli("plot", "grams", "--counts", "5,5,1", "--out", str(tmp_path / "g"))
    assert code == 0, err
    assert (tmp_path / "g.png").stat().st_size > 0 and (tmp_path / "g.pdf").stat().st_size > 0
    code, _, err = cli(
        "plot", "ratio", "--step", "4,10,0.5", "--range", "1,10", "--out", str(tmp_path / "r.png")
    )
    assert code == 0, err
    assert (tmp_path / "r.png").exists() and (tmp_path / "r.pdf").exists()


@pytest.mark.parametrize(
    "flags",
    [
        ["--counts", "10,-1"],
        ["--step", "4,10,0.3"],
        ["--counts", "5,1", "--loss", "cdt"],
        ["--counts", "5,1", "--loss", "nope"],
        ["--counts", "5,1", "--dim", "0"],
        ["--counts", "5,1", "--scales", "1,-2"],
    ],
)
def test_cli_plot_bad_spec_fails_like_solve(cli, tmp_path, flags):
    code_s, _, err_s = cli("solve", *flags)
    code_p, _, err_p = cli("plot", "grams", *flags, "--out", str(tmp_path / "x"))
    assert code_s == code_p == 2
    assert err_p.replace("ucfm-svm plot", "ucfm-svm solve") == err_s
    assert err_p.count("\n") == 1 and "Traceback" not in err_p
    assert not (tmp_path / "x.png").exists()


def test_cli_plot_kind_specific_errors(cli, tmp_path):
    code, _, err = cli("plot", "ratio", "--counts", "10,1", "--out", str(tmp_path / "x"))
    assert code == 2 and "--step" in err and "--longtail" in err
    code, _, err = cli(
        "plot", "gamma", "--step", "4,10,0.5", "--losses", "ce", "--out", str(tmp_path / "x")
    )
    assert code == 2 and "--losses" in err
    code, _, err = cli(
        "plot", "ratio", "--step", "4,10,0.5", "--range", "5,2", "--out", str(tmp_path / "x")
    )
    assert code == 2 and "--range" in err


@pytest.mark.parametrize("kind", ["ratio", "grams"])
def test_cli_plot_structured_draws_and_grouped_is_refused(cli, tmp_path, kind):
    # Both were tracebacks: the lean structured result and convex_grouped carry no Grams.
    spec = ["--step", "4,10,0.5"] + (["--range", "1,10"] if kind == "ratio" else [])
    code, _, err = cli("plot", kind, *spec, "--method", "structured", "--out", str(tmp_path / "s"))
    assert code == 0, err
    code, _, err = cli(
        "plot", kind, *spec, "--method", "convex_grouped", "--out", str(tmp_path / "g")
    )
    assert code == 2 and "--method must be a method that returns the Grams" in err
    assert err.count("\n") == 1


def test_cosine_heatmap_at_k_100_has_no_cell_numbers_and_group_separators():
    result = solve(Spec.from_loss(longtail_counts(100, 100, 500), "ce"), "theory")
    fig = plots.figure_grams(result)
    heat = [ax for ax in fig.axes if ax.get_images()]
    assert all(not ax.texts for ax in heat)
    dashed = [ln for ln in heat[0].get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 4  # two boundaries (many|medium|few), horizontal and vertical


def test_counts_curves_and_figure():
    """Norms against counts: the structured lines equal the dense closed form's norms, the
    squared ratios are relative to the head class, one colour per loss."""
    counts = longtail_counts(30, 100, 500)
    losses = [curves.LossSetting("ce"), curves.LossSetting("ldt", gamma=0.5)]
    computed = curves.counts_curves(counts, losses)
    dense = solve(Spec.from_loss(counts, "ldt", gamma=0.5), "theory")
    np.testing.assert_allclose(computed.series[1].classifier_norms, dense.classifier_norms,
                               rtol=1e-10)  # fmt: skip
    np.testing.assert_allclose(computed.series[1].squared_ratio("classifiers"), 1.0, atol=1e-10)
    assert computed.thresholds == (100, 20)
    fig = figure_counts(computed)
    assert len(fig.axes) == 4 and all(ax.get_xscale() == "log" for ax in fig.axes)
    colors = {ln.get_color() for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) > 2}
    assert colors == {LOSS_STYLES["ce"]["color"], LOSS_STYLES["ldt"]["color"]}


def test_cli_plot_counts_and_longtail_ratio(cli, tmp_path):
    code, _, err = cli("plot", "counts", "--longtail", "100,100", "--loss", "ldt", "--gamma",
                       "0.5", "--out", str(tmp_path / "c"))  # fmt: skip
    assert code == 0, err
    pdf = (tmp_path / "c.pdf").read_bytes()
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf  # TrueType fonts, no Type 3
    code, _, err = cli("plot", "ratio", "--longtail", "12,10", "--n-max", "200", "--range",
                       "1,3", "--losses", "ce,cdt", "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 0, err
