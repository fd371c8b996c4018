"""Vocabulary scale: the structured route on 10^3 to 10^6 classes (docs/theory.md §14).

For each size ``k`` and count profile, one fresh subprocess (with a timeout) builds the spec,
solves it with the default resolvent route of ``structured_solution`` (norms, objective and a
rigorous certificate in ``O(k Q)``), and, up to ``--exact-max``, with the exact secular route
(``route="secular"``, ``O(m^2)``) to report the largest relative difference of the norms and
the objective. Profiles:

- ``zipf``: ``n_c = floor(10 k^1.1 / c^1.1) + (k - c)``: a Zipf head and all ``k`` counts
  distinct (``m = k`` distinct values of ``d_c``), the hard case;
- ``longtail``: ``n_c = int(n_max IF^(-c / (k - 1)))`` with ``IF = 1000``, ``n_max = 10^4``:
  at most 10^4 distinct counts, many classes share one;

both with ``--loss`` (CE by default: ``d_c = n_c``). Each row has the solver's time, the time
of one elementwise sweep over ``k x 256`` doubles in the same process (:func:`baseline_sweep`;
the solve time over it is the load-independent ``ratio``), the peak RSS of the process
(imports included) and its RSS before the solve. The exponent is the least-squares slope of
log time against log k over the sizes ``>= 10^4``.

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_vocab.py [--ks 1000,...,1000000]
        [--timeout 120] [--exact-max 10000] [--json bench_vocab.json]

Prints a markdown table; writes the rows as JSON (default ``bench_vocab.json``, git-ignored).
Timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_KS = (1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000)
PROFILES = ("zipf", "longtail")


def profile_counts(profile: str, k: int) -> np.ndarray:
    """Counts of ``profile`` (module docstring) for ``k`` classes, largest first."""
    c = np.arange(1, k + 1)
    if profile == "zipf":
        return np.floor(10.0 * k**1.1 / c**1.1).astype(np.int64) + (k - c)
    from ucfm_svm.spec import longtail_counts

    return longtail_counts(k, 1000.0, 10_000)


def baseline_sweep(k: int, nodes: int = 256, rows: int = 2048) -> float:
    """Seconds of one elementwise sweep ``1 / (d_c + t_n)`` over ``k x nodes`` doubles, in
    blocks: the unit of the resolvent route's work (it makes two such sweeps, plus matrix
    products, over ``k x Q``), so ``seconds / sweep`` does not depend on the machine's load."""
    d = np.random.default_rng(0).random(k)
    t = np.geomspace(1e-3, 1e3, nodes)
    block = np.empty((rows, nodes))
    start = time.perf_counter()
    for lo in range(0, k, rows):
        part = block[: min(rows, k - lo)]
        np.add.outer(d[lo : lo + rows], t, out=part)
        np.reciprocal(part, out=part)
    return time.perf_counter() - start


def child(profile: str, k: int, loss: str, exact: bool) -> dict:
    """One size in this (fresh) process: time, memory, accuracy against the secular route."""
    from ucfm_svm import Spec
    from ucfm_svm.solvers.structured import structured_solution

    counts = profile_counts(profile, k)
    sweep_seconds = baseline_sweep(k)
    spec = Spec.from_loss(counts, loss)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    fast = structured_solution(spec)
    seconds = time.perf_counter() - start
    row = {
        "profile": profile,
        "k": k,
        "distinct": int(np.unique(counts).size),
        "seconds": seconds,
        "sweep_seconds": sweep_seconds,
        "ratio": seconds / sweep_seconds,
        "rss_before_mib": rss_before,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "status": fast.status,
        "rel_gap": fast.rel_gap,
    }
    if exact:
        start = time.perf_counter()
        ref = structured_solution(spec, route="secular")
        row["exact_seconds"] = time.perf_counter() - start
        row["norm_error"] = float(
            max(
                np.max(np.abs(fast.classifier_norms / ref.classifier_norms - 1)),
                np.max(np.abs(fast.embedding_norms / ref.embedding_norms - 1)),
            )
        )
        row["objective_error"] = abs(fast.objective / ref.objective - 1)
    return row


def run(profile: str, k: int, loss: str, exact: bool, timeout: float) -> dict:
    """:func:`child` in a fresh subprocess, killed after ``timeout`` seconds."""
    cmd = [sys.executable, __file__, "--child", profile, str(k), loss, str(int(exact))]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False
        )
    except subprocess.TimeoutExpired:
        return {"profile": profile, "k": k, "status": f"timeout ({timeout:g} s)"}
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["?"])[-1]
        if exact:  # the exact route may be what failed: retry without it
            row = run(profile, k, loss, False, timeout)
            row["exact_note"] = tail
            return row
        return {"profile": profile, "k": k, "status": f"failed: {tail}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def exponent(rows: list[dict]) -> float:
    """Slope of log seconds against log k over the finished rows with ``k >= 10^4``."""
    done = [r for r in rows if "seconds" in r and r["k"] >= 10_000]
    if len(done) < 2:
        return float("nan")
    x = np.log([r["k"] for r in done])
    y = np.log([r["seconds"] for r in done])
    return float(np.polyfit(x, y, 1)[0])


def table(rows: list[dict]) -> str:
    """Markdown table of the rows, one exponent per profile."""
    lines = [
        "| profile | k | distinct | seconds | ratio to one sweep | peak RSS MiB (before) | status "
        "| rel gap | norm error vs exact | exact seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "seconds" not in r:
            lines.append(f"| {r['profile']} | {r['k']:,} | | | | | {r['status']} | | | |")
            continue
        err = f"{r['norm_error']:.1e}" if "norm_error" in r else "-"
        if "exact_note" in r:
            err = "secular route failed"
        ex = f"{r['exact_seconds']:.3g}" if "exact_seconds" in r else "-"
        lines.append(
            f"| {r['profile']} | {r['k']:,} | {r['distinct']:,} | {r['seconds']:.3g} | "
            f"{r['ratio']:.0f} | {r['peak_rss_mib']:.0f} ({r['rss_before_mib']:.0f}) | "
            f"{r['status']} | {r['rel_gap']:.1e} | {err} | {ex} |"
        )
    for profile in sorted({r["profile"] for r in rows}):
        fit = exponent([r for r in rows if r["profile"] == profile])
        lines.append(f"\n{profile}: time ~ k^{fit:.2f} over k >= 10^4")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT))
        profile, k, loss, exact = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
        print(json.dumps(child(profile, k, loss, exact)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default=",".join(str(k) for k in DEFAULT_KS))
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--loss", default="ce")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--exact-max", type=int, default=10_000)
    parser.add_argument("--json", default="bench_vocab.json")
    args = parser.parse_args()
    rows = []
    for profile in args.profiles.split(","):
        for k in (int(k) for k in args.ks.split(",")):
            row = run(profile, k, args.loss, k <= args.exact_max, args.timeout)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
