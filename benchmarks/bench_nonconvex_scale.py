"""The non-convex route at field sizes (issue 19): certified, geometry against the closed form.

Cases: long tail k = 100 (IF 100, n_max 500, CE, class level), STEP ``100,10,0.5`` (CE, class
level), CIFAR-10-LT counts at the example level (n = 12,406, variable projection,
docs/theory.md §15) and long tail k = 300 (ratio 256, n_max 1280, CE, class level; the case
of the globalized polish, about a minute, two with ``--baseline``). For each: CPU and wall
seconds, status, relative gap, the largest norm or cosine error against the closed form
(``solvers.coverage.geometry_error``) and the L-BFGS iterations. With ``--baseline FILE``
(an older ``nonconvex.py``, e.g.
``git show 23f66a4:ucfm_svm/solvers/nonconvex.py > /tmp/nonconvex_old.py``) the old solver runs
the same cases in this process and the CPU-time ratio old/new is reported: the machine is
shared, so ratios, not absolute seconds, are the measurement.

Run from the repository root (not in CI; one to a few minutes, more with ``--baseline``)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_nonconvex_scale.py [--baseline FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time

from ucfm_svm import api
from ucfm_svm.solvers import nonconvex
from ucfm_svm.solvers.coverage import geometry_error
from ucfm_svm.spec import Spec, dataset_counts, longtail_counts, step_counts

CASES = {
    "longtail 100,100 (n_max 500)": (longtail_counts(100, 100, 500), "class"),
    "step 100,10,0.5": (step_counts(100, 10, 0.5), "class"),
    "cifar10-lt, example level": (dataset_counts("cifar10-lt"), "example"),
    "longtail 300,256 (n_max 1280)": (longtail_counts(300, 256, 1280), "class"),
}


def load(path: str):
    """Import an older ``nonconvex.py`` as a module of the package (its relative imports)."""
    spec = importlib.util.spec_from_file_location("ucfm_svm.solvers._baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def measure(module, spec: Spec, level: str) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    res = module.solve_nonconvex(spec, level=level)
    out = {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}
    error, where = geometry_error(res, api.solve(spec, "theory"))
    return {**out, "status": res.status, "gap": res.rel_gap, "error": error, "where": where,
            "iterations": res.iterations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=None, help="an older nonconvex.py to compare")
    parser.add_argument("--cases", default=",".join(str(i) for i in range(len(CASES))))
    args = parser.parse_args()
    old = load(args.baseline) if args.baseline else None
    names = list(CASES)
    print("| case | CPU s (wall s) | certified | rel. gap | geometry error | L-BFGS its "
          "| old/new CPU |")
    print("|---|---|---|---|---|---|---|")
    for index in (int(v) for v in args.cases.split(",")):
        name = names[index]
        counts, level = CASES[name]
        spec = Spec.from_loss(counts)
        new = measure(nonconvex, spec, level)
        ratio = "-"
        if old is not None:
            base = measure(old, spec, level)
            ratio = f"{base['cpu'] / new['cpu']:.1f} (old: {base['status']}, {base['error']:.1e})"
        print(f"| {name} | {new['cpu']:.1f} ({new['wall']:.1f}) | "
              f"{'yes' if new['status'] == 'optimal' else new['status']} | {new['gap']:.1e} | "
              f"{new['error']:.1e} | {new['iterations']} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
