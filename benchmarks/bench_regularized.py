"""Benchmarks of the finite-weight-decay solver (issue 14) and of `path`/`train` (issue 19).

Run from the repository root:
``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_regularized.py [K ...]``.
The machine may be shared: every row also reports its time as a ratio to a fixed numpy
workload timed in the same process just before it (``baseline``: ten 1000 x 1000 by 1000 x 64
products and one 400 x 400 SVD), so that rows taken under different loads compare.

Rows:
- ``regularized``: certified class-level solve (long tail IF = 100, n_max = 500, CE) at
  ``lambda = lambda_0 / 2`` and ``lambda_0 / 10``, ``lambda_0 = ||grad_M f(0)||_2`` the
  smallest lambda at which ``M = 0`` (everything collapsed to zero) is optimal.
- ``path``: the regularization path (2 lambdas, 1e-1 and 1e-2 in path's sum-loss units) with
  the two-loop L-BFGS, against the same loop with scipy's L-BFGS-B (maxcor 30, as before).
- ``train``: 10 gradient steps (the reference geometry included).
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np
from scipy.optimize import minimize

from ucfm_svm.regularized.losses import params_from_spec
from ucfm_svm.regularized.solver import Regularization, solve_regularized, vanishing_point
from ucfm_svm.regularized.training import (
    _Model,
    gradient_descent,
    reference_svm,
    regularization_path,
)
from ucfm_svm.spec import Spec, longtail_counts


def baseline() -> float:
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((1000, 1000)), rng.standard_normal((1000, 64))
    C = rng.standard_normal((400, 400))
    t = time.perf_counter()
    for _ in range(10):
        A @ B
    np.linalg.svd(C)
    return time.perf_counter() - t


def lambda_zero(spec: Spec) -> float:
    """``lambda_0`` without a bias (:func:`ucfm_svm.regularized.solver.vanishing_point`)."""
    return vanishing_point(spec, Regularization.from_lambda(1.0))


def old_path(spec: Spec, lambdas: list[float]) -> tuple[float, int]:
    """The path's loop as it was: scipy L-BFGS-B, maxcor 30 (no records)."""
    model = _Model(spec, params_from_spec(spec), "class")
    x = model.init(0.1, 0, None)
    t = time.perf_counter()
    nit = 0
    for lam in lambdas:

        def fun(z: np.ndarray, lam: float = lam) -> tuple[float, np.ndarray]:
            value, grad, _ = model.loss_and_grad(z)
            return value / lam + 0.5 * float(z @ z), grad / lam + z

        res = minimize(fun, x, jac=True, method="L-BFGS-B", options={
            "maxiter": 50_000, "maxfun": 100_000, "gtol": 1e-7, "ftol": 1e-16, "maxcor": 30})
        x, nit = res.x, nit + res.nit
    return time.perf_counter() - t, nit


def row(name: str, k: int, seconds: float, base: float, extra: str) -> None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"| {name} | {k} | {seconds:.2f} | {seconds / base:.1f} | {peak:.0f} | {extra} |",
          flush=True)


def main(ks: tuple[int, ...] = (10, 100, 1000)) -> None:
    print("| route | k | seconds | / baseline | peak RSS MiB (process) | notes |")
    print("|---|---|---|---|---|---|")
    for k in ks:
        spec = Spec.from_loss(longtail_counts(k, 100, 500), "ce")
        lam0 = lambda_zero(spec)
        for frac in (2, 10):
            base = baseline()
            t = time.perf_counter()
            r = solve_regularized(spec, Regularization.from_lambda(lam0 / frac))
            seconds = time.perf_counter() - t
            row("regularized", k, seconds, base,
                f"lambda = lambda_0/{frac} = {lam0 / frac:.3g}, {r.status}, rel gap "
                f"{r.rel_gap:.1e}, {r.iterations} its, rank {r.regularization['rank']}, "
                f"baseline {base:.3f} s")
    for k in ks:
        spec = Spec.from_loss(longtail_counts(k, 100, 500), "ce")
        base = baseline()
        t = time.perf_counter()
        svm = reference_svm(spec)
        ref = time.perf_counter() - t
        t = time.perf_counter()
        traj = gradient_descent(spec, steps=10, svm=svm)
        row("train (10 steps)", k, ref + time.perf_counter() - t, base,
            f"reference {svm.method} {ref:.2f} s; {traj.message}")
        if k > 100:
            continue
        base = baseline()
        t = time.perf_counter()
        traj = regularization_path(spec, [1e-1, 1e-2], svm=svm)
        new = time.perf_counter() - t
        row("path (2 lambdas)", k, new, base, f"two-loop L-BFGS, "
            f"{int(traj.solver_iterations.sum())} its, certificate {traj.certificate.max():.7f}")
        base = baseline()
        old, nit = old_path(spec, [1e-1, 1e-2])
        row("path, old loop", k, old, base, f"scipy L-BFGS-B maxcor 30, {nit} its; "
            f"new/old = {new / old:.2f}")


if __name__ == "__main__":
    main(tuple(int(a) for a in sys.argv[1:]) or (10, 100, 1000))
