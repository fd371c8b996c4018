"""The main job, ``ucfm-svm reproduce``: a verification grid, the core figures and a report.

On a built-in default (:class:`ReproduceConfig`) it

1. solves a STEP verification grid (several ``k``, ``R``, ``rho``; CE, LDT, CDT, VS) with every
   route available (closed form ``theory``, certified ``convex``, and ``nonconvex`` on a few
   small points) through a resumable sweep (:mod:`ucfm_svm.sweep`, file
   ``verification.jsonl``), and compares the routes on objective and both Grams;
2. tunes the loss hyperparameters that make the geometry symmetric (:mod:`ucfm_svm.tuning`);
3. draws the figures of :mod:`ucfm_svm.plots.geometry` (norms and angles against ``R`` and
   ``gamma``, Gram heatmaps, vectors);
4. writes ``report.md``: the settings, the verification table with certificate gaps, the tuned
   hyperparameters and the finding on the published LDT formulas (THEORY F9).

A rerun with the same output directory skips the grid points already recorded.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from . import __version__, api
from .plots import geometry as plots
from .result import OPTIMAL
from .spec import Spec, step_counts
from .sweep import DONE, Sweep, make_point, point_key, read_records, run_sweep
from .validation import check_int

#: Routes compared by the verification grid, in order (those registered in api.METHODS run).
ROUTES = ("theory", "convex", "nonconvex")
#: The reference route every other route is compared with.
REFERENCE = "convex"
#: Largest relative error of a route's objective and Grams against the convex route.
#: The convex solve stops at Clarabel gap/feasibility tolerances 1e-10 and its point is
#: certified to a relative gap <= 1e-6 (CERTIFY_RTOL); Grams are square roots of the logit
#: products, so errors of ~1e-8 in the logits show as ~1e-7 in the Grams. 1e-6 covers both.
ROUTE_RTOL = {"theory": 1e-6, "nonconvex": 1e-6}


@dataclass(frozen=True)
class ReproduceConfig:
    """What :func:`reproduce` runs. The default is the main job; :meth:`quick` a CI smoke test.

    ``losses`` are :class:`~ucfm_svm.plots.geometry.LossSetting` (CE, LDT, CDT, VS at
    ``gamma = 1/2``, ``tau = 1``); ``nonconvex_points`` are the ``(k, R, rho)`` where the
    non-convex route also runs (it is the slowest); the figures use STEP ``k = figure_k``,
    ``rho = figure_rho``, ``R`` from 1 to ``figure_r_max`` (``ratio_points`` closed-form points,
    ``marker_points`` solver markers) and, against gamma, ``R = figure_r``.
    """

    ks: tuple[int, ...] = (4, 8, 12)
    ratios: tuple[float, ...] = (10.0, 100.0)
    rhos: tuple[float, ...] = (0.25, 0.5, 0.75)
    losses: tuple[plots.LossSetting, ...] = (
        plots.LossSetting("ce"),
        plots.LossSetting("ldt", gamma=0.5),
        plots.LossSetting("cdt", gamma=0.5),
        plots.LossSetting("vs", gamma=0.5, tau=1.0),
    )
    nonconvex_points: tuple[tuple[int, float, float], ...] = ((4, 10.0, 0.5), (4, 10.0, 0.25))
    figure_k: int = 10
    figure_rho: float = 0.5
    figure_r: float = 10.0
    figure_r_max: float = 1000.0
    ratio_points: int = 40
    gamma_points: int = 51
    marker_points: int = 7
    gamma_range: tuple[float, float] = (-1.0, 1.5)

    @classmethod
    def quick(cls) -> ReproduceConfig:
        """A seconds-long version (one grid point per loss, coarse figures) for smoke tests."""
        return cls(
            ks=(4,),
            ratios=(10.0,),
            rhos=(0.5,),
            nonconvex_points=(),
            figure_k=4,
            figure_r_max=100.0,
            ratio_points=6,
            gamma_points=6,
            marker_points=3,
        )


@dataclass(frozen=True)
class RouteCheck:
    """One route of one grid specification against the reference (convex) route."""

    route: str
    status: str
    rel_gap: float | None
    objective_error: float | None
    classifier_error: float | None
    embedding_error: float | None
    tolerance: float | None
    passed: bool
    seconds: float
    error: str | None = None


@dataclass(frozen=True)
class GridRow:
    """All routes of one grid specification."""

    k: int
    R: float
    rho: float
    loss: str
    objective: float | None
    checks: tuple[RouteCheck, ...]

    @property
    def passed(self) -> bool:
        """Every route certified (where it certifies) and within tolerance of the reference."""
        return bool(self.checks) and all(c.passed for c in self.checks)


@dataclass(frozen=True)
class ReproduceOutcome:
    """What :func:`reproduce` wrote and found."""

    out_dir: Path
    report: Path
    figures: tuple[Path, ...]
    rows: tuple[GridRow, ...]
    tunings: tuple[tuple[str, str, float | None, str], ...]
    seconds: float
    sweep_text: str

    @property
    def passed(self) -> bool:
        """Whether every grid specification passed."""
        return all(r.passed for r in self.rows)


def _routes() -> list[str]:
    return [r for r in ROUTES if r in api.METHODS]


def verification_sweep(config: ReproduceConfig) -> Sweep:
    """The grid as sweep points: every ``(k, R, rho)`` valid for STEP, loss and route."""
    points = []
    for k in config.ks:
        for rho in config.rhos:
            if abs(rho * k - round(rho * k)) > 1e-9:
                continue
            for R in config.ratios:
                counts = {"step": {"k": k, "R": R, "rho": rho, "n_min": 1}}
                for setting in config.losses:
                    for route in _routes():
                        if route == "nonconvex" and (k, R, rho) not in config.nonconvex_points:
                            continue
                        points.append(
                            make_point(
                                counts, setting.loss, route, gamma=setting.gamma, tau=setting.tau
                            )
                        )
    return Sweep(name="verification grid", points=tuple(points))


def _rel(a: object, b: object) -> float | None:
    if a is None or b is None:
        return None
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), np.finfo(float).tiny))


def grid_rows(sweep: Sweep, records: dict[str, dict]) -> list[GridRow]:
    """Compare each route's record with the convex record of the same specification."""
    by_spec: dict[str, dict[str, dict]] = {}
    for point in sweep.points:
        spec_point = {key: v for key, v in point.items() if key not in ("method", "options")}
        record = records.get(point_key(point))
        if record is not None:
            by_spec.setdefault(point_key(spec_point), {})[point["method"]] = record
    rows = []
    for routes in by_spec.values():
        ref = routes.get(REFERENCE)
        any_record = next(iter(routes.values()))
        step = any_record["point"]["counts"]["step"]
        checks = []
        for route, rec in routes.items():
            done = rec["state"] == DONE
            ref_ok = ref is not None and ref["state"] == DONE
            certified = done and rec["status"] == OPTIMAL
            if route == REFERENCE or not (done and ref_ok):
                errs = (None, None, None)
                tol = None
                passed = certified
            else:
                errs = (
                    _rel(rec["objective"], ref["objective"]),
                    _rel(rec.get("classifier_gram"), ref.get("classifier_gram")),
                    _rel(rec.get("embedding_gram"), ref.get("embedding_gram")),
                )
                tol = ROUTE_RTOL.get(route, ROUTE_RTOL["nonconvex"])
                # a route without its own lower bound passes on agreement alone
                passed = (certified or rec.get("lower_bound") is None) and all(
                    e is not None and e <= tol for e in errs
                )
            checks.append(
                RouteCheck(
                    route=route,
                    status=rec["status"] if done else "failed",
                    rel_gap=rec.get("rel_gap") if done else None,
                    objective_error=errs[0],
                    classifier_error=errs[1],
                    embedding_error=errs[2],
                    tolerance=tol,
                    passed=passed,
                    seconds=rec["seconds"],
                    error=rec.get("error"),
                )
            )
        rows.append(
            GridRow(
                k=step["k"],
                R=step["R"],
                rho=step["rho"],
                loss=_setting_label(any_record["point"]),
                objective=ref["objective"] if ref is not None and ref["state"] == DONE else None,
                checks=tuple(
                    sorted(
                        checks,
                        key=lambda c: ROUTES.index(c.route) if c.route in ROUTES else len(ROUTES),
                    )
                ),
            )
        )
    return rows


