"""``ucfm-svm collapse``: minority-collapse thresholds of the regularized UFM (§13)."""

from __future__ import annotations

import argparse
import math

import numpy as np

from ..regularized.collapse import (
    Threshold,
    bisect_lambda,
    bisect_ratio,
    closed_form_lambda,
    identical_groups,
    step_ratio_threshold,
)
from ..regularized.curve import lambda_curve
from ..regularized.solver import BIASES
from ..result import jsonable
from ..validation import check_float, fail
from ._common import (
    EXIT_OK,
    add_spec_arguments,
    check_output_path,
    save_plot,
    spec_from_args,
    write_json,
)
from .path import compared_specs

#: Agreement required between the bisection and the closed form (exit 1 beyond).
AGREEMENT_RTOL = 1e-6
#: Exit code of a failed check.
EXIT_CHECK_FAILED = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``collapse`` subcommand."""
    p = subparsers.add_parser(
        "collapse",
        help="lambda (and STEP R) at which groups of identical classes collapse",
        description="Closed-form thresholds of lambda = sqrt(lambda_W lambda_H) above which "
        "the classifiers of each group of identical classes coincide at the optimum of the "
        "regularized UFM; --bisect checks them by bisection over certified solves.",
    )
    add_spec_arguments(p)
    p.add_argument("--bias", default="none", choices=BIASES, help="classifier bias (default none)")
    p.add_argument("--bisect", action="store_true", help="also bisect from certified solves")
    p.add_argument("--lambda", dest="lam", default=None, metavar="L",
                   help="with --step: the imbalance ratio R* above which minorities collapse")
    p.add_argument("--compare", default=None, metavar="LOSS[:G],...",
                   help="further losses on the same counts (plots)")
    p.add_argument("--points", default=25, type=int, help="lambdas of the plotted curve")
    p.add_argument("--plot", default=None, metavar="PATH",
                   help="spread-vs-lambda figure (.png unless the suffix is .pdf/.svg/.eps/.ps)")
    p.add_argument("--geometry-plot", default=None, metavar="PATH",  # suffix as --plot
                   help="norms, cosines and distance to the SVM against lambda")
    p.add_argument("--json", default=None, metavar="PATH", help="write the thresholds as JSON")
    p.set_defaults(run=run, tau=None)


def _thresholds(spec: object, args: argparse.Namespace) -> list[Threshold]:
    out = []
    for g in identical_groups(spec):
        if args.bisect:
            out.append(bisect_lambda(spec, g, bias=args.bias))
        else:
            try:
                closed = closed_form_lambda(spec, g)
            except ValueError:
                closed = None
            out.append(Threshold(tuple(int(c) for c in g), closed))
    return out


def run(args: argparse.Namespace) -> int:
    """Print the thresholds (and the bisection check), write JSON and figures."""
    spec = spec_from_args(args)
    check_output_path("json", args.json)
    for name in ("plot", "geometry_plot"):
        check_output_path(name, getattr(args, name), figure=True)
    if args.points < 3:
        raise fail("--points", "an integer >= 3", args.points)
    lam = None if args.lam is None else check_float("--lambda", args.lam, low=0.0, low_open=True)
    if lam is not None and not args.step:
        raise fail("--lambda", "given only with --step (it asks for the threshold of R)", args.lam)
    thresholds = _thresholds(spec, args)
    lines = [f"{spec.describe()}, bias {args.bias}"]
    if not thresholds:
        lines.append("no group of two or more identical classes: nothing collapses together")
    worst = 0.0
    for th in thresholds:
        n = spec.counts[th.group[0]]
        head = f"classes {th.group[0]}..{th.group[-1]} (n_c = {n})"
        if th.closed_form is not None:
            lines.append(f"{head}: collapse for lambda >= {th.closed_form:.12g} "
                         "(closed form w Delta sqrt(n_c) / (delta N))")
        else:
            lines.append(f"{head}: no closed form for this loss (true-class margins)")
        if th.bisection is not None:
            text = (f"  bisection {th.bisection:.12g}, bracket [{th.bracket[0]:.12g}, "
                    f"{th.bracket[1]:.12g}], {th.solves} solves, each with its gap "
                    "certified to 1e-9")
            if th.closed_form is not None:
                diff = abs(th.bisection / th.closed_form - 1)
                worst = max(worst, diff)
                text += f", relative difference {diff:.2e}"
            lines.append(text)
    ratio = None
    if lam is not None:
        k, _, rho = (float(v) for v in args.step.split(","))
        n_min = int(float(args.n_min))
        ratio = step_ratio_threshold(int(k), rho, n_min, spec.loss, lam, gamma=spec.gamma)
        if ratio is None:
            lines.append(f"at lambda {lam:g} the minority threshold does not depend on R "
                         "in [1, 1e8] crossing lambda (no R threshold)")
        else:
            lines.append(f"at lambda {lam:g} minorities collapse for R >= {ratio:.12g} "
                         "(closed form)")
            if args.bisect:
                r_int = bisect_ratio(int(k), rho, n_min, spec.loss, lam, gamma=spec.gamma,
                                     bias=args.bias, r_max=max(2, math.ceil(ratio) + 8))
                ok = r_int == max(1, math.ceil(ratio))
                worst = max(worst, 0.0 if ok else math.inf)
                lines.append(f"  bisection over whole R: smallest collapsed R = {r_int}"
                             + ("" if ok else " (DISAGREES)"))
    print("\n".join(lines))
    if args.plot or args.geometry_plot:
        known = [th.closed_form for th in thresholds if th.closed_form is not None]
        centre = known or [th.bisection for th in thresholds if th.bisection] or [1e-2]
        grid = np.logspace(math.log10(10 * max(centre)), math.log10(min(centre) / 100),
                           args.points)
        curves = [lambda_curve(s, grid, bias=args.bias)
                  for s in [spec, *compared_specs(args, spec)]]
        curves[0] = _with_bisection(curves[0], thresholds)
        from ..plots.regularized import collapse_figure, geometry_figure

        for name, figure in (("plot", collapse_figure), ("geometry_plot", geometry_figure)):
            if getattr(args, name):
                save_plot(name, getattr(args, name), figure(curves))
    if args.json:
        data = {"spec": spec.to_dict(), "bias": args.bias,
                "thresholds": [th.to_dict() for th in thresholds], "lambda": lam,
                "ratio_threshold": ratio}
        write_json("json", args.json, jsonable(data))
    if worst > AGREEMENT_RTOL:
        print(f"check failed: bisection and closed form differ by {worst:.2e} > "
              f"{AGREEMENT_RTOL:g}")
        return EXIT_CHECK_FAILED
    return EXIT_OK


def _with_bisection(curve: object, thresholds: list[Threshold]) -> object:
    from dataclasses import replace

    by_group = {th.group: th for th in thresholds}
    return replace(curve, thresholds=tuple(by_group.get(th.group, th) for th in curve.thresholds))
