"""``ucfm-svm plot KIND``: figures of the geometry, saved as PNG and PDF."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..analysis import curves
from ..api import METHODS
from ..files import figure_pair
from ..runs.reproduce import tuned_hyperparameters, tuning_marks
from ..spec import LOSSES, step_counts
from ..validation import fail, parse_list
from ._common import (
    EXIT_OK,
    add_group_arguments,
    add_spec_arguments,
    check_output_path,
    group_options,
    spec_from_args,
    writing,
)

KINDS = ("ratio", "gamma", "grams", "vectors", "counts")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plot`` subcommand."""
    p = subparsers.add_parser(
        "plot",
        help="draw the geometry (PNG and PDF)",
        description="Draw one figure. ratio: squared norm ratio and cosines against R for the "
        "STEP setting of --step (its R is ignored), or against the imbalance factor for "
        "--longtail (its IF is ignored; head half vs tail half), and the losses of --losses; "
        "gamma: the same against gamma at the R of --step or the IF of --longtail; grams: "
        "cosine heatmaps of one solve; vectors: the classifier and embedding vectors of one "
        "solve (k = 3 or 4); counts: norms and squared norm ratios against the class count "
        "(log axis) for any counts, one line per loss of --losses.",
    )
    p.add_argument("kind", choices=KINDS, help="which figure")
    add_spec_arguments(p)
    add_group_arguments(p)
    p.add_argument(
        "--method",
        default="auto",
        choices=sorted(METHODS),
        help="solver for grams/vectors/counts and for the markers of ratio/gamma (default "
        "auto; for the markers auto means the convex solve where it is estimated under "
        f"{MARKER_CONVEX_SECONDS:g} s, an independent check of the lines, else structured)",
    )
    p.add_argument(
        "--losses",
        default=None,
        metavar="L1,L2,...",
        help="losses compared by ratio/gamma (default: --loss if given, else ce,ldt,cdt for "
        "ratio and ldt,cdt for gamma); they share --gamma (default 0.5) and --tau",
    )
    p.add_argument(
        "--range",
        default=None,
        metavar="LO,HI",
        help="x range: R for ratio (default 1,1000), gamma for gamma (default -1,1.5)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="PATH",
        help="output file stem; writes PATH.png and PATH.pdf (a .png or .pdf suffix is "
        "dropped; missing folders are created; default ./KIND)",
    )
    p.set_defaults(run=run)


def _losses(args: argparse.Namespace, default: str, need_gamma: bool) -> list[curves.LossSetting]:
    names = [t.strip() for t in (args.losses or args.loss or default).split(",")]
    gamma = 0.5 if args.gamma is None else float(args.gamma)
    tau = None if args.tau is None else float(args.tau)
    out = []
    for name in names:
        if name not in LOSSES or (need_gamma and "gamma" not in LOSSES[name]):
            allowed = "cdt, ldt, vs" if need_gamma else ", ".join(LOSSES)
            raise fail("losses", f"a comma-separated list of {allowed}", args.losses)
        out.append(
            curves.LossSetting(
                name,
                gamma=gamma if "gamma" in LOSSES[name] else None,
                tau=tau if "tau" in LOSSES[name] else None,
            )
        )
    return out


def _range(args: argparse.Namespace, default: tuple[float, float], low: float | None) -> tuple:
    if args.range is None:
        return default
    values = parse_list("range", args.range)
    if (
        len(values) != 2
        or not np.all(np.isfinite(values))  # `--range 1,inf` reached the curves as 'ratios'
        or values[0] >= values[1]
        or (low is not None and values[0] < low)
    ):
        bound = f" with LO >= {low:g}" if low is not None else ""
        raise fail("range", f"two increasing finite numbers LO,HI{bound}", args.range)
    return values[0], values[1]


#: Estimated seconds under which ``--method auto`` draws the ratio/gamma markers by the convex
#: solve (independent of the closed-form lines); above, by the route auto picks.
MARKER_CONVEX_SECONDS = 2.0


