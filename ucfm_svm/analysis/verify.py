"""Verification: solve one specification by independent routes and check that they agree.

:func:`verify` runs each requested method (``theory``: the closed form certified by its dual;
``convex``: the nuclear-norm program; ``nonconvex``: the factored problem, when that method is
registered in :data:`ucfm_svm.api.METHODS`) and checks

- each route's own certificate (relative duality gap) and feasibility (smallest margin ratio);
- each route against the reference route (the one with the strongest certificate, never an
  inaccurate one while another is certified, docs/theory.md §10):
  objective, classifier Gram ``W W^T``, embedding Gram ``Hbar^T Hbar``, both norm vectors, both
  cosine matrices, and the class-level logits ``Zbar``;
- for STEP-like specifications (two groups of identical classes), the scalar formulas of
  :mod:`ucfm_svm.solvers.step_theory` against the reference route's norms and grouped cosines.

Each comparison of two routes uses the larger of their tolerances (:func:`route_tolerance`).
The report also describes the reference geometry (norm spreads, cosines, whether the
classifiers or the embeddings form a simplex ETF).

Usage::

    report = verify(spec, methods=("theory", "convex", "nonconvex"))
    report.passed, report.checks, report.to_text(), report.to_dict()
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import api, geometry
from ..errors import SolverError, TooLargeError
from ..result import (
    CERTIFY_RTOL,
    GEOMETRY_NOT_CERTIFIED,
    NOT_CERTIFIED,
    OPTIMAL,
    Result,
    jsonable,
)
from ..solvers.step_theory import step_geometry
from ..spec import Spec
from ..validation import fail

#: Methods run by default (those that fit the size, :func:`default_methods`). ``auto`` runs the
#: route :func:`ucfm_svm.api.choose_method` picks and is listed under that route's name.
DEFAULT_METHODS = ("auto", "convex", "nonconvex")
#: Estimated seconds above which a default route is left out of :func:`verify` (listed in
#: ``skipped``); a route asked for by name is still run, within its own guards.
DEFAULT_ROUTE_SECONDS = 60.0
#: Largest k at which the default routes include ``nonconvex`` (k = 100 took over 60 s).
DEFAULT_NONCONVEX_MAX_K = 30
#: Largest k at which ``theory`` stands in for a left-out ``convex`` (dense SVD: 0.02 s at
#: k = 100, about 1 s at k = 500).
DEFAULT_THEORY_MAX_K = 500
#: Methods that may be missing from :data:`ucfm_svm.api.METHODS` (skipped, not failed).
OPTIONAL_METHODS = ("nonconvex",)


@dataclass(frozen=True)
class Tolerance:
    """Accuracy of one route: relative error of the objective (and of its certificate gap), and
    error of the geometry (relative Frobenius error of Grams and logits, relative error of norms,
    absolute error of cosines)."""

    objective: float
    geometry: float


#: Accuracy of the routes with a fixed accuracy, keyed by method (``theory`` only when the
#: closed form was certified; a theory result that fell back to the convex solve gets the convex
#: tolerance). Other routes (``nonconvex``) get :func:`route_tolerance` from their own gap.
ROUTE_TOLERANCES: dict[str, Tolerance] = {
    # Exact formula up to one SVD in float64: errors ~1e-14 (measured, k <= 20); its status is
    # optimal only when its float64 error bound (or its extended-precision evaluation) puts
    # the geometry within GEOMETRY_RTOL (docs/theory.md §10).
    "theory": Tolerance(objective=1e-9, geometry=1e-9),
    # The closed form from its secular equation: per-class errors of a few ulps (measured at
    # most 8e-16 against a 60-digit evaluation, docs/theory.md §10).
    "structured": Tolerance(objective=1e-9, geometry=1e-9),
    # Clarabel at 1e-10 gap/feasibility tolerances; measured Gram errors against the closed form
    # ~1e-8 for k <= 20 and objective errors ~1e-10. 1e-6 is the project's Gram tolerance.
    "convex": Tolerance(objective=1e-7, geometry=1e-6),
}
#: Smallest geometry tolerance given to a route judged by its gap.
GEOMETRY_FLOOR = 1e-6

#: Tolerance of the STEP scalar formulas against a route (float rounding only).
STEP_FORMULA_TOL = 1e-9


@dataclass(frozen=True)
class Check:
    """One comparison: ``value`` (an error) must be ``<= tolerance``.

    ``route`` names the route checked (``"convex"``) or the pair compared
    (``"convex vs theory"``); ``note`` explains failures such as a solver error.
    """

    quantity: str
    route: str
    value: float
    tolerance: float
    passed: bool
    note: str = ""

    def to_dict(self) -> dict:
        """JSON-ready dictionary (a non-finite value becomes ``None``)."""
        value = self.value if math.isfinite(self.value) else None
        return {
            "quantity": self.quantity,
            "route": self.route,
            "value": value,
            "tolerance": self.tolerance,
            "passed": self.passed,
            "note": self.note,
        }


@dataclass(frozen=True)
class VerificationReport:
    """Outcome of :func:`verify`.

    Attributes
    ----------
    spec : Spec
    results : dict
        Method name -> :class:`~ucfm_svm.result.Result` of each route that ran.
    reference : str or None
        The route every other one is compared with.
    checks : tuple of Check
    skipped : tuple of str
        Requested methods that are not available (with the reason).
    geometry : dict
        Description of the reference geometry (see :func:`describe_geometry`).
    """

    spec: Spec
    results: dict[str, Result]
    reference: str | None
    checks: tuple[Check, ...]
    skipped: tuple[str, ...] = ()
    geometry: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether every check passed (and there was at least one)."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        """The checks that failed."""
        return tuple(c for c in self.checks if not c.passed)

    def to_dict(self) -> dict:
        """JSON-ready dictionary: spec, passed, reference, checks, skipped, geometry, and a
        short record of each route (status, objective, lower bound, gap, seconds, message)."""
        routes = {
            name: {
                "status": r.status,
                "objective": r.objective,
                "lower_bound": r.lower_bound,
                "rel_gap": r.rel_gap,
                "seconds": r.seconds,
                "solver": r.solver,
                "message": r.message,
            }
            for name, r in self.results.items()
        }
        return {
            "spec": self.spec.to_dict(),
            "passed": self.passed,
            "reference": self.reference,
            "routes": routes,
            "checks": [c.to_dict() for c in self.checks],
            "skipped": list(self.skipped),
            "geometry": self.geometry,
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(jsonable(self.to_dict()), indent=1, allow_nan=False)

    def to_text(self) -> str:
        """Readable report: routes, a table of checks, the reference geometry, the verdict."""
        lines = [f"verification of {self.spec.describe()}"]
        status_width = max([len(r.status) for r in self.results.values()] + [14])
        for name, r in self.results.items():
            gap = "no bound" if r.rel_gap is None else f"rel gap {r.rel_gap:.2e}"
            lines.append(
                f"  {name:<10} {r.status:<{status_width}} objective {r.objective:.10g}  {gap}  "
                f"{r.seconds:.3g} s ({r.solver or '-'})"
            )
        for note in self.skipped:
            lines.append(f"  skipped: {note}")
        lines.append("")
        width = max([len(c.route) for c in self.checks] + [5])
        lines.append(f"  {'quantity':<20} {'route':<{width}} {'error':>10} {'tol':>8}  result")
        for c in self.checks:
            value = f"{c.value:.2e}" if math.isfinite(c.value) else "n/a"
            verdict = "pass" if c.passed else "FAIL"
            note = f"  ({c.note})" if c.note else ""
            lines.append(
                f"  {c.quantity:<20} {c.route:<{width}} {value:>10} {c.tolerance:>8.1e}  "
                f"{verdict}{note}"
            )
        if self.geometry:
            lines.append("")
            lines.append(f"geometry ({self.reference})")
            lines += _geometry_lines(self.geometry)
        lines.append("")
        failed = len(self.failures)
        lines.append(
            f"{'PASSED' if self.passed else 'FAILED'}: {len(self.checks) - failed} of "
            f"{len(self.checks)} checks passed"
        )
        return "\n".join(lines)


def default_methods(spec: Spec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The routes :func:`verify` runs by default at this size, and the ones it leaves out
    (with the reason): ``auto`` always; ``convex`` when its estimate
    (:func:`ucfm_svm.solvers.convex.estimate`) is within :data:`DEFAULT_ROUTE_SECONDS` and the
    memory budget; ``nonconvex`` for ``k <= DEFAULT_NONCONVEX_MAX_K``; ``theory`` (the dense
    float64 evaluation of the closed form, independent of the secular one ``auto`` runs) when
    ``convex`` is left out and ``k <= DEFAULT_THEORY_MAX_K``."""
    from ..solvers import convex

    run, left = ["auto"], []
    if spec.certifiable:
        mem, sec = min(convex.estimate(spec.k, spec.k, name) for name in ("CLARABEL", "SCS"))
        if sec <= DEFAULT_ROUTE_SECONDS and mem <= convex.MEMORY_BUDGET:
            run.append("convex")
        else:
            left.append(f"convex (estimated {sec:.0f} s at k = {spec.k}; ask for it by name)")
            if spec.k <= DEFAULT_THEORY_MAX_K:
                run.append("theory")
    if spec.k <= DEFAULT_NONCONVEX_MAX_K:
        run.append("nonconvex")
    else:
        left.append(f"nonconvex (k = {spec.k} > {DEFAULT_NONCONVEX_MAX_K}; ask for it by name)")
    return tuple(run), tuple(left)


