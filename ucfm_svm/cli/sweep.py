"""``ucfm-svm sweep FILE``: run a TOML grid of problems, resumable, one JSONL record per point."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..runs.sweep import load_sweep, run_sweep
from ..validation import fail
from ._common import EXIT_NOT_CERTIFIED, EXIT_OK
from ._runs import EXIT_INTERRUPTED, add_backend_arguments, backend_kwargs, sigterm_as_interrupt


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` subcommand."""
    p = subparsers.add_parser(
        "sweep",
        help="run a resumable grid of problems from a TOML file",
        description="Run every point of a TOML sweep file (see examples/step_sweep.toml), "
        "appending one JSON line per finished point. Rerunning with the same output skips "
        "the points already recorded, so an interrupted sweep resumes. The output must be new, "
        "empty or a sweep file, and is locked while the sweep runs.",
    )
    p.add_argument("file", metavar="FILE", help="TOML sweep file")
    p.add_argument(
        "--out",
        default=None,
        metavar="PATH",
        help="JSONL output (default: FILE with the suffix .jsonl)",
    )
    add_backend_arguments(p)
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again the points recorded as failed",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the sweep and print its summary; exit 3 if a point failed or was not certified."""
    out = Path(args.out) if args.out else Path(args.file).with_suffix(".jsonl")
    if out.exists() and Path(args.file).exists() and out.samefile(args.file):
        raise fail("out", "a path other than the sweep file itself (give --out)", str(out))
    sweep = load_sweep(args.file)
    try:
        with sigterm_as_interrupt() as stop_if_terminated:
            summary = run_sweep(
                sweep,
                out,
                retry_failed=args.retry_failed,
                progress=not args.quiet,
                on_record=lambda _record: stop_if_terminated(),
                **backend_kwargs(args),
            )
    except KeyboardInterrupt:
        print(f"interrupted: finished points are saved in {out}; rerun the same command to resume")
        return EXIT_INTERRUPTED
    print(summary.to_text())
    return EXIT_OK if summary.failed == 0 and summary.not_certified == 0 else EXIT_NOT_CERTIFIED


__all__ = ["EXIT_INTERRUPTED", "register", "run"]
