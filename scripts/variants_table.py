"""The table and figure of docs/variants.md: norms and cosines of the three models (the paper's,
free bias, non-negative features) for CE, LDT and CDT (gamma = 0.5) on STEP k=10, rho=1/2,
R in {10, 100}, and the norm ratio against R.

Every number is a certified optimum (:func:`ucfm_svm.variants.study.certified_grams`). Run from
the repository root::

    PYTHONPATH=. python scripts/variants_table.py [--figure out/variants.png]
"""

from __future__ import annotations

import argparse

import numpy as np

from ucfm_svm.variants.study import MODELS, norm_ratio_curves, step_row

LOSSES = (("ce", None), ("ldt", 0.5), ("cdt", 0.5))


def table(k: int = 10, rho: float = 0.5, ratios: tuple[float, ...] = (10, 100)) -> str:
    """The markdown table (one row per model, loss and R)."""
    lines = [
        "| model | loss | R | norm w maj / min | norm h maj / min | cos w maj-maj / min-min / "
        "maj-min | cos h maj-maj / min-min / maj-min |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, _, _ in MODELS:
        for loss, gamma in LOSSES:
            for R in ratios:
                r = step_row(model, k, R, rho, loss, gamma)
                name = loss if gamma is None else f"{loss} {gamma:g}"
                cw = " / ".join(f"{r.classifier_cosines[key]:+.4f}" for key in r.classifier_cosines)
                ch = " / ".join(f"{r.embedding_cosines[key]:+.4f}" for key in r.embedding_cosines)
                lines.append(
                    f"| {model} | {name} | {R:g} | {r.classifier_norms[0]:.4f} / "
                    f"{r.classifier_norms[1]:.4f} | {r.embedding_norms[0]:.4f} / "
                    f"{r.embedding_norms[1]:.4f} | {cw} | {ch} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", default=None, help="also write the norm-ratio figure here")
    args = parser.parse_args()
    print(table())
    if args.figure:
        from ucfm_svm.plots.variants import norm_ratio_figure

        curves = norm_ratio_curves(np.unique(np.geomspace(2, 1000, 25).round()), losses=LOSSES)
        norm_ratio_figure(curves).savefig(args.figure, dpi=120)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
