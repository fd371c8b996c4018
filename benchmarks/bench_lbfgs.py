"""The L-BFGS direction: compact form (``PairMemory``) against the two-loop recursion.

Both compute ``H g`` for the same stored pairs; the compact form's time includes storing the
newest pair (``push``: its products with the stored pairs), which the two-loop recursion does
not need. Measured in one process at the path's sizes (``n = 2 k d`` variables, ``memory =
10``). Run:
``OMP_NUM_THREADS=1 python benchmarks/bench_lbfgs.py [--sizes 20000,2000000] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from ucfm_svm.solvers.lbfgs import PairMemory


def two_loop(pairs: list[tuple[np.ndarray, np.ndarray]], g: np.ndarray) -> np.ndarray:
    """The baseline: Nocedal and Wright's Algorithm 7.4, as the solver ran it before."""
    q = g.copy()
    alphas = []
    for s, y in reversed(pairs):
        a = float(s @ q) / float(s @ y)
        alphas.append(a)
        q -= a * y
    s, y = pairs[-1]
    q *= float(s @ y) / float(y @ y)
    for (s, y), a in zip(pairs, reversed(alphas), strict=True):
        q += (a - float(y @ q) / float(s @ y)) * s
    return q


def measure(n: int, memory: int, repeats: int) -> dict:
    """Best of ``repeats`` iterations: each stores one new pair, then applies ``H`` to the new
    gradient ``g`` (pairs ``y = g' - g`` of gradients ``g_i`` drawn at random)."""
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(n) for _ in range(memory + repeats + 1)]
    steps = [g1 - g0 for g0, g1 in itertools.pairwise(grads)]
    stream = [(y + 0.3 * rng.standard_normal(n), y) for y in steps]  # s^T y > 0
    memo = PairMemory(n, memory)
    memo.apply(grads[0])
    for i, (s, y) in enumerate(stream[:memory]):
        memo.push(s, y, float(s @ y))
        memo.apply(grads[i + 1])
    best = {"two-loop": np.inf, "compact": np.inf}
    for r in range(repeats):
        window, g = stream[r + 1 : r + 1 + memory], grads[r + 1 + memory]
        t = time.perf_counter()
        want = two_loop(window, g)
        best["two-loop"] = min(best["two-loop"], time.perf_counter() - t)
        s, y = window[-1]
        t = time.perf_counter()
        memo.push(s, y, float(s @ y))
        got = memo.apply(g)
        best["compact"] = min(best["compact"], time.perf_counter() - t)
    return {"n": n, "two_loop": best["two-loop"], "compact": best["compact"],
            "ratio": best["compact"] / best["two-loop"],
            "rel_diff": float(np.linalg.norm(got - want) / np.linalg.norm(want))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20000,2000000")
    ap.add_argument("--memory", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print("| n | two-loop | compact | ratio | relative difference |")
    print("|---|---|---|---|---|")
    for n in (int(v) for v in args.sizes.split(",")):
        r = measure(n, args.memory, args.repeats)
        print(f"| {r['n']:,} | {r['two_loop'] * 1e3:.1f} ms | {r['compact'] * 1e3:.1f} ms "
              f"| {r['ratio']:.2f} | {r['rel_diff']:.1e} |")


if __name__ == "__main__":
    main()
