"""Benchmark of the two costs issue 19 removed from ``ucfm-svm reproduce`` (ratios, same process).

1. **Saving figures**: ``savefig`` twice per figure (PNG, then PDF: two constrained layouts and
   two full draws) against :func:`ucfm_svm.plots.style.save_figure` (one layout and one
   raster draw; the PDF reuses the layout), on the main job's figures, alternated 3 times.
2. **cvxpy compilation**: class-level convex solves of the reproduce grid (STEP ``k`` in
   {4, 8, 12}, R in {10, 100}, rho in {1/4, 1/2, 3/4}, CE/LDT/CDT/VS) by the module given with
   ``--baseline`` (an older ``convex.py`` that builds a fresh program per solve, e.g.
   ``git show main:ucfm_svm/solvers/convex.py > /tmp/convex_main.py``) against the current one
   (compiled once per ``k``, cvxpy Parameters), interleaved. Objectives must agree.

Run from the repository root (not in CI; timings are inflated by load, read the ratios)::

    OMP_NUM_THREADS=1 python benchmarks/bench_reproduce.py [--baseline /tmp/convex_main.py]
"""

from __future__ import annotations

import argparse
import importlib.util
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ucfm_svm.plots.style import save_figure
from ucfm_svm.runs import reproduce as rp
from ucfm_svm.solvers import convex
from ucfm_svm.spec import Spec, step_counts


def bench_save(repeats: int) -> None:
    config = rp.ReproduceConfig()
    tunings = rp.tuned_hyperparameters(
        step_counts(config.figure_k, config.figure_r, config.figure_rho)
    )
    blobs = {name: pickle.dumps(fig) for name, fig in rp._figures(config, tunings).items()}
    t_old = t_new = 0.0
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        for _ in range(repeats):
            start = time.perf_counter()
            for name, blob in blobs.items():
                fig = pickle.loads(blob)
                for suffix in (".png", ".pdf"):
                    fig.savefig(out / (name + suffix), dpi=rp.PNG_DPI)
            t_old += time.perf_counter() - start
            start = time.perf_counter()
            for name, blob in blobs.items():
                save_figure(pickle.loads(blob), out / name, dpi=rp.PNG_DPI)
            t_new += time.perf_counter() - start
    files = 2 * len(blobs)
    print(
        f"save {files} files: savefig twice {t_old / repeats:.2f} s, one draw "
        f"{t_new / repeats:.2f} s, ratio {t_new / t_old:.2f}"
    )


def grid_specs() -> list[Spec]:
    specs = []
    for k in (4, 8, 12):
        for R in (10.0, 100.0):
            for rho in (0.25, 0.5, 0.75):
                if abs(k * rho - round(k * rho)) > 1e-9:
                    continue
                counts = step_counts(k, R, rho)
                specs.append(Spec.from_loss(counts, "ce"))
                for loss in ("ldt", "cdt"):
                    specs.append(Spec.from_loss(counts, loss, gamma=0.5))
                specs.append(Spec.from_loss(counts, "vs", gamma=0.5, tau=1.0))
    return specs


def bench_compile(baseline: str) -> None:
    module_spec = importlib.util.spec_from_file_location("ucfm_svm.solvers._bench_convex", baseline)
    old = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = old
    module_spec.loader.exec_module(old)
    specs = grid_specs()
    t_old = t_new = 0.0
    worst = 0.0
    for spec in specs:
        start = time.perf_counter()
        a = old.solve_convex(spec)
        t_old += time.perf_counter() - start
        start = time.perf_counter()
        b = convex.solve_convex(spec)
        t_new += time.perf_counter() - start
        worst = max(worst, abs(a.objective - b.objective) / a.objective)
    print(
        f"{len(specs)} class-level convex solves: fresh program {t_old:.2f} s, cached "
        f"{t_new:.2f} s, ratio {t_new / t_old:.2f}; objectives agree to {worst:.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=None, help="an older convex.py to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-save", action="store_true")
    args = parser.parse_args()
    np.seterr(all="ignore")
    if args.baseline:
        bench_compile(args.baseline)
    if not args.skip_save:
        bench_save(args.repeats)


if __name__ == "__main__":
    main()
