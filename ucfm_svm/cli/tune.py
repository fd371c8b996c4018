"""``ucfm-svm tune``: the loss exponent gamma that gives the geometry a chosen symmetry."""

from __future__ import annotations

import argparse
import dataclasses

from ..analysis.tuning import DEFAULT_RANGE, TARGETS, TUNABLE_LOSSES, TUNE_METHODS, tune
from ..api import group_statistics, solve
from ..result import OPTIMAL, jsonable
from ..solvers.structured import structured_solution
from ..solvers.theory import solve_theory
from ..validation import check_float, fail, parse_list
from ._common import (
    EXIT_CHECK_FAILED,
    EXIT_NOT_CERTIFIED,
    EXIT_OK,
    STDOUT,
    add_group_arguments,
    add_model_arguments,
    add_spec_arguments,
    check_output_path,
    group_options,
    spec_from_args,
    summary,
    write_json,
)

#: Exit code when no gamma in the range meets the full target exactly (a check that failed).
EXIT_NOT_REACHED = EXIT_CHECK_FAILED


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tune`` subcommand."""
    p = subparsers.add_parser(
        "tune",
        help="find the loss exponent gamma that reaches a symmetric geometry",
        description="Inverse design by root finding on the exact closed-form geometry. Targets: "
        + "; ".join(f"{name}: {text}" for name, text in TARGETS.items())
        + ". Exit 0 when the target is met exactly, 1 when the best gamma only approaches it, "
        "3 when the geometry at gamma is not certified.",
    )
    add_spec_arguments(p)
    add_model_arguments(p)
    p.add_argument("--target", required=True, choices=sorted(TARGETS), help="the symmetry to reach")
    p.add_argument(
        "--range",
        default=f"{DEFAULT_RANGE[0]:g},{DEFAULT_RANGE[1]:g}",
        metavar="LO,HI",
        help="gamma search interval (default %(default)s)",
    )
    p.add_argument(
        "--method",
        default="auto",
        choices=TUNE_METHODS,
        help="geometry route: structured (norm targets, any k), theory (dense, k <= 2000, "
        "every target); auto (default) takes structured for norm targets",
    )
    add_group_arguments(p)
    p.add_argument(
        "--json", default=None, metavar="PATH", help="write the tuning as JSON ('-': stdout)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Tune, print gamma and the geometry at it; exit 0 iff the target is met exactly."""
    if args.loss not in TUNABLE_LOSSES:
        allowed = "one of " + ", ".join(TUNABLE_LOSSES) + " (a loss with gamma)"
        raise fail("loss", allowed, args.loss)
    if args.gamma is not None:
        raise fail("gamma", "left unset (tune finds it)", args.gamma)
    # The counts, dimension and their description, without the (still unknown) gamma.
    base = spec_from_args(argparse.Namespace(**{**vars(args), "loss": "ce", "tau": None}))
    tau = None if args.tau is None else check_float("tau", args.tau)
    bounds = parse_list("range", args.range)
    if len(bounds) != 2:
        raise fail("range", "two comma-separated numbers LO,HI", args.range)
    thresholds = group_options(args)
    check_output_path("json", args.json)
    tuning = tune(
        base.counts,
        args.loss,
        args.target,
        search_range=tuple(bounds),
        dim=base.dim,
        tau=tau,
        bias=base.bias,
        features=base.features,
        method=args.method,
        **thresholds,
    )
    spec = dataclasses.replace(tuning.spec, source=base.source)
    if spec.variant:  # the model variants' certified optimum (docs/theory.md §11, §12)
        result = solve(spec, "theory")
    elif tuning.method == "structured":
        result = structured_solution(spec)
    else:
        result = solve_theory(spec)
    stats = group_statistics(result, **thresholds)
    state = "met" if tuning.achieved else "NOT met exactly"
    if args.json != STDOUT:
        print(f"gamma = {tuning.gamma:.10g}")
        print(
            f"target {args.target} ({TARGETS[args.target]}): {state}, "
            f"deviation {tuning.deviation:.2e} (method {tuning.method})"
        )
        if len(tuning.roots) > 1:
            print("other roots of the residual: " + ", ".join(f"{g:.10g}" for g in tuning.roots))
        print(summary(result, stats))
    if args.json:
        data = {
            "target": args.target,
            "loss": args.loss,
            "gamma": tuning.gamma,
            "achieved": tuning.achieved,
            "deviation": tuning.deviation,
            "roots": list(tuning.roots),
            "method": tuning.method,
            "spec": spec.to_dict(),
            "status": result.status,
            "message": result.message,
            "objective": result.objective,
            "lower_bound": result.lower_bound,
            "classifier_norms": result.classifier_norms,
            "embedding_norms": result.embedding_norms,
            "groups": stats.to_dict(),
        }
        write_json("json", args.json, jsonable(data))
    if result.status != OPTIMAL:
        return EXIT_NOT_CERTIFIED
    return EXIT_OK if tuning.achieved else EXIT_NOT_REACHED