def _setting_label(point: dict) -> str:
    return plots.LossSetting(point["loss"], point["gamma"], point["tau"]).label


# --- tuned hyperparameters ---
#: (loss, target) pairs tuned for the figure setting, with a short description.
TUNING_TARGETS = (
    ("ldt", "etf-classifiers", "LDT: classifiers an exact simplex ETF"),
    ("cdt", "equal-embedding-norms", "CDT: equal embedding norms"),
    ("cdt", "self-dual", "CDT: classifier and embedding angles equal"),
    ("cdt", "equal-classifier-norms", "CDT: equal classifier norms"),
)


def tuned_hyperparameters(counts: np.ndarray) -> list[tuple[str, str, float | None, str]]:
    """``(loss, target, gamma or None, note)`` for :data:`TUNING_TARGETS` on ``counts``."""
    try:
        from . import tuning
    except ImportError:  # the tuning module (issue 4) is not installed in this build
        return [
            (loss, target, None, "tuning module not available")
            for loss, target, _ in TUNING_TARGETS
        ]
    out = []
    for loss, target, _ in TUNING_TARGETS:
        try:
            t = tuning.tune(counts, loss, target)
        except Exception as exc:  # an unreachable target is reported, not fatal
            out.append((loss, target, None, f"{type(exc).__name__}: {exc}"))
            continue
        note = f"deviation {t.deviation:.1e}" + ("" if t.achieved else " (not achieved)")
        out.append((loss, target, t.gamma, note))
    return out


