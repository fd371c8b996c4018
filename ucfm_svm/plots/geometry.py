"""Figures of the UF-CS-SVM geometry: norms and angles against R and gamma, Grams, vectors.

Every ``figure_*`` function returns a :class:`matplotlib.figure.Figure` (Agg canvas, never shown).
The STEP quantities plotted (THEORY F6) are, for classifiers ``w_c`` and class-mean embeddings
``hbar_c``:

- the norm ratio ``mean_maj ||x_c|| / mean_min ||x_c||``;
- the mean cosines majority-majority, minority-minority and majority-minority
  (:func:`ucfm_svm.geometry.grouped_cosines`).

Curves are drawn as lines from one route (by default ``"auto"``, the closed form) and as
markers from another (by default the certified convex solve), so that the figure itself shows
the agreement of two independent routes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import api, geometry
from ..result import Result
from ..spec import LOSSES, Spec, step_counts
from ..validation import check_float, check_int, fail

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn, not at package import
    from matplotlib.figure import Figure

#: The two families of vectors, as (key, title) pairs.
FAMILIES = (("classifiers", "classifiers $w_c$"), ("embeddings", r"class means $\bar h_c$"))
#: The four STEP quantities, as (key, axis label) pairs.
QUANTITIES = (
    ("norm ratio", r"norm ratio $\|\mathrm{maj}\| / \|\mathrm{min}\|$"),
    ("maj-maj", "cosine majority-majority"),
    ("min-min", "cosine minority-minority"),
    ("maj-min", "cosine majority-minority"),
)
_COLORS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown")
_MARKERS = ("o", "s", "^", "D", "v", "P")
_MARK_STYLES = ("--", ":", "-.", (0, (6, 2, 1, 2, 1, 2)))


@dataclass(frozen=True)
class LossSetting:
    """A loss preset with its hyperparameters (``gamma`` for cdt/ldt/vs, ``tau`` for la/vs)."""

    loss: str
    gamma: float | None = None
    tau: float | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise fail("loss", "one of " + ", ".join(LOSSES), self.loss)

    @property
    def label(self) -> str:
        """Legend label, e.g. ``"CDT (gamma=0.5)"``."""
        params = [
            f"{name}={getattr(self, name):g}"
            for name in ("gamma", "tau")
            if getattr(self, name) is not None
        ]
        return self.loss.upper() + (f" ({', '.join(params)})" if params else "")

    def spec(self, counts: np.ndarray, gamma: float | None = None, source: str = "") -> Spec:
        """The specification of these counts under this loss (``gamma`` overrides its own)."""
        return Spec.from_loss(
            counts,
            self.loss,
            gamma=self.gamma if gamma is None else gamma,
            tau=self.tau,
            source=source,
        )


def step_quantities(result: Result, n_majority: int) -> dict[str, dict[str, float]]:
    """Norm ratio and grouped cosines of a STEP result, the first ``n_majority`` classes majority.

    Unlike :meth:`Spec.step_groups` this works at ``R = 1`` too (where the groups coincide).
    Returns ``{"classifiers": {...}, "embeddings": {...}}`` keyed by :data:`QUANTITIES`; a
    minority-minority cosine with one minority class is ``nan``.
    """
    k = result.spec.k
    n_majority = check_int("n_majority", n_majority, low=1)
    if n_majority >= k:
        raise fail("n_majority", f"an integer between 1 and k - 1 = {k - 1}", n_majority)
    maj, mnr = np.arange(n_majority), np.arange(n_majority, k)
    out = {}
    for key, G in (("classifiers", result.classifier_gram), ("embeddings", result.embedding_gram)):
        norms = geometry.norms_from_gram(G)
        values = {"norm ratio": float(norms[maj].mean() / norms[mnr].mean())}
        values.update(geometry.grouped_cosines(G, maj, mnr))
        out[key] = values
    return out


def solve_with_grams(spec: Spec, method: str) -> Result:
    """``api.solve(spec, method)`` with both ``k x k`` Grams: ``structured`` is asked for them
    (``full=True``); a method that never returns them (``convex_grouped``) is a ``SpecError``."""
    api.method_options(method)  # raises SpecError for an unknown method
    grams = {"full": True} if method in ("structured", "auto") and spec.certifiable else {}
    result = api.solve(spec, method, **grams)
    if result.classifier_gram is None or result.embedding_gram is None:
        raise fail(
            "method",
            "a method that returns the Grams (convex, theory, nonconvex, structured)",
            method,
        )
    return result


def _curve(specs: Sequence[Spec], method: str, n_majority: int) -> dict[str, dict[str, np.ndarray]]:
    rows = [step_quantities(solve_with_grams(spec, method), n_majority) for spec in specs]
    return {
        fam: {q: np.array([r[fam][q] for r in rows]) for q, _ in QUANTITIES} for fam, _ in FAMILIES
    }


def _check_losses(losses: Sequence[LossSetting]) -> list[LossSetting]:
    losses = list(losses)
    if not losses or not all(isinstance(s, LossSetting) for s in losses):
        raise fail("losses", "a non-empty list of LossSetting", losses)
    return losses


def _check_grid(name: str, values: Sequence[float], low: float | None = None) -> np.ndarray:
    values = [check_float(name, v, low=low) for v in values]
    if not values:
        raise fail(name, "a non-empty list of numbers", values)
    return np.unique(np.asarray(values, dtype=float))


def _step_panels(
    title: str,
    xlabel: str,
    xlog: bool,
    series: list[tuple[str, np.ndarray, dict, np.ndarray | None, dict | None]],
    line_label: str,
    marker_label: str,
    marks: Sequence[tuple[float, str, str]] = (),
) -> Figure:
    """2 x 4 panels (families x quantities); one color per loss; lines and markers."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter
    fig = Figure(figsize=(17, 8), layout="constrained")
    axes = fig.subplots(2, 4, sharex=True)
    for i, (label, x, lines, mx, markers) in enumerate(series):
        color, marker = _COLORS[i % len(_COLORS)], _MARKERS[i % len(_MARKERS)]
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
            if all(np.isnan(lines[fam][q]).all() for _, _, lines, _, _ in series):
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
            if q == "norm ratio":
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
                ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
                ax.yaxis.set_minor_formatter(NullFormatter())
                ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
            else:
                ax.axhline(0.0, color="0.5", lw=0.8, ls=":")
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
        "auto": "closed form (auto: structured)",
        "structured": "closed form (structured)",
        "convex": "convex solve (certified)",
        "nonconvex": "non-convex solve",
    }.get(method, method)


