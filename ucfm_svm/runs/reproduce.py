"""The main job, ``ucfm-svm reproduce``: a verification grid, the core figures and a report.

On a built-in default (:class:`ReproduceConfig`) it

1. verifies a STEP grid (several ``k``, ``R``, ``rho``; CE, LDT, CDT, VS) by every route
   (closed form ``theory``, certified ``convex``, ``nonconvex``) with
   :func:`ucfm_svm.analysis.verify.verify`, through a resumable sweep
   (:mod:`ucfm_svm.runs.sweep`, file ``verification.jsonl``);
2. tunes the loss hyperparameters that make the geometry symmetric
   (:mod:`ucfm_svm.analysis.tuning`);
3. draws the figures of :mod:`ucfm_svm.plots.geometry` (norms and angles against ``R`` and
   ``gamma``, Gram heatmaps, vectors);
4. writes ``report.md``: the settings, the verification table with certificate gaps, the tuned
   hyperparameters and the finding on the published LDT formulas (docs/theory.md §9).

A rerun with the same output directory skips the grid points already recorded.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__, api
from ..analysis import curves, tuning
from ..files import MARKDOWN_MARK, check_output, figure_pair, write_output
from ..regularized.training import regularization_path
from ..spec import Spec, step_counts
from .backends import BackendConfig
from .sweep import (
    DONE,
    PASSED,
    VERIFY,
    Sweep,
    check_ratio,
    make_point,
    point_key,
    read_records,
    run_sweep,
)

if TYPE_CHECKING:  # matplotlib is imported by the plots, where they are drawn
    from matplotlib.figure import Figure

#: Routes compared by the verification grid (:func:`ucfm_svm.analysis.verify.verify`), in order; the
#: first (the closed form, certified by its own dual) is the reference.
ROUTES = ("theory", "convex", "nonconvex")


@dataclass(frozen=True)
class ReproduceConfig:
    """What :func:`reproduce` runs. The default is the main job; :meth:`quick` a CI smoke test.

    ``losses`` are :class:`~ucfm_svm.analysis.curves.LossSetting` (CE, LDT, CDT, VS at
    ``gamma = 1/2``, ``tau = 1``); the non-convex route runs where ``k <= nonconvex_max_k``
    (it is the slowest route); the figures use STEP ``k = figure_k``,
    ``rho = figure_rho``, ``R`` from 1 to ``figure_r_max`` (``ratio_points`` closed-form points,
    ``marker_points`` solver markers) and, against gamma, ``R = figure_r``.
    """

    ks: tuple[int, ...] = (4, 8, 12)
    ratios: tuple[float, ...] = (10.0, 100.0)
    rhos: tuple[float, ...] = (0.25, 0.5, 0.75)
    losses: tuple[curves.LossSetting, ...] = (
        curves.LossSetting("ce"),
        curves.LossSetting("ldt", gamma=0.5),
        curves.LossSetting("cdt", gamma=0.5),
        curves.LossSetting("vs", gamma=0.5, tau=1.0),
    )
    nonconvex_max_k: int = 12
    figure_k: int = 10
    figure_rho: float = 0.5
    figure_r: float = 10.0
    figure_r_max: float = 1000.0
    ratio_points: int = 40
    gamma_points: int = 51
    marker_points: int = 7
    gamma_range: tuple[float, float] = (-1.0, 1.5)
    f9_lambdas: tuple[float, ...] = (1e-2, 1e-4, 1e-6, 1e-8, 1e-10)

    @classmethod
    def quick(cls) -> ReproduceConfig:
        """A seconds-long version (one grid point per loss, coarse figures) for smoke tests."""
        return cls(
            ks=(4,),
            ratios=(10.0,),
            rhos=(0.5,),
            figure_k=4,
            figure_r_max=100.0,
            ratio_points=6,
            gamma_points=6,
            marker_points=3,
            f9_lambdas=(1e-2,),
        )


@dataclass(frozen=True)
class GridRow:
    """The verification of one grid specification (from its sweep record)."""

    k: int
    R: float
    rho: float
    loss: str
    record: dict

    @property
    def passed(self) -> bool:
        """Every check of :func:`ucfm_svm.analysis.verify.verify` passed."""
        return self.record["state"] == DONE and self.record["status"] == PASSED


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


def verification_sweep(config: ReproduceConfig) -> Sweep:
    """The grid as ``verify`` sweep points: every ``(k, R, rho)`` valid for STEP, every loss."""
    points = []
    for k in config.ks:
        routes = [r for r in ROUTES if r != "nonconvex" or k <= config.nonconvex_max_k]
        for rho in config.rhos:
            if abs(rho * k - round(rho * k)) > 1e-9:
                continue
            for R in config.ratios:
                counts = {"step": {"k": k, "R": R, "rho": rho, "n_min": 1}}
                for setting in config.losses:
                    points.append(
                        make_point(
                            counts,
                            setting.loss,
                            VERIFY,
                            gamma=setting.gamma,
                            tau=setting.tau,
                            options={"methods": routes},
                        )
                    )
    return Sweep(name="verification grid", points=tuple(points))


def grid_rows(sweep: Sweep, records: dict[str, dict]) -> list[GridRow]:
    """One row per grid point recorded in ``records``, in grid order."""
    rows = []
    for point in sweep.points:
        record = records.get(point_key(point))
        if record is None:
            continue
        step = point["counts"]["step"]
        label = curves.LossSetting(point["loss"], point["gamma"], point["tau"]).label
        rows.append(GridRow(step["k"], step["R"], step["rho"], label, record))
    return rows


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


def tuning_marks(
    tunings: list, losses: list[str], gamma_range: tuple[float, float]
) -> list[tuple[float, str, str]]:
    """``(gamma, label, loss)`` marks for :func:`~ucfm_svm.plots.geometry.figure_vs_gamma` from
    :func:`tuned_hyperparameters`, for the given losses and inside ``gamma_range``."""
    descriptions = {(loss, target): text for loss, target, text in TUNING_TARGETS}
    return [
        (g, f"{descriptions[(loss, target)]} ({g:.3g})", loss)
        for loss, target, g, _ in tunings
        if g is not None and gamma_range[0] <= g <= gamma_range[1] and loss in losses
    ]


# --- figures ---
#: What each figure of the report shows.
FIGURE_CAPTIONS = {
    "geometry_vs_R": "norm ratios and cosines of classifiers and class means against R (log "
    "axis) for CE, LDT and CDT; lines: closed form, markers: certified convex solve. VS has "
    "CDT's geometry in the SVM limit (its tau leaves no trace) and is not drawn.",
    "geometry_vs_gamma": "the same against gamma at fixed R for LDT and CDT; vertical lines "
    "mark the tuned gammas of the table above. LDT's ETF line and CDT's self-dual line coincide "
    "(both at gamma = 1/2 for any counts: every g_c = delta_c sqrt(n_c) / Delta_c is equal), so "
    "only one of the two shows.",
    "grams_ce_k4": "Gram matrices of classifiers and class means, CE, STEP k=4, R=10, rho=1/2.",
    "vectors_ce_k3": "classifiers and class means of CE in their 2-D span, STEP k=3, R=10: the "
    "minority classifier is shorter, the minority embedding longer.",
    "vectors_ldt_k3": "the same for LDT at gamma=1/2: the classifiers form an exact simplex ETF "
    "(docs/theory.md §6).",
}


#: The figures :func:`reproduce` draws (``NAME.png`` and ``NAME.pdf`` each).
FIGURES = ("geometry_vs_R", "geometry_vs_gamma", "grams_ce_k4", "vectors_ce_k3", "vectors_ldt_k3")


def _figures(config: ReproduceConfig, tunings: list) -> dict[str, Figure]:
    from ..plots import geometry as plots  # matplotlib loads only when figures are drawn

    c = config
    k, rho = c.figure_k, c.figure_rho
    curve_losses = [s for s in c.losses if s.loss != "vs"]  # VS = CDT in the SVM limit
    ratios = np.unique(np.round(np.geomspace(1.0, c.figure_r_max, c.ratio_points)))
    markers = np.unique(np.round(np.geomspace(1.0, c.figure_r_max, c.marker_points)))
    gamma_losses = [curves.LossSetting(s.loss) for s in curve_losses if s.gamma is not None]
    gammas = np.linspace(*c.gamma_range, c.gamma_points)
    mgammas = np.linspace(*c.gamma_range, 6)
    marks = tuning_marks(tunings, [s.loss for s in gamma_losses], c.gamma_range)
    step = Spec.from_loss(step_counts(4, 10, 0.5), "ce", source="STEP k=4, R=10, rho=0.5")
    tri = step_counts(3, 10, 1 / 3)
    return {
        "geometry_vs_R": plots.figure_vs_ratio(
            curves.ratio_curves(k, rho, curve_losses, ratios, markers), k
        ),
        "geometry_vs_gamma": plots.figure_vs_gamma(
            curves.gamma_curves(k, c.figure_r, rho, gamma_losses, gammas, mgammas), k, marks
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


#: Resolution of the PNG figures.
PNG_DPI = 130


# --- the F9 finding ---
def f9_finding(
    k: int = 10,
    R: float = 10.0,
    rho: float = 0.5,
    gamma: float = 0.5,
    lambdas: tuple[float, ...] = (1e-2, 1e-4, 1e-6, 1e-8, 1e-10),
) -> dict:
    """The LDT evidence of docs/theory.md §9 at STEP ``(k, R, rho)`` and ``gamma``, computed.

    Returns the certified LDT SVM's squared classifier norm ratio ``||w_maj||^2 / ||w_min||^2``
    (``svm_ratio_sq``), its grouped classifier cosines and certificate; the same ratio for CE
    (``ce_ratio_sq``), which is what the published LDT classifier formula gives for every gamma
    (it does not depend on Delta; see the README and ``tests/test_step_theory.py``); and the
    ratio along the regularization path of the ridge-regularized LDT UFM
    (:func:`ucfm_svm.regularized.training.regularization_path`) at ``lambdas``.
    """
    counts = step_counts(k, R, rho)
    spec = Spec.from_loss(counts, "ldt", gamma=gamma)
    result = api.solve(spec, "convex")
    ce = api.solve(Spec.from_loss(counts, "ce"), "convex")
    k_maj = k - round(rho * k)
    q = curves.step_quantities(result, k_maj)["classifiers"]
    path = regularization_path(spec, lambdas) if lambdas else None
    return {
        "k": k,
        "R": R,
        "rho": rho,
        "gamma": gamma,
        "svm_ratio_sq": q["squared norm ratio"],
        "ce_ratio_sq": curves.step_quantities(ce, k_maj)["classifiers"]["squared norm ratio"],
        "cosines": {key: q[key] for key in ("maj-maj", "min-min", "maj-min")},
        "rel_gap": result.rel_gap,
        "status": result.status,
        "lambdas": list(lambdas),
        "path_ratio_sq": [] if path is None else path.classifier_norm_ratio.tolist(),
    }


# --- the report ---
def _check_text(check: dict) -> str:
    value = "n/a" if check["value"] is None else f"{check['value']:.1e}"
    return f"{check['quantity']}, {check['route']}: {value} / {check['tolerance']:.0e}"


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
    n_pass = sum(r.passed for r in rows)
    done = [r.record for r in rows if r.record["state"] == DONE]
    gaps = [rec["rel_gap"] for rec in done if rec.get("rel_gap") is not None]
    worst = max(done, key=lambda rec: check_ratio(rec["worst_check"]), default=None)
    lines = [
        MARKDOWN_MARK,
        "# ucfm-svm reproduce",
        "",
        f"ucfm-svm {__version__}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"
        f" UTC, {seconds:.1f} s.",
        "",
        "## Settings",
        "",
        "- Problem: the UF-CS-SVM `min 1/2||W||^2 + 1/2||H||^2` s.t. "
        "`Delta_y w_y^T h_i - Delta_c w_c^T h_i >= delta_y`, at the class level (docs/theory.md "
        "§2, §3); "
        "geometry at the SVM scale.",
        f"- STEP grid: k in {{{', '.join(str(k) for k in config.ks)}}}, "
        f"R in {{{', '.join(f'{r:g}' for r in config.ratios)}}}, "
        f"rho in {{{', '.join(f'{r:g}' for r in config.rhos)}}} "
        "(combinations with rho*k whole), n_min = 1.",
        "- Losses (SVM limit, docs/theory.md §9 convention: Delta_c proportional to "
        "(n_c/n_min)^gamma, "
        "rescaled to sum k; LDT margins delta_c = 1/Delta_c; VS has CDT's Delta): "
        + ", ".join(s.label for s in config.losses)
        + ".",
        f"- Routes: {', '.join(ROUTES)} (non-convex for k <= {config.nonconvex_max_k}); "
        "reference: theory, the closed form of docs/theory.md §4 certified by its own dual.",
        "",
        "## Verification",
        "",
        f"{n_pass} of {len(rows)} specifications pass every check. Worst relative certificate "
        f"gap over all routes: {_fmt(max(gaps) if gaps else None)}."
        + (
            ""
            if worst is None
            else " Largest error relative to its tolerance: "
            f"{_check_text(worst['worst_check'])} at {worst['label']}."
        ),
        "",
        "Checks per specification (`ucfm_svm.analysis.verify`): each route's certificate gap and "
        "feasibility; objective, both Grams, norms, cosines and logits of every route against "
        "the reference; the STEP scalar formulas. Gaps are relative: (objective - lower bound) / "
        "objective.",
        "",
        "| k | R | rho | loss | objective | "
        + " | ".join(f"gap {r}" for r in ROUTES)
        + " | checks | worst check (error / tolerance) | s | pass |",
        "|---|---|---|---|---|" + "---|" * len(ROUTES) + "---|---|---|---|",
    ]
    for r in rows:
        rec = r.record
        if rec["state"] != DONE:
            lines.append(
                f"| {r.k} | {r.R:g} | {r.rho:g} | {r.loss} | - | "
                + " | ".join("-" for _ in ROUTES)
                + f" | - | {rec['error']} | {rec['seconds']:.2f} | NO |"
            )
            continue
        route_gaps = [_fmt((rec["routes"].get(x) or {}).get("rel_gap")) for x in ROUTES]
        n_checks = len(rec["checks"])
        n_ok = sum(c["passed"] for c in rec["checks"])
        lines.append(
            f"| {r.k} | {r.R:g} | {r.rho:g} | {r.loss} | {_fmt(rec['objective'], '.8g')} | "
            + " | ".join(route_gaps)
            + f" | {n_ok}/{n_checks} | {_check_text(rec['worst_check'])} | {rec['seconds']:.2f}"
            f" | {'yes' if r.passed else 'NO'} |"
        )
    failed = [
        (r, c)
        for r in rows
        if r.record["state"] == DONE
        for c in r.record["checks"]
        if not c["passed"]
    ]
    if failed:
        lines += ["", "Failed checks:", ""]
        lines += [
            f"- k={r.k}, R={r.R:g}, rho={r.rho:g}, {r.loss}: {_check_text(c)} {c['note']}"
            for r, c in failed
        ]
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
        "## The published LDT formulas (docs/theory.md §9)",
        "",
        "The public reference code of the paper parameterizes Delta_c = (R for majorities, 1 for "
        "minorities)^gamma and gives closed forms only for rho = 1/2. Its CDT formulas agree "
        "with the solvers; its LDT classifier formulas do not depend on Delta, hence not on "
        "gamma, and equal the CE geometry (see the README and tests/test_step_theory.py). "
        f"At k={f9['k']}, R={f9['R']:g}, rho={f9['rho']:g}, LDT gamma={f9['gamma']:g} "
        "(computed now):",
        "",
        f"- published LDT formula = CE geometry: ||w_maj||^2 / ||w_min||^2 = "
        f"{f9['ce_ratio_sq']:.4f};",
        f"- the certified LDT UF-CS-SVM (convex, {f9['status']}, relative gap "
        f"{_fmt(f9['rel_gap'])}): **{f9['svm_ratio_sq']:.6f}**, classifier cosines "
        + ", ".join(f"{key} {v:+.6f}" for key, v in f9["cosines"].items())
        + f": a simplex ETF (cosine -1/(k-1) = {-1 / (f9['k'] - 1):+.6f}, docs/theory.md §6);",
    ]
    if f9["path_ratio_sq"]:
        lines.append(
            "- the ridge-regularized LDT UFM (L-BFGS, warm starts): "
            + ", ".join(
                f"{r:.3f} at lambda={lam:.0e}"
                for lam, r in zip(f9["lambdas"], f9["path_ratio_sq"], strict=True)
            )
            + ", falling slowly towards the SVM's value, not the formula's (docs/theory.md §9)."
        )
    lines += [
        "",
        "## Figures",
        "",
    ]
    for p in figures:
        if p.suffix == ".png":
            caption = FIGURE_CAPTIONS.get(p.stem, p.stem)
            lines += [f"**{p.stem}**: {caption}", "", f"![{p.stem}]({p.name})", ""]
    lines += ["", "## Sweep", "", "```", sweep_text, "```", ""]
    return "\n".join(lines)


def reproduce(
    out_dir: str | Path = "out",
    config: ReproduceConfig | None = None,
    *,
    jobs: int = 1,
    backend: str = "local",
    address: str | None = None,
    progress: bool = True,
    on_step: Callable[[str], None] | None = None,
    on_record: Callable[[dict], None] | None = None,
) -> ReproduceOutcome:
    """Run the main job and write its files to ``out_dir`` (see the module docstring).

    Files: ``verification.jsonl`` (one record per grid point; a rerun keeps the finished
    points and runs the missing and failed ones),
    ``report.md``, and each figure as ``NAME.png`` and ``NAME.pdf``. ``on_step`` is called
    with a short description before each stage (the CLI prints it), and ``on_record`` with
    each grid record as it is saved (the CLI checks there for a SIGTERM that library code
    swallowed). ``jobs``, ``backend`` and ``address`` say where the grid points run
    (:func:`ucfm_svm.runs.sweep.run_sweep`).
    """
    start = time.perf_counter()
    config = ReproduceConfig() if config is None else config
    backend_config = BackendConfig(backend, jobs, address)  # checked before any work
    out = Path(out_dir)
    for name in FIGURES:  # the outputs are checked before any work (docs/reliability.md)
        for path in figure_pair(out / name):
            check_output(path)
    check_output(out / "report.md")
    out.mkdir(parents=True, exist_ok=True)
    step = on_step or (lambda _text: None)

    sweep = verification_sweep(config)
    step(f"verification grid: {len(sweep.points)} points -> {out / 'verification.jsonl'}")
    # finished points are kept; failed ones (if any) are tried again
    summary = run_sweep(
        sweep,
        out / "verification.jsonl",
        jobs=backend_config.jobs,
        backend=backend_config.name,
        address=backend_config.address,
        progress=progress,
        retry_failed=True,
        on_record=on_record,
    )
    rows = grid_rows(sweep, read_records(out / "verification.jsonl"))

    counts = step_counts(config.figure_k, config.figure_r, config.figure_rho)
    step("tuning the loss hyperparameters")
    tunings = tuned_hyperparameters(counts)
    step("the F9 finding (LDT)")
    f9 = f9_finding(lambdas=config.f9_lambdas)
    step("figures")
    paths = []
    from ..plots.style import save_figure

    figures = _figures(config, tunings)
    for name in FIGURES:
        paths += save_figure(figures[name], out / name, dpi=PNG_DPI)
    seconds = time.perf_counter() - start
    report = out / "report.md"
    text = report_markdown(config, rows, tunings, f9, paths, summary.to_text(), seconds)
    write_output(report, text)
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
    "f9_finding",
    "grid_rows",
    "report_markdown",
    "reproduce",
    "tuned_hyperparameters",
    "verification_sweep",
]
