"""Figure of the three models side by side (docs/variants.md): norm ratios against ``R``."""

from __future__ import annotations

from matplotlib.figure import Figure

#: Panel titles by model name of :data:`ucfm_svm.variants.study.MODELS`.
TITLES = {
    "paper": "paper's model (no bias, free features)",
    "free bias": "free classifier bias (§11)",
    "nonnegative": "non-negative features (§12)",
}


def norm_ratio_figure(curves: dict, *, k: int = 10, rho: float = 0.5) -> Figure:
    """One panel per model, one colour per loss; solid lines classifiers, dashed lines class
    means: the squared norm ratio majority / minority against the imbalance ratio ``R``.

    ``curves`` is the output of :func:`ucfm_svm.variants.study.norm_ratio_curves` (computed
    there from certified optima; this function only draws it).
    """
    models = list(curves)
    fig = Figure(figsize=(4.3 * len(models), 3.4))
    axes = fig.subplots(1, len(models), sharey=True, squeeze=False)[0]
    for ax, model in zip(axes, models, strict=True):
        for i, (label, curve) in enumerate(curves[model].items()):
            colour = f"C{i}"
            ax.plot(curve["R"], curve["classifiers"], color=colour, label=f"{label}: classifiers")
            ax.plot(curve["R"], curve["embeddings"], color=colour, ls="--", label=f"{label}: means")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axhline(1.0, color="0.6", lw=0.8)
        ax.set_xlabel("imbalance ratio R")
        ax.set_title(TITLES.get(model, model), fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel(f"||maj||^2 / ||min||^2  (STEP k={k}, rho={rho:g})")
    axes[-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
