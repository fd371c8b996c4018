"""Random sweep of the model variants (docs/variants.md): every route against the certified one.

For ``--cases`` random count vectors (k in 2..10, counts 1..300, seeded) and every loss preset
(CE, wCE, LA, LDAM; CDT, LDT, VS with gamma drawn in [-1, 1]), for the free-bias model and the
non-negative-feature model: solve by ``theory`` (the default, certified closed form or its convex
fallback), ``convex`` and ``nonconvex``; record whether each certifies (relative gap <= 1e-6),
the relative objective error and the relative Frobenius errors of both Grams against the
reference (the closed form when it certified, else its polished convex fallback), how many
runs agree with it to 1e-6 on all three, and how often the free-bias closed form needed the
fallback (where ``convex`` is the reference's own computation). Times are medians in this
process (inflated on a loaded machine: compare them as ratios).

Run from the repository root (not in CI; a few minutes)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_variants.py [--cases 10]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from ucfm_svm import Spec, solve
from ucfm_svm.errors import SolverError

PRESETS = ("ce", "wce", "la", "ldam", "cdt", "ldt", "vs")
MODELS = (("bias", {"bias": "free"}), ("nonnegative", {"features": "nonnegative"}))


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def sweep(
    cases: int, seed: int = 0, methods: tuple[str, ...] = ("convex", "nonconvex")
) -> list[dict]:
    """One record per (case, preset, model, route) compared with the reference route."""
    rng = np.random.default_rng(seed)
    records = []
    for case in range(cases):
        counts = rng.integers(1, 301, size=int(rng.integers(2, 11)))
        for loss in PRESETS:
            gamma = float(rng.uniform(-1, 1)) if loss in ("cdt", "ldt", "vs") else None
            for name, model in MODELS:
                spec = Spec.from_loss(counts, loss, gamma=gamma).with_model(**model)
                start = time.perf_counter()
                ref = solve(spec, "theory")
                ref_seconds = time.perf_counter() - start
                closed = ref.solver == "closed form"
                for method in methods:
                    start = time.perf_counter()
                    try:
                        result = solve(spec, method)
                    except SolverError:  # no feasible point (recorded as not certified)
                        result = None
                    seconds = time.perf_counter() - start
                    record = {
                        "case": case,
                        "k": spec.k,
                        "loss": loss,
                        "model": name,
                        "method": method,
                        "reference_closed_form": closed,
                        "reference_certified": ref.certified,
                        "seconds": seconds,
                        "reference_seconds": ref_seconds,
                        "delta_spread": float(spec.delta.max() / spec.delta.min()),
                    }
                    if result is None:
                        record.update(certified=False, objective_error=math.inf,
                                      classifier_gram_error=math.inf,
                                      embedding_gram_error=math.inf, tolerance=1e-6)
                    else:
                        gap = max(result.rel_gap, 0.0)
                        record.update(
                            certified=result.certified,
                            objective_error=abs(result.objective - ref.objective) / ref.objective,
                            classifier_gram_error=_rel(
                                result.classifier_gram, ref.classifier_gram
                            ),
                            embedding_gram_error=_rel(result.embedding_gram, ref.embedding_gram),
                            tolerance=max(1e-6, 2 * math.sqrt(gap)),
                        )
                    records.append(record)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    records = sweep(args.cases, args.seed)
    print(f"{args.cases} random count vectors x {len(PRESETS)} presets x 2 models")
    for name, _ in MODELS:
        mine = [r for r in records if r["model"] == name]
        refs = {(r["case"], r["loss"]): r for r in mine}
        closed = sum(r["reference_closed_form"] for r in refs.values())
        certified = sum(r["reference_certified"] for r in refs.values())
        print(
            f"{name}: default route certified {certified}/{len(refs)}, closed form certified "
            f"{closed}/{len(refs)}"
        )
        for method in ("convex", "nonconvex"):
            rows = [r for r in mine if r["method"] == method]
            failed = [r for r in rows if not r["certified"]]
            errors = [
                max(r["objective_error"], r["classifier_gram_error"], r["embedding_gram_error"])
                for r in rows
            ]
            within = sum(e <= 1e-6 for e in errors)
            spreads = ", ".join(f"{r['loss']} k={r['k']} {r['delta_spread']:.0f}" for r in failed)
            print(
                f"  {method:<10} certified {len(rows) - len(failed)}/{len(rows)}"
                + (f" (not certified: loss, k, margin spread max/min: {spreads})" if failed else "")
                + "; over all runs: "
                f"worst objective error {max(r['objective_error'] for r in rows):.1e}, "
                f"classifier Gram {max(r['classifier_gram_error'] for r in rows):.1e}, "
                f"embedding Gram {max(r['embedding_gram_error'] for r in rows):.1e}; "
                f"within 1e-6 {within}/{len(rows)}; "
                f"median time / theory's "
                f"{np.median([r['seconds'] / r['reference_seconds'] for r in rows]):.0f}"
            )


if __name__ == "__main__":
    main()
