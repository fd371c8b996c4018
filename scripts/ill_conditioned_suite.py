"""Ill-conditioned suite: does any method report "optimal" with wrong geometry? (docs/theory.md §10)

Specifications with counts spread over 1..1e6, scales and margins over 1e-3..1e3 (log-uniform),
loss presets with gamma = +-1, k from 3 up to 50, and the three failing examples of issue 11.
The reference is the closed form and its KKT multipliers evaluated with 60 digits
(:func:`ucfm_svm.solvers.exact.exact_closed_form`), independent of every float64 route. For each
method and case it records the status and, when the status is "optimal", the largest relative
norm error and absolute cosine error against the reference. The claim checked: no "optimal"
result is off by more than 1e-6, and ``auto`` certifies every case.

    python scripts/ill_conditioned_suite.py [--cases 60] [--seed 0] [--methods auto,theory,convex]
        [--convex-max-k 12] [--json PATH]

Run it under ``nice`` on the shared machine: ~1 min for 60 cases without convex, several with it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ucfm_svm import Spec, api
from ucfm_svm.errors import UcfmError
from ucfm_svm.geometry import cosines_from_gram
from ucfm_svm.result import OPTIMAL
from ucfm_svm.solvers.exact import exact_closed_form

#: The three examples of issue 11 (each exited 0, "optimal", with wrong norms before).
ISSUE_EXAMPLES = (
    Spec.custom(
        [488, 1, 1000000, 166810, 639237],
        scales=[0.001, 0.17365083169326348, 0.012554975377962354, 0.056271705299996214, 1000.0],
        margins=[0.08910494490125624, 0.001, 1.0302799659756632, 1000.0, 639.3923188221165],
    ),
    Spec.from_loss(
        [14, 6, 902, 6834, 41357, 390726, 1315, 13251, 1000000, 225935, 117, 1, 19, 8, 6881,
         9, 543, 94, 58902, 56],
        "vs",
        gamma=-1,
    ),
    Spec.custom(
        [1000000, 52794, 1, 65191, 15],
        scales=[0.001, 147.12991262701786, 181.6446363799795, 0.6783570082572813, 1000.0],
        margins=[0.0011029376741770085, 0.001, 20.86682150253644, 1000.0, 0.04912097338001176],
    ),
)


def suite(cases: int, seed: int, max_k: int = 50) -> list[Spec]:
    """The issue's examples, then ``cases`` seeded random specifications (half custom scales and
    margins, half presets cdt/ldt/vs at gamma = +-1)."""
    rng = np.random.default_rng(seed)
    specs = list(ISSUE_EXAMPLES)
    for i in range(cases):
        k = int(rng.integers(3, max_k + 1))
        counts = np.unique(np.round(10 ** rng.uniform(0, 6, size=k)).astype(int))
        if counts.size < 3:
            continue
        rng.shuffle(counts)
        if i % 2 == 0:
            scales, margins = 10 ** rng.uniform(-3, 3, size=(2, counts.size))
            specs.append(Spec.custom(counts, scales=scales, margins=margins))
        else:
            loss = ("cdt", "ldt", "vs")[i % 3]
            specs.append(Spec.from_loss(counts, loss, gamma=float(rng.choice([-1.0, 1.0]))))
    return specs


def reference(spec: Spec) -> dict[str, np.ndarray]:
    """Norms and cosines of the 60-digit closed form (raises if its dual is not certified)."""
    exact = exact_closed_form(spec, dps=60)
    if not exact.certified:
        raise RuntimeError(f"60-digit dual not certified for {spec.describe()}")
    cg, eg = exact.W @ exact.W.T, exact.H_mean.T @ exact.H_mean
    return {
        "classifier_norms": np.sqrt(np.diag(cg)),
        "embedding_norms": np.sqrt(np.diag(eg)),
        "classifier_cos": cosines_from_gram(cg),
        "embedding_cos": cosines_from_gram(eg),
    }


def geometry_error(result, ref: dict[str, np.ndarray]) -> float:
    """Largest relative norm error and absolute cosine error of ``result`` against ``ref``."""
    errors = [
        float(np.max(np.abs(result.classifier_norms / ref["classifier_norms"] - 1))),
        float(np.max(np.abs(result.embedding_norms / ref["embedding_norms"] - 1))),
    ]
    if result.classifier_gram is not None:
        errors.append(float(np.max(np.abs(cosines_from_gram(result.classifier_gram)
                                          - ref["classifier_cos"]))))  # fmt: skip
        errors.append(float(np.max(np.abs(cosines_from_gram(result.embedding_gram)
                                          - ref["embedding_cos"]))))  # fmt: skip
    return max(errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-k", type=int, default=50)
    parser.add_argument("--methods", default="auto,theory,convex")
    parser.add_argument("--convex-max-k", type=int, default=12)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    methods = args.methods.split(",")
    rows, bad = [], 0
    summary = {m: {"optimal": 0, "other": 0, "worst_optimal_error": 0.0, "seconds": 0.0}
               for m in methods}  # fmt: skip
    for spec in suite(args.cases, args.seed, args.max_k):
        ref = reference(spec)
        for method in methods:
            if method in ("convex", "nonconvex") and spec.k > args.convex_max_k:
                continue
            start = time.perf_counter()
            try:
                result = api.solve(spec, method)
            except UcfmError as exc:
                status, error = f"error: {exc}", float("nan")
            else:
                status, error = result.status, geometry_error(result, ref)
            seconds = time.perf_counter() - start
            entry = summary[method]
            entry["seconds"] += seconds
            if status == OPTIMAL:
                entry["optimal"] += 1
                entry["worst_optimal_error"] = max(entry["worst_optimal_error"], error)
                bad += error > 1e-6
            else:
                entry["other"] += 1
                bad += method == "auto"
            rows.append({"k": spec.k, "spec": spec.describe(), "method": method,
                         "status": status, "error": error, "seconds": seconds})  # fmt: skip
    print(f"{'method':<10} {'optimal':>8} {'other':>6} {'worst error when optimal':>26} {'s':>8}")
    for method, entry in summary.items():
        print(f"{method:<10} {entry['optimal']:>8} {entry['other']:>6} "
              f"{entry['worst_optimal_error']:>26.2e} {entry['seconds']:>8.1f}")  # fmt: skip
    print("HOLDS" if not bad else f"FAILS in {bad} case(s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