def _marker_method(args: argparse.Namespace, k: int) -> str:
    """The route of the markers: ``--method``, with auto resolved as :data:`MARKER_CONVEX_SECONDS`
    says."""
    if args.method != "auto":
        return args.method
    from ..solvers.convex import estimate

    seconds = min(estimate(k, k, name)[1] for name in ("CLARABEL", "SCS"))
    return "convex" if seconds <= MARKER_CONVEX_SECONDS else "auto"


def _step_setting(args: argparse.Namespace, kind: str) -> tuple[int, float, float, int, int | None]:
    """``(k, R, rho, n_min, n_max)``: STEP from --step, or the long tail of --longtail
    (``R`` = its imbalance factor, ``rho = 1/2``: head half against tail half)."""
    if args.longtail is not None:
        k, factor = parse_list("longtail", args.longtail)
        return int(k), factor, 0.5, 1, int(float(args.n_max))
    if args.step is None:
        raise fail("step", f"given for plot kind '{kind}' (K,R,RHO; or --longtail K,IF)", None)
    k, R, rho = parse_list("step", args.step)
    return int(k), R, rho, int(float(args.n_min)), None


def make_figure(args: argparse.Namespace):
    """Compute the curves or the solve, then draw the figure (raises ``SpecError`` on bad
    input). Plot modules are imported here: matplotlib loads only for ``plot``."""
    from ..plots import geometry as plots

    spec = spec_from_args(args)  # the same checks and messages as `solve`
    method = args.method
    if args.kind == "counts":
        from ..plots.counts import figure_counts

        thresholds = group_options(args)
        computed = curves.counts_curves(
            spec.counts,
            _losses(args, "ce,ldt,cdt", False),
            method=method,
            source=spec.source,
            **thresholds,
        )
        return figure_counts(computed)
    if args.kind in ("ratio", "gamma"):
        k, R, rho, n_min, n_max = _step_setting(args, args.kind)
        options = {"n_min": n_min, "n_max": n_max, "marker_method": _marker_method(args, k)}
    if args.kind == "ratio":
        lo, hi = _range(args, (1.0, 1000.0), low=1.0)
        ratios = np.unique(np.round(np.geomspace(lo, hi, 40) * n_min) / n_min)
        markers = np.unique(np.round(np.geomspace(lo, hi, 7) * n_min) / n_min)
        computed = curves.ratio_curves(
            k, rho, _losses(args, "ce,ldt,cdt", False), ratios, markers, **options
        )
        return plots.figure_vs_ratio(computed, k)
    if args.kind == "gamma":
        lo, hi = _range(args, (-1.0, 1.5), low=None)
        losses = _losses(args, "ldt,cdt", True)
        computed = curves.gamma_curves(
            k, R, rho, losses, np.linspace(lo, hi, 51), np.linspace(lo, hi, 6), **options
        )
        marks = ()
        if n_max is None:
            tunings = tuned_hyperparameters(step_counts(k, R, rho, n_min))
            marks = tuning_marks(tunings, [s.loss for s in losses], (lo, hi))
        return plots.figure_vs_gamma(computed, k, marks)
    result = curves.solve_with_grams(spec, method)
    if args.kind == "grams":
        return plots.figure_grams(result)
    return plots.figure_vectors(result)


def save(fig, stem: str | Path) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf`` with TrueType fonts; returns the paths."""
    from ..plots.style import save_figure

    with writing("out", str(stem)):
        return save_figure(fig, stem)


def run(args: argparse.Namespace) -> int:
    """Draw and save the figure (the output files are checked before the work)."""
    stem = args.out or args.kind
    for path in figure_pair(stem):
        check_output_path("out", str(path))
    fig = make_figure(args)
    for path in save(fig, stem):
        print(f"wrote {path}")
    return EXIT_OK
