"""Inverse design: the loss hyperparameter that gives the UF-CS-SVM a chosen symmetry.

For given counts and a loss with an exponent ``gamma`` (``cdt``, ``ldt``, ``vs``), find ``gamma``
by root finding on the exact closed-form geometry (docs/theory.md §4,
:func:`ucfm_svm.solvers.theory.closed_form`,
certified by its dual). Targets (:data:`TARGETS`):

- ``etf-classifiers``: classifiers form an exact simplex ETF (equal norms, cosines
  ``-1/(k-1)``). LDT reaches it at ``gamma = 1/2`` for any counts, since its margins are then
  proportional to ``n_c^{-1/2}`` (docs/theory.md §6).
- ``equal-classifier-norms``: all ``||w_c||`` equal.
- ``equal-embedding-norms``: all ``||hbar_c||`` equal (CDT at ``gamma = -1/2`` for STEP k=10,
  R=10, rho=1/2, where also the maj-maj and min-min embedding cosines are equal, -0.16619;
  docs/theory.md §6).
- ``self-dual``: classifiers and embeddings have the same cosine matrix (CDT/VS at
  ``gamma = 1/2``, docs/theory.md §6; observed for every counts tried).

Method: scan ``gamma`` over a grid of the search range, find every sign change of a scalar
residual of the target (log norm ratio of the largest- and smallest-count classes; for
``self-dual`` the cosine difference at the pair of the two smallest classes), refine each by
Brent's method to machine precision, and keep the root where the full target (over all classes
and pairs) is best met. With two groups of classes (STEP) one scalar equation is the whole
target; with more groups a single ``gamma`` may not exist, which :attr:`Tuning.achieved` reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import geometry
from ..errors import SpecError
from ..groups import FEW_BELOW, MANY_ABOVE, Groups, class_groups
from ..solvers.structured import structured_solution
from ..solvers.theory import DENSE_MAX_K, closed_form
from ..spec import LOSSES, Spec
from ..validation import check_counts, check_float, fail
from ..variants.study import certified_grams

#: Target names and what each one asks of the geometry.
TARGETS: dict[str, str] = {
    "etf-classifiers": "classifiers form a simplex ETF (equal norms, cosines -1/(k-1))",
    "equal-classifier-norms": "all classifier norms are equal",
    "equal-embedding-norms": "all class-mean embedding norms are equal",
    "self-dual": "classifiers and embeddings have the same cosines",
    "equal-group-classifier-norms": "the head group (many / majority) and the tail group "
    "(few / minority) have the same mean squared classifier norm",
    "equal-group-embedding-norms": "the head and tail groups have the same mean squared "
    "class-mean embedding norm",
}
#: Targets that need only the norms, so the structured closed form (docs/theory.md §7, O(m^2)
#: per evaluation, no k x k matrix) evaluates them at any k.
NORM_TARGETS = (
    "equal-classifier-norms",
    "equal-embedding-norms",
    "equal-group-classifier-norms",
    "equal-group-embedding-norms",
)
#: Routes that evaluate the geometry: the dense closed form or the structured one.
TUNE_METHODS = ("auto", "theory", "structured")
#: Grid step of the structured route: the log norm ratios it tracks are smooth and monotone in
#: gamma in every case tried, and 13 grid points over the default range (about 20 evaluations
#: with Brent's refinement) keep k = 1000 under a second. Roots closer than this apart merge.
STRUCTURED_GRID_STEP = 0.5
#: Losses with an exponent gamma to tune.
TUNABLE_LOSSES = tuple(name for name, params in LOSSES.items() if "gamma" in params)
#: The full target must hold to this (relative norms spread, absolute cosines): the closed form
#: is exact up to rounding, so a reached target shows ~1e-14.
ACHIEVED_TOL = 1e-9
#: A residual this small on the whole grid means the target holds whatever gamma.
FLAT_TOL = 1e-12
#: Default search range and grid step for gamma.
DEFAULT_RANGE = (-3.0, 3.0)
GRID_STEP = 0.05
#: Widest search range: 2000 grid points (about a second). Wider ranges add nothing: beyond
#: ``|gamma| ~ 700 / log(n_max / n_min)`` the class scales overflow anyway.
MAX_RANGE_WIDTH = 100.0


@dataclass(frozen=True)
class Tuning:
    """Outcome of :func:`tune`.

    Attributes
    ----------
    target, loss : str
    gamma : float
        The tuned exponent (best root found).
    spec : Spec
        The specification at the tuned ``gamma``.
    deviation : float
        How far the full target is from exact at ``gamma`` (norm spread ``max/min - 1``, or the
        largest cosine error).
    achieved : bool
        ``deviation <= ACHIEVED_TOL``.
    roots : tuple of float
        Every root of the scalar residual found in the search range.
    """

    target: str
    loss: str
    gamma: float
    spec: Spec
    deviation: float
    achieved: bool
    roots: tuple[float, ...]
    method: str = "theory"


def target_deviation(spec: Spec, target: str, groups: Groups | None = None) -> float:
    """How far the exact geometry of ``spec`` is from ``target`` (0 when exact).

    ``etf-classifiers``: max of the classifier norm spread and ``max |cos - (-1/(k-1))|``;
    ``equal-*-norms``: ``max ||.|| / min ||.|| - 1``; ``self-dual``: ``max |C_W - C_H|``;
    ``equal-group-*-norms``: ``|sqrt(mean_head ||.||^2 / mean_tail ||.||^2) - 1|`` over the
    ``groups`` (default thresholds when ``None``).
    """
    _check_target(target)
    cw, ch = _grams(spec)
    if target.startswith("equal-group"):
        groups = class_groups(spec.n_vec) if groups is None else groups
        cn, en = geometry.norms_from_gram(cw), geometry.norms_from_gram(ch)
        return _norm_deviation(target, cn, en, groups)
    if target == "equal-classifier-norms":
        return _spread(cw)
    if target == "equal-embedding-norms":
        return _spread(ch)
    if target == "self-dual":
        return float(np.abs(geometry.cosines_from_gram(cw) - geometry.cosines_from_gram(ch)).max())
    k = spec.k
    off = ~np.eye(k, dtype=bool)
    cos_error = np.abs(geometry.cosines_from_gram(cw)[off] + 1.0 / (k - 1)).max()
    return max(_spread(cw), float(cos_error))


def tune(
    counts: object,
    loss: str,
    target: str,
    *,
    search_range: tuple[float, float] = DEFAULT_RANGE,
    dim: int | None = None,
    tau: float | None = None,
    bias: str = "none",
    features: str = "free",
    method: str = "auto",
    many_above: float = MANY_ABOVE,
    few_below: float = FEW_BELOW,
) -> Tuning:
    """The ``gamma`` of ``loss`` that makes the geometry of ``counts`` meet ``target``.

    Parameters
    ----------
    counts : sequence of int
    loss : {"cdt", "ldt", "vs"}
    target : str
        A key of :data:`TARGETS`.
    search_range : (float, float)
        Interval of ``gamma`` scanned (grid step :data:`GRID_STEP`, width at most
        :data:`MAX_RANGE_WIDTH`).
    dim : int or None
        Dimension recorded in the tuned spec (default ``k``).
    tau : float or None
        VS's offset temperature, recorded in the spec (it leaves no trace in the SVM limit).
    bias, features : str
        The model (docs/variants.md); the geometry is then the certified optimum of that model
        (:func:`ucfm_svm.variants.study.certified_grams`).
    method : {"auto", "theory", "structured"}
        How the geometry is evaluated: the dense closed form (``theory``, ``k <= DENSE_MAX_K``,
        every target) or the structured one (``structured``, norm targets only, any ``k``, grid
        step :data:`STRUCTURED_GRID_STEP`);
        ``auto`` takes ``structured`` for norm targets (the two agree to ~1e-15, and the
        structured route is O(m^2) per evaluation instead of O(k^3)), ``theory`` otherwise.
    many_above, few_below : float
        Group thresholds of the ``equal-group-*`` targets (:func:`ucfm_svm.groups.class_groups`).

    Returns
    -------
    Tuning

    Raises
    ------
    SpecError
        Bad arguments, or no root of the target's residual in ``search_range``.
    """
    counts = check_counts("counts", counts)
    if loss not in TUNABLE_LOSSES:
        raise fail("loss", "one of " + ", ".join(TUNABLE_LOSSES) + " (a loss with gamma)", loss)
    _check_target(target)
    route = _route(method, target, counts.size, variant=(bias, features) != ("none", "free"))
    low, high = _check_range(search_range)
    order = np.argsort(-counts, kind="stable")
    big, small = int(order[0]), int(order[-1])
    second = int(order[-2])
    grp = class_groups(counts, many_above, few_below)
    if target.startswith("equal-group") and len(grp.names) < 2:
        raise fail("target", "one with two groups of classes (these counts are balanced)", target)

    def spec_at(gamma: float) -> Spec:
        return Spec.from_loss(counts, loss, gamma=gamma, tau=tau, dim=dim).with_model(
            bias, features
        )

    spec_at(0.0)  # reject bad dim / tau now, not as "unreachable" later
    if route == "structured":
        residual = _norm_residual(target, spec_at, _structured_norms, big, small, grp)
        step = STRUCTURED_GRID_STEP
    elif target in NORM_TARGETS:
        residual = _norm_residual(target, spec_at, _dense_norms, big, small, grp)
        step = GRID_STEP
    else:
        residual = _residual(target, spec_at, big, small, second)
        step = GRID_STEP
    grid = np.arange(low, high + step / 2, step)
    values = []
    for g in grid:
        try:
            values.append(residual(float(g)))
        except SpecError:  # gamma so extreme that a scale overflows
            values.append(np.nan)
    values = np.asarray(values)
    finite = values[np.isfinite(values)]
    if finite.size and np.abs(finite).max() <= FLAT_TOL:
        raise fail(
            "target",
            f"one that depends on gamma for these counts (it holds for every gamma in "
            f"[{low:g}, {high:g}], e.g. two classes always have opposite classifiers)",
            target,
        )
    roots = []
    from scipy.optimize import brentq
    for i in range(grid.size - 1):
        a, b = values[i], values[i + 1]
        if not (np.isfinite(a) and np.isfinite(b)):
            continue
        if a == 0.0:
            roots.append(float(grid[i]))
        elif a * b < 0:
            roots.append(float(brentq(residual, grid[i], grid[i + 1], xtol=1e-15, rtol=1e-15)))
    if np.isfinite(values[-1]) and values[-1] == 0.0:
        roots.append(float(grid[-1]))
    if not roots:
        raise fail(
            "target",
            f"reachable with {loss} for gamma in [{low:g}, {high:g}] (no sign change of its "
            "residual there; widen the range or try another loss)",
            target,
        )
    if route == "structured":
        deviations = [
            _norm_deviation(target, *_structured_norms(spec_at(g)), grp) for g in roots
        ]
    else:
        deviations = [target_deviation(spec_at(g), target, grp) for g in roots]
    best = int(np.argmin(deviations))
    gamma = roots[best]
    return Tuning(
        target=target,
        loss=loss,
        gamma=gamma,
        spec=spec_at(gamma),
        deviation=deviations[best],
        achieved=deviations[best] <= ACHIEVED_TOL,
        roots=tuple(roots),
        method=route,
    )


def etf_margins(counts: object) -> np.ndarray:
    """Margins ``delta_c`` proportional to ``n_c^{-1/2}`` (mean 1): with ``Delta = 1`` they make
    the classifiers an exact simplex ETF for any counts (docs/theory.md §6)."""
    counts = check_counts("counts", counts).astype(float)
    margins = counts**-0.5
    return margins / margins.mean()


def _residual(
    target: str, spec_at: Callable[[float], Spec], big: int, small: int, second: int
) -> Callable[[float], float]:
    def norms_log_ratio(gamma: float, embeddings: bool) -> float:
        cw, ch = _grams(spec_at(gamma))
        G = ch if embeddings else cw
        return 0.5 * float(np.log(G[big, big] / G[small, small]))

    def cosine_difference(gamma: float) -> float:
        cw, ch = (geometry.cosines_from_gram(G) for G in _grams(spec_at(gamma)))
        return float(cw[second, small] - ch[second, small])

    if target == "self-dual":
        return cosine_difference
    embeddings = target == "equal-embedding-norms"
    return lambda gamma: norms_log_ratio(gamma, embeddings)


def _grams(spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """Classifier and class-mean Grams of the exact geometry (closed form; the model variants'
    certified optimum, docs/theory.md §11, §12)."""
    if spec.variant:
        return certified_grams(spec)
    cf = closed_form(spec)
    return cf.classifier_gram(), cf.embedding_gram(spec)


def _route(method: str, target: str, k: int, variant: bool = False) -> str:
    """The evaluation route of :func:`tune` (``method`` resolved), refusing what cannot work.

    The model variants (``variant``) have no structured form: their geometry is the certified
    optimum of docs/theory.md §11, §12 (route ``theory``)."""
    if method not in TUNE_METHODS:
        raise fail("method", "one of " + ", ".join(TUNE_METHODS), method)
    if variant and method == "structured":
        raise fail("method", "auto or theory with --bias free or --features nonnegative", method)
    if method == "auto":
        method = "structured" if target in NORM_TARGETS and not variant else "theory"
    if method == "structured" and target not in NORM_TARGETS:
        raise fail(
            "target",
            "a norm target (" + ", ".join(NORM_TARGETS) + ") with method 'structured'; "
            "cosine targets need method 'theory'",
            target,
        )
    if method == "theory" and k > DENSE_MAX_K:  # hundreds of dense closed forms: refuse now
        raise fail(
            "counts",
            f"at most {DENSE_MAX_K} classes for tune with the dense closed form (norm targets "
            "take method 'structured' at any k)",
            k,
        )
    return method


def _dense_norms(spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    cw, ch = _grams(spec)
    return geometry.norms_from_gram(cw), geometry.norms_from_gram(ch)


def _structured_norms(spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    r = structured_solution(spec)
    return r.classifier_norms, r.embedding_norms


def _norm_residual(
    target: str,
    spec_at: Callable[[float], Spec],
    norms: Callable[[Spec], tuple[np.ndarray, np.ndarray]],
    big: int,
    small: int,
    groups: Groups,
) -> Callable[[float], float]:
    """Scalar residual of a norm target: the log norm ratio of the largest- and smallest-count
    classes, or (``equal-group-*``) ``1/2 log`` of the mean squared norms of the head and tail
    groups. Zero at the target; monotone in gamma in every case tried."""
    embeddings = "embedding" in target
    head, tail = groups.members[0], groups.members[-1]

    def residual(gamma: float) -> float:
        x = norms(spec_at(gamma))[1 if embeddings else 0]
        if target.startswith("equal-group"):
            return 0.5 * float(np.log(np.mean(x[head] ** 2) / np.mean(x[tail] ** 2)))
        return float(np.log(x[big] / x[small]))

    return residual


def _norm_deviation(target: str, cn: np.ndarray, en: np.ndarray, groups: Groups) -> float:
    x = en if "embedding" in target else cn
    if target.startswith("equal-group"):
        head, tail = groups.members[0], groups.members[-1]
        return float(abs(np.sqrt(np.mean(x[head] ** 2) / np.mean(x[tail] ** 2)) - 1.0))
    return float(x.max() / x.min() - 1.0)


def _spread(G: np.ndarray) -> float:
    norms = geometry.norms_from_gram(G)
    return float(norms.max() / norms.min() - 1.0)


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise fail("target", "one of " + ", ".join(TARGETS), target)


def _check_range(search_range: tuple[float, float]) -> tuple[float, float]:
    try:
        low, high = search_range
    except (TypeError, ValueError):
        raise fail("search_range", "two numbers LOW,HIGH with LOW < HIGH", search_range) from None
    low = check_float("search_range", low)
    high = check_float("search_range", high)
    if not GRID_STEP <= high - low <= MAX_RANGE_WIDTH:
        raise fail(
            "search_range",
            f"two numbers LOW,HIGH with {GRID_STEP} <= HIGH - LOW <= {MAX_RANGE_WIDTH:g}",
            search_range,
        )
    return low, high
