"""``ucfm-svm analyze``: measure a trained last layer against the predicted UF-CS-SVM geometry."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..analysis.analyze import LAYOUTS, PREPROCESS, Analysis, analyze, load_trained
from ..spec import LOSSES
from ._common import (
    EXIT_OK,
    STDOUT,
    _number,
    add_group_arguments,
    check_output_path,
    group_lines,
    group_options,
    write_json,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``analyze`` subcommand."""
    p = subparsers.add_parser(
        "analyze",
        help="measure trained W and features against the predicted geometry",
        description="Read last-layer weights W (k x d), training features and integer labels, "
        "and report NC1, norms, cosines, self-duality, distance to the simplex ETF and distance "
        "to the UF-CS-SVM geometry predicted for the file's class counts and the given loss.",
    )
    p.add_argument(
        "file",
        metavar="FILE",
        help="an .npz archive with keys W, features, labels; or an .npy file of W "
        "(then give --features and --labels)",
    )
    p.add_argument("--features", default=None, metavar="NPY", help="features .npy (with FILE.npy)")
    p.add_argument("--labels", default=None, metavar="NPY", help="labels .npy (with FILE.npy)")
    p.add_argument(
        "--features-layout",
        default="nd",
        choices=LAYOUTS,
        help="features as n x d rows (nd, default) or d x n columns (dn)",
    )
    p.add_argument(
        "--loss",
        default="ce",
        metavar="NAME",
        help="loss the network was trained with: " + ", ".join(LOSSES) + " (default ce)",
    )
    p.add_argument("--gamma", default=None, metavar="G", help="cdt / ldt / vs exponent")
    p.add_argument("--tau", default=None, metavar="T", help="la / vs offset temperature")
    p.add_argument(
        "--preprocess",
        default="none",
        choices=PREPROCESS,
        help="features as they are (none, default: logits W h without bias, as in the model), "
        "projected on the row space of W (project: the part the logits see), or minus their "
        "mean (center)",
    )
    p.add_argument(
        "--bias",
        default="auto",
        choices=("auto", "none", "free"),
        help="model of the prediction: free bias (auto, default: free iff FILE has a key b)",
    )
    p.add_argument(
        "--feature-model",
        default="auto",
        choices=("auto", "free", "nonnegative"),
        help="model of the prediction: free or nonnegative features (auto, default: "
        "nonnegative iff every feature is >= 0; --features names the features file)",
    )
    p.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="write the measures as JSON ('-': stdout): scalars, per-class norms, group "
        "statistics and the label of each row; the k x k Grams and cosines only with --full",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="also write the k x k Grams and cosines (trained and predicted) into --json",
    )
    add_group_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Load, measure, print the report (or JSON to stdout) and write JSON."""
    check_output_path("json", args.json)
    thresholds = group_options(args)
    trained = load_trained(
        args.file, features=args.features, labels=args.labels, layout=args.features_layout
    )
    gamma = None if args.gamma is None else _number("gamma", args.gamma)
    tau = None if args.tau is None else _number("tau", args.tau)
    result = analyze(
        trained,
        args.loss,
        gamma=gamma,
        tau=tau,
        preprocess=args.preprocess,
        bias=None if args.bias == "auto" else args.bias,
        features=None if args.feature_model == "auto" else args.feature_model,
        **thresholds,
    )
    if args.json != STDOUT:
        print(report(result))
    else:
        for line in notices(result):
            print(line, file=sys.stderr)
    if args.json:
        write_json("json", args.json, result.to_dict(full=args.full))
    return EXIT_OK


def notices(a: Analysis) -> list[str]:
    """The one-line warnings and the label mapping, as printed (stderr under ``--json -``)."""
    return [f"warning: {w}" for w in a.warnings] + (
        [f"labels: {a.labels_note}"] if a.labels_note else []
    )


def report(a: Analysis) -> str:
    """Readable account of an :class:`Analysis`."""
    spec = a.spec
    counts = (
        ",".join(str(c) for c in spec.counts)
        if spec.k <= 40
        else f"{min(spec.counts)}..{max(spec.counts)}"
    )
    lines = [
        *notices(a),
        f"trained last layer: k={spec.k}, d={a.d}, n={a.n}, counts {counts}",
        f"prediction   UF-CS-SVM, loss={spec.loss}"
        + (f", gamma={spec.gamma:g}" if spec.gamma is not None else "")
        + (f", tau={spec.tau:g}" if spec.tau is not None else "")
        + (f", bias={spec.bias}" if spec.bias != "none" else "")
        + (f", features={spec.features}" if spec.features != "free" else "")
        + f" ({a.prediction_method}); features preprocessed: {a.preprocess}",
        *([f"model        {a.model_note}"] if a.model_note else []),
        *([f"bias cosine  {a.bias_cosine:+.6f} (trained vs predicted b)"]
          if a.bias_cosine is not None else []),
        f"NC1          {a.nc1:.4e}",
        "distance to prediction (normalized Grams, 0..2)",
        f"  classifiers {a.classifier_distance_to_prediction:.4e}",
        f"  embeddings  {a.embedding_distance_to_prediction:.4e}",
        "distance to simplex ETF",
        f"  classifiers {a.classifier_distance_to_etf:.4e}",
        f"  embeddings  {a.embedding_distance_to_etf:.4e}",
        f"self-duality ||W^T/||W|| - Hbar/||Hbar|| ||  {a.self_duality:.4e}; "
        f"cos(w_c, hbar_c) {_fmt(a.duality_cosines)}",
        "norms",
        f"  classifiers {_fmt(a.classifier_norms)}",
        f"  embeddings  {_fmt(a.embedding_norms)}",
    ]
    groups = spec.step_groups()
    if groups is not None:
        lines.append("squared norm ratio majority / minority (trained vs predicted)")
        for name, got, want in (
            ("classifiers", a.classifier_norm_ratio, a.predicted_classifier_norm_ratio),
            ("embeddings", a.embedding_norm_ratio, a.predicted_embedding_norm_ratio),
        ):
            lines.append(f"  {name:<12}{got:.6g} vs {want:.6g}")
    lines += group_comparison(a)
    return "\n".join(lines)


def _fmt(values: np.ndarray) -> str:
    if values.size <= 12:
        return " ".join(f"{v:.4g}" for v in values)
    return f"min {values.min():.4g}, median {np.median(values):.4g}, max {values.max():.4g}"


def group_comparison(a: Analysis) -> list[str]:
    """Group statistics of the trained geometry (the lines of ``solve``'s summary) and the
    mean cosines by group, trained vs predicted (docs/theory.md §17)."""
    lines = group_lines(a.groups, cosines=False)
    got, want = a.groups, a.predicted_groups
    if len(got.groups.names) > 1:
        lines.append("mean squared norm ratio to the head class by group, trained vs predicted")
        for name, mine, theirs in (
            ("classifiers", got.classifier_norms, want.classifier_norms),
            ("embeddings", got.embedding_norms, want.embedding_norms),
        ):
            text = ", ".join(
                f"{g} {mine[g]['sq_ratio_to_head']:.4g} vs {theirs[g]['sq_ratio_to_head']:.4g}"
                for g in mine
            )
            lines.append(f"  {name:<12}{text}")
    lines.append(f"cosines by group, trained vs predicted (ETF {got.etf_cos:+.4f})")
    for name, mine, theirs in (
        ("classifiers", got.classifier_cos, want.classifier_cos),
        ("embeddings", got.embedding_cos, want.embedding_cos),
    ):
        text = ", ".join(
            f"{key} {mine[key]:+.4f} vs {theirs[key]:+.4f}"
            for key in mine
            if np.isfinite(mine[key]) and theirs is not None and np.isfinite(theirs[key])
        )
        lines.append(f"  {name:<12}{text}")
    return lines
