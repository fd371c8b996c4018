"""The grouped (symmetry-reduced) regularized solve at k = 1000 (issue 14; docs/regularized.md).

Run from the repository root:
``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_grouped.py [--distinct SECONDS]``.
The machine may be shared: every row also reports its time as a ratio to a fixed numpy
workload timed in the same process just before it (``baseline``, as in bench_regularized.py).

Rows, each certified at full size (``k x k`` dual, relative gap <= 1e-6) or marked otherwise:
- ``grouped vs factors`` at k = 100 (tied counts): both routes in the same process; the ratio
  is grouped / factors (the previous L-BFGS route, which finishes at this size).
- k = 1000 long tails with many tied counts (``--longtail 1000,50`` at the default n_max 50;
  ``--longtail 1000,100 --n-max 100``), CE and LDT, at ``lambda_0/2``, ``lambda_0/10``, ``5e-4``
  (when below ``lambda_0``) and ``1e-3 lambda_0``; ``lambda_0 = ||grad_M f(0)||_2``.
- ``--distinct S``: mostly distinct counts at k = 1000, ``--longtail 1000,100 --n-max 5000``
  (848 groups) and the ImageNet-LT-like ``--longtail 1000,256 --n-max 1280`` (529 groups),
  CE and LDT, at the paper's weight decay ``5e-4`` (above ``lambda_0`` for both: the closed
  form ``M = 0``), ``lambda_0/2`` and ``lambda_0/10``, each by ``auto`` in a subprocess
  stopped after S seconds; the child reports its own peak RSS.
"""

from __future__ import annotations

import math
import multiprocessing
import resource
import sys
import time

from bench_regularized import baseline, lambda_zero  # run as a script: benchmarks/ is on the path

from ucfm_svm.regularized.grouped import class_groups
from ucfm_svm.regularized.losses import params_from_spec
from ucfm_svm.regularized.solver import (
    Regularization,
    solve_regularized,
)
from ucfm_svm.spec import Spec, longtail_counts

GAMMA = {"ldt": 0.5}


def timed(spec: Spec, lam: float, route: str) -> tuple[float, object]:
    t, cpu = time.perf_counter(), time.process_time()
    result = solve_regularized(spec, Regularization.from_lambda(lam), route=route)
    CPU[0] = time.process_time() - cpu
    return time.perf_counter() - t, result


#: CPU seconds of the last :func:`timed` call.
CPU = [0.0]


def describe(r: object) -> str:
    bound = (r.regularization or {}).get("geometry_bound")
    geometry = "" if bound is None else (
        f", geometry <= {max(bound['norms'] or math.inf, bound['cosines'] or math.inf):.1e} "
        f"(||M - M*||_F <= {bound['matrix'] or math.inf:.1e}, residual "
        f"{bound['residual'] or math.inf:.1e}, modulus {bound['modulus']:.1e})")
    return f"{r.status}, rel gap {r.rel_gap:.1e}{geometry}, {r.iterations} its, {r.solver}"


def lambdas(lam0: float) -> list[tuple[str, float]]:
    out = [("lambda_0/2", lam0 / 2), ("lambda_0/10", lam0 / 10)]
    if lam0 > 5e-4:
        out.append(("5e-4", 5e-4))
    return [*out, ("1e-3 lambda_0", 1e-3 * lam0)]


#: Mostly distinct counts at k = 1000: (imbalance factor, n_max).
DISTINCT = ((100, 5000), (256, 1280))


def _distinct(queue: multiprocessing.Queue, imbalance: int, n_max: int, loss: str,
              frac: float | None) -> None:
    spec = Spec.from_loss(longtail_counts(1000, imbalance, n_max), loss, gamma=GAMMA.get(loss))
    lam = 5e-4 if frac is None else lambda_zero(spec) * frac
    base = baseline()
    seconds, r = timed(spec, lam, "auto")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(f"{seconds:.2f} | {seconds / base:.1f} | {peak:.0f} | {describe(r)}; baseline "
              f"{base:.3f} s")


def distinct_rows(limit: float) -> None:
    """One subprocess per row, stopped after ``limit`` seconds."""
    print("| counts | loss | lambda | seconds | / baseline | peak RSS MiB | notes |")
    print("|---|---|---|---|---|---|---|")
    for imbalance, n_max in DISTINCT:
        for loss in ("ce", "ldt"):
            spec = Spec.from_loss(longtail_counts(1000, imbalance, n_max), loss,
                                  gamma=GAMMA.get(loss))
            m = class_groups(params_from_spec(spec), spec.n_vec).m
            lam0 = lambda_zero(spec)
            for name, frac in (("5e-4", None), ("lambda_0/2", 0.5), ("lambda_0/10", 0.1)):
                lam = 5e-4 if frac is None else lam0 * frac
                queue: multiprocessing.Queue = multiprocessing.Queue()
                proc = multiprocessing.Process(target=_distinct,
                                               args=(queue, imbalance, n_max, loss, frac))
                proc.start()
                proc.join(limit)
                if proc.is_alive():
                    proc.terminate()
                    proc.join()
                    note = f"- | - | - | not finished in {limit:.0f} s (stopped)"
                else:
                    note = queue.get()
                print(f"| 1000,{imbalance} n_max {n_max} ({m} groups) | {loss} | {name} = "
                      f"{lam:.3g} (lambda_0 = {lam0:.3g}) | {note} |", flush=True)


def main(argv: list[str]) -> None:
    print("| counts | loss | lambda | seconds | / baseline | notes |")
    print("|---|---|---|---|---|---|")
    spec = Spec.from_loss(longtail_counts(100, 50, 50), "ce")
    lam0 = lambda_zero(spec)
    for name, lam in lambdas(lam0)[:2]:
        base = baseline()
        new, r = timed(spec, lam, "grouped")
        old, q = timed(spec, lam, "factors")
        print(f"| 100,50 n_max 50 | ce | {name} = {lam:.3g} | {new:.2f} (factors {old:.2f}) | "
              f"{new / base:.1f} | grouped/factors = {new / old:.3f}; {describe(r)}; factors: "
              f"{describe(q)}; objectives differ by {abs(r.objective - q.objective):.1e} |",
              flush=True)
    for k, imbalance, n_max, losses in ((1000, 50, None, ("ce", "ldt")),
                                        (1000, 100, 100, ("ce",))):
        for loss in losses:
            spec = Spec.from_loss(longtail_counts(k, imbalance, n_max), loss,
                                  gamma=GAMMA.get(loss))
            m = class_groups(params_from_spec(spec), spec.n_vec).m
            lam0 = lambda_zero(spec)
            label = f"{k},{imbalance} n_max {n_max or 50000 // k} ({m} groups)"
            for name, lam in lambdas(lam0):
                base = baseline()
                seconds, r = timed(spec, lam, "auto")
                print(f"| {label} | {loss} | {name} = {lam:.3g} | {seconds:.2f} "
                      f"(CPU {CPU[0]:.2f}) | "
                      f"{seconds / base:.1f} | {describe(r)}; baseline {base:.3f} s |",
                      flush=True)
    if "--distinct" in argv:
        distinct_rows(float(argv[argv.index("--distinct") + 1]))


if __name__ == "__main__":
    main(sys.argv[1:])