def figure_vs_ratio(
    k: int,
    rho: float,
    losses: Sequence[LossSetting],
    ratios: Sequence[float],
    marker_ratios: Sequence[float] = (),
    *,
    n_min: int = 1,
    line_method: str = "auto",
    marker_method: str = "convex",
) -> Figure:
    """Norm ratios and cosines of classifiers and embeddings against the imbalance ratio ``R``.

    STEP counts (THEORY F6): ``(1 - rho) k`` majority classes of ``R n_min`` examples and
    ``rho k`` minority classes of ``n_min``. Lines: ``line_method`` at every ``R`` in ``ratios``
    (log axis); markers: ``marker_method`` at ``marker_ratios``. ``R * n_min`` must be whole.
    """
    losses = _check_losses(losses)
    ratios = _check_grid("ratios", ratios, low=1.0)
    mratios = _check_grid("marker_ratios", marker_ratios, low=1.0) if len(marker_ratios) else None
    k_maj = len(step_counts(k, ratios[0], rho, n_min)) - round(rho * k)
    series = []
    for setting in losses:
        lines = _curve(
            [setting.spec(step_counts(k, R, rho, n_min)) for R in ratios], line_method, k_maj
        )
        markers = None
        if mratios is not None:
            markers = _curve(
                [setting.spec(step_counts(k, R, rho, n_min)) for R in mratios], marker_method, k_maj
            )
        series.append((setting.label, ratios, lines, mratios, markers))
    title = (
        f"STEP k={k}, rho={rho:g}, n_min={n_min}: geometry against the imbalance ratio R "
        f"(losses {', '.join(s.label for s in losses)})"
    )
    return _step_panels(
        title,
        "imbalance ratio R = n_maj / n_min",
        True,
        series,
        _route_label(line_method),
        _route_label(marker_method),
    )


