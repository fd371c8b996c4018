"""Benchmark of the non-convex solver against the convex certificate (issue 3's done-when grid).

Class level: k in {3, 4, 6, 10}, STEP R in {1, 10, 100}, rho in {1/2, 1/3} (k rho whole),
losses CE, CDT, LDT and VS (gamma in {0.25, 0.5}), ``--seeds`` seeds each. For every run it
records whether the relative gap closed (<= 1e-6), the relative Frobenius errors of the
classifier and embedding Grams against the convex solve, and the time. Speed is reported as the
ratio of median times to the convex solve's, both measured in this process.

Example level: STEP counts with up to 50 examples per class, d = k, random features and no
block steps (collapse must emerge): NC1, gap and Grams against the class-level convex solve.

Extended grid (``--extended``): k in {4, 6, 10, 12}, R in {10, 100, 1000}, rho in {1/2, 1/3}
(k rho whole), CE and CDT/LDT with gamma in {-1, -0.5, 0.5, 1}; Grams against the closed form
(``api.solve(spec, "theory")``, docs/theory.md §4). With ``--baseline FILE`` (an older
``nonconvex.py``, e.g. ``git show main:ucfm_svm/nonconvex.py > /tmp/nonconvex_main.py``) both
versions solve every case in this process, interleaved, and the time ratio is reported.

Run from the repository root (not in CI; a few minutes)::

    nice -n 10 python benchmarks/bench_nonconvex.py [--seeds 5] [--quick]
    nice -n 10 python benchmarks/bench_nonconvex.py --extended --seeds 2 [--baseline FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable

import numpy as np

from ucfm_svm import api
from ucfm_svm.geometry import gram_distance
from ucfm_svm.solvers.convex import solve_convex
from ucfm_svm.solvers.nonconvex import solve_nonconvex
from ucfm_svm.spec import Spec, step_counts

LOSSES = [("ce", None)] + [(loss, g) for loss in ("cdt", "ldt", "vs") for g in (0.25, 0.5)]
GRAM_TOL = 1e-4


def rel_fro(a: np.ndarray, b: np.ndarray) -> float:
    """Relative Frobenius distance ``||a - b|| / ||b||``."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def grid(quick: bool) -> list[tuple[int, float, float]]:
    """The (k, R, rho) cases of the grid (k rho whole)."""
    ks = (3, 4) if quick else (3, 4, 6, 10)
    out = []
    for k in ks:
        for R in (1, 10, 100):
            for rho in (1 / 2, 1 / 3):
                if abs(k * rho - round(k * rho)) < 1e-9:
                    out.append((k, R, rho))
    return out


