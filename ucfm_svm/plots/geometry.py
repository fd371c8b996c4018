"""Figures of the UF-CS-SVM geometry: norms and angles against R and gamma, cosines, vectors.

Every ``figure_*`` function draws what a computation returned (:mod:`ucfm_svm.analysis.curves`
or a :class:`~ucfm_svm.result.Result`) and returns a :class:`matplotlib.figure.Figure` (Agg
canvas, never shown); nothing here solves. The STEP quantities (docs/theory.md §5) are, for
classifiers ``w_c`` and class-mean embeddings ``hbar_c``, the squared norm ratio
``mean_maj ||x_c||^2 / mean_min ||x_c||^2`` and the mean cosines majority-majority,
minority-minority and majority-minority, with simplex-ETF reference lines. Colours and markers
of the losses come from :mod:`ucfm_svm.plots.style`.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from .. import geometry
from ..analysis.curves import FAMILIES, QUANTITIES, StepCurves, StepSeries
from ..groups import class_groups
from ..result import Result
from ..spec import Spec
from ..validation import check_float, fail
from .style import COSINE_CMAP, ETF_LINE, GROUP_LINE, loss_style

_MARK_STYLES = ("--", ":", "-.", (0, (6, 2, 1, 2, 1, 2)))
#: Colours of the individual classes in the vector picture (k <= 4).
_CLASS_COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple")
#: Largest k whose heatmap cells carry their numbers.
ANNOTATE_MAX_K = 10


def _step_panels(
    title: str,
    xlabel: str,
    xlog: bool,
    series: Sequence[StepSeries],
    line_label: str,
    marker_label: str,
    k: int,
    marks: Sequence[tuple[float, str, str]] = (),
) -> Figure:
    """2 x 4 panels (families x quantities); each loss in its colour and marker
    (:func:`ucfm_svm.plots.style.loss_style`); lines and markers."""
    fig = Figure(figsize=(17, 8), layout="constrained")
    axes = fig.subplots(2, 4, sharex=True)
    for s in series:
        label, x, lines, mx, markers = s.label, s.x, s.lines, s.marker_x, s.markers
        style = loss_style(s.loss)
        color, marker = style["color"], style["marker"]
        for r, (fam, _) in enumerate(FAMILIES):
            for c, (q, _) in enumerate(QUANTITIES):
                ax = axes[r, c]
                ax.plot(x, lines[fam][q], color=color, lw=1.8, label=label)
                if markers is not None:
                    ax.plot(
                        mx,
                        markers[fam][q],
                        ls="none",
                        marker=marker,
                        ms=6,
                        mfc="none",
                        mec=color,
                        mew=1.5,
                    )
    for r, (fam, fam_title) in enumerate(FAMILIES):
        for c, (q, qlabel) in enumerate(QUANTITIES):
            ax = axes[r, c]
            ax.grid(True, alpha=0.3)
            if all(np.isnan(s.lines[fam][q]).all() for s in series):
                ax.text(
                    0.5,
                    0.5,
                    "undefined: one class in the group",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="0.4",
                )
            if xlog:
                ax.set_xscale("log")
            if q == "squared norm ratio":
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
                ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
                ax.yaxis.set_minor_formatter(NullFormatter())
                ax.axhline(1.0, **ETF_LINE)  # equal norms
            else:
                ax.axhline(-1.0 / (k - 1), **ETF_LINE)  # simplex ETF
            ax.set_title(f"{fam_title}: {q}", fontsize=11)
            ax.set_ylabel(qlabel)
            if r == 1:
                ax.set_xlabel(xlabel)
    mark_handles = []
    for i, (gamma, label, color) in enumerate(marks):
        ls = _MARK_STYLES[i % len(_MARK_STYLES)]
        for ax in axes.flat:
            ax.axvline(gamma, color=color, lw=1.3, ls=ls, alpha=0.9)
        mark_handles.append(Line2D([], [], color=color, lw=1.3, ls=ls, label=label))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.3", lw=1.8))
    labels.append(line_label)
    handles.append(Line2D([], [], ls="none", marker="o", mfc="none", mec="0.3"))
    labels.append(marker_label)
    handles.append(Line2D([], [], **ETF_LINE))
    labels.append(f"simplex ETF (cos -1/{k - 1}, equal norms)")
    handles += mark_handles
    labels += [h.get_label() for h in mark_handles]
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=min(len(labels), 4),
        fontsize=10,
        frameon=False,
    )
    fig.suptitle(title, fontsize=13)
    return fig


def _route_label(method: str) -> str:
    return {
        "theory": "closed form (theory)",
        "convex": "convex solve (certified)",
        "nonconvex": "non-convex solve",
    }.get(method, method)


def figure_vs_ratio(curves: StepCurves, k: int) -> Figure:
    """Squared norm ratios and cosines of classifiers and class means against the imbalance
    ratio ``R`` (log axis), as computed by :func:`ucfm_svm.analysis.curves.ratio_curves` for
    ``k`` classes."""
    return _step_panels(
        curves.title,
        curves.xlabel,
        curves.xlog,
        curves.series,
        _route_label(curves.line_method),
        _route_label(curves.marker_method),
        k,
    )


def figure_vs_gamma(
    curves: StepCurves, k: int, marks: Sequence[tuple[float, str, str]] = ()
) -> Figure:
    """Squared norm ratios and cosines against the loss exponent ``gamma``
    (:func:`ucfm_svm.analysis.curves.gamma_curves`). ``marks`` are ``(gamma, label, loss)``
    triples drawn as vertical lines in the loss's colour, e.g. the tuned values where the
    geometry is symmetric (docs/theory.md §6)."""
    losses = {s.loss for s in curves.series}
    drawn = []
    for gamma, label, loss in marks:
        if loss not in losses:
            raise fail("marks", "triples (gamma, label, loss) for losses in the figure", loss)
        drawn.append((check_float("marks", gamma), label, loss_style(loss)["color"]))
    return _step_panels(
        curves.title,
        curves.xlabel,
        curves.xlog,
        curves.series,
        _route_label(curves.line_method),
        _route_label(curves.marker_method),
        k,
        drawn,
    )


def _class_labels(spec: Spec) -> list[str]:
    return [f"{c} (n={n})" for c, n in enumerate(spec.counts)]


def _title(result: Result) -> str:
    return f"{result.spec.describe()}; {result.method} ({result.status})"


def figure_grams(result: Result) -> Figure:
    """Cosine heatmaps of the classifiers ``w_c`` and the class means ``hbar_c``.

    Both panels share one symmetric colour scale, set by the largest off-diagonal cosine of
    either panel (the diagonal, always 1, is drawn grey), so that the small cosines of many
    classes (the ETF's ``-1/(k-1)``) stay visible. Classes are in the order of the result;
    dashed lines separate the groups of :func:`ucfm_svm.groups.class_groups` when the classes of
    each group are contiguous (STEP, sorted long tails). Cells carry their numbers only for
    ``k <= ANNOTATE_MAX_K``; class labels are drawn for ``k <= 20``, so ``k = 100`` stays
    readable.
    """
    if result.classifier_gram is None or result.embedding_gram is None:
        raise fail("result", "a result with classifier and embedding Grams", result.status)
    k = result.spec.k
    fig = Figure(figsize=(12, 5.6), layout="constrained")
    axes = fig.subplots(1, 2)
    labels = _class_labels(result.spec)
    bounds = _group_bounds(result.spec)
    grams = (result.classifier_gram, result.embedding_gram)
    cosines = [geometry.cosines_from_gram(G) for G in grams]
    off = ~np.eye(k, dtype=bool)
    vmax = max(float(np.abs(C[off]).max()) for C in cosines) or 1.0
    cmap = mpl.colormaps[COSINE_CMAP].with_extremes(bad="0.6")
    im = None
    for ax, C, name in zip(
        axes,
        cosines,
        (
            r"classifier cosines $\cos(w_c, w_{c'})$",
            r"class-mean cosines $\cos(\bar h_c, \bar h_{c'})$",
        ),
        strict=True,
    ):
        shown = np.where(off, C, np.nan)
        im = ax.imshow(shown, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(name)
        if k <= 20:
            ax.set_xticks(range(k), labels, rotation=90, fontsize=8)
            ax.set_yticks(range(k), labels, fontsize=8)
        for edge in bounds:
            ax.axhline(edge - 0.5, **GROUP_LINE)
            ax.axvline(edge - 0.5, **GROUP_LINE)
        ax.set_xlabel("class")
        ax.set_ylabel("class")
        if k <= ANNOTATE_MAX_K:
            for i in range(k):
                for j in range(k):
                    ax.text(
                        j,
                        i,
                        f"{C[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if off[i, j] and abs(C[i, j]) > 0.6 * vmax else "black",
                    )
    label = f"cosine (black line: simplex ETF -1/{k - 1}; diagonal 1, grey)"
    bar = fig.colorbar(im, ax=list(axes), shrink=0.85, label=label)
    if 1.0 / (k - 1) <= vmax:
        bar.ax.axhline(-1.0 / (k - 1), color="k", lw=1.5)
    fig.suptitle("Cosines: " + _title(result), fontsize=12)
    return fig


def _group_bounds(spec: Spec) -> list[int]:
    """Indices where a new group starts, if every group's classes are contiguous."""
    members = class_groups(spec.n_vec).members
    if len(members) < 2:
        return []
    starts = []
    for idx in members:
        if idx.max() - idx.min() + 1 != idx.size:
            return []
        starts.append(int(idx.min()))
    return sorted(starts)[1:]


def figure_vectors(result: Result) -> Figure:
    """Classifiers ``w_c`` and class means ``hbar_c`` for ``k = 3`` (2-D) or ``k = 4`` (3-D).

    Both families lie in the same ``r <= k - 1`` dimensional subspace of ``R^d`` (docs/theory.md §2:
    ``W = U S^{1/2} Q``, ``Hbar = Q^T S^{1/2} V^T N^{-1/2}``); they are drawn in the coordinates of
    the leading right singular vectors of ``[W; Hbar^T]``, with the same basis in both panels.
    """
    k = result.spec.k
    if k not in (3, 4):
        raise fail("k", "3 or 4 for the vector picture", k)
    if result.W is None or result.H_mean is None:
        raise fail("result", "a result with W and H_mean", result.status)
    dims = k - 1
    stacked = np.vstack([result.W, result.H_mean.T])
    _, _, Vt = np.linalg.svd(stacked, full_matrices=False)
    basis = Vt[:dims].T
    coords = {"classifiers": result.W @ basis, "embeddings": result.H_mean.T @ basis}
    fig = Figure(figsize=(12, 6), layout="constrained")
    kw = {"projection": "3d"} if dims == 3 else {}
    axes = [fig.add_subplot(1, 2, i + 1, **kw) for i in range(2)]
    groups = result.spec.step_groups()
    minority = set(groups[1].tolist()) if groups is not None else set()
    for ax, (fam, fam_title) in zip(axes, FAMILIES, strict=True):
        X = coords[fam]
        lim = 1.15 * float(np.abs(X).max())
        handles = []
        for c in range(k):
            color = _CLASS_COLORS[c]
            style = "--" if c in minority else "-"
            if dims == 2:
                ax.annotate(
                    "",
                    X[c],
                    (0, 0),
                    arrowprops={"arrowstyle": "-|>", "color": color, "lw": 2, "ls": style},
                )
            else:
                ax.quiver(0, 0, 0, *X[c], color=color, lw=2, ls=style, arrow_length_ratio=0.1)
            handles.append(
                Line2D(
                    [],
                    [],
                    color=color,
                    lw=2,
                    ls=style,
                    label=f"class {c} (n={result.spec.counts[c]}, norm {np.linalg.norm(X[c]):.3g})",
                )
            )
        # edges between the tips show the shape of the configuration (a simplex when symmetric)
        for a in range(k):
            for b in range(a + 1, k):
                ax.plot(*np.stack([X[a], X[b]]).T, color="0.75", lw=0.8, ls=":")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        if dims == 2:
            ax.set_aspect("equal")
            ax.axhline(0, color="0.85", lw=0.8)
            ax.axvline(0, color="0.85", lw=0.8)
        else:
            ax.set_zlim(-lim, lim)
            ax.set_box_aspect((1, 1, 1))
            ax.view_init(elev=25, azim=-55)
            ax.set_zlabel("direction 3")
        ax.set_xlabel("direction 1")
        ax.set_ylabel("direction 2")
        ax.set_title(fam_title + (" (minority dashed)" if minority else ""))
        ax.legend(handles=handles, fontsize=9, loc="upper left")
    fig.suptitle("Vectors in their common subspace: " + _title(result), fontsize=12)
    return fig
