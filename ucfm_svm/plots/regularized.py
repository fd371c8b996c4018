"""Figures of the geometry at finite weight decay (docs/theory.md §13).

They draw what :func:`ucfm_svm.regularized.curve.lambda_curve` returned and never solve. One
colour and marker per loss (:data:`LOSS_STYLE`); the SVM limit of each loss is a dashed line
of its colour; closed-form collapse thresholds are dotted vertical lines. ``matplotlib`` is
imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..regularized.curve import LambdaCurve, cosine_summary
from ..regularized.training import norm_ratio
from ..validation import fail

#: Colour and marker of each loss preset.
LOSS_STYLE = {
    "ce": ("C0", "o"),
    "wce": ("C1", "s"),
    "la": ("C2", "^"),
    "ldam": ("C3", "v"),
    "cdt": ("C4", "D"),
    "ldt": ("C5", "P"),
    "vs": ("C6", "X"),
    "custom": ("C7", "*"),
}


def _check(curves: Sequence[LambdaCurve]) -> list[LambdaCurve]:
    curves = list(curves)
    if not curves or not all(isinstance(c, LambdaCurve) for c in curves):
        raise fail("curves", "a non-empty list of LambdaCurve objects", curves)
    return curves


def _norm_ratio_row(curve: LambdaCurve) -> np.ndarray:
    """Classifier squared-norm ratio per lambda; ``nan`` where a norm is zero (collapse to 0)."""
    out = []
    for row in curve.classifier_norms:
        out.append(norm_ratio(curve.spec, np.diag(row**2)) if row.min() > 0 else np.nan)
    return np.array(out)


def geometry_figure(curves: Sequence[LambdaCurve], *, title: str | None = None) -> object:
    """Norm ratios, cosines and distance to the SVM against ``lambda``, one curve per loss.

    Panels: classifier squared-norm ratio (:func:`~ucfm_svm.regularized.training.norm_ratio`);
    classifier cosines (STEP: maj-maj solid, min-min dashed-dotted, maj-min dotted; otherwise
    the smallest off-diagonal cosine); the same for embeddings; the Gram distance to the SVM.
    Dashed horizontal lines: the SVM values each curve tends to as ``lambda -> 0``.
    """
    from matplotlib.figure import Figure

    curves = _check(curves)
    fig = Figure(figsize=(17, 3.8), layout="constrained")
    ax_r, ax_cw, ax_ch, ax_d = fig.subplots(1, 4)
    for curve in curves:
        color, marker = LOSS_STYLE.get(curve.spec.loss, ("k", "."))
        lam = curve.lambdas
        kw = {"color": color, "marker": marker, "ms": 4}
        ax_r.plot(lam, _norm_ratio_row(curve), "-", label=curve.label(), **kw)
        ax_r.axhline(norm_ratio(curve.spec, curve.svm.classifier_gram), color=color, ls="--",
                     lw=0.8)
        svm_cos = cosine_summary(curve.spec, curve.svm)
        for ax, name in ((ax_cw, "classifiers"), (ax_ch, "embeddings")):
            keys = [key for key in curve.cosines if key.startswith(name)]
            styles = ["-", "-.", ":"]
            for key, ls in zip(keys, styles, strict=False):
                values = curve.cosines[key]
                if np.all(np.isnan(values)):
                    continue
                ax.plot(lam, values, ls, **kw)
                ax.axhline(svm_cos[key], color=color, ls="--", lw=0.6)
        ax_d.plot(lam, curve.distance_to_svm, "-", **kw)
        for th in curve.thresholds:
            if th.closed_form is not None:
                for ax in (ax_r, ax_cw, ax_ch, ax_d):
                    ax.axvline(th.closed_form, color=color, ls=":", lw=0.8)
    for ax, label in (
        (ax_r, "classifier squared-norm ratio"),
        (ax_cw, "classifier cosines"),
        (ax_ch, "embedding cosines"),
        (ax_d, "Gram distance to the SVM"),
    ):
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("lambda = sqrt(lambda_W lambda_H)")
        ax.set_ylabel(label)
    ax_r.set_yscale("log")
    ax_r.legend(fontsize=7)
    fig.suptitle(title or f"{curves[0].spec.source or 'counts'}: certified regularized geometry"
                 f" (bias {curves[0].bias}); dashed: SVM limit, dotted: collapse thresholds")
    return fig


def collapse_figure(curves: Sequence[LambdaCurve], *, title: str | None = None) -> object:
    """Spread of each group of identical classes against ``lambda`` (log scale), with the
    closed-form thresholds (dotted) and, where computed, the bisection's (crosses)."""
    from matplotlib.figure import Figure

    curves = _check(curves)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for curve in curves:
        color, marker = LOSS_STYLE.get(curve.spec.loss, ("k", "."))
        for j, th in enumerate(curve.thresholds):
            spread = np.maximum(curve.spreads[:, j], 1e-17)
            ax.plot(curve.lambdas, spread, "-", color=color, marker=marker, ms=4,
                    label=f"{curve.label()}, classes {th.group[0]}..{th.group[-1]}")
            if th.closed_form is not None:
                ax.axvline(th.closed_form, color=color, ls=":", lw=1)
            if th.bisection is not None:
                ax.plot([th.bisection], [1e-16], "x", color=color, ms=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("lambda = sqrt(lambda_W lambda_H)")
    ax.set_ylabel("group spread ||P_g W Hbar||_2 / ||W Hbar||_2")
    ax.legend(fontsize=7)
    ax.set_title(title or "minority collapse: spread vanishes above the threshold", fontsize=9)
    return fig
