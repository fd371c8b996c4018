"""Speed of ``tune``: the structured route against the dense closed form, in one process.

Norm targets (``equal-*-norms``, ``equal-group-*-norms``) need only the norms, which the
structured closed form (docs/theory.md §7) gives in O(m^2) per evaluation; the dense route
(``method="theory"``) does an O(k^3) SVD and certificate per evaluation. Both find the same
gamma (to ~1e-15). Usage::

    nice -n 10 python benchmarks/bench_tune.py [--ks 100,1000]

Prints, per k, the seconds of each route and their ratio (the dense route is run only up to
k = 200, where it already takes tens of seconds on a loaded 2-core machine), and the seconds of
the structured route alone above that. Absolute seconds depend on the machine and its load;
the ratio is the number to compare.
"""

from __future__ import annotations

import argparse
import time

from ucfm_svm import longtail_counts
from ucfm_svm.analysis.tuning import tune

DENSE_MAX_BENCH_K = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="100,1000")
    args = parser.parse_args()
    print("| k | IF | target | structured s | theory s | ratio | gamma difference |")
    print("|---|---|---|---|---|---|---|")
    for k in (int(v) for v in args.ks.split(",")):
        counts = longtail_counts(k, 256, 1280)
        target = "equal-group-classifier-norms"
        start = time.perf_counter()
        fast = tune(counts, "cdt", target, method="structured")
        t_fast = time.perf_counter() - start
        if k <= DENSE_MAX_BENCH_K:
            start = time.perf_counter()
            dense = tune(counts, "cdt", target, method="theory")
            t_dense = time.perf_counter() - start
            cells = f"{t_dense:.3g} | {t_dense / t_fast:.0f}x | {abs(fast.gamma - dense.gamma):.1e}"
        else:
            cells = "- | - | -"
        print(f"| {k} | 256 | {target} | {t_fast:.3g} | {cells} |")


if __name__ == "__main__":
    main()
