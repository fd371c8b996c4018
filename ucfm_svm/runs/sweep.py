"""Resumable parameter sweeps: a TOML grid of specifications and methods, one JSONL record each.

A sweep file (TOML) spans a grid::

    name = "step-grid"
    methods = ["convex", "verify"]       # keys of ucfm_svm.api.METHODS, or "verify"
    losses = ["ce", "ldt", "cdt"]        # presets (ucfm_svm.spec.LOSSES)
    gamma = [0.25, 0.5]                  # used by the losses that take gamma (cdt, ldt, vs)
    tau = [1.0]                          # used by the losses that take tau (la, vs); optional
    dim = [10]                           # embedding dimensions; optional (default k)

    [counts.step]                        # STEP profiles: every combination of the lists
    k = [4, 10]
    R = [10, 100]
    rho = [0.5]
    n_min = [1]                          # optional (default 1)

    [counts.longtail]                    # optional: exponential long tails
    k = [10]
    IF = [10, 100]
    n_max = [500]                        # optional (default 5000)

    [counts]
    explicit = [[10, 10, 1, 1]]          # optional: explicit count lists

    [options.convex]                     # keyword options of a method, passed to api.solve
    level = "class"

    [options.verify]                     # the routes compared by ucfm_svm.analysis.verify.verify
    methods = ["theory", "convex", "nonconvex"]

A scalar may stand for a one-element list. The points are the product counts x loss (x gamma x
tau where the loss takes them) x dim x method. The method ``verify`` runs
:func:`ucfm_svm.analysis.verify.verify` (every route, checked against each other) instead of one
solve.

Each finished point is appended at once, as one JSON line, to the output file; a rerun with the
same file skips every point already recorded, so an interrupted sweep resumes where it stopped.
A point that fails (a count profile that cannot be built, a solver failure) is recorded with its
error and the sweep goes on; a rerun with ``retry_failed=True`` drops those records and runs
them again.

The points run on a backend (:mod:`ucfm_svm.runs.backends`: this process, local worker
processes, a Dask or a Ray cluster); whatever the backend, only this driver writes the output,
one record per point as it arrives. The output is checked before anything is written to it (it
must be empty, missing or a sweep JSONL file: no other file is ever cut), locked for the time of
the run (a second sweep on it refuses), repaired (a partial last line from a killed run is cut)
and de-duplicated (two records of one point, e.g. from an older unlocked run, are reported and
one is kept).
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import api, geometry
from ..analysis.verify import verify
from ..files import atomic_writer
from ..progress import progress as show_progress
from ..result import OPTIMAL, jsonable
from ..spec import LOSSES, Spec, longtail_counts, step_counts
from ..validation import Shown, check_int, fail

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: Records keep the Gram matrices of problems with at most this many classes.
MAX_GRAM_CLASSES = 50
#: Record states.
DONE, FAILED = "done", "failed"
#: The sweep method that runs :func:`ucfm_svm.analysis.verify.verify` on a point.
VERIFY = "verify"
#: Status of a verify record whose checks all passed / did not all pass.
PASSED, CHECKS_FAILED = "passed", "checks failed"

_TOP_KEYS = ("name", "methods", "losses", "gamma", "tau", "dim", "counts", "options")
_PROFILES = {
    "step": (("k", "R", "rho"), {"n_min": 1}),
    "longtail": (("k", "IF"), {"n_max": 5000}),
}


@dataclass(frozen=True)
class Sweep:
    """A named list of points; each point is a JSON-ready dict (see :func:`make_point`)."""

    name: str
    points: tuple[dict, ...]

    def __post_init__(self) -> None:
        keys = [point_key(p) for p in self.points]
        if len(set(keys)) != len(keys):
            raise fail("points", "a list without repeated points", f"{len(keys)} points")


@dataclass(frozen=True)
class SweepSummary:
    """Outcome of :func:`run_sweep` over the points of one sweep."""

    path: Path
    total: int
    done: int
    failed: int
    ran: int
    worst_rel_gap: float | None
    worst_check: dict | None
    not_certified: int
    checks_failed: int
    failures: tuple[tuple[str, str], ...] = field(default=())
    duplicates: int = 0

    def to_text(self) -> str:
        """Readable summary (a few lines)."""
        lines = [
            f"sweep: {self.total} points, {self.done} done, {self.failed} failed "
            f"({self.ran} run now, {self.total - self.ran} recorded before) -> {self.path}",
            "worst relative certificate gap: "
            + ("none" if self.worst_rel_gap is None else f"{self.worst_rel_gap:.3e}")
            + f"; not certified: {self.not_certified}",
        ]
        if self.worst_check is not None:
            c = self.worst_check
            value = "n/a" if c["value"] is None else f"{c['value']:.3e}"
            lines.append(
                f"worst verification error: {value} ({c['quantity']}, {c['route']}, "
                f"tolerance {c['tolerance']:.1e}); points with failed checks: "
                f"{self.checks_failed}"
            )
        if self.duplicates:
            lines.append(
                f"removed {self.duplicates} duplicate record(s) from {self.path} "
                "(one record per point kept)"
            )
        for label, error in self.failures[:5]:
            lines.append(f"  failed {label}: {error}")
        if self.failed > 5:
            lines.append(f"  ... and {self.failed - 5} more failures (see the JSONL file)")
        return "\n".join(lines)


def make_point(
    counts: dict,
    loss: str,
    method: str,
    *,
    gamma: float | None = None,
    tau: float | None = None,
    dim: int | None = None,
    options: dict | None = None,
) -> dict:
    """One sweep point. ``counts`` is ``{"step": {k, R, rho, n_min}}``, ``{"longtail": {k, IF,
    n_max}}`` or ``{"explicit": [n_1, ...]}``; the specification is built (and may fail) when
    the point runs."""
    return {
        "counts": counts,
        "loss": loss,
        "gamma": gamma,
        "tau": tau,
        "dim": dim,
        "method": method,
        "options": dict(options or {}),
    }


def point_key(point: dict) -> str:
    """Canonical text of a point (sorted JSON): the identity used to skip finished points."""
    return json.dumps(point, sort_keys=True, separators=(",", ":"))


def point_label(point: dict) -> str:
    """Short readable label, e.g. ``step k=4 R=10 rho=0.5 n_min=1, cdt gamma=0.5, convex``."""
    ((kind, value),) = point["counts"].items()
    where = (
        kind + " " + " ".join(f"{k}={v:g}" for k, v in value.items())
        if isinstance(value, dict)
        else "counts=" + ",".join(str(v) for v in value)
    )
    hyper = " ".join(f"{n}={point[n]:g}" for n in ("gamma", "tau") if point[n] is not None)
    dim = "" if point["dim"] is None else f", d={point['dim']}"
    return f"{where}, {point['loss']}{' ' + hyper if hyper else ''}{dim}, {point['method']}"


# --- reading a sweep file ---
def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a TOML sweep file (module docstring); raises ``SpecError``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail("sweep", "a readable TOML sweep file", f"{path} ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise fail("sweep", "a TOML sweep file (UTF-8 text)", f"{path} (not UTF-8 text)") from None
    except tomllib.TOMLDecodeError as exc:
        raise fail("sweep", "a valid TOML file", f"{path} ({exc})") from None
    return sweep_from_dict(data, default_name=path.stem)


def _as_list(name: str, value: object) -> list:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise fail(name, "a non-empty list", value)
    return values


def _check_keys(name: str, table: object, allowed: Iterable[str]) -> dict:
    allowed = tuple(allowed)
    if not isinstance(table, dict):
        raise fail(name, "a table", table)
    for key in table:
        if key not in allowed:
            raise fail(
                f"{name}.{key}" if name else key,
                "a key among " + ", ".join(allowed),
                Shown("an unknown key"),
            )
    return table


def _number(name: str, value: object) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise fail(name, "a finite number or a list of finite numbers", value)
    return value


def _check_plain(name: str, value: object) -> None:
    """Option values are strings, finite numbers, booleans or lists of them: what a JSON record
    holds (TOML also has dates and times, which no method takes)."""
    if isinstance(value, list):
        for item in value:
            _check_plain(name, item)
    elif isinstance(value, (datetime.date, datetime.time, dict)) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        shown = Shown(f"a TOML {type(value).__name__}") if not isinstance(value, float) else value
        raise fail(name, "a string, a finite number, a boolean or a list of them", shown)


def _count_profiles(counts: object) -> list[dict]:
    table = _check_keys("counts", counts, (*_PROFILES, "explicit"))
    profiles = []
    for kind, (required, defaults) in _PROFILES.items():
        if kind not in table:
            continue
        grid = _check_keys(f"counts.{kind}", table[kind], (*required, *defaults))
        for key in required:
            if key not in grid:
                raise fail(f"counts.{kind}.{key}", "given (a number or a list)", None)
        names = (*required, *defaults)
        lists = [
            [
                _number(f"counts.{kind}.{n}", v)
                for v in _as_list(f"counts.{kind}.{n}", grid.get(n, defaults.get(n)))
            ]
            for n in names
        ]
        for combo in itertools.product(*lists):
            profiles.append({kind: dict(zip(names, combo, strict=True))})
    if "explicit" in table:
        for row in _as_list("counts.explicit", table["explicit"]):
            if not isinstance(row, list) or not all(isinstance(v, int) for v in row):
                raise fail("counts.explicit", "a list of lists of integers", row)
            profiles.append({"explicit": row})
    if not profiles:
        raise fail("counts", "a table with step, longtail or explicit", "an empty table")
    return profiles


def sweep_from_dict(data: dict, default_name: str = "sweep") -> Sweep:
    """Build a :class:`Sweep` from the parsed TOML (validated; raises ``SpecError``)."""
    data = _check_keys("", data, _TOP_KEYS)
    for key in ("methods", "losses", "counts"):
        if key not in data:
            raise fail(key, "given in the sweep file", None)
    name = str(data.get("name", default_name))
    methods = _as_list("methods", data["methods"])
    for m in methods:
        if not isinstance(m, str):
            raise fail("methods", "a list of method names", m)
        if m != VERIFY:
            api.method_options(m)  # raises for an unknown method
    losses = _as_list("losses", data["losses"])
    for loss in losses:
        if loss not in LOSSES:
            raise fail("losses", "a list of " + ", ".join(LOSSES), loss)
    gammas = [
        _number("gamma", g) for g in _as_list("gamma", data.get("gamma", [None])) if g is not None
    ] or [None]
    taus = [
        _number("tau", t) for t in _as_list("tau", data.get("tau", [None])) if t is not None
    ] or [None]
    dims = [
        check_int("dim", d, low=1)
        for d in _as_list("dim", data.get("dim", [None]))
        if d is not None
    ] or [None]
    options = _check_keys("options", data.get("options", {}), methods)
    for method, opts in options.items():
        allowed = ("methods",) if method == VERIFY else api.method_options(method)
        _check_keys(f"options.{method}", opts, allowed)
        for key, value in opts.items():
            _check_plain(f"options.{method}.{key}", value)
    points = []
    for counts in _count_profiles(data["counts"]):
        for loss in losses:
            g_list = gammas if "gamma" in LOSSES[loss] else [None]
            t_list = taus if "tau" in LOSSES[loss] else [None]
            for gamma, tau, dim, method in itertools.product(g_list, t_list, dims, methods):
                points.append(
                    make_point(
                        counts,
                        loss,
                        method,
                        gamma=gamma,
                        tau=tau,
                        dim=dim,
                        options=options.get(method, {}),
                    )
                )
    return Sweep(name=name, points=tuple(points))


# --- running one point ---
def point_spec(point: dict) -> Spec:
    """The specification of a point (raises ``SpecError`` if its counts or loss are invalid)."""
    ((kind, value),) = point["counts"].items()
    if kind == "step":
        counts = step_counts(value["k"], value["R"], value["rho"], value["n_min"])
    elif kind == "longtail":
        counts = longtail_counts(value["k"], value["IF"], value["n_max"])
    else:
        counts = value
    source = point_label(point).rsplit(", ", 1)[0]
    return Spec.from_loss(
        counts,
        point["loss"],
        gamma=point["gamma"],
        tau=point["tau"],
        dim=point["dim"],
        source=source,
    )


def run_point(point: dict) -> dict:
    """Run one point and return its record; never raises for a failing point.

    A record holds ``key``, ``point``, ``label``, ``state`` (``"done"`` or ``"failed"``),
    ``error``, ``seconds`` and, when done, the result's ``status``, ``message``, ``objective``,
    ``lower_bound``, ``rel_gap``, ``min_margin_ratio``, norms, grouped cosines (STEP-like
    specifications) and, for ``k <=`` :data:`MAX_GRAM_CLASSES`, both Gram matrices. A
    ``verify`` point records these for the reference route, ``status`` :data:`PASSED` or
    :data:`CHECKS_FAILED`, ``rel_gap`` the largest gap of its routes, ``routes``, ``checks``,
    and ``worst_check`` (largest error / tolerance) with ``verification_error`` its error.
    """
    record = {"key": point_key(point), "point": point, "label": point_label(point)}
    start = time.perf_counter()
    try:
        spec = point_spec(point)
        if point["method"] == VERIFY:
            report = verify(spec, point["options"].get("methods"))  # None: by size
            if report.reference is None:
                raise RuntimeError("no route succeeded: " + report.failures[0].note)
            result = report.results[report.reference]
        else:
            report = None
            result = api.solve(spec, point["method"], **point["options"])
    except Exception as exc:  # a failing point is recorded and the sweep goes on
        record.update(
            state=FAILED, error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - start
        )
        return record
    data = result.to_dict()
    record.update(state=DONE, error=None, seconds=time.perf_counter() - start)
    for key in (
        "status",
        "message",
        "objective",
        "lower_bound",
        "gap",
        "rel_gap",
        "min_margin_ratio",
        "solver",
        "classifier_norms",
        "embedding_norms",
    ):
        record[key] = data[key]
    record["k"] = spec.k
    groups = spec.step_groups()
    record["cosines"] = (
        None
        if groups is None or result.classifier_gram is None
        else {
            name: geometry.grouped_cosines(G, *groups)
            for name, G in (
                ("classifiers", result.classifier_gram),
                ("embeddings", result.embedding_gram),
            )
        }
    )
    if spec.k <= MAX_GRAM_CLASSES:
        record["classifier_gram"] = data["classifier_gram"]
        record["embedding_gram"] = data["embedding_gram"]
    if report is not None:
        full = report.to_dict()
        gaps = [r["rel_gap"] for r in full["routes"].values() if r["rel_gap"] is not None]
        worst = max(full["checks"], key=check_ratio)
        record.update(
            status=PASSED if report.passed else CHECKS_FAILED,
            reference=report.reference,
            rel_gap=max(gaps) if gaps else None,
            routes=full["routes"],
            checks=full["checks"],
            skipped=full["skipped"],
            worst_check=worst,
            verification_error=worst["value"],
        )
    return jsonable(record)


# --- the JSONL file ---
#: How every record line starts (``key`` is the first field :func:`run_point` writes).
_RECORD_START = b'{"key":'


@dataclass(frozen=True)
class _Scan:
    records: dict[str, dict]
    duplicates: int
    complete: int  # bytes up to the end of the last complete line


def _not_ours(path: Path, why: str) -> Exception:
    return fail("out", "a new file or a JSONL file written by ucfm-svm sweep", f"{path} ({why})")


def _is_record(record: object) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("key"), str)
        and isinstance(record.get("point"), dict)
        and record.get("state") in (DONE, FAILED)
    )


def _scan(path: Path) -> _Scan:
    """Read and check a sweep file without changing it (raises ``SpecError`` if not ours).

    Every complete line must be a record; a last line without its newline (a run killed while
    writing) must at least start like one. Of two records of one point the done one is kept, or
    else the later one.
    """
    if not path.exists():
        return _Scan({}, 0, 0)
    raw = path.read_bytes()
    complete = raw.rfind(b"\n") + 1
    tail = raw[complete:]
    if tail.strip() and not tail.startswith(_RECORD_START):
        raise _not_ours(path, "its last line is not a sweep record")
    try:
        text = raw[:complete].decode("utf-8")
    except UnicodeDecodeError:
        raise _not_ours(path, "not UTF-8 text") from None
    records: dict[str, dict] = {}
    duplicates = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not _is_record(record):
            raise _not_ours(path, f"line {number} is not a sweep record")
        old = records.get(record["key"])
        if old is not None:
            duplicates += 1
            if old["state"] == DONE and record["state"] != DONE:
                continue
        records[record["key"]] = record
    return _Scan(records, duplicates, complete)


def read_records(path: str | Path) -> dict[str, dict]:
    """Records of a JSONL sweep file by key; ``{}`` if there is no file. Read only.

    Of two records of one point the done one wins, or else the later one; a partial last line
    (a run killed while writing) is ignored. Raises ``SpecError`` for a file that is not a
    sweep file.
    """
    return _scan(Path(path)).records


def _write_records(path: Path, records: Iterable[dict]) -> None:
    with atomic_writer(path) as fh:
        for record in records:
            fh.write(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")


def prepare_output(path: str | Path, drop_failed: bool = False) -> tuple[dict[str, dict], int]:
    """Check the sweep output ``path`` and make it ready for appending; ``(records, duplicates)``.

    Call it under :func:`output_lock`. A file that is not a sweep file raises ``SpecError`` and
    is left untouched. A partial last line is cut off (so appending resumes on a clean line);
    duplicate records (reported as their count) and, with ``drop_failed``, failed records are
    removed by rewriting the file atomically.
    """
    path = Path(path)
    scan = _scan(path)
    records = scan.records
    if drop_failed:
        records = {k: r for k, r in records.items() if r["state"] != FAILED}
    if scan.duplicates or len(records) < len(scan.records):
        _write_records(path, records.values())
    elif path.exists() and path.stat().st_size > scan.complete:
        with path.open("r+b") as fh:
            fh.truncate(scan.complete)
    return records, scan.duplicates


@contextlib.contextmanager
def output_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the sweep output ``path`` (raises ``SpecError`` if taken).

    The lock is ``fcntl.flock`` on the sidecar file ``PATH.lock``, which holds the owner's
    process id; the kernel releases it when its process ends, even by SIGKILL, so a lock is
    never stale. The sidecar is removed on exit. Without ``fcntl`` (Windows) there is no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise fail(
                "out",
                f"an output no other sweep is writing (it is locked by the running process "
                f"{holder}, through {lock.name})",
                str(path),
            ) from None
        try:  # its last holder may have removed the sidecar between our open and flock
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def _append(path: Path, record: dict) -> None:
    line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
    with path.open("a") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


# --- running a sweep ---
def run_sweep(
    sweep: Sweep,
    out: str | Path,
    *,
    jobs: int = 1,
    backend: str = "local",
    address: str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    on_record: Callable[[dict], None] | None = None,
) -> SweepSummary:
    """Run the points of ``sweep`` not yet recorded in ``out`` (JSONL) and summarize all of them.

    Parameters
    ----------
    sweep : Sweep
    out : path
        JSONL file; each finished point is appended (and flushed to disk) as soon as it ends.
        It must be missing, empty or a sweep file (checked before anything is written); it is
        locked while the sweep runs.
    jobs : int
        Worker processes started on this machine (1 with ``local``: this process).
    backend : {"local", "dask", "ray"}
        Where the points run (:mod:`ucfm_svm.runs.backends`).
    address : str, optional
        An existing Dask scheduler or Ray cluster; without, ``dask`` and ``ray`` start a local
        cluster of ``jobs`` workers and stop it at the end.
    retry_failed : bool
        Run again the points recorded as failed (their old records are dropped first).
    progress : bool
        Show a tqdm progress bar (points) on stderr.
    on_record : callable, optional
        Called with each new record after it is written.
    """
    from .backends import BackendConfig, open_backend, run_records

    config = BackendConfig(backend, jobs, address)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(out):
        records, duplicates = prepare_output(out, drop_failed=retry_failed)
        todo = [p for p in sweep.points if point_key(p) not in records]
        if todo:
            bar = show_progress(total=len(todo), desc=sweep.name, unit="point", enabled=progress)
            try:
                with open_backend(config) as runner:
                    for record in run_records(runner, todo):
                        _append(out, record)
                        records[record["key"]] = record
                        bar.update()
                        if on_record is not None:
                            on_record(record)
            finally:
                bar.close()
    return summarize(sweep, records, out, ran=len(todo), duplicates=duplicates)


def summarize(
    sweep: Sweep, records: dict[str, dict], path: Path, ran: int = 0, duplicates: int = 0
) -> SweepSummary:
    """Counts of done / failed points, the worst certificate gap and verification error."""
    mine = [records[point_key(p)] for p in sweep.points if point_key(p) in records]
    done = [r for r in mine if r["state"] == DONE]
    failed = [r for r in mine if r["state"] == FAILED]
    gaps = [r["rel_gap"] for r in done if r.get("rel_gap") is not None]
    checked = [r for r in done if r.get("worst_check") is not None]
    worst = max(checked, key=lambda r: check_ratio(r["worst_check"]), default=None)
    return SweepSummary(
        path=path,
        total=len(sweep.points),
        done=len(done),
        failed=len(failed),
        ran=ran,
        worst_rel_gap=max(gaps) if gaps else None,
        worst_check=None if worst is None else worst["worst_check"],
        not_certified=sum(1 for r in done if r.get("status") not in (OPTIMAL, PASSED)),
        checks_failed=sum(1 for r in done if r.get("status") == CHECKS_FAILED),
        failures=tuple((r["label"], r["error"]) for r in failed),
        duplicates=duplicates,
    )


def check_ratio(check: dict) -> float:
    """Error over tolerance of a check (``inf`` for a non-finite error or a failed solve)."""
    if check["value"] is None:
        return np.inf
    if not check["tolerance"]:
        return 0.0 if check["passed"] else np.inf
    return check["value"] / check["tolerance"]


def load_results(path: str | Path) -> list[dict]:
    """All records of a JSONL sweep file, in file order (for analysis and plots)."""
    return list(read_records(path).values())


__all__ = [
    "CHECKS_FAILED",
    "DONE",
    "FAILED",
    "PASSED",
    "VERIFY",
    "Sweep",
    "SweepSummary",
    "check_ratio",
    "load_results",
    "load_sweep",
    "make_point",
    "output_lock",
    "point_key",
    "point_label",
    "point_spec",
    "prepare_output",
    "read_records",
    "run_point",
    "run_sweep",
    "summarize",
    "sweep_from_dict",
]
