"""``ucfm-svm tune``: the loss exponent gamma that gives the geometry a chosen symmetry."""

from __future__ import annotations

import argparse
import dataclasses

from ..analysis.tuning import DEFAULT_RANGE, TARGETS, TUNABLE_LOSSES, tune
from ..api import solve
from ..solvers.theory import solve_theory
from ..validation import check_float, fail, parse_list
from ._common import EXIT_OK, add_model_arguments, add_spec_arguments, spec_from_args, summary

#: Exit code when no gamma in the range meets the full target exactly.
EXIT_NOT_REACHED = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``tune`` subcommand."""
    p = subparsers.add_parser(
        "tune",
        help="find the loss exponent gamma that reaches a symmetric geometry",
        description="Inverse design by root finding on the exact closed-form geometry. Targets: "
        + "; ".join(f"{name}: {text}" for name, text in TARGETS.items())
        + ". Exit 0 when the target is met exactly, 1 when the best gamma only approaches it.",
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
    tuning = tune(
        base.counts,
        args.loss,
        args.target,
        search_range=tuple(bounds),
        dim=base.dim,
        tau=tau,
        bias=base.bias,
        features=base.features,
    )
    spec = dataclasses.replace(tuning.spec, source=base.source)
    print(f"gamma = {tuning.gamma:.10g}")
    state = "met" if tuning.achieved else "NOT met exactly"
    print(
        f"target {args.target} ({TARGETS[args.target]}): {state}, deviation {tuning.deviation:.2e}"
    )
    if len(tuning.roots) > 1:
        print("other roots of the residual: " + ", ".join(f"{g:.10g}" for g in tuning.roots))
    print(summary(solve(spec, "theory") if spec.variant else solve_theory(spec)))
    return EXIT_OK if tuning.achieved else EXIT_NOT_REACHED