# --- figures ---
def _figures(config: ReproduceConfig, tunings: list) -> dict[str, Figure]:
    c = config
    k, rho = c.figure_k, c.figure_rho
    curve_losses = [s for s in c.losses if s.loss != "vs"]  # VS = CDT in the SVM limit
    ratios = np.unique(np.round(np.geomspace(1.0, c.figure_r_max, c.ratio_points)))
    markers = np.unique(np.round(np.geomspace(1.0, c.figure_r_max, c.marker_points)))
    gamma_losses = [plots.LossSetting(s.loss) for s in curve_losses if s.gamma is not None]
    gammas = np.linspace(*c.gamma_range, c.gamma_points)
    mgammas = np.linspace(*c.gamma_range, 6)
    descriptions = {(loss, target): text for loss, target, text in TUNING_TARGETS}
    marks = [
        (g, f"{descriptions[(loss, target)]} ({g:.3g})", loss)
        for loss, target, g, _ in tunings
        if g is not None
        and c.gamma_range[0] <= g <= c.gamma_range[1]
        and loss in {s.loss for s in gamma_losses}
    ]
    step = Spec.from_loss(step_counts(4, 10, 0.5), "ce", source="STEP k=4, R=10, rho=0.5")
    tri = step_counts(3, 10, 1 / 3)
    return {
        "geometry_vs_R": plots.figure_vs_ratio(k, rho, curve_losses, ratios, markers),
        "geometry_vs_gamma": plots.figure_vs_gamma(
            k, c.figure_r, rho, gamma_losses, gammas, mgammas, marks=marks
        ),
        "grams_ce_k4": plots.figure_grams(api.solve(step, "convex")),
        "vectors_ce_k3": plots.figure_vectors(
            api.solve(Spec.from_loss(tri, "ce", source="STEP k=3, R=10, rho=1/3"), "convex")
        ),
        "vectors_ldt_k3": plots.figure_vectors(
            api.solve(
                Spec.from_loss(tri, "ldt", gamma=0.5, source="STEP k=3, R=10, rho=1/3"),
                "convex",
            )
        ),
    }


# --- the F9 finding ---
def f9_finding(k: int = 10, R: float = 10.0, rho: float = 0.5, gamma: float = 0.5) -> dict:
    """LDT at ``gamma``: the certified SVM's classifier norm ratio and cosines (THEORY F9, F10).

    Returns the squared classifier norm ratio ``||w_maj||^2 / ||w_min||^2``, the grouped
    classifier cosines and the certificate of the convex solve.
    """
    spec = Spec.from_loss(step_counts(k, R, rho), "ldt", gamma=gamma)
    result = api.solve(spec, "convex")
    q = plots.step_quantities(result, k - round(rho * k))["classifiers"]
    return {
        "k": k,
        "R": R,
        "rho": rho,
        "gamma": gamma,
        "norm_ratio_sq": q["norm ratio"] ** 2,
        "cosines": {key: q[key] for key in ("maj-maj", "min-min", "maj-min")},
        "rel_gap": result.rel_gap,
        "status": result.status,
    }


