"""Figures of training trajectories: distance to the SVM geometry and norm ratios.

One curve per loss (:class:`~ucfm_svm.regularized.training.Trajectory`). Panels:

1. classifier-Gram distance to the loss's own SVM geometry against ``lambda`` (path; the axis
   runs from large to small ``lambda``) or against iterations (gradient descent);
2. classifier squared-norm ratio (:func:`~ucfm_svm.regularized.training.norm_ratio`), with the
SVM's value
   as a dashed line of the same colour;
3. path only: the distance against ``1 / log(1/lambda)``, with the fitted line of docs/theory.md §9
   (a straight line through the origin would mean a ``1 / log(1/lambda)`` approach).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..regularized.training import Trajectory, norm_ratio
from ..validation import fail
from .style import loss_style

if TYPE_CHECKING:  # matplotlib is imported where the figure is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def trajectory_figure(trajectories: Sequence[Trajectory], *, title: str | None = None) -> Figure:
    """Distance to the SVM geometry and norm ratio along each trajectory (one curve per loss).

    Parameters
    ----------
    trajectories : sequence of Trajectory
        All of the same kind (all paths, or all gradient-descent runs).
    title : str, optional
        Figure title; default the counts' description and the kind.

    Returns
    -------
    matplotlib.figure.Figure
    """
    trajectories = list(trajectories)
    if not trajectories or not all(isinstance(t, Trajectory) for t in trajectories):
        raise fail("trajectories", "a non-empty list of Trajectory objects", trajectories)
    kinds = {t.kind for t in trajectories}
    if len(kinds) != 1:
        raise fail("trajectories", "trajectories of one kind (path, gd or ngd)", sorted(kinds))
    path = trajectories[0].kind == "path"
    panels = 3 if path else 2
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4.6 * panels, 3.8), layout="constrained")
    axes = fig.subplots(1, panels)
    ax_d, ax_r = axes[0], axes[1]
    for traj in trajectories:
        color = loss_style(traj.spec.loss)["color"]
        x = traj.lambdas if path else traj.iterations
        ax_d.plot(x, traj.distance_to_svm, "o-", color=color, ms=3, label=traj.label())
        ax_r.plot(x, traj.classifier_norm_ratio, "o-", color=color, ms=3, label=traj.label())
        svm_ratio = norm_ratio(traj.spec, traj.svm.classifier_gram)
        ax_r.axhline(svm_ratio, color=color, ls="--", lw=0.8)
        if path:
            _fit_panel(axes[2], traj, color)
    if path:
        top = max(float(t.distance_to_svm[t.lambdas < 1].max(initial=0.0)) for t in trajectories)
        axes[2].set_xlim(left=0.0)
        axes[2].set_ylim(0.0, 1.05 * top if top > 0 else 1.0)
    xlabel = "lambda" if path else "iteration"
    for ax in (ax_d, ax_r):
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        if path:
            ax.invert_xaxis()
        ax.grid(alpha=0.3)
    ax_d.set_yscale("log")
    ax_d.set_ylabel("distance of W W^T to the SVM's")
    ax_r.set_ylabel("classifier squared-norm ratio")
    ax_d.legend(fontsize=7)
    ax_r.set_title("dashed: SVM value", fontsize=8)
    spec = trajectories[0].spec
    kind = {"path": "regularization path", "gd": "gradient descent", "ngd": "normalized GD"}
    if title is None:
        counts = (
            "counts " + ",".join(str(c) for c in spec.counts)
            if spec.k <= 12
            else f"k={spec.k}, n={spec.n}"
        )
        title = f"{spec.source or counts}, d={spec.dim}: {kind[trajectories[0].kind]}"
    fig.suptitle(title)
    return fig


def _fit_panel(ax: Axes, traj: Trajectory, color: str) -> None:
    keep = traj.lambdas < 1
    x = 1.0 / np.log(1.0 / traj.lambdas[keep])
    ax.plot(x, traj.distance_to_svm[keep], "o", color=color, ms=3)
    fit = next((f for f in traj.fits if f.power == 1), None)
    if fit is not None:
        grid = np.linspace(0.0, x.max(), 50)
        ax.plot(grid, fit.intercept + fit.slope * grid, ":", color=color, lw=1)
    ax.set_xlabel("1 / log(1/lambda)")
    ax.set_ylabel("distance (dotted: linear fit)")
    ax.grid(alpha=0.3)
