"""Command-line interface: ``ucfm-svm <subcommand> ...``.

Each subcommand lives in its own module exposing ``register(subparsers)``; the parsed namespace
carries ``run(args) -> exit code``. Only this package prints and chooses exit codes:
0 success, 2 bad input (or a problem too large for memory), 3 not certified or solver failure.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import SolverError, SpecError
from . import analyze, collapse, path, plot, reproduce, solve, sweep, train, tune, verify
from ._common import EXIT_NOT_CERTIFIED, EXIT_USAGE, Parser, print_error

SUBCOMMANDS = (solve, verify, tune, path, train, plot, sweep, reproduce, analyze, collapse)


def build_parser() -> Parser:
    """The top-level parser with every subcommand registered."""
    parser = Parser(prog="ucfm-svm", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors (already printed)
        return int(exc.code or 0)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USAGE
    prog = f"ucfm-svm {args.command}"
    try:
        return args.run(args)
    except SpecError as exc:
        print_error(prog, exc)
        return EXIT_USAGE
    except SolverError as exc:
        print_error(prog, exc)
        return EXIT_NOT_CERTIFIED
    except MemoryError as exc:  # e.g. --step 200000,10,0.5: dense k x k matrices of 300 GiB
        print_error(
            prog,
            f"the problem does not fit in memory ({exc}); try fewer classes or examples, the "
            "class level, or a smaller --dim",
        )
        return EXIT_USAGE
    except OSError as exc:  # an output folder or file that cannot be made or written
        if isinstance(exc, BrokenPipeError):
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print_error(
            prog,
            f"cannot use the path{where}: {exc.strerror or exc}; give a "
            "writable location (--out, --json, --plot)",
        )
        return EXIT_USAGE


def entry() -> None:
    """Console-script entry point.

    A closed pipe (``ucfm-svm solve ... | head``) ends quietly, as the Python documentation's
    SIGPIPE recipe does, instead of with a traceback.
    """
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    sys.exit(code)
