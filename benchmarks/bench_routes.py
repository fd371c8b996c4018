"""Time and peak memory of every route against k (issue 19), each solve in a fresh process.

Counts: the exponential long tail ``--longtail K,100 --n-max 500`` (CE) at the class level, for
``k`` in ``--ks`` (default 10, 100, 1000) and the routes ``theory``, ``structured``, ``convex``,
``convex_grouped`` and ``nonconvex``. Before a run, the route's memory is estimated; a route
whose estimate exceeds ``--memory-limit`` (default 3 GiB, the per-process budget on the shared
2-core machine) is reported as **refused** and not run. A run that exceeds ``--timeout`` is
killed and reported as such. For each run the table gives the status (certified or not), the
wall time, the CPU time and the peak resident memory (``ru_maxrss`` of the child); the fitted
exponent is the least-squares slope of ``log time`` against ``log k`` over the sizes that ran.

Estimates: ``theory`` ~ 40 dense k x k arrays; ``structured`` O(k) (one k x k block at most);
``convex`` and ``convex_grouped`` (Clarabel on the nuclear-norm SDP with a ``2g x 2g`` PSD cone,
``g = k`` or the number of groups): the dense Hessian block of the cone,
``16 (g (2g + 1))^2`` bytes (6.5 GB at k = 100; issue 19 measured 6.3 GB before an abort);
``nonconvex``: :func:`ucfm_svm.solvers.nonconvex.memory_estimate`.

Run from the repository root (not in CI; absolute times are inflated by the machine's load)::

    OMP_NUM_THREADS=1 python benchmarks/bench_routes.py [--ks 10,100,1000] [--timeout 600]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from ucfm_svm.solvers.nonconvex import memory_estimate
from ucfm_svm.spec import Spec, longtail_counts

ROUTES = ("theory", "structured", "convex", "convex_grouped", "nonconvex")

CHILD = """
import json, resource, sys, time
from ucfm_svm.api import solve
from ucfm_svm.spec import Spec, longtail_counts
route, k = sys.argv[1], int(sys.argv[2])
spec = Spec.from_loss(longtail_counts(k, 100.0, 500), "ce")
wall, cpu = time.perf_counter(), time.process_time()
result = solve(spec, route)
out = {"status": result.status, "rel_gap": result.rel_gap,
       "wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
       "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
print(json.dumps(out))
"""


def estimate(route: str, spec: Spec) -> float:
    """Estimated peak bytes of ``route`` on ``spec`` (module docstring)."""
    k = spec.k
    if route == "theory":
        return 40 * 8.0 * k * k
    if route == "structured":
        return 8.0 * k * k + 1e8
    if route in ("convex", "convex_grouped"):
        g = k if route == "convex" else len(spec.groups())
        return 16.0 * (g * (2 * g + 1)) ** 2
    return float(memory_estimate(spec, "class", 0 if k > 12 else 2))


def run(route: str, k: int, timeout: float, limit: float) -> dict:
    spec = Spec.from_loss(longtail_counts(k, 100.0, 500), "ce")
    need = estimate(route, spec)
    if need > limit:
        return {"status": "refused", "estimate": need}
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, route, str(k)],
            capture_output=True, text=True, timeout=timeout, env=env,
        )
    except subprocess.TimeoutExpired:
        return {"status": f"timeout > {timeout:g} s", "estimate": need}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"status": f"failed ({last[:60]})", "estimate": need}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "estimate": need}


def exponent(ks: list[int], times: list[float]) -> str:
    if len(ks) < 2:
        return "-"
    return f"{np.polyfit(np.log(ks), np.log(times), 1)[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="10,100,1000")
    parser.add_argument("--routes", default=",".join(ROUTES))
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--memory-limit", type=float, default=3.0, help="GiB")
    args = parser.parse_args()
    ks = [int(v) for v in args.ks.split(",")]
    limit = args.memory_limit * 2**30
    print("| route | " + " | ".join(f"k = {k}" for k in ks) + " | time exponent |")
    print("|---|" + "---|" * len(ks) + "---|")
    for route in args.routes.split(","):
        cells, ran_k, ran_t = [], [], []
        for k in ks:
            r = run(route, k, args.timeout, limit)
            if "wall" in r:
                mark = "certified" if r["status"] == "optimal" else r["status"]
                cells.append(
                    f"{r['wall']:.2f} s ({r['cpu']:.2f} s CPU), {r['rss'] / 2**20:.0f} MiB, {mark}"
                )
                ran_k.append(k)
                ran_t.append(max(r["cpu"], 1e-3))
            else:
                cells.append(f"{r['status']} (est. {r['estimate'] / 2**30:.2g} GiB)")
            print(f"  {route} k={k}: {cells[-1]}", file=sys.stderr, flush=True)
        print(f"| {route} | " + " | ".join(cells) + f" | {exponent(ran_k, ran_t)} |", flush=True)
    print(f"\nexponents fitted on CPU time; memory limit {args.memory_limit:g} GiB, timeout "
          f"{args.timeout:g} s; wall times inflated by load ({os.getloadavg()[0]:.1f}).")


if __name__ == "__main__":
    main()
