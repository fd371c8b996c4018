"""The same sweep grid on every backend: points per second and the overhead per point.

Backends (:mod:`ucfm_svm.runs.backends`), each on the same grid in this process, in order:

- ``local, 1 job``: every point in this process (the baseline);
- ``local, 2 jobs``: joblib's loky pool of 2 worker processes;
- ``dask, 2 workers``: a local ``dask.distributed`` cluster of 2 single-threaded workers;
- ``ray, 2 CPUs``: a local Ray instance limited to 2 CPUs (200 MB object store, no dashboard).

For each: ``start`` (starting the pool or cluster) and ``stop`` seconds; ``run`` seconds from
the first submission to the last record; points per second over ``run`` and over the whole
(start + run + stop); the speed-up of ``run`` over the baseline's; and the overhead per point,
``(run - sum(point seconds) / workers) * workers / points``: the worker-seconds each point
costs beyond its own solve (dispatch, serialization, first imports in fresh workers, idle
workers at the end). Point seconds are measured inside the workers.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_backends.py [--ks 12] [--ratios 10,20,...]
        [--json PATH]

Prints a markdown table; ``--json`` writes its rows. Timings depend on the machine and its load:
compare rows of one run (ratios), not absolute seconds across machines.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ucfm_svm.runs.backends import BackendConfig, open_backend, run_records
from ucfm_svm.runs.sweep import DONE, sweep_from_dict

SETUPS = (
    ("local, 1 job", BackendConfig("local", 1)),
    ("local, 2 jobs", BackendConfig("local", 2)),
    ("dask, 2 workers", BackendConfig("dask", 2)),
    ("ray, 2 CPUs", BackendConfig("ray", 2)),
)


def grid(ks: list[int], ratios: list[float]) -> list[dict]:
    """Class-level convex points: STEP k x R (rho = 1/2) x CE, LDT, CDT, VS at gamma 1/2."""
    sweep = sweep_from_dict(
        {
            "name": "bench",
            "methods": ["convex"],
            "losses": ["ce", "ldt", "cdt", "vs"],
            "gamma": 0.5,
            "tau": 1.0,
            "counts": {"step": {"k": ks, "R": ratios, "rho": 0.5}},
        }
    )
    return list(sweep.points)


def measure(name: str, config: BackendConfig, points: list[dict]) -> dict:
    """Start, run and stop one backend on ``points``; the row of the table."""
    t0 = time.perf_counter()
    backend = open_backend(config)
    t1 = time.perf_counter()
    try:
        records = list(run_records(backend, points))
        t2 = time.perf_counter()
    finally:
        backend.close()
    t3 = time.perf_counter()
    workers = config.jobs
    compute = sum(r["seconds"] for r in records if r["seconds"] is not None)
    run = t2 - t1
    return {
        "backend": name,
        "points": len(records),
        "done": sum(r["state"] == DONE for r in records),
        "start_s": t1 - t0,
        "run_s": run,
        "stop_s": t3 - t2,
        "points_per_s": len(records) / run,
        "points_per_s_total": len(records) / (t3 - t0),
        "overhead_per_point_s": (run - compute / workers) * workers / len(records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="12", help="STEP class counts k (default 12)")
    parser.add_argument(
        "--ratios", default="10,20,30,40,50,60", help="STEP ratios R (default 10,...,60)"
    )
    parser.add_argument("--json", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    points = grid(
        [int(k) for k in args.ks.split(",")], [float(r) for r in args.ratios.split(",")]
    )
    rows = [measure(name, config, points) for name, config in SETUPS]
    base = rows[0]["run_s"]
    print(f"{len(points)} points (class-level convex, STEP rho=1/2, CE/LDT/CDT/VS)\n")
    print(
        "| backend | start s | run s | stop s | points/s (run) | points/s (total) "
        "| speed-up of run | overhead/point s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        r["speedup"] = base / r["run_s"]
        print(
            f"| {r['backend']} | {r['start_s']:.2f} | {r['run_s']:.2f} | {r['stop_s']:.2f} | "
            f"{r['points_per_s']:.2f} | {r['points_per_s_total']:.2f} | {r['speedup']:.2f} | "
            f"{r['overhead_per_point_s']:.3f} |"
        )
        assert r["done"] == r["points"], f"{r['backend']}: not every point done"
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
