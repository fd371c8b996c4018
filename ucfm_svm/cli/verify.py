"""``ucfm-svm verify``: solve one specification by every route and check that they agree."""

from __future__ import annotations

import argparse
import json

from ..analysis.verify import DEFAULT_METHODS, verify
from ..validation import fail
from ._common import (
    EXIT_CHECK_FAILED,
    EXIT_NOT_CERTIFIED,
    EXIT_OK,
    STDOUT,
    add_model_arguments,
    add_spec_arguments,
    check_output_path,
    spec_from_args,
    write_json,
)

#: Exit codes of ``verify``: every check passed, or at least one comparison failed.
EXIT_PASSED, EXIT_FAILED = EXIT_OK, EXIT_CHECK_FAILED
#: Checks whose failure means a route was not certified or its solver failed (exit 3).
CERTIFICATION_CHECKS = ("solve", "certificate gap")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``verify`` subcommand."""
    p = subparsers.add_parser(
        "verify",
        help="check that the closed form, convex and non-convex routes agree",
        description="Run the closed-form theory, the convex solve and (when installed) the "
        "non-convex solve on one specification; compare objective, Grams, norms, cosines and "
        "logits with tolerances set by each route's accuracy. Exit 0 when every check passes, "
        "3 when a route was not certified or its solver failed, 1 when another check failed.",
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
    p.add_argument(
        "--json", default=None, metavar="PATH", help="write the report as JSON ('-': stdout)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Verify, print the report, write JSON; exit 0 iff every check passed (codes above)."""
    spec = spec_from_args(args)
    methods = None if args.methods is None else [m.strip() for m in str(args.methods).split(",")]
    if methods is not None and any(not m for m in methods):
        raise fail("methods", "a comma-separated list of method names", args.methods)
    check_output_path("json", args.json)
    report = verify(spec, methods)
    if args.json != STDOUT:
        print(report.to_text())
    if args.json:
        write_json("json", args.json, json.loads(report.to_json()))
    if report.passed:
        return EXIT_PASSED
    if any(c.quantity in CERTIFICATION_CHECKS for c in report.failures):
        return EXIT_NOT_CERTIFIED
    return EXIT_FAILED