def figure_vs_gamma(
    k: int,
    R: float,
    rho: float,
    losses: Sequence[LossSetting],
    gammas: Sequence[float],
    marker_gammas: Sequence[float] = (),
    *,
    n_min: int = 1,
    marks: Sequence[tuple[float, str, str]] = (),
    line_method: str = "auto",
    marker_method: str = "convex",
) -> Figure:
    """Norm ratios and cosines against the loss hyperparameter ``gamma`` at fixed STEP ``R``.

    Each loss must take ``gamma`` (cdt, ldt, vs); its own ``gamma`` is ignored. ``marks`` are
    ``(gamma, label, loss name)`` triples drawn as dashed vertical lines in the loss's color,
    e.g. the tuned values where the geometry is symmetric (THEORY F4, F10).
    """
    losses = _check_losses(losses)
    for s in losses:
        if "gamma" not in LOSSES[s.loss]:
            raise fail("losses", "losses that take gamma (cdt, ldt, vs)", s.loss)
    gammas = _check_grid("gammas", gammas)
    mgammas = _check_grid("marker_gammas", marker_gammas) if len(marker_gammas) else None
    counts = step_counts(k, R, rho, n_min)
    k_maj = k - round(rho * k)
    series = []
    for setting in losses:
        lines = _curve([setting.spec(counts, g) for g in gammas], line_method, k_maj)
        markers = None
        if mgammas is not None:
            markers = _curve([setting.spec(counts, g) for g in mgammas], marker_method, k_maj)
        series.append((setting.loss.upper(), gammas, lines, mgammas, markers))
    color_of = {s.loss: _COLORS[i % len(_COLORS)] for i, s in enumerate(losses)}
    drawn = []
    for gamma, label, loss in marks:
        if loss not in color_of:
            raise fail("marks", "triples (gamma, label, loss) for losses in the figure", loss)
        drawn.append((check_float("marks", gamma), label, color_of[loss]))
    title = (
        f"STEP k={k}, R={R:g}, rho={rho:g}, n_min={n_min}: geometry against the loss "
        f"hyperparameter gamma (losses {', '.join(s.loss.upper() for s in losses)})"
    )
    return _step_panels(
        title,
        r"loss hyperparameter $\gamma$",
        False,
        series,
        _route_label(line_method),
        _route_label(marker_method),
        drawn,
    )


def _class_labels(spec: Spec) -> list[str]:
    return [f"{c} (n={n})" for c, n in enumerate(spec.counts)]


def _title(result: Result) -> str:
    return f"{result.spec.describe()}; {result.method} ({result.status})"


def figure_grams(result: Result) -> Figure:
    """Heatmaps of the classifier Gram ``W W^T`` and the class-mean Gram ``Hbar^T Hbar``.

    A diverging color scale centred at zero per panel; entries are printed for ``k <= 10``.
    """
    if result.classifier_gram is None or result.embedding_gram is None:
        raise fail("result", "a result with classifier and embedding Grams", result.status)
    k = result.spec.k
    from matplotlib.figure import Figure
    fig = Figure(figsize=(12, 5.6), layout="constrained")
    axes = fig.subplots(1, 2)
    labels = _class_labels(result.spec)
    for ax, G, name in zip(
        axes,
        (result.classifier_gram, result.embedding_gram),
        (r"classifier Gram $W W^\top$", r"class-mean embedding Gram $\bar H^\top \bar H$"),
        strict=True,
    ):
        vmax = float(np.abs(G).max()) or 1.0
        im = ax.imshow(G, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        fig.colorbar(im, ax=ax, shrink=0.85)
        ax.set_title(name)
        if k <= 20:
            ax.set_xticks(range(k), labels, rotation=90, fontsize=8)
            ax.set_yticks(range(k), labels, fontsize=8)
        ax.set_xlabel("class")
        ax.set_ylabel("class")
        if k <= 10:
            for i in range(k):
                for j in range(k):
                    ax.text(
                        j,
                        i,
                        f"{G[i, j]:.3g}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if abs(G[i, j]) > 0.6 * vmax else "black",
                    )
    fig.suptitle("Gram matrices: " + _title(result), fontsize=12)
    return fig


def figure_vectors(result: Result) -> Figure:
    """Classifiers ``w_c`` and class means ``hbar_c`` for ``k = 3`` (2-D) or ``k = 4`` (3-D).

    Both families lie in the same ``r <= k - 1`` dimensional subspace of ``R^d`` (THEORY F1:
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
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
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
            color = _COLORS[c % len(_COLORS)]
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
