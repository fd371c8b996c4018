"""Command-line interface: ``ucfm-svm <subcommand> ...``.

Each subcommand lives in its own module exposing ``register(subparsers)``; the parsed namespace
carries ``run(args) -> exit code``. Only this package prints and chooses exit codes:
0 success, 1 a check failed, 2 bad input (or a problem too large for memory), 3 not certified or
solver failure, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .. import __version__
from ..errors import SolverError, SpecError
from . import analyze, collapse, path, plot, reproduce, solve, study, sweep, train, tune, verify
from ._common import EXIT_NOT_CERTIFIED, EXIT_USAGE, Parser, as_typed, print_error

#: Exit codes of an interrupted run: 128 + the signal number, as shells report them.
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
#: Set to 1 to see the traceback of an unexpected error instead of its one-line message.
DEBUG_VARIABLE = "UCFM_SVM_DEBUG"

SUBCOMMANDS = (solve, verify, tune, path, train, plot, sweep, reproduce, analyze, study, collapse)


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
    with _numerical_warnings() as caught, _sigterm_interrupts():
        code = _run(prog, args, _options(parser, args.command))
    if caught and code == 0:
        first = caught[0]
        more = f" (and {len(caught) - 1} more)" if len(caught) > 1 else ""
        print(
            f"{prog}: note: numerical warning during the run: {first.message}{more}",
            file=sys.stderr,
        )
    return code


def _run(prog: str, args: object, options: set[str]) -> int:
    """Run the subcommand; every failure becomes one line on stderr and an exit code
    (errors name the flags as typed: ``options`` are the subcommand's option strings)."""
    try:
        return args.run(args)  # type: ignore[attr-defined]
    except SpecError as exc:
        print_error(prog, as_typed(str(exc), options))
        return EXIT_USAGE
    except SolverError as exc:
        print_error(prog, exc)
        return EXIT_NOT_CERTIFIED
    except _Terminated:
        print_error(prog, "terminated (SIGTERM); finished work that this command saves is kept")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print_error(prog, "interrupted; finished work that this command saves is kept")
        return EXIT_INTERRUPTED
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
    except Exception as exc:  # a defect: still one line, the traceback on request
        if os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        print_error(
            prog,
            f"internal error ({type(exc).__name__}: {exc}); please report it with the command "
            f"line (set {DEBUG_VARIABLE}=1 for the traceback)",
        )
        return EXIT_NOT_CERTIFIED


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so it unwinds like Ctrl-C."""


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Terminated` for the duration of a run (main thread only)."""
    def handler(signum: int, frame: object) -> None:
        raise _Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. the CLI called from a worker thread)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _numerical_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Record warnings (numpy RuntimeWarnings, solver warnings) instead of printing them.

    :func:`main` reports them as one ``note`` line after a successful run; after a failure the
    error line is the whole output.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _options(parser: Parser, command: str) -> set[str]:
    """Option strings of the subcommand ``command`` (to name flags as the user typed them)."""
    for action in parser._subparsers._group_actions:  # argparse keeps subparsers here
        sub = action.choices.get(command) if isinstance(action.choices, dict) else None
        if sub is not None:
            return set(sub._option_string_actions)
    return set()


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