def _strength(name: str, result: Result) -> tuple[int, int]:
    """Sort key of a reference candidate, strongest certificate first: optimal before
    geometry-uncertified before the rest (inaccurate last); then an exact dual (the closed
    form, structured or theory) before a numerical one; then routes with Grams."""
    status = {OPTIMAL: 0, GEOMETRY_NOT_CERTIFIED: 1, NOT_CERTIFIED: 2}.get(result.status, 3)
    exact = name == "structured" or (
        name == "theory" and str(result.solver).startswith("closed form")
    )
    return status, 0 if exact else 1, 0 if result.classifier_gram is not None else 1


def verify(
    spec: Spec,
    methods: Sequence[str] | None = None,
    options: Mapping[str, Mapping[str, object]] | None = None,
) -> VerificationReport:
    """Run ``methods`` on ``spec`` and check that they agree (see the module text).

    Parameters
    ----------
    spec : Spec
        Needs ``d >= k - 1`` for ``theory`` and ``convex``.
    methods : sequence of str or None
        Names in :data:`ucfm_svm.api.METHODS`; ``nonconvex`` is skipped (and listed in
        ``skipped``) if it is not registered, and a route refused as too large for the machine
        is skipped with the reason. ``None``: :func:`default_methods`. The reference is the
        route with the strongest certificate (:func:`_strength`; never an inaccurate one
        while another route is certified), ties going to the first requested.
    options : mapping or None
        Per-method keyword options, e.g. ``{"convex": {"solver": "SCS"}}``.

    Returns
    -------
    VerificationReport
    """
    skipped: list[str] = []
    if methods is None:
        methods, left = default_methods(spec)
        skipped += left
    methods = tuple(methods)
    if not methods:
        raise fail("methods", "a non-empty list of methods", list(methods))
    if len(set(methods)) < len(methods):
        raise fail(
            "methods", "distinct names (a route compared with itself checks nothing)", list(methods)
        )
    options = dict(options or {})
    for name in options:
        if name not in methods:
            raise fail("options", f"keyed by requested methods ({', '.join(methods)})", name)
    results: dict[str, Result] = {}
    checks: list[Check] = []
    for name in methods:
        if name not in api.METHODS:
            if name in OPTIONAL_METHODS:
                skipped.append(f"{name} (not available in this installation)")
                continue
            raise fail("methods", "names among " + ", ".join(api.METHODS), name)
        opts = dict(options.get(name, {}))
        if name in ("structured", "auto") and spec.certifiable and not spec.variant:
            opts.setdefault("full", spec.k <= 2000)  # the Grams, so the geometry is compared
        try:
            result = api.solve(spec, name, **opts)
        except TooLargeError as exc:
            skipped.append(f"{name} ({exc})")
            continue
        except SolverError as exc:
            checks.append(Check("solve", name, math.inf, 0.0, False, note=str(exc)))
            continue
        key = result.method if name == "auto" else name
        if key in results or (key in methods and name == "auto"):
            continue  # auto ran a route that is also requested by name
        results[key] = result
    for name, result in results.items():
        checks += _own_checks(name, result)
    order = sorted(results, key=lambda n: _strength(n, results[n]))
    reference = order[0] if order else None
    if reference is not None:
        ref = results[reference]
        for name, result in results.items():
            if name != reference:
                checks += _pair_checks(name, result, reference, ref)
        if not spec.variant:  # the STEP formulas are the paper's model's
            checks += _step_checks(spec, reference, ref)
    return VerificationReport(
        spec=spec,
        results=results,
        reference=reference,
        checks=tuple(checks),
        skipped=tuple(skipped),
        geometry=(
            describe_geometry(results[reference])
            if reference is not None and results[reference].classifier_gram is not None
            else {}
        ),
    )


