"""Time and peak memory of every route to the certified UF-CS-SVM geometry, up to k = 8142.

Routes (each run in a fresh subprocess, with a timeout):

- ``direct``: example-level nuclear-norm program in cvxpy/SCS (``k x n`` variable), the baseline;
- ``class cvxpy``: class-level program (docs/theory.md §3, ``k x k``), Clarabel;
- ``grouped cvxpy``: class-level program over groups of identical classes (``g x g``);
- ``nonconvex``: the non-convex pipeline (``api.METHODS["nonconvex"]``);
- ``dense closed form``: docs/theory.md §4 with a dense SVD of ``A`` and the dense certificate
  (``--method theory``, ``ucfm_svm.solvers.theory.solve_theory``);
- ``structured``: the secular-equation closed form (``ucfm_svm.solvers.structured``), lean and
``full``.

Counts: STEP (R = 10, rho = 1/2) and exponential long tails at k in {10, 100, 1000, 8142}
(CIFAR-10-LT, CIFAR-100-LT, ImageNet-LT-like, and an iNaturalist-2018-like profile of 437,512
examples), a stress case with k distinct counts (no two classes merge), plus two small STEP
cases where the direct baseline finishes. Rows with a direct
baseline in the same run carry the ratio of its time to theirs and their objective's relative
difference from it. A route is skipped without running when its size predicts more than the
timeout (rule in :func:`skip_reason`); a run that exceeds the timeout is killed and marked.

Usage::

    nice -n 10 python benchmarks/bench_scale.py [--json PATH] [--timeout 60] [--ks 10,100,...]

Prints a markdown table; writes every row as JSON to ``--json`` (default
``bench_scale.json``, git-ignored). Timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ucfm_svm import api
from ucfm_svm.result import Result
from ucfm_svm.solvers.convex import solve_convex, solve_convex_grouped
from ucfm_svm.solvers.structured import structured_solution
from ucfm_svm.solvers.theory import DENSE_MAX_K, solve_theory
from ucfm_svm.spec import Spec, longtail_counts, step_counts

ROUTES = (
    "direct",
    "class cvxpy",
    "grouped cvxpy",
    "nonconvex",
    "dense closed form",
    "structured",
    "structured full",
)
#: Direct example-level SCS: measured 3.6 s at k n = 5,500 and 366 s at k n = 27,500 (k = 10).
DIRECT_MAX_KN = 15_000
#: Clarabel on the k x k class level: a PSD cone of size 2k.
CLASS_MAX_K = 100
GROUPED_MAX_GROUPS = 60
NONCONVEX_MAX_K = 100
FULL_TIMEOUT = 300.0


def inat_like_counts(k: int = 8142, n_max: int = 1000, n_min: int = 2, n: int = 437_513):
    """``n_c = max(n_min, floor(n_max exp(-c / tau)))`` with ``tau`` set so that the total is
    about ``n`` (iNaturalist 2018: 8142 classes, 437,513 training images, 2..1000 per class)."""
    c = np.arange(k)
    lo, hi = 1.0, 10.0 * k
    for _ in range(80):
        tau = 0.5 * (lo + hi)
        total = np.maximum(n_min, np.floor(n_max * np.exp(-c / tau))).sum()
        lo, hi = (tau, hi) if total < n else (lo, tau)
    return np.maximum(n_min, np.floor(n_max * np.exp(-c / lo))).astype(np.int64)


def cases(ks: tuple[int, ...]) -> list[dict]:
    """The benchmark cases: (profile name, counts, losses)."""
    out = [
        {"profile": "STEP R=10 n_min=2", "counts": step_counts(10, 10, 0.5, 2), "losses": ["ce"]},
        {"profile": "STEP R=10 n_min=10", "counts": step_counts(10, 10, 0.5, 10), "losses": ["ce"]},
    ]
    for k in ks:
        out.append(
            {
                "profile": "STEP R=10 n_min=50",
                "counts": step_counts(k, 10, 0.5, 50),
                "losses": ["ce"],
            }
        )
        if k == 10:
            counts, name = longtail_counts(10, 100, 5000), "exp IF=100 n_max=5000 (CIFAR-10-LT)"
        elif k == 100:
            counts, name = longtail_counts(100, 100, 500), "exp IF=100 n_max=500 (CIFAR-100-LT)"
        elif k == 8142:
            counts, name = inat_like_counts(), "exp n_max=1000 n_min=2 (iNat-2018-like)"
        else:
            counts, name = longtail_counts(k, 256, 1280), "exp IF=256 n_max=1280 (ImageNet-LT-like)"
        losses = ["ce", "ldt", "cdt"] if k >= 1000 else ["ce"]
        out.append({"profile": name, "counts": counts, "losses": losses})
        if k >= 1000:  # worst case for the secular equation: every d_c distinct, no merging
            out.append(
                {
                    "profile": "n_c = 1..k, all distinct (stress)",
                    "counts": np.arange(k, 0, -1),
                    "losses": ["ce"],
                    "routes": ("structured",),
                }
            )
    return out


def make_spec(counts: np.ndarray, loss: str) -> Spec:
    """CE, or LDT / CDT at gamma = 1/4 (gamma = 1/2 makes every d_c equal: one cluster)."""
    return Spec.from_loss(counts, loss, gamma=None if loss == "ce" else 0.25)


def skip_reason(route: str, spec: Spec) -> str | None:
    """Why a route is not run on ``spec`` (its size predicts more than the timeout), or None."""
    k, n = spec.k, spec.n
    if route == "direct" and k * n > DIRECT_MAX_KN:
        return f"skipped: k n = {k * n:,} > {DIRECT_MAX_KN:,} (SCS took 366 s at k n = 27,500)"
    if route == "class cvxpy" and k > CLASS_MAX_K:
        return f"skipped: k > {CLASS_MAX_K} (PSD cone of size 2k)"
    if route == "grouped cvxpy" and len(spec.groups()) > GROUPED_MAX_GROUPS:
        return f"skipped: {len(spec.groups())} groups > {GROUPED_MAX_GROUPS}"
    if route == "nonconvex" and k > NONCONVEX_MAX_K:
        return f"skipped: k > {NONCONVEX_MAX_K}"
    if route == "dense closed form" and k > DENSE_MAX_K:
        return f"skipped: k > {DENSE_MAX_K} (--method theory refuses it: use structured)"
    return None


def _call(route: str, spec: Spec) -> Result:
    if route == "direct":
        return solve_convex(spec, level="example", solver="SCS")
    if route == "class cvxpy":
        return solve_convex(spec, level="class")
    if route == "grouped cvxpy":
        return solve_convex_grouped(spec)
    if route == "nonconvex":
        return api.solve(spec, "nonconvex")
    if route == "dense closed form":
        return solve_theory(spec)
    if route == "structured":
        return structured_solution(spec)
    if route == "structured full":
        return structured_solution(spec, full=True)
    raise ValueError(route)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _worker(route: str, counts: list[int], loss: str, conn) -> None:
    """Child process: time one route, record peak RSS above the pre-call RSS (VmHWM - VmRSS)."""
    spec = make_spec(np.asarray(counts), loss)
    repeats = 3 if route == "structured" else 1
    base = _status_kib("VmRSS")
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        result = _call(route, spec)
        best = min(best, time.perf_counter() - start)
    conn.send(
        {
            "seconds": best,
            "extra_mib": (_status_kib("VmHWM") - base) / 1024,
            "process_mib": _status_kib("VmHWM") / 1024,
            "objective": result.objective,
            "lower_bound": result.lower_bound,
            "rel_gap": result.rel_gap,
            "status": result.status,
        }
    )
    conn.close()


def run_route(route: str, spec: Spec, loss: str, timeout: float) -> dict:
    """Run one route in a fresh interpreter; kill it after ``timeout`` seconds."""
    reason = skip_reason(route, spec)
    if reason is not None:
        return {"note": reason}
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(route, list(spec.counts), loss, child))
    proc.start()
    child.close()
    limit = FULL_TIMEOUT if route == "structured full" else timeout
    # The child imports the package first (~1-2 s, not timed): allow for it.
    if parent.poll(limit + 15):
        try:
            out = parent.recv()
        except EOFError:
            proc.join()
            code = proc.exitcode
            out = {
                "note": f"killed by signal {-code} (memory?)"
                if code is not None and code < 0
                else f"failed (exit code {code})"
            }
    else:
        proc.kill()
        out = {"note": f"timeout: more than {limit:g} s"}
    proc.join()
    if "seconds" in out and out["seconds"] > limit:
        out["note"] = f"over the {limit:g} s limit"
    return out


def _fmt(x: float | None, spec: str) -> str:
    return "" if x is None or not np.isfinite(x) else format(x, spec)


def table(rows: list[dict]) -> str:
    """Markdown table of the rows."""
    head = (
        "| counts | k | n | loss | route | time (s) | peak extra (MiB) | speed-up vs direct "
        "| objective | rel. diff. vs direct | rel. gap | status / note |\n"
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in rows:
        lines.append(
            f"| {r['profile']} | {r['k']} | {r['n']:,} | {r['loss']} | {r['route']} "
            f"| {_fmt(r.get('seconds'), '.3g')} | {_fmt(r.get('extra_mib'), '.1f')} "
            f"| {_fmt(r.get('speedup'), '.3g')} | {_fmt(r.get('objective'), '.10g')} "
            f"| {_fmt(r.get('rel_diff'), '.1e')} | {_fmt(r.get('rel_gap'), '.1e')} "
            f"| {r.get('note') or r.get('status', '')} |"
        )
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="bench_scale.json", help="where to write the rows")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per route")
    parser.add_argument("--ks", default="10,100,1000,8142", help="numbers of classes")
    parser.add_argument(
        "--routes", default=",".join(ROUTES), help="comma-separated subset of " + ", ".join(ROUTES)
    )
    args = parser.parse_args(argv)
    ks = tuple(int(k) for k in args.ks.split(","))
    routes = [r for r in args.routes.split(",") if r]
    unknown = sorted(set(routes) - set(ROUTES))
    if unknown:
        parser.error(f"unknown routes {unknown}; choose from {', '.join(ROUTES)}")
    jobs = []
    for case in cases(ks):
        for loss in case["losses"]:
            spec = make_spec(case["counts"], loss)
            chosen = routes if loss == "ce" else [r for r in routes if r == "structured"]
            chosen = [r for r in chosen if r in case.get("routes", ROUTES)]
            jobs.append((case["profile"], loss, spec, chosen))
    rows = []
    total = sum(len(j[3]) for j in jobs)
    with tqdm(total=total, desc="bench", unit="run") as bar:
        for profile, loss, spec, chosen in jobs:
            baseline = None
            for route in chosen:
                bar.set_postfix_str(f"k={spec.k} {loss} {route}")
                out = run_route(route, spec, loss, args.timeout)
                row = {"profile": profile, "k": spec.k, "n": spec.n, "loss": loss, "route": route}
                row.update(out)
                if route == "direct" and "seconds" in out and "note" not in out:
                    baseline = out
                if baseline is not None and "seconds" in out:
                    row["speedup"] = baseline["seconds"] / out["seconds"]
                    row["rel_diff"] = abs(out["objective"] - baseline["objective"]) / abs(
                        baseline["objective"]
                    )
                rows.append(row)
                bar.update()
    print(table(rows))
    Path(args.json).write_text(json.dumps(rows, indent=1, allow_nan=False, default=float) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
