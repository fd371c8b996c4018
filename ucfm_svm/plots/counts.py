"""Norms against the class count: how long-tail papers show the geometry.

:func:`figure_counts` draws what :func:`ucfm_svm.analysis.curves.counts_curves` computed: per
class, the classifier and class-mean norms and their squared ratios to the head class, against
the class count on a log axis; one line (closed form) and marker per loss in the project's
style (:mod:`ucfm_svm.plots.style`), the equal-norm reference of the simplex ETF, and the
many / medium / few thresholds (docs/theory.md §17) as vertical lines.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..analysis.curves import FAMILIES, CountsCurves
from .style import ETF_LINE, GROUP_LINE, loss_style

#: Largest number of classes drawn with a marker on every class (beyond: lines only).
MARKERS_MAX_K = 60


def figure_counts(curves: CountsCurves) -> Figure:
    """2 x 2 panels: norms (top) and squared norm ratios to the head class (bottom), for
    classifiers (left) and class means (right), against the class count (log axis)."""
    fig = Figure(figsize=(11, 8), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    n = curves.counts
    every = max(1, n.size // MARKERS_MAX_K)
    for s in curves.series:
        style = loss_style(s.loss)
        label = s.label + ("" if s.status == "optimal" else f" ({s.status})")
        for col, (fam, _) in enumerate(FAMILIES):
            norms = s.classifier_norms if fam == "classifiers" else s.embedding_norms
            for row, values in enumerate((norms, s.squared_ratio(fam))):
                axes[row, col].plot(
                    n,
                    values,
                    color=style["color"],
                    marker=style["marker"],
                    markevery=every,
                    ms=4,
                    mfc="none",
                    lw=1.5,
                    label=label if (row, col) == (0, 0) else None,
                )
    for col, (_, fam_title) in enumerate(FAMILIES):
        for row, ylabel in enumerate(("norm", r"squared norm ratio $\|x_c\|^2 / \|x_1\|^2$")):
            ax = axes[row, col]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.25)
            ax.set_title(f"{fam_title}: {ylabel.split(' $')[0]}", fontsize=11)
            ax.set_ylabel(ylabel)
            for t in curves.thresholds:
                if n.min() < t < n.max():
                    ax.axvline(t, **GROUP_LINE)
            if row == 1:
                ax.axhline(1.0, **ETF_LINE)
                ax.set_xlabel("examples in the class $n_c$ (head class: largest)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(Line2D([], [], **ETF_LINE))
    labels.append("equal norms (simplex ETF)")
    if curves.thresholds:
        handles.append(Line2D([], [], **GROUP_LINE))
        labels.append("many / medium / few thresholds")
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4),
               frameon=False)  # fmt: skip
    fig.suptitle(curves.title, fontsize=12)
    return fig
