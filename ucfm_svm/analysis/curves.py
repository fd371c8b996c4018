"""Curves the figures draw: the geometry computed along a grid of counts or hyperparameters.

Plot functions (:mod:`ucfm_svm.plots`) only draw what these functions return; every solve
happens here. Quantities (docs/theory.md §1 conventions, §17 groups):

- STEP curves (:func:`ratio_curves`, :func:`gamma_curves`): for classifiers and class means, the
  squared norm ratio ``mean_maj ||x_c||^2 / mean_min ||x_c||^2`` and the mean cosines
  majority-majority, minority-minority, majority-minority; along the imbalance ratio ``R`` or the
  loss exponent ``gamma``. Lines from one route (the closed form), markers from another (the
  certified convex solve), so the figure shows two independent routes agreeing.
- Counts curves (:func:`counts_curves`): per-class norms and squared norm ratios to the head
  class against the class count, for any counts, one curve per loss (structured closed form,
  docs/theory.md §7: any ``k``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import api, geometry
from ..groups import FEW_BELOW, MANY_ABOVE, class_groups
from ..result import Result
from ..spec import LOSSES, Spec, longtail_counts, step_counts
from ..validation import check_float, check_int, fail

#: The two families of vectors, as (key, title) pairs.
FAMILIES = (("classifiers", "classifiers $w_c$"), ("embeddings", r"class means $\bar h_c$"))
#: The four STEP quantities, as (key, axis label) pairs.
QUANTITIES = (
    ("squared norm ratio", r"$\|\mathrm{maj}\|^2 / \|\mathrm{min}\|^2$"),
    ("maj-maj", "cosine majority-majority"),
    ("min-min", "cosine minority-minority"),
    ("maj-min", "cosine majority-minority"),
)


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
    """Squared norm ratio and grouped cosines of a STEP result, the first ``n_majority`` classes
    majority.

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
        sq = np.clip(np.diag(G), 0.0, None)
        values = {"squared norm ratio": float(sq[maj].mean() / sq[mnr].mean())}
        values.update(geometry.grouped_cosines(G, maj, mnr))
        out[key] = values
    return out


def solve_with_grams(spec: Spec, method: str) -> Result:
    """``api.solve(spec, method)`` with both ``k x k`` Grams: ``structured`` is asked for them
    (``full=True``); a method that never returns them (``convex_grouped``) is a ``SpecError``."""
    api.method_options(method)  # raises SpecError for an unknown method
    result = api.solve(spec, method, **({"full": True} if method == "structured" else {}))
    if result.classifier_gram is None or result.embedding_gram is None:
        raise fail(
            "method",
            "a method that returns the Grams (convex, theory, nonconvex, structured)",
            method,
        )
    return result


@dataclass(frozen=True)
class StepSeries:
    """One loss along the grid: ``lines[family][quantity]`` at ``x``, markers at ``marker_x``."""

    loss: str
    label: str
    x: np.ndarray
    lines: dict
    marker_x: np.ndarray | None
    markers: dict | None


@dataclass(frozen=True)
class StepCurves:
    """What :func:`ucfm_svm.plots.geometry.figure_vs_ratio` / ``figure_vs_gamma`` draw."""

    title: str
    xlabel: str
    xlog: bool
    series: tuple[StepSeries, ...]
    line_method: str
    marker_method: str


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


def ratio_curves(
    k: int,
    rho: float,
    losses: Sequence[LossSetting],
    ratios: Sequence[float],
    marker_ratios: Sequence[float] = (),
    *,
    n_min: int = 1,
    line_method: str = "theory",
    marker_method: str = "convex",
    n_max: int | None = None,
) -> StepCurves:
    """Geometry against the imbalance ratio ``R`` (docs/theory.md §5).

    STEP (``n_max`` None): ``(1 - rho) k`` majority classes of ``R n_min`` examples and ``rho k``
    minority classes of ``n_min``; ``R * n_min`` must be whole. Long tail (``n_max`` given):
    ``n_c = int(n_max R^{-c/(k-1)})`` with ``R`` the imbalance factor; the "majority" is the head
    half of the classes (``k - floor(rho k)`` largest counts) and the "minority" the rest, so
    the curves are continuous in ``R``. Lines: ``line_method`` at every ``R`` in ``ratios``;
    markers: ``marker_method`` at ``marker_ratios``.
    """
    losses = _check_losses(losses)
    ratios = _check_grid("ratios", ratios, low=1.0)
    mratios = _check_grid("marker_ratios", marker_ratios, low=1.0) if len(marker_ratios) else None
    if n_max is None:
        def profile(R: float) -> np.ndarray:
            return step_counts(k, R, rho, n_min)

        k_maj = len(profile(ratios[0])) - round(rho * k)
        what = f"STEP k={k}, rho={rho:g}, n_min={n_min}: geometry against the imbalance ratio R"
        xlabel = "imbalance ratio R = n_maj / n_min"
    else:
        def profile(R: float) -> np.ndarray:
            return longtail_counts(k, R, n_max)

        k_maj = k - int(np.floor(rho * k))
        what = (
            f"long tail k={k}, n_max={n_max}: geometry against the imbalance factor IF "
            f"(head {k_maj} classes vs tail {k - k_maj})"
        )
        xlabel = "imbalance factor IF = n_max / n_min"
    series = []
    for setting in losses:
        lines = _curve([setting.spec(profile(R)) for R in ratios], line_method, k_maj)
        markers = None
        if mratios is not None:
            markers = _curve([setting.spec(profile(R)) for R in mratios], marker_method, k_maj)
        series.append(StepSeries(setting.loss, setting.label, ratios, lines, mratios, markers))
    title = f"{what} (losses {', '.join(s.label for s in losses)})"
    return StepCurves(title, xlabel, True, tuple(series), line_method, marker_method)


