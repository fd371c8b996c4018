"""Start-up cost of the CLI, as ratios against a bare interpreter in the same run.

Each command runs ``--repeat`` times in a fresh process; the table gives the median wall time
and its ratio to ``python -c pass`` and to ``python -c "import numpy"`` (the floor of any
numpy program), so the numbers stay comparable on a loaded machine. Then the ``-X importtime``
cumulative times of the heavy packages for ``ucfm-svm --help``: cvxpy and matplotlib must not
appear (they are imported where used).

    python benchmarks/bench_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import numpy'": [sys.executable, "-c", "import numpy"],
    "ucfm-svm --help": [sys.executable, "-m", "ucfm_svm", "--help"],
    "solve --longtail 100,100": [
        sys.executable, "-m", "ucfm_svm", "solve", "--longtail", "100,100",
    ],
    "solve --longtail 1000,256 --n-max 1280": [
        sys.executable, "-m", "ucfm_svm", "solve", "--longtail", "1000,256", "--n-max", "1280",
    ],
    "solve --longtail 8142,500 --n-max 1000": [
        sys.executable, "-m", "ucfm_svm", "solve", "--longtail", "8142,500", "--n-max", "1000",
    ],
    "solve --longtail 1000,256 --method convex (refused)": [
        sys.executable, "-m", "ucfm_svm", "solve", "--longtail", "1000,256", "--n-max", "1280",
        "--method", "convex",
    ],
}  # fmt: skip
HEAVY = ("numpy", "scipy", "scipy.linalg", "scipy.optimize", "cvxpy", "matplotlib", "tqdm")


def wall(cmd: list[str], repeat: int) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        code = subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode
        times.append(time.perf_counter() - start)
    return statistics.median(times), code


def importtime(args: list[str]) -> dict[str, float]:
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ucfm_svm", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stderr
    out = {}
    for line in err.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if name.strip() in HEAVY or name.strip() == "ucfm_svm":
            out[name.strip()] = int(cumulative) / 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results = {name: wall(cmd, args.repeat) for name, cmd in COMMANDS.items()}
    base, numpy_base = results["python -c pass"][0], results["python -c 'import numpy'"][0]
    print("| command | exit | median wall (s) | x python | x numpy import |")
    print("|---|---:|---:|---:|---:|")
    for name, (seconds, code) in results.items():
        print(f"| `{name}` | {code} | {seconds:.3f} | {seconds / base:.1f} | "
              f"{seconds / numpy_base:.2f} |")  # fmt: skip
    for label, argv in (("--help", ["--help"]), ("solve --longtail 100,100",
                        ["solve", "--longtail", "100,100"])):  # fmt: skip
        times = importtime(argv)
        print(f"\n-X importtime, {label} (cumulative s): "
              + ", ".join(f"{k} {v:.3f}" for k, v in sorted(times.items())))  # fmt: skip


if __name__ == "__main__":
    main()
