"""``ucfm-svm verify``: solve one specification by every route and check that they agree."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..analysis.verify import DEFAULT_METHODS, verify
from ..validation import fail
from ._common import (
    add_model_arguments,
    add_spec_arguments,
    check_output_path,
    spec_from_args,
    writing,
)

#: Exit codes of ``verify``: every check passed, or at least one failed.
EXIT_PASSED, EXIT_FAILED = 0, 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``verify`` subcommand."""
    p = subparsers.add_parser(
        "verify",
        help="check that the closed form, convex and non-convex routes agree",
        description="Run the closed-form theory, the convex solve and (when installed) the "
        "non-convex solve on one specification; compare objective, Grams, norms, cosines and "
        "logits with tolerances set by each route's accuracy. Exit 0 when every check passes, "
        "1 otherwise.",
    )
    add_spec_arguments(p)
    add_model_arguments(p)
    p.add_argument(
        "--methods",
        default=None,
        metavar="M1,M2,...",
        help="routes to run (default: " + ",".join(DEFAULT_METHODS) + ", those that fit the "
        "size); the reference is the route with the strongest certificate",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="write the report as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Verify, print the report, write JSON; exit 0 iff every check passed."""
    spec = spec_from_args(args)
    methods = None if args.methods is None else [m.strip() for m in str(args.methods).split(",")]
    if methods is not None and any(not m for m in methods):
        raise fail("methods", "a comma-separated list of method names", args.methods)
    check_output_path("json", args.json)
    report = verify(spec, methods)
    print(report.to_text())
    if args.json:
        with writing("json", args.json):
            Path(args.json).write_text(report.to_json() + "\n")
        print(f"wrote {args.json}")
    return EXIT_PASSED if report.passed else EXIT_FAILED
