"""``ucfm-svm reproduce``: the main job (verification grid, figures, report) on a default."""

from __future__ import annotations

import argparse

from ..runs.reproduce import ReproduceConfig, reproduce
from ._common import EXIT_NOT_CERTIFIED, EXIT_OK
from ._runs import EXIT_INTERRUPTED, add_backend_arguments, backend_kwargs, sigterm_as_interrupt


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``reproduce`` subcommand."""
    p = subparsers.add_parser(
        "reproduce",
        help="run the main job: verification grid, figures and a markdown report",
        description="Solve a STEP verification grid (several k, R, rho; CE, LDT, CDT, VS) by "
        "every route (closed form, convex, non-convex), tune the symmetric hyperparameters, "
        "draw the core figures and write DIR/report.md. A rerun with the same DIR skips the "
        "grid points already solved.",
    )
    p.add_argument("--out", default="out", metavar="DIR", help="output directory (default ./out)")
    add_backend_arguments(p)
    p.add_argument(
        "--quick",
        action="store_true",
        help="a seconds-long smoke run (one grid point per loss, coarse figures)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the job; exit 0 iff every grid specification passed, else 3."""
    config = ReproduceConfig.quick() if args.quick else ReproduceConfig()
    try:
        with sigterm_as_interrupt() as stop_if_terminated:

            def step(text: str) -> None:
                stop_if_terminated()
                if not args.quiet:
                    print(f"- {text}", flush=True)

            outcome = reproduce(
                args.out,
                config,
                progress=not args.quiet,
                on_step=step,
                on_record=lambda _record: stop_if_terminated(),
                **backend_kwargs(args),
            )
    except KeyboardInterrupt:
        print(
            f"interrupted: finished grid points are saved in {args.out}/verification.jsonl; "
            "rerun the same command to resume"
        )
        return EXIT_INTERRUPTED
    passed = sum(r.passed for r in outcome.rows)
    print(outcome.sweep_text)
    print(f"verification: {passed} of {len(outcome.rows)} specifications pass")
    for loss, target, gamma, note in outcome.tunings:
        shown = "-" if gamma is None else f"{gamma:.6g}"
        print(f"tuned {loss} {target}: gamma = {shown} ({note})")
    print(
        f"wrote {outcome.report} and {len(outcome.figures)} figure files in {outcome.seconds:.1f} s"
    )
    return EXIT_OK if outcome.passed else EXIT_NOT_CERTIFIED