def class_level(seeds: int, quick: bool) -> None:
    rows = []
    for k, R, rho in grid(quick):
        counts = step_counts(k, R, rho)
        for loss, gamma in LOSSES:
            spec = Spec.from_loss(counts, loss, gamma=gamma)
            start = time.perf_counter()
            ref = solve_convex(spec)
            t_convex = time.perf_counter() - start
            for seed in range(seeds):
                start = time.perf_counter()
                res = solve_nonconvex(spec, seed=seed)
                t = time.perf_counter() - start
                rows.append(
                    {
                        "case": f"k={k} R={R} rho={rho:.3g} {loss} g={gamma}",
                        "certified": res.certified,
                        "rel_gap": res.rel_gap,
                        "obj_err": (res.objective - ref.objective) / ref.objective,
                        "cg": rel_fro(res.classifier_gram, ref.classifier_gram),
                        "eg": rel_fro(res.embedding_gram, ref.embedding_gram),
                        "t": t,
                        "t_convex": t_convex,
                        "iterations": res.iterations,
                    }
                )
    certified = np.array([r["certified"] for r in rows])
    grams_ok = np.array([max(r["cg"], r["eg"]) <= GRAM_TOL for r in rows])
    times = np.array([r["t"] for r in rows])
    t_convex = np.array([r["t_convex"] for r in rows])
    print(f"class level: {len(rows)} runs ({len(rows) // seeds} specs x {seeds} seeds)")
    print(f"  certified (rel_gap <= 1e-6): {certified.sum()}/{len(rows)} = {certified.mean():.2%}")
    print(f"  Grams within {GRAM_TOL:g} of convex: {grams_ok.sum()}/{len(rows)}")
    print(
        f"  rel_gap: median {np.median([r['rel_gap'] for r in rows]):.2e}, "
        f"max {max(r['rel_gap'] for r in rows):.2e}"
    )
    print(
        f"  objective - convex (relative): min {min(r['obj_err'] for r in rows):.2e}, "
        f"max {max(r['obj_err'] for r in rows):.2e}"
    )
    print(
        f"  classifier Gram error: median {np.median([r['cg'] for r in rows]):.2e}, "
        f"max {max(r['cg'] for r in rows):.2e}"
    )
    print(
        f"  embedding Gram error:  median {np.median([r['eg'] for r in rows]):.2e}, "
        f"max {max(r['eg'] for r in rows):.2e}"
    )
    print(
        f"  time: median {np.median(times):.3f} s, 95th pct {np.percentile(times, 95):.3f} s, "
        f"max {times.max():.3f} s; median ratio to the convex solve "
        f"{np.median(times / t_convex):.2f}"
    )
    for k in sorted({int(r["case"].split()[0][2:]) for r in rows}):
        sel = [r for r in rows if r["case"].startswith(f"k={k} ")]
        print(
            f"    k={k:<3d} median {np.median([r['t'] for r in sel]):.3f} s, "
            f"certified {np.mean([r['certified'] for r in sel]):.0%}"
        )
    for r in sorted(rows, key=lambda r: -r["t"])[:3]:
        print(f"    slowest: {r['case']} seed-run {r['t']:.3f} s, {r['iterations']} iterations")
    bad = [r for r in rows if not r["certified"] or max(r["cg"], r["eg"]) > GRAM_TOL]
    for r in bad:
        print(
            f"  FAIL {r['case']}: rel_gap {r['rel_gap']:.2e}, obj_err {r['obj_err']:.2e}, "
            f"Gram errors {r['cg']:.2e} / {r['eg']:.2e}"
        )


def example_level(seeds: int, quick: bool) -> None:
    cases = [((10, 10, 1, 1), "ce", None), ((50, 50, 5, 5), "cdt", 0.5)]
    if not quick:
        cases += [
            (tuple(step_counts(6, 10, 1 / 3, 5)), "ldt", 0.5),
            (tuple(step_counts(10, 10, 1 / 2, 5)), "vs", 0.5),
            (tuple(step_counts(10, 50, 1 / 2, 1)), "ce", None),
            (tuple(step_counts(10, 1, 1 / 2, 50)), "cdt", 0.25),
        ]
    print("example level (random features, no block steps, d = k):")
    worst = {"rel_gap": 0.0, "nc1": 0.0, "gram": 0.0}
    certified = runs = 0
    for counts, loss, gamma in cases:
        spec = Spec.from_loss(counts, loss, gamma=gamma)
        ref = solve_convex(spec)
        for seed in range(seeds):
            start = time.perf_counter()
            res = solve_nonconvex(spec, level="example", seed=seed)
            t = time.perf_counter() - start
            gram = max(
                rel_fro(res.classifier_gram, ref.classifier_gram),
                rel_fro(res.embedding_gram, ref.embedding_gram),
            )
            runs += 1
            certified += res.certified
            worst = {
                "rel_gap": max(worst["rel_gap"], res.rel_gap),
                "nc1": max(worst["nc1"], res.nc1),
                "gram": max(worst["gram"], gram),
            }
            print(
                f"  n={spec.n:<4d} k={spec.k:<3d} {loss:<4s} seed {seed}: {res.status}, "
                f"rel_gap {res.rel_gap:.1e}, nc1 {res.nc1:.1e}, Gram errors "
                f"{rel_fro(res.classifier_gram, ref.classifier_gram):.1e} / "
                f"{rel_fro(res.embedding_gram, ref.embedding_gram):.1e}, {t:.2f} s"
            )
    print(
        f"  certified {certified}/{runs}; worst rel_gap {worst['rel_gap']:.1e}, "
        f"worst nc1 {worst['nc1']:.1e}, worst Gram error {worst['gram']:.1e}"
    )


