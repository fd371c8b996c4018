"""Deep-net study on scikit-learn's digits: do trained MLPs reach the predicted geometry?

Trains a small MLP (plain numpy) on STEP-imbalanced subsets of digits with CE, CDT, LDT and VS,
measures its last layer along training with ``ucfm_svm.analysis.analyze`` against the UF-CS-SVM
prediction, and writes a JSON, a PNG and a summary table. See ``ucfm_svm/study.py``.

    nice -n 10 python scripts/digits_study.py --out out/digits      # the README run
    python scripts/digits_study.py --epochs 20 --ratios 10 --out /tmp/smoke   # seconds

Needs scikit-learn: pip install ".[study]".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ucfm_svm.plots.study import study_figure
from ucfm_svm.runs.study import StudyConfig, run_study


def summary_lines(data: dict) -> list[str]:
    """One line per (R, loss): final training error, distances, norm ratios and test error."""
    lines = [
        f"{'R':>4} {'loss':<5} {'train err':>9} {'NC1':>8} {'dist W':>7} {'dist H':>7} "
        f"{'dist Hraw':>9} {'W ratio':>8} {'pred':>6} {'H ratio':>8} {'pred':>6} "
        f"{'bal test err':>12}"
    ]
    for run in data["runs"]:
        h = run["history"][-1]
        lines.append(
            f"{run['R']:>4g} {run['loss']:<5} {h['train_error']:>9.3f} {h['nc1']:>8.3f} "
            f"{h['classifier_distance_to_prediction']:>7.3f} "
            f"{h['embedding_distance_to_prediction']:>7.3f} "
            f"{h['raw_embedding_distance_to_prediction']:>9.3f} "
            f"{h['classifier_norm_ratio']:>8.3f} {run['predicted_classifier_norm_ratio']:>6.3f} "
            f"{h['embedding_norm_ratio']:>8.3f} {run['predicted_embedding_norm_ratio']:>6.3f} "
            f"{h['balanced_test_error']:>12.3f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the study and write ``study.json``, ``study.png`` and ``summary.txt`` under --out."""
    default = StudyConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/digits", help="output folder (default out/digits)")
    p.add_argument("--epochs", type=int, default=default.epochs)
    p.add_argument("--ratios", default=",".join(f"{r:g}" for r in default.ratios))
    p.add_argument("--checkpoints", type=int, default=default.checkpoints)
    p.add_argument("--optimizer", default=default.optimizer, choices=["sgd", "adam"])
    p.add_argument("--lr", type=float, default=default.lr)
    p.add_argument("--weight-decay", type=float, default=default.weight_decay)
    p.add_argument("--seed", type=int, default=default.seed)
    args = p.parse_args(argv)
    config = StudyConfig(
        ratios=tuple(float(r) for r in args.ratios.split(",")),
        epochs=args.epochs,
        checkpoints=args.checkpoints,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = run_study(config, progress=lambda line: print(line, flush=True))
    data["seconds"] = time.perf_counter() - start
    (out / "study.json").write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    study_figure(data).savefig(out / "study.png", dpi=120)
    lines = summary_lines(data)
    lines.append(f"{data['seconds']:.1f} s")
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / 'study.json'}, {out / 'study.png'}, {out / 'summary.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