def route_tolerance(name: str, result: Result) -> Tolerance:
    """The accuracy expected of ``result`` produced by method ``name``.

    ``theory`` and ``convex``: :data:`ROUTE_TOLERANCES`. Any other route (``nonconvex``, a local
    method stopped at a certified relative gap ``g <= CERTIFY_RTOL``): objective
    ``CERTIFY_RTOL``, geometry ``max(GEOMETRY_FLOOR, 2 sqrt(g))``. Near the unique optimum the
    cost grows quadratically, so a point within ``g`` of the optimum has geometry errors of order
    ``sqrt(g)`` (measured: at most ``0.012 sqrt(g)`` on random k <= 8 cases). Without a bound,
    ``g = CERTIFY_RTOL``.
    """
    closed = str(result.solver).startswith("closed form")
    variant_numerical = result.spec.variant and not closed
    if name == "theory" and not closed and not variant_numerical:
        return ROUTE_TOLERANCES["convex"]  # the closed form fell back to the convex solve
    if name in ROUTE_TOLERANCES and not variant_numerical:
        return ROUTE_TOLERANCES[name]
    # The model variants' numerical routes (docs/theory.md §11, §12; the DNN relaxation is an
    # SDP whose Grams Clarabel meets to ~5e-6 only) are judged by their gap like nonconvex.
    gap = CERTIFY_RTOL if result.rel_gap is None else min(max(result.rel_gap, 0.0), CERTIFY_RTOL)
    return Tolerance(objective=CERTIFY_RTOL, geometry=max(GEOMETRY_FLOOR, 2 * math.sqrt(gap)))


