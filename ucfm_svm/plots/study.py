"""Figure of the digits study (:mod:`ucfm_svm.runs.study`): trained nets against the prediction."""

from __future__ import annotations

from matplotlib.figure import Figure

from .style import loss_style

#: Panels: history key, y label, whether the predicted value is drawn (dashed).
PANELS = (
    ("classifier_distance_to_prediction", "classifier Gram distance\nto prediction", False),
    ("embedding_distance_to_prediction", "class-mean Gram distance\nto prediction", False),
    ("classifier_norm_ratio", "classifier ||w||^2 ratio\nmajority / minority", True),
)


def study_figure(data: dict) -> Figure:
    """One row per imbalance ratio R, one column per panel of :data:`PANELS`, one line per loss.

    ``data`` is the output of :func:`ucfm_svm.runs.study.run_study`. Distances are those of the
    Frobenius-normalized Grams (0 = the predicted geometry); in the norm-ratio panel the dashed
    lines are the UF-CS-SVM predictions in the loss's colour.
    """
    ratios = sorted({run["R"] for run in data["runs"]})
    losses = list(dict.fromkeys(run["loss"] for run in data["runs"]))
    colours = {loss: loss_style(loss)["color"] for loss in losses}
    fig = Figure(figsize=(4.2 * len(PANELS), 2.8 * len(ratios)))
    axes = fig.subplots(len(ratios), len(PANELS), squeeze=False)
    for row, R in zip(axes, ratios, strict=True):
        for run in (r for r in data["runs"] if r["R"] == R):
            epochs = [h["epoch"] for h in run["history"]]
            label = run["loss"] + (f" (gamma {run['gamma']:g})" if run["gamma"] is not None else "")
            for ax, (key, _, predicted) in zip(row, PANELS, strict=True):
                colour = colours[run["loss"]]
                ax.plot(epochs, [h[key] for h in run["history"]], color=colour, label=label)
                if predicted:
                    ax.axhline(run["predicted_" + key], color=colour, ls="--", lw=1)
        for ax, (_, ylabel, _) in zip(row, PANELS, strict=True):
            ax.set_xscale("log")
            ax.set_ylabel(ylabel)
            ax.set_title(f"STEP R = {R:g}", fontsize=9)
            ax.grid(alpha=0.3)
        row[0].set_ylim(bottom=0)
        row[1].set_ylim(bottom=0)
    for ax in axes[-1]:
        ax.set_xlabel("epoch (full batch)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig
