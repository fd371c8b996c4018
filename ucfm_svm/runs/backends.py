"""Where the points of a sweep run: this process, local worker processes, a Dask or a Ray cluster.

Every backend has one job: given point specifications (the small dicts of
:func:`ucfm_svm.runs.sweep.make_point`), run :func:`ucfm_svm.runs.sweep.run_point` on each
somewhere and hand each record back to the driver *as soon as that point ends*
(:meth:`Backend.run`, in completion order: ``concurrent.futures.wait``, Dask's
``as_completed``, ``ray.wait``). The driver (:func:`ucfm_svm.runs.sweep.run_sweep`) alone writes
the JSONL file, so a record is written once whatever happens to a worker.

- ``local``: ``jobs = 1`` runs in this process; more jobs run in joblib's loky worker
  processes (one executor, at most ``jobs`` points in flight).
- ``dask``: a ``dask.distributed`` cluster. With ``scheduler`` the existing one at that address
  (for instance a SLURM cluster started with dask-jobqueue); without, a local cluster of ``jobs``
  single-threaded worker processes, shut down at the end.
- ``ray``: a Ray cluster. With ``address`` the existing one; without, a local Ray instance
  limited to ``jobs`` CPUs, a small object store and no dashboard, shut down at the end.

Workers pin BLAS and OpenMP to one thread (threadpoolctl) and return plain JSON-ready records.

Worker failures: a point whose worker process dies is run again, at most
:data:`MAX_ATTEMPTS` times in all, then recorded as failed. Dask's scheduler does this itself
(a task whose workers died ``distributed.scheduler.allowed-failures`` times, 3 by default, raises
``KilledWorker``); Ray's tasks get ``max_retries = MAX_ATTEMPTS - 1``; for loky, whose pool
breaks as a whole when a worker dies, the driver resubmits every point that was in flight to a
fresh pool, counts an attempt for each, and runs these retries one at a time.

Orphans: the worker processes of the pools and local Dask clusters started here watch the
process that started them and exit within a second once it is gone; a local Ray instance gets
a reaper process (:mod:`ucfm_svm.runs.reaper`) that kills Ray's processes once the driver is
gone. So killing a sweep (even with SIGKILL, which runs no clean-up) leaves no process behind.
Workers of an existing cluster are not touched.

``dask`` and ``ray`` are optional extras (``pip install "ucfm-svm[dask]"``, ``"ucfm-svm[ray]"``)
and are imported only here, when their backend is chosen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..validation import Shown, check_int, fail
from .sweep import FAILED, point_key, point_label, run_point

#: Backend names.
BACKENDS = ("local", "dask", "ray")
#: Runs of one point (the first and the retries) before its worker's death makes it fail.
MAX_ATTEMPTS = 3
#: Upper bound on ``jobs`` for the workers started on this machine, per CPU core: more
#: processes than this only add memory (each worker holds numpy, scipy and cvxpy, ~0.2 GiB).
JOBS_PER_CPU = 4
#: Object store of a local Ray instance (bytes): records are small.
RAY_OBJECT_STORE = 200 * 1024**2
#: Seconds to wait for an existing scheduler or cluster to answer.
CONNECT_TIMEOUT = 30
#: Seconds between two checks of a worker on the process that started it.
WATCH_INTERVAL = 0.5

_EXTRAS = {"dask": "dask", "ray": "ray"}


class WorkerLostError(Exception):
    """The process running a point died before it returned (a retry may succeed)."""


def max_local_jobs() -> int:
    """Largest ``jobs`` for workers started on this machine: :data:`JOBS_PER_CPU` per core."""
    return JOBS_PER_CPU * (os.cpu_count() or 1)


@dataclass(frozen=True)
class BackendConfig:
    """Which backend runs a sweep: ``name`` in :data:`BACKENDS`, local worker count ``jobs``,
    and the ``address`` of an existing cluster (Dask scheduler or Ray head), if any.

    ``jobs`` counts the worker processes started here; with an ``address`` the cluster's own
    workers run the points and ``jobs`` must stay 1.
    """

    name: str = "local"
    jobs: int = 1
    address: str | None = None

    def __post_init__(self) -> None:
        if self.name not in BACKENDS:
            raise fail("backend", "one of " + ", ".join(BACKENDS), self.name)
        jobs = check_int("jobs", self.jobs, low=1, high=max_local_jobs())
        object.__setattr__(self, "jobs", jobs)
        if self.address is not None:
            flag = {"dask": "scheduler", "ray": "address"}.get(self.name)
            if flag is None:
                raise fail("address", "left unset with the local backend", self.address)
            if not isinstance(self.address, str) or not self.address.strip():
                raise fail(flag, "a cluster address such as tcp://HOST:PORT", self.address)
            if jobs != 1:
                raise fail(
                    "jobs",
                    f"left unset with --{flag} (the cluster's own workers run the points)",
                    jobs,
                )

    @property
    def starts_workers(self) -> bool:
        """Whether this backend starts worker processes on this machine."""
        return self.address is None and (self.name != "local" or self.jobs > 1)


def run_pinned(point: dict) -> dict:
    """Run one point with BLAS and OpenMP limited to one thread (the worker-side entry)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return run_point(point)


def failed_record(point: dict, error: str) -> dict:
    """The record of a point that never returned (its worker died, the cluster refused it)."""
    return {
        "key": point_key(point),
        "point": point,
        "label": point_label(point),
        "state": FAILED,
        "error": error,
        "seconds": None,
    }


# --- orphan protection ---
def watch_parent(parent: int, interval: float = WATCH_INTERVAL) -> None:
    """Exit this process (``os._exit``) within ``interval`` s once its parent ``parent`` is gone.

    ``parent`` is the process id of the driver that started this worker, passed by the driver
    itself (a worker still starting up when its driver dies would otherwise take its new
    parent for the old one). A daemon thread polls ``os.getppid()``: once the parent dies the
    worker is re-parented (to init or a subreaper) and the value changes. The worker ends at
    once, without clean-up: the only process that wanted its results is gone.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="ucfm-svm-parent-watch", daemon=True).start()


def worker_start(parent: int) -> None:
    """Set up a worker process started here by the driver ``parent``: :func:`watch_parent`, and
    Ctrl-C left to the driver (a terminal sends SIGINT to the whole process group; the driver
    stops the workers)."""
    with contextlib.suppress(ValueError):  # not the main thread (a Dask worker's plugin)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch_parent(parent)


class _ParentWatch:
    """Dask worker plugin: :func:`worker_start` in each worker process of a local cluster (the
    nannies run in the driver, so the workers are its children)."""

    name = "ucfm-svm-parent-watch"

    def __init__(self) -> None:
        self.parent = os.getpid()

    def setup(self, worker: object) -> None:
        worker_start(self.parent)


# --- backends ---
class Backend:
    """Runs points somewhere; :meth:`run` yields ``(point, outcome)`` as each point ends.

    A backend is a context manager: leaving it (normally, on an error or on Ctrl-C) cancels
    what is still queued and stops every process it started.
    """

    #: Readable description, e.g. ``"dask (local cluster, 2 workers)"``.
    description = ""

    def run(
        self, points: Sequence[dict], isolate: bool = False
    ) -> Iterator[tuple[dict, dict | WorkerLostError]]:
        """Run ``points``; yield each with its record (or the worker loss) in completion order.

        ``isolate`` asks for one point at a time where a worker's death takes down the points
        running beside it (loky), so that a retry tells the point that kills its worker from
        the others.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Stop the workers and clusters this backend started."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcess(Backend):
    """``local`` with one job: each point runs in this process, in order."""

    description = "local (this process)"

    def run(
        self, points: Sequence[dict], isolate: bool = False
    ) -> Iterator[tuple[dict, dict | WorkerLostError]]:
        for point in points:
            yield point, run_point(point)


class Loky(Backend):
    """``local`` with several jobs: joblib's loky process pool, ``jobs`` points in flight.

    The workers start with :func:`watch_parent` and with the thread-count variables of BLAS and
    OpenMP set to 1. When a worker dies the pool breaks: every point in flight comes back as
    :class:`WorkerLostError` and the next :meth:`run` starts a fresh pool.
    """

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.description = f"local ({jobs} worker processes)"
        self._executor = None

    def _pool(self):
        from joblib.externals.loky import ProcessPoolExecutor

        if self._executor is None:
            one = {name: "1" for name in _THREAD_VARIABLES}
            self._executor = ProcessPoolExecutor(
                max_workers=self.jobs, initializer=worker_start, initargs=(os.getpid(),), env=one
            )
        return self._executor

    def run(
        self, points: Sequence[dict], isolate: bool = False
    ) -> Iterator[tuple[dict, dict | WorkerLostError]]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        queue = list(reversed(points))
        running: dict = {}
        while queue or running:
            pool = self._pool()
            broken = None
            try:
                while queue and len(running) < (1 if isolate else self.jobs):
                    running[pool.submit(run_pinned, queue[-1])] = queue[-1]
                    queue.pop()
            except BrokenProcessPool as exc:  # a worker died since the last wait
                broken = exc
            done = set() if broken else wait(list(running), return_when=FIRST_COMPLETED)[0]
            for future in done:
                exc = future.exception()
                if isinstance(exc, BrokenProcessPool):  # loky's TerminatedWorkerError too
                    broken = exc
                    continue
                point = running.pop(future)
                if exc is None:
                    yield point, future.result()
                else:  # run_point records its own errors: this one came from the pool
                    yield point, failed_record(point, f"{type(exc).__name__}: {_first_line(exc)}")
            if broken is not None:  # the whole pool is gone: every point in flight is lost
                lost = list(running.values())
                running.clear()
                self._discard()
                for point in lost:
                    yield point, WorkerLostError(f"{type(broken).__name__}: {_first_line(broken)}")

    def _discard(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, kill_workers=True)
            self._executor = None

    def close(self) -> None:
        self._discard()


class Dask(Backend):
    """A ``dask.distributed`` cluster: an existing scheduler, or a local cluster started here."""

    def __init__(self, jobs: int, scheduler: str | None) -> None:
        distributed = _import("dask", "distributed")
        self._cluster = None
        if scheduler is None:
            try:
                self._cluster = distributed.LocalCluster(
                    n_workers=jobs,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                    env={name: "1" for name in _THREAD_VARIABLES},
                )
            except Exception as exc:  # e.g. "Nanny failed to start"
                raise fail(
                    "backend",
                    "a backend that can start here (dask could not start a local cluster; "
                    "try --backend local)",
                    Shown(f"dask ({_first_line(exc)})"),
                ) from None
            self.client = distributed.Client(self._cluster, set_as_default=False)
            self.client.register_plugin(_dask_watch_plugin(distributed))
            self.description = f"dask (local cluster, {jobs} workers)"
        else:
            try:
                self.client = distributed.Client(
                    scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False
                )
            except (OSError, TimeoutError, ValueError) as exc:
                raise fail(
                    "scheduler",
                    "the address of a running Dask scheduler (e.g. tcp://HOST:8786)",
                    f"{scheduler} ({_first_line(exc)})",
                ) from None
            self.description = f"dask (scheduler {scheduler})"
        self._futures: list = []

    def run(
        self, points: Sequence[dict], isolate: bool = False
    ) -> Iterator[tuple[dict, dict | WorkerLostError]]:
        from distributed import as_completed

        by_key = {}
        for point in points:
            future = self.client.submit(run_pinned, point, pure=False)
            by_key[future.key] = point
            self._futures.append(future)
        for future in as_completed(self._futures, loop=self.client.loop):
            point = by_key[future.key]
            try:
                record = future.result()
            except Exception as exc:  # KilledWorker after the retries, or a worker-side error
                record = failed_record(point, f"{type(exc).__name__}: {_first_line(exc)}")
            future.release()
            yield point, record
        self._futures = []

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._futures:
                self.client.cancel(self._futures)
        self._futures = []
        with contextlib.suppress(Exception):
            self.client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()


