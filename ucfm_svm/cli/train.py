"""``ucfm-svm train``: gradient descent on the unregularized UFM, against the loss's SVM limit."""

from __future__ import annotations

import argparse

from ..regularized.training import gradient_descent
from ._common import EXIT_OK, STDOUT, add_spec_arguments, spec_from_args
from .path import add_training_arguments, check_outputs, compared_specs, table, write_outputs


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="gradient descent on the unregularized UFM of a loss, against its SVM limit",
        description="Run plain or normalized gradient descent on the unregularized UFM of the "
        "loss from a small random start, and report how far the normalized classifier and "
        "embedding Grams are from the loss's certified SVM geometry along the iterations.",
    )
    add_spec_arguments(p)
    p.add_argument(
        "--optimizer",
        default="gd",
        choices=["gd", "ngd"],
        help="plain (x -= lr grad) or normalized (x -= lr grad/||grad||) gradient descent",
    )
    p.add_argument(
        "--steps", default=10_000, type=int, help="gradient steps (default 10000, at most 10^7)"
    )
    p.add_argument(
        "--lr", default=None, type=float, help="step size (default 1/n for gd, 0.05 for ngd)"
    )
    p.add_argument(
        "--init-scale", default=1e-3, type=float, help="scale of the random start (default 1e-3)"
    )
    p.add_argument(
        "--records",
        default=40,
        type=int,
        help="about this many log-spaced records (default 40, at most 10000)",
    )
    add_training_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Train the loss and each ``--compare`` loss; print, write JSON and figure."""
    spec = spec_from_args(args)
    check_outputs(args)
    runs = [
        gradient_descent(
            s,
            steps=args.steps,
            lr=args.lr,
            normalized=args.optimizer == "ngd",
            init_scale=args.init_scale,
            seed=args.seed,
            level=args.level,
            records=args.records,
        )
        for s in [spec, *compared_specs(args, spec)]
    ]
    if args.json != STDOUT:
        print("\n\n".join(table(t) for t in runs))
    write_outputs(args, runs)
    return EXIT_OK