def gamma_curves(
    k: int,
    R: float,
    rho: float,
    losses: Sequence[LossSetting],
    gammas: Sequence[float],
    marker_gammas: Sequence[float] = (),
    *,
    n_min: int = 1,
    line_method: str = "theory",
    marker_method: str = "convex",
    n_max: int | None = None,
) -> StepCurves:
    """Geometry against the loss exponent ``gamma`` at fixed ``R`` (docs/theory.md §5, §6):
    STEP, or with ``n_max`` the long tail of imbalance factor ``R`` (head half against tail
    half, as in :func:`ratio_curves`).

    Each loss must take ``gamma`` (cdt, ldt, vs); its own ``gamma`` is ignored.
    """
    losses = _check_losses(losses)
    for s in losses:
        if "gamma" not in LOSSES[s.loss]:
            raise fail("losses", "losses that take gamma (cdt, ldt, vs)", s.loss)
    gammas = _check_grid("gammas", gammas)
    mgammas = _check_grid("marker_gammas", marker_gammas) if len(marker_gammas) else None
    if n_max is None:
        counts = step_counts(k, R, rho, n_min)
        k_maj = k - round(rho * k)
        what = f"STEP k={k}, R={R:g}, rho={rho:g}, n_min={n_min}"
    else:
        counts = longtail_counts(k, R, n_max)
        k_maj = k - int(np.floor(rho * k))
        what = f"long tail k={k}, IF={R:g}, n_max={n_max} (head {k_maj} vs tail {k - k_maj})"
    series = []
    for setting in losses:
        lines = _curve([setting.spec(counts, g) for g in gammas], line_method, k_maj)
        markers = None
        if mgammas is not None:
            markers = _curve([setting.spec(counts, g) for g in mgammas], marker_method, k_maj)
        series.append(
            StepSeries(setting.loss, setting.loss.upper(), gammas, lines, mgammas, markers)
        )
    title = (
        f"{what}: geometry against the loss hyperparameter gamma "
        f"(losses {', '.join(s.loss.upper() for s in losses)})"
    )
    return StepCurves(
        title, r"loss hyperparameter $\gamma$", False, tuple(series), line_method, marker_method
    )


@dataclass(frozen=True)
class CountsSeries:
    """One loss: per-class norms and squared norm ratios to the head class (the first class with
    the largest count), with the certificate status of the solve."""

    loss: str
    label: str
    classifier_norms: np.ndarray
    embedding_norms: np.ndarray
    status: str

    def squared_ratio(self, family: str) -> np.ndarray:
        """``||x_c||^2 / ||x_head||^2`` for ``family`` ``"classifiers"`` or ``"embeddings"``."""
        x = self.classifier_norms if family == "classifiers" else self.embedding_norms
        return x**2 / x[0] ** 2  # counts_curves sorts the classes by decreasing count


@dataclass(frozen=True)
class CountsCurves:
    """What :func:`ucfm_svm.plots.counts.figure_counts` draws: counts in decreasing order, one
    series per loss, group thresholds (for separators) and the title."""

    title: str
    counts: np.ndarray
    series: tuple[CountsSeries, ...]
    thresholds: tuple[float, ...]
    method: str


def counts_curves(
    counts: Sequence[int],
    losses: Sequence[LossSetting],
    *,
    method: str = "structured",
    source: str = "",
    many_above: float = MANY_ABOVE,
    few_below: float = FEW_BELOW,
) -> CountsCurves:
    """Per-class norms of the certified optimum for each loss, against the class count.

    ``method`` ``"structured"`` (default; the closed form without ``k x k`` arrays, any ``k``) or
    any method of :data:`ucfm_svm.api.METHODS` that returns norms. Classes are sorted by
    decreasing count. ``thresholds`` holds the many/medium/few boundaries when the counts fall
    into those groups (docs/theory.md §17), else nothing.
    """
    losses = _check_losses(losses)
    counts = np.sort(np.asarray(counts))[::-1]
    series = []
    for setting in losses:
        r = api.solve(setting.spec(counts, source=source), method)
        series.append(
            CountsSeries(
                setting.loss, setting.label, r.classifier_norms, r.embedding_norms, r.status
            )
        )
    grp = class_groups(counts, many_above, few_below)
    thresholds = (many_above, few_below) if grp.convention == "many/medium/few" else ()
    what = source or f"k={counts.size}, counts {counts[0]}..{counts[-1]}"
    title = f"{what}: norms against the class count ({method})"
    return CountsCurves(title, counts, tuple(series), thresholds, method)