class Ray(Backend):
    """A Ray cluster: an existing one at ``address``, or a limited local instance started here."""

    def __init__(self, jobs: int, address: str | None) -> None:
        ray = _import("ray", "ray")
        self._ray = ray
        options = {"log_to_driver": False, "configure_logging": False}
        self._reaper = None
        try:
            if address is None:
                self._reaper = _start_reaper()
                ray.init(
                    num_cpus=jobs,
                    object_store_memory=RAY_OBJECT_STORE,
                    include_dashboard=False,
                    **options,
                )
                self.description = f"ray (local instance, {jobs} CPUs)"
            else:
                ray.init(address=address, **options)
                self.description = f"ray (cluster {address})"
        except Exception as exc:  # e.g. "The current node timed out during startup" under load
            self.close()
            if address is None:
                raise fail(
                    "backend",
                    "a backend that can start here (ray could not start a local instance; "
                    "try --backend dask or local)",
                    Shown(f"ray ({_first_line(exc)})"),
                ) from None
            raise fail(
                "address",
                "a reachable Ray cluster (HOST:6379 or ray://HOST:10001)",
                f"{address} ({_first_line(exc)})",
            ) from None
        self._task = ray.remote(num_cpus=1, max_retries=MAX_ATTEMPTS - 1)(_ray_point)
        self._pending: list = []

    def run(
        self, points: Sequence[dict], isolate: bool = False
    ) -> Iterator[tuple[dict, dict | WorkerLostError]]:
        ray = self._ray
        by_ref = {}
        for point in points:
            ref = self._task.remote(point)
            by_ref[ref] = point
        self._pending = list(by_ref)
        while self._pending:
            done, self._pending = ray.wait(self._pending, num_returns=1)
            for ref in done:
                point = by_ref.pop(ref)
                try:
                    record = ray.get(ref)
                except Exception as exc:  # the worker died MAX_ATTEMPTS times, or a task error
                    record = failed_record(point, f"{type(exc).__name__}: {_first_line(exc)}")
                yield point, record

    def close(self) -> None:
        with contextlib.suppress(Exception):
            for ref in self._pending:
                self._ray.cancel(ref, force=True)
        self._pending = []
        with contextlib.suppress(Exception):
            self._ray.shutdown()
        if self._reaper is not None:
            self._reaper.kill()
            self._reaper.wait()
            self._reaper = None


def _start_reaper() -> subprocess.Popen:
    """Start :mod:`ucfm_svm.runs.reaper` on this process (it stops Ray's processes if this
    driver is killed without clean-up), in its own session so that a signal sent to the
    driver's process group leaves it running."""
    return subprocess.Popen(
        [sys.executable, "-m", "ucfm_svm.runs.reaper", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [_package_root(), os.environ.get("PYTHONPATH")])
            ),
        },
    )


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def _ray_point(point: dict) -> dict:
    """Ray task body: :func:`run_pinned` (Ray's own workers are long-lived processes)."""
    return run_pinned(point)


_THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def _dask_watch_plugin(distributed: object) -> object:
    """A ``distributed.WorkerPlugin`` instance running :func:`watch_parent` in each worker."""
    plugin_type = type("ParentWatch", (_ParentWatch, distributed.WorkerPlugin), {})
    plugin_type.__module__ = __name__
    return plugin_type()


def _import(extra: str, module: str) -> object:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise fail(
            "backend",
            f"a backend whose package is installed (for {extra}: pip install "
            f"'ucfm-svm[{_EXTRAS[extra]}]')",
            extra,
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_backend(config: BackendConfig) -> Backend:
    """Start the backend ``config`` names (a context manager; see :class:`Backend`)."""
    if config.name == "dask":
        return Dask(config.jobs, config.address)
    if config.name == "ray":
        return Ray(config.jobs, config.address)
    return Loky(config.jobs) if config.jobs > 1 else InProcess()


def run_records(
    backend: Backend,
    points: Sequence[dict],
    max_attempts: int = MAX_ATTEMPTS,
    on_retry: Callable[[dict, WorkerLostError], None] | None = None,
) -> Iterator[dict]:
    """Records of ``points`` from ``backend`` as they arrive; lost points are retried.

    A point whose worker died (:class:`WorkerLostError`) goes back into the queue until it has run
    ``max_attempts`` times, then gets a failed record; each point yields exactly one record.
    Retries run isolated (see :meth:`Backend.run`).
    """
    attempts = dict.fromkeys((point_key(p) for p in points), 0)
    todo = list(points)
    retry = False
    while todo:
        lost = []
        for point, outcome in backend.run(todo, isolate=retry):
            key = point_key(point)
            attempts[key] += 1
            if not isinstance(outcome, WorkerLostError):
                yield outcome
            elif attempts[key] >= max_attempts:
                yield failed_record(point, f"worker lost {attempts[key]} times: {outcome}")
            else:
                if on_retry is not None:
                    on_retry(point, outcome)
                lost.append(point)
        todo, retry = lost, True


__all__ = [
    "BACKENDS",
    "MAX_ATTEMPTS",
    "Backend",
    "BackendConfig",
    "WorkerLostError",
    "failed_record",
    "max_local_jobs",
    "open_backend",
    "run_pinned",
    "run_records",
    "watch_parent",
    "worker_start",
]