# --- the report ---
def _fmt(value: float | None, spec: str = ".2e") -> str:
    return "-" if value is None else format(value, spec)


def report_markdown(
    config: ReproduceConfig,
    rows: list[GridRow],
    tunings: list,
    f9: dict,
    figures: list[Path],
    sweep_text: str,
    seconds: float,
) -> str:
    """The markdown report of one reproduce run."""
    routes = _routes()
    n_pass = sum(r.passed for r in rows)
    gaps = [c.rel_gap for r in rows for c in r.checks if c.rel_gap is not None]
    errs = [
        e
        for r in rows
        for c in r.checks
        for e in (c.objective_error, c.classifier_error, c.embedding_error)
        if e is not None
    ]
    lines = [
        "# ucfm-svm reproduce",
        "",
        f"ucfm-svm {__version__}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"
        f" UTC, {seconds:.1f} s.",
        "",
        "## Settings",
        "",
        "- Problem: the UF-CS-SVM `min 1/2||W||^2 + 1/2||H||^2` s.t. "
        "`Delta_y w_y^T h_i - Delta_c w_c^T h_i >= delta_y`, at the class level (THEORY F1, F2); "
        "geometry at the SVM scale.",
        f"- STEP grid: k in {list(config.ks)}, R in {[f'{r:g}' for r in config.ratios]}, "
        f"rho in {[f'{r:g}' for r in config.rhos]} (combinations with rho*k whole), n_min = 1.",
        "- Losses (SVM limit, THEORY F9 convention: Delta_c proportional to (n_c/n_min)^gamma, "
        "rescaled to sum k; LDT margins delta_c = 1/Delta_c; VS has CDT's Delta): "
        + ", ".join(s.label for s in config.losses)
        + ".",
        f"- Routes: {', '.join(routes)}; reference: {REFERENCE} (certified by a dual lower bound)."
        + (
            " Non-convex route on (k, R, rho) = "
            + ", ".join(f"({k}, {R:g}, {rho:g})" for k, R, rho in config.nonconvex_points)
            + "."
            if "nonconvex" in routes and config.nonconvex_points
            else ""
        ),
        "",
        "## Verification",
        "",
        f"{n_pass} of {len(rows)} specifications pass. Worst relative certificate gap "
        f"{_fmt(max(gaps) if gaps else None)}; worst relative error against the convex route "
        f"{_fmt(max(errs) if errs else None)} (tolerance "
        + ", ".join(f"{r} {t:g}" for r, t in ROUTE_RTOL.items() if r in routes)
        + ").",
        "",
        "A route passes when its own certificate (if it has one) holds, relative gap <= 1e-6, "
        "and its objective, classifier Gram `W W^T` and embedding Gram `Hbar^T Hbar` agree with "
        "the convex route within the tolerance.",
        "",
        "| k | R | rho | loss | objective | route | status | rel. gap | obj. err | W Gram err "
        "| H Gram err | s | pass |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for c in r.checks:
            lines.append(
                f"| {r.k} | {r.R:g} | {r.rho:g} | {r.loss} | {_fmt(r.objective, '.8g')} "
                f"| {c.route} | {c.status} | {_fmt(c.rel_gap)} | {_fmt(c.objective_error)} "
                f"| {_fmt(c.classifier_error)} | {_fmt(c.embedding_error)} | {c.seconds:.2f} "
                f"| {'yes' if c.passed else 'NO'} |"
            )
    failures = [c for r in rows for c in r.checks if c.error]
    if failures:
        lines += ["", "Failed points:", ""]
        lines += [f"- {c.route}: {c.error}" for c in failures]
    k, R, rho = config.figure_k, config.figure_r, config.figure_rho
    lines += [
        "",
        "## Tuned hyperparameters",
        "",
        f"The gamma that makes the geometry symmetric, STEP k={k}, R={R:g}, rho={rho:g} "
        "(root finding on the closed form; dashed lines in the gamma figure):",
        "",
        "| loss | target | gamma | note |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {loss} | {target} | {_fmt(g, '.6g')} | {note} |" for loss, target, g, note in tunings
    ]
    lines += [
        "",
        "## The published LDT formulas (THEORY F9)",
        "",
        "The public reference code of the paper parameterizes Delta_c = (R for majorities, 1 for "
        "minorities)^gamma and gives closed forms only for rho = 1/2. Its CDT formulas agree "
        "with the solvers; its LDT classifier formulas, which do not depend on Delta, do not. "
        f"At k={f9['k']}, R={f9['R']:g}, rho={f9['rho']:g}, LDT gamma={f9['gamma']:g}, the "
        "reference formula gives ||w_maj||^2 / ||w_min||^2 = 2.67 (THEORY F9), while the "
        f"certified UF-CS-SVM (convex, {f9['status']}, relative gap {_fmt(f9['rel_gap'])}) "
        f"gives **{f9['norm_ratio_sq']:.6f}** with classifier cosines "
        + ", ".join(f"{key} {v:+.6f}" for key, v in f9["cosines"].items())
        + f" (simplex ETF: equal norms and cosines -1/(k-1) = {-1 / (f9['k'] - 1):+.6f}, "
        "THEORY F4). The ridge-regularized LDT UFM agrees with the SVM, not with the formula: "
        "the ratio falls to 1.35, 1.20, 1.14, 1.11, 1.09, 1.07 as lambda goes from 1e-2 to "
        "1e-12 (THEORY F9, measured with L-BFGS), slowly, like 1/log(1/lambda) (F8).",
        "",
        "## Figures",
        "",
    ]
    lines += [f"![{p.stem}]({p.name})" for p in figures if p.suffix == ".png"]
    lines += ["", "## Sweep", "", "```", sweep_text, "```", ""]
    return "\n".join(lines)


def reproduce(
    out_dir: str | Path = "out",
    config: ReproduceConfig | None = None,
    *,
    jobs: int = 1,
    progress: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> ReproduceOutcome:
    """Run the main job and write its files to ``out_dir`` (see the module docstring).

    Files: ``verification.jsonl`` (one record per grid point; reused by a rerun),
    ``report.md``, and each figure as ``NAME.png`` and ``NAME.pdf``. ``on_step`` is called
    with a short description before each stage (the CLI prints it).
    """
    start = time.perf_counter()
    config = ReproduceConfig() if config is None else config
    jobs = check_int("jobs", jobs, low=1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    step = on_step or (lambda _text: None)

    sweep = verification_sweep(config)
    step(f"verification grid: {len(sweep.points)} points -> {out / 'verification.jsonl'}")
    summary = run_sweep(sweep, out / "verification.jsonl", jobs=jobs, progress=progress)
    rows = grid_rows(sweep, read_records(out / "verification.jsonl"))

    counts = step_counts(config.figure_k, config.figure_r, config.figure_rho)
    step("tuning the loss hyperparameters")
    tunings = tuned_hyperparameters(counts)
    step("the F9 finding (LDT)")
    f9 = f9_finding()
    step("figures")
    paths = []
    for name, fig in _figures(config, tunings).items():
        for suffix in (".png", ".pdf"):
            path = out / (name + suffix)
            fig.savefig(path, dpi=130)
            paths.append(path)
    seconds = time.perf_counter() - start
    report = out / "report.md"
    report.write_text(report_markdown(config, rows, tunings, f9, paths, summary.to_text(), seconds))
    return ReproduceOutcome(
        out_dir=out,
        report=report,
        figures=tuple(paths),
        rows=tuple(rows),
        tunings=tuple(tunings),
        seconds=seconds,
        sweep_text=summary.to_text(),
    )


__all__ = [
    "ROUTES",
    "GridRow",
    "ReproduceConfig",
    "ReproduceOutcome",
    "RouteCheck",
    "f9_finding",
    "grid_rows",
    "report_markdown",
    "reproduce",
    "tuned_hyperparameters",
    "verification_sweep",
]
