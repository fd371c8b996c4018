"""``ucfm-svm solve``: one UF-CS-SVM, solved and certified, summarized and written as JSON."""

from __future__ import annotations

import argparse

from ..api import METHODS, method_options, solve
from ..convex import LEVELS
from ..result import OPTIMAL
from ._common import EXIT_NOT_CERTIFIED, EXIT_OK, add_spec_arguments, spec_from_args, summary


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``solve`` subcommand."""
    p = subparsers.add_parser(
        "solve",
        help="solve and certify one UF-CS-SVM",
        description="Solve the UF-CS-SVM for the given class counts and loss, print its "
        "certified geometry, and optionally write it as JSON.",
    )
    add_spec_arguments(p)
    p.add_argument(
        "--method",
        default="convex",
        choices=sorted(METHODS),
        help="solution method (default convex)",
    )
    p.add_argument(
        "--level",
        default="class",
        choices=LEVELS,
        help="class level (k x k, any n) or example level (k x n)",
    )
    p.add_argument(
        "--solver",
        default=None,
        choices=["CLARABEL", "SCS"],
        type=str.upper,
        help="convex backend (default Clarabel, then SCS)",
    )
    nonconvex = p.add_argument_group("non-convex method (--method nonconvex)")
    nonconvex.add_argument(
        "--restarts", default=None, type=int, metavar="N", help="random starts (default 1)"
    )
    nonconvex.add_argument(
        "--seed", default=None, type=int, metavar="S", help="seed of the starts (default 0)"
    )
    nonconvex.add_argument(
        "--alternations",
        default=None,
        type=int,
        metavar="R",
        help="rounds of exact block steps before the joint refinement "
        "(default 2 at the class level, 0 at the example level)",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="write the result as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Solve, print the summary, write JSON; exit 0 iff the result is certified optimal."""
    spec = spec_from_args(args)
    options = {
        name: getattr(args, name)
        for name in method_options(args.method)
        if getattr(args, name, None) is not None
    }
    result = solve(spec, args.method, **options)
    print(summary(result))
    if args.json:
        result.to_json(args.json)
        print(f"wrote {args.json}")
    return EXIT_OK if result.status == OPTIMAL else EXIT_NOT_CERTIFIED
