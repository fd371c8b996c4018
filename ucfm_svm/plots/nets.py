"""Figures of trained networks against the UF-CS-SVM prediction (:mod:`ucfm_svm.nets`).

They draw what :class:`ucfm_svm.nets.monitor.GeometryMonitor` records and what
:func:`ucfm_svm.nets.study.run_study` returns; nothing is solved here. Colours and markers are
fixed per loss (:data:`LOSS_STYLE`) in every figure; within CDT and LDT the shade follows gamma.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

#: Colour and marker of each loss of the study.
LOSS_STYLE = {
    "ce": ("black", "o"),
    "cdt": ("tab:blue", "s"),
    "ldt": ("tab:red", "^"),
}
_CMAPS = {"cdt": "Blues", "ldt": "Reds"}
#: The 2 x 4 panel figure: (record key, axis label) per column.
PANEL_COLUMNS = (
    ("norm_ratio", r"squared norm ratio $\|\mathrm{maj}\|^2/\|\mathrm{min}\|^2$"),
    ("cos:maj-maj", "cosine maj-maj"),
    ("cos:min-min", "cosine min-min"),
    ("cos:maj-min", "cosine maj-min"),
)
_SIDES = (("classifier", "classifiers"), ("embedding", "class means"))


def _run_colour(run: dict, runs: Sequence[dict]) -> str | tuple:
    loss = run["loss"]
    if loss == "ce" or run["gamma"] is None:
        return LOSS_STYLE.get(loss, ("grey", "o"))[0]
    gammas = sorted({r["gamma"] for r in runs if r["loss"] == loss})
    if len(gammas) == 1:
        return LOSS_STYLE.get(loss, ("grey", "o"))[0]
    pos = gammas.index(run["gamma"]) / max(len(gammas) - 1, 1)
    return colormaps[_CMAPS.get(loss, "Greys")](0.35 + 0.65 * pos)


def _label(run: dict) -> str:
    return run["loss"].upper() + ("" if run["gamma"] is None else f" {run['gamma']:+.2f}")


def monitor_figure(records: Sequence[dict], *, title: str | None = None) -> Figure:
    """Curves of one monitored run against the epoch.

    Panels: Gram distances of classifiers and class means to the prediction (solid) and to the
    simplex ETF (dashed); NC1 and CDNV (log scale); the classifier and class-mean squared-norm
    ratio of the first group over the second, the predicted values dotted (two groups only).
    ``records`` are :class:`~ucfm_svm.nets.monitor.GeometryMonitor` records with an ``epoch``.
    """
    epochs = [r["epoch"] for r in records]
    fig = Figure(figsize=(13, 3.4), layout="constrained")
    ax = fig.subplots(1, 3)
    for side, colour in (("classifier", "tab:blue"), ("embedding", "tab:orange")):
        for target, style in (("prediction", "-"), ("etf", "--")):
            values = [r[f"{side}_distance_to_{target}"] for r in records]
            ax[0].plot(epochs, values, style, color=colour, label=f"{side}, to {target}")
        if records and "norm_ratio" in records[0][f"{side}_groups"]:
            ax[2].plot(
                epochs,
                [r[f"{side}_groups"]["norm_ratio"] for r in records],
                color=colour,
                label=side,
            )
            ax[2].axhline(
                records[0][f"predicted_{side}_groups"]["norm_ratio"],
                color=colour,
                ls=":",
                label=f"{side}, predicted",
            )
    ax[0].set_ylabel("normalized Gram distance")
    ax[0].legend(fontsize=7)
    for key in ("nc1", "cdnv"):
        ax[1].semilogy(epochs, [max(r[key], 1e-12) for r in records], label=key.upper())
    ax[1].legend(fontsize=7)
    ax[2].set_ylabel("squared norm ratio, group 1 / group 2")
    ax[2].legend(fontsize=7)
    for a in ax:
        a.set_xlabel("epoch")
    if title:
        fig.suptitle(title)
    return fig


def panel_figure(study: dict) -> Figure:
    """The paper's 2 x 4 figure: STEP geometry against gamma, closed form and learned.

    Rows: classifiers, class means. Columns: :data:`PANEL_COLUMNS`. Lines: the closed-form CDT
    and LDT curves (``study["curves"]``); horizontal dotted line: CE's closed form; markers: the
    learned values at the last epoch (CE at gamma 0).
    """
    curves = study["curves"]
    fig = Figure(figsize=(16, 7), layout="constrained")
    axes = fig.subplots(2, 4)
    for row, (side, side_title) in zip(axes, _SIDES, strict=True):
        for ax, (key, label) in zip(row, PANEL_COLUMNS, strict=True):
            for loss in ("cdt", "ldt"):
                colour, _ = LOSS_STYLE[loss]
                ax.plot(
                    curves["gamma"],
                    curves[loss][f"{side}:{key}"],
                    color=colour,
                    label=f"{loss.upper()} closed form",
                )
            ax.axhline(
                curves["ce"][f"{side}:{key}"], color="black", ls=":", lw=1, label="CE closed form"
            )
            for loss, (colour, marker) in LOSS_STYLE.items():
                runs = [r for r in study["runs"] if r["loss"] == loss]
                if not runs:
                    continue
                xs = [0.0 if r["gamma"] is None else r["gamma"] for r in runs]
                ys = [r["final"][f"{side}_groups"].get(key) for r in runs]
                ys = [np.nan if y is None else y for y in ys]
                ax.plot(
                    xs,
                    ys,
                    marker,
                    color=colour,
                    mfc="none",
                    ls="none",
                    label=f"{loss.upper()} trained",
                )
            ax.set_xlabel(r"$\gamma$")
            ax.set_ylabel(label)
            ax.set_title(side_title, fontsize=9)
    axes[0, 0].legend(fontsize=7)
    return fig


def distance_figure(study: dict) -> Figure:
    """Classifier and class-mean Gram distances to the prediction (solid) and ETF (dashed).

    One line per run against the epoch; colour per loss, shade by gamma.
    """
    fig = Figure(figsize=(12, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, (side, side_title) in zip(axes, _SIDES, strict=True):
        for run in study["runs"]:
            colour = _run_colour(run, study["runs"])
            epochs = [r["epoch"] for r in run["history"]]
            ax.plot(
                epochs,
                [r[f"{side}_distance_to_prediction"] for r in run["history"]],
                color=colour,
                label=_label(run),
            )
            ax.plot(
                epochs,
                [r[f"{side}_distance_to_etf"] for r in run["history"]],
                "--",
                color=colour,
                lw=0.8,
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel("normalized Gram distance")
        ax.set_title(f"{side_title}: to the prediction (solid), to the ETF (dashed)", fontsize=9)
    if len(study["runs"]) <= 14:
        axes[1].legend(fontsize=6, ncol=2)
    return fig


def accuracy_figure(study: dict, threshold: float = 0.99) -> Figure:
    """Final train accuracy per gamma for each loss, with the convergence threshold."""
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    for loss, (colour, marker) in LOSS_STYLE.items():
        runs = [r for r in study["runs"] if r["loss"] == loss]
        if runs:
            xs = [0.0 if r["gamma"] is None else r["gamma"] for r in runs]
            ax.plot(
                xs,
                [r["train_accuracy"] for r in runs],
                marker,
                color=colour,
                ls="-" if len(runs) > 1 else "none",
                label=loss.upper(),
            )
    ax.axhline(threshold, color="grey", ls=":", label=f"converged ({threshold:g})")
    ax.set_xlabel(r"$\gamma$")
    ax.set_ylabel("train accuracy")
    ax.legend(fontsize=8)
    return fig
