"""Longer fuzz profile of the command line: each probe in a fresh process with a time limit.

    python scripts/fuzz_cli.py --probes 500 --seed 1 --timeout 10

Draws probes from the grammar of ``tests/fuzz_grammar.py`` (the same one the CI profile in
``tests/test_fuzz.py`` uses in-process), runs each as ``python -m ucfm_svm ...`` in a scratch
folder, and reports every probe that breaks the contract: an undocumented exit code, a
traceback, more than one line on exit 2, ``nan`` printed by a successful run, or no answer
within ``--timeout`` seconds. Writes the failures as JSON lines to ``--out`` and exits 1 if any.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz_grammar import (  # noqa: E402
    EXIT_CODES,
    HOSTILE_VALUES,
    base_commands,
    hostile_files,
    mutate,
    prints_nan,
)


def verdict(code: int | None, out: str, err: str, argv: list[str]) -> str | None:
    """What is wrong with a probe's outcome, or None."""
    if code is None:
        return "timeout"
    if code not in EXIT_CODES:
        return f"exit {code}"
    if "Traceback" in err or "Traceback" in out:
        return "traceback"
    if "internal error" in err:
        return "internal error"
    if code == 2 and len([x for x in err.splitlines() if x.strip()]) != 1:
        return "more than one line on exit 2"
    if code == 0 and prints_nan(out, argv):
        return "nan printed"
    return None


def run(argv: list[str], where: Path, timeout: float) -> tuple[int | None, str, str, float]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ucfm_svm", *argv],
            cwd=where,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return None, out, "", time.perf_counter() - start
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=300, help="number of probes (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the probe draw")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per probe")
    parser.add_argument("--out", default="fuzz-failures.jsonl", help="failures (JSON lines)")
    parser.add_argument(
        "--slow",
        type=float,
        default=None,
        help="also report a probe that answers but takes longer than this many seconds "
        "(a finding to re-time in isolation; use with a larger --timeout on a loaded machine)",
    )
    parser.add_argument(
        "--part",
        default="1/1",
        metavar="I/N",
        help="run only the I-th of N equal slices of the probe list (the same probes as the "
        "whole run, for N processes in parallel; default 1/1)",
    )
    parser.add_argument("--log", default=None, help="also write every probe (JSON lines)")
    args = parser.parse_args()
    part, parts = (int(v) for v in args.part.split("/"))
    lo, hi = (part - 1) * args.probes // parts, part * args.probes // parts
    rng = random.Random(args.seed)
    failures = 0
    tally = {"clean errors (exit 2)": 0, "answers (exit 0, 1, 3)": 0, "other": 0}
    log = open(args.log, "w") if args.log else None  # noqa: SIM115 - closed below
    with tempfile.TemporaryDirectory() as scratch, open(args.out, "w") as sink:
        where = Path(scratch)
        bases = base_commands(where)
        files = [str(p) for p in hostile_files(where).values()]
        names = sorted(bases)
        for i in range(args.probes):
            base = bases[names[i % len(names)]]
            argv = mutate(
                base,
                lambda n: rng.randrange(n),
                lambda: rng.choice(HOSTILE_VALUES + tuple(files)),
            )
            if not lo <= i < hi:  # drawn all the same, so that every slice sees its probes
                continue
            code, out, err, seconds = run(argv, where, args.timeout)
            problem = verdict(code, out, err, argv)
            if problem is None and args.slow is not None and seconds > args.slow:
                problem = f"slow ({seconds:.1f} s > {args.slow:g} s)"
            kind = {2: "clean errors (exit 2)", 0: "answers (exit 0, 1, 3)"}.get(code)
            if code in (1, 3):
                kind = "answers (exit 0, 1, 3)"
            tally[kind or "other"] += 1
            if log is not None:
                entry = {"probe": i, "argv": argv, "exit": code, "seconds": round(seconds, 2)}
                log.write(json.dumps(entry) + "\n")
                log.flush()
            if problem:
                failures += 1
                record = {
                    "problem": problem,
                    "argv": argv,
                    "exit": code,
                    "seconds": round(seconds, 2),
                    "stderr": err[-2000:],
                }
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                print(f"[{i + 1}/{args.probes}] {problem}: {' '.join(argv)}", flush=True)
    if log is not None:
        log.close()
    counts = ", ".join(f"{n} {name}" for name, n in tally.items())
    print(f"{hi - lo} probes: {counts}; {failures} findings (details in {args.out})")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
