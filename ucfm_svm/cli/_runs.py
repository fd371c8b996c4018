"""Flags and signal handling shared by the long-running subcommands (``sweep``, ``reproduce``)."""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Callable, Iterator
from types import FrameType

from ..runs.backends import BACKENDS, max_local_jobs
from ..validation import fail

#: Exit code after Ctrl-C or SIGTERM (128 + SIGINT), as shells report an interrupted command.
EXIT_INTERRUPTED = 130


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--jobs``, ``--backend``, ``--scheduler`` and ``--address``."""
    group = parser.add_argument_group("where the points run")
    group.add_argument(
        "--jobs",
        default=None,
        metavar="N",
        help="worker processes started on this machine (default 1: this process with the "
        f"local backend; at most {max_local_jobs()} here, 4 per CPU core)",
    )
    group.add_argument(
        "--backend",
        default="local",
        choices=BACKENDS,
        help="local: this machine (joblib processes); dask / ray: a cluster, the one at "
        "--scheduler / --address or else a local one of --jobs workers (optional extras "
        "ucfm-svm[dask], ucfm-svm[ray]; default local)",
    )
    group.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="address of a running Dask scheduler (tcp://HOST:PORT), with --backend dask",
    )
    group.add_argument(
        "--address",
        default=None,
        metavar="ADDRESS",
        help="address of a running Ray cluster (HOST:PORT or ray://HOST:PORT), with --backend ray",
    )


def backend_kwargs(args: argparse.Namespace) -> dict:
    """``jobs``, ``backend``, ``address`` for :func:`ucfm_svm.runs.sweep.run_sweep` from the
    flags; raises ``SpecError`` for a flag that does not go with the chosen backend."""
    if args.scheduler is not None and args.backend != "dask":
        raise fail("scheduler", "given only with --backend dask", args.scheduler)
    if args.address is not None and args.backend != "ray":
        raise fail("address", "given only with --backend ray", args.address)
    address = args.scheduler if args.backend == "dask" else args.address
    if address is not None and args.jobs is not None:
        flag = "scheduler" if args.backend == "dask" else "address"
        raise fail(
            "jobs", f"left unset with --{flag} (the cluster's workers run the points)", args.jobs
        )
    return {
        "jobs": 1 if args.jobs is None else args.jobs,
        "backend": args.backend,
        "address": address,
    }


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[Callable[[], None]]:
    """Within this context SIGTERM raises ``KeyboardInterrupt``, as Ctrl-C does, so that a
    terminated run stops the same clean way (records kept, workers stopped, exit 130).

    Yields a check that raises ``KeyboardInterrupt`` if a SIGTERM has arrived: call it between
    units of work. A handler's exception is lost when it runs inside a finalizer (``__del__``,
    a garbage-collection callback), whose errors Python only prints, and during a convex solve
    stderr itself is redirected, so a sweep could ignore the signal and run to the end.
    """
    received: list[int] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    def check() -> None:
        if received:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield check
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = ["EXIT_INTERRUPTED", "add_backend_arguments", "backend_kwargs", "sigterm_as_interrupt"]