EXTENDED_LOSSES = [("ce", None)] + [
    (loss, g) for loss in ("cdt", "ldt") for g in (-1.0, -0.5, 0.5, 1.0)
]


def load_baseline(path: str) -> Callable:
    """``solve_nonconvex`` of another version of the module, imported inside this package."""
    module_spec = importlib.util.spec_from_file_location("ucfm_svm._bench_baseline", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses look their module up there
    module_spec.loader.exec_module(module)
    return module.solve_nonconvex


def extended(seeds: int, baseline: str | None) -> None:
    solvers = {"current": solve_nonconvex}
    if baseline:
        solvers = {"baseline": load_baseline(baseline), **solvers}
    rows: dict[str, list[dict]] = {name: [] for name in solvers}
    for k in (4, 6, 10, 12):
        for R in (10, 100, 1000):
            for rho in (1 / 2, 1 / 3):
                if abs(k * rho - round(k * rho)) > 1e-9:
                    continue
                for loss, gamma in EXTENDED_LOSSES:
                    spec = Spec.from_loss(step_counts(k, R, rho), loss, gamma=gamma)
                    ref = api.solve(spec, "theory")
                    for seed in range(seeds):
                        for name, solve in solvers.items():
                            start = time.perf_counter()
                            res = solve(spec, seed=seed)
                            t = time.perf_counter() - start
                            rows[name].append(
                                {
                                    "case": f"k={k} R={R} rho={rho:.3g} {loss} g={gamma} "
                                    f"seed={seed}",
                                    "certified": res.certified,
                                    "rel_gap": res.rel_gap,
                                    "gram": max(
                                        gram_distance(res.classifier_gram, ref.classifier_gram),
                                        gram_distance(res.embedding_gram, ref.embedding_gram),
                                    ),
                                    "t": t,
                                }
                            )
    for name, sel in rows.items():
        times = np.array([r["t"] for r in sel])
        ok = sum(r["certified"] for r in sel)
        print(
            f"{name}: certified {ok}/{len(sel)} = {ok / len(sel):.2%}; worst rel_gap "
            f"{max(r['rel_gap'] for r in sel):.2e}; worst Gram distance to theory "
            f"{max(r['gram'] for r in sel):.2e}; time median {np.median(times):.3f} s, "
            f"max {times.max():.3f} s"
        )
        for r in sorted(sel, key=lambda r: -r["gram"])[:3]:
            print(
                f"  largest Gram distance: {r['case']}: {r['gram']:.1e} "
                f"(rel_gap {r['rel_gap']:.1e})"
            )
        for r in sel:
            if not r["certified"]:
                print(
                    f"  not certified: {r['case']}: rel_gap {r['rel_gap']:.2e}, "
                    f"Gram {r['gram']:.1e}"
                )
    if baseline:
        ratio = np.array(
            [c["t"] / b["t"] for b, c in zip(rows["baseline"], rows["current"], strict=True)]
        )
        print(
            f"time ratio current/baseline per run: median {np.median(ratio):.2f}, "
            f"max {ratio.max():.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="k in {3, 4} only")
    parser.add_argument("--extended", action="store_true", help="the harder grid (R to 1000)")
    parser.add_argument("--baseline", help="an older nonconvex.py to compare against")
    args = parser.parse_args()
    if args.extended:
        extended(args.seeds, args.baseline)
        return
    class_level(args.seeds, args.quick)
    example_level(min(args.seeds, 2), args.quick)


if __name__ == "__main__":
    main()