def describe_geometry(result: Result) -> dict:
    """Norms and cosines of a result and whether each side is a simplex ETF.

    Returns a dict with, for ``classifiers`` and ``embeddings``: ``norms`` (list), ``norm_spread``
    (``max/min - 1``), ``cosines`` (grouped ``maj-maj``, ``min-min``, ``maj-min`` for STEP-like
    specs, else ``min``, ``mean``, ``max`` of the off-diagonal), ``etf_cosine`` (``-1/(k-1)``),
    ``etf_error`` (``max |cos + 1/(k-1)|``), ``etf_angles`` (that error below the route's geometry
    tolerance) and ``etf`` (norm spread below it too).
    """
    spec = result.spec
    k = spec.k
    tol = route_tolerance(result.method, result).geometry
    out: dict = {}
    for side, G in (("classifiers", result.classifier_gram), ("embeddings", result.embedding_gram)):
        norms = geometry.norms_from_gram(G)
        C = geometry.cosines_from_gram(G)
        off = C[~np.eye(k, dtype=bool)]
        groups = spec.step_groups()
        if groups is not None:
            cosines = geometry.grouped_cosines(G, *groups)
        else:
            cosines = {"min": float(off.min()), "mean": float(off.mean()), "max": float(off.max())}
        spread = float(norms.max() / norms.min() - 1.0)
        etf_error = float(np.abs(off + 1.0 / (k - 1)).max())
        out[side] = {
            "norms": norms.tolist(),
            "norm_spread": spread,
            "cosines": cosines,
            "etf_cosine": -1.0 / (k - 1),
            "etf_error": etf_error,
            "etf_angles": etf_error <= tol,
            "etf": spread <= tol and etf_error <= tol,
        }
    return out


def _own_checks(name: str, result: Result) -> list[Check]:
    tol = route_tolerance(name, result)
    checks = []
    if result.lower_bound is not None:
        gap = result.rel_gap
        checks.append(Check("certificate gap", name, gap, tol.objective, gap <= tol.objective))
    else:
        checks.append(
            Check("certificate gap", name, math.inf, tol.objective, False, note="no lower bound")
        )
    shortfall = max(0.0, 1.0 - result.min_margin_ratio)
    checks.append(Check("feasibility", name, shortfall, tol.geometry, shortfall <= tol.geometry))
    return checks


def _pair_checks(name: str, result: Result, ref_name: str, ref: Result) -> list[Check]:
    """Objective and norms of ``result`` against the reference; Grams, cosines and logits too
    when both have them (``convex_grouped`` returns norms only)."""
    tol_a, tol_b = route_tolerance(name, result), route_tolerance(ref_name, ref)
    tol = Tolerance(max(tol_a.objective, tol_b.objective), max(tol_a.geometry, tol_b.geometry))
    route = f"{name} vs {ref_name}"
    values = {
        "objective": (abs(result.objective - ref.objective) / abs(ref.objective), tol.objective),
        "classifier norms": (_rel_max(result.classifier_norms, ref.classifier_norms), tol.geometry),
        "embedding norms": (_rel_max(result.embedding_norms, ref.embedding_norms), tol.geometry),
    }
    if result.classifier_gram is not None and ref.classifier_gram is not None:
        values.update(
            {
                "classifier gram": (
                    _rel_fro(result.classifier_gram, ref.classifier_gram),
                    tol.geometry,
                ),
                "embedding gram": (
                    _rel_fro(result.embedding_gram, ref.embedding_gram),
                    tol.geometry,
                ),
                "classifier cosines": (
                    _cos_error(result.classifier_gram, ref.classifier_gram),
                    tol.geometry,
                ),
                "embedding cosines": (
                    _cos_error(result.embedding_gram, ref.embedding_gram),
                    tol.geometry,
                ),
            }
        )
    # structured --full does not store the logits (they are the closed form, theory.optimal_logits)
    if result.logits is not None and ref.logits is not None:
        values["logits"] = (_rel_fro(result.logits, ref.logits), tol.geometry)
    if result.b is not None and ref.b is not None:  # free bias, relative to the logit scale
        scale = float(np.linalg.norm(ref.logits))
        error = float(np.linalg.norm(result.spec.Delta * (result.b - ref.b))) / scale
        values["bias"] = (error, tol.geometry)
    return [Check(q, route, v, t, v <= t) for q, (v, t) in values.items()]


def _step_checks(spec: Spec, ref_name: str, ref: Result) -> list[Check]:
    """STEP scalar formulas (:func:`ucfm_svm.solvers.step_theory.step_geometry`) vs the
    reference."""
    groups = spec.step_groups()
    if groups is None:
        return []
    maj, mino = groups
    a, b = int(maj[0]), int(mino[0])
    n_maj, n_min = spec.n_vec[a], spec.n_vec[b]
    formula = step_geometry(
        spec.k,
        n_maj / n_min,
        mino.size / spec.k,
        scales=(spec.Delta[a], spec.Delta[b]),
        margins=(spec.delta[a], spec.delta[b]),
        n_min=n_min,
    )
    tol = max(STEP_FORMULA_TOL, route_tolerance(ref_name, ref).geometry)
    route = f"step formulas vs {ref_name}"
    errors = {
        "objective": abs(formula.objective - ref.objective) / ref.objective,
        "classifier norms": _rel_max(
            np.array(formula.classifier_norms), ref.classifier_norms[[a, b]]
        ),
        "embedding norms": _rel_max(np.array(formula.embedding_norms), ref.embedding_norms[[a, b]]),
    }
    if ref.classifier_gram is not None:
        errors["classifier cosines"] = _grouped_error(
            formula.classifier_cosines, ref.classifier_gram, groups
        )
        errors["embedding cosines"] = _grouped_error(
            formula.embedding_cosines, ref.embedding_gram, groups
        )
    tolerances = {q: tol for q in errors}
    tolerances["objective"] = max(STEP_FORMULA_TOL, route_tolerance(ref_name, ref).objective)
    return [Check(q, route, v, tolerances[q], v <= tolerances[q]) for q, v in errors.items()]


def _grouped_error(formula: dict[str, float], G: np.ndarray, groups: tuple) -> float:
    measured = geometry.grouped_cosines(G, *groups)
    return max(
        abs(formula[key] - measured[key]) for key in measured if math.isfinite(measured[key])
    )


def _rel_fro(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _rel_max(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


def _cos_error(G: np.ndarray, G_ref: np.ndarray) -> float:
    return float(np.abs(geometry.cosines_from_gram(G) - geometry.cosines_from_gram(G_ref)).max())


def _geometry_lines(geo: dict) -> list[str]:
    lines = []
    for side, info in geo.items():
        norms = np.asarray(info["norms"])
        cos = ", ".join(
            f"{key} {value:+.6f}" for key, value in info["cosines"].items() if math.isfinite(value)
        )
        lines.append(
            f"  {side:<12}norms {norms.min():.6g}..{norms.max():.6g} "
            f"(spread {info['norm_spread']:.1e}); cosines {cos}"
        )
        etf = f"-1/{round(-1 / info['etf_cosine'])} = {info['etf_cosine']:+.6f}"
        if info["etf"]:
            verdict = f"simplex ETF: equal norms, every cosine {etf}"
        elif info["etf_angles"]:
            verdict = f"ETF angles (every cosine {etf}) with unequal norms"
        else:
            verdict = "not a simplex ETF"
        lines.append(f"  {'':<12}{verdict} (largest cosine error {info['etf_error']:.1e})")
    return lines
